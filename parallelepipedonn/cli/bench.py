"""``parallelepipedonn bench``: the reproducible experiments of ``benchmarks/``, loaded from
the source checkout the package runs from."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

from ..errors import ConfigError
from .common import Parser
from .exits import EXIT_OK


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="reproducible experiments (needs a source checkout)")
    bench = p.add_subparsers(dest="experiment", required=True, parser_class=Parser)
    try:
        options = bench_module("options")
    except ConfigError:  # an installation without the benchmarks: any arguments, and cmd_bench says why
        options = None
    p = bench.add_parser("paper", help="the original system's experiments, ours beside them: tables and plots",
                         description="Run every algorithm on the original system's reference inputs, the dual "
                         "boxes, the audit of its published certificates, certified-accuracy curves and a scaling "
                         "study; write CSV, Markdown and PNG under --out.", prefix_chars="-" if options else "+")
    if options is not None:
        options.add_paper_arguments(p)
    else:
        p.add_argument("args", nargs="*")
    p.set_defaults(func=cmd_bench)


def bench_module(name: str) -> types.ModuleType:
    """``benchmarks.<name>`` from the source checkout this package runs from (an editable
    install, or ``python -m parallelepipedonn.cli`` in the checkout): the benchmarks are not
    installed, as ``benchmarks`` is no name for a top-level package of a distribution."""
    import importlib
    import importlib.util

    root = Path(__file__).resolve().parents[2]  # this module is <root>/parallelepipedonn/cli/bench.py
    init = root / "benchmarks" / "__init__.py"
    if not (init.is_file() and (root / "pyproject.toml").is_file()):
        raise ConfigError("the benchmarks need a source checkout of ParallelepipedoNN, installed with "
                          f"pip install -e . (no benchmarks/ beside {Path(__file__).parent.parent})")
    loaded = sys.modules.get("benchmarks")
    if loaded is None or Path(getattr(loaded, "__file__", None) or "").resolve() != init.resolve():
        spec = importlib.util.spec_from_file_location("benchmarks", init, submodule_search_locations=[str(init.parent)])
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"benchmarks.{name}")


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench paper``: the original system's experiments and ours (needs a source checkout)."""
    paper = bench_module("paper")
    paper.run(paper.config_from_args(args), echo=print)
    if args.readme:
        bench_module("readme").main()
    return EXIT_OK
