"""``parallelepipedonn dual``: a box holding every input of a class (dual certification)."""

from __future__ import annotations

import argparse
import math

from ..errors import ConfigError
from ..io_utils import removed_on_failure
from ..progress import Progress
from .args import add_model_and_input, positive, positive_int
from .common import check_outputs, fmt, fmt_up, load_model, load_problem
from .exits import EXIT_OK


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dual", help="dual certification: a box holding every input of a class",
                       description="Compute a box that contains every input of the domain (or of the ball of "
                       "--radius around an input) that the network assigns to --label: any certification of an "
                       "input of that class lies inside it. Over the whole domain with --dataset D, the training "
                       "images the network assigns to the label seed the box as known class points (whatever "
                       "--split says: it chooses the image of --index).")
    add_model_and_input(p)
    p.add_argument("--radius", type=_radius, help="restrict to the ball of this radius around the input "
                   "(a number, or a multiple of the input's certified apothem such as 2x)")
    p.add_argument("--method", choices=["milp", "relaxed", "complete-bu", "complete-cubic"], default="milp",
                   help="milp: exact; relaxed: bound propagation (fast, outer); complete-bu / complete-cubic: "
                   "the original system's complete algorithms (default: milp)")
    p.add_argument("--workers", type=positive_int, default=2, help="processes for the MILPs (default: 2)")
    p.add_argument("--time-limit", type=positive, default=60.0, help="seconds per solver call (default: 60)")
    p.add_argument("--device", default="cpu", help="torch device of the attack and of --method relaxed's bound "
                   "propagation: cpu or cuda (the MILPs run on the CPU; default: cpu)")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the dual box as JSON (lower and upper as flat lists)")
    out.add_argument("--plot", metavar="PATH", help="write a PNG of the lower and upper images")
    p.set_defaults(func=cmd_dual)


def _radius(text: str) -> str:
    t = text.strip()
    try:
        value = float(t.removesuffix("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a radius like 0.05 or 2x, got {text!r}") from exc
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"the radius must be a finite positive number, got {text!r} (leave "
                                         "--radius and the input out for the whole domain)")
    return t


def cmd_dual(args: argparse.Namespace) -> int:
    import numpy as np

    from ..certify import CertifyConfig, certify
    from ..datasets import load_dataset
    from ..dual import dual_box, scaled_radius
    from ..plotting import plot_dual

    check_outputs(args, args.json, args.plot)
    restricted = args.input is not None or args.index is not None
    if restricted and args.radius is None:
        raise ConfigError("a dual around an input needs --radius R (or a multiple of its apothem, e.g. 2x)")
    if not restricted and args.radius is not None:
        raise ConfigError("--radius needs an input (--input X, or --dataset D --index N)")
    x = center_label = None
    candidates = np.zeros((0, 1))
    if restricted:
        network, x, domain, model_path, _, what, _ = load_problem(args)
        center_label = int(network.predict(x)[0])
    else:
        if args.model is None and args.dataset is None:
            raise ConfigError("give --model M.onnx (or --dataset D for its embedded network)")
        network, domain, model_path = load_model(args)  # (the domain checked as for certify)
        what = "the whole domain"
    label = args.label if args.label is not None else center_label
    if label is None:
        raise ConfigError("give --label C (the class whose dual box to compute)")
    label = network.check_label(label)
    if args.dataset is not None and not restricted:
        data = load_dataset(args.dataset, "train", args.data_dir)
        images = data.images.reshape(len(data), -1)
        if images.shape[1] != network.n_inputs:
            raise ConfigError(f"the {args.dataset} images have {images.shape[1]} values, the network "
                              f"{network.n_inputs} inputs: no candidates from them")
        candidates = images[network.predict(images) == label]
    radius = None
    if restricted:
        if args.radius.endswith("x"):
            cert = certify(network, x, label, domain=domain, config=CertifyConfig(device=args.device))
            if cert.apothem is None or cert.apothem <= 0:
                raise ConfigError(f"no certified apothem at the input to scale the radius by ({cert.reason})")
            radius = scaled_radius(float(args.radius[:-1]), cert.apothem, x, domain)
        else:
            radius = float(args.radius)
        what += f", radius {radius:.4g}"
    with Progress(f"dual ({args.method})") as progress:
        dual = dual_box(network, label, x=x, radius=radius, domain=domain, method=args.method,
                        candidates=candidates if len(candidates) else (), workers=args.workers,
                        time_limit=args.time_limit, model_path=str(model_path), device=args.device,
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
        print(f"  exact bounds  {dual.exact_count}/{2 * n}   min edge {fmt(dual.min_edge())}   "
              f"log-volume {fmt(dual.log_volume(), 6)}")
        if x is not None:
            bound = dual.apothem_bound(x, domain)
            if bound == 0 and not dual.box.contains(np.asarray(x, dtype=np.float64).reshape(-1)):
                print(f"  the input lies outside the box (it is not of class {label}): no certification of it "
                      f"for class {label}")
            else:
                print(f"  implies best apothem <= {fmt_up(bound)}" if bound is not None else
                      "  implies no apothem bound below the radius")
    details = {k: v for k, v in dual.details.items() if k != "bridge"}
    print(f"  model {model_path}; {dual.seconds:.2f} s; {details}")
    if "bridge" in dual.details:
        print(f"  chain       {dual.details['bridge']['semantics']}")
    if written:
        print(f"  wrote {', '.join(written)}")
    return EXIT_OK
