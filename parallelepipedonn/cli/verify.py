"""``parallelepipedonn verify``: does a property hold? A VNN-LIB file, robustness at a
radius, or a VNN-COMP benchmark's instances into a results store."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..io_utils import removed_on_failure
from ..progress import Progress
from .args import add_model_and_input, lazy_help, oracle_names, positive, radius
from .common import check_outputs, fmt, load_problem
from .exits import EXIT_CODES, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from ..verify import Verification

VERIFY_EPILOG = """answers (the first line of the output; VNN-COMP's vocabulary):
  unsat    the property holds: proven (robust at epsilon)
  sat      violated: a counterexample, confirmed exactly on the model against the
           property's own constants (--result-file writes it in VNN-COMP's format)
  unknown  nothing proven, no counterexample
  timeout  the time ran out first
verify exits with 0 whatever the answer; see the exit codes below.

""" + EXIT_CODES


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="does a property hold? VNN-LIB in, sat/unsat out (or robustness at epsilon)",
                       description="Verify a property: a VNN-LIB file (--model M.onnx --vnnlib P.vnnlib), the\n"
                       "robustness of an input at radius epsilon (--input X --epsilon E, or --dataset D --index N\n"
                       "--epsilon E), or every instance of a VNN-COMP benchmark (--instances instances.csv --store\n"
                       "results.db, resumable). Answers unsat (the property holds, proven), sat (a confirmed\n"
                       "counterexample), unknown or timeout.",
                       epilog=VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_input(p)
    p.set_defaults(domain=None)  # VNN-LIB: no domain unless given; epsilon: [0, 1]^n unless given
    for action in p._actions:
        if action.dest == "domain":
            action.help = ("input domain [LO, HI]^n (--epsilon: default 0 1; --vnnlib, --instances: none, and "
                           "with one, every input box must lie in it)")
        elif action.dest == "label":
            action.help = "with --epsilon: the class that must be kept (default: the network's prediction)"
    prop = p.add_argument_group("property")
    prop.add_argument("--vnnlib", metavar="P.vnnlib", help="a VNN-LIB property (.vnnlib or .vnnlib.gz), over the "
                      "inputs X_i and outputs Y_i of --model; with --domain LO HI, its input boxes must lie in it")
    prop.add_argument("--epsilon", type=radius, metavar="E",
                      help="robustness at radius E: the L-infinity ball around the input, within the domain "
                      "(default 0 1), keeps --label (default: the prediction)")
    prop.add_argument("--instances", metavar="instances.csv",
                      help="a VNN-COMP benchmark's rows onnx,vnnlib,timeout (paths relative to the file): every "
                      "instance into --store (running it again resumes)")
    how = p.add_argument_group("how to verify")
    lazy_help(how.add_argument("--oracle", default=None),
              "verifier (%(oracle_names)s, or a cascade a+b+c; default: crown+attack+alpha-crown+bab, "
              "crown+attack+input-split+bab for a model with at most 16 inputs, and attack+crown for a graph model "
              "that the other stages cannot read: residual, or too large as a chain)",
              oracle_names=oracle_names)
    how.add_argument("--oracle-option", action="append", default=[], metavar="[STAGE.]KEY=VALUE",
                     help="an option of the oracle (as for certify), e.g. bab.max_nodes=100000; repeatable")
    how.add_argument("--device", default="cpu", help="torch device for bound propagation: cpu or cuda (default: cpu)")
    how.add_argument("--timeout", type=positive, metavar="S",
                     help="seconds for the whole verification (default: the oracles' own limits; with --instances "
                     "each instance's timeout is in the file)")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the result as JSON (re-checkable by recheck)")
    out.add_argument("--result-file", metavar="PATH",
                     help="write the result in VNN-COMP's format: the answer, then for sat the counterexample "
                     "((X_0 v) ... (Y_0 v) ...)")
    out.add_argument("--store", metavar="results.db", help="with --instances: the SQLite results store")
    out.add_argument("--check", action="store_true",
                     help="read and check the model and the property (or the instances file), verify nothing")
    p.set_defaults(func=cmd_verify)


def _mode(args: argparse.Namespace) -> str:
    """``vnnlib``, ``epsilon`` or ``instances``, with the options each allows checked."""
    given = [o for o, v in (("--vnnlib", args.vnnlib), ("--epsilon", args.epsilon), ("--instances", args.instances))
             if v is not None]
    if len(given) != 1:
        raise ConfigError("give one property: --vnnlib P.vnnlib (with --model), --epsilon E (with --input X and "
                          "--model, or --dataset D --index N), or --instances instances.csv (with --store)"
                          if not given else f"give one of {', '.join(given)}")
    mode = given[0][2:]
    inputs = [o for o, v in (("--input", args.input), ("--dataset", args.dataset), ("--index", args.index),
                             ("--label", args.label)) if v is not None]
    if mode == "instances":
        extra = [o for o, v in (("--model", args.model), ("--json", args.json), ("--result-file", args.result_file),
                                ("--timeout", args.timeout)) if v is not None] + inputs
        if extra:
            raise ConfigError(f"{extra[0]} does not go with --instances: the instances file names each model, "
                              "property and timeout, and every result goes into --store")
        if args.store is None and not args.check:
            raise ConfigError("--instances needs --store results.db")
    elif args.store is not None:
        raise ConfigError("--store is for --instances")
    if mode == "vnnlib":
        if inputs:
            raise ConfigError(f"{inputs[0]} does not go with --vnnlib: the property file gives the input region")
        if args.model is None:
            raise ConfigError("--vnnlib needs --model M.onnx")
    return mode


def cmd_verify(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # --timeout counts from here: loading the model and the property included
    from ..verify import DEFAULT_VERIFY_ORACLE, FEW_INPUTS_ORACLE, VerifyConfig

    mode = _mode(args)
    check_outputs(args, args.json, args.result_file, args.store)
    for p in (args.json, args.result_file, args.store):
        if p and any(q and Path(p).resolve() == Path(q).resolve()
                     for q in (args.vnnlib, args.instances, args.model, args.input)):
            raise ConfigError(f"the output {p!r} would overwrite an input file")
    from oracles.registry import parse_oracle_options

    config = VerifyConfig(oracle=args.oracle or DEFAULT_VERIFY_ORACLE,
                          oracle_options=parse_oracle_options(args.oracle_option), device=args.device,
                          fallback="attack+crown" if args.oracle is None else None,
                          few_inputs=FEW_INPUTS_ORACLE if args.oracle is None else None)
    if mode == "instances":
        return _instances(args, config)
    if mode == "vnnlib":
        result, what = _vnnlib(args, config, started)
    else:
        result, what = _epsilon(args, config, started)
    if result is None:  # --check
        print(what)
        return EXIT_OK
    written = []
    with removed_on_failure(args.json, args.result_file):
        if args.json:
            result.save(args.json)
            written.append(args.json)
        if args.result_file:
            result.save_vnncomp(args.result_file)
            written.append(args.result_file)
    print(_summary(result, what, written))
    return EXIT_OK


def _vnnlib(args: argparse.Namespace, config, started: float) -> tuple[Verification | None, str]:
    """``started``: when the command started (its --timeout counts from there)."""
    import numpy as np

    from .. import onnx_graph, onnx_import  # noqa: F401  (module imports: before the loading clock, as torch's)
    from ..box import Box
    from ..io_utils import sha256_file
    from ..verify import check_property, load_model_file, verify_property
    from ..vnnlib import read_vnnlib

    start = time.perf_counter()
    model = load_model_file(args.model)
    prop = read_vnnlib(args.vnnlib)
    domain = None
    if args.domain is not None:
        lo, hi = args.domain
        if not lo < hi:
            raise ConfigError(f"the domain [{lo}, {hi}] must be a non-empty finite interval")
        domain = Box(np.full(model.n_inputs, lo), np.full(model.n_inputs, hi))
    what = f"{args.vnnlib} ({prop.describe()})\n  model       {args.model} ({model.describe()})"
    if args.check:  # what verify_property refuses before verifying (which runs it itself)
        check_property(model, prop, domain)
        return None, f"ok: {what}"
    hashes = model.model_digest(args.model), prop.sha256 or sha256_file(args.vnnlib)
    loaded = time.perf_counter() - start
    with Progress("verify") as progress:
        result = verify_property(model, prop, config=config, timeout=args.timeout, domain=domain,
                                 model_path=str(args.model), model_sha256=hashes[0],
                                 property_sha256=hashes[1], progress=progress, started=started)
    return replace(result, load_seconds=loaded), what


def _epsilon(args: argparse.Namespace, config, started: float) -> tuple[Verification | None, str]:
    from ..verify import verify_epsilon

    if args.domain is None:
        args.domain = (0.0, 1.0)
    start = time.perf_counter()
    network, x, domain, model_path, _, what, _ = load_problem(args)
    text = (f"{what}: the ball of radius {fmt(args.epsilon, 6)} within the domain\n"
            f"  model       {model_path} ({network.describe()})")
    if args.check:
        return None, f"ok: {text}"
    digest = network.model_digest(model_path)
    loaded = time.perf_counter() - start
    result = verify_epsilon(network, x, args.epsilon, label=args.label, domain=domain, config=config,
                            timeout=args.timeout, model_path=str(model_path), model_sha256=digest, started=started)
    return replace(result, load_seconds=loaded), text


def _summary(result: Verification, what: str, written: list[str]) -> str:
    import numpy as np

    meaning = {"unsat": "the property holds (proven)", "sat": "violated: a confirmed counterexample",
               "unknown": "nothing proven, no counterexample", "timeout": "the time ran out"}[result.answer.value]
    lines = [result.answer.value, f"  property    {what}"]
    if result.property.get("kind") == "epsilon":
        p = result.property
        lines.append(f"  label       {p['label']} (network predicts {p['predicted_label']})")
    lines.append(f"  answer      {meaning}: {result.reason}")
    if result.counterexample is not None and result.outputs is not None:
        x, y = result.counterexample, result.outputs

        def short(a: np.ndarray) -> str:
            shown = ", ".join(f"{v:.6g}" for v in a[:6])
            return f"[{shown}{', ...' if a.size > 6 else ''}]"

        exact = " (rounded: X holds exact decimals, see --result-file or --json)" \
            if result.counterexample_exact is not None else ""
        lines.append(f"  counterexample X = {short(x)} ({x.size} values); Y = {short(y)}{exact}")
    note = result.oracle_settings.get("note")
    lines.append(f"  oracle      {result.oracle}" + (f" ({note})" if note else ""))
    timeout = "" if result.timeout is None else f" (timeout {fmt(result.timeout)} s)"
    lines.append(f"  time        {result.seconds:.3f} s{timeout}")
    if written:
        lines.append(f"  wrote       {', '.join(written)}")
    return "\n".join(lines)


def _instances(args: argparse.Namespace, config) -> int:
    from ..instances import read_instances, stored_answers, verify_instances
    from ..store import ERROR, ResultStore

    instances = read_instances(args.instances)
    if args.check:
        import numpy as np

        from ..box import Box
        from ..verify import check_property, load_model_file
        from ..vnnlib import read_vnnlib

        if args.domain is not None and not args.domain[0] < args.domain[1]:
            raise ConfigError(f"the domain [{args.domain[0]}, {args.domain[1]}] must be a non-empty finite interval")
        for item in instances:
            model = load_model_file(item.onnx)
            prop = read_vnnlib(item.vnnlib)
            check_property(model, prop, None if args.domain is None else
                           Box(np.full(model.n_inputs, args.domain[0]), np.full(model.n_inputs, args.domain[1])))
        print(f"ok: {args.instances}: {len(instances)} instance(s), every model and property read and checked")
        return EXIT_OK
    if args.domain is not None and not args.domain[0] < args.domain[1]:
        raise ConfigError(f"the domain [{args.domain[0]}, {args.domain[1]}] must be a non-empty finite interval")
    with Progress("verify") as progress:
        report = verify_instances(instances, args.store, config=config, domain=args.domain, progress=progress)
    ids = {i.input_id for i in instances}
    with ResultStore(args.store, read_only=True) as store:
        rows = [r for r in store.rows(report.config_key) if r.input_id in ids]
    counts = stored_answers(rows)
    order = ["unsat", "sat", "unknown", "timeout", ERROR]
    text = ", ".join(f"{counts[a]} {a}" for a in order + sorted(set(counts) - set(order)) if a in counts)
    print(f"{report.total} instance(s): {report.skipped} already in {args.store}, {report.computed} run now "
          f"(configuration {report.config_key[:12]}, oracle {config.oracle})")
    print(f"  {text}")
    errors = [r for r in rows if r.status == ERROR]
    if errors:
        print(f"parallelepipedonn: error: {len(errors)} instance(s) could not be verified, e.g. {errors[0].reason}",
              file=sys.stderr)
        return EXIT_INTERNAL if report.internal_errors else EXIT_USAGE
    return EXIT_OK

