"""A VNN-LIB region as a robustness query: the network a verifier is asked about.

Over one input box, the unsafe set of a :class:`~parallelepipedonn.vnnlib.Region` is
``OR_i AND_j (c_ij . y <= d_ij)``. The region is safe iff for every ``i`` some ``j`` has
``z_ij = c_ij . y - d_ij > 0``, i.e. iff ``min_i max_j z_ij > 0`` on the box. A
:class:`Reduction` is a network whose class scores are ``[0, -w_1, ..., -w_k]`` with
``w_i <= max_j z_ij`` (in exact arithmetic, at every point of the box), asked whether
class 0 is robust on the box: its margin is ``min_i w_i``, so VERIFIED proves the region
safe, with every oracle, cascade and search unchanged. Each row ``c_ij, d_ij`` is first
scaled by a positive number that makes ``c_ij`` coprime integers (exact in float64; the
sign of ``z_ij`` does not change). The constants are rounded toward ``-inf`` where they
become float64 numbers, so the network's ``w_i`` are never above the true ones: rounding
can only cost a proof, never make one. Counterexamples a verifier returns are candidates:
:mod:`parallelepipedonn.verify` confirms them on the original model, exactly, against the
property's own constants.

The forms, chosen by :func:`reduce_region`:

* ``robustness`` — the region is "class ``c`` strictly beats every other class"
  (``y_c <= y_j`` unsafe for every ``j != c``, the usual VNN-COMP robustness property):
  the model itself, asked about label ``c``.
* ``composed`` (chain models, one constraint per disjunct): the model's last affine map
  ``y = W h + b`` (``h >= 0``, the last ReLU's output) and the rows compose into one map,
  ``w_i = round_down(c_i W) h + round_down(c_i b - d_i)`` entry by entry (exact rational
  products, then rounded down: since ``h >= 0``, ``w_i <= z_i``).
* ``shifted`` (chain models, any constraints): the outputs pass through one more ReLU,
  ``y' = relu(W h + beta)`` with ``beta`` such that ``y - s = W h + beta >= 1`` on the box
  for ``s = b - beta`` (from proven bounds of ``y``: the ReLU is the identity there), and
  ``max_j`` is built from ReLUs on exact integer rows of ``y'``: ``max(a, b) = (a -
  sigma) + sigma + relu(b - a)``, the first ReLU again the identity on the box (``sigma``
  below a proven bound of ``a``); constants are exact rationals until rounded down.
* ``graph`` (graph models and oracles that read graphs: ``crown``, ``attack``): nodes
  appended to the model's graph, ``z = C y - round_up(d)``, ``max(a, b) = a + relu(b -
  a)`` with a skip connection, all weights small integers and no other constant.

A graph model asked through an oracle that reads only chains is expanded into its chain
first (:func:`oracles.chain.chain_network`, recorded as ``bridge``: the importer's
contract for the model's own layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from oracles.chain import GRAPH_ORACLES, chain_network

from . import graph_nodes as gn
from .exact_numbers import float_down, float_up
from .graph_exact import to_exact
from .network import Affine, Network, ReLU
from .vnnlib import OutputConstraint, Region

if TYPE_CHECKING:
    from .graph import Graph

FloatArray = NDArray[np.float64]
_EXACT_INT = 2**53


class ReductionError(Exception):
    """The region cannot be reduced here (proven bounds not finite, ...): the region's
    answer is unknown, with this reason."""


@dataclass(frozen=True, eq=False)
class Reduction:
    """Ask whether ``label`` is robust for ``network`` on ``[lower, upper]``: VERIFIED
    proves the region safe. ``form`` says how it was built (see the module docstring);
    ``bridge`` records the chain expansion of a graph model (or ``None``)."""

    network: Network | Graph
    label: int
    lower: FloatArray
    upper: FloatArray
    form: str
    bridge: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {"form": self.form, "network": self.network.describe(), "label": self.label,
                **({"bridge": self.bridge} if self.bridge else {})}


# -- rows ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Row:
    """``row . y <= rhs`` with coprime integer ``row`` (a scaled output constraint)."""

    row: tuple[int, ...]
    rhs: Fraction


def _rows(region: Region, n_outputs: int, path: str) -> list[list[_Row]]:
    out = []
    for disjunct in region.disjuncts:
        rows = []
        for c in disjunct:
            row, rhs = c.integer_row(n_outputs, path)
            rows.append(_Row(tuple(row), rhs))
        out.append(rows)
    return out


def robustness_label(region: Region, n_outputs: int) -> int | None:
    """The class ``c`` when the region's unsafe set is exactly "``y_c <= y_j`` for some
    ``j != c``" (``y_c < y_j`` counts too: proving ``y_c > y_j`` proves both), else ``None``."""
    if n_outputs < 2 or len(region.disjuncts) != n_outputs - 1:
        return None
    label, others = None, set()
    for disjunct in region.disjuncts:
        if len(disjunct) != 1:
            return None
        c: OutputConstraint = disjunct[0]
        if c.rhs != 0 or len(c.coefficients) != 2:
            return None
        (j1, a1), (j2, a2) = c.coefficients
        if a1 != -a2:
            return None
        pos, neg = (j1, j2) if a1 > 0 else (j2, j1)
        if label not in (None, pos):
            return None
        label = pos
        others.add(neg)
    return label if label is not None and others == set(range(n_outputs)) - {label} else None


# -- exact helpers --------------------------------------------------------------------------------
def _fraction(v: float) -> Fraction:
    return Fraction(float(v))


def _exact_rows_times(rows: list[tuple[int, ...]], weight: FloatArray) -> list[list[Fraction]]:
    """``rows @ weight`` exactly (integer rows, float64 weights), as fractions."""
    ints, exp = to_exact(weight)
    r = np.empty((len(rows), weight.shape[0]), dtype=object)
    for i, row in enumerate(rows):
        r[i, :] = [int(v) for v in row]
    prod = r.dot(ints)
    scale = Fraction(2) ** exp
    return [[Fraction(int(v)) * scale for v in line] for line in prod]


def _check_int(values: Any, where: str) -> None:
    if np.max(np.abs(np.asarray(values, dtype=object)), initial=0) > _EXACT_INT:
        raise ReductionError(f"{where}: an integer coefficient beyond 2^53 (not exact in float64)")


# -- chain forms -----------------------------------------------------------------------------------
def composed_chain(chain: Network, rows: list[_Row]) -> Network:
    """The ``composed`` form: one constraint per disjunct, a chain with a ReLU before its
    last affine map (so ``h >= 0``)."""
    last = chain.affines[-1]
    prods = _exact_rows_times([r.row for r in rows], last.weight)
    w = np.array([[float_down(q) for q in line] for line in prods], dtype=np.float64).reshape(len(rows), -1)
    bias = np.array([float_down(sum((c * _fraction(b) for c, b in zip(r.row, last.bias)), Fraction(0)) - r.rhs)
                     for r in rows], dtype=np.float64)
    final = Affine(np.vstack([np.zeros((1, last.in_features)), -w]), np.concatenate([[0.0], -bias]))
    return Network(chain.input_shape, tuple(chain.layers[:-1]) + (final,), f"{chain.name} + property")


@dataclass
class _Val:
    """A value of the max tree: ``row . H + const`` (``row`` integers over the current
    layer of ReLU outputs ``H``, ``const`` exact), at least ``lo`` and at most ``hi`` on the
    box (``hi`` only guides the margins of stability)."""

    row: list[int]
    const: Fraction
    lo: Fraction
    hi: Fraction


def output_bounds(chain: Network, lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Proven bounds of the chain's outputs over the box (CROWN's backward pass on interval
    bounds of the hidden layers, with its rounding slack: cheap, and looser than the
    oracles' own bounds, so that the shifted ReLUs are stable for them); :class:`ReductionError`
    when they are not finite numbers."""
    import torch

    from oracles.bounds import NetworkTensors, crown_bound, intermediate_bounds
    from oracles.precision import box_tensors, sound_kernels

    net = NetworkTensors.of(chain)
    lo, hi = box_tensors(lower[None], upper[None])
    m = chain.n_classes
    eye = torch.eye(m, dtype=torch.float64)
    with torch.no_grad(), sound_kernels("cpu"):
        inter = intermediate_bounds(net, lo, hi, method="ibp") if net.depth > 1 else []
        bounds = crown_bound(net, torch.cat([eye, -eye])[None], lo, hi, inter[:net.depth - 1])[0].numpy()
    low, high = bounds[:m], -bounds[m:]
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ReductionError("the proven bounds of the model's outputs over the box are not finite numbers")
    return low, high


def _passthrough(a: _Val, rows: list[list[int]], biases: list[float]) -> tuple[int, Fraction]:
    """Append the row ``a - sigma``, at least 1 on the box (its ReLU is the identity there):
    its index and ``sigma``."""
    tau = float_up(a.const - a.lo + 1 + (a.hi - a.lo))
    rows.append(a.row)
    biases.append(tau)
    return len(rows) - 1, a.const - _fraction(tau)


def shifted_chain(chain: Network, groups: list[list[_Row]], lower: FloatArray, upper: FloatArray) -> Network:
    """The ``shifted`` form (see the module docstring)."""
    ly, uy = output_bounds(chain, lower, upper)
    last = chain.affines[-1]
    m = last.out_features
    beta, shift = [], []
    for j in range(m):
        b, lj, uj = _fraction(last.bias[j]), _fraction(ly[j]), _fraction(uy[j])
        beta_j = float_up(b - lj + 1 + (uj - lj))  # y_j - s_j = W h + beta_j >= 1 + width on the box
        beta.append(beta_j)
        shift.append(b - _fraction(beta_j))
    low = [_fraction(ly[j]) - shift[j] for j in range(m)]  # bounds of y' = y - s
    high = [_fraction(uy[j]) - shift[j] for j in range(m)]
    layers: list = list(chain.layers[:-1]) + [Affine(last.weight, np.array(beta)), ReLU()]

    def value(r: _Row) -> _Val:
        const = sum((c * s for c, s in zip(r.row, shift)), Fraction(0)) - r.rhs
        lo = const + sum((c * (low[j] if c > 0 else high[j]) for j, c in enumerate(r.row)), Fraction(0))
        hi = const + sum((c * (high[j] if c > 0 else low[j]) for j, c in enumerate(r.row)), Fraction(0))
        return _Val(list(r.row), const, lo, hi)

    values = [[value(r) for r in rows] for rows in groups]
    depth = max(math.ceil(math.log2(len(v))) for v in values)
    width = m
    for _ in range(depth):
        pre_rows: list[list[int]] = []
        pre_bias: list[float] = []

        staged: list[list[tuple[list[int], Fraction, Fraction, Fraction]]] = []
        for vals in values:
            nxt = []
            for t in range(0, len(vals), 2):
                pair = vals[t:t + 2]
                a = max(pair, key=lambda v: v.lo)
                p, sigma = _passthrough(a, pre_rows, pre_bias)
                if len(pair) == 1:
                    nxt.append(([p], sigma, a.lo, a.hi))
                    continue
                b = pair[1] if a is pair[0] else pair[0]
                pre_rows.append([x - y for x, y in zip(b.row, a.row)])
                pre_bias.append(float_down(b.const - a.const))  # relu(q) only shrinks: max(a, b) from below
                q = len(pre_rows) - 1
                nxt.append(([p, q], sigma, a.lo, max(a.hi, b.hi)))
            staged.append(nxt)
        _check_int(pre_rows, "the property network")
        layers += [Affine(np.array(pre_rows, dtype=np.float64).reshape(len(pre_rows), width),
                          np.array(pre_bias, dtype=np.float64)), ReLU()]
        width = len(pre_rows)
        values = []
        for nxt in staged:
            group = []
            for idx, sigma, lo, hi in nxt:
                row = [0] * width
                for k in idx:
                    row[k] = 1
                group.append(_Val(row, sigma, lo, hi))
            values.append(group)
    weight = np.zeros((len(values) + 1, width))
    bias = np.zeros(len(values) + 1)
    for i, (w,) in enumerate(values, start=1):
        weight[i] = -np.array(w.row, dtype=np.float64)
        bias[i] = -float_down(w.const)
    _check_int(weight, "the property network")
    layers.append(Affine(weight, bias))
    return Network(chain.input_shape, tuple(layers), f"{chain.name} + property")


# -- graph form ------------------------------------------------------------------------------------
def property_graph(graph: Graph, groups: list[list[_Row]]) -> Graph:
    """The ``graph`` form: the model's graph with the property's nodes appended."""
    from .graph import Graph

    nodes = list(graph.nodes)
    m = graph.n_classes
    flat = [r for rows in groups for r in rows]
    weight = np.array([r.row for r in flat], dtype=np.float64)
    nodes.append(gn.Dense(inputs=(len(nodes) - 1,), shape=(len(flat),), in_shape=(m,), weight=weight,
                          bias_=np.array([-float_up(r.rhs) for r in flat]), name="property rows"))
    positions, k = [], 0
    for rows in groups:
        positions.append(list(range(k, k + len(rows))))
        k += len(rows)
    level = 0
    while any(len(p) > 1 for p in positions):
        level += 1
        cur, size = len(nodes) - 1, k
        diff, sel, new_positions, k = [], [], [], 0
        for pos in positions:
            mine = []
            for t in range(0, len(pos), 2):
                a = pos[t]
                d, s = np.zeros(size), np.zeros(size)
                s[a] = 1.0
                if t + 1 < len(pos):
                    d[pos[t + 1]], d[a] = 1.0, -1.0
                diff.append(d)
                sel.append(s)
                mine.append(k)
                k += 1
            new_positions.append(mine)
        positions = new_positions
        zeros = np.zeros(k)
        nodes.append(gn.Dense(inputs=(cur,), shape=(k,), in_shape=(size,), weight=np.array(diff), bias_=zeros,
                              name=f"property max {level}: b - a"))
        nodes.append(gn.ReLU(inputs=(len(nodes) - 1,), shape=(k,), name=f"property max {level}: relu"))
        nodes.append(gn.Dense(inputs=(cur,), shape=(k,), in_shape=(size,), weight=np.array(sel), bias_=zeros,
                              name=f"property max {level}: a"))
        nodes.append(gn.Add(inputs=(len(nodes) - 1, len(nodes) - 2), shape=(k,), name=f"property max {level}"))
    weight = np.zeros((len(positions) + 1, k))
    for i, (p,) in enumerate(positions, start=1):
        weight[i, p] = -1.0
    nodes.append(gn.Dense(inputs=(len(nodes) - 1,), shape=(len(positions) + 1,), in_shape=(k,), weight=weight,
                          bias_=np.zeros(len(positions) + 1), name="property scores"))
    return Graph(graph.input_shape, tuple(nodes), f"{graph.name} + property")


# -- the choice ----------------------------------------------------------------------------------------
def reads_graphs(oracle_name: str) -> bool:
    """Whether every stage of ``oracle_name`` reads graphs as they are."""
    return all(part.strip() in GRAPH_ORACLES for part in oracle_name.split("+"))


def reduce_region(model: Network | Graph, region: Region, oracle_name: str, path: str = "<property>") -> Reduction:
    """The :class:`Reduction` of ``region`` for ``model`` and the oracle ``oracle_name``
    (see the module docstring). Raises :class:`ReductionError` when it cannot be built
    (the region's answer is then unknown), :class:`~parallelepipedonn.errors.OracleError`
    for a residual graph with an oracle that reads only chains, and
    :class:`~parallelepipedonn.errors.PropertyError` for a coefficient beyond float64."""
    lower, upper = region.outer_box()
    n_out = model.n_classes
    label = robustness_label(region, n_out)
    if label is not None:
        return Reduction(model, label, lower, upper, "robustness")
    if any(not d for d in region.disjuncts):
        raise ValueError("a disjunct without constraints: every point of the box is unsafe (no reduction)")
    groups = _rows(region, n_out, path)
    chain = model if isinstance(model, Network) else model.as_network()
    if chain is None and reads_graphs(oracle_name):
        return Reduction(property_graph(model, groups), 0, lower, upper, "graph")  # type: ignore[arg-type]
    bridge = None
    if chain is None:
        chain, bridge = chain_network(model, oracle_name)
    try:
        if all(len(rows) == 1 for rows in groups) and len(chain.affines) > 1:
            return Reduction(composed_chain(chain, [rows[0] for rows in groups]), 0, lower, upper, "composed", bridge)
        return Reduction(shifted_chain(chain, groups, lower, upper), 0, lower, upper, "shifted", bridge)
    except OverflowError as exc:  # a product of the property's rows and the weights beyond float64
        raise ReductionError(f"the property's constraints composed with the network overflow float64: {exc}") from None


__all__ = ["Reduction", "ReductionError", "output_bounds", "property_graph", "reads_graphs", "reduce_region",
           "robustness_label"]

