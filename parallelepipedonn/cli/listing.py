"""``parallelepipedonn list``: the oracles, search algorithms and default networks (imports no torch)."""

from __future__ import annotations

import argparse

from .exits import EXIT_OK


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list oracles, algorithms and default networks")
    p.set_defaults(func=cmd_list, torch_free=True)


def cmd_list(args: argparse.Namespace) -> int:
    from oracles import oracle_entries

    from ..models import DEFAULT_GMM_MODELS, DEFAULT_MODELS, data_dir
    from ..search import SEARCHES

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
    print("default latent-mixture classifiers (gmm certify --dataset D --encoder E):")
    for dataset, encoders in DEFAULT_GMM_MODELS.items():
        for encoder, fname in encoders.items():
            print(f"  {dataset:14s} {encoder:11s} {fname}")
    return EXIT_OK
