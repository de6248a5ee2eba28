"""``parallelepipedonn train``: train a ReLU classifier reproducibly and export it as ONNX."""

from __future__ import annotations

import argparse

from ..io_utils import check_writable
from .args import hidden
from .exits import EXIT_OK


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a ReLU classifier (MLP, CNN or residual net) reproducibly and export "
                       "it as ONNX")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], required=True)
    p.add_argument("--arch", choices=["mlp", "cnn", "resnet"], default="mlp",
                   help="mlp (784-hidden-10), cnn (two strided convolutions) or resnet (one residual block); "
                   "default: mlp")
    p.add_argument("--hidden", type=hidden, default=None,
                   help="the mlp's hidden layer sizes, e.g. 32 or 100,100 (default: 32; mlp only)")
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


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train import TrainConfig, model_name, save_trained, train_model

    if args.hidden is not None and args.arch != "mlp":
        raise ConfigError(f"--hidden sets the mlp's hidden layers; --arch {args.arch} has fixed layers")
    config = TrainConfig(dataset=args.dataset, hidden=args.hidden or (32,), arch=args.arch, epochs=args.epochs,
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
