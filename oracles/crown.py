"""CROWN: sound, incomplete, batched linear bound propagation (VERIFIED or UNKNOWN)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network

from .base import Answer, FloatArray, Oracle, Verdict
from .bounds import Adam, NetworkTensors, backward, concretize, intermediate_bounds, margin_spec, relu_relaxation


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a clear error if CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OracleError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


class CrownOracle(Oracle):
    """CROWN bound propagation over the IR (float64, any torch device).

    A box is VERIFIED iff the proven lower bound of ``logit_c - logit_j`` is > 0 for every
    ``j != c``; otherwise UNKNOWN (with the bound as ``margin``).
    """

    name = "crown"
    sound = True
    complete = False
    batched = True

    def __init__(self, network: Network, *, device: str = "cpu", chunk_size: int = 256,
                 intermediate: str = "crown", time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        if intermediate not in ("crown", "ibp"):
            raise OracleError(f"intermediate bounds must be 'crown' or 'ibp', not {intermediate!r}")
        if chunk_size < 1:
            raise OracleError("chunk_size must be >= 1")
        self.device = resolve_device(device)
        self.chunk_size = chunk_size
        self.intermediate = intermediate
        self.tensors = NetworkTensors.of(network, self.device)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "device": str(self.device), "intermediate": self.intermediate,
                "dtype": "float64"}

    def margin_lower_bounds(self, lower: FloatArray, upper: FloatArray, label: int) -> FloatArray:
        """Proven lower bounds of ``logit_label - logit_j`` for every ``j != label`` over each
        box: shape ``(B, n_classes - 1)`` (classes in increasing order, ``label`` skipped)."""
        out = []
        for start in range(0, len(lower), self.chunk_size):
            lo = torch.tensor(lower[start:start + self.chunk_size], dtype=torch.float64, device=self.device)
            hi = torch.tensor(upper[start:start + self.chunk_size], dtype=torch.float64, device=self.device)
            with torch.no_grad():
                out.append(self._bounds(lo, hi, label).cpu().numpy())
        return np.concatenate(out)

    def differentiable_margin_bounds(self, lower: torch.Tensor, upper: torch.Tensor, label: int) -> torch.Tensor:
        """CROWN's margin bounds as a differentiable function of the box (float64 tensors
        ``(B, n)`` on the oracle's device): for searches that optimise a box by gradient."""
        return CrownOracle._bounds(self, lower, upper, label)

    def _bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int) -> torch.Tensor:
        net = self.tensors
        inter = intermediate_bounds(net, lo, hi, self.intermediate)
        relaxations = [relu_relaxation(lo_k, hi_k) for lo_k, hi_k in inter]
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        return concretize(backward(net, spec, net.depth - 1, relaxations), lo, hi)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        worst = self.margin_lower_bounds(lower, upper, label).min(axis=1)
        return [Answer(Verdict.VERIFIED, margin=float(m)) if m > 0
                else Answer(Verdict.UNKNOWN, margin=float(m), reason=f"{self.name} margin bound {m:.3g} <= 0")
                for m in worst]


class AlphaCrownOracle(CrownOracle):
    """alpha-CROWN: CROWN whose lower ReLU slopes (one per neuron, box and specification
    row) are optimised by ``steps`` Adam steps on the margin bounds.

    Every slope in [0, 1] gives a valid bound, and the best bound seen per row is kept
    (starting from CROWN's), so alpha-CROWN is never looser than CROWN. Intermediate
    (pre-ReLU) bounds are CROWN's. Stops early once every box is verified.
    """

    name = "alpha-crown"

    def __init__(self, network: Network, *, steps: int = 20, lr: float = 0.1, device: str = "cpu",
                 chunk_size: int = 256, intermediate: str = "crown", time_limit: float | None = None) -> None:
        super().__init__(network, device=device, chunk_size=chunk_size, intermediate=intermediate,
                         time_limit=time_limit)
        if steps < 0 or not lr > 0:
            raise OracleError("alpha-CROWN needs steps >= 0 and lr > 0")
        self.steps, self.lr = steps, lr

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.steps, "lr": self.lr}

    def differentiable_margin_bounds(self, lower: torch.Tensor, upper: torch.Tensor, label: int) -> torch.Tensor:
        """CROWN's margin bounds as a differentiable function of the box (float64 tensors
        ``(B, n)`` on the oracle's device): for searches that optimise a box by gradient."""
        return CrownOracle._bounds(self, lower, upper, label)

    def _bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int) -> torch.Tensor:
        net = self.tensors
        inter = intermediate_bounds(net, lo, hi, self.intermediate)
        base = [relu_relaxation(lo_k, hi_k) for lo_k, hi_k in inter]
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        best = concretize(backward(net, spec, net.depth - 1, base), lo, hi)
        if self.steps == 0 or not base or bool((best.min(dim=1).values > 0).all()):
            return best
        m = spec.shape[1]
        alphas = [r.lower_slope.unsqueeze(1).expand(-1, m, -1).clone().requires_grad_(True) for r in base]
        opt = Adam(alphas, lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                relax = [relu_relaxation(lo_k, hi_k, alpha=a) for (lo_k, hi_k), a in zip(inter, alphas)]
                value = concretize(backward(net, spec, net.depth - 1, relax), lo, hi)
                best = torch.maximum(best, value.detach())
                if bool((best.min(dim=1).values > 0).all()):
                    break
                opt.ascend(value.sum())
                with torch.no_grad():
                    for a in alphas:
                        a.clamp_(0.0, 1.0)
        return best
