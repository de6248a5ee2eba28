"""The command line's shared arguments: value types, help texts naming the oracles and
algorithms (looked up only when shown), and the option groups of ``certify`` and
``compare`` with the configuration they make."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..certify import CertifyConfig


class LazyNames:
    """Names for a help text, looked up only when the help is shown: naming the oracles or
    the search algorithms imports their registries (and loads oracle plug-ins)."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names

    def __str__(self) -> str:
        return ", ".join(self._names())


def lazy_help(action: argparse.Action, text: str, **names: Callable[[], Iterable[str]]) -> None:
    """Give ``action`` the help ``text``, whose ``%(name)s`` fields are the ``names``."""
    action.help = text
    for key, value in names.items():
        setattr(action, key, LazyNames(value))


def oracle_names() -> list[str]:
    from oracles import oracle_entries

    return sorted(oracle_entries())


def search_names() -> list[str]:
    from ..search import SEARCHES

    return list(SEARCHES)


def default_search() -> list[str]:
    from ..search import DEFAULT_SEARCH

    return [DEFAULT_SEARCH]


def hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(","))  # (an empty item, as in 32,,32: an error)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected sizes like 32 or 100,100, got {text!r}") from exc
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive sizes like 32 or 100,100, got {text!r}")
    return sizes


def _whole_number(text: str, minimum: int, expected: str, too_small: str) -> int:
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from exc
    if n < minimum:
        raise argparse.ArgumentTypeError(f"{too_small}, got {text!r}")
    return n


def threads(text: str) -> int:
    return _whole_number(text, 0, "expected a number of threads",
                         "the number of threads must be >= 0 (0: torch's default)")


def positive_int(text: str) -> int:
    return _whole_number(text, 1, "expected a whole number", "must be at least 1")


def positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def radius(text: str) -> float:
    """A positive radius, as the smallest float64 at least the decimal written (``0.3`` is
    read as 0.30000000000000004, not float("0.3") = 0.29999999999999998...: the ball a
    claim is about then holds the decimal ball)."""
    v = positive(text)
    try:
        exact = Fraction(text.strip())
    except ValueError:  # written as float() reads it but Fraction does not (e.g. "1e-3 "?): as read
        return v
    return math.nextafter(v, math.inf) if Fraction(v) < exact else v


def epsilons(text: str) -> list[float]:
    return [radius(t) for t in text.split(",")]


def add_model_and_input(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("model and input")
    src.add_argument("--model", metavar="M.onnx", help="ONNX classifier (default: the embedded network of --dataset)")
    src.add_argument("--input", metavar="X", help="input file: .csv (28×28 grid or one line), .npy or grayscale .png")
    src.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help="take the input from this dataset")
    src.add_argument("--index", type=int, help="index of the image in the dataset split")
    src.add_argument("--split", choices=["test", "train"], default="test", help="dataset split (default: test)")
    src.add_argument("--data-dir", metavar="DIR", help="directory with the dataset's IDX files")
    src.add_argument("--default-net", choices=["small", "deep", "cnn", "resnet"], default="small",
                     help="which embedded network to use with --dataset (default: small, 784-32-10; deep: "
                     "784-100-100-10; cnn and resnet: convolutional and residual, MNIST only)")
    src.add_argument("--label", type=int, help="class to certify (default: the network's prediction)")
    src.add_argument("--domain", nargs=2, type=float, metavar=("LO", "HI"), default=(0.0, 1.0),
                     help="input domain [LO, HI]^n (default: 0 1)")


def add_certify_options(p: argparse.ArgumentParser) -> None:
    how = p.add_argument_group("how to certify")
    lazy_help(how.add_argument("--oracle", default=None),
               "verifier (%(oracle_names)s, or a cascade a+b+c; default: crown, and crown+alpha-crown+bab for "
               "--algorithm exact)", oracle_names=oracle_names)
    lazy_help(how.add_argument("--algorithm", default=None),  # None: the search package's DEFAULT_SEARCH
               "search algorithm (%(search_names)s, or a composition a+b; default: %(default_search)s)",
               search_names=search_names, default_search=default_search)
    how.add_argument("--precision", type=positive, default=1e-4,
                     help="precision δ of radii and faces (default: 1e-4; relative for --algorithm exact)")
    how.add_argument("--device", default="cpu", help="torch device for bound propagation: cpu or cuda (default: cpu)")
    how.add_argument("--oracle-option", action="append", default=[], metavar="[STAGE.]KEY=VALUE",
                     help="an option of the oracle, e.g. time_limit=30; for one stage of a cascade, e.g. "
                     "bab.steps=20 (a plain option two stages take must name its stage; time_limit, device and "
                     "dtype go to every stage that takes them); repeatable")
    how.add_argument("--falsifier", default="attack",
                     help="oracle that looks for counterexamples to bound the best apothem ('none' to skip; "
                     "default: attack)")
    how.add_argument("--dual", choices=["milp", "relaxed", "complete-bu", "complete-cubic"],
                     help="also bound the best apothem by the dual box of the label around the input")
    how.add_argument("--dual-radius", type=positive, default=2.0,
                     help="the dual's ball radius, as a multiple of the certified apothem (default: 2)")


def certify_config(args: argparse.Namespace, algorithm: str, **more: Any) -> CertifyConfig:
    """The :class:`CertifyConfig` of the "how to certify" options, for ``algorithm``."""
    from oracles.registry import parse_oracle_options

    from ..certify import CertifyConfig

    falsifier = None if args.falsifier.lower() == "none" else args.falsifier
    return CertifyConfig(oracle=args.oracle, oracle_options=parse_oracle_options(args.oracle_option),
                         algorithm=algorithm, precision=args.precision, device=args.device, falsifier=falsifier,
                         **more)
