"""``parallelepipedonn store``: read a results store of batch certification."""

from __future__ import annotations

import argparse

from .args import epsilons
from .common import Parser
from .exits import EXIT_OK


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="read a results store of batch certification")
    store_sub = p.add_subparsers(dest="store_command", required=True, parser_class=Parser)
    q = store_sub.add_parser("summary", help="counts, accuracies and medians per run configuration")
    q.add_argument("path", metavar="results.db")
    q.add_argument("--epsilon", type=epsilons, action="extend", default=[], metavar="E",
                   help="also the certified accuracy at E: certified for the true label with an apothem >= E "
                   "(a comma list, or repeat the option)")
    q.set_defaults(func=cmd_store_summary, torch_free=True)


def cmd_store_summary(args: argparse.Namespace) -> int:
    from ..store import ResultStore, Summary

    with ResultStore(args.path, read_only=True) as store:
        configs = store.configs()
        print(f"{args.path}: {len(configs)} configuration(s)")
        for key, c in configs.items():
            rows = store.rows(key)
            if c.get("command") == "verify":  # verify --instances: each instance's property and time-out
                label, limit = "each property's", str(c.get("timeouts") or "per instance")
            else:
                label = {None: "predicted", "true": "true (each input's)"}.get(c.get("label"), c.get("label"))
                limit = "none" if c.get("time_limit") is None else f"{c['time_limit']:g} s"
            print(f"  {key[:12]}  {c.get('algorithm')} / {c.get('oracle')}  model {str(c.get('model_sha256'))[:12]}  "
                  f"label {label}  time limit {limit}")
            summary = Summary.of(rows, args.epsilon)
            print(f"    {summary.describe()}")
            for line in summary.describe_accuracy():
                print(f"    {line}")
    return EXIT_OK
