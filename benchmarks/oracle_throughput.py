"""Per-call latency and throughput of every installed oracle backend.

    python -m benchmarks.oracle_throughput [--budget 120] [--out benchmarks/results]

Networks: the original system's 784-32-10 MNIST net (../shared/reference, when present)
and the embedded default 784-100-100-10 MNIST net. Boxes: L-infinity cubes around MNIST
test inputs, at radii 0.5, 0.9, 1.1 and 1.5 times the radius CROWN certifies there — a mix
of easy proofs, hard proofs and counterexamples. Batch size 1: 32 calls of one box each,
every 8th box: the median latency, and boxes per second over all of them (their count over
their total time: a slow backend's latencies can split into two groups, fast proofs and slow
searches, between which the median of 32 falls anywhere). Batched: the 256 boxes
answered one call per label (an oracle call takes one label: 10 calls of about 25 boxes
on MNIST, at most ``256`` for a batched backend, 16 for the others), in boxes per second. Backends
that are not batched (milp, bab, marabou) loop over the boxes; each is given ``--budget``
seconds per configuration and a 10 s limit per box, and the table says how many boxes it
answered in that budget.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import parallelepipedonn as ppn
from benchmarks.common import REFERENCE, RESULTS, machine, markdown_table, reference_inputs, write_csv
from oracles import CrownOracle, lirpa_available, make_oracle, marabou_available
from parallelepipedonn.search import ApothemBisection, Problem

BACKENDS = ["crown", "alpha-crown", "attack", "milp", "bab", "cascade"]
SLOW = {"milp", "bab", "marabou", "cascade"}
FACTORS = (0.5, 0.9, 1.1, 1.5)


def make_boxes(net: ppn.Network, inputs: list[tuple[str, np.ndarray, int]], count: int):
    """``count`` cubes (lower, upper, label), cycling over inputs and radius factors."""
    crown = CrownOracle(net)
    radii = {}
    boxes = []
    k = 0
    while len(boxes) < count:
        name, x, label = inputs[k % len(inputs)]
        if name not in radii:
            res = ApothemBisection(precision=1e-4).run(Problem(x, label, ppn.Box.unit(x.size)), crown)
            radii[name] = res.box.apothem(x, ppn.Box.unit(x.size)) if res.box is not None else 0.01
        r = max(radii[name], 1e-3) * FACTORS[(k // len(inputs)) % len(FACTORS)]
        boxes.append((np.clip(x - r, 0, 1), np.clip(x + r, 0, 1), label))
        k += 1
    return boxes


def run_batch(oracle, boxes, budget: float, chunk: int) -> tuple[int, float, dict[str, int]]:
    """Answer boxes (grouped by label, ``chunk`` per call) until done or the budget is spent:
    (boxes answered, seconds, verdict counts)."""
    counts = {"verified": 0, "falsified": 0, "unknown": 0}
    start = time.perf_counter()
    done = 0
    by_label: dict[int, list[int]] = {}
    for i, (_, _, label) in enumerate(boxes):
        by_label.setdefault(label, []).append(i)
    for label, idx in by_label.items():
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            lo = np.stack([boxes[i][0] for i in part])
            hi = np.stack([boxes[i][1] for i in part])
            for a in oracle.verify(lo, hi, label):
                counts[a.verdict.value] += 1
            done += len(part)
            if time.perf_counter() - start > budget:
                return done, time.perf_counter() - start, counts
    return done, time.perf_counter() - start, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=120.0, help="seconds per slow backend and configuration")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    backends = BACKENDS + (["marabou"] if marabou_available() else []) + (["lirpa"] if lirpa_available() else [])
    nets = []
    test = ppn.load_dataset("mnist", "test")
    if (REFERENCE / "nets").is_dir():
        ref = ppn.load_onnx(REFERENCE / "nets" / "mnist_nn-32.onnx")
        nets.append(("reference 784-32-10", ref, reference_inputs(REFERENCE, "mnist", ref)))
    deep = ppn.load_onnx(ppn.default_model_path("mnist", "deep"))
    deep_inputs = [(str(i), test[i][0].reshape(-1), int(deep.predict(test[i][0])[0])) for i in range(64)]
    nets.append(("default 784-100-100-10", deep, deep_inputs))
    rows, csv_rows = [], []
    for net_name, net, inputs in nets:
        boxes = make_boxes(net, inputs, 256)
        for name in backends:
            opts = {"time_limit": 10.0} if name in SLOW else {}
            oracle = make_oracle(name, net, **opts)
            oracle.verify(boxes[0][0][None], boxes[0][1][None], boxes[0][2])  # warm-up
            lat = []
            t0 = time.perf_counter()
            for lo, hi, label in boxes[::8]:  # 32 boxes covering every radius factor
                t = time.perf_counter()
                oracle.verify(lo[None], hi[None], label)
                lat.append(time.perf_counter() - t)
                if name in SLOW and time.perf_counter() - t0 > args.budget:
                    break
            chunk = 256 if oracle.batched else 16
            done, secs, counts = run_batch(oracle, boxes, args.budget if name in SLOW else float("inf"), chunk)
            med, rate = statistics.median(lat), len(lat) / sum(lat)
            rows.append([name, net_name, f"{med * 1000:.2f}", f"{rate:.0f}" if rate >= 10 else f"{rate:.2f}",
                         f"{done / secs:.0f}" if done / secs >= 10 else f"{done / secs:.2f}",
                         f"{done}/256" if done < 256 else "256",
                         f"{counts['verified']}/{counts['falsified']}/{counts['unknown']}"])
            csv_rows.append({"oracle": name, "network": net_name, "latency_ms_median": med * 1000,
                             "batch1_boxes_per_s": rate, "latency_ms_max": max(lat) * 1000,
                             "batch256_boxes_per_s": done / secs, "batch256_answered": done, **counts})
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["oracle", "network", "batch 1: median ms/call", "batch 1: boxes/s",
                            "256 boxes, a call per label: boxes/s", "boxes answered", "verified/falsified/unknown"], rows)
    text = (f"Oracle latency and throughput — `python -m benchmarks.oracle_throughput --budget {args.budget:g}`\n\n"
            f"Machine: {machine()}.\n\n{table}\n")
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle_throughput.md").write_text(text)
    write_csv(out / "oracle_throughput.csv", csv_rows)


if __name__ == "__main__":
    main()
