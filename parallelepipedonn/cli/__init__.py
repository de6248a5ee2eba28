"""The ``parallelepipedonn`` command line (the console script ``parallelepipedonn.cli:main``;
also ``python -m parallelepipedonn.cli``).

One module per command, each with its options (``add_arguments``) and its handler:
:mod:`.certify` (one input, or a batch into a results store), :mod:`.verify` (a
VNN-LIB property, robustness at a radius, or VNN-COMP instances), :mod:`.compare`,
:mod:`.dual`, :mod:`.recheck`, :mod:`.train`, :mod:`.store`, :mod:`.bench`, :mod:`.info`
and :mod:`.listing` (``list``). :mod:`.parser` builds the parser from them, :mod:`.args`
holds the shared argument types and option groups, :mod:`.common` the helpers the commands
share (output-path checks, loading a model and an input), and :mod:`.exits` the exit codes
and the mapping of errors to them:

0 the command ran (whatever the certification status); 1 internal error; 2 bad input or
usage (unreadable/unsupported model, malformed input, unknown option value); 4 an output
file cannot be written; 130 interrupted. ``recheck`` also: 3 the model file's sha256
differs from the certificate's; 5 refuted; 6 undecided. 141 broken pipe. The table users
see is ``EXIT_CODES`` (``--help``).

Only light modules are imported here and by the parser: ``--help``, ``--version`` and
``list`` import no torch, pyomo or matplotlib; each command imports its machinery in its
handler.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .bench import bench_module
from .exits import EXIT_CODES, run_command
from .parser import build_parser

__all__ = ["EXIT_CODES", "bench_module", "build_parser", "main"]

log = logging.getLogger("parallelepipedonn")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # third-party loggers (pyomo dumps whole models at DEBUG) stay at WARNING unless -vvv
    for name in ("pyomo", "matplotlib", "PIL", "onnx", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.WARNING if args.verbose < 3 else logging.DEBUG)
    return run_command(args)
