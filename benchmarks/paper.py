"""Reproduce and surpass the original system's experiments: one command, tables and plots.

    parallelepipedonn bench paper [--quick] [--out DIR] [--parts algorithms,duals,audit,accuracy,scaling]
    python -m benchmarks.paper ...          (the same)

Parts (all by default):

- ``algorithms``: every search algorithm (apothem family, box family, composition,
  volume-based methods, exact optimum) on the original system's 100 reference inputs
  (../shared/reference/parallelepipedonn-2.2; the class in the file name is the label, as
  in the original runs), laid out like the original README's tables with its published
  row beside ours, plus apothem / exact optimum, log-volume and gap.
- ``duals``: exact dual boxes of every class (unrestricted), and per input the original
  ``complete-c-d-bu`` (the smallest cube around the input holding its whole class) and
  ``complete-bu`` problems solved by our complete algorithms.
- ``audit``: every published ``c-bu-d`` cube and ``complete-c-d-bu`` dual cube checked with
  our exact oracle; each unsound one is shown with its closest offending point, confirmed
  by a forward pass.
- ``accuracy``: certified-accuracy curves (fraction of test inputs whose L-infinity ball of
  radius eps is proven robust) of the embedded default nets on the offline test data, per
  oracle, with an attack-based upper bound and the exact value on a subset; and the
  embedded latent Gaussian-mixture classifiers of ``data/`` beside them (``gmm_accuracy``,
  :func:`benchmarks.gmm.part_accuracy`: L-infinity and L2 radii, the mixture diagnostics,
  published MNIST anchors).
- ``scaling``: oracle calls and time against precision, network size and batch size.

Everything goes under ``--out`` (CSV per input, Markdown summaries, PNG figures); the
README's "Results" blocks are generated from the Markdown files (``--readme``).

This module drives the parts and writes the files; the experiments are
:mod:`benchmarks.paper_runs`'s, the tables and figures :mod:`benchmarks.paper_report`'s.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import parallelepipedonn as ppn
from benchmarks.common import REFERENCE_NETS, machine, write_csv
from benchmarks.options import ALGORITHMS, PARTS, REFERENCE, RESULTS, add_paper_arguments
from benchmarks.paper_report import (
    DATASET_TITLE,
    accuracy_markdown,
    algorithms_table,
    audit_markdown,
    plot_accuracy,
    plot_apothem_vs_exact,
    plot_example_boxes,
    plot_min_edges,
    plot_scaling,
    plot_times,
    scaling_markdown,
)
from benchmarks.paper_runs import (
    ALGO_CERTS,
    AUDIT_POINTS,
    SLOW,
    PaperConfig,
    accuracy_curves,
    audit,
    reference_set,
    run_algorithms,
    run_duals,
    scaling,
    spread,
)

#: This module's names, with the experiments' ones that callers (the tests) read from here.
__all__ = ["AUDIT_POINTS", "PaperConfig", "audit", "config_from_args", "main", "reference_set", "run", "spread"]


# ---------------------------------------------------------------- driver

def run(cfg: PaperConfig, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the parts of ``cfg``; returns the Markdown files written (name -> path)."""
    out = cfg.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ppn.OutputPathError(f"cannot write the results under {str(out)!r}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK):
        raise ppn.OutputPathError(f"cannot write the results under {str(out)!r}: permission denied")
    written: dict[str, Path] = {}
    need_reference = {"algorithms", "duals", "audit"} & set(cfg.parts)
    if need_reference and not (cfg.reference / "nets").is_dir():
        raise ppn.ConfigError(f"the original system's reference data is not at {cfg.reference} "
                              "(parts algorithms, duals and audit need it; see --reference)")
    stamp = f"Machine: {machine()}. Command: `{cfg.command}`{' (quick: a subset)' if cfg.quick else ''}."
    algo_rows: list[dict[str, Any]] = []
    dual_rows: list[dict[str, Any]] = []
    audit_rows: list[dict[str, Any]] = []
    exact: dict[str, dict[str, ppn.Certificate]] = {}
    started = time.perf_counter()

    def done(part: str, since: float) -> float:
        echo(f"bench paper: {part} done in {time.perf_counter() - since:.0f} s")
        return time.perf_counter()

    mark = started
    for dataset in REFERENCE_NETS if need_reference else ():
        net, inputs = reference_set(cfg, dataset)
        if {"algorithms", "audit"} & set(cfg.parts):
            algos = cfg.algorithms if "algorithms" in cfg.parts else ("exact",)
            rows = run_algorithms(replace(cfg, algorithms=algos), dataset, net, inputs)
            algo_rows += rows if "algorithms" in cfg.parts else []
            exact[dataset] = {n: c for (a, n), c in ALGO_CERTS[dataset].items() if a == "exact"}
        classes: dict[int, ppn.DualBox] = {}
        if {"duals", "audit"} & set(cfg.parts):
            drows, classes = run_duals(cfg, dataset, net, inputs) if "duals" in cfg.parts else \
                ([], {c: ppn.dual_box(net, c, workers=cfg.workers) for c in sorted({i.label for i in inputs})})
            dual_rows += drows
        if "audit" in cfg.parts:
            audit_rows += audit(cfg, dataset, net, inputs, exact[dataset], classes)
        if "algorithms" in cfg.parts:
            plot_example_boxes(dataset, out / f"boxes_{dataset}.png")
        mark = done(f"{dataset} reference experiments", mark)
    if algo_rows:
        write_csv(out / "algorithms.csv", algo_rows)
        slow_n = sorted({len({r["input"] for r in algo_rows if r["algorithm"] in SLOW and r["dataset"] == d})
                         for d in dict.fromkeys(r["dataset"] for r in algo_rows)} - {0})
        text = ("Every algorithm on the original system's reference nets and inputs (label = the class in the file "
                "name, as in the original runs; an input the net misclassifies gets no box, min edge 0), precision "
                f"δ = {cfg.precision:g}, beside the original's published rows (*italic*: Marabou, δ = 0.1 — "
                "radii in steps of 1/16 — 60 min time-out per input, time-outs counted as proofs). "
                "`apothem / exact`: certified apothem over the exact optimum (the `exact` algorithm's proven upper "
                "bound), certified inputs; `gap`: the result's own proven apothem upper bound minus its apothem. "
                f"The slow volume-oriented searches ({', '.join(f'`{a}`' for a in SLOW)}) ran on "
                f"{' or '.join(map(str, slow_n)) or 'no'} inputs per dataset (evenly spaced in file-name order; the "
                "original's rows beside them are over the same inputs) with a time limit of "
                f"{cfg.slow_time_limit:g} s per input; a time-out returns the box certified until then. "
                "The original's time-outs are its own count (its logs' flag). "
                f"{stamp}\n")
        for dataset in dict.fromkeys(r["dataset"] for r in algo_rows):
            text += f"\n**{DATASET_TITLE[dataset]}** ({len({r['input'] for r in algo_rows if r['dataset'] == dataset})}"
            text += " inputs)\n\n" + algorithms_table(dataset, [r for r in algo_rows if r["dataset"] == dataset],
                                                      [r for r in dual_rows if r["dataset"] == dataset],
                                                      cfg.reference) + "\n"
        written["summary"] = _write(out / "summary.md", text)
        plot_min_edges(algo_rows, out / "min_edge.png", cfg.reference)
        plot_apothem_vs_exact(algo_rows, out / "apothem_vs_exact.png")
        plot_times(algo_rows, out / "time.png", cfg.reference)
    if dual_rows:
        write_csv(out / "duals.csv", [{k: r.get(k) for k in dual_rows[0]} for r in dual_rows])
        cls = [r for r in dual_rows if r["method"] == "dual milp"]
        text = (f"Exact dual boxes: {sum(r['whole_region'] for r in cls)} of {len(cls)} classes of the two reference "
                f"nets have the whole domain [0,1]^784 as their exact dual box "
                f"({sum(r['exact'] for r in cls)} of {sum(r['bounds'] for r in cls)} bounds proven exact). {stamp}\n")
        written["duals"] = _write(out / "duals.md", text)
    if audit_rows:
        write_csv(out / "audit.csv", [{k: r.get(k) for k in _columns(audit_rows)} for r in audit_rows])
        written["audit"] = _write(out / "audit.md", audit_markdown(audit_rows) + f"\n{stamp}\n")
    if "accuracy" in cfg.parts:
        rows = accuracy_curves(cfg)
        if rows:
            write_csv(out / "accuracy.csv", rows)
            plot_accuracy(rows, out / "accuracy.png")
            written["accuracy"] = _write(out / "accuracy.md", accuracy_markdown(rows) + f"\n{stamp}\n")
        from benchmarks import gmm

        gmm_rows = [r for ds in ("mnist", "fashion-mnist") if ppn.datasets.dataset_available(ds)
                    for r in gmm.part_accuracy(ds, 100 if cfg.quick else None, 5 if cfg.quick else 200, cfg.progress)]
        if gmm_rows:
            gmm.write_rows(out / "gmm_accuracy.csv", gmm_rows)
            written["gmm_accuracy"] = _write(out / "gmm_accuracy.md", gmm.accuracy_markdown(gmm_rows) + f"\n{stamp}\n")
        mark = done("accuracy", mark)
    if "scaling" in cfg.parts:
        rows = scaling(cfg)
        write_csv(out / "scaling.csv", [{k: r.get(k) for k in _columns(rows)} for r in rows])
        plot_scaling(rows, out / "scaling.png")
        written["scaling"] = _write(out / "scaling.md", scaling_markdown(rows) + f"\n{stamp}\n")
        mark = done("scaling", mark)
    echo(f"bench paper: {', '.join(cfg.parts)} in {time.perf_counter() - started:.0f} s; results in {out}")
    return written


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_from_args(args: argparse.Namespace) -> PaperConfig:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ppn.ConfigError(f"unknown bench part(s) {', '.join(unknown)}; available: {', '.join(PARTS)}")
    if not parts:
        raise ppn.ConfigError(f"--parts names no part; available: {', '.join(PARTS)}")
    algorithms = tuple(dict.fromkeys(a.strip() for a in args.algorithms.split(",") if a.strip()))  # once each
    if not algorithms and "algorithms" in parts:
        raise ppn.ConfigError("--algorithms names no algorithm")
    from parallelepipedonn.search import SEARCHES

    unknown = [a for a in algorithms if a not in SEARCHES]
    if unknown:
        raise ppn.ConfigError(f"unknown algorithm(s) {', '.join(unknown)}; available: {', '.join(SEARCHES)}")
    if "audit" in parts and "exact" not in algorithms:
        algorithms += ("exact",)
    if args.inputs is not None and args.inputs < 1:
        raise ppn.ConfigError(f"--inputs must be at least 1, got {args.inputs}")
    if args.out is not None and not args.out.strip():
        raise ppn.ConfigError("--out is empty")
    out = Path(args.out) if args.out is not None else RESULTS / ("paper-quick" if args.quick else "paper")
    if out.exists() and not out.is_dir():
        raise ppn.ConfigError(f"--out {out} exists and is not a directory")
    if getattr(args, "readme", False) and out.resolve() != (RESULTS / "paper").resolve():
        raise ppn.ConfigError(f"--readme puts {RESULTS / 'paper'} into README.md; this run writes {out} "
                              "(run python -m benchmarks.readme after copying results you mean to publish)")
    command = " ".join(["parallelepipedonn bench paper", *(["--quick"] if args.quick else []),
                        *([f"--parts {','.join(parts)}"] if set(parts) != set(PARTS) else []),
                        *([f"--inputs {args.inputs}"] if args.inputs is not None else []),
                        *([f"--algorithms {','.join(algorithms)}"] if args.algorithms != ",".join(ALGORITHMS) else []),
                        *([f"--reference {args.reference}"] if Path(args.reference) != REFERENCE else []),
                        *([f"--out {args.out}"] if args.out is not None else [])])
    return PaperConfig(out=out, quick=args.quick, parts=parts, inputs=args.inputs, algorithms=algorithms,
                       reference=Path(args.reference), progress=not args.no_progress, command=command)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_paper_arguments(ap)
    args = ap.parse_args(argv)
    run(config_from_args(args))
    if args.readme:
        from benchmarks import readme

        readme.main()


if __name__ == "__main__":
    main()
