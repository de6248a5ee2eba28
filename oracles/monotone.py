"""Monotone inputs: bounds of the input gradient of a chain network's linear function of its
logits over every activation pattern a box's ReLU input bounds allow, and the box shrunk
along the inputs where that gradient has one sign (the function's minimum over the box —
and, with an anchor, the point of a sublevel set nearest to it — stays in the shrunk
box). Read by branch and bound and milp; the bounds are moved outward by their rounding
error (:mod:`oracles.bounds`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .bounds import NetworkTensors, bounds_valid, intermediate_bounds

Tensor = torch.Tensor


def gradient_bounds(net: NetworkTensors, bounds: Sequence[tuple[Tensor, Tensor]], row: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds of the input gradient of ``row @ logits`` over every activation pattern the
    ReLU input bounds allow (stable neurons fixed, unstable ones 0 or 1). ``bounds`` are
    ``(1, n_i)`` tensors for one box; returns two ``(n_input,)`` tensors, moved outward by
    their rounding error (the magnitude of their terms, ``|row| |W| ...``, times the
    relative slack, once per layer); ``(-inf, inf)`` where anything is not finite."""
    g_lo = g_hi = row @ net.weights[-1]
    g_mag = row.abs() @ net.abs_weights[-1]
    for i in range(net.depth - 2, -1, -1):
        lb, ub = bounds[i][0][0], bounds[i][1][0]
        active, unstable = lb >= 0, (lb < 0) & (ub > 0)
        g_lo = torch.where(active, g_lo, torch.where(unstable, g_lo.clamp(max=0), torch.zeros_like(g_lo)))
        g_hi = torch.where(active, g_hi, torch.where(unstable, g_hi.clamp(min=0), torch.zeros_like(g_hi)))
        g_mag = torch.where(active | unstable, g_mag, torch.zeros_like(g_mag)) @ net.abs_weights[i]
        w = net.weights[i]
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        g_lo, g_hi = g_lo @ wp + g_hi @ wn, g_hi @ wp + g_lo @ wn
    err = net.depth * net.rel * g_mag + net.tiny
    ok = torch.isfinite(g_lo) & torch.isfinite(g_hi) & torch.isfinite(err)
    if bounds:
        ok = ok & bool(bounds_valid(bounds).all())
    return (torch.where(ok, g_lo - err, torch.full_like(g_lo, -torch.inf)),
            torch.where(ok, g_hi + err, torch.full_like(g_hi, torch.inf)))


def fix_monotone_inputs(net: NetworkTensors, lower: Tensor, upper: Tensor, row: Tensor,
                        max_rounds: int = 20, deadline: float = math.inf
                        ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """Shrink the box ``[lower, upper]`` (``(1, n)``) without changing the minimum of
    ``row @ logits`` over it.

    Where the gradient bounds show that the function only increases (decreases) along
    input ``i`` on the whole box — it is continuous and piecewise linear, and every piece
    a segment parallel to axis ``i`` crosses has a slope of that sign — its minimum has
    ``x_i`` at the lower (upper) end, so the coordinate is fixed there. Fixing shrinks the
    box, which can make more neurons stable and more inputs monotone: repeated until
    nothing changes. Returns the new box and its ReLU input bounds. ``deadline``: as
    :func:`~oracles.bounds.intermediate_bounds`' (:class:`~oracles.bounds.BoundsTimedOut`).
    """
    lo, hi, bounds, _ = shrink_monotone(net, lower, upper, row, None, max_rounds, deadline)
    return lo, hi, bounds


def shrink_monotone(net: NetworkTensors, lower: Tensor, upper: Tensor, row: Tensor, anchor: Tensor | None,
                    max_rounds: int = 20, deadline: float = math.inf
                    ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]], Tensor]:
    """:func:`fix_monotone_inputs` with an ``anchor`` point of the box: the end of a
    monotone coordinate's range on the side where the function is larger moves to the
    anchor's coordinate (to the other end when ``anchor`` is ``None``). Moving a point of
    the box along such a coordinate towards the smaller side lowers the function and
    does not move it further from the anchor, so every sublevel set's point nearest to
    the anchor (in any norm that is monotone in each coordinate's distance) has a
    counterpart in the shrunk box at no greater distance. Also returns the direction of
    each coordinate found monotone (+1 increasing, -1 decreasing, 0 neither). Nothing is
    fixed where the gradient bounds are not finite. ``deadline``: as
    :func:`~oracles.bounds.intermediate_bounds`'."""
    lo, hi = lower, upper
    direction = torch.zeros_like(lower[0], dtype=torch.int8)
    bounds = intermediate_bounds(net, lo, hi, deadline=deadline)
    for _ in range(max_rounds):
        g_lo, g_hi = gradient_bounds(net, bounds, row)
        up_end = hi if anchor is None else torch.minimum(hi, torch.maximum(lo, anchor))
        low_end = lo if anchor is None else torch.maximum(lo, torch.minimum(hi, anchor))
        inc = (g_lo > 0) & (hi > lo)[0]  # increasing along i: minimum towards the lower end
        dec = (g_hi < 0) & (hi > lo)[0]
        new_lo, new_hi = torch.where(dec, up_end, lo), torch.where(inc, low_end, hi)
        one = torch.ones_like(direction)
        direction = torch.where(inc, one, torch.where(dec, -one, direction))
        if torch.equal(new_lo, lo) and torch.equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
        bounds = intermediate_bounds(net, lo, hi, deadline=deadline)
    return lo, hi, bounds, direction


__all__ = ["fix_monotone_inputs", "gradient_bounds", "shrink_monotone"]
