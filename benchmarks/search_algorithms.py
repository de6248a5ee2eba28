"""Every search algorithm on the original system's reference inputs, against the exact optimum.

    python -m benchmarks.search_algorithms [--dataset mnist] [--algorithms a,b,...] [--out DIR] [--certs DIR]

For each reference input (the class in its file name is the label) and algorithm: time
(``certify`` in-process, oracle and falsifier built once per algorithm), certified
apothem, min edge length, log-volume, oracle calls and rounds. The exact optimum of each
input is the upper end of the bracket computed by ``benchmarks.exact_apothem`` (read from
its CSV, computed here if absent): "apothem / exact" is the certified apothem divided by
it. Writes ``search_<dataset>.csv`` (per input and algorithm) and ``search_<dataset>.md``;
with ``--certs DIR``, also every certificate, as JSON (``parallelepipedonn recheck``
re-verifies them).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from pathlib import Path

from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import (
    REFERENCE,
    REFERENCE_NETS,
    RESULTS,
    machine,
    markdown_table,
    output_dirs,
    reference_inputs,
    write_csv,
)
from benchmarks.options import ALGORITHMS
from oracles import AttackOracle, CrownOracle, make_oracle, min_adversarial_distance
from parallelepipedonn.certify import build_oracles
from parallelepipedonn.io_utils import sha256_file


def exact_optima(dataset: str, net: ppn.Network, inputs, out: Path) -> dict[str, float]:
    """The exact optimum (upper end of the bracket) of every input, from the exact-apothem
    benchmark's CSV when it exists, else computed by the ``milp`` distance query."""
    path = out / f"exact_apothem_{dataset}.csv"
    if path.is_file():
        with open(path) as f:
            return {r["input"]: float(r["milp_upper"]) for r in csv.DictReader(f) if r.get("milp_upper")}
    oracle, attack, crown = make_oracle("milp", net), AttackOracle(net), CrownOracle(net)
    optima = {}
    for name, x, label in tqdm(inputs, disable=None, desc="exact optima (milp)"):
        cert = ppn.certify(net, x, label, oracle=crown, falsifier=attack)
        if cert.status is ppn.Status.CERTIFIED:
            d = min_adversarial_distance(oracle, x, label, ppn.Box.unit(x.size), lower=cert.apothem,
                                         counterexample=cert.counterexample, falsifier=attack)
            optima[name] = d.upper
    return optima


def save_certificate(cert: ppn.Certificate, directory: Path, dataset: str, name: str) -> Path:
    """Write ``cert`` as ``<directory>/<dataset>-<input>-<algorithm>.json``."""
    path = directory / f"{dataset}-{name}-{cert.algorithm}.json"
    cert.save(path)
    return path


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist", choices=list(REFERENCE_NETS))
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--precision", type=float, default=1e-4)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--certs", metavar="DIR", help="also write every certificate (JSON) into DIR")
    args = ap.parse_args()
    out, certs = output_dirs(args)
    model_path = REFERENCE / "nets" / REFERENCE_NETS[args.dataset]
    model_sha256 = sha256_file(model_path)
    net = ppn.load_onnx(model_path)
    inputs = [i for i in reference_inputs(REFERENCE, args.dataset, net) if int(net.predict(i[1])[0]) == i[2]]
    optima = exact_optima(args.dataset, net, inputs, out)
    rows = []
    for algorithm in [a.strip() for a in args.algorithms.split(",") if a.strip()]:
        config = ppn.CertifyConfig(algorithm=algorithm, precision=args.precision)
        oracle, falsifier = build_oracles(net, config)
        for name, x, label in tqdm(inputs, disable=None, desc=algorithm):
            start = time.perf_counter()
            cert = ppn.certify(net, x, label, config=config, oracle=oracle, falsifier=falsifier,
                               model_path=str(model_path), model_sha256=model_sha256)
            seconds = time.perf_counter() - start
            if certs is not None:
                save_certificate(cert, certs, args.dataset, name)
            optimum = optima.get(name, float("nan"))
            rows.append({"algorithm": algorithm, "oracle": cert.oracle, "input": name, "status": cert.status.value,
                         "seconds": seconds, "apothem": cert.apothem, "min_edge": cert.min_edge,
                         "log_volume": cert.log_volume, "oracle_calls": cert.oracle_calls, "rounds": cert.rounds,
                         "apothem_upper_bound": cert.apothem_upper_bound, "exact_optimum": optimum,
                         "apothem_over_exact": (cert.apothem or 0.0) / optimum if optimum else float("nan")})
    write_csv(out / f"search_{args.dataset}.csv", rows)
    table, edges = [], {}
    for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
        rs = [r for r in rows if r["algorithm"] == algorithm]
        secs = [r["seconds"] for r in rs]
        ratio = [r["apothem_over_exact"] for r in rs]
        edges[algorithm] = [r["min_edge"] or 0.0 for r in rs]
        table.append([f"`{algorithm}`", rs[0]["oracle"], f"{sum(r['status'] == 'certified' for r in rs)}/{len(rs)}",
                      f"{statistics.median(secs):.3f}", f"{max(secs):.3f}", f"{_median([r['apothem'] for r in rs]):.4f}",
                      f"{_median(ratio):.3f} / {min(ratio):.3f}", f"{_median(edges[algorithm]):.4f}",
                      f"{_median([r['log_volume'] for r in rs]):.0f}", f"{_median([r['oracle_calls'] for r in rs]):.0f}",
                      f"{_median([r['rounds'] for r in rs]):.0f}"])
    text = (f"Search algorithms on the reference {args.dataset} net ({net.describe()}) and its {len(inputs)} correctly "
            f"classified inputs, precision {args.precision:g} — `python -m benchmarks.search_algorithms --dataset "
            f"{args.dataset}`\n\nMachine: {machine()}. Medians over inputs (log-volume: median of finite values).\n\n")
    text += markdown_table(["algorithm", "oracle", "certified", "median s", "max s", "median apothem",
                            "apothem / exact: median / min", "median min edge", "median log-volume",
                            "median oracle calls", "median rounds"], table)
    if "apothem-max-box" in edges:
        for other in ("volume-greedy", "volume-gradient", "box-bisection"):
            if other in edges:
                ratios = [a / b if b > 0 else math.inf for a, b in zip(edges["apothem-max-box"], edges[other])]
                text += (f"\n\nMin edge of `apothem-max-box` / `{other}`: median {statistics.median(ratios):.3g}, "
                         f"min {min(ratios):.3g} (inf where the other box has a zero-width edge).")
    text += "\n"
    (out / f"search_{args.dataset}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
