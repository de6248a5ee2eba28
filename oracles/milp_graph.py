"""Exact (MILP) encoding of the DAG IR (:class:`~parallelepipedonn.graph.Graph`), built
from each node's sparse structure, and what the ``milp`` oracle needs of a graph besides.

The encoding follows :mod:`oracles.milp_encoding` (stable neurons without binaries,
big-M with a binary for the others, fixed phases, the LP relaxation, the convex last
ReLUs), node by node in topological order. Every value is a *form*: per element, a short
sum of solver variables with small integer coefficients (the input's variables; for a
ReLU, its own variable where the neuron is unstable, its input's form where it is active,
nothing where it is dead):

* a linear node that rounds (Conv2d, ConvTranspose2d, Dense, AvgPool2d, Scale) gets one
  variable per output and one equality row per output, ``y_o = b_o + sum_e W[o, e] v_e``, its coefficients the
  stored float64 weights themselves, gathered from the node's sparse structure
  (:func:`linear_triples`: for a convolution, the kernel entries at their window
  positions, index arrays built with numpy per block of output channels — never a dense
  matrix); the average pool's row is ``inv_count_o`` times each window element, the same
  number in real arithmetic as the node's ``inv_count_o`` times the window's sum. Its input
  form is first given variables (one row each) unless every element is one variable with
  coefficient +-1 or nothing, so that every coefficient is exact;
* Reshape, Transpose, Pad and Concat move forms (padding: empty forms, i.e. 0); Add and Sub
  add them (coefficients +-1; repeated variables merged, exactly).

So the encoding is exact (its feasible ``(x, logits)`` are the graph over the box, in exact
arithmetic on the stored weights). The big-M constants and the bounds of the ReLU
variables (``0 <= a <= u``) are the graph CROWN bounds of the ReLU inputs over the box
(:func:`oracles.graph_bounds.node_bounds`, moved outward by their rounding slack): sound,
so they cut no point of the graph off. The linear nodes' variables are free (as the
chain encoding's affine expressions are).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyomo.environ as pe
import torch
from numpy.typing import NDArray
from pyomo.core.expr.numeric_expr import LinearExpression

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.errors import OracleError
from parallelepipedonn.graph import Graph, evaluate
from parallelepipedonn.network import Network

from .bounds import margin_spec
from .graph_bounds import GraphTensors, NodeBounds, backward, concretize_wide, node_bounds
from .milp_encoding import Encoding, encode
from .precision import sound_kernels

FloatArray = NDArray[np.float64]
Tensor = torch.Tensor

#: Outputs of a linear node whose triples are built at once (bounds the index arrays).
TRIPLE_BLOCK = 2**20

#: Rows of an encoding built between two looks at its deadline.
DEADLINE_ROWS = 256


class EncodingTimedOut(OracleError):
    """The deadline passed while a graph's encoding was being built (a CIFAR-size convnet's
    takes seconds): nothing is proven; the oracle answers UNKNOWN, timed out."""


@dataclass(frozen=True, eq=False)
class GraphBoxBounds:
    """Proven bounds of every node's output over one box (flat float64 arrays; ``None``
    for nodes that do not lead to the output), as graph CROWN proves them; ``finite``
    when all of them are finite numbers (else no MILP is built on them)."""

    lower: tuple[FloatArray | None, ...]
    upper: tuple[FloatArray | None, ...]
    finite: bool

    @classmethod
    def of(cls, graph: Graph, nb: NodeBounds, box: int = 0) -> GraphBoxBounds:
        live = live_nodes(graph)
        def flat(t: Tensor) -> FloatArray:
            return t[box].reshape(-1).to(torch.float64).cpu().numpy().copy()

        lo = tuple(flat(nb.lower[k]) if k in live else None for k in range(len(graph.nodes)))
        hi = tuple(flat(nb.upper[k]) if k in live else None for k in range(len(graph.nodes)))
        finite = not bool(nb.invalid[box]) and all(np.isfinite(a).all() for a in lo + hi if a is not None)
        return cls(lo, hi, finite)


def live_nodes(graph: Graph) -> frozenset[int]:
    """The nodes the output depends on (itself included)."""
    last = len(graph.nodes) - 1
    live, todo = {last}, [last]
    while todo:
        for i in graph.nodes[todo.pop()].inputs:
            if i not in live:
                live.add(i)
                todo.append(i)
    return frozenset(live)


def relu_nodes(graph: Graph) -> list[int]:
    """The graph's live ReLU nodes in topological order (their position in this list is
    the first key of :attr:`Encoding.binaries` and the index of ``phases``)."""
    live = live_nodes(graph)
    return [k for k, n in enumerate(graph.nodes) if isinstance(n, gn.ReLU) and k in live]


# -- the sparse structure of linear nodes -------------------------------------------------------
def move_map(node: gn.LinearNode | gn.Concat, shapes: Sequence[tuple[int, ...]]) -> NDArray[np.int64]:
    """For a node that only moves values (Reshape, Transpose, Pad; Concat of inputs of
    ``shapes``): per flat output element, the flat index of the input element it copies
    (into the inputs stacked, for Concat), ``-1`` for padding."""
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    # float64 carries these integers exactly (far below 2**53)
    parts = [torch.arange(offsets[i] + 1, offsets[i] + sizes[i] + 1, dtype=torch.float64).reshape(1, *s)
             for i, s in enumerate(shapes)]
    moved = torch.cat(parts, dim=node.axis + 1) if isinstance(node, gn.Concat) else node.apply(parts[0])
    return moved.reshape(-1).numpy().astype(np.int64) - 1


def linear_triples(node: gn.LinearNode) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]]:
    """The nonzero coefficients of a rounding linear node ``y = W x + b`` as triples
    ``(output, input, W[output, input])`` (flat indices, float64 weights as stored; for an
    average pool ``inv_count`` of the output), in blocks of whole outputs, each block's
    triples sorted by output. Never a dense matrix of a convolution."""
    if isinstance(node, gn.Dense):
        w = node.weight
        step = max(1, TRIPLE_BLOCK // max(1, w.shape[1]))
        for start in range(0, w.shape[0], step):
            o, e = np.nonzero(w[start:start + step])
            yield o + start, e, w[start:start + step][o, e]
    elif isinstance(node, gn.Scale):
        s = np.broadcast_to(node.scale, node.shape).reshape(-1)
        o = np.flatnonzero(s)
        yield o, o, s[o]
    elif isinstance(node, (gn.Conv2d, gn.AvgPool2d)):
        yield from _window_triples(node)
    elif isinstance(node, gn.ConvTranspose2d):
        yield from _transposed_triples(node)
    else:  # pragma: no cover - every rounding linear node is handled above
        raise TypeError(f"no MILP encoding for a {node.kind} node")


def _window_triples(node: gn._Window2d) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]]:
    """Conv2d / AvgPool2d: each output's window, per block of output channels: output
    ``(co, i, j)`` reads input ``(ci, i s0 + a d0 - top, j s1 + b d1 - left)`` for the
    kernel offsets ``(a, b)`` and the input channels of its group, with weight
    ``W[co, ci - group start, a, b]`` (pooling: ``inv_count[i, j]``, its own channel only);
    taps on the padding are left out (they read zeros)."""
    c_in, h, w = node.in_shape
    c_out, ho, wo = node.shape
    kh, kw = node.kernel
    if isinstance(node, gn.Conv2d):
        weight, groups = node.weight, node.groups
    else:
        weight, groups = None, c_in
    cig, cog = c_in // groups, c_out // groups
    ii, jj = np.arange(ho), np.arange(wo)
    rows = ii[:, None] * node.stride[0] + np.arange(kh)[None, :] * node.dilation[0] - node.pads[0]  # (ho, kh)
    cols = jj[:, None] * node.stride[1] + np.arange(kw)[None, :] * node.dilation[1] - node.pads[1]  # (wo, kw)
    per_channel = ho * wo * cig * kh * kw
    step = max(1, TRIPLE_BLOCK // max(1, per_channel))
    for start in range(0, c_out, step):
        co = np.arange(start, min(c_out, start + step))
        ci = (co // cog)[:, None] * cig + np.arange(cig)[None, :]  # (C, cig)
        shape = (len(co), ho, wo, cig, kh, kw)
        r = np.broadcast_to(rows[None, :, None, None, :, None], shape)
        c = np.broadcast_to(cols[None, None, :, None, None, :], shape)
        chan = np.broadcast_to(ci[:, None, None, :, None, None], shape)
        out = np.broadcast_to((co[:, None, None] * ho * wo + ii[None, :, None] * wo + jj[None, None, :])
                              [:, :, :, None, None, None], shape)
        if weight is not None:
            wv = np.broadcast_to(weight[co][:, None, None, :, :, :], shape)
        else:
            wv = np.broadcast_to(node.inv_count[None, :, :, None, None, None], shape)
        keep = (r >= 0) & (r < h) & (c >= 0) & (c < w) & (wv != 0)
        yield out[keep], (chan * h * w + r * w + c)[keep], wv[keep]


def _transposed_triples(node: gn.ConvTranspose2d) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64],
                                                                      FloatArray]]:
    """ConvTranspose2d, per block of output channels (whose inputs are their groups'
    channels): input ``(ci, i, j)`` adds ``W[ci, co - group start, a, b]`` times itself to
    output ``(co, i s0 + a d0 - top, j s1 + b d1 - left)``; the taps the pads crop are left
    out. Each block's triples sorted by output."""
    c_in, h, w = node.in_shape
    c_out, ho, wo = node.shape
    (kh, kw), (s0, s1), (d0, d1) = node.kernel, node.stride, node.dilation
    cig, cog = c_in // node.groups, c_out // node.groups
    ii, jj = np.arange(h), np.arange(w)
    rows = ii[:, None] * s0 + np.arange(kh)[None, :] * d0 - node.pads[0]  # (h, kh)
    cols = jj[:, None] * s1 + np.arange(kw)[None, :] * d1 - node.pads[1]  # (w, kw)
    step = max(1, TRIPLE_BLOCK // max(1, h * w * cig * kh * kw))
    for start in range(0, c_out, step):
        co = np.arange(start, min(c_out, start + step))
        ci = (co // cog)[:, None] * cig + np.arange(cig)[None, :]  # (C, cig)
        shape = (len(co), cig, h, w, kh, kw)
        r = np.broadcast_to(rows[None, None, :, None, :, None], shape)
        c = np.broadcast_to(cols[None, None, None, :, None, :], shape)
        wv = np.broadcast_to(node.weight[ci, (co % cog)[:, None]][:, :, None, None, :, :], shape)
        inp = np.broadcast_to((ci[:, :, None, None] * h * w + ii[None, None, :, None] * w + jj[None, None, None, :])
                              [:, :, :, :, None, None], shape)
        out = co[:, None, None, None, None, None] * ho * wo + r * wo + c
        keep = (r >= 0) & (r < ho) & (c >= 0) & (c < wo) & (wv != 0)
        o, i, v = out[keep], inp[keep], wv[keep]
        order = np.argsort(o, kind="stable")
        yield o[order], i[order], v[order]


# -- the encoding -------------------------------------------------------------------------------
@dataclass
class _Form:
    """Per element, a sum of variables (``var`` ``(n, t)`` indices, ``-1`` for none) with
    integer ``coef`` ``(n, t)``; no constants (biases live in the linear nodes' rows)."""

    var: NDArray[np.int64]
    coef: FloatArray

    @property
    def unit(self) -> bool:
        """Every element one variable with coefficient +-1, or nothing."""
        if self.var.shape[1] == 0:
            return True
        return self.var.shape[1] == 1 and bool(((self.var[:, 0] < 0) | (np.abs(self.coef[:, 0]) == 1)).all())

    def take(self, idx: NDArray[np.int64]) -> _Form:
        """Rows ``idx`` (``-1``: an empty row)."""
        var, coef = self.var[np.maximum(idx, 0)], self.coef[np.maximum(idx, 0)]
        var[idx < 0], coef[idx < 0] = -1, 0.0
        return _Form(var, coef)


def _stack(forms: Sequence[_Form]) -> _Form:
    t = max(f.var.shape[1] for f in forms)

    def pad(a: np.ndarray, fill: float) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, t - a.shape[1])), constant_values=fill)

    return _Form(np.concatenate([pad(f.var, -1) for f in forms]), np.concatenate([pad(f.coef, 0.0) for f in forms]))


class _Builder:
    """Builds the pyomo model of one graph over one box (see module docstring)."""

    def __init__(self, graph: Graph, lower: FloatArray, upper: FloatArray, bounds: GraphBoxBounds,
                 phases: Sequence[NDArray[np.int8]] | None, relax: bool, convex: dict[int, NDArray[np.bool_]],
                 deadline: float = math.inf) -> None:
        self.graph, self.bounds, self.phases, self.relax, self.convex = graph, bounds, phases, relax, convex
        self.deadline, self._rows = deadline, 0
        self.m = pe.ConcreteModel()
        n = graph.n_inputs
        self.m.x = pe.Var(range(n), bounds=lambda _, i: (float(lower[i]), float(upper[i])))
        self.m.cons = pe.ConstraintList()
        self.vars: list[Any] = [self.m.x[i] for i in range(n)]
        self.binaries: dict[tuple[int, int], Any] = {}
        self.n_unstable = 0

    def tick(self, rows: int = 1) -> None:
        """Count ``rows`` more rows; every :data:`DEADLINE_ROWS`, raise
        :class:`EncodingTimedOut` if the deadline has passed."""
        self._rows += rows
        if self._rows >= DEADLINE_ROWS:
            self._rows = 0
            if time.perf_counter() >= self.deadline:
                raise EncodingTimedOut("the time limit passed while the MILP encoding was being built")

    def new_vars(self, name: str, n: int, lo: FloatArray | None = None,
                 hi: FloatArray | None = None) -> NDArray[np.int64]:
        """``n`` variables, bounded by ``[lo, hi]`` if given (else free); their indices."""
        v = pe.Var(range(n))
        self.m.add_component(name, v)
        start = len(self.vars)
        for i in range(n):
            if lo is not None and hi is not None:
                v[i].setlb(float(lo[i]))
                v[i].setub(float(hi[i]))
            self.vars.append(v[i])
        return np.arange(start, start + n, dtype=np.int64)

    def expr(self, var: np.ndarray, coef: np.ndarray, const: float = 0.0) -> LinearExpression:
        """``const + sum coef_i vars[var_i]`` over ``var_i >= 0``, repeated variables merged."""
        ok = var >= 0
        var, coef = var[ok], coef[ok]
        if len(var) > 1 and len(np.unique(var)) < len(var):
            merged: dict[int, float] = {}
            for i, c in zip(var.tolist(), coef.tolist()):
                merged[i] = merged.get(i, 0.0) + c  # small integers: exact
            var = np.array([i for i, c in merged.items() if c != 0], dtype=np.int64)
            coef = np.array([c for c in merged.values() if c != 0])
        return LinearExpression(constant=float(const), linear_coefs=coef.tolist(),
                                linear_vars=[self.vars[i] for i in var.tolist()])

    def materialize(self, k: int, form: _Form) -> _Form:
        """``form`` (the value of node ``k``) as one (free) variable per element, one
        equality row each, where it is not one already."""
        if form.unit:
            return form
        idx = self.new_vars(f"v{k}", len(form.var))
        for i in range(len(idx)):
            self.m.cons.add(self.expr(np.append(form.var[i], idx[i]), np.append(form.coef[i], -1.0)) == 0)
            self.tick()
        return _Form(idx[:, None], np.ones((len(idx), 1)))

    def linear(self, k: int, node: gn.LinearNode, form: _Form) -> _Form:
        form = self.materialize(node.inputs[0], form)
        # free: bounds on these columns (the node bounds) kept HiGHS's presolve from
        # substituting them, and made its search 3-4 times slower on a small CNN
        y = self.new_vars(f"y{k}", node.numel)
        bias = node.bias_array()
        b = np.zeros(node.numel) if bias is None else np.broadcast_to(bias, node.shape).reshape(-1)
        in_var = form.var[:, 0] if form.var.shape[1] else np.full(len(form.var), -1)
        in_coef = form.coef[:, 0] if form.var.shape[1] else np.zeros(len(form.var))
        done = np.zeros(node.numel, dtype=bool)
        for out, inp, w in linear_triples(node):
            var, coef = in_var[inp], w * in_coef[inp]  # times +-1: exact
            keep = var >= 0
            out, var, coef = out[keep], var[keep], coef[keep]
            order = np.argsort(out, kind="stable")
            out, var, coef = out[order], var[order], coef[order]
            starts = np.searchsorted(out, np.unique(out))
            ends = np.append(starts[1:], len(out))
            for s, e in zip(starts.tolist(), ends.tolist()):
                o = int(out[s])
                done[o] = True
                vs = var[s:e].tolist()
                self.m.cons.add(LinearExpression(
                    constant=float(b[o]), linear_coefs=coef[s:e].tolist() + [-1.0],
                    linear_vars=[self.vars[i] for i in vs] + [self.vars[y[o]]]) == 0)
                self.tick()
        for o in np.flatnonzero(~done):  # reads nothing but zeros: its bias
            self.vars[y[o]].fix(float(b[o]))
        return _Form(y[:, None], np.ones((len(y), 1)))

    def relu(self, k: int, ordinal: int, form: _Form) -> _Form:
        u = self.graph.nodes[k].inputs[0]
        lo, hi = self.bounds.lower[u], self.bounds.upper[u]
        n = len(lo)
        phase = self.phases[ordinal] if self.phases is not None else np.zeros(n, dtype=np.int8)
        dead = (phase < 0) | (hi <= 0)
        active = ~dead & ((phase > 0) | (lo >= 0))
        unstable = ~dead & ~active
        t = max(1, form.var.shape[1])
        var, coef = np.full((n, t), -1, dtype=np.int64), np.zeros((n, t))
        var[active, :form.var.shape[1]], coef[active, :form.var.shape[1]] = form.var[active], form.coef[active]
        for i in np.flatnonzero(dead & (phase < 0) & (hi > 0)):
            self.m.cons.add(self.expr(form.var[i], form.coef[i]) <= 0)
        for i in np.flatnonzero(active & (phase > 0) & (lo < 0)):
            self.m.cons.add(self.expr(form.var[i], form.coef[i]) >= 0)
        idx = np.flatnonzero(unstable)
        if len(idx):
            a = self.new_vars(f"a{k}", len(idx), np.zeros(len(idx)), hi[idx])
            var[idx, 0], coef[idx, 0] = a, 1.0
            var[idx, 1:], coef[idx, 1:] = -1, 0.0
            convex = self.convex.get(k, np.zeros(n, dtype=bool))
            binary = [i for i in idx.tolist() if not convex[i]] if not self.relax else []
            d = pe.Var(binary, domain=pe.Binary)
            self.m.add_component(f"d{k}", d)
            self.n_unstable += len(idx)
            for r, i in enumerate(idx.tolist()):
                self.tick()
                zv, zc = form.var[i], form.coef[i]
                av = np.append(a[r], zv)
                self.m.cons.add(self.expr(av, np.append(1.0, -zc)) >= 0)  # a >= z
                if convex[i]:
                    continue
                li, ui = float(lo[i]), float(hi[i])
                if self.relax:
                    s = ui / (ui - li)
                    self.m.cons.add(self.expr(av, np.append(1.0, -s * zc), s * li) <= 0)  # a <= s (z - l)
                    continue
                self.binaries[(ordinal, i)] = d[i]
                # a <= z - l (1 - d), a <= u d
                self.m.cons.add(self.expr(av, np.append(1.0, -zc), li) - li * d[i] <= 0)
                self.m.cons.add(self.vars[a[r]] - ui * d[i] <= 0)
        return _Form(var, coef)


def encode_graph(graph: Graph, lower: FloatArray, upper: FloatArray, bounds: GraphBoxBounds,
                 phases: Sequence[NDArray[np.int8]] | None = None, relax: bool = False,
                 minimize_row: FloatArray | None = None, deadline: float = math.inf) -> Encoding:
    """Encode ``graph`` on the box ``[lower, upper]`` (see module docstring).

    ``bounds``: proven bounds of every node over the box (:class:`GraphBoxBounds`, finite).
    ``phases[r]`` (optional) fixes the neurons of the ``r``-th ReLU node of
    :func:`relu_nodes` (flat): +1 active, -1 inactive, 0 free. ``minimize_row`` (optional):
    the class scores' coefficients in an objective that will only be minimised (or
    constrained from above): the neurons of the last ReLUs whose coefficient in it is
    ``>= 0`` then need no binary (:func:`convex_neurons`); such an encoding is exact for
    that objective only (for any other it is a relaxation). ``deadline`` (a
    ``time.perf_counter()`` instant): past it, :class:`EncodingTimedOut` is raised (checked
    every :data:`DEADLINE_ROWS` rows)."""
    if not bounds.finite:
        raise OracleError("the graph's node bounds over the box are not all finite numbers: no MILP on them")
    convex = convex_neurons(graph, minimize_row) if minimize_row is not None else {}
    b = _Builder(graph, lower, upper, bounds, phases, relax, convex, deadline)
    live = live_nodes(graph)
    forms: dict[int, _Form] = {}
    ordinals = {k: r for r, k in enumerate(relu_nodes(graph))}
    for k, node in enumerate(graph.nodes):
        if k not in live:
            continue
        ins = [forms[i] for i in node.inputs]
        b.tick(DEADLINE_ROWS)  # a look at the deadline before every node
        if isinstance(node, gn.Input):
            f = _Form(np.arange(graph.n_inputs, dtype=np.int64)[:, None], np.ones((graph.n_inputs, 1)))
        elif isinstance(node, gn.LinearNode) and node.exact:
            f = ins[0].take(move_map(node, [node.in_shape]))
        elif isinstance(node, gn.LinearNode):
            u = node.inputs[0]  # variables once per tensor, shared by all its readers
            forms[u] = b.materialize(u, forms[u])
            f = b.linear(k, node, forms[u])
        elif isinstance(node, gn.ReLU):
            f = b.relu(k, ordinals[k], ins[0])
        elif isinstance(node, (gn.Add, gn.Sub)):
            sign = 1.0 if isinstance(node, gn.Add) else -1.0
            f = _Form(np.concatenate([ins[0].var, ins[1].var], axis=1),
                      np.concatenate([ins[0].coef, sign * ins[1].coef], axis=1))
        elif isinstance(node, gn.Concat):
            f = _stack(ins).take(move_map(node, [graph.nodes[i].shape for i in node.inputs]))
        else:  # pragma: no cover
            raise TypeError(f"no MILP encoding for a {node.kind} node")
        forms[k] = f
    out = forms[len(graph.nodes) - 1]
    logits = [b.expr(out.var[j], out.coef[j]) for j in range(graph.n_classes)]
    return Encoding(b.m, [b.m.x[i] for i in range(graph.n_inputs)], logits, b.binaries, b.n_unstable)


def convex_neurons(graph: Graph, row: FloatArray) -> dict[int, NDArray[np.bool_]]:
    """Per last ReLU node (a live ReLU no other ReLU reads, directly or not): which of its
    neurons have a coefficient ``>= 0`` in ``row . logits`` (``row`` over the classes),
    through the linear nodes, Add, Sub and Concat after it (float64; a wrong sign only
    makes the encoding a relaxation of the minimisation, never cuts a point off)."""
    g = graph
    live = live_nodes(g)
    relus = relu_nodes(g)
    ancestors = _ancestors(g)
    last = {r for r in relus if not any(r in ancestors[s] for s in relus)}
    lam: dict[int, Tensor] = {len(g.nodes) - 1: torch.tensor(np.asarray(row, dtype=np.float64))[None]}
    out: dict[int, NDArray[np.bool_]] = {}

    def push(u: int, c: Tensor) -> None:
        lam[u] = lam[u] + c if u in lam else c

    for v in sorted(live, reverse=True):
        if v not in lam:
            continue
        c = lam.pop(v)
        node = g.nodes[v]
        if isinstance(node, gn.ReLU):
            if v in last:
                out[v] = c.reshape(-1).numpy() >= 0
        elif isinstance(node, gn.LinearNode):
            push(node.inputs[0], node.apply_t(c))
        elif isinstance(node, gn.Add):
            push(node.inputs[0], c)
            push(node.inputs[1], c)
        elif isinstance(node, gn.Sub):
            push(node.inputs[0], c)
            push(node.inputs[1], -c)
        elif isinstance(node, gn.Concat):
            sizes = [g.nodes[i].shape[node.axis] for i in node.inputs]
            for i, part in zip(node.inputs, torch.split(c, sizes, dim=node.axis + 1)):
                push(i, part)
    return out


def encode_model(network: Network | Graph, lower: FloatArray, upper: FloatArray, bounds: Any,
                 **options: Any) -> Encoding:
    """:func:`encode_graph` for a graph, :func:`oracles.milp_encoding.encode` for a chain
    (``bounds`` as each takes them)."""
    if isinstance(network, Graph):
        return encode_graph(network, lower, upper, bounds, **options)
    return encode(network, lower, upper, bounds, **options)


def _ancestors(graph: Graph) -> list[frozenset[int]]:
    out: list[frozenset[int]] = []
    for node in graph.nodes:
        out.append(frozenset().union(*(out[i] | {i} for i in node.inputs)))
    return out


# -- what the milp oracle needs of a graph besides its encoding ----------------------------------
def box_bounds(gt: GraphTensors, lower: FloatArray, upper: FloatArray) -> tuple[NodeBounds, Tensor, Tensor]:
    """Graph CROWN's node bounds over the boxes ``[lower, upper]`` (``(B, n)``)."""
    lo, hi = torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64)
    with torch.no_grad(), sound_kernels(gt.device, gt.dtype):
        return node_bounds(gt, lo, hi), lo, hi


def crown_margins(gt: GraphTensors, nb: NodeBounds, lo: Tensor, hi: Tensor, label: int) -> tuple[FloatArray, FloatArray]:
    """CROWN's proven lower bounds of ``logit_label - logit_j`` (``(B, m)``, ``j != label``)
    and, per class, the vertex of the box that minimises CROWN's linear bound
    (``(B, m, n)``: its true margin bounds the minimum from above)."""
    spec = margin_spec(gt.graph.n_classes, label, lo.shape[0], lo.dtype, lo.device)
    with torch.no_grad(), sound_kernels(gt.device, gt.dtype):
        bound = backward(gt, nb, len(gt.graph.nodes) - 1, spec)
        margins = concretize_wide(bound, lo, hi)
    corners = torch.where(bound.coef > 0, lo[:, None], hi[:, None])
    return margins.numpy(), corners.numpy()


def term_magnitude(gt: GraphTensors, nb: NodeBounds, spec: Tensor) -> Tensor:
    """The scale of ``spec . logits`` over each box for the solvers' error model (as
    :func:`oracles.bounds.term_magnitude` for chains): the sum over the rounding linear
    nodes of ``S_k . (|W_k| s_in + |b_k|)``, and over Add / Sub of ``S_k . (s_a + s_b)``,
    where ``S_k`` bounds how much a change of node ``k``'s output can move the
    specification (``|spec|`` pulled back through ``|W|^T``, zero through dead neurons)
    and ``s`` are the node bounds' magnitudes. ``(B, m)``; ``inf`` where bounds are not
    finite."""
    g = gt.graph
    bsz, m = spec.shape[:2]
    sens: dict[int, Tensor] = {len(g.nodes) - 1: spec.abs()}
    total = spec.new_zeros(bsz, m)

    def push(u: int, s: Tensor) -> None:
        sens[u] = sens[u] + s if u in sens else s

    def dot(s: Tensor, v: Tensor) -> Tensor:
        return (s.flatten(2) @ v.flatten(1).unsqueeze(-1)).squeeze(-1)

    with torch.no_grad():
        for v in sorted(live_nodes(g), reverse=True):
            if v not in sens:
                continue
            s = sens.pop(v)
            node = g.nodes[v]
            if isinstance(node, gn.LinearNode):
                if not node.exact:
                    total = total + dot(s, nb.terms[v])
                push(node.inputs[0], node.apply_abs_t(s.reshape(bsz * m, *node.shape)).reshape(bsz, m, *node.in_shape))
            elif isinstance(node, gn.ReLU):
                u = node.inputs[0]
                push(u, s * (nb.upper[u] > 0).unsqueeze(1).to(s.dtype))
            elif isinstance(node, (gn.Add, gn.Sub)):
                a, c = node.inputs
                total = total + dot(s, nb.scale[a] + nb.scale[c])
                push(a, s)
                push(c, s)
            elif isinstance(node, gn.Concat):
                sizes = [g.nodes[i].shape[node.axis] for i in node.inputs]
                for i, part in zip(node.inputs, torch.split(s, sizes, dim=node.axis + 2)):
                    push(i, part)
    ok = torch.isfinite(total) & ~nb.invalid.unsqueeze(-1)
    return torch.where(ok, total, torch.full_like(total, torch.inf))


def margin_gradient(graph: Graph, x: FloatArray, label: int, j: int) -> FloatArray:
    """The gradient of ``logit_label - logit_j`` at ``x`` (float64 autograd: the linear
    piece ``x`` lies in, a ReLU at exactly 0 taken as inactive)."""
    p = torch.tensor(np.asarray(x, dtype=np.float64).reshape(1, -1), requires_grad=True)
    logits = evaluate(graph, p)
    (logits[0, label] - logits[0, j]).backward()  # type: ignore[index]
    return p.grad[0].numpy().copy()  # type: ignore[union-attr]


__all__ = ["EncodingTimedOut", "GraphBoxBounds", "box_bounds", "convex_neurons", "crown_margins", "encode_graph",
           "encode_model", "linear_triples",
           "live_nodes", "margin_gradient", "move_map", "relu_nodes", "term_magnitude"]
