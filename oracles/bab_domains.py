"""The sub-domains of branch and bound (:mod:`oracles.bab`): batches of phase splits with
their warm-start parameters and proven ReLU input bounds, what bounding a batch gives, and
the trees (one per class the root cannot rule out) they belong to. Data only: the bounding,
branching and leaf decisions are :class:`oracles.bab.BabOracle`'s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .graph_bounds import NodeBounds

Tensor = torch.Tensor

#: The dtype the sub-domains' slopes and multipliers are kept in (any values give sound
#: bounds: they only choose the relaxation; float32 halves the frontier's memory).
STORE = torch.float32

@dataclass
class Nodes:
    """A batch of sub-domains: per hidden layer (ReLU node of a graph), phases in
    {-1, 0, +1} (``(N, n_i)``), the lower ReLU slopes and split multipliers its bound
    starts from (its parent's best, or the root's slopes; ``(N, n_i)``), the tree
    (class) each belongs to (``(N,)``), proven bounds of its ReLU inputs (its parent's
    refined ones, or its tree's; ``(N, n_i)`` in :data:`STORE`, rounded outward) and
    ``since`` (``(N,)``), the first layer whose bounds its newest split may tighten."""

    phases: list[Tensor]
    alphas: list[Tensor]
    betas: list[Tensor]
    tree: Tensor
    lower: list[Tensor]
    upper: list[Tensor]
    since: Tensor

    def __len__(self) -> int:
        return int(self.tree.shape[0])

    def take(self, idx: Tensor) -> Nodes:
        return Nodes(*([t[idx] for t in ts] for ts in (self.phases, self.alphas, self.betas)), self.tree[idx],
                      [t[idx] for t in self.lower], [t[idx] for t in self.upper], self.since[idx])

    @staticmethod
    def cat(parts: Sequence[Nodes]) -> Nodes:
        def join(name: str) -> list[Tensor]:
            return [torch.cat([getattr(p, name)[i] for p in parts]) for i in range(len(parts[0].phases))]

        return Nodes(join("phases"), join("alphas"), join("betas"), torch.cat([p.tree for p in parts]),
                      join("lower"), join("upper"), torch.cat([p.since for p in parts]))


def stored(bounds: Sequence[tuple[Tensor, Tensor]], dtype: torch.dtype = STORE) -> tuple[list[Tensor], list[Tensor]]:
    """Bounds in ``dtype``, rounded outward (they still hold)."""
    lower, upper = [], []
    for lb, ub in bounds:
        lo, hi = lb.to(dtype), ub.to(dtype)
        lower.append(torch.where(lo.to(lb.dtype) > lb, torch.nextafter(lo, torch.full_like(lo, -math.inf)), lo))
        upper.append(torch.where(hi.to(ub.dtype) < ub, torch.nextafter(hi, torch.full_like(hi, math.inf)), hi))
    return lower, upper


@dataclass(frozen=True)
class Bounded:
    """What bounding a batch of sub-domains gives: per sub-domain, the proven lower bound
    of its margin (``(N,)``), the vertex of its box minimising the bound, branching scores
    per layer (``(N, n_i)``), and the slopes and multipliers of its best bound."""

    value: Tensor
    corner: Tensor
    scores: list[Tensor]
    alphas: list[Tensor]
    betas: list[Tensor]
    bounds: list[tuple[Tensor, Tensor]]


@dataclass
class Trees:
    """Per tree (one class ``j`` each): its (shrunk) box and ReLU input bounds, stacked."""

    target: Tensor  # (T,) classes
    lower: Tensor  # (T, n)
    upper: Tensor  # (T, n)
    bounds: list[tuple[Tensor, Tensor]]  # per layer (T, n_i) lower and upper
    unstable: list[Tensor]  # per layer (T, n_i) bool
    scale: list[float]  # per tree, the margin's scale for the LP error model (term_magnitude)
    slopes: list[Tensor]  # per layer (T, n_i): the root's lower ReLU slopes, to start from
    leaf_lps: dict[int, list] = field(default_factory=dict)  # tree -> [encoding, solver]
    graph_bounds: NodeBounds | None = None  # a graph: the box's node bounds (every tree's box)
    #: a graph: per ReLU node, the flat positions of the box's unstable neurons, the only
    #: ones ``bounds``, ``unstable``, ``slopes`` and the sub-domains keep (the others' are exact)
    columns: list[Tensor] | None = None
    graph_iterate: NodeBounds | None = None  # a graph: graph_bounds in the iterates' dtype (prove nothing)
