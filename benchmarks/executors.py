"""Batch certification throughput: the local executor beside the Ray executor with 1 and 2 workers.

    python -m benchmarks.executors [--indices 0:200] [--exact-indices 0:60] [--workers 1,2] [--repeats 2]
                                   [--out benchmarks/results]

MNIST test images with the embedded default network (784-32-10), for the default search
and for ``--algorithm exact``. Each configuration certifies the same images into a fresh
results store with :func:`~parallelepipedonn.batch.certify_batch`, as
``parallelepipedonn certify --dataset mnist --indices ... --store ... --executor ...``
does: inputs per second of the batch, from its first input to its last committed row
(the best of ``--repeats`` runs, each into a fresh store: the machine may be shared).
For Ray, a private local cluster of ``workers`` CPUs is started first (its start-up time
is a column of its own) and warmed up on a few other images (its worker processes
import torch; also a column), so that the rate is the steady one. Every run checks that
the Ray rows have the status and apothem of the local executor's. Writes
``executors.md`` and ``executors.csv``; the 1-minute load average (other processes on
the machine) is recorded when each run starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import parallelepipedonn as ppn
from benchmarks.common import RESULTS, machine, markdown_table, write_csv
from parallelepipedonn.batch import certify_batch, inputs_from_dataset, parse_indices
from parallelepipedonn.certify import CertifyConfig
from parallelepipedonn.search import DEFAULT_SEARCH
from parallelepipedonn.threads import configure_threads

WARM_UP = 8  # images (not measured) that a fresh cluster's workers certify first


def _results(store: Path) -> dict[str, tuple[str, float | None]]:
    with sqlite3.connect(store) as db:
        return {i: (s, a) for i, s, a in db.execute("SELECT input_id, status, apothem FROM results")}


def _timed(net, inputs, store: Path, config: CertifyConfig, executor, repeats: int) -> float:
    """The shortest of ``repeats`` runs of the batch, each into a fresh store (``store``: the last)."""
    best = float("inf")
    for _ in range(repeats):
        store.unlink(missing_ok=True)
        start = time.perf_counter()
        report = certify_batch(net, inputs, store, config=config, executor=executor)
        best = min(best, time.perf_counter() - start)
        assert report.computed == len(inputs) and not report.errors, report.errors
    return best


def measure(net, inputs, warm, config: CertifyConfig, workers: list[int], repeats: int, scratch: Path) -> list[dict]:
    """One row per executor: local, then Ray with each number of workers."""
    import ray

    from parallelepipedonn.executors.ray_cluster import RayExecutor

    rows = []
    load = os.getloadavg()[0]
    local_store = scratch / f"{config.algorithm}-local.db"
    seconds = _timed(net, inputs, local_store, config, "local", repeats)
    reference = _results(local_store)
    rows.append({"algorithm": config.algorithm, "executor": "local", "workers": 1, "inputs": len(inputs),
                 "seconds": seconds, "inputs_per_s": len(inputs) / seconds, "start_s": None, "warm_up_s": None,
                 "load": load, "same_results": True})
    for w in workers:
        load = os.getloadavg()[0]
        temp = tempfile.mkdtemp(prefix="ppn-rb-", dir="/tmp")
        start = time.perf_counter()
        ray.init(address="local", num_cpus=w, include_dashboard=False, _temp_dir=temp, configure_logging=False,
                 log_to_driver=False)
        started = time.perf_counter() - start
        try:
            start = time.perf_counter()
            certify_batch(net, warm, scratch / f"warm-{config.algorithm}-{w}.db", config=config,
                          executor=RayExecutor())
            warm_up = time.perf_counter() - start
            store = scratch / f"{config.algorithm}-ray-{w}.db"
            seconds = _timed(net, inputs, store, config, RayExecutor(), repeats)
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
        rows.append({"algorithm": config.algorithm, "executor": "ray", "workers": w, "inputs": len(inputs),
                     "seconds": seconds, "inputs_per_s": len(inputs) / seconds, "start_s": started,
                     "warm_up_s": warm_up, "load": load, "same_results": _results(store) == reference})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--indices", default="0:200", help="images for the default search (default 0:200)")
    ap.add_argument("--exact-indices", default="0:60", help="images for --algorithm exact (default 0:60)")
    ap.add_argument("--workers", default="1,2", help="Ray workers (CPUs of the local cluster), comma list")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each batch: the fastest counts (default 2)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when Ray is imported (as the executor sets it)
    configure_threads(1)  # the command line's thread policy, in the driver
    workers = [int(w) for w in args.workers.split(",")]
    net = ppn.load_onnx(ppn.default_model_path("mnist"))
    data = ppn.load_dataset("mnist", "test")
    warm = inputs_from_dataset(data, range(900, 900 + WARM_UP))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec, config in [(args.indices, CertifyConfig()), (args.exact_indices, CertifyConfig(algorithm="exact"))]:
            inputs = inputs_from_dataset(data, parse_indices(spec))
            rows += measure(net, inputs, warm, config, workers, args.repeats, Path(scratch))
    out = Path(args.out)
    write_csv(out / "executors.csv", rows)
    local = {r["algorithm"]: r["inputs_per_s"] for r in rows if r["executor"] == "local"}
    table = markdown_table(
        ["algorithm", "executor", "workers", "inputs", "inputs/s", "vs local", "cluster start (s)", "warm-up (s)",
         "load", "same status and apothem as local"],
        [[r["algorithm"] + (" (default)" if r["algorithm"] == DEFAULT_SEARCH else ""), r["executor"], r["workers"],
          r["inputs"], f"{r['inputs_per_s']:.1f}", f"{r['inputs_per_s'] / local[r['algorithm']]:.2f}×",
          "" if r["start_s"] is None else f"{r['start_s']:.1f}",
          "" if r["warm_up_s"] is None else f"{r['warm_up_s']:.1f}", f"{r['load']:.1f}",
          "yes" if r["same_results"] else "NO"] for r in rows])
    command = "python -m benchmarks.executors" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("indices", args.indices), ("exact_indices", args.exact_indices),
                                                     ("workers", args.workers), ("repeats", args.repeats)))
    text = (f"Batch certification throughput — `{command}`\n\n"
            f"Machine: {machine()}; Ray {__import__('ray').__version__}. MNIST test images, the default network "
            "(784-32-10); each row certifies the same images into a fresh store (inputs/s from the first input to "
            f"the last committed row; the fastest of {args.repeats} runs). Ray: a private local cluster of "
            f"`workers` CPUs, started (cluster start) and warmed up on {WARM_UP} other images (warm-up: its workers import torch) before the measured batch. "
            "Load: the 1-minute load average when the row's run began (other processes share the cores).\n\n"
            f"{table}\n")
    (out / "executors.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
