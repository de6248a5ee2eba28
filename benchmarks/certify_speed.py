"""Time ``certify`` with its defaults (apothem bisection on CROWN, precision 1e-4, attack
falsifier) on the original system's 49 + 50 reference inputs and on test images of the
embedded default networks.

    python benchmarks/certify_speed.py [--reference DIR] [--images 100] [--out DIR]

Prints a Markdown table (and writes per-input CSV and the table under --out).
Times are per input, in-process (no interpreter start-up), on one process.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

import parallelepipedonn as ppn
from oracles import AttackOracle, CrownOracle

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "parallelepipedonn-2.2"


def run_set(name: str, net: ppn.Network, items: list[tuple[str, object, int]]) -> list[dict]:
    crown, attack = CrownOracle(net), AttackOracle(net)
    rows = []
    for ident, x, label in tqdm(items, desc=name, leave=False):
        start = time.perf_counter()
        cert = ppn.certify(net, x, label, oracle=crown, falsifier=attack)
        rows.append({"set": name, "input": ident, "label": label, "status": cert.status.value,
                     "apothem": cert.apothem, "upper_bound": cert.apothem_upper_bound,
                     "oracle_calls": cert.oracle_calls, "seconds": time.perf_counter() - start})
    return rows


def summarize(name: str, rows: list[dict]) -> str:
    times = [r["seconds"] for r in rows]
    aps = [r["apothem"] for r in rows if r["status"] == "certified"]
    return (f"| {name} | {len(rows)} | {len(aps)} | {statistics.median(aps) if aps else float('nan'):.4f} | "
            f"{statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    ap.add_argument("--images", type=int, default=100, help="test images per default network")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sets: list[tuple[str, list[dict]]] = []
    if (args.reference / "nets").is_dir():
        for ds, net_file in (("mnist", "mnist_nn-32.onnx"), ("fashion-mnist", "fashion_mnist_nn-64.onnx")):
            net = ppn.load_onnx(args.reference / "nets" / net_file)
            items = []
            for f in sorted((args.reference / "inputs" / ds).glob("*.csv")):
                try:
                    items.append((f.name, ppn.load_input(f, net.input_shape), int(f.name.split("-")[0])))
                except ppn.InputDataError:
                    continue  # mnist/9-5.csv is empty in the original repository
            sets.append((f"reference {net_file} ({ds})", run_set(ds, net, items)))
    for ds in ("mnist", "fashion-mnist"):
        try:
            data = ppn.load_dataset(ds, "test")
        except ppn.DatasetNotFoundError:
            continue
        for size in ("small", "deep"):
            path = ppn.default_model_path(ds, size)
            net = ppn.load_onnx(path)
            items = [(str(i), data[i][0], None) for i in range(min(args.images, len(data)))]
            sets.append((f"default {path.name}", run_set(path.name, net, items)))
    lines = ["| inputs | n | certified | median apothem | median ms | max ms |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [summarize(name, rows) for name, rows in sets]
    header = (f"certify defaults (apothem-bisection, crown, precision 1e-4, attack falsifier); "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
    table = header + "\n\n" + "\n".join(lines)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "certify_speed.md").write_text(table + "\n")
        with open(args.out / "certify_speed.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(sets[0][1][0]))
            w.writeheader()
            for _, rows in sets:
                w.writerows(rows)


if __name__ == "__main__":
    main()
