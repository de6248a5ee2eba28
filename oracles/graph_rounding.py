"""The rounding slacks of CROWN over the DAG IR (:mod:`oracles.graph_bounds`), per product.

The error model (:mod:`parallelepipedonn.tolerances`): a sum of ``n`` rounded products, in
any order, is off by at most ``gamma_n`` times the sum of the absolute values of its
terms; additions of an exact zero are exact, so ``n`` counts the terms that can be
nonzero. Each bound is moved outward by the sum, over the rounded operations that
produced it, of that operation's relative slack times the magnitude of its terms:

* pulling coefficients back through a linear node (``Lambda W``): every coefficient is a
  sum of at most ``fan_out`` products (``fan_in`` for an interval bound's ``W x``), so its
  terms ``|Lambda| . (|W| s_in + |b|)`` get ``relative_slack(fan_out)``, not the slack of the
  graph's widest sum;
* sums of the coefficients of several branches: ``relative_slack(branches)``; a ReLU slope
  times a coefficient: ``relative_slack(1)``;
* the wide reductions (``Lambda . b``, the ReLU intercepts' shift, the concretisation over
  the box), sums of as many terms as a whole map: in float64 whatever the dtype (products
  of float32 numbers are exact in float64), slack ``relative_slack(widest, float64)``.

The magnitudes ``|Lambda| . t`` are themselves sums over whole maps, computed in the
dtype; for non-negative terms the computed sum is at least ``(1 - gamma_widest)`` times the
exact one, so every per-product slack is divided by ``1 - gamma_widest`` (``inf`` when
that is not positive: nothing is proven). In float64 every slack is the graph's widest
(``relative_slack(widest)`` covers every shorter sum),
as before: the per-product slacks matter for float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph
from parallelepipedonn.tolerances import gamma, relative_slack

Tensor = torch.Tensor


@dataclass(frozen=True)
class Slacks:
    """Relative slacks of one graph in one dtype: ``back[k]`` (``W^T`` of linear node ``k``,
    plus ``wide``), ``fwd[k]`` (``W x`` of an interval bound), ``join`` (branch sums and
    Add / Sub), ``one`` (a single product, plus ``wide``), ``wide`` (the float64 reductions).
    In float64 all of them are the graph's one slack."""

    back: dict[int, float]
    fwd: dict[int, float]
    join: float
    one: float
    wide: float

    @property
    def smallest(self) -> float:
        """The smallest of the slacks: an error ``e`` added to terms as ``e / smallest``
        is covered whichever slack later multiplies them."""
        return min([*self.back.values(), *self.fwd.values(), self.join, self.one, self.wide])

    @classmethod
    def of(cls, graph: Graph, dtype: torch.dtype, widest_terms: int) -> Slacks:
        """``widest_terms``: the longest chain of additions of the graph (its widest sum plus
        the accumulations), the one slack of every sum in float64."""
        linear = {k: n for k, n in enumerate(graph.nodes) if isinstance(n, gn.LinearNode) and not n.exact}
        if dtype == torch.float64:
            rel = relative_slack(widest_terms, dtype)
            return cls({k: rel for k in linear}, {k: rel for k in linear}, rel, rel, rel)
        g_w = gamma(widest_terms, dtype)
        shrink = 1.0 / (1.0 - g_w) if g_w < 1.0 else math.inf
        branches = max([len(c) for c in graph.consumers] + [2])
        wide = relative_slack(widest_terms, torch.float64)

        def per(n: int) -> float:
            return relative_slack(n, dtype) * shrink

        return cls({k: per(n.fan_out) + wide for k, n in linear.items()},
                   {k: per(n.fan_in + 1) for k, n in linear.items()},  # + 1: the bias
                   per(branches + 1), per(2) + wide, wide)


def wide_dot(a: Tensor, v: Tensor) -> Tensor:
    """``sum over the shape of a * v`` in float64 (``a`` ``(B, m, *shape)``, ``v``
    broadcastable to ``(B, *shape)``) -> ``(B, m)``."""
    a = a.to(torch.float64)
    v = v.to(torch.float64).expand(a.shape[0], *a.shape[2:])
    if v.stride(0) == 0:  # one box's, broadcast: one matrix-vector product
        return a.flatten(2) @ v[0].reshape(-1)
    return (a.flatten(2) @ v.reshape(a.shape[0], -1, 1)).squeeze(-1)


def bias_dot(a: Tensor, bias: Tensor) -> Tensor:
    """:func:`wide_dot` of coefficients ``a`` ``(B, m, C, *rest)`` with a per-channel
    ``bias`` ``(C, 1, ...)``: each channel's coefficients summed first (in float64), then
    times its bias — the same terms regrouped, a sum of at most as many roundings of
    terms no larger than ``|a| |bias|``, so the same slack covers it."""
    if (bias.dim() >= 2 and all(d == 1 for d in bias.shape[1:]) and a.dim() == bias.dim() + 2
            and bias.shape[0] == a.shape[2]):  # (a shift of shape (1, 1, ...) broadcasts: the general dot)
        sums = a.to(torch.float64).sum(dim=tuple(range(3, a.dim())))  # (B, m, C); sum(dtype=) is 4x slower
        return sums @ bias.reshape(-1).to(torch.float64)
    return wide_dot(a, bias)


def negative_dot(neg: Tensor, intercept: Tensor, support: Tensor | None = None) -> Tensor:
    """``wide_dot(neg, intercept)`` for ``neg`` ``(B, m, n)`` and ``intercept`` ``(B, n)``
    zero outside a few positions (a ReLU layer's unstable neurons): the sum over the
    positions where some box's intercept is nonzero (the others' terms are exact zeros).
    ``support`` (optional): the intercepts ``intercept``'s rows are taken from (per box,
    before they are repeated per row), whose nonzero positions are the same and fewer to scan."""
    where = (intercept if support is None else support).ne(0).any(dim=0).nonzero()[:, 0]
    if 2 * where.numel() >= intercept.shape[1]:
        return wide_dot(neg, intercept)
    return wide_dot(neg.index_select(2, where), intercept.index_select(1, where))


def round_down(v: Tensor, dtype: torch.dtype) -> Tensor:
    """float64 ``v`` as ``dtype``, rounded towards ``-inf`` (a lower bound stays one)."""
    if dtype == torch.float64:
        return v
    r = v.to(dtype)
    return torch.where(r.to(torch.float64) > v, torch.nextafter(r, torch.full_like(r, -math.inf)), r)


@dataclass
class Rejoined:
    """The coefficients of a backward pass per node (``lam``) where branches rejoin: a node
    reached by several branches gets the sum of their coefficients, the sum of their
    absolute values (``acc_abs``: the magnitude its rounding is charged on, ``sl.join``) and
    whether every one of them covered its product's rounding (``covered``)."""

    lam: dict[int, Tensor] = field(default_factory=dict)
    acc_abs: dict[int, Tensor] = field(default_factory=dict)
    covered: dict[int, bool] = field(default_factory=dict)

    def push(self, u: int, x: Tensor, cov: bool) -> None:
        """``x`` added to node ``u``'s coefficients (``cov``: its products' rounding covered)."""
        lam, acc_abs = self.lam, self.acc_abs
        if u in lam:
            if u not in acc_abs:
                acc_abs[u] = lam[u].abs()
            lam[u] = lam[u] + x
            acc_abs[u] = acc_abs[u] + x.abs()
            self.covered[u] = self.covered[u] and cov
        else:
            lam[u], self.covered[u] = x, cov
