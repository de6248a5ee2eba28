"""The exact best apothem (minimum adversarial L-infinity distance within [0,1]^784) of
each of the original system's reference inputs, by complete oracles.

    python -m benchmarks.exact_apothem [--dataset mnist] [--routes milp,bab] [--precision 1e-4]

For each input: CROWN bisection (the default ``certify``) gives a proven radius and the
attack a counterexample; then :func:`oracles.min_adversarial_distance` closes the
bracket with complete decisions from ``crown+alpha-crown+milp`` (the MILP route: HiGHS
via pyomo) and ``crown+alpha-crown+bab`` (branch and bound). Writes
``exact_apothem_<dataset>.csv`` (per input: bracket, time, decisions per route) and a
Markdown summary under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import REFERENCE, REFERENCE_NETS, RESULTS, machine, markdown_table, reference_inputs, write_csv
from oracles import AttackOracle, CrownOracle, make_oracle, min_adversarial_distance

ROUTES = {"milp": "crown+alpha-crown+milp", "bab": "crown+alpha-crown+bab"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist", choices=list(REFERENCE_NETS))
    ap.add_argument("--routes", default="milp,bab")
    ap.add_argument("--precision", type=float, default=1e-4, help="relative precision of the bracket")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per input and route")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if not (REFERENCE / "nets").is_dir():
        raise SystemExit(f"reference data not found at {REFERENCE}")
    net = ppn.load_onnx(REFERENCE / "nets" / REFERENCE_NETS[args.dataset])
    dom = ppn.Box.unit(net.n_inputs)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    oracles = {r: make_oracle(ROUTES[r], net, time_limit=args.time_limit) for r in routes}
    crown, attack = CrownOracle(net), AttackOracle(net)
    rows = []
    for name, x, label in tqdm(reference_inputs(REFERENCE, args.dataset, net), desc="inputs"):
        row: dict = {"input": name, "label": label}
        start = time.perf_counter()
        cert = ppn.certify(net, x, label, oracle=crown, falsifier=attack)
        row["certify_seconds"] = time.perf_counter() - start
        row["certify_apothem"] = cert.apothem if cert.apothem is not None else 0.0
        if cert.status is not ppn.Status.CERTIFIED:
            row["status"] = cert.status.value
            rows.append(row)
            continue
        row["status"] = "certified"
        for route, oracle in oracles.items():
            t = time.perf_counter()
            d = min_adversarial_distance(oracle, x, label, dom, lower=cert.apothem, counterexample=cert.counterexample,
                                         rel_precision=args.precision, falsifier=attack,
                                         time_limit=args.time_limit)
            row[f"{route}_lower"], row[f"{route}_upper"] = d.lower, d.upper
            row[f"{route}_seconds"] = time.perf_counter() - t + row["certify_seconds"]
            row[f"{route}_decisions"] = d.decisions
            row[f"{route}_exact"] = d.exact(args.precision)
            row[f"{route}_note"] = d.reason
        rows.append(row)
    out = Path(args.out)
    write_csv(out / f"exact_apothem_{args.dataset}.csv", rows)
    done = [r for r in rows if r["status"] == "certified"]
    summary = []
    for route in routes:
        secs = [r[f"{route}_seconds"] for r in done]
        exact = sum(r[f"{route}_exact"] for r in done)
        ratio = [r["certify_apothem"] / r[f"{route}_upper"] for r in done if math.isfinite(r[f"{route}_upper"])]
        summary.append([f"`{ROUTES[route]}`", f"{len(done)}", f"{exact}", f"{statistics.median(secs):.2f}",
                        f"{max(secs):.2f}", f"{sum(s < 10 for s in secs)}/{len(done)}",
                        f"{statistics.median(ratio):.3f} / {min(ratio):.3f}"])
    if len(routes) > 1:
        a, b = routes[0], routes[1]
        agree = max(abs(r[f"{a}_upper"] - r[f"{b}_upper"]) / r[f"{a}_upper"] for r in done)
        note = f"\nLargest relative difference between the two routes' optima: {agree:.2e}.\n"
    else:
        note = ""
    table = markdown_table(["decisions by", "inputs", "exact to precision", "median s", "max s", "under 10 s",
                            "default certify apothem / exact: median / min"], summary)
    text = (f"Exact best apothem of the reference {args.dataset} inputs (relative precision {args.precision:g}) — "
            f"`python -m benchmarks.exact_apothem --dataset {args.dataset}`\n\nMachine: {machine()}. "
            f"Seconds per input include the default certify run that seeds the bracket.\n\n{table}\n{note}")
    (out / f"exact_apothem_{args.dataset}.md").write_text(text)
    print(text)
    for r in done:
        print(r["input"], " ".join(f"{route}=[{r[f'{route}_lower']:.6f},{r[f'{route}_upper']:.6f}] "
                                   f"{r[f'{route}_seconds']:.2f}s" for route in routes))


if __name__ == "__main__":
    main()
