"""``parallelepipedonn recheck``: re-verify a stored certificate or dual box with an oracle of your choice."""

from __future__ import annotations

import argparse

from ..progress import Progress
from .args import lazy_help, oracle_names, positive
from .common import fmt
from .exits import EXIT_OK, EXIT_REFUTED, EXIT_UNDECIDED

RECHECK_EXIT_CODES = """exit codes: 0 confirmed (every claim re-verified); 5 refuted (a claim is false: a
counterexample inside the box, a class point outside a dual box, a box not containing the
input or outside the domain, ...); 6 undecided (the oracle answered unknown or timed out:
never counted as confirmed); 3 the model file's (or, for a verification result, the
property file's) sha256 differs from the recorded one;
2 unreadable or malformed certificate or model, unknown oracle; 1 internal error; 130
interrupted. For a list of results or a store: 5 if any is refuted, else 6 if any is undecided."""


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recheck", help="re-verify a stored certificate, dual box or verification result with an "
                       "oracle of your choice",
                       description="Re-verify a certificate (or dual box) written by --json against its model "
                       "file, independently of how it was computed: the box contains the input and lies in the "
                       "domain, its metrics are the box's, its counterexample is misclassified, and the oracle "
                       "proves the box robust (a dual box: proves that no point of its class lies outside it; a "
                       "verification result of verify --json: its counterexample is confirmed, or the oracle "
                       "proves every input box of its property again).",
                       epilog=RECHECK_EXIT_CODES)
    p.add_argument("certificate", metavar="CERT.json",
                   help="a certificate, dual box or verification result written by --json, a list of them "
                   "(compare --json), or a results store (--store: every row's result, and the row against it)")
    lazy_help(p.add_argument("--oracle", default="milp"),
               "verifier (%(oracle_names)s, or a cascade a+b+c; default: milp, complete; dual boxes need milp)",
               oracle_names=oracle_names)
    p.add_argument("--model", metavar="M.onnx", help="the model file (default: the one the certificate names); "
                   "its sha256 must be the certificate's")
    p.add_argument("--time-limit", type=positive, metavar="S", help="seconds per oracle query (default: the "
                   "oracle's own, 60 for milp and bab)")
    p.add_argument("--device", default="cpu", help="torch device for bound propagation: cpu or cuda (default: cpu)")
    p.set_defaults(func=cmd_recheck)


def cmd_recheck(args: argparse.Namespace) -> int:
    import numpy as np

    from ..recheck import Outcome, recheck_all

    with Progress("recheck") as progress:
        progress(f"{args.certificate}")
        results = recheck_all(args.certificate, model=args.model, oracle=args.oracle, time_limit=args.time_limit,
                              device=args.device)
    for k, result in enumerate(results):
        where = result.source or (args.certificate if len(results) == 1 else f"{args.certificate}[{k}]")
        lines = [f"{result.outcome.value.upper()}: {result.reason}",
                 f"  {result.kind:11s} {where}: {result.claim}",
                 f"  model       {result.model_path}"]
        if result.counterexample is not None:
            logits = result.logits
            rival = int(np.argmax(np.where(np.arange(logits.size) == result.label, -np.inf, logits)))
            at = "" if result.distance is None else f"at distance {fmt(result.distance, 6)} from the input, "
            lines.append(f"  point       {at}logit {result.label} = {fmt(float(logits[result.label]), 6)}, "
                         f"class {rival} = {fmt(float(logits[rival]), 6)}")
        if result.checks:
            lines.append(f"  checked     {'; '.join(result.checks)}")
        lines += [f"  note        {n}" for n in result.notes]
        lines.append(f"  time        {result.seconds:.3f} s")
        print("\n".join(lines))
    outcomes = {r.outcome for r in results}
    if len(results) > 1:
        counts = ", ".join(f"{sum(r.outcome is o for r in results)} {o.value}" for o in Outcome)
        print(f"{len(results)} results: {counts}")
    # one refuted claim refutes the file; otherwise one undecided claim leaves it undecided
    if Outcome.REFUTED in outcomes:
        return EXIT_REFUTED
    return EXIT_UNDECIDED if Outcome.UNDECIDED in outcomes else EXIT_OK
