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
