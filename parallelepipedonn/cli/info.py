"""``parallelepipedonn info``: describe an ONNX classifier (or a single-output network) as the
tool reads it."""

from __future__ import annotations

import argparse

from .exits import EXIT_OK

#: Metadata values longer than this are shown cut (a mixture's covariance, ...).
LONG = 300


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe an ONNX classifier as the tool reads it")
    p.add_argument("--model", required=True, metavar="M.onnx")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    import math

    from ..onnx_import import load_onnx
    from ..train import model_metadata

    net = load_onnx(args.model, pad_outputs=True)
    what = f"{net.n_classes} classes" if not net.zero_outputs else \
        "no classifier: for `verify --vnnlib` only"
    print(f"{args.model}: {net.describe()}, input shape {list(net.input_shape)}, {what}")
    print(f"  sha256 {net.file_sha256}")
    if math.isfinite(net.input_bound):
        print(f"  float32 values proven in range for inputs of magnitude up to {net.input_bound:.6g}")
    if net.dropped_final:
        print(f"  its final {net.dropped_final} is dropped (the IR's outputs are the scores before it)")
    for k, v in model_metadata(args.model).items():
        k, v = _printable(k), _printable(v)
        print(f"  {k}: {v if len(v) <= LONG else v[:LONG] + f'... ({len(v)} characters)'}")
    return EXIT_OK


def _printable(text: str) -> str:
    """``text`` with its control characters (newlines, terminal escapes) escaped: a model's
    metadata cannot print lines that look like the tool's own."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
