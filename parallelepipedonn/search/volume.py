"""Volume-based comparison method: gradient ascent on the log-volume under a CROWN margin
constraint, then verified.

This is the volume-oriented approach the apothem algorithms are compared with: it
maximises ``sum_i log(upper_i - lower_i)`` and says nothing about how close to ``x`` the
box's faces come. The box is parameterised around ``x`` (``lower = x - softplus(a)``,
``upper = x + softplus(b)``, clipped to the domain); a penalty keeps the oracle's
differentiable margin bound above a small target. The final box is then asked of the
oracle; if it is not verified, it is shrunk towards ``x`` (by bisection on the scale)
until it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from oracles.adam import Adam
from oracles.base import Oracle, Verdict

from ..box import Box
from ..errors import ConfigError
from .base import OracleLedger, Problem, SearchResult
from .box import TIME_LIMIT, _result


@dataclass(frozen=True)
class VolumeGradient:
    """Maximise log-volume by gradient steps through the oracle's margin bound (see module
    docstring). Needs an oracle with ``differentiable_margin_bounds`` (crown, alpha-crown)."""

    precision: float = 1e-4
    steps: int = 300
    lr: float = 0.05
    penalty: float = 100.0
    target: float = 1e-2
    name: str = "volume-gradient"

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "steps": self.steps, "lr": self.lr, "penalty": self.penalty,
                "target": self.target}

    def check_oracle(self, oracle: Oracle) -> None:
        """Raises :class:`ConfigError` for an oracle without a differentiable margin bound."""
        if getattr(oracle, "differentiable_margin_bounds", None) is None:
            raise ConfigError(f"{self.name} needs a differentiable oracle (crown or alpha-crown), not {oracle.name!r}")

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        """Stopped by the problem's deadline: the gradient steps end there, and the box
        reached is shrunk until verified while time is left (its reason says so)."""
        self.check_oracle(oracle)
        bounds_fn = oracle.differentiable_margin_bounds  # type: ignore[attr-defined]
        ledger = OracleLedger(problem, oracle)
        dom = problem.domain
        x = torch.tensor(problem.x, dtype=torch.float64)
        d_lo, d_hi = torch.tensor(dom.lower), torch.tensor(dom.upper)
        raw = torch.full((2, x.numel()), math.log(math.expm1(1e-3)), dtype=torch.float64, requires_grad=True)
        opt = Adam([raw], lr=self.lr)

        def box_of(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            widths = torch.nn.functional.softplus(r)
            return torch.maximum(d_lo, x - widths[0]), torch.minimum(d_hi, x + widths[1])

        with torch.enable_grad():
            for _ in range(self.steps):
                if problem.expired:
                    break
                lo, hi = box_of(raw)
                margin = bounds_fn(lo[None], hi[None], problem.label).min()
                objective = torch.log(hi - lo + 1e-6).sum() + self.penalty * torch.clamp(margin - self.target, max=0)
                opt.ascend(objective)
        with torch.no_grad():
            lo, hi = (t.numpy() for t in box_of(raw))
        box = self._shrink_until_verified(problem, ledger, lo, hi)
        if problem.expired:
            reason = TIME_LIMIT if box is not None else "time limit reached before any box was verified"
        else:
            reason = "" if box is not None else "no scaled box verified"
        return _result(problem, ledger, box, falsifier, reason)

    def _shrink_until_verified(self, problem: Problem, ledger: OracleLedger, lo, hi) -> Box | None:
        """The largest ``t`` in [0, 1] (to ``precision``) whose box ``x + t (box - x)`` verifies."""
        x = problem.x

        def scaled(t: float) -> tuple[np.ndarray, np.ndarray]:
            # the box itself at t = 1; else clipped to it (x + t (lo - x) may round past lo), so in the domain
            if t == 1.0:
                return lo, hi
            return np.clip(x + t * (lo - x), lo, x), np.clip(x + t * (hi - x), x, hi)

        if ledger.ask(*[v[None] for v in scaled(1.0)])[0].verdict is Verdict.VERIFIED:
            return Box(*scaled(1.0))
        good, bad = None, 1.0
        low = 0.0
        while bad - low > self.precision and not problem.expired:
            t = (low + bad) / 2
            if not low < t < bad:  # a precision below the spacing of floats here
                break
            if ledger.ask(*[v[None] for v in scaled(t)])[0].verdict is Verdict.VERIFIED:
                good = low = t
            else:
                bad = t
        if good is None:
            return Box.point(x) if ledger.ask(x[None], x[None])[0].verdict is Verdict.VERIFIED else None
        return Box(*scaled(good))
