"""``lirpa``: adapter for auto_LiRPA (>= 0.6) — IBP, CROWN or alpha-CROWN bounds.

auto_LiRPA is optional and is not on the package registry in a version that runs on
torch 2 (the registry's 0.3 needs torch < 1.13); install it from its source::

    git clone https://github.com/Verified-Intelligence/auto_LiRPA
    pip install --no-deps ./auto_LiRPA && pip install appdirs pyyaml graphviz packaging

(``--no-deps`` keeps the torch you have; auto_LiRPA 0.7 declares torch < 2.9 but runs
with 2.13.) The IR is handed to it as a float64 ``torch.nn.Sequential``.

auto_LiRPA does not round outward. Its final bound is therefore lowered by a bound of
the rounding error of any linear bound propagation on the box (the relative slack
times :func:`~oracles.bounds.term_magnitude`, from our own sound intermediate bounds;
``1e-5`` relative if it answers in float32). Its *intermediate* bounds decide which
ReLUs it takes as stable, and a rounding error there can make a live ReLU dead: a box
is answered UNKNOWN where our sound intermediate bounds put some ReLU input bound within
three rounding-error bounds of 0 (where any implementation's rounding could flip the
ReLU's phase). For ``crown`` and ``ibp`` this covers auto_LiRPA's intermediate bounds,
which are the same computation; with ``alpha-crown`` its optimised intermediate bounds
are tighter than ours, and a flip there stays possible in principle.

A network whose layers auto_LiRPA rewrites when it builds its bounded module (its graph
optimisation fuses layers that match an identity only up to ``torch.allclose``'s
tolerances) is refused (:class:`OracleError`): its bounds would be another network's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import ABS_SLACK, FOREIGN_REL_SLACK_FLOOR

from .base import Answer, FloatArray, Oracle, Verdict
from .bounds import NetworkTensors, input_scale, intermediate_bounds, margin_spec, relu_relaxation, term_magnitude
from .crown import resolve_device

METHODS = {"ibp": "IBP", "crown": "CROWN", "alpha-crown": "alpha-CROWN"}


@contextlib.contextmanager
def _float64_default():
    """auto_LiRPA allocates some buffers with torch's default dtype; keep them float64
    while it runs (restored afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _rewritten(bounded: Any, module: torch.nn.Sequential) -> str:
    """What auto_LiRPA changed in the network's layers when it built ``bounded`` (``""``:
    nothing). Its graph optimisation fuses Linear -> ReLU -> Linear -> ReLU into one
    Linear -> ReLU where the weights match ``ReLU(ReLU(y) - ReLU(-y) + b) = ReLU(y + b)``
    only up to ``torch.allclose``'s tolerances (relative 1e-5) and drops entries below
    1e-8: another network, whose bounds prove nothing of this one (found by an adversarial
    review: a margin of -4.9e-6 was verified)."""
    from collections import Counter

    expected = Counter("BoundLinear" if isinstance(m, torch.nn.Linear) else "BoundRelu" for m in module)
    found = Counter(type(n).__name__ for n in bounded.nodes())
    fused = sorted(n.name for n in bounded.nodes() if "/optimized" in n.name)
    differ = [f"{k}: {found[k]} for {v}" for k, v in expected.items() if found[k] != v]
    return "; ".join(differ + ([f"fused nodes {', '.join(fused[:3])}"] if fused else []))


def lirpa_available() -> bool:
    try:
        import auto_LiRPA  # noqa: F401
    except Exception:  # ImportError, or an incompatible install failing at import
        return False
    return True


class LirpaOracle(Oracle):
    """Bounds from auto_LiRPA's ``BoundedModule.compute_bounds`` (see module docstring)."""

    name = "lirpa"
    sound = True
    complete = False
    batched = True
    queries = frozenset({"verify"})

    def __init__(self, network: Network, *, method: str = "crown", alpha_steps: int = 20, device: str = "cpu",
                 time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise OracleError(f"lirpa method must be one of {', '.join(METHODS)}, not {method!r}")
        if isinstance(alpha_steps, bool) or not isinstance(alpha_steps, int) or alpha_steps < 1:
            raise OracleError(f"lirpa alpha_steps must be an integer >= 1, not {alpha_steps!r}")
        try:
            from auto_LiRPA import BoundedModule
        except Exception as exc:
            raise OracleError("the lirpa oracle needs auto_LiRPA >= 0.6 installed from its source "
                              "(see README, 'Oracles')") from exc
        logging.getLogger("auto_LiRPA").setLevel(logging.WARNING)
        self.method, self.alpha_steps = METHODS[method.lower()], alpha_steps
        self._overran = False  # the last margin_lower_bounds call took longer than time_limit
        self.device = resolve_device(device)
        network = self.network  # a graph's chain expansion (see oracles.chain)
        self.module = network.to_torch(torch.float64, self.device)
        self.tensors = NetworkTensors.of(network, self.device)
        dummy = torch.zeros(1, network.n_inputs, dtype=torch.float64, device=self.device)
        with _float64_default():
            self.bounded = BoundedModule(self.module, dummy, device=str(self.device), verbose=0,
                                         bound_opts={"optimize_bound_args": {"iteration": alpha_steps}})
        changed = _rewritten(self.bounded, self.module)
        if changed:
            raise OracleError(f"auto_LiRPA rewrote the network when it built its bounded module ({changed}): its "
                              "bounds would be those of another network; use crown or alpha-crown")

    def settings(self) -> dict[str, Any]:
        import auto_LiRPA

        return {**super().settings(), "method": self.method, "alpha_steps": self.alpha_steps,
                "device": str(self.device), "auto_LiRPA": auto_LiRPA.__version__}

    def margin_lower_bounds(self, lower: FloatArray, upper: FloatArray, label: int) -> FloatArray:
        """auto_LiRPA's lower bounds of ``logit_label - logit_j`` (``j != label``), shape
        ``(B, n_classes - 1)``, minus the rounding slack."""
        from auto_LiRPA import BoundedTensor, PerturbationLpNorm

        lower, upper = self._check_query(lower, upper, label, finite=False)
        if not len(lower):
            return np.empty((0, self.network.n_classes - 1))
        lo = torch.tensor(lower, dtype=torch.float64, device=self.device)
        hi = torch.tensor(upper, dtype=torch.float64, device=self.device)
        x = BoundedTensor((lo + hi) / 2, PerturbationLpNorm(x_L=lo, x_U=hi))
        spec = margin_spec(self.network.n_classes, label, len(lower), torch.float64, self.device).contiguous()
        # alpha-CROWN's steps stop at the time limit (every step's bound holds); auto_LiRPA
        # prints that it stopped, which must not reach our standard output
        self.bounded.bound_opts["optimize_bound_args"]["max_time"] = \
            1e9 if self.time_limit is None else self.time_limit
        started = time.perf_counter()
        with _float64_default(), contextlib.redirect_stdout(io.StringIO()):
            lb, _ = self.bounded.compute_bounds(x=(x,), method=self.method, C=spec, bound_upper=False)
        # only alpha-CROWN's steps stop at the limit (its bound then is one of fewer steps)
        self._overran = self.method == "alpha-CROWN" and self.time_limit is not None and \
            time.perf_counter() - started > self.time_limit
        out = lb.detach().to(torch.float64).cpu().numpy()
        error = self._rounding_error(lo, hi, spec)
        if lb.dtype != torch.float64:
            error = error + 1e-5 * (1.0 + np.abs(out))
        return np.where(np.isfinite(out) & np.isfinite(error), out - error, -np.inf)

    def _rounding_error(self, lo: torch.Tensor, hi: torch.Tensor, spec: torch.Tensor) -> np.ndarray:
        """A bound of the rounding error of auto_LiRPA's margin bounds (``(B, m)``), ``inf``
        for boxes where a ReLU input bound lies within rounding distance of 0.

        Relative: ``rel`` (at least :data:`~parallelepipedonn.tolerances.FOREIGN_REL_SLACK_FLOOR`:
        auto_LiRPA's intermediate bounds are not rounded outward) times the terms' magnitude
        (:func:`term_magnitude`, through the neurons dead in our bounds too: auto_LiRPA's
        looser intermediate bounds may leave some of them unstable, with slopes in
        ``[0, 1]``). Absolute: a
        coefficient of the backward pass that is a sum of products below the normal range is
        off by up to ``tiny`` (``4 (widest + 2)`` subnormal spacings), an error the values
        it multiplies scale: ``tiny`` times ``sum s + 1`` per layer (``s`` the layer's
        input magnitudes on the box, ``+ 1`` its bias), as crown charges it."""
        t = self.tensors
        rel = max(t.rel, FOREIGN_REL_SLACK_FLOOR)
        with torch.no_grad():
            bounds = intermediate_bounds(t, lo, hi)
            scales = [input_scale(lo, hi)] + [relu_relaxation(lk, uk).scale for lk, uk in bounds]
            # (B, depth): tiny times each layer's sum first (the sums of huge values may overflow)
            underflow = torch.cumsum(torch.stack([t.tiny * (s.sum(dim=-1) + 1) for s in scales], dim=-1), dim=-1)
            ambiguous = torch.zeros(lo.shape[0], dtype=torch.bool, device=lo.device)
            for k, (lk, uk) in enumerate(bounds):
                eye = torch.eye(lk.shape[1], dtype=lo.dtype, device=lo.device).expand(lo.shape[0], -1, -1)
                err = 3 * (rel * term_magnitude(t, eye, lo, hi, bounds, layer=k, through_dead=True)
                           + underflow[:, k, None])
                near = (lk.abs() < err) | (uk.abs() < err)
                ambiguous = ambiguous | near.any(dim=-1)
            error = rel * term_magnitude(t, spec, lo, hi, bounds, through_dead=True) + underflow[:, -1, None] \
                + ABS_SLACK
            error = torch.where(ambiguous.unsqueeze(-1), torch.full_like(error, torch.inf), error)
        return error.cpu().numpy()

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        worst = self.margin_lower_bounds(lower, upper, label).min(axis=1)
        late = " (time limit reached)" if self._overran else ""
        return [Answer(Verdict.VERIFIED, margin=float(m)) if m > 0
                else Answer(Verdict.UNKNOWN, margin=float(m), timed_out=self._overran,
                            reason=f"auto_LiRPA {self.method} bound {m:.3g} <= 0{late}")
                for m in worst]
