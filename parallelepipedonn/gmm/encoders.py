"""The encoders a mixture is fitted on: ``pca`` (linear), ``penultimate`` (the last hidden
layer of a ReLU network) and ``trained`` (a small ReLU encoder trained for it).

Each returns a chain :class:`~parallelepipedonn.network.Network` from the input to the
latent, with float32-valued weights (what the ONNX file stores: the latents the mixture is
fitted on are those of the file's encoder).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, ModelError
from ..network import Affine, Network
from .model import round_to_float32

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]


def pca_encoder(x: FloatArray, dim: int, input_shape: tuple[int, ...]) -> Network:
    """``z = V^T (x - mean)``: the ``dim`` principal directions of the training inputs
    ``x`` (``(N, n)``), float64 eigendecomposition of their covariance, each direction's
    sign fixed (its largest entry positive) so that the encoder is reproducible."""
    n_samples, n = x.shape
    if not 1 <= dim <= min(n, n_samples - 1):
        raise ConfigError(f"latent dimension {dim} is larger than the training set supports: PCA of {n_samples} "
                          f"inputs of {n} values has at most {min(n, n_samples - 1)} directions")
    mean = x.mean(axis=0)
    centred = x - mean
    _evals, evecs = np.linalg.eigh(centred.T @ centred / (n_samples - 1))
    top = evecs[:, ::-1][:, :dim]
    top = top * np.where(top[np.abs(top).argmax(axis=0), np.arange(dim)] < 0, -1.0, 1.0)
    return round_to_float32(Network(tuple(input_shape), (Affine(top.T, -top.T @ mean),), f"pca-{dim}"))


def penultimate_encoder(model: Any) -> Network:
    """The last hidden layer (after its ReLU) of a ReLU chain: the network without its
    output layer (:class:`ModelError` for a network that is not a chain of dense layers
    and ReLUs, or has no hidden layer)."""
    net = model if isinstance(model, Network) else getattr(model, "as_network", lambda: None)()
    if net is None:
        raise ModelError("the penultimate encoder needs a ReLU network of dense layers (an MLP); this one has "
                         "convolutions or residual connections")
    if len(net.affines) < 2:
        raise ModelError("the network has no hidden layer: it has no penultimate layer to encode with")
    layers = list(net.layers[:-1])
    width = net.affines[-2].out_features
    return Network(net.input_shape, (*layers, Affine(np.eye(width), np.zeros(width))), f"{net.name}-penultimate")


# -- trained ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderTraining:
    """How the ``trained`` encoder is trained (everything that determines it, with the data
    and torch's build). A ReLU MLP ``n - hidden - latent_dim`` (linear latent) whose
    latents are pulled to fixed class centres ``radius * e_k`` (``latent_dim >= classes``)
    by ``pull * ||z - c_y||^2 / d``, and made certifiably robust by interval bound
    propagation (IBP): the cross-entropy of the worst-case scores ``z`` over the L-infinity
    ball of ``epsilon`` (ramped up from 0 over the first ``ramp`` of the epochs; weight
    ``kappa`` ramped from 0 to its final value), the scores' margins bounded through the
    last layer (the elision of Gowal et al. 2018)."""

    hidden: tuple[int, ...] = (256,)
    latent_dim: int = 10
    epochs: int = 60
    batch_size: int = 50
    learning_rate: float = 1e-3
    epsilon: float = 0.12
    kappa: float = 0.6
    ramp: float = 0.5
    pull: float = 0.05
    radius: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden) or self.latent_dim < 2:
            raise ConfigError("the trained encoder needs hidden sizes >= 1 and a latent dimension >= 2")
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0 or self.epsilon < 0:
            raise ConfigError("epochs, batch size, learning rate must be positive, epsilon >= 0")
        if not (0 <= self.kappa <= 1 and 0 < self.ramp <= 1):
            raise ConfigError("kappa must lie in [0, 1] and ramp in (0, 1]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_encoder(x: FloatArray, y: NDArray[np.int64], n_classes: int, input_shape: tuple[int, ...],
                  config: EncoderTraining = EncoderTraining(), progress: bool = False) -> Network:
    """Train the ``trained`` encoder (:class:`EncoderTraining`) on ``(x, y)`` (``x``:
    ``(N, n)`` in the domain [0, 1]) and return it as a float32-valued chain.

    Reproducible: the seed fixes initialisation and batch order, and training runs on one
    CPU thread (the same torch build gives bit-identical weights)."""
    import torch
    from tqdm import tqdm

    if config.latent_dim < n_classes:
        raise ConfigError(f"the trained encoder's latent dimension ({config.latent_dim}) must be at least the number "
                          f"of classes ({n_classes}): one centre axis per class")
    nn = torch.nn
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            sizes = [x.shape[1], *config.hidden, config.latent_dim]
            layers: list[nn.Module] = []
            for i in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    layers.append(nn.ReLU())
            model = nn.Sequential(*layers)
        xs = torch.tensor(x, dtype=torch.float32)
        ys = torch.tensor(y, dtype=torch.long)
        centres = torch.zeros(n_classes, config.latent_dim)
        centres[torch.arange(n_classes), torch.arange(n_classes)] = config.radius
        gen = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        steps = config.epochs * ((len(xs) + config.batch_size - 1) // config.batch_size)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.75 * steps), int(0.9 * steps)], gamma=0.2)
        ce = nn.CrossEntropyLoss()
        ramp_steps = max(1, int(config.ramp * steps))
        step = 0
        bar = tqdm(range(config.epochs), desc="training the encoder", disable=None if progress else True,
                   unit="epoch")
        for _ in bar:
            perm = torch.randperm(len(xs), generator=gen)
            for start in range(0, len(xs), config.batch_size):
                idx = perm[start:start + config.batch_size]
                xb, yb = xs[idx], ys[idx]
                frac = min(1.0, step / ramp_steps)
                eps, kappa = config.epsilon * frac, config.kappa * frac
                z = model(xb)
                loss = (1 - kappa) * ce(z[:, :n_classes], yb)
                loss = loss + config.pull * ((z - centres[yb]) ** 2).sum(dim=1).mean() / config.latent_dim
                if kappa > 0 and eps > 0:
                    worst = _ibp_worst_scores(model, xb, yb, eps, n_classes)
                    loss = loss + kappa * ce(worst, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        model.eval()
    finally:
        torch.set_num_threads(threads)
    net = Network.from_torch(model, input_shape, name=f"trained-{config.latent_dim}")
    return round_to_float32(net)


def _ibp_worst_scores(model, x, y, eps: float, n_classes: int):
    """Per point: ``-`` the IBP lower bounds of the margins ``z_y - z_j`` over the
    L-infinity ball of ``eps`` in [0, 1] (0 for ``j = y``), the last layer elided."""
    import torch

    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    layers = list(model)
    for m in layers[:-1]:
        if isinstance(m, torch.nn.Linear):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            mid, rad = m(mid), rad @ m.weight.abs().T
            lo, hi = mid - rad, mid + rad
        else:
            lo, hi = torch.relu(lo), torch.relu(hi)
    last = layers[-1]
    w, b = last.weight[:n_classes], last.bias[:n_classes]
    dw = w[y][:, None, :] - w[None, :, :]  # (B, K, H): rows of z_y - z_j
    db = b[y][:, None] - b[None, :]
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    lower = torch.einsum("bkh,bh->bk", dw, mid) - torch.einsum("bkh,bh->bk", dw.abs(), rad) + db
    return -lower



def default_epochs(train_size: int) -> int:
    """About 240,000 examples: 60 epochs of MNIST's offline 4,000, 4 of Fashion-MNIST's 60,000."""
    return max(1, round(240_000 / max(train_size, 1)))
