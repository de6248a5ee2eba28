"""``parallelepipedonn compare``: several algorithms on the same input, side by side."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import removed_on_failure
from ..progress import Progress
from .args import add_certify_options, add_model_and_input, certify_config, positive
from .common import check_outputs, fmt, fmt_down, fmt_up, load_problem
from .exits import EXIT_OK

DEFAULT_COMPARE = ("apothem-kary,apothem-bisection,apothem-max-box,box-bisection,topdown-box,volume-greedy,"
                   "volume-gradient,exact")


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run several algorithms on the same input, side by side",
                       description="Certify one input with several algorithms and compare their boxes: apothem, "
                       "min edge length, log-volume, oracle calls, rounds, time, and the gap to the best apothem "
                       "upper bound any of them found.")
    add_model_and_input(p)
    add_certify_options(p)
    p.add_argument("--algorithms", default=None,
                   help=f"comma-separated (default: {DEFAULT_COMPARE}; of these, the ones the oracle cannot serve "
                   "are skipped, with a note: e.g. exact with an incomplete oracle)")
    p.add_argument("--time-limit", type=positive, metavar="S",
                   help="each algorithm's search stops after S seconds with the box proven so far (the exact "
                   "algorithm: not exact, with the bracket reached)")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write all certificates as a JSON list")
    out.add_argument("--plot", metavar="PATH", help="write a PNG of every algorithm's box")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from ..certify import build_oracles, certify, check_extras
    from ..io_utils import atomic_write_bytes
    from ..plotting import plot_comparison
    from ..search import check_oracle, make_search

    check_outputs(args, args.json, args.plot)
    if args.algorithm is not None:
        raise ConfigError("compare runs the algorithms of --algorithms a,b,c (comma-separated), not --algorithm")
    chosen = args.algorithms is not None
    algorithms = [a.strip() for a in (args.algorithms if chosen else DEFAULT_COMPARE).split(",") if a.strip()]
    if not algorithms:
        raise ConfigError("--algorithms names no algorithm")
    configs = [certify_config(args, a, dual=args.dual, dual_radius=args.dual_radius,
                              search_time_limit=args.time_limit) for a in algorithms]
    for c in configs:
        make_search(c.algorithm, precision=c.precision)  # reject bad names before the model is read
    network, x, domain, model_path, true_label, what, class_names = load_problem(args)
    usable = []
    for c in configs:  # an oracle an algorithm cannot use: refused if named, skipped from the default list
        oracle, _ = build_oracles(network, c)  # (a bad oracle or option is an error whatever the algorithm)
        check_extras(network, c)
        try:
            check_oracle(make_search(c.algorithm, precision=c.precision), oracle)
        except ConfigError as exc:
            if chosen:
                raise
            print(f"skipped {c.algorithm}: {exc}")
            continue
        usable.append(c)
    if not usable:
        raise ConfigError("no algorithm of the default list can use this oracle: choose them with --algorithms")
    configs = usable
    certs = []
    with Progress("compare") as progress:
        for k, c in enumerate(configs):
            def report(message: str, k: int = k, c=c) -> None:
                progress(f"{k + 1}/{len(configs)} {c.algorithm}: {message}")

            report("starting")
            certs.append(certify(network, x, args.label, domain=domain, config=c, model_path=str(model_path),
                                 true_label=true_label, progress=report))
    bounds = [c.apothem_upper_bound for c in certs if c.apothem_upper_bound is not None]
    best = min(bounds) if bounds else None
    print(f"input {what}; model {model_path} ({network.describe()}); label {certs[0].label}")
    if best is not None:
        closest = min((c for c in certs if c.apothem_upper_bound is not None), key=lambda c: c.apothem_upper_bound)
        dual_bound = (closest.dual or {}).get("apothem_bound")
        if dual_bound is not None and dual_bound <= best:  # no counterexample that close: the dual box's bound
            why = f"from the dual box of the {closest.algorithm} run"
        else:
            cls = "" if closest.counterexample_class is None else f", class {closest.counterexample_class}"
            why = f"closest confirmed counterexample of all runs{cls}"
        print(f"best apothem <= {fmt_up(best)} ({why})")
    header = ["algorithm", "oracle", "status", "apothem", "min edge", "log-volume", "calls", "rounds", "seconds",
              "gap"]
    rows = [[c.algorithm, c.oracle, c.status.value, fmt_down(c.apothem), fmt_down(c.min_edge), fmt(c.log_volume, 6),
             str(c.oracle_calls), str(c.rounds), f"{c.seconds:.3f}",
             fmt(None if best is None or c.apothem is None or math.isinf(c.apothem) else max(best - c.apothem, 0))]
            for c in certs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in [header] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
    written = []
    with removed_on_failure(args.json, args.plot):
        if args.json:
            atomic_write_bytes(Path(args.json), (json.dumps([c.to_dict() for c in certs], indent=1) + "\n").encode())
            written.append(args.json)
        if args.plot:
            plot_comparison(certs, args.plot, class_names)
            written.append(args.plot)
    if written:
        print(f"wrote {', '.join(written)}")
    return EXIT_OK
