"""CROWN: sound, incomplete, batched linear bound propagation (VERIFIED or UNKNOWN)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import unit_roundoff

from .alpha import AlphaSettings, optimize_bounds
from .base import Answer, ClassBox, FloatArray, Oracle, Verdict
from .chain import chain_network
from .bounds import (
    NetworkTensors,
    backward,
    bounds_valid,
    box_tensors,
    concretize,
    input_scale,
    intermediate_bounds,
    margin_spec,
    relu_relaxation,
    sound_kernels,
)

#: The dtypes bound propagation runs in (``float32`` for GPUs; the slack follows the dtype).
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a clear error if CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OracleError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


class CrownOracle(Oracle):
    """CROWN bound propagation over the IR (float64 or float32, any torch device; every
    bound moved outward by its rounding error, see :mod:`oracles.bounds`).

    A box is VERIFIED iff the proven lower bound of ``logit_c - logit_j`` is > 0 for every
    ``j != c``; otherwise UNKNOWN (with the bound as ``margin``).

    ``network`` is a chain :class:`Network` or a :class:`~parallelepipedonn.graph.Graph`:
    a graph that is a chain runs the chain code; any other graph (convolutions kept as
    convolutions, residual connections) runs :mod:`oracles.graph_bounds` for
    :meth:`verify` and :meth:`margin_lower_bounds`. ``class_extremes`` runs on the
    graph's chain expansion (:mod:`oracles.chain`, recorded in :meth:`settings`); a graph
    without one (residual) answers ``verify`` only. alpha-CROWN reads chains only: it is
    bound to the chain expansion of a graph, or refuses a residual one.
    """

    name = "crown"
    sound = True
    complete = False
    batched = True
    queries = frozenset({"verify", "class_extremes"})  # alpha-crown too
    reads_graphs = True

    def __init__(self, network: Network, *, device: str = "cpu", chunk_size: int = 256,
                 intermediate: str = "crown", dtype: str = "float64", time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        if intermediate not in ("crown", "ibp"):
            raise OracleError(f"intermediate bounds must be 'crown' or 'ibp', not {intermediate!r}")
        if chunk_size < 1:
            raise OracleError("chunk_size must be >= 1")
        if dtype not in DTYPES:
            raise OracleError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.device = resolve_device(device)
        self.chunk_size = chunk_size
        self.intermediate = intermediate
        self.dtype = dtype
        self.graph_tensors: Any = None
        network = self.network
        if isinstance(network, Network) or network.as_network() is not None:
            self.tensors = NetworkTensors.of(network, self.device, DTYPES[dtype])
        else:  # a DAG with convolutions or residual connections: oracles.graph_bounds
            from parallelepipedonn.graph_chain import is_relu_chain

            from .graph_bounds import GraphTensors

            self.graph_tensors = GraphTensors.of(network, self.device, DTYPES[dtype])
            self.tensors = None  # type: ignore[assignment]
            if not is_relu_chain(network):  # no chain expansion: no class extremes
                self.queries = frozenset({"verify"})  # type: ignore[misc]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "device": str(self.device), "intermediate": self.intermediate,
                "dtype": self.dtype}

    def margin_lower_bounds(self, lower: FloatArray, upper: FloatArray, label: int) -> FloatArray:
        """Proven lower bounds of ``logit_label - logit_j`` for every ``j != label`` over each
        box: shape ``(B, n_classes - 1)`` (classes in increasing order, ``label`` skipped)."""
        out = []
        for start in range(0, len(lower), self.chunk_size):
            lo, hi = box_tensors(lower[start:start + self.chunk_size], upper[start:start + self.chunk_size],
                                 self._dtype, self.device)
            with torch.no_grad(), sound_kernels(self.device):
                out.append(self._bounds(lo, hi, label).to(torch.float64).cpu().numpy())
        return np.concatenate(out)

    def differentiable_margin_bounds(self, lower: torch.Tensor, upper: torch.Tensor, label: int) -> torch.Tensor:
        """CROWN's margin bounds as a differentiable function of the box (tensors ``(B, n)``
        on the oracle's device, converted to its dtype): for searches that optimise a box
        by gradient (a box they find is verified again by :meth:`verify`)."""
        return CrownOracle._bounds(self, lower.to(self._dtype), upper.to(self._dtype), label)

    @property
    def _dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def _bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int) -> torch.Tensor:
        if self.graph_tensors is not None:
            from .graph_bounds import margin_lower_bounds

            return margin_lower_bounds(self.graph_tensors, lo, hi, label, self.intermediate)
        net = self.tensors
        inter = intermediate_bounds(net, lo, hi, self.intermediate)
        relaxations = [relu_relaxation(lo_k, hi_k) for lo_k, hi_k in inter]
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        return concretize(backward(net, spec, net.depth - 1, relaxations, input_scale(lo, hi)), lo, hi)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        worst = self.margin_lower_bounds(lower, upper, label).min(axis=1)
        return [Answer(Verdict.VERIFIED, margin=float(m)) if m > 0
                else Answer(Verdict.UNKNOWN, margin=float(m), reason=f"{self.name} margin bound {m:.3g} <= 0")
                for m in worst]

    def class_extremes(self, label: int, region: Box, candidates: Any = (), *, rounds: int = 100,
                       tolerance: float = 1e-7, **_: Any) -> ClassBox:
        """A sound outer box of ``{x in region : class(x) = label}`` (ties included) by
        bound propagation: every point of the class satisfies CROWN's linear upper bounds
        ``logit_label - logit_j <= a_j @ x + b_j`` (valid on the current box), hence
        ``a_j @ x + b_j >= 0``; each such constraint bounds each coordinate given the
        box's other coordinates (interval reasoning, rounded outward). Repeated on the
        shrinking box until it moves less than ``tolerance``. ``candidates`` confirmed in
        the class mark the bounds they attain as exact."""
        self.network.check_label(label)
        if self.graph_tensors is not None:  # on the graph's chain expansion (recorded), or refused
            chain, self.bridge = chain_network(self.network, f"{self.name} (class extremes)")
            inner = CrownOracle(chain, device=str(self.device), dtype=self.dtype)
            inner.model = self.model
            try:
                return inner.class_extremes(label, region, candidates, rounds=rounds, tolerance=tolerance)
            finally:
                self.stats.calls += inner.stats.calls
                self.stats.seconds += inner.stats.seconds
        start = time.perf_counter()
        net = self.tensors
        lo, hi = (t[None] for t in box_tensors(region.lower, region.upper, net.dtype, self.device))
        spec = -margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)  # rows e_j - e_label
        u = unit_roundoff(net.dtype)
        empty = False
        with torch.no_grad():
            for _ in range(rounds):
                inter = intermediate_bounds(net, lo, hi)
                if not bool(bounds_valid(inter).all()):
                    break  # bounds overflow: the current box stays the (sound) answer
                relax = [relu_relaxation(a, b) for a, b in inter]
                bound = backward(net, spec, net.depth - 1, relax, input_scale(lo, hi))
                # logit_j - logit_label >= coef @ x + const - error, so on the class region
                # 0 <= margin <= -(coef @ x + const) + error
                a, b = -bound.coef[0], (-bound.const + bound.error)[0]  # class points: a @ x + b >= 0
                top = torch.maximum(a * lo, a * hi)  # (m, n): each term's largest value on the box
                rest = top.sum(dim=1, keepdim=True) - top  # the other coordinates' largest sum
                # a_i x_i >= -b - rest, lowered by the rounding error of these sums
                need = -b[:, None] - rest - (net.rel * (top.abs().sum(dim=1, keepdim=True) + b.abs()[:, None])
                                             + net.tiny)
                ratio = need / torch.where(a == 0, torch.ones_like(a), a)
                widen = (4 * u + 1e-12) * ratio.abs() + 1e-12
                new_lo = torch.where(a > 0, ratio - widen, torch.full_like(ratio, -math.inf)).max(dim=0).values
                new_hi = torch.where(a < 0, ratio + widen, torch.full_like(ratio, math.inf)).min(dim=0).values
                if bool(bound.invalid.any()) or bool(torch.isnan(new_lo).any() | torch.isnan(new_hi).any()):
                    break
                new_lo, new_hi = torch.maximum(lo[0], new_lo), torch.minimum(hi[0], new_hi)
                if bool((new_lo > new_hi).any()):
                    empty = True
                    break
                moved = float(torch.maximum(new_lo - lo[0], hi[0] - new_hi).max())
                lo, hi = new_lo[None], new_hi[None]
                if moved < tolerance:
                    break
        n = self.network.n_inputs
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start
        if empty:
            return ClassBox(region.upper.copy(), region.lower.copy(), np.ones(n, bool), np.ones(n, bool),
                            np.zeros((0, n)), True)
        lower = np.maximum(lo[0].to(torch.float64).cpu().numpy(), region.lower)
        upper = np.minimum(hi[0].to(torch.float64).cpu().numpy(), region.upper)
        pts = np.asarray(candidates, dtype=np.float64).reshape(-1, n) if len(candidates) else np.zeros((0, n))
        pts = pts[region.contains_points(pts)]
        witnesses = pts[self.network.margins(pts, label) >= 0] if len(pts) else pts
        exact_lo = (witnesses <= lower).any(axis=0) if len(witnesses) else np.zeros(n, bool)
        exact_hi = (witnesses >= upper).any(axis=0) if len(witnesses) else np.zeros(n, bool)
        return ClassBox(lower, upper, exact_lo, exact_hi, witnesses)


class AlphaCrownOracle(CrownOracle):
    """alpha-CROWN (:mod:`oracles.alpha`): CROWN whose lower ReLU slopes — those of the
    final specification's backward pass and of every intermediate bound's own pass, one
    per box, row and neuron — are optimised jointly by at most ``steps`` Adam steps on the
    margin bounds (``intermediate="ibp"``: the final pass's only, on interval bounds).

    Every slope in [0, 1] gives a valid bound; the bounds reported are one sound pass with
    the best slopes found, never below CROWN's. Stops early once every box is verified,
    when the bounds stop improving, or at the time limit.
    """

    name = "alpha-crown"
    reads_graphs = False

    def __init__(self, network: Network, *, steps: int = 20, lr: float = 0.3, device: str = "cpu",
                 chunk_size: int = 256, intermediate: str = "crown", time_limit: float | None = None) -> None:
        super().__init__(network, device=device, chunk_size=chunk_size, intermediate=intermediate,
                         time_limit=time_limit)
        if steps < 0 or not lr > 0:
            raise OracleError("alpha-CROWN needs steps >= 0 and lr > 0")
        self.steps, self.lr = steps, lr

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.steps, "lr": self.lr}

    def _bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int) -> torch.Tensor:
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        settings = AlphaSettings(steps=self.steps, lr=self.lr, intermediate=self.intermediate == "crown",
                                 deadline=deadline)
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        return optimize_bounds(self.tensors, lo, hi, spec, settings, reference_method=self.intermediate).final
