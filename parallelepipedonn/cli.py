"""The ``parallelepipedonn`` command line.

Exit codes: 0 the command ran (whatever the certification status); 1 internal error;
2 bad input or usage (unreadable/unsupported model, malformed input, unknown option
value); 4 an output file cannot be written; 130 interrupted. ``recheck`` also: 3 the
model file's sha256 differs from the certificate's; 5 refuted; 6 undecided. 141 broken
pipe. The table users see is ``EXIT_CODES`` (``--help``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__
from .cli_args import (
    add_certify_options,
    add_model_and_input,
    certify_config,
    epsilons,
    hidden,
    lazy_help,
    oracle_names,
    positive,
    threads,
)
from .errors import ConfigError, ParallelepipedoNNError
from .io_utils import check_writable, removed_on_failure
from .progress import Progress

if TYPE_CHECKING:
    from .box import Box
    from .certificate import Certificate
    from .network import Network

# Only light modules are imported above: building the parser (``--help``, ``--version``)
# imports no torch, pyomo or matplotlib; each command imports its machinery in its handler.

log = logging.getLogger("parallelepipedonn")

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_OUTPUT, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 4, 130, 141
EXIT_REFUTED, EXIT_UNDECIDED = 5, 6  # recheck (3, a model hash mismatch: ModelMismatchError.exit_code)


EXIT_CODES = """exit codes:
  0    the command ran (a certificate's status says what was proven: certified,
       not-robust or unknown; a batch: every input has a result in the store)
  1    internal error (also: an input of a batch hit one)
  2    bad model, input or usage: unreadable, empty, malformed or unsupported model,
       not a classifier, wrong input size, NaN/inf or values outside the domain,
       label out of range, unknown option value (a batch: an input could not be read)
  3    recheck: the model file's sha256 differs from the certificate's
  4    an output file (--json, --plot, --store) cannot be written
  5, 6 recheck: refuted, undecided
  130  interrupted (a batch keeps every result committed so far)
  141  standard output closed early (broken pipe)"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "unknown"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_outputs(args: argparse.Namespace, *paths: str | None) -> None:
    """Fail before any work if an output cannot be written, or would overwrite another
    output or an input file."""
    given = [p for p in paths if p]
    for p in given:
        check_writable(p)
    resolved = [Path(p).resolve() for p in given]
    if len(set(resolved)) < len(resolved):
        raise ConfigError(f"two outputs name the same file: {', '.join(given)}")
    inputs = {Path(p).resolve() for p in (args.model, args.input) if p}
    for p, r in zip(given, resolved):
        if r in inputs:
            raise ConfigError(f"the output {p!r} would overwrite an input file")


# -- certify ---------------------------------------------------------------------------------
def _load_model(args: argparse.Namespace) -> tuple[Network, Box, Path]:
    """The network of ``--model`` (or of ``--dataset``), the ``--domain`` box and the model's path."""
    import numpy as np

    from .box import Box
    from .models import default_model_path
    from .onnx_import import load_onnx

    lo, hi = args.domain
    if not (lo < hi and math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"the domain [{lo}, {hi}] must be a non-empty finite interval")
    model_path = Path(args.model) if args.model else default_model_path(args.dataset, args.default_net)
    network = load_onnx(model_path)
    n = network.n_inputs
    return network, Box(np.full(n, lo), np.full(n, hi)), model_path


def _load_problem(args: argparse.Namespace):
    """Network, input point, domain, model path, true label and a description of the input."""
    from .datasets import CLASS_NAMES, load_dataset
    from .inputs import as_network_input, read_input_file

    if (args.input is None) == (args.dataset is None):
        raise ConfigError("give either --input X (with --model) or --dataset D --index N")
    if args.dataset is not None and args.index is None:
        raise ConfigError("--dataset needs --index N")
    if args.input is not None and args.model is None:
        raise ConfigError("--input needs --model M.onnx")
    network, domain, model_path = _load_model(args)
    true_label, class_names = None, None
    if args.input is not None:
        x = as_network_input(read_input_file(args.input), network.input_shape, domain, f"input {args.input!r}")
        what = args.input
    else:
        data = load_dataset(args.dataset, args.split, args.data_dir)
        image, true_label = data[args.index]
        x = as_network_input(image, network.input_shape, domain, f"{args.dataset} {args.split} image {args.index}")
        what = f"{data.describe(args.index)}, true label {true_label}"
        class_names = CLASS_NAMES.get(args.dataset)
    return network, x, domain, model_path, true_label, what, class_names


def _summary(cert: Certificate, what: str, model_path: Path, written: list[str]) -> str:
    lines = [f"{cert.status.value.upper()}: {cert.reason}" if cert.reason and cert.box is None
             else cert.status.value.upper()]
    labels = f"label {cert.label} (network predicts {cert.predicted_label}"
    labels += f", true label {cert.true_label})" if cert.true_label is not None else ")"
    lines += [f"  input       {what}", f"  model       {model_path} ({cert.network})", f"  {labels}"]
    if cert.box is not None:
        lines.append(f"  apothem     {_fmt(cert.apothem)}   (certified: every point of the box keeps label "
                     f"{cert.label})")
        if cert.exact is not None:
            lines.append("  exact       yes: the best apothem, to the algorithm's precision" if cert.exact else
                         f"  exact       NO: {cert.reason.removeprefix('not exact: ')}")
        lines.append(f"  min edge    {_fmt(cert.min_edge)}   log-volume {_fmt(cert.log_volume, 6)}")
    ub = cert.apothem_upper_bound
    bound = f"  best apothem <= {_fmt(ub)}" + ("" if ub is not None else " (no counterexample found)")
    if cert.counterexample_class is not None:
        bound += f" (counterexample: class {cert.counterexample_class})"
    if cert.gap is not None:
        bound += f"   gap {_fmt(cert.gap)}"
    lines.append(bound)
    if cert.dual is not None:
        b = cert.dual["apothem_bound"]
        lines.append(f"  dual box    {cert.dual['method']} within radius {_fmt(cert.dual['radius'])}: " +
                     (f"best apothem <= {_fmt(b)}" if b is not None else "the whole ball (no bound below it)"))
    calls = f"  oracle      {cert.oracle}: {cert.oracle_calls} boxes in {cert.rounds} calls"
    bridge = (cert.oracle_settings or {}).get("bridge")
    if bridge:  # a graph model, expanded into the chain the oracle reads (oracles.chain)
        calls += f" (on the graph expanded into {bridge['affine_maps']} dense affine maps, " + \
            ("exact)" if bridge["exact"] else "composed in float64)")
    if cert.falsifier:
        calls += f"; falsifier {cert.falsifier}: {cert.falsifier_calls} boxes"
    lines += [calls, f"  algorithm   {cert.algorithm} {cert.algorithm_settings}", f"  time        {cert.seconds:.3f} s"]
    if written:
        lines.append(f"  wrote       {', '.join(written)}")
    return "\n".join(lines)


def cmd_certify(args: argparse.Namespace) -> int:
    from .certify import certify
    from .plotting import plot_certificate
    from .search import DEFAULT_SEARCH, make_search

    batch = _is_batch(args)
    _check_outputs(args, args.json, args.plot, args.store)
    algorithm = args.algorithm if args.algorithm is not None else DEFAULT_SEARCH
    config = certify_config(args, algorithm, dual=args.dual, dual_radius=args.dual_radius)
    make_search(config.algorithm, precision=config.precision)  # reject bad names before any work
    if batch:
        return _certify_batch(args, config)
    if args.time_limit is not None:  # one input: the search stops then with what it has proven
        config = replace(config, search_time_limit=args.time_limit)
    network, x, domain, model_path, true_label, what, class_names = _load_problem(args)
    with Progress(f"certify ({config.algorithm})") as progress:
        cert = certify(network, x, args.label, domain=domain, config=config, model_path=str(model_path),
                       true_label=true_label, progress=progress)
    written = []
    with removed_on_failure(args.json, args.plot):
        if args.json:
            cert.save(args.json)
            written.append(args.json)
        if args.plot:
            plot_certificate(cert, args.plot, class_names, network=network)
            written.append(args.plot)
    print(_summary(cert, what, model_path, written))
    return EXIT_OK


# -- batch certification ---------------------------------------------------------------------
def _is_batch(args: argparse.Namespace) -> bool:
    """Whether ``certify`` runs as a batch into a results store (checks the batch options)."""
    labels = [o for o, v in (("--labels", args.labels), ("--label-from-name", args.label_from_name),
                             ("--certify-true-label", args.certify_true_label)) if v]
    if args.inputs is None and args.indices is None and args.store is None:
        if labels:
            raise ConfigError(f"{labels[0]} is for a batch: use it with --inputs DIR and --store results.db")
        return False
    if args.labels is not None and args.label_from_name is not None:
        raise ConfigError("give the true labels by --labels FILE or by --label-from-name REGEX, not both")
    if args.dataset is not None and labels and labels[0] != "--certify-true-label":
        raise ConfigError(f"{labels[0]} gives the true labels of input files: a dataset has its own")
    if args.certify_true_label and args.label is not None:
        raise ConfigError("give --label C or --certify-true-label, not both")
    if args.certify_true_label and args.dataset is None and not (args.labels or args.label_from_name):
        raise ConfigError("--certify-true-label needs the true labels: --labels FILE or --label-from-name REGEX")
    if args.store is None:
        raise ConfigError("a batch (--inputs DIR or --indices) needs --store results.db")
    if args.json or args.plot:
        raise ConfigError("--json and --plot write one certificate: a batch stores every certificate in --store "
                          "(read it with 'parallelepipedonn store')")
    if sum(a is not None for a in (args.input, args.inputs, args.dataset)) != 1:
        raise ConfigError("give one of --inputs DIR or --input X (with --model), or --dataset D with --indices")
    if args.dataset is None and args.model is None:
        raise ConfigError(f"{'--inputs' if args.inputs else '--input'} needs --model M.onnx")
    if args.indices is not None and (args.dataset is None or args.index is not None):
        raise ConfigError("--indices needs --dataset D (and no --index)")
    if args.dataset is not None and args.indices is None and args.index is None:
        raise ConfigError("--dataset needs --indices A:B (or --index N)")
    return True


def _certify_batch(args: argparse.Namespace, config) -> int:
    from .batch import (
        BatchInput,
        certify_batch,
        inputs_from_dataset,
        inputs_from_directory,
        labels_from_file,
        labels_from_name,
        parse_indices,
    )
    from .datasets import load_dataset
    from .store import ERROR, ResultStore, Summary

    indices = parse_indices(args.indices) if args.indices is not None else (args.index,)
    network, domain, model_path = _load_model(args)
    if args.inputs is not None:
        inputs = inputs_from_directory(args.inputs)
    elif args.input is not None:
        inputs = [BatchInput(str(Path(args.input).resolve()), path=Path(args.input))]
    else:
        inputs = inputs_from_dataset(load_dataset(args.dataset, args.split, args.data_dir), indices)
    if args.labels is not None:
        inputs = labels_from_file(args.labels, inputs, n_classes=network.n_classes)
    elif args.label_from_name is not None:
        inputs = labels_from_name(args.label_from_name, inputs, n_classes=network.n_classes)
    report = certify_batch(network, inputs, args.store, config=config, label=args.label, domain=domain,
                           model_path=str(model_path), time_limit=args.time_limit, progress=None,
                           certify_true_label=args.certify_true_label)
    ids = {i.input_id for i in inputs}
    with ResultStore(args.store, read_only=True) as store:
        rows = [r for r in store.rows(report.config_key) if r.input_id in ids]
    print(f"batch of {report.total} input(s): {report.skipped} already in {args.store}, {report.computed} "
          f"run now (model {model_path}, configuration {report.config_key[:12]})")
    summary = Summary.of(rows)
    print(f"  {summary.describe()}")
    for line in summary.describe_accuracy():
        print(f"  {line}")
    if report.relabelled:
        print(f"  (the true label of {report.relabelled} stored input(s) updated)")
    errors = [r for r in rows if r.status == ERROR]
    if errors:
        print(f"parallelepipedonn: error: {len(errors)} input(s) could not be certified, e.g. {errors[0].reason}",
              file=sys.stderr)
        return EXIT_INTERNAL if report.internal_errors else EXIT_USAGE
    return EXIT_OK


# -- compare ---------------------------------------------------------------------------------
DEFAULT_COMPARE = ("apothem-kary,apothem-bisection,apothem-max-box,box-bisection,topdown-box,volume-greedy,"
                   "volume-gradient,exact")


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .certify import certify
    from .io_utils import atomic_write_bytes
    from .plotting import plot_comparison
    from .search import make_search

    _check_outputs(args, args.json, args.plot)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    configs = [certify_config(args, a) for a in algorithms]
    for c in configs:
        make_search(c.algorithm, precision=c.precision)  # reject bad names before any work
    network, x, domain, model_path, true_label, what, class_names = _load_problem(args)
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
        cls = "" if closest.counterexample_class is None else f", class {closest.counterexample_class}"
        print(f"best apothem <= {_fmt(best)} (closest confirmed counterexample of all runs{cls})")
    header = ["algorithm", "oracle", "status", "apothem", "min edge", "log-volume", "calls", "rounds", "seconds",
              "gap"]
    rows = [[c.algorithm, c.oracle, c.status.value, _fmt(c.apothem), _fmt(c.min_edge), _fmt(c.log_volume, 6),
             str(c.oracle_calls), str(c.rounds), f"{c.seconds:.3f}",
             _fmt(None if best is None or c.apothem is None or math.isinf(c.apothem) else max(best - c.apothem, 0))]
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


# -- dual ------------------------------------------------------------------------------------
def _radius(text: str) -> str:
    t = text.strip()
    try:
        value = float(t[:-1] if t.endswith("x") else t)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a radius like 0.05 or 2x, got {text!r}") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the radius must be positive, got {text!r}")
    return t


def cmd_dual(args: argparse.Namespace) -> int:
    import numpy as np

    from .box import Box
    from .certify import certify
    from .datasets import load_dataset
    from .dual import dual_box
    from .models import default_model_path
    from .onnx_import import load_onnx
    from .plotting import plot_dual

    _check_outputs(args, args.json, args.plot)
    restricted = args.input is not None or args.index is not None
    if restricted and args.radius is None:
        raise ConfigError("a dual around an input needs --radius R (or a multiple of its apothem, e.g. 2x)")
    if not restricted and args.radius is not None:
        raise ConfigError("--radius needs an input (--input X, or --dataset D --index N)")
    x = center_label = None
    candidates = np.zeros((0, 1))
    if restricted:
        network, x, domain, model_path, _, what, _ = _load_problem(args)
        center_label = int(network.predict(x)[0])
    else:
        if args.model is None and args.dataset is None:
            raise ConfigError("give --model M.onnx (or --dataset D for its embedded network)")
        model_path = Path(args.model) if args.model else default_model_path(args.dataset, args.default_net)
        network = load_onnx(model_path)
        lo, hi = args.domain
        domain = Box(np.full(network.n_inputs, lo), np.full(network.n_inputs, hi))
        what = "the whole domain"
    label = args.label if args.label is not None else center_label
    if label is None:
        raise ConfigError("give --label C (the class whose dual box to compute)")
    label = network.check_label(label)
    if args.dataset is not None and not restricted:
        data = load_dataset(args.dataset, "train", args.data_dir)
        images = data.images.reshape(len(data), -1)
        candidates = images[network.predict(images) == label]
    radius = None
    if restricted:
        if args.radius.endswith("x"):
            cert = certify(network, x, label, domain=domain)
            if cert.apothem is None or cert.apothem <= 0:
                raise ConfigError(f"no certified apothem at the input to scale the radius by ({cert.reason})")
            radius = float(args.radius[:-1]) * min(cert.apothem, 1.0)
        else:
            radius = float(args.radius)
        what += f", radius {radius:.4g}"
    with Progress(f"dual ({args.method})") as progress:
        dual = dual_box(network, label, x=x, radius=radius, domain=domain, method=args.method,
                        candidates=candidates if len(candidates) else (), workers=args.workers,
                        time_limit=args.time_limit, model_path=str(model_path),
                        progress=lambda done: progress(f"{done} coordinate problems solved"))
    written = []
    with removed_on_failure(args.json, args.plot):
        if args.json:
            dual.save(args.json)
            written.append(args.json)
        if args.plot:
            plot_dual(dual, args.plot, network.input_shape)
            written.append(args.plot)
    n = network.n_inputs
    if dual.box is None:
        print(f"EMPTY: no point of {what} is classified {label} (proven)")
    else:
        print(f"dual box of class {label} over {what} ({dual.method}): " +
              ("the whole region" if dual.covers_region else "a strict sub-box of the region"))
        print(f"  exact bounds  {dual.exact_count}/{2 * n}   min edge {_fmt(dual.min_edge())}   "
              f"log-volume {_fmt(dual.log_volume(), 6)}")
        if x is not None:
            bound = dual.apothem_bound(x, domain)
            print(f"  implies best apothem <= {_fmt(bound)}" if bound is not None else
                  "  implies no apothem bound below the radius")
    details = {k: v for k, v in dual.details.items() if k != "bridge"}
    print(f"  model {model_path}; {dual.seconds:.2f} s; {details}")
    if "bridge" in dual.details:
        print(f"  chain       {dual.details['bridge']['semantics']}")
    if written:
        print(f"  wrote {', '.join(written)}")
    return EXIT_OK


# -- recheck ---------------------------------------------------------------------------------
RECHECK_EXIT_CODES = """exit codes: 0 confirmed (every claim re-verified); 5 refuted (a claim is false: a
counterexample inside the box, a class point outside a dual box, a box not containing the
input or outside the domain, ...); 6 undecided (the oracle answered unknown or timed out:
never counted as confirmed); 3 the model file's sha256 differs from the certificate's;
2 unreadable or malformed certificate or model, unknown oracle; 1 internal error; 130
interrupted. For a list of results: 5 if any is refuted, else 6 if any is undecided."""


def cmd_recheck(args: argparse.Namespace) -> int:
    import numpy as np

    from .recheck import Outcome, recheck_all

    with Progress("recheck") as progress:
        progress(f"{args.certificate}")
        results = recheck_all(args.certificate, model=args.model, oracle=args.oracle, time_limit=args.time_limit,
                              device=args.device)
    for k, result in enumerate(results):
        where = args.certificate if len(results) == 1 else f"{args.certificate}[{k}]"
        lines = [f"{result.outcome.value.upper()}: {result.reason}",
                 f"  {result.kind:11s} {where}: {result.claim}",
                 f"  model       {result.model_path}"]
        if result.counterexample is not None:
            logits = result.logits
            rival = int(np.argmax(np.where(np.arange(logits.size) == result.label, -np.inf, logits)))
            at = "" if result.distance is None else f"at distance {_fmt(result.distance, 6)} from the input, "
            lines.append(f"  point       {at}logit {result.label} = {_fmt(float(logits[result.label]), 6)}, "
                         f"class {rival} = {_fmt(float(logits[rival]), 6)}")
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


# -- train -----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, model_name, save_trained, train_model

    config = TrainConfig(dataset=args.dataset, hidden=args.hidden, arch=args.arch, epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay,
                         seed=args.seed)
    out = args.out or f"{model_name(config)}.onnx"
    check_writable(out)
    result = train_model(config, args.data_dir, progress=not args.quiet)
    save_trained(result, out)
    print(f"wrote {out}: {result.network.describe()}, train accuracy {result.train_accuracy:.4f} "
          f"({result.train_size} images), test accuracy {result.test_accuracy:.4f} ({result.test_size} images; "
          f"data: {result.data_source})")
    return EXIT_OK


# -- store -----------------------------------------------------------------------------------
def cmd_store_summary(args: argparse.Namespace) -> int:
    from .store import ResultStore, Summary

    with ResultStore(args.path, read_only=True) as store:
        configs = store.configs()
        print(f"{args.path}: {len(configs)} configuration(s)")
        for key, c in configs.items():
            rows = store.rows(key)
            label = {None: "predicted", "true": "true (each input's)"}.get(c.get("label"), c.get("label"))
            limit = "none" if c.get("time_limit") is None else f"{c['time_limit']:g} s"
            print(f"  {key[:12]}  {c.get('algorithm')} / {c.get('oracle')}  model {str(c.get('model_sha256'))[:12]}  "
                  f"label {label}  time limit {limit}")
            summary = Summary.of(rows, args.epsilon)
            print(f"    {summary.describe()}")
            for line in summary.describe_accuracy():
                print(f"    {line}")
    return EXIT_OK


# -- info / list -----------------------------------------------------------------------------
def bench_module(name: str) -> types.ModuleType:
    """``benchmarks.<name>`` from the source checkout this package runs from (an editable
    install, or ``python -m parallelepipedonn.cli`` in the checkout): the benchmarks are not
    installed, as ``benchmarks`` is no name for a top-level package of a distribution."""
    import importlib
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    init = root / "benchmarks" / "__init__.py"
    if not (init.is_file() and (root / "pyproject.toml").is_file()):
        raise ConfigError("the benchmarks need a source checkout of ParallelepipedoNN, installed with "
                          f"pip install -e . (no benchmarks/ beside {Path(__file__).parent})")
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


def cmd_info(args: argparse.Namespace) -> int:
    from .io_utils import sha256_file
    from .onnx_import import load_onnx
    from .train import model_metadata

    net = load_onnx(args.model)
    print(f"{args.model}: {net.describe()}, input shape {list(net.input_shape)}, {net.n_classes} classes")
    print(f"  sha256 {sha256_file(args.model)}")
    for k, v in model_metadata(args.model).items():
        print(f"  {k}: {v}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from oracles import oracle_entries

    from .models import DEFAULT_MODELS, data_dir
    from .search import SEARCHES

    print("oracles (--oracle, --falsifier; the queries each answers):")
    for name, entry in sorted(oracle_entries().items()):
        print(f"  {name:22s} {entry.summary}")
    print("algorithms (--algorithm; a+b composes):")
    for name, entry in SEARCHES.items():
        print(f"  {name:22s} {entry.description}")
    print(f"default networks ({data_dir()}):")
    for dataset, sizes in DEFAULT_MODELS.items():
        for size, fname in sizes.items():
            print(f"  {dataset:14s} {size:6s} {fname}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parallelepipedonn",
                     description="Trustworthy robustness certifications for ReLU neural-network classifiers.",
                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug, -vvv also the solvers' and libraries')")
    parser.add_argument("--threads", type=threads, metavar="N",
                        help="torch threads (default: $PARALLELEPIPEDONN_THREADS, else 1, the fast choice for the "
                        "tool's small problems, above all on a busy machine; 0: torch's own default)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("certify", help="certify one input (or a batch, into a results store)",
                       description="Certify one input: find a box around it, inside the domain, in which the "
                       "network provably keeps the label, with the largest apothem the oracle can prove. With "
                       "--store: certify a batch (--inputs DIR, --indices A:B) into a resumable results store.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_input(p)
    add_certify_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the certificate as JSON")
    out.add_argument("--plot", metavar="PATH", help="write a PNG of the input, the box and its slack")
    batch = p.add_argument_group("batch (results go into --store; running the same command again resumes)")
    batch.add_argument("--inputs", metavar="DIR", help="certify every .npy, .csv and .png file of DIR (by name)")
    batch.add_argument("--indices", metavar="SPEC",
                       help="dataset indices: A:B (B excluded), A-B (B included), N, or a comma list of these")
    batch.add_argument("--store", metavar="results.db", help="SQLite results store (created if missing)")
    batch.add_argument("--time-limit", type=positive, metavar="S",
                       help="one input: the search stops after S seconds and returns the box proven so far (the "
                       "exact algorithm: not exact, with the bracket reached); a batch: seconds per input, an "
                       "input that runs out of time is stored as unknown")
    batch.add_argument("--labels", metavar="FILE",
                       help="true labels of the input files (for accuracy): CSV rows 'file name,label', header "
                       "optional; a bare name matches the file's base name, a path the file it names")
    batch.add_argument("--label-from-name", metavar="REGEX",
                       help=r"true labels from the file names: the regex's one capture group, searched in the base "
                       r"name (e.g. '^(\d+)-': 4-5.csv has label 4)")
    batch.add_argument("--certify-true-label", action="store_true",
                       help="certify each input's true label (--labels, --label-from-name or the dataset's) "
                       "instead of the network's prediction")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("compare", help="run several algorithms on the same input, side by side",
                       description="Certify one input with several algorithms and compare their boxes: apothem, "
                       "min edge length, log-volume, oracle calls, rounds, time, and the gap to the best apothem "
                       "upper bound any of them found.")
    add_model_and_input(p)
    add_certify_options(p)
    p.add_argument("--algorithms", default=DEFAULT_COMPARE, help=f"comma-separated (default: {DEFAULT_COMPARE})")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write all certificates as a JSON list")
    out.add_argument("--plot", metavar="PATH", help="write a PNG of every algorithm's box")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("dual", help="dual certification: a box holding every input of a class",
                       description="Compute a box that contains every input of the domain (or of the ball of "
                       "--radius around an input) that the network assigns to --label: any certification of an "
                       "input of that class lies inside it.")
    add_model_and_input(p)
    p.add_argument("--radius", type=_radius, help="restrict to the ball of this radius around the input "
                   "(a number, or a multiple of the input's certified apothem such as 2x)")
    p.add_argument("--method", choices=["milp", "relaxed", "complete-bu", "complete-cubic"], default="milp",
                   help="milp: exact; relaxed: bound propagation (fast, outer); complete-bu / complete-cubic: "
                   "the original system's complete algorithms (default: milp)")
    p.add_argument("--workers", type=int, default=2, help="processes for the MILPs (default: 2)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per solver call (default: 60)")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the dual box as JSON (lower and upper as flat lists)")
    out.add_argument("--plot", metavar="PATH", help="write a PNG of the lower and upper images")
    p.set_defaults(func=cmd_dual)

    p = sub.add_parser("recheck", help="re-verify a stored certificate or dual box with an oracle of your choice",
                       description="Re-verify a certificate (or dual box) written by --json against its model "
                       "file, independently of how it was computed: the box contains the input and lies in the "
                       "domain, its metrics are the box's, its counterexample is misclassified, and the oracle "
                       "proves the box robust (a dual box: proves that no point of its class lies outside it).",
                       epilog=RECHECK_EXIT_CODES)
    p.add_argument("certificate", metavar="CERT.json",
                   help="a certificate or dual box written by --json, or a list of them (compare --json)")
    lazy_help(p.add_argument("--oracle", default="milp"),
               "verifier (%(oracle_names)s, or a cascade a+b+c; default: milp, complete; dual boxes need milp)",
               oracle_names=oracle_names)
    p.add_argument("--model", metavar="M.onnx", help="the model file (default: the one the certificate names); "
                   "its sha256 must be the certificate's")
    p.add_argument("--time-limit", type=positive, metavar="S", help="seconds per oracle query (default: the "
                   "oracle's own, 60 for milp and bab)")
    p.add_argument("--device", default="cpu", help="torch device for bound propagation: cpu or cuda (default: cpu)")
    p.set_defaults(func=cmd_recheck)

    p = sub.add_parser("train", help="train a ReLU classifier (MLP, CNN or residual net) reproducibly and export "
                       "it as ONNX")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], required=True)
    p.add_argument("--arch", choices=["mlp", "cnn", "resnet"], default="mlp",
                   help="mlp (784-hidden-10), cnn (two strided convolutions) or resnet (one residual block); "
                   "default: mlp")
    p.add_argument("--hidden", type=hidden, default=(32,), help="the mlp's hidden layer sizes, e.g. 32 or 100,100")
    p.add_argument("--epochs", type=int, default=20, help="default: 20")
    p.add_argument("--batch-size", type=int, default=64, help="default: 64")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 weight decay (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", metavar="DIR", help="directory with the dataset's IDX files")
    p.add_argument("--out", metavar="PATH", help="ONNX file to write (default: <dataset>-784-<hidden>-10.onnx, <dataset>-cnn.onnx, "
                   "<dataset>-resnet.onnx)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("store", help="read a results store of batch certification")
    store_sub = p.add_subparsers(dest="store_command", required=True, parser_class=_Parser)
    q = store_sub.add_parser("summary", help="counts, accuracies and medians per run configuration")
    q.add_argument("path", metavar="results.db")
    q.add_argument("--epsilon", type=epsilons, action="extend", default=[], metavar="E",
                   help="also the certified accuracy at E: certified for the true label with an apothem >= E "
                   "(a comma list, or repeat the option)")
    q.set_defaults(func=cmd_store_summary, torch_free=True)

    p = sub.add_parser("bench", help="reproducible experiments (needs a source checkout)")
    bench = p.add_subparsers(dest="experiment", required=True, parser_class=_Parser)
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

    p = sub.add_parser("info", help="describe an ONNX classifier as the tool reads it")
    p.add_argument("--model", required=True, metavar="M.onnx")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("list", help="list oracles, algorithms and default networks")
    p.set_defaults(func=cmd_list, torch_free=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # third-party loggers (pyomo dumps whole models at DEBUG) stay at WARNING unless -vvv
    for name in ("pyomo", "matplotlib", "PIL", "onnx", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.WARNING if args.verbose < 3 else logging.DEBUG)
    try:
        from .threads import configure_threads, resolve_threads

        resolve_threads(args.threads)  # a bad $PARALLELEPIPEDONN_THREADS is an error for every command
        if not getattr(args, "torch_free", False):  # the thread policy, before any torch work
            configure_threads(args.threads)
        return int(args.func(args))
    except ParallelepipedoNNError as exc:
        print(f"parallelepipedonn: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("parallelepipedonn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): as if killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # report, never a silent wrong result
        if args.verbose >= 2:
            raise
        print(f"parallelepipedonn: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run with -vv for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
