"""The argument parser of the command line: the global options, then each command's own
(``add_arguments`` of its module, in the order ``--help`` lists them).

Building it imports no torch, pyomo or matplotlib (``--help``, ``--version``): the command
modules import their machinery in their handlers."""

from __future__ import annotations

import argparse

from .._version import __version__
from . import bench, certify, compare, dual, gmm, info, listing, recheck, store, train, verify
from .args import threads
from .common import Parser
from .exits import EXIT_CODES

#: The command modules, in the order of ``--help``.
COMMANDS = (certify, verify, compare, dual, recheck, train, gmm, store, bench, info, listing)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="parallelepipedonn",
                    description="Trustworthy robustness certifications for ReLU neural-network classifiers.",
                    epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug, -vvv also the solvers' and libraries')")
    parser.add_argument("--threads", type=threads, metavar="N",
                        help="torch threads (default: $PARALLELEPIPEDONN_THREADS, else 1, the fast choice for the "
                        "tool's small problems, above all on a busy machine; 0: torch's own default)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_arguments(sub)
    return parser
