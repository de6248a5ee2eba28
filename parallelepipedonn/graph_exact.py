"""Exact evaluation of a :class:`~parallelepipedonn.graph.Graph` on one point.

Every float64 number is an integer times a power of two, so the graph's exact value is
computed on Python integers: a tensor is a pair ``(ints, exp)`` (numpy object array,
value ``ints * 2**exp``). Products multiply integers and add exponents, sums align the
exponents first (shifting the integers left), ReLU compares with 0: no rounding at all.
Convolutions and pooling gather their windows (im2col) and multiply object matrices;
transposed convolutions add each kernel tap's product at its strided positions.

A point whose coordinates are rationals but not all float64 numbers (a decimal such as
0.3 that an input is pinned to) is evaluated the same way, through positive homogeneity:
every operator of the IR (linear maps, ReLU, sums, concatenation, zero padding, the
MaxPool lowering's convolutions with zero biases) is positively homogeneous except for
the constants the linear nodes add (:meth:`~parallelepipedonn.graph_nodes.LinearNode.bias_array`),
so with an integer ``D > 0``, ``f(x) = F_D(D x) / D`` where ``F_D`` is the graph with
every bias multiplied by ``D``. With ``D`` the odd parts of the denominators, ``D x`` is
dyadic (integers times a power of two): :func:`exact_logits_rational`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from . import graph_nodes as gn

if TYPE_CHECKING:
    from .graph import Graph

Exact = tuple[np.ndarray, int]


def to_exact(a: np.ndarray) -> Exact:
    """``a`` (float64, finite) as integers times ``2**exp``: exact."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():  # (frexp's mantissas of inf and NaN are no numbers: invented values)
        raise ValueError("exact arithmetic on a value that is not a finite number")
    mant, e = np.frexp(a)
    ints = (mant * 2.0**53).astype(np.int64)  # exact: 53-bit mantissas
    exps = e.astype(np.int64) - 53
    nz = ints != 0
    base = int(exps[nz].min()) if nz.any() else 0
    shifts = np.where(nz, exps - base, 0)
    out = np.empty(a.shape, dtype=object)
    out.reshape(-1)[:] = [int(i) << int(k) for i, k in zip(ints.reshape(-1).tolist(), shifts.reshape(-1).tolist())]
    return out, base


def _pad(x: np.ndarray, widths: list[tuple[int, int]]) -> np.ndarray:
    """Zero padding of an object array (Python ``int`` zeros, never numpy integers)."""
    out = np.empty(tuple(d + a + b for d, (a, b) in zip(x.shape, widths)), dtype=object)
    out.fill(0)
    out[tuple(slice(a, a + d) for d, (a, _) in zip(x.shape, widths))] = x
    return out


def _align(a: Exact, b: Exact) -> tuple[np.ndarray, np.ndarray, int]:
    (x, ex), (y, ey) = a, b
    e = min(ex, ey)
    if ex > e:
        x = x * (1 << (ex - e))
    if ey > e:
        y = y * (1 << (ey - e))
    return x, y, e


def _cached(node: gn.Node, key: str, value: np.ndarray) -> Exact:
    k = ("exact", key)
    if k not in node._cache:
        node._cache[k] = to_exact(value)
    return node._cache[k]


def _windows(x: np.ndarray, node: gn._Window2d) -> np.ndarray:
    """im2col of ``x`` (``(C, H, W)`` object array): ``(C, kh*kw, Ho*Wo)``."""
    t, l, b, r = node.pads
    xp = _pad(x, [(0, 0), (t, b), (l, r)]) if any(node.pads) else x
    _, ho, wo = node.shape
    kh, kw = node.kernel
    rows = (np.arange(ho) * node.stride[0])[None, :] + (np.arange(kh) * node.dilation[0])[:, None]  # (kh, ho)
    cols = (np.arange(wo) * node.stride[1])[None, :] + (np.arange(kw) * node.dilation[1])[:, None]  # (kw, wo)
    patches = xp[:, rows[:, None, :, None], cols[None, :, None, :]]  # (C, kh, kw, ho, wo)
    return patches.reshape(x.shape[0], kh * kw, ho * wo)


def _transposed(x: np.ndarray, w: np.ndarray, node: gn.ConvTranspose2d) -> np.ndarray:
    """A transposed convolution of ``x`` (``(C_in, H, W)``) by the integers ``w``: per kernel
    tap and group, the weights' transpose times the input channels, added at the tap's
    strided positions of the canvas, which is then cropped by the pads."""
    c_in, h, wd = x.shape
    g = node.groups
    cig, cog = c_in // g, w.shape[1]
    (kh, kw), (s0, s1), (d0, d1) = node.kernel, node.stride, node.dilation
    canvas = np.empty((cog * g, *node.canvas), dtype=object)
    canvas.fill(0)
    xf = x.reshape(g, cig, h * wd)
    for a in range(kh):
        for b in range(kw):
            for gi in range(g):
                tap = w[gi * cig:(gi + 1) * cig, :, a, b].T.dot(xf[gi]).reshape(cog, h, wd)
                canvas[gi * cog:(gi + 1) * cog, d0 * a:d0 * a + s0 * (h - 1) + 1:s0,
                       d1 * b:d1 * b + s1 * (wd - 1) + 1:s1] += tap
    t, l, _, _ = node.pads
    return canvas[:, t:t + node.shape[1], l:l + node.shape[2]]


def _linear(node: gn.LinearNode, v: Exact, bias_scale: int = 1) -> Exact:
    x, ex = v
    if isinstance(node, gn.Reshape):
        return x.reshape(node.shape), ex
    if isinstance(node, gn.Transpose):
        return x.transpose(node.perm), ex
    if isinstance(node, gn.Pad):
        r = len(node.in_shape)
        return _pad(x, [(node.pads[i], node.pads[i + r]) for i in range(r)]), ex
    if isinstance(node, gn.Dense):
        w, ew = _cached(node, "w", node.weight)
        y = (w.dot(x), ew + ex)
    elif isinstance(node, gn.Conv2d):
        w, ew = _cached(node, "w", node.weight)
        g = node.groups
        cols = _windows(x, node)  # (C_in, k, P)
        c_in, k, p = cols.shape
        cols = cols.reshape(g, (c_in // g) * k, p)
        wg = w.reshape(g, w.shape[0] // g, -1)
        out = np.concatenate([wg[i].dot(cols[i]) for i in range(g)])
        y = (out.reshape(node.shape), ew + ex)
    elif isinstance(node, gn.ConvTranspose2d):
        w, ew = _cached(node, "w", node.weight)
        y = (_transposed(x, w, node), ew + ex)
    elif isinstance(node, gn.AvgPool2d):
        inv, ei = _cached(node, "inv", node.inv_count)
        sums = _windows(x, node).sum(axis=1).reshape(node.shape)
        y = (sums * inv, ei + ex)
    elif isinstance(node, gn.Scale):
        s, es = _cached(node, "s", node.scale)
        y = (x * s, es + ex)
    else:  # pragma: no cover
        raise TypeError(type(node).__name__)
    b = node.bias_array()
    if b is None:
        return y
    bi, eb = _cached(node, "b", b)
    yb, bb, e = _align(y, (bi * bias_scale if bias_scale != 1 else bi, eb))
    return yb + bb, e


def exact_logits(graph: Graph, x: np.ndarray) -> Exact:
    """The class scores of one flat float64 point ``x``, exactly."""
    return _evaluate(graph, to_exact(np.asarray(x, dtype=np.float64)), 1)


def exact_logits_rational(graph: Graph, x: Sequence[Fraction]) -> tuple[np.ndarray, int, int]:
    """The class scores of one flat point ``x`` of exact rationals: ``(ints, exp, D)``, the
    scores being ``ints * 2**exp / D`` (``D`` the least common multiple of the odd parts
    of the denominators; the graph evaluated at the dyadic point ``D x`` with every bias
    times ``D``, see the module docstring)."""
    qs = [q if type(q) is Fraction else Fraction(q) for q in x]
    odd = [q.denominator >> ((q.denominator & -q.denominator).bit_length() - 1) for q in qs]
    d = math.lcm(1, *odd)
    twos = [(q.denominator // o).bit_length() - 1 for q, o in zip(qs, odd)]  # the powers of two
    top = max(twos, default=0)
    ints = np.empty(len(qs), dtype=object)
    ints[:] = [q.numerator * (d // o) << (top - t) for q, o, t in zip(qs, odd, twos)]
    out, exp = _evaluate(graph, (ints, -top), d)
    return out, exp, d


def _evaluate(graph: Graph, x: Exact, bias_scale: int) -> Exact:
    """The graph at the flat point ``x`` (exact), every bias times ``bias_scale``."""
    values: list[Exact] = []
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if isinstance(node, gn.Input):
            v = (x[0].reshape(node.shape), x[1])
        elif isinstance(node, gn.LinearNode):
            v = _linear(node, ins[0], bias_scale)
        elif isinstance(node, gn.ReLU):
            a, e = ins[0]
            zero = np.empty(a.shape, dtype=object)
            zero.fill(0)
            v = (np.where(a > 0, a, zero), e)
        elif isinstance(node, (gn.Add, gn.Sub)):
            a, b, e = _align(ins[0], ins[1])
            v = (a + b if isinstance(node, gn.Add) else a - b, e)
        elif isinstance(node, gn.Concat):
            e = min(i[1] for i in ins)
            parts = [a * (1 << (ea - e)) if ea > e else a for a, ea in ins]
            v = (np.concatenate(parts, axis=node.axis), e)
        else:  # pragma: no cover  (a node kind added without its exact form; it might add a constant)
            raise TypeError(f"no exact evaluation of {type(node).__name__} nodes")
        values.append(v)
    return values[-1]
