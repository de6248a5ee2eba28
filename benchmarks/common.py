"""Shared helpers of the benchmarks: the reference data, machine description, outputs."""

from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

import numpy as np

import parallelepipedonn as ppn
from benchmarks.options import REFERENCE, RESULTS  # noqa: F401  (re-exported for the benchmarks)

REFERENCE_NETS = {"mnist": "mnist_nn-32.onnx", "fashion-mnist": "fashion_mnist_nn-64.onnx"}


def reference_inputs(reference: Path, dataset: str, network: ppn.Network) -> list[tuple[str, np.ndarray, int]]:
    """``(name, flat input, label)`` for the original system's inputs of ``dataset``; the
    label is the class in the file name. Unreadable inputs (mnist/9-5.csv is empty) are
    skipped."""
    items = []
    for f in sorted((reference / "inputs" / dataset).glob("*.csv")):
        try:
            items.append((f.stem, ppn.load_input(f, network.input_shape), int(f.stem.split("-")[0])))
        except ppn.InputDataError:
            continue
    return items


def output_dirs(args) -> tuple[Path, Path | None]:
    """``--out`` and the optional ``--certs`` directory (created) of a reference benchmark;
    exits when the reference data is absent."""
    if not (REFERENCE / "nets").is_dir():
        raise SystemExit(f"reference data not found at {REFERENCE}")
    certs = Path(args.certs) if getattr(args, "certs", None) else None
    if certs is not None:
        certs.mkdir(parents=True, exist_ok=True)
    return Path(args.out), certs


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def published_log(dataset: str, algorithm: str, reference: Path = REFERENCE) -> dict[str, dict[str, float]]:
    """The original system's per-input results (``<reference>/published/<dataset>-<algorithm>.log``):
    input name (as ``C-K``) -> seconds, iterations, min edge, oracle seconds, oracle calls
    and time-outs (its flag: the run stopped at its time limit, Marabou's time-out counted
    as a proof; a run may end a little after the limit without one)."""
    path = Path(reference) / "published" / f"{dataset}-{algorithm}.log"
    out: dict[str, dict[str, float]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[0].endswith(".csv"):
            name = Path(parts[0]).stem.replace("_", "-")
            out[name] = {"iterations": float(parts[1]), "seconds": float(parts[2]), "min_edge": float(parts[4]),
                         "oracle_seconds": float(parts[5]), "oracle_calls": float(parts[6]),
                         "timeouts": float(parts[7])}
    return out
