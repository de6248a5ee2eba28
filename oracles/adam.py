"""A minimal Adam optimiser (gradient ascent) for the optimised bounds (alpha-CROWN,
branch and bound's slopes and Lagrange multipliers, the volume search): it only *chooses*
parameters, each of which gives a sound bound whatever its value."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


class Adam:
    """A minimal Adam optimiser (gradient *ascent*) on a list of tensors.

    torch.optim.Adam would do, but constructing one imports torch's compiler stack
    (seconds on first use), which dominates a sub-second verification.
    """

    def __init__(self, params: Sequence[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, scales: Sequence[float] | None = None) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        #: per parameter, its learning rate over ``lr`` (1 for each if not given)
        self.scales = [1.0] * len(self.params) if scales is None else list(scales)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def ascend(self, objective: Tensor) -> None:
        """One step that increases ``objective`` (a scalar); none where no parameter
        reaches it (e.g. every ReLU node of a graph off the path to its output)."""
        self.t += 1
        if not objective.requires_grad:
            return
        grads = torch.autograd.grad(objective, self.params, allow_unused=True)
        b1, b2 = self.betas
        with torch.no_grad():
            for p, g, m, v, c in zip(self.params, grads, self.m, self.v, self.scales):
                if g is None:
                    continue
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = c * self.lr * (m / (1 - b1 ** self.t)) / ((v / (1 - b2 ** self.t)).sqrt() + self.eps)
                p.add_(step)
