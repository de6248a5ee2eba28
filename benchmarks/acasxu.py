"""``verify`` on VNN-COMP's ACAS Xu instances (5 inputs): solved, time-outs, agreement.

    python -m benchmarks.acasxu --dir /path/to/benchmarks/acasxu --timeout 30 \\
        [--rows 0:20] [--pick NET:PROP ...] [--oracle NAME ...] [--out FILE.csv]

Reads ``acasxu_instances.csv`` in ``--dir`` (never committed; the benchmark stops with a
message when it is absent) and answers each instance with :func:`verify_property` in this
process, one thread, each oracle in turn (``default``: the CLI's choice, which asks
``crown+attack+input-split+bab`` for these 5-input models; ``attack+crown+...`` before
2026-12-06). ``EXPECTED`` are the verdicts
of the literature (Katz et al., CAV 2017, and VNN-COMP 2021's tools) for properties 1-4
and 5-10; every ``sat`` is also checked by onnxruntime on the model file (float32): the
counterexample's outputs must violate the property there too.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.common import machine, markdown_table
from parallelepipedonn.threads import configure_threads
from parallelepipedonn.verify import (
    DEFAULT_VERIFY_ORACLE,
    FEW_INPUTS_ORACLE,
    VerifyConfig,
    load_model_file,
    verify_property,
)
from parallelepipedonn.vnnlib import parse_vnnlib

#: Properties whose unsafe set is reached (``sat``) on some networks; every other instance of
#: properties 1-10 is ``unsat``. Property 2: all but N_1,x, N_3,3 and N_4,2; properties 3 and 4:
#: N_1,7, N_1,8, N_1,9; properties 7 and 8: their one network (N_1,9, N_2,9).
SAT = {("prop_2", f"{i}_{j}") for i in range(2, 6) for j in range(1, 10)} - {("prop_2", "3_3"), ("prop_2", "4_2")}
SAT |= {(p, f"1_{j}") for p in ("prop_3", "prop_4") for j in (7, 8, 9)} | {("prop_7", "1_9"), ("prop_8", "2_9")}


def expected(net: str, prop: str) -> str:
    return "sat" if (prop, net) in SAT else "unsat"


def instance_names(onnx: str, vnnlib: str) -> tuple[str, str]:
    net = onnx.removeprefix("ACASXU_run2a_").removesuffix("_batch_2000.onnx")
    return net, vnnlib.removesuffix(".vnnlib")


def ort_violates(model_path: Path, prop, x: np.ndarray) -> bool:
    """Whether onnxruntime's outputs (float32) at ``x`` violate the property."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    y = sess.run(None, {inp.name: x.astype(np.float32).reshape(shape)})[0].reshape(-1)
    ys = [Fraction(float(v)) for v in y]
    return any(r.contains(x) and r.violated_disjunct(ys) is not None for r in prop.regions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--rows", default=None, help="A:B, rows of the csv (0-based, B excluded)")
    parser.add_argument("--pick", nargs="*", default=[], help="NET:PROP instances, e.g. 1_1:prop_3")
    parser.add_argument("--oracle", nargs="*", default=["default"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_threads(1)
    table = args.dir / "acasxu_instances.csv"
    if not table.exists():
        print(f"no {table}: fetch VNN-COMP's acasxu benchmark there first", file=sys.stderr)
        return 0
    rows = [r for r in csv.reader(table.read_text().splitlines()) if r]
    chosen = []
    if args.rows:
        a, _, b = args.rows.partition(":")
        chosen += rows[int(a):int(b)]
    picks = {tuple(p.split(":")) for p in args.pick}
    chosen += [r for r in rows if instance_names(r[0], r[1]) in picks and r not in chosen]
    out, lines = [], []
    for onnx_name, vnnlib_name, _ in chosen:
        net_name, prop_name = instance_names(onnx_name, vnnlib_name)
        model = load_model_file(args.dir / onnx_name)
        prop = parse_vnnlib((args.dir / vnnlib_name).read_text(), str(args.dir / vnnlib_name))
        for oracle in args.oracle:
            config = VerifyConfig(few_inputs=FEW_INPUTS_ORACLE if oracle == "default" else None,
                                  oracle=DEFAULT_VERIFY_ORACLE if oracle == "default" else oracle)
            start = time.perf_counter()
            result = verify_property(model, prop, config=config, timeout=args.timeout)
            seconds = time.perf_counter() - start
            want = expected(net_name, prop_name)
            ort = "" if result.counterexample is None else \
                str(ort_violates(args.dir / onnx_name, prop, result.counterexample))
            agree = result.answer.value not in ("sat", "unsat") or result.answer.value == want
            row = {"net": net_name, "property": prop_name, "oracle": oracle, "oracle_used": result.oracle,
                   "answer": result.answer.value, "expected": want, "agrees": agree, "onnxruntime_sat": ort,
                   "seconds": round(seconds, 2)}
            out.append(row)
            lines.append(list(row.values()))
            print(*row.values(), sep="\t", flush=True)
    solved = {o: sum(r["answer"] in ("sat", "unsat") for r in out if r["oracle"] == o) for o in args.oracle}
    print(f"\n{machine()}, timeout {args.timeout:g} s")
    print(markdown_table(list(out[0]) if out else [], lines))
    for o, n in solved.items():
        print(f"{o}: {n} of {len(chosen)} solved, disagreements: "
              f"{sum(not r['agrees'] for r in out if r['oracle'] == o)}")
    if args.out:
        with args.out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(out[0]))
            w.writeheader()
            w.writerows(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
