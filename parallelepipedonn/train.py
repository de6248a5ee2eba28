"""Train small ReLU classifiers reproducibly and export them as ONNX.

Architectures (``TrainConfig.arch``):

* ``mlp`` — ``784-hidden-10`` (the embedded default networks);
* ``cnn`` — conv 1->8 (4x4, stride 2, pad 1), ReLU, conv 8->16 (4x4, stride 2, pad 1),
  ReLU, flatten (784), dense 100, ReLU, dense 10;
* ``resnet`` — conv 1->8 (3x3, stride 2, pad 1), ReLU, one residual block
  ``relu(h + conv(relu(conv(h))))`` with two 8->8 3x3 convolutions (pad 1), average
  pooling 2x2 (8x7x7), flatten (392), dense 64, ReLU, dense 10.
"""

from __future__ import annotations

import io
import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from ._version import __version__
from .datasets import Dataset, load_dataset
from .errors import ConfigError
from .graph import Graph
from .io_utils import atomic_write_bytes
from .network import Network
from .onnx_export import network_to_onnx
from .onnx_import import model_from_onnx

log = logging.getLogger(__name__)


ARCHITECTURES = ("mlp", "cnn", "resnet")
#: a trained net whose test accuracy is below this (twice chance with 10 classes) failed to train
CHANCE_LEVEL = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained network (with the data and torch's build)."""

    dataset: str = "mnist"
    hidden: tuple[int, ...] = (32,)  # the mlp's hidden layer sizes
    arch: str = "mlp"
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.arch!r}; available: {', '.join(ARCHITECTURES)}")
        if self.epochs < 1 or self.batch_size < 1 or not (0 < self.learning_rate < math.inf):
            raise ConfigError("epochs, batch size and learning rate must be positive")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"the weight decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"the seed must be a whole number in [0, 2^63), got {self.seed}")


@dataclass(frozen=True, eq=False)
class TrainResult:
    network: Network | Graph
    model: onnx.ModelProto
    train_accuracy: float
    test_accuracy: float
    train_size: int
    test_size: int
    data_source: str
    config: TrainConfig

    def metadata(self) -> dict[str, str]:
        return {
            "parallelepipedonn_version": __version__,
            "train_config": json.dumps(asdict(self.config)),
            "dataset": self.config.dataset,
            "data_source": self.data_source,
            "train_accuracy": f"{self.train_accuracy:.4f}",
            "test_accuracy": f"{self.test_accuracy:.4f}",
            "test_size": str(self.test_size),
        }


def accuracy(network: Network | Graph, data: Dataset) -> float:
    return float((network.predict(data.images.reshape(len(data), -1)) == data.labels).mean())


class _Residual(torch.nn.Module):
    """``relu(h + conv2(relu(conv1(h))))``: the residual block of the ``resnet`` arch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h + self.conv2(torch.relu(self.conv1(h))))


def build_model(config: TrainConfig) -> torch.nn.Module:
    """The untrained torch module of ``config.arch`` (module docstring), on ``(B, 1, 28, 28)``
    inputs (the mlp flattens them)."""
    nn = torch.nn
    if config.arch == "cnn":
        return nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(16 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    if config.arch == "resnet":
        return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), _Residual(8),
                             nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    sizes = [28 * 28, *config.hidden, 10]
    layers: list[torch.nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def model_name(config: TrainConfig) -> str:
    """``mnist-784-32-10``, ``mnist-cnn``, ``mnist-resnet``: the default file stem."""
    if config.arch == "mlp":
        return f"{config.dataset}-{'-'.join(map(str, [784, *config.hidden, 10]))}"
    return f"{config.dataset}-{config.arch}"


def _export(model: torch.nn.Module, config: TrainConfig, name: str) -> onnx.ModelProto:
    """The trained module as a float32 ONNX model (an mlp through the IR's own exporter, so
    that the embedded default networks keep their exact bytes)."""
    if config.arch == "mlp":
        float_net = Network.from_torch(model, (1, 28, 28), name=name)
        return network_to_onnx(float_net, doc=f"{config.dataset} ReLU MLP trained by parallelepipedonn")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), buffer, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    onnx_model = onnx.load_from_string(buffer.getvalue())
    onnx_model.doc_string = f"{config.dataset} ReLU {config.arch} trained by parallelepipedonn"
    return onnx_model


def train_model(config: TrainConfig, data_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train ``config.arch`` (module docstring) with Adam (L2 weight decay) and cross-entropy.

    Reproducible: the seed fixes initialisation and batch order, and training runs on
    one CPU thread (so the same torch build gives bit-identical weights). The returned
    network is the IR of the exported float32 ONNX model, and the accuracies are measured
    on it.
    """
    train = load_dataset(config.dataset, "train", data_dir)
    test = load_dataset(config.dataset, "test", data_dir)
    x = torch.tensor(train.images.reshape(len(train), 1, 28, 28), dtype=torch.float32)
    y = torch.tensor(train.labels, dtype=torch.long)
    name = model_name(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            model = build_model(config)
        gen = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        bar = tqdm(range(config.epochs), desc=f"training {name}", disable=None if progress else True, unit="epoch")
        for epoch in bar:
            perm = torch.randperm(len(x), generator=gen)
            total = 0.0
            for start in range(0, len(x), config.batch_size):
                idx = perm[start:start + config.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ConfigError(f"training diverged in epoch {epoch + 1} (loss {value}): try a smaller --lr "
                                      f"than {config.learning_rate:g}")
                loss.backward()
                try:
                    opt.step()
                except RuntimeError as exc:  # e.g. a step too large for float32
                    raise ConfigError(f"training diverged in epoch {epoch + 1} ({exc}): try a smaller --lr than "
                                      f"{config.learning_rate:g}") from exc
                total += value * len(idx)
            bar.set_postfix(loss=f"{total / len(x):.4f}")
        model.eval()
        onnx_model = _export(model, config, name)
    finally:
        torch.set_num_threads(threads)
    net = model_from_onnx(onnx_model, name)  # a Graph for cnn and resnet, as load_onnx reads the file
    result = TrainResult(net, onnx_model, accuracy(net, train), accuracy(net, test), len(train), len(test),
                         train.source, config)
    onnx.helper.set_model_props(onnx_model, result.metadata())
    if result.test_accuracy < CHANCE_LEVEL:
        log.warning("%s's test accuracy is %.3f, about chance level: training failed (a learning rate of %g "
                    "may be too large)", name, result.test_accuracy, config.learning_rate)
    return result


def train_mlp(config: TrainConfig, data_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """:func:`train_model` (kept for callers of the mlp-only API)."""
    return train_model(config, data_dir, progress)


def save_trained(result: TrainResult, path: str | Path) -> None:
    atomic_write_bytes(Path(path), result.model.SerializeToString())


def model_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file (e.g. ``test_accuracy`` of a trained net;
    ``.onnx.gz`` read decompressed)."""
    from .onnx_read import read_model_file

    model = onnx.load_model_from_string(read_model_file(path)[1])
    return {p.key: p.value for p in model.metadata_props}
