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


def default_model_path(dataset: str, size: str = "small") -> Path:
    """Path of the embedded default network for ``dataset`` (``small``, ``deep``; for MNIST
    also ``cnn`` and ``resnet``)."""
    if dataset not in DEFAULT_MODELS:
        raise ConfigError(f"no default network for dataset {dataset!r}; available: {', '.join(DEFAULT_MODELS)}")
    sizes = DEFAULT_MODELS[dataset]
    if size not in sizes:
        raise ConfigError(f"no {size!r} default network for {dataset}; available: {', '.join(sizes)}")
    path = data_dir() / sizes[size]
    if not path.is_file():
        raise ConfigError(f"the default network {path} is missing from this installation")
    return path


def default_gmm_path(dataset: str, encoder: str = "pca") -> Path:
    """Path of the embedded latent-mixture classifier of ``dataset`` with ``encoder``."""
    if dataset not in DEFAULT_GMM_MODELS:
        raise ConfigError(f"no default mixture classifier for dataset {dataset!r}; available: "
                          f"{', '.join(DEFAULT_GMM_MODELS)}")
    encoders = DEFAULT_GMM_MODELS[dataset]
    if encoder not in encoders:
        raise ConfigError(f"no default mixture classifier with encoder {encoder!r}; available: {', '.join(encoders)}")
    path = data_dir() / encoders[encoder]
    if not path.is_file():
        raise ConfigError(f"the default mixture classifier {path} is missing from this installation")
    return path
