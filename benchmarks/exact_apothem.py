"""The exact best apothem (minimum adversarial L-infinity distance within [0,1]^784) of
each of the original system's reference inputs, by complete oracles.

    python -m benchmarks.exact_apothem [--dataset mnist] [--routes milp,bab] [--time-limit 120]

For each input: CROWN bisection (the default ``certify``) gives a proven radius and the
attack a counterexample; then :func:`oracles.min_adversarial_distance` computes the
optimum by

* ``milp``: the ``milp`` oracle's own distance query (:meth:`oracles.MilpOracle.min_distance`,
  HiGHS via pyomo: one or two MILPs per class), and
* ``bab``: root finding on the radius with robustness decisions from
  ``crown+alpha-crown+bab`` (branch and bound), to a relative ``--precision``.

Writes ``exact_apothem_<dataset>.csv`` (per input: bracket, time, MILPs or decisions per
route), a Markdown summary ``exact_apothem_<dataset>.md`` and the per-input values in
``exact_apothem_<dataset>_inputs.md``, under ``--out``.
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

ROUTES = {"milp": "milp", "bab": "crown+alpha-crown+bab"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist", choices=list(REFERENCE_NETS))
    ap.add_argument("--routes", default="milp,bab")
    ap.add_argument("--precision", type=float, default=1e-4,
                    help="relative precision of the bracket (root finding; the milp query is exact to its solver gap)")
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
    for name, x, label in tqdm(reference_inputs(REFERENCE, args.dataset, net), disable=None, desc="inputs"):
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
    read = {r["input"] for r in rows}
    unreadable = sorted(f.stem for f in (REFERENCE / "inputs" / args.dataset).glob("*.csv") if f.stem not in read)
    text = summary_text(args, rows, routes, unreadable)
    (out / f"exact_apothem_{args.dataset}.md").write_text(text)
    (out / f"exact_apothem_{args.dataset}_inputs.md").write_text(inputs_text(args, rows, routes))
    print(text)


def summary_text(args: argparse.Namespace, rows: list[dict], routes: list[str], unreadable: list[str]) -> str:
    done = [r for r in rows if r["status"] == "certified"]
    summary = []
    for route in routes:
        secs = [r[f"{route}_seconds"] for r in done]
        exact = sum(r[f"{route}_exact"] for r in done)
        gaps = [(r[f"{route}_upper"] - r[f"{route}_lower"]) / r[f"{route}_upper"] for r in done]
        ratio = [r["certify_apothem"] / r[f"{route}_upper"] for r in done if math.isfinite(r[f"{route}_upper"])]
        summary.append([f"`{ROUTES[route]}`", f"{len(done)}", f"{exact}", f"{max(gaps):.1e}",
                        f"{statistics.median(secs):.2f}", f"{max(secs):.2f}", f"{sum(s < 10 for s in secs)}/{len(done)}",
                        f"{statistics.median(ratio):.3f} / {min(ratio):.3f}"])
    note = ""
    if len(routes) > 1:
        a, b = routes[0], routes[1]
        overlap = sum(r[f"{a}_lower"] <= r[f"{b}_upper"] and r[f"{b}_lower"] <= r[f"{a}_upper"] for r in done)
        agree = max(abs(r[f"{a}_upper"] - r[f"{b}_upper"]) / r[f"{a}_upper"] for r in done)
        note = (f"\nThe two routes' brackets overlap on {overlap} of {len(done)} inputs; the largest relative "
                f"difference between their upper ends is {agree:.2e}.\n")
    others = [f"{r['input']} ({r['status']}: the net does not classify it as {r['label']}, so no certification "
              f"exists)" for r in rows if r["status"] != "certified"]
    others += [f"{name} (the reference file is empty)" for name in unreadable]
    if others:
        note += f"\nNot counted: {'; '.join(others)}.\n"
    table = markdown_table(["computed by", "inputs", "exact to precision", "largest relative gap", "median s",
                            "max s", "under 10 s", "default certify apothem / exact: median / min"], summary)
    return (f"Exact best apothem of the reference {args.dataset} inputs (relative precision {args.precision:g}) — "
            f"`python -m benchmarks.exact_apothem --dataset {args.dataset}`\n\nMachine: {machine()}. "
            f"Seconds per input include the default certify run that seeds the bracket. Per-input values: "
            f"`benchmarks/results/exact_apothem_{args.dataset}_inputs.md`.\n\n{table}\n{note}")


def inputs_text(args: argparse.Namespace, rows: list[dict], routes: list[str]) -> str:
    """Per input: each route's bracket ``[lower, upper]`` of the exact best apothem and its time."""
    header = ["input", "label", "default certify apothem"]
    for route in routes:
        header += [f"{route}: proven lower", f"{route}: counterexample at", f"{route} s"]
    body = []
    for r in rows:
        line = [r["input"], str(r["label"]), f"{r['certify_apothem']:.7f}"]
        for route in routes:
            if r["status"] == "certified":
                line += [f"{r[f'{route}_lower']:.7f}", f"{r[f'{route}_upper']:.7f}", f"{r[f'{route}_seconds']:.2f}"]
            else:
                line += ["—", r["status"], ""]
        body.append(line)
    return (f"Exact best apothem of each reference {args.dataset} input — "
            f"`python -m benchmarks.exact_apothem --dataset {args.dataset}`\n\n{markdown_table(header, body)}\n")


if __name__ == "__main__":
    main()
