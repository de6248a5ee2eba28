"""Command-line options of the benchmarks, importable without their heavy dependencies
(the ``parallelepipedonn bench`` parser is built from them)."""

from __future__ import annotations

import argparse
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "parallelepipedonn-2.2"
RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("algorithms", "duals", "audit", "accuracy", "scaling")
ALGORITHMS = ("apothem-kary", "apothem-bisection", "apothem-linear", "apothem-topdown", "exact", "apothem-max-box",
              "box-maximal", "box-bisection", "box-topdown", "topdown-box", "volume-greedy", "volume-gradient")


def add_paper_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``bench paper`` (and ``python -m benchmarks.paper``)."""
    ap.add_argument("--quick", action="store_true", help="CI-sized: a few inputs per part (about 2 min on 2 idle cores)")
    ap.add_argument("--out", metavar="DIR", help="output directory (default: benchmarks/results/paper, "
                    "or benchmarks/results/paper-quick with --quick)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--inputs", type=int, help="reference inputs per dataset (default: all; --quick: 2)")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated search algorithms")
    ap.add_argument("--reference", metavar="DIR", default=str(REFERENCE),
                    help="the original system's reference data (default: ../shared/reference/parallelepipedonn-2.2)")
    ap.add_argument("--readme", action="store_true", help="also regenerate README.md's result blocks")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
