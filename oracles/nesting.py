"""Nested boxes, for CROWN's bisection along a search's nested cubes
(:meth:`oracles.crown.CrownOracle.verify`): their order (:func:`nested_chain`), the
estimate of where the margin bound crosses zero (:func:`parabola_root`), and the memory
of the node bounds of boxes bounded before, whose bounds hold on every box inside them
(:class:`Supersets`). Heuristics of which boxes are bounded, and bounds of a superset
reused on a subset (sound: a bound over a box holds over any box inside it)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from .base import FloatArray


def parabola_root(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], default: float) -> float:
    """Where the parabola through the points ``a``, ``b``, ``c`` (``(width, bound)``, ``a``'s
    bound > 0 >= ``b``'s) crosses zero between ``a`` and ``b`` (bisected), or ``default``
    where the three widths are not distinct."""
    (wa, ma), (wb, mb), (wc, mc) = a, b, c
    if len({wa, wb, wc}) < 3:
        return default
    ab, bc = (mb - ma) / (wb - wa), (mc - mb) / (wc - wb)
    abc = (bc - ab) / (wc - wa)

    def f(w: float) -> float:
        return ma + ab * (w - wa) + abc * (w - wa) * (w - wb)

    lo, hi = wa, wb  # f(lo) = ma > 0 >= mb = f(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def nested_chain(lower: FloatArray, upper: FloatArray, boxes: np.ndarray) -> list[int] | None:
    """``boxes`` (indices) from the smallest to the largest if each lies inside the next
    (nested cubes of a search), else None."""
    order = sorted(boxes, key=lambda i: float((upper[i] - lower[i]).sum()))
    for a, b in itertools.pairwise(order):
        if not ((lower[b] <= lower[a]).all() and (upper[a] <= upper[b]).all()):
            return None
    return [int(i) for i in order]


class Supersets:
    """The node bounds that CROWN tightened for the boxes bounded last (at most ``boxes``
    boxes and ``numbers`` numbers, the most recent kept): :meth:`prior` gives each new box
    those of the smallest remembered box containing it (``-inf`` / ``inf`` where none)."""

    def __init__(self, gt: Any, method: str, boxes: int = 64, numbers: int = 2**24) -> None:
        from .graph_bounds import tightened

        self.nodes = tightened(gt, method)
        per_box = sum(2 * gt.graph.nodes[k].numel for k in self.nodes)
        self.capacity = min(boxes, numbers // max(1, per_box))
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.bounds: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = []

    def prior(self, lower: FloatArray, upper: FloatArray) -> dict[int, tuple[torch.Tensor, torch.Tensor]] | None:
        if not self.nodes or not self.lower:
            return None
        best = np.full(len(lower), -1)
        width = np.full(len(lower), np.inf)
        for i, (lo, hi) in enumerate(zip(self.lower, self.upper)):
            inside = (lo <= lower).all(axis=1) & (upper <= hi).all(axis=1)
            better = inside & (float((hi - lo).sum()) < width)
            best[better], width[better] = i, float((hi - lo).sum())
        if (best < 0).all():
            return None
        out = {}
        for k in self.nodes:
            ref = self.bounds[0][k][0]
            lo_k = ref.new_full((len(lower), *ref.shape), -torch.inf)
            hi_k = ref.new_full((len(lower), *ref.shape), torch.inf)
            for b in np.flatnonzero(best >= 0):
                lo_k[b], hi_k[b] = self.bounds[best[b]][k]
            out[k] = (lo_k, hi_k)
        return out

    def remember(self, lower: FloatArray, upper: FloatArray, nb: Any) -> None:
        if not self.nodes or self.capacity < 1:
            return
        valid = ~nb.invalid.cpu().numpy()
        for b in np.flatnonzero(valid)[-self.capacity:]:
            self.lower.insert(0, lower[b].copy())
            self.upper.insert(0, upper[b].copy())
            self.bounds.insert(0, {k: (nb.lower[k][b].clone(), nb.upper[k][b].clone()) for k in self.nodes})
        del self.lower[self.capacity:], self.upper[self.capacity:], self.bounds[self.capacity:]
