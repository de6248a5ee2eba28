"""``parallelepipedonn certify``: certify one input, or a batch of inputs into a results store."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..executors import executor_names
from ..io_utils import removed_on_failure
from ..progress import Progress
from .args import (
    add_certify_options,
    add_model_and_input,
    certify_config,
    lazy_help,
    oracle_names,
    positive,
    positive_int,
    radius,
)
from .common import check_outputs, fmt, fmt_down, fmt_up, load_model, load_problem
from .exits import EXIT_CODES, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from ..certificate import Certificate


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certify one input (or a batch, into a results store)",
                       description="Certify one input: find a box around it, inside the domain, in which the "
                       "network provably keeps the label, with the largest apothem the oracle can prove. With "
                       "--store: certify a batch (--inputs DIR, --indices A:B) into a resumable results store.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_input(p)
    add_certify_options(p)
    p.add_argument("--epsilon", type=radius, metavar="E",
                   help="also answer: is the L-infinity ball of radius E around the input (within the domain) "
                   "certified? (certified, not-robust or unknown; from the box and counterexample found, else by "
                   "asking the oracle, the falsifier, then --epsilon-oracle about the ball)")
    lazy_help(p.add_argument("--epsilon-oracle", default="crown+alpha-crown+bab", metavar="NAME"),
              "with --epsilon and an incomplete --oracle: the verifier asked about the ball when the search, "
              "its oracle and the falsifier leave it open (%(oracle_names)s or a cascade; default: "
              "crown+alpha-crown+bab, complete; 'none': nothing more)", oracle_names=oracle_names)
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
    batch.add_argument("--executor", choices=executor_names(),
                       help="where the inputs are certified: local (the default: one after the other on this "
                       "machine) or ray (a Ray cluster: pip install -e '.[ray]')")
    batch.add_argument("--address", metavar="local|auto|HOST:PORT",
                       help="--executor ray: the cluster (default: local, a private cluster on this machine for "
                       "this run; auto: the one 'ray start' runs here; HOST:PORT: its head node)")
    batch.add_argument("--workers", type=positive_int, metavar="N",
                       help="--executor ray: CPUs of the private local cluster (default: all), or the most tasks "
                       "run at once on a cluster given by --address")
    p.set_defaults(func=cmd_certify)


def _summary(cert: Certificate, what: str, model_path: Path, written: list[str]) -> str:
    lines = [f"{cert.status.value.upper()}: {cert.reason}" if cert.reason and cert.box is None
             else cert.status.value.upper()]
    labels = f"label {cert.label} (network predicts {cert.predicted_label}"
    labels += f", true label {cert.true_label})" if cert.true_label is not None else ")"
    lines += [f"  input       {what}", f"  model       {model_path} ({cert.network})", f"  {labels}"]
    if cert.box is not None:
        lines.append(f"  apothem     {fmt_down(cert.apothem)}   (certified: every point of the box keeps label "
                     f"{cert.label})")
        if cert.exact is not None:
            lines.append("  exact       yes: the best apothem, to the algorithm's precision" if cert.exact else
                         f"  exact       NO: {cert.reason.removeprefix('not exact: ')}")
        lines.append(f"  min edge    {fmt_down(cert.min_edge)}   log-volume {fmt(cert.log_volume, 6)}")
    ub = cert.apothem_upper_bound
    bound = f"  best apothem <= {fmt_up(ub)}" + ("" if ub is not None else " (no counterexample found)")
    if cert.counterexample_class is not None:
        bound += f" (counterexample: class {cert.counterexample_class})"
    if cert.gap is not None:
        bound += f"   gap {fmt(cert.gap)}"
    lines.append(bound)
    if cert.epsilon is not None:
        e = cert.epsilon
        how = {"certified": "certified", "not-robust": "NOT robust", "unknown": "unknown"}[e["status"]]
        lines.append(f"  epsilon     {fmt(e['epsilon'])}: {how} ({e['reason']})")
    if cert.dual is not None:
        b = cert.dual["apothem_bound"]
        lines.append(f"  dual box    {cert.dual['method']} within radius {fmt(cert.dual['radius'])}: " +
                     (f"best apothem <= {fmt_up(b)}" if b is not None else "the whole ball (no bound below it)"))
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
    from ..certify import certify
    from ..plotting import plot_certificate
    from ..search import DEFAULT_SEARCH, make_search

    batch = _is_batch(args)
    check_outputs(args, args.json, args.plot, args.store)
    algorithm = args.algorithm if args.algorithm is not None else DEFAULT_SEARCH
    epsilon_oracle = None if args.epsilon_oracle.lower() == "none" else args.epsilon_oracle
    config = certify_config(args, algorithm, dual=args.dual, dual_radius=args.dual_radius, epsilon=args.epsilon,
                            epsilon_oracle=epsilon_oracle)
    make_search(config.algorithm, precision=config.precision)  # reject bad names before any work
    if batch:
        return _certify_batch(args, config)
    if args.time_limit is not None:  # one input: the search stops then with what it has proven
        config = replace(config, search_time_limit=args.time_limit)
    network, x, domain, model_path, true_label, what, class_names = load_problem(args)
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
    executor = [o for o, v in (("--executor", args.executor), ("--address", args.address),
                               ("--workers", args.workers)) if v is not None]
    if args.inputs is None and args.indices is None and args.store is None:
        if labels or executor:
            raise ConfigError(f"{(labels + executor)[0]} is for a batch: use it with --inputs DIR (or --dataset D "
                              "--indices A:B) and --store results.db")
        return False
    if (args.address is not None or args.workers is not None) and args.executor != "ray":
        option = "--address" if args.address is not None else "--workers"
        raise ConfigError(f"{option} is for --executor ray" + (f", not --executor {args.executor}"
                                                                if args.executor is not None else ""))
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
    from ..batch import (
        BatchInput,
        certify_batch,
        inputs_from_dataset,
        inputs_from_directory,
        labels_from_file,
        labels_from_name,
        parse_indices,
    )
    from ..datasets import load_dataset
    from ..executors import DEFAULT_EXECUTOR, make_executor
    from ..store import ERROR, ResultStore, Summary

    indices = parse_indices(args.indices) if args.indices is not None else (args.index,)
    executor = make_executor(args.executor or DEFAULT_EXECUTOR, address=args.address, workers=args.workers)
    network, domain, model_path = load_model(args)
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
                           certify_true_label=args.certify_true_label, executor=executor)
    ids = {i.input_id for i in inputs}
    with ResultStore(args.store, read_only=True) as store:
        rows = [r for r in store.rows(report.config_key) if r.input_id in ids]
    print(f"batch of {report.total} input(s): {report.skipped} already in {args.store}, {report.computed} "
          f"run now (model {model_path}, configuration {report.config_key[:12]}"
          + (f"; {report.executor})" if report.computed and report.executor != DEFAULT_EXECUTOR else ")"))
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
