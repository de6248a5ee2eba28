"""Helpers the commands share: the argument parser class (one-line errors), number
formatting, the checks of output paths, and loading a model and an input."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..io_utils import check_writable
from .exits import EXIT_USAGE

if TYPE_CHECKING:
    from ..box import Box
    from ..network import Network


#: what argparse takes for a negative number, not an option: also ``-1e-3`` and ``-inf``
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), reading ``--domain -1e-3 1`` as numbers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "unknown"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def fmt_up(v: float | None, digits: int = 4) -> str:
    """``v`` to ``digits`` significant digits rounded up: an upper bound printed after "<="
    stays one (1.00000005 is "1.001", not "1")."""
    return _fmt_directed(v, digits, up=True)


def fmt_down(v: float | None, digits: int = 4) -> str:
    """``v`` to ``digits`` significant digits rounded down: a proven lower bound (a certified
    apothem or radius) is never printed above itself (0.080857 is "0.08085", not "0.08086")."""
    return _fmt_directed(v, digits, up=False)


def _fmt_directed(v: float | None, digits: int, up: bool) -> str:
    if v is None or not math.isfinite(v) or v == 0:
        return fmt(v, digits)
    from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

    exact = Decimal(float(v))  # (numpy scalars too) the float's exact value
    step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
    rounded = exact.quantize(step, rounding=ROUND_CEILING if up else ROUND_FLOOR)
    # the decimal itself, laid out as a float's "g" (a float conversion would round to nearest again)
    adjusted = rounded.adjusted()
    text = f"{rounded:.{digits - 1}e}" if adjusted < -4 or adjusted >= digits else \
        f"{rounded:.{max(0, digits - 1 - adjusted)}f}"
    mantissa, _, exponent = text.partition("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}e{int(exponent):+03d}" if exponent else mantissa


def check_outputs(args: argparse.Namespace, *paths: str | None) -> None:
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


def load_model(args: argparse.Namespace) -> tuple[Network, Box, Path]:
    """The network of ``--model`` (or of ``--dataset``), the ``--domain`` box and the model's path."""
    import numpy as np

    from ..box import Box
    from ..models import default_model_path
    from ..onnx_import import load_onnx

    lo, hi = args.domain
    if not (lo < hi and math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"the domain [{lo}, {hi}] must be a non-empty finite interval")
    model_path = Path(args.model) if args.model else default_model_path(args.dataset, args.default_net)
    network = load_onnx(model_path)
    n = network.n_inputs
    return network, Box(np.full(n, lo), np.full(n, hi)), model_path


def load_problem(args: argparse.Namespace):
    """Network, input point, domain, model path, true label and a description of the input."""
    from ..datasets import CLASS_NAMES, load_dataset
    from ..inputs import as_network_input, read_input_file

    if (args.input is None) == (args.dataset is None):
        raise ConfigError("give either --input X (with --model) or --dataset D --index N")
    if args.dataset is not None and args.index is None:
        raise ConfigError("--dataset needs --index N")
    if args.input is not None and args.model is None:
        raise ConfigError("--input needs --model M.onnx")
    network, domain, model_path = load_model(args)
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
