"""Train small ReLU MLP classifiers reproducibly and export them as ONNX."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from ._version import __version__
from .datasets import Dataset, load_dataset
from .errors import ConfigError
from .io_utils import atomic_write_bytes
from .network import Network
from .onnx_export import network_to_onnx
from .onnx_import import network_from_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained network (with the data and torch's build)."""

    dataset: str = "mnist"
    hidden: tuple[int, ...] = (32,)
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ConfigError("epochs, batch size and learning rate must be positive")


@dataclass(frozen=True, eq=False)
class TrainResult:
    network: Network
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


def accuracy(network: Network, data: Dataset) -> float:
    return float((network.predict(data.images.reshape(len(data), -1)) == data.labels).mean())


def train_mlp(config: TrainConfig, data_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train a ``784-hidden-10`` ReLU MLP with Adam (L2 weight decay) and cross-entropy.

    Reproducible: the seed fixes initialisation and batch order, and training runs on
    one CPU thread (so the same torch build gives bit-identical weights). The returned
    network is the IR of the exported float32 ONNX model, and the accuracies are measured
    on it.
    """
    train = load_dataset(config.dataset, "train", data_dir)
    test = load_dataset(config.dataset, "test", data_dir)
    x = torch.tensor(train.images.reshape(len(train), -1), dtype=torch.float32)
    y = torch.tensor(train.labels, dtype=torch.long)
    sizes = [x.shape[1], *config.hidden, 10]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            layers: list[torch.nn.Module] = []
            for i in range(len(sizes) - 1):
                layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    layers.append(torch.nn.ReLU())
            model = torch.nn.Sequential(*layers)
        gen = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        bar = tqdm(range(config.epochs), desc=f"training {'-'.join(map(str, sizes))}",
                   disable=None if progress else True,
                   unit="epoch")
        for _ in bar:
            perm = torch.randperm(len(x), generator=gen)
            total = 0.0
            for start in range(0, len(x), config.batch_size):
                idx = perm[start:start + config.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            bar.set_postfix(loss=f"{total / len(x):.4f}")
    finally:
        torch.set_num_threads(threads)
    float_net = Network.from_torch(model, (1, 28, 28), name=f"{config.dataset}-{'-'.join(map(str, sizes))}")
    onnx_model = network_to_onnx(float_net, doc=f"{config.dataset} ReLU MLP trained by parallelepipedonn")
    net = network_from_onnx(onnx_model, float_net.name)
    result = TrainResult(net, onnx_model, accuracy(net, train), accuracy(net, test), len(train), len(test),
                         train.source, config)
    onnx.helper.set_model_props(onnx_model, result.metadata())
    return result


def save_trained(result: TrainResult, path: str | Path) -> None:
    atomic_write_bytes(Path(path), result.model.SerializeToString())


def model_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file (e.g. ``test_accuracy`` of a trained net)."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
