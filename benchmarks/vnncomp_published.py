"""`verify --instances` on VNN-COMP 2022+ benchmarks, each answer set against the
competition's published results.

    python -m benchmarks.vnncomp_published --benchmarks DIR --results DIR --year 2023 \\
        --category collins_rul_cnn [--category ...] [--timeout-cap S]

``--benchmarks``: the ``benchmarks`` folder of a VNN-COMP benchmarks repository (e.g.
github.com/ChristopherBrix/vnncomp2023_benchmarks, fetched and read locally, never
committed; its ``.onnx.gz`` / ``.vnnlib.gz`` as shipped: ``verify --instances`` reads them
where ``instances.csv`` names the plain files). ``--results``: that year's results
repository (github.com/ChristopherBrix/vnncomp2023_results: ``TOOL/YEAR_CATEGORY/results.csv``,
rows ``category,onnx,vnnlib,prepare s,answer,run s``). The competition generates each
year's properties from a seed, so only the same year's files and results go together.

Each category runs as one ``verify --instances`` process (one thread, the default oracle)
into a fresh results store, with the instances' own timeouts (``--timeout-cap``: at most
that many seconds each). Then per instance: our answer and time, the published answer
(the majority of the tools that answered ``sat`` or ``unsat``, :func:`benchmarks.vnncomp.published_verdict`)
and whether ours agrees; every ``sat`` counterexample (already confirmed exactly by
``verify``) is checked again with onnxruntime (:func:`benchmarks.vnncomp.confirm_counterexample`).
Instances whose model or property file the local copy lacks (large files a partial fetch
left out) are left out of the run and listed under the table.
Outputs: ``vnncomp_published.csv`` (per instance) and ``vnncomp_published.md`` (README
block ``results:vnncomp_published``); ``--report`` rewrites the Markdown from the CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, cpu_name, markdown_table, write_csv
from benchmarks.vnncomp import ANSWERS, SOLVED, confirm_counterexample, load1, published_verdict

STATUS_ANSWER = {"certified": "unsat", "not-robust": "sat", "unknown": "unknown", "error": "error"}


def _relative(path: str, category: str) -> str:
    """A path as written in a results CSV or an instance id, from the category's folder on
    (``onnx/m.onnx``), without ``.gz``."""
    p = path.replace("\\", "/")
    marker = f"/{category}/"
    p = p[p.rindex(marker) + len(marker):] if marker in p else p.lstrip("./")
    return p[:-3] if p.endswith(".gz") else p


def read_published(results: Path, year: str, category: str) -> dict[tuple[str, str], dict[str, str]]:
    """``(onnx, vnnlib)`` -> {tool: ``sat``/``unsat``} from every tool's ``results.csv``."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for f in sorted(results.glob(f"*/{year}_{category}/results.csv")):
        with open(f, newline="") as fh:
            for r in csv.reader(fh):
                answer = ANSWERS.get(r[4].strip().lower()) if len(r) >= 5 else None
                if answer in SOLVED:
                    out.setdefault((_relative(r[1], category), _relative(r[2], category)), {})[f.parts[-3]] = answer
    return out


def _present(path: Path) -> bool:
    """The file, or its ``.gz`` (as ``verify --instances`` reads it), is there."""
    return path.is_file() or path.with_name(path.name + ".gz").is_file()


def capped_instances(bench: Path, category: str, cap: float | None, work: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The category's ``instances.csv`` with absolute paths and timeouts capped at ``cap``,
    without the instances whose model or property file the local copy lacks (returned:
    ``(onnx, vnnlib)`` as the CSV names them)."""
    src = bench / category / "instances.csv"
    rows = [r for r in csv.reader(src.read_text().splitlines()) if r and r[0].strip()
            and not r[0].strip().startswith("#")]
    out = work / f"{category}.csv"
    missing = []
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        for onnx, vnnlib, timeout in rows:
            model, prop = bench / category / onnx.strip(), bench / category / vnnlib.strip()
            if not (_present(model) and _present(prop)):
                missing.append((onnx.strip(), vnnlib.strip()))
                continue
            t = float(timeout) if cap is None else min(float(timeout), cap)
            w.writerow([str(model), str(prop), repr(t)])
    return out, missing


def run_category(args, category: str, work: Path, echo=print) -> list[dict]:
    instances, missing = capped_instances(Path(args.benchmarks), category, args.timeout_cap, work)
    if missing:
        echo(f"{category}: {len(missing)} instance(s) left out, their files absent from the local copy")
    store = work / f"{category}.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    echo(f"{category}: verify --instances ({datetime.now(timezone.utc):%H:%M} UTC, load {load1():.1f})")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "parallelepipedonn.cli", "verify", "--instances", str(instances),
                           "--store", str(store)], env=env, check=False)
    wall = time.perf_counter() - start
    if not store.is_file():
        raise SystemExit(f"{category}: verify --instances wrote no store (exit code {done.returncode})")
    import sqlite3

    published = read_published(Path(args.results), args.year, category)
    rows = []
    with sqlite3.connect(store) as db:
        stored = db.execute("select input_id, status, seconds, certificate from results").fetchall()
    expected = sum(1 for _ in csv.reader(instances.read_text().splitlines()))
    if len(stored) != expected:  # (an instance that errored has a row; a crash leaves some without)
        echo(f"{category}: {expected - len(stored)} of {expected} instances have no result (exit code "
             f"{done.returncode})")
    for input_id, status, seconds, cert in stored:
        onnx, vnnlib = input_id.split("::")
        key = (_relative(onnx, category), _relative(vnnlib, category))
        answer = STATUS_ANSWER.get(status, status)
        result = json.loads(cert) if cert else {}
        if answer == "unknown" and result.get("result") == "timeout":
            answer = "timeout"
        tools = published.get(key, {})
        verdict = published_verdict(tools)
        ort = ""
        if answer == "sat" and result.get("counterexample") is not None:
            exact = result.get("counterexample_exact")
            from fractions import Fraction

            x = np.array(result["counterexample"], dtype=np.float64)
            ort = confirm_counterexample(Path(onnx), Path(vnnlib), x,
                                         None if exact is None else [Fraction(v) if v is not None else Fraction(f)
                                                                     for v, f in zip(exact, x.tolist())])[0]
        rows.append({"category": category, "onnx": key[0], "vnnlib": key[1], "answer": answer,
                     "seconds": f"{seconds:.3f}" if seconds is not None else "",
                     "published": verdict, "tools_sat": sum(v == "sat" for v in tools.values()),
                     "tools_unsat": sum(v == "unsat" for v in tools.values()),
                     "agrees": "" if answer not in SOLVED or verdict not in SOLVED else str(answer == verdict).lower(),
                     "onnxruntime": ort, "category_wall_s": f"{wall:.1f}"})
    tools_of = {k: published.get((_relative(k[0], category), _relative(k[1], category)), {}) for k in missing}
    rows += [{"category": category, "onnx": onnx, "vnnlib": vnnlib, "answer": "missing", "seconds": "",
              "published": published_verdict(tools_of[(onnx, vnnlib)]), "tools_sat": "", "tools_unsat": "",
              "agrees": "", "onnxruntime": "", "category_wall_s": f"{wall:.1f}"} for onnx, vnnlib in missing]
    return rows


def summary(rows: list[dict], note: str = "") -> str:
    header = ["category", "instances", "ours: unsat / sat / unknown / timeout / error", "agree with the published answer",
              "disagree", "no published answer (or a tie)", "sat confirmed by onnxruntime",
              "median / max s per instance",
              "whole category (wall s)"]
    table = []
    absent = [r for r in rows if r["answer"] == "missing"]
    for category in sorted({r["category"] for r in rows}):
        rs = [r for r in rows if r["category"] == category and r["answer"] != "missing"]
        if not rs:
            continue
        count = {a: sum(r["answer"] == a for r in rs) for a in ("unsat", "sat", "unknown", "timeout", "error")}
        secs = [float(r["seconds"]) for r in rs if r["seconds"]]
        sats = [r for r in rs if r["answer"] == "sat"]
        table.append([category, len(rs), " / ".join(str(count[a]) for a in count),
                      sum(r["agrees"] == "true" for r in rs), sum(r["agrees"] == "false" for r in rs),
                      sum(r["published"] not in SOLVED for r in rs),
                      f"{sum(r['onnxruntime'] == 'confirmed' for r in sats)} of {len(sats)}",
                      f"{statistics.median(secs):.2f} / {max(secs):.2f}" if secs else "-", rs[0]["category_wall_s"]])
    wrong = [r for r in rows if r["agrees"] == "false"]
    lines = [note, "", markdown_table(header, table)]
    if absent:
        lines += ["", "Left out (their files absent from the local copy of the benchmarks): "
                  + "; ".join(f"{r['category']} {r['onnx']} {r['vnnlib']}" for r in absent) + "."]
    if wrong:
        lines += ["", "Disagreements:", ""] + [f"- {r['category']} {r['onnx']} {r['vnnlib']}: ours {r['answer']}, "
                                               f"published {r['published']} ({r['tools_sat']} sat, "
                                               f"{r['tools_unsat']} unsat)" for r in wrong]
    return "\n".join(lines).strip() + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmarks", help="the benchmarks folder of vnncomp<YEAR>_benchmarks")
    p.add_argument("--results", help="a checkout of vnncomp<YEAR>_results")
    p.add_argument("--year", default="2023", help="the results' folder prefix (default %(default)s)")
    p.add_argument("--category", action="append", default=[], help="a category (repeatable)")
    p.add_argument("--timeout-cap", type=float, default=None, help="at most this many seconds per instance")
    p.add_argument("--out", default=str(RESULTS), help="where the CSV and the Markdown go")
    p.add_argument("--report", action="store_true", help="rewrite the Markdown from the CSV")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    out = Path(args.out)
    csv_path, md_path = out / "vnncomp_published.csv", out / "vnncomp_published.md"
    if args.report:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        note = md_path.read_text().split("\n\n", 1)[0] if md_path.is_file() else ""
    else:
        if not (args.benchmarks and args.results and args.category):
            parser().error("give --benchmarks, --results and at least one --category")
        for c in args.category:
            if not (Path(args.benchmarks) / c / "instances.csv").is_file():
                parser().error(f"{Path(args.benchmarks) / c / 'instances.csv'} does not exist")
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        started = datetime.now(timezone.utc)
        rows = []
        with tempfile.TemporaryDirectory(prefix="ppn-vnncomp-") as tmp:
            for c in args.category:
                rows += run_category(args, c, Path(tmp))
        cap = "" if args.timeout_cap is None else f" --timeout-cap {args.timeout_cap:g}"
        cats = " ".join(f"--category {c}" for c in args.category)
        note = (f"VNN-COMP {args.year} categories, our answers (default oracle, one thread, each instance's own "
                f"timeout{', capped' if cap else ''}) against the published results of that year's tools "
                f"(majority of those that answered). Commit {commit}, {started:%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
                f"{os.cpu_count()} cores, load {load1():.1f} at the end: `python -m benchmarks.vnncomp_published "
                f"--benchmarks DIR --results DIR --year {args.year} {cats}{cap}`.")
        write_csv(csv_path, rows)
    md_path.write_text(summary(rows, note))
    print(md_path.read_text())


if __name__ == "__main__":
    main()
