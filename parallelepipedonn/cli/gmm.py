"""``parallelepipedonn gmm``: certified classifiers on a latent Gaussian mixture.

``gmm fit`` fits a mixture on an encoder's training latents and writes one ONNX
classifier (encoder + the mixture's Bayes rule) with the fit in its metadata; ``gmm
certify`` certifies an input of such a classifier: the closed-form radii and the box of
the default search, in one certificate."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import removed_on_failure
from ..progress import Progress
from .args import add_certify_options, certify_config, positive
from .common import Parser, check_outputs, fmt_down, fmt_up
from .exits import EXIT_CODES, EXIT_OK

ENCODERS = ("pca", "penultimate", "trained")
#: The latent dimension of each encoder when --latent-dim is not given (penultimate: the
#: network's last hidden width).
DEFAULT_LATENT = {"pca": 30, "trained": 10}


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gmm", help="certified classifiers on a latent Gaussian mixture (fit, certify)",
                       description="Latent Gaussian-mixture classifiers: an encoder, then the Bayes rule of a "
                       "Gaussian mixture fitted on its latents (one affine layer). 'fit' writes one ONNX classifier "
                       "with the fit in its metadata; 'certify' gives closed-form certified radii and the box of "
                       "the default search in one certificate.", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = p.add_subparsers(dest="gmm_command", required=True, parser_class=Parser)
    _add_fit(gsub)
    _add_certify(gsub)


def _add_fit(gsub: argparse._SubParsersAction) -> None:
    p = gsub.add_parser("fit", help="fit a mixture on an encoder's training latents and write the ONNX classifier",
                        description="Fit class means, priors and a shared covariance (shrunk towards a multiple of "
                        "the identity; float64, Cholesky solves) on the training split's latents, and write one ONNX "
                        "classifier: the encoder, then the mixture's Bayes rule as one affine layer, with the fit, "
                        "accuracies and diagnostics in its metadata.")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], required=True)
    p.add_argument("--encoder", choices=ENCODERS, required=True,
                   help="pca (linear: exact closed-form certificates), penultimate (the last hidden layer of "
                   "--model, default the dataset's default network) or trained (a small ReLU encoder trained for "
                   "it: latents pulled to fixed class centres, interval-bound-propagation training)")
    p.add_argument("--latent-dim", type=int, metavar="D",
                   help="latent dimension (default: pca 30, trained 10; penultimate: the network's last hidden width)")
    p.add_argument("--model", metavar="ENCODER.onnx",
                   help="penultimate: the ReLU network whose last hidden layer encodes (default: the dataset's "
                   "default network)")
    p.add_argument("--shrinkage", type=float, default=None, metavar="L",
                   help="covariance shrinkage lambda in [0, 1]: (1-L) Sigma + L (tr Sigma/d) I (default: 0.01)")
    p.add_argument("--per-class-covariance", action="store_true",
                   help="also fit each class's own covariance (recorded for the diagnostics; the classifier uses "
                   "the shared one, whose Bayes rule is affine)")
    tr = p.add_argument_group("trained encoder")
    tr.add_argument("--hidden", default="256", metavar="H[,H...]", help="hidden layer sizes (default: 256)")
    tr.add_argument("--epochs", type=int, default=None, help="training epochs (default: about 240,000 examples: 60 "
                    "epochs of the offline MNIST sample, 4 of Fashion-MNIST)")
    tr.add_argument("--epsilon", type=float, default=None, help="L-infinity radius of the certified training "
                    "(default: 0.12)")
    tr.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", metavar="DIR", help="directory with the dataset's IDX files")
    p.add_argument("--out", required=True, metavar="gmm.onnx", help="ONNX file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)


def _add_certify(gsub: argparse._SubParsersAction) -> None:
    p = gsub.add_parser("certify", help="certify an input of a latent-mixture classifier",
                        description="The closed-form radii (latent L2, Mahalanobis and L-infinity; an input-space "
                        "L2 ball from a proven Lipschitz bound; for a linear encoder the exact L-infinity and L2 "
                        "radii within the domain), each a proven lower bound, and the L-infinity box of the default "
                        "search through the oracles (default oracle: gmm), in one certificate.",
                        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model and input")
    src.add_argument("--model", metavar="gmm.onnx", help="a classifier written by 'gmm fit' (default: the embedded "
                     "one of --dataset and --encoder)")
    src.add_argument("--encoder", choices=ENCODERS, default="pca", help="which embedded classifier to use with "
                     "--dataset (default: pca)")
    src.add_argument("--input", metavar="X", help="input file: .csv (28×28 grid or one line), .npy or grayscale .png")
    src.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help="take the input from this dataset")
    src.add_argument("--index", type=int, help="index of the image in the dataset split")
    src.add_argument("--split", choices=["test", "train"], default="test", help="dataset split (default: test)")
    src.add_argument("--data-dir", metavar="DIR", help="directory with the dataset's IDX files")
    src.add_argument("--label", type=int, help="class to certify (default: the network's prediction)")
    src.add_argument("--domain", nargs=2, type=float, metavar=("LO", "HI"), default=(0.0, 1.0),
                     help="input domain [LO, HI]^n (default: 0 1)")
    add_certify_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--norm", choices=["linf", "l2"], default="linf",
                     help="the norm of the headline radius: the best proven input radius in it (default: linf); "
                     "the certificate holds every radius")
    out.add_argument("--json", metavar="PATH", help="write the certificate as JSON")
    out.add_argument("--time-limit", type=positive, metavar="S", help="the search stops after S seconds with the "
                     "box proven so far")
    p.set_defaults(func=cmd_certify, default_net="small")


# -- fit -------------------------------------------------------------------------------------
def cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from ..datasets import load_dataset
    from ..gmm.encoders import EncoderTraining, default_epochs, pca_encoder, penultimate_encoder, train_encoder
    from ..gmm.fit import fit_classifier
    from ..gmm.mixture import DEFAULT_SHRINKAGE
    from ..gmm.model import save_model
    from ..io_utils import sha256_file
    from ..models import default_model_path
    from ..onnx_import import load_onnx
    from .args import hidden

    check_outputs(argparse.Namespace(model=args.model, input=None), args.out)
    if args.model is not None and args.encoder != "penultimate":
        raise ConfigError(f"--model is the network of the penultimate encoder; the {args.encoder} encoder takes none")
    if args.latent_dim is not None and args.latent_dim < 2:
        raise ConfigError(f"the latent dimension must be >= 2 (the encoder is stored as a network, which has at "
                          f"least two outputs), got {args.latent_dim}")
    trained_only = [o for o, v in (("--epochs", args.epochs), ("--epsilon", args.epsilon)) if v is not None]
    if trained_only and args.encoder != "trained":
        raise ConfigError(f"{trained_only[0]} is an option of the trained encoder")
    shrinkage = DEFAULT_SHRINKAGE if args.shrinkage is None else args.shrinkage
    if not 0 <= shrinkage <= 1:
        raise ConfigError(f"the shrinkage must lie in [0, 1], got {shrinkage}")
    info: dict = {"encoder": args.encoder, "dataset": args.dataset}
    if args.encoder == "penultimate":  # the network first: a bad one fails before the data is read
        path = Path(args.model) if args.model else default_model_path(args.dataset)
        encoder = penultimate_encoder(load_onnx(path))
        if args.latent_dim is not None and args.latent_dim != encoder.n_classes:
            raise ConfigError(f"the penultimate encoder's latent dimension is the network's last hidden width "
                              f"({encoder.n_classes}), not {args.latent_dim}")
        info.update(encoder_model=path.name, encoder_model_sha256=sha256_file(path))
    train = load_dataset(args.dataset, "train", args.data_dir)
    test = load_dataset(args.dataset, "test", args.data_dir)
    x, y = train.images.reshape(len(train), -1), train.labels
    xt, yt = test.images.reshape(len(test), -1), test.labels
    input_shape = (1, *train.images.shape[1:])
    n_classes = len(train.class_names)
    info["data_source"] = train.source
    if args.encoder == "pca":
        encoder = pca_encoder(x, args.latent_dim or DEFAULT_LATENT["pca"], input_shape)
    elif args.encoder == "trained":
        try:
            sizes = hidden(args.hidden)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(str(exc)) from exc
        defaults = EncoderTraining()
        config = EncoderTraining(hidden=sizes, latent_dim=args.latent_dim or DEFAULT_LATENT["trained"],
                                 epochs=default_epochs(len(y)) if args.epochs is None else args.epochs,
                                 epsilon=defaults.epsilon if args.epsilon is None else args.epsilon, seed=args.seed)
        encoder = train_encoder(x, y, n_classes, input_shape, config, progress=not args.quiet)
        info["training"] = config.as_dict()
    if encoder.n_classes > len(y) - n_classes:
        raise ConfigError(f"latent dimension {encoder.n_classes} is larger than the training set supports: "
                          f"{len(y)} latents in {n_classes} classes")
    result = fit_classifier(encoder, x, y, xt, yt.astype(np.int64), n_classes, shrinkage=shrinkage,
                            per_class=args.per_class_covariance, info=info,
                            name=Path(args.out).stem)
    save_model(result.model, args.out)
    c = result.classifier
    diag = c.info["diagnostics"]
    kl = diag["kl_estimate"]
    print(f"wrote {args.out}: {args.encoder} encoder, latent dimension {c.latent_dim}, {c.network.describe()}, "
          f"train accuracy {result.train_accuracy:.4f} ({len(y)} images), test accuracy {result.test_accuracy:.4f} "
          f"({len(yt)} images; data: {train.source})")
    print(f"  encoder Lipschitz <= {fmt_up(c.encoder_lipschitz)}; KL estimate (test latents vs mixture) "
          f"{kl if isinstance(kl, str) else f'{kl:.3g}'} nats{' (' + diag['kl_reason'] + ')' if diag['kl_reason'] else ''}; "
          f"fit in {result.seconds:.1f} s")
    if diag.get("shared_covariance_kl") is not None:
        per = [v if isinstance(v, str) else f"{v:.3g}" for v in diag["shared_covariance_kl"]]
        print(f"  per-class covariances: KL(own Gaussian || shared-covariance one) per class {', '.join(per)} nats")
    return EXIT_OK


# -- certify ---------------------------------------------------------------------------------
def _best(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def cmd_certify(args: argparse.Namespace) -> int:
    from ..gmm.certify import DEFAULT_GMM_ORACLE, certify_gmm
    from ..gmm.model import load_gmm
    from ..models import default_gmm_path
    from ..search import DEFAULT_SEARCH, make_search
    from .common import load_problem

    check_outputs(args, args.json)
    if args.model is None:
        if args.dataset is None:
            raise ConfigError("give --model gmm.onnx, or --dataset D for its embedded classifier")
        args.model = str(default_gmm_path(args.dataset, args.encoder))
    algorithm = args.algorithm if args.algorithm is not None else DEFAULT_SEARCH
    config = certify_config(args, algorithm, dual=args.dual, dual_radius=args.dual_radius)
    if config.oracle is None:
        from dataclasses import replace

        config = replace(config, oracle=DEFAULT_GMM_ORACLE)
    if args.time_limit is not None:
        from dataclasses import replace

        config = replace(config, search_time_limit=args.time_limit)
    make_search(config.algorithm, precision=config.precision)
    classifier = load_gmm(args.model)
    _, x, domain, model_path, true_label, what, _ = load_problem(args)
    with Progress(f"gmm certify ({config.algorithm})") as progress:
        cert = certify_gmm(classifier, x, args.label, domain=domain, config=config, model_path=str(model_path),
                           true_label=true_label, progress=progress)
    written = []
    with removed_on_failure(args.json):
        if args.json:
            cert.save(args.json)
            written.append(args.json)
    print(_summary(cert, classifier, what, model_path, args.norm, written))
    return EXIT_OK


def _summary(cert, classifier, what: str, model_path: Path, norm: str, written: list[str]) -> str:
    g = cert.gmm

    def num(v) -> float | None:
        return None if v is None else float(v)

    lat = g["latent"]
    linf, l2 = g["input_linf"], g["input_l2"]
    box = cert.apothem if cert.box is not None else None
    best = _best([box, num(linf["radius"]) if linf else None]) if norm == "linf" else \
        _best([num(g["input_l2_global"]), num(l2["radius"]) if l2 else None])
    head = [f"{cert.status.value.upper()}: {cert.reason}" if cert.reason and cert.box is None
            else cert.status.value.upper()]
    labels = f"label {cert.label} (network predicts {cert.predicted_label}"
    labels += f", true label {cert.true_label})" if cert.true_label is not None else ")"
    lines = head + [f"  input       {what}",
                    (f"  model       {model_path} ({cert.network}; {classifier.encoder_kind} encoder, latent dimension "
                    f"{classifier.latent_dim})"), f"  {labels}",
                    f"  radius      {fmt_down(best)} {'L∞' if norm == 'linf' else 'L2'} (the best proven input radius)",
                    f"  closed form ({1e3 * g['seconds']:.3f} ms; every radius proven):",
                    (f"    latent        L2 {fmt_down(num(lat['l2']))}, Mahalanobis {fmt_down(num(lat['mahalanobis']))}, "
                    f"L∞ {fmt_down(num(lat['linf']))} (nearest face: class {lat['closest_class']})"),
                    (f"    input L2      {fmt_down(num(g['input_l2_global']))} (global: encoder Lipschitz <= "
                    f"{fmt_up(num(g['encoder_lipschitz']))})")]
    for name, part in (("input L∞", linf), ("input L2", l2)):
        if part is not None:
            lines.append(f"    {name:13s} {fmt_down(num(part['radius']), 6)} (exact in the domain: a counterexample at "
                         f"{fmt_up(num(part['upper']), 6)}, class {part['closest_class']})")
    if cert.box is not None:
        lines.append(f"  apothem     {fmt_down(box)}   (certified box: every point keeps label {cert.label}; "
                     f"{cert.oracle}, {cert.algorithm})")
    ub = cert.apothem_upper_bound
    if ub is not None and not math.isinf(ub):
        lines.append(f"  best apothem <= {fmt_up(ub)} (counterexample: class {cert.counterexample_class})")
    lines.append(f"  time        {cert.seconds:.3f} s")
    if written:
        lines.append(f"  wrote       {', '.join(written)}")
    return "\n".join(lines)
