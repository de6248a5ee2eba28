"""The embedded default networks (ONNX files under ``data/``, installed as
``parallelepipedonn.data``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ConfigError

#: dataset -> {size name -> file name}; the first size is the default.
DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "mnist": {"small": "mnist-784-32-10.onnx", "deep": "mnist-784-100-100-10.onnx", "cnn": "mnist-cnn.onnx",
              "resnet": "mnist-resnet.onnx"},
    "fashion-mnist": {"small": "fashion-mnist-784-32-10.onnx", "deep": "fashion-mnist-784-100-100-10.onnx"},
}


#: dataset -> {encoder -> file name}: the embedded latent-mixture classifiers (``gmm fit``).
DEFAULT_GMM_MODELS: dict[str, dict[str, str]] = {
    dataset: {encoder: f"{dataset}-gmm-{encoder}.onnx" for encoder in ("pca", "penultimate", "trained")}
    for dataset in ("mnist", "fashion-mnist")
}


def data_dir() -> Path:
    return Path(str(files("parallelepipedonn.data")))


def _embedded(table: dict[str, dict[str, str]], dataset: str, kind: str, what: str) -> Path:
    """The file of ``table[dataset][kind]`` under :func:`data_dir` (:class:`ConfigError` if none)."""
    if dataset not in table:
        raise ConfigError(f"no {what} for dataset {dataset!r}; available: {', '.join(table)}")
    if kind not in table[dataset]:
        raise ConfigError(f"no {kind!r} {what} for {dataset}; available: {', '.join(table[dataset])}")
    path = data_dir() / table[dataset][kind]
    if not path.is_file():
        raise ConfigError(f"the {what} {path} is missing from this installation")
    return path


def default_model_path(dataset: str, size: str = "small") -> Path:
    """Path of the embedded default network for ``dataset`` (``small``, ``deep``; for MNIST
    also ``cnn`` and ``resnet``)."""
    return _embedded(DEFAULT_MODELS, dataset, size, "default network")


def default_gmm_path(dataset: str, encoder: str = "pca") -> Path:
    """Path of the embedded latent-mixture classifier of ``dataset`` with ``encoder``."""
    return _embedded(DEFAULT_GMM_MODELS, dataset, encoder, "default mixture classifier")
