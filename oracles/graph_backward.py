"""CROWN's backward pass over the DAG IR and its concretisation, for
:mod:`oracles.graph_bounds` (which documents the passes and their rounding accounting).

A linear lower bound of ``spec . z_t`` as a function of the input (:func:`backward`):
coefficients shaped like each node's output ``(B, m, *shape)``, pulled back through linear
nodes with their transpose (a convolution's is its transposed convolution: never a dense
matrix), summed where branches rejoin, relaxed at ReLUs — on the columns of a layer's
unstable neurons alone when they are few (:func:`_inexact_columns`: the other slopes are
exact 0s and 1s, products that round nothing and are charged nothing); then its minimum
over the box (:func:`concretize_wide`), in float64.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.tolerances import ABS_SLACK

from .bounds import LinearBound, ReluRelaxation, proven
from .graph_rounding import Rejoined, bias_dot, negative_dot, wide_dot
from .rows import per_box_rows

if TYPE_CHECKING:
    from .graph_bounds import GraphTensors, NodeBounds

Tensor = torch.Tensor

#: A ReLU layer whose unstable neurons are at most this share of it is pulled back through
#: on their columns only (:func:`_inexact_columns`).
SPARSE_SHARE = 0.25


def backward(gt: GraphTensors, nb: NodeBounds, target: int, spec: Tensor, *, covered: bool = False,
             const: Tensor | None = None, error: Tensor | None = None,
             underflow: Tensor | None = None, split_terms: dict[int, Tensor] | None = None,
             keep: dict[int, Tensor] | None = None, rows: Tensor | None = None,
             compact: dict[int, tuple[Tensor, ReluRelaxation]] | None = None) -> LinearBound:
    """CROWN's backward pass: a linear lower bound of ``spec . z_target`` (``spec`` of
    shape ``(B, m, *shape)``) as a function of the flattened input, valid (once
    ``error`` is subtracted) on every box whose node bounds are ``nb``. A pass resumed
    from a later node passes what it has accumulated (``const`` and ``error``, float64,
    ``underflow``; ``covered``: the rounding of products with ``spec`` is already in
    ``error``). ``const`` and ``error`` are float64 (:mod:`oracles.graph_rounding`).

    ``split_terms[k]`` (optional, for ReLU node ``k``: ``(B, m, *shape)``) is added to the
    coefficients of the ReLU's input: with ``-beta * s`` (``beta >= 0``, ``s = +1`` for a
    neuron split active, ``-1`` inactive) the bound stays valid on the sub-domain where
    the splits hold (beta-CROWN's Lagrangian terms; the sum's rounding is charged like a
    branch sum's). ``keep`` (optional) collects each ReLU node's output coefficients
    (``(B, m, n)``), for branching heuristics. ``rows`` (optional, ``(B',)``): the box of
    each entry of ``spec`` (``(B', m, *shape)``), the node bounds being per box: the same
    pass with each entry's box's bounds.

    ``compact[k]`` (optional, for ReLU node ``k``, without ``rows``): ``(columns, relaxation)``
    — the flat positions of every neuron unstable in ``nb.relax[k]`` (which may be one box's,
    broadcast) and, per box of ``spec``, the relaxation of those neurons only (``(B, n_u)``,
    from bounds inside the box's: branch and bound's sub-domains). The other neurons keep
    ``nb.relax[k]``'s exact slopes (0 or 1, no intercept); ``split_terms[k]`` and ``keep[k]``
    are then on ``columns`` only (``(B, m, n_u)``). The same bound as the full relaxation,
    with the per-box work on the unstable neurons alone; the products' rounding is charged
    with ``nb.relax[k]``'s scale, at least the sub-domain's."""
    assert compact is None or rows is None, "compact relaxations are per box of spec"
    g = gt.graph
    bsz, m = spec.shape[:2]
    one = int(rows[0]) if rows is not None and rows.numel() and bool((rows == rows[0]).all()) else None

    def per(t: Tensor) -> Tensor:
        if rows is None:
            return t
        if one is not None:  # every entry of one box: a broadcast view, no copy
            return t.narrow(0, one, 1).expand(bsz, *t.shape[1:])
        return t.index_select(0, rows)

    sl = gt.slacks
    wide = torch.float64
    const = spec.new_zeros(bsz, m, dtype=wide) if const is None else const
    magnitude = spec.new_zeros(bsz, m, dtype=wide) if error is None else error  # weighted by the slacks
    underflow = spec.new_zeros(bsz, 1) if underflow is None else underflow
    joined = Rejoined()
    joined.push(target, spec, covered)
    lam, acc_abs, covered_, push = joined.lam, joined.acc_abs, joined.covered, joined.push

    coef = None
    for v in sorted(gt.ancestors[target] | {target}, reverse=True):
        if v not in lam:
            continue
        big = lam.pop(v)
        node = g.nodes[v]
        if v in acc_abs:  # the rounding of the sum of several coefficients
            magnitude = magnitude + sl.join * _bmv(acc_abs.pop(v), per(nb.scale[v])).to(wide)
        if isinstance(node, gn.ReLU):
            # a coefficient times a slope below the normal range is off by up to half the
            # smallest subnormal, times the ReLU input (at most its scale): charged here, as a
            # linear node charges its products (a ReLU that feeds an Add is read by no linear node)
            underflow = underflow + per(_row_sums(nb.scale[v])) + 1
        if isinstance(node, gn.Input):
            if not covered_[v]:
                magnitude = magnitude + sl.one * _bmv(big.abs(), per(nb.scale[v])).to(wide)
            coef = big.reshape(bsz, m, -1)
        elif isinstance(node, gn.LinearNode):
            u = node.inputs[0]
            if not node.exact:
                b = node.bias(gt.dtype, gt.device)
                if b is not None:
                    const = const + bias_dot(big, b)
                magnitude = magnitude + sl.back[v] * _bmv(big.abs(), per(nb.terms[v])).to(wide)
                underflow = underflow + per(_row_sums(nb.scale[u])) + 1
            push(u, _rows(node, big), True if not node.exact else covered_[v])
        elif isinstance(node, gn.ReLU) and compact is not None and v in compact:
            u, r = node.inputs[0], nb.relax[v]
            cols, sub = compact[v]
            flat = big.reshape(bsz, m, -1)
            part = flat.index_select(2, cols)
            if not covered_[v]:  # the other neurons' slopes are exact; these are charged with the box's scale
                charged = torch.where(sub.exact, 0.0, r.scale.index_select(1, cols).expand(sub.exact.shape))
                magnitude = magnitude + sl.one * _mv_abs(part, charged).to(wide)
            low = sub.lower_slope if sub.lower_slope.dim() == 3 else sub.lower_slope.unsqueeze(1)
            neg = part.clamp(max=0)
            fresh = neg * sub.upper_slope.unsqueeze(1) + part.clamp(min=0) * low  # as below, on the columns
            shift = wide_dot(neg, sub.upper_intercept)  # <= 0; every other intercept is 0
            const = const + shift
            magnitude = magnitude - sl.wide * shift
            if keep is not None:
                keep[v] = part
            if split_terms is not None and v in split_terms:
                fresh = fresh + split_terms[v]
                magnitude = magnitude + (sl.join + sl.one) * _mv_abs(fresh, r.scale.index_select(1, cols)).to(wide)
            # the stable neurons' slopes are 0 or 1: exact products
            new = flat * r.lower_slope.unsqueeze(1)
            new.index_copy_(2, cols, fresh)
            push(u, new.reshape(bsz, m, *g.nodes[u].shape), False)
        elif isinstance(node, gn.ReLU) and (cols := _inexact_columns(nb.relax[v], one, rows)) is not None:
            # few neurons with a slope other than an exact 0 / 1 or an intercept (the unstable
            # ones): the others' products are exact, the slopes' work is on these columns only
            u, r = node.inputs[0], nb.relax[v]
            flat = big.reshape(bsz, m, -1)
            # the box's columns selected before they are repeated per row (a broadcast view would be copied whole)
            low = per(r.lower_slope.index_select(-1, cols))
            low = low if low.dim() == 3 else low.unsqueeze(1)
            part = flat.index_select(2, cols)
            if not covered_[v]:
                magnitude = magnitude + sl.one * _mv_abs(part, per(r.charged.index_select(1, cols))).to(wide)
            neg = part.clamp(max=0)
            fresh = neg * per(r.upper_slope.index_select(1, cols)).unsqueeze(1) + part.clamp(min=0) * low
            shift = wide_dot(neg, per(r.upper_intercept.index_select(1, cols)))  # <= 0
            const = const + shift
            magnitude = magnitude - sl.wide * shift
            if keep is not None:
                keep[v] = flat
            new = flat * per(r.upper_slope).unsqueeze(1)
            new.index_copy_(2, cols, fresh)
            if split_terms is not None and v in split_terms:
                new = new + split_terms[v].reshape(bsz, m, -1)
                magnitude = magnitude + (sl.join + sl.one) * _mv_abs(new, per(r.scale)).to(wide)
            push(u, new.reshape(bsz, m, *g.nodes[u].shape), False)
        elif isinstance(node, gn.ReLU):
            u, r = node.inputs[0], nb.relax[v]
            support = r.upper_intercept  # per box: its nonzero positions are those of every row's
            charged = per(r.charged)
            if rows is not None:
                r = ReluRelaxation(per(r.lower_slope), per(r.upper_slope), per(r.upper_intercept), per(r.scale),
                                   per(r.invalid))
            flat = big.reshape(bsz, m, -1)
            if not covered_[v]:
                magnitude = magnitude + sl.one * _mv_abs(flat, charged).to(wide)
            low = r.lower_slope if r.lower_slope.dim() == 3 else r.lower_slope.unsqueeze(1)
            neg = flat.clamp(max=0)
            # each coefficient times its slope (upper where negative): one of the two products is
            # an exact zero, so the sum is that product, rounded once (a broadcast where is slow)
            new = neg * r.upper_slope.unsqueeze(1) + flat.clamp(min=0) * low
            shift = negative_dot(neg, r.upper_intercept, support)  # <= 0
            const = const + shift
            magnitude = magnitude - sl.wide * shift
            if keep is not None:
                keep[v] = flat
            if split_terms is not None and v in split_terms:
                new = new + split_terms[v].reshape(bsz, m, -1)
                magnitude = magnitude + (sl.join + sl.one) * _mv_abs(new, r.scale).to(wide)
            push(u, new.reshape(bsz, m, *g.nodes[u].shape), False)
        elif isinstance(node, gn.Add):
            push(node.inputs[0], big, False)
            push(node.inputs[1], big, False)
        elif isinstance(node, gn.Sub):
            push(node.inputs[0], big, False)
            push(node.inputs[1], -big, False)
        elif isinstance(node, gn.Concat):
            sizes = [g.nodes[i].shape[node.axis] for i in node.inputs]
            for i, part in zip(node.inputs, torch.split(big, sizes, dim=node.axis + 2)):
                push(i, part, covered_[v])
    assert coef is not None, "the target does not depend on the input"
    error = magnitude + gt.tiny * underflow.to(wide) + ABS_SLACK
    return LinearBound(coef, const, error, per(nb.invalid))


def concretize_wide(bound: LinearBound, lower: Tensor, upper: Tensor, rows: Tensor | None = None) -> Tensor:
    """:func:`~oracles.bounds.concretize` in float64 (``bound.const`` and ``bound.error``
    are float64; its rounding is charged in ``error``): ``(B, m)`` float64. ``rows``: the
    box of each entry, as in :func:`backward`."""
    lo, hi = lower.to(torch.float64), upper.to(torch.float64)
    single = lower.shape[0] == 1
    center, radius = per_box_rows((hi + lo) / 2, rows, single), per_box_rows((hi - lo) / 2, rows, single)
    coef = bound.coef.to(torch.float64)  # (exact: float32 numbers are float64 ones)
    value = wide_dot(coef, center)
    # |coef| in place where the conversion made a copy of it and autograd records nothing (with
    # gradients on, the product above may have saved the copy for the box's gradient)
    absolute = coef.abs_() if coef is not bound.coef and not torch.is_grad_enabled() else coef.abs()
    value = value - wide_dot(absolute, radius) + bound.const
    return proven(value - bound.error, bound.invalid)


def _row_sums(t: Tensor) -> Tensor:
    """Each box's sum of ``t`` (``(B, *shape)`` -> ``(B, 1)``); one box's, broadcast (a
    stride-0 view, as branch and bound's sub-domains share the box's), summed once."""
    if t.shape[0] > 1 and t.stride(0) == 0:
        return t.narrow(0, 0, 1).flatten(1).sum(1, keepdim=True).expand(t.shape[0], 1)
    return t.flatten(1).sum(1, keepdim=True)


def _inexact_columns(r: ReluRelaxation, one: int | None, rows: Tensor | None) -> Tensor | None:
    """The flat positions where the relaxation ``r`` of some box (box ``one`` alone when
    every row is its; every box of ``r`` otherwise) is not ``relu(z) = s z`` with one
    slope ``s`` exactly 0 or 1 (its unstable neurons), or ``None`` when they are more than
    :data:`SPARSE_SHARE` of the layer (the dense products are then as cheap)."""
    exact = r.exact.narrow(0, one, 1) if rows is not None and one is not None else r.exact
    free = (~exact).any(dim=0)
    cols = free.nonzero()[:, 0]
    return cols if cols.numel() <= SPARSE_SHARE * free.numel() else None


def _mv_abs(a: Tensor, v: Tensor) -> Tensor:
    return _bmv(a.abs(), v)


def _bmv(a: Tensor, v: Tensor) -> Tensor:
    """``sum over the shape of a * v``: ``a`` ``(B, m, *shape)``, ``v`` ``(B, *shape)`` -> ``(B, m)``
    (``v`` one box's, broadcast: one matrix-vector product)."""
    if v.shape[0] > 1 and v.stride(0) == 0:
        return a.flatten(2) @ v[0].reshape(-1)
    return (a.flatten(2) @ v.flatten(1).unsqueeze(-1)).squeeze(-1)


def _rows(node: gn.LinearNode, lam: Tensor, transpose: bool = True) -> Tensor:
    """``W^T`` applied to each row of ``lam`` (``(B, m, *shape)`` -> ``(B, m, *in_shape)``)."""
    b, m = lam.shape[:2]
    out = node.apply_t(lam.reshape(b * m, *node.shape))
    return out.reshape(b, m, *node.in_shape)


__all__ = ["backward", "concretize_wide"]
