"""The complete oracles on the graph IR: milp and bab on the embedded MNIST CNN and
residual net, reading the graph as it is, and — for the CNN, whose ReLUs form a chain —
on its dense chain expansion (``Graph.to_chain()``, what they read before), on the same
boxes; and milp's exact distance (the best apothem) on both.

    python -m benchmarks.graph_complete [--inputs 3] [--time-limit 30] [--distance-limit 120]
                                        [--nets cnn,resnet]

Per input (the first MNIST test images the net classifies correctly): CROWN's certified
apothem ``a`` and the attack's counterexample distance ``u`` (``certify`` with the default
search), then two cubes CROWN cannot verify: radius ``1.2 a`` and ``(a + u) / 2``. Each
oracle answers each cube within ``--time-limit`` seconds (its own time limit); the table
gives the verdicts and the median time. The distance query gets ``--distance-limit``
seconds. One torch thread, one HiGHS thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import parallelepipedonn as ppn
from benchmarks.common import RESULTS, machine, markdown_table, write_csv

DATA = Path(__file__).resolve().parents[1] / "data"
NETS = {"cnn": "mnist-cnn.onnx", "resnet": "mnist-resnet.onnx"}


def _inputs(net, count: int) -> list[tuple[int, np.ndarray, int]]:
    data = ppn.load_dataset("mnist", "test")
    images, labels = data.images, data.labels
    out = []
    for i in range(len(labels)):
        x = np.asarray(images[i], dtype=np.float64).reshape(-1)
        if int(net.predict(x)[0]) == int(labels[i]):
            out.append((i, x, int(labels[i])))
        if len(out) == count:
            break
    return out


def run(args) -> list[dict]:
    from oracles import AttackOracle, make_oracle

    ppn.configure_threads(1)
    rows: list[dict] = []
    for name in args.nets.split(","):
        graph = ppn.load_onnx(DATA / NETS[name])
        variants = {"graph": graph}
        if graph.as_network() is None:
            try:
                variants["chain"] = graph.to_chain()
            except ppn.ModelError:  # residual: no chain
                pass
        for index, x, label in _inputs(graph, args.inputs):
            cert = ppn.certify(graph, x, label, config=ppn.CertifyConfig(precision=1e-3))
            a, u = cert.apothem, cert.apothem_upper_bound
            radii = [1.2 * a] + ([(a + u) / 2] if u is not None else [])
            for radius in radii:
                lo, hi = np.clip(x - radius, 0, 1), np.clip(x + radius, 0, 1)
                for oracle in ("milp", "bab"):
                    for reads, net in variants.items():
                        o = make_oracle(oracle, net, time_limit=args.time_limit)
                        start = time.perf_counter()
                        answer = o.verify_box(lo, hi, label)
                        rows.append({"net": name, "input": index, "query": f"verify r={radius / a:.2f}a",
                                     "oracle": oracle, "reads": reads, "answer": answer.verdict.value,
                                     "seconds": round(time.perf_counter() - start, 3)})
            for reads, net in variants.items():
                o = make_oracle("milp", net, time_limit=args.distance_limit)
                start = time.perf_counter()
                d = o.min_distance(x, label, ppn.Box.unit(x.size), lower=a, falsifier=AttackOracle(net),
                                   time_limit=args.distance_limit)
                rows.append({"net": name, "input": index, "query": "distance", "oracle": "milp", "reads": reads,
                             "answer": f"[{d.lower:.6g}, {d.upper:.6g}]" + ("" if d.exact(1e-4) else " (open)"),
                             "seconds": round(time.perf_counter() - start, 3)})
            print(f"{name} #{index} done", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["net"], r["query"].split(" r=")[0], r["oracle"], r["reads"]), []).append(r)
    out = []
    for (net, query, oracle, reads), rs in groups.items():
        answers: dict[str, int] = {}
        for r in rs:
            key = r["answer"] if query == "verify" else ("exact" if "open" not in r["answer"] else "open")
            answers[key] = answers.get(key, 0) + 1
        out.append([net, query, oracle, reads, len(rs), ", ".join(f"{k} {v}" for k, v in sorted(answers.items())),
                    f"{statistics.median(r['seconds'] for r in rs):.2f}", f"{max(r['seconds'] for r in rs):.2f}"])
    return markdown_table(["net", "query", "oracle", "reads", "n", "answers", "median s", "max s"], out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=30.0)
    p.add_argument("--distance-limit", type=float, default=120.0)
    p.add_argument("--nets", default="cnn,resnet")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    rows = run(args)
    out = Path(args.out)
    write_csv(out / "graph_complete.csv", rows)
    text = (f"Complete oracles on graphs — `python -m benchmarks.graph_complete --inputs {args.inputs} --time-limit "
            f"{args.time_limit:g} --distance-limit {args.distance_limit:g}` ({machine()})\n\n{table(rows)}\n")
    (out / "graph_complete.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
