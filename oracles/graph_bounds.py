"""CROWN over the DAG IR (:class:`~parallelepipedonn.graph.Graph`), batched over boxes.

Three passes, in torch, in one dtype (float64 by default, float32 on request) except the
wide reductions (constants, concretisation), always in float64:

* **bounds of every node** (:func:`node_bounds`), in topological order: interval (IBP)
  bounds in centre-radius form through linear nodes (``W c +- |W| r``, convolutions
  applied as convolutions), tightened by CROWN for the input of every ReLU whose IBP
  bounds are not already exact (those behind a ReLU, an Add / Sub, or two linear nodes),
  for the neurons unstable in some box, reusing every bound computed before (for a
  convolution over a chain of convolutions and ReLUs, on each row's receptive-field
  window only: :mod:`oracles.graph_windows`, the same bounds up to summation order;
  optionally the first side of each neuron in float32: :func:`_tighten`);
* **backward** (:func:`backward`): a linear lower bound of ``spec . z_t`` as a function of
  the input, valid on the box. Coefficients are tensors shaped like each node's output
  ``(B, m, *shape)``, pulled back through linear nodes with their transpose
  (the convolution's transpose: no convolution is ever a dense matrix), summed
  where branches rejoin (Add: both inputs get the coefficient; Sub: negated for the
  second), relaxed at ReLUs with :func:`~oracles.bounds.relu_relaxation`;
* **concretisation** over the box (:func:`concretize_wide`).

Rounding (the error model of :mod:`parallelepipedonn.tolerances`, as in
:mod:`oracles.bounds`): the backward pass carries, per row, the magnitude of the terms
of every rounded operation — for each linear node ``|Lambda| . (|W| s_in + |b|)``
(``s_in`` a proven bound of ``|input|``, from the node bounds; ``|W| s_in`` with the node's
absolute-value apply), for every sum of several coefficients where branches rejoin
``(sum of |contributions|) . s``, for a ReLU or the input whose coefficient was not
produced by a linear node that already covered its product ``|Lambda| . s`` — and every
bound is moved outward by each of these magnitudes times the relative slack of its own
operation (:mod:`oracles.graph_rounding`: sized by the node's fan-out, the number of
branches, or, for the float64 reductions, the graph's widest sum; in float64 all are
``relative_slack(n_terms)``, ``n_terms`` the widest sum of the graph plus four per linear
node and rejoin); plus an underflow term and ``ABS_SLACK``. Interval bounds are moved
outward by their own fan-in's slack. Any non-finite number makes the box's bounds ``-inf``
(UNKNOWN).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph, evaluate
from parallelepipedonn.tolerances import ABS_SLACK, relative_slack, smallest_subnormal, unit_roundoff

from .bounds import (
    ReluRelaxation,
    check_deadline,
    input_scale,
    margin_spec,
    nonfinite_rows,
    relu_relaxation,
    settle,
)
from .graph_backward import backward, concretize_wide
from .graph_rounding import Slacks, round_down
from .graph_windows import Window, window_plan, windowed_bounds
from .precision import outward, sound_kernels, subnormal_rounding

Tensor = torch.Tensor

#: Elements of one coefficient tensor ``(B, rows, numel)`` per chunk of intermediate rows, by
#: the dtype's size: in float64 small enough (2 MiB) that temporaries stay in cache and are
#: reused from the allocator (2**22 numbers were 4x slower on the CIFAR convnet's windowed
#: bounds); in float32, whose products are cheaper, larger, to spare per-chunk work (that
#: net at batch 1: 79 ms against 93 ms with 2**18, interleaved medians; 2**21 was slower).
CHUNK_ELEMENTS = {4: 2**20, 8: 2**18}

#: Whether CROWN bounds an unstable neuron's more promising side first and the other only
#: where the first leaves it unstable (:func:`_tighten`); off: both sides of each.
ONE_SIDE_FIRST = True


@dataclass(frozen=True)
class GraphTensors:
    """A graph prepared for bound propagation in ``dtype`` on ``device``: the relative
    slack ``rel`` and underflow unit ``tiny`` of its widest sums, and, per node, whether
    its interval bounds need CROWN (``needs_crown``) and its ancestors."""

    graph: Graph
    dtype: torch.dtype
    device: torch.device
    rel: float
    tiny: float
    needs_crown: tuple[bool, ...]
    ancestors: tuple[frozenset[int], ...]
    relu_inputs: frozenset[int]
    windows: dict[int, tuple[Window, ...]]
    slacks: Slacks
    #: per node, ``(absolute rounding error of its parameters in dtype) / slacks.smallest``: weights
    #: below the dtype's normal range (float32: |w| < 2^-126) round with an absolute, not
    #: a relative, error; ``weight_slack * (sum s_in + 1)`` added to the node's terms covers
    #: it (0 in float64, where the weights are the stored ones)
    weight_slack: tuple[float, ...] = ()
    #: the same graph in float32, in which :func:`_tighten` bounds each neuron's first side
    #: (None: in ``dtype``)
    float32_first: GraphTensors | None = None

    @classmethod
    def of(cls, graph: Graph, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
           float32_first: bool = False) -> GraphTensors:
        """``float32_first`` (``dtype`` float64): each unstable neuron's first side bounded
        in float32 (:func:`_tighten`)."""
        nodes = graph.nodes
        widest, steps = graph.n_inputs, 0
        state: list[int] = []  # 0: the input moved, 1: one linear map of it, 2: anything else
        ancestors: list[frozenset[int]] = []
        for k, node in enumerate(nodes):
            ancestors.append(frozenset().union(*(ancestors[i] | {i} for i in node.inputs)))
            if isinstance(node, gn.LinearNode) and not node.exact:
                widest = max(widest, node.fan_in, node.fan_out, node.numel, int(torch.Size(node.in_shape).numel()))
                steps += 1
            if isinstance(node, (gn.Add, gn.Sub, gn.Concat)) or len(graph.consumers[k]) > 1:
                steps += 1
            if isinstance(node, gn.Input):
                state.append(0)
            elif isinstance(node, gn.LinearNode):
                state.append(min(2, state[node.inputs[0]] + (0 if node.exact else 1)))
            elif isinstance(node, gn.Concat):
                state.append(max(state[i] for i in node.inputs))
            else:
                state.append(2)
        n_terms = widest + 4 * steps + 8
        relu_inputs = frozenset(n.inputs[0] for n in nodes if isinstance(n, gn.ReLU))
        needs = tuple(s == 2 for s in state)
        plans = {k: window_plan(graph, k) for k in relu_inputs if needs[k]}
        slacks = Slacks.of(graph, dtype, n_terms)
        return cls(graph, dtype, torch.device(device), relative_slack(n_terms, dtype),
                   4.0 * (widest + 2) * smallest_subnormal(dtype), needs, tuple(ancestors),
                   relu_inputs, {k: p for k, p in plans.items() if p is not None}, slacks,
                   tuple(subnormal_rounding(n.params(), dtype) / slacks.smallest for n in nodes),
                   cls.of(graph, device, torch.float32) if float32_first and dtype == torch.float64 else None)


def _terms(gt: GraphTensors, k: int, s_in: Tensor) -> Tensor:
    """``|W| s_in + |b|`` of linear node ``k`` (plus its weights' absolute rounding)."""
    node = gt.graph.nodes[k]
    terms = node.apply_abs(s_in)
    ab = node.abs_bias(gt.dtype, gt.device)
    terms = terms if ab is None else terms + ab
    if gt.weight_slack and gt.weight_slack[k]:
        terms = terms + gt.weight_slack[k] * (s_in.flatten(1).sum(1) + 1).view(-1, *([1] * len(node.shape)))
    return terms


@dataclass
class NodeBounds:
    """Per node (index): proven bounds ``lower``/``upper`` of its output (``(B, *shape)``),
    a bound ``scale`` of its absolute value (for ReLU outputs: the relaxation's scale, a
    bound of ``|input|`` where the neuron is not dead), ``terms`` ``|W| s_in + |b|`` of its
    linear map; per ReLU node, the relaxation of its input; ``invalid`` boxes (``(B,)``)."""

    lower: list[Tensor]
    upper: list[Tensor]
    scale: list[Tensor]
    terms: dict[int, Tensor]
    relax: dict[int, ReluRelaxation]
    invalid: Tensor


def _poison(lo: Tensor, hi: Tensor, bad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes with a non-finite bound (or already ``bad``) get ``(-inf, inf)``."""
    bad = bad | nonfinite_rows(lo, hi)
    if bool(bad.any()):
        shape = (-1, *([1] * (lo.dim() - 1)))
        lo = torch.where(bad.view(shape), torch.full_like(lo, -torch.inf), lo)
        hi = torch.where(bad.view(shape), torch.full_like(hi, torch.inf), hi)
    return lo, hi, bad


def _interval(gt: GraphTensors, k: int, nb: NodeBounds) -> tuple[Tensor, Tensor]:
    """Interval bounds of node ``k`` from its inputs' bounds, moved outward by their
    rounding error."""
    node = gt.graph.nodes[k]
    los, his = [nb.lower[i] for i in node.inputs], [nb.upper[i] for i in node.inputs]
    if isinstance(node, gn.ReLU):
        return los[0].clamp(min=0), his[0].clamp(min=0)
    if isinstance(node, gn.Concat):
        return torch.cat(los, dim=node.axis + 1), torch.cat(his, dim=node.axis + 1)
    if isinstance(node, (gn.Add, gn.Sub)):
        lo, hi = (los[0] + los[1], his[0] + his[1]) if isinstance(node, gn.Add) else \
            (los[0] - his[1], his[0] - los[1])
        slack = gt.slacks.join * (nb.scale[node.inputs[0]] + nb.scale[node.inputs[1]]) + ABS_SLACK
        return lo - slack, hi + slack
    assert isinstance(node, gn.LinearNode)
    if node.exact:
        return node.apply(los[0]), node.apply(his[0])
    center, radius = (los[0] + his[0]) / 2, (his[0] - los[0]) / 2
    mid, rad = node.apply(center), node.apply_abs(radius)
    b = node.bias(gt.dtype, gt.device)
    mid = mid if b is None else mid + b
    u = node.inputs[0]
    s_in, terms = nb.scale[u], nb.terms[k]
    if isinstance(gt.graph.nodes[u], gn.ReLU):  # its scale bounds |ReLU input|: larger than needed here
        s_in = torch.maximum(los[0].abs(), his[0].abs())
        terms = _terms(gt, k, s_in)
    slack = gt.slacks.fwd[k] * terms + gt.tiny * (s_in.flatten(1).sum(1) + 1).view(-1, *([1] * len(node.shape))) \
        + ABS_SLACK
    return mid - rad - slack, mid + rad + slack


def node_bounds(gt: GraphTensors, lower: Tensor, upper: Tensor, method: str = "crown",
                prior: dict[int, tuple[Tensor, Tensor]] | None = None, deadline: float = math.inf) -> NodeBounds:
    """Bounds of every node over each box ``[lower, upper]`` (``(B, n)``): see the module
    docstring. ``method="ibp"``: interval bounds only. ``prior`` (optional): per node
    tightened by CROWN, bounds ``(B, *shape)`` already proven for each box (e.g. those of
    a box containing it: bounds of a superset hold on a subset; ``-inf`` / ``inf`` where
    none), intersected with its interval bounds before CROWN tightens the neurons that are
    still unstable. ``deadline`` (optional): looked at before each node CROWN tightens
    (:func:`~oracles.bounds.check_deadline`: :class:`~oracles.bounds.BoundsTimedOut`)."""
    g = gt.graph
    bsz = lower.shape[0]
    nb = NodeBounds([], [], [], {}, {}, torch.zeros(bsz, dtype=torch.bool, device=lower.device))
    centers: list[Tensor] = []
    first32: _Float32Bounds | None = None

    def center() -> list[Tensor]:  # every node's value at each box's center: which side to bound first
        if not centers:
            centers.extend(evaluate(g, (lower + upper) / 2, keep=True))
        return centers

    for k, node in enumerate(g.nodes):
        if isinstance(node, gn.Input):
            lo, hi = lower.reshape(bsz, *node.shape), upper.reshape(bsz, *node.shape)
            nb.lower.append(lo)
            nb.upper.append(hi)
            nb.scale.append(input_scale(lo, hi))
            continue
        if isinstance(node, gn.LinearNode) and not node.exact:
            nb.terms[k] = _terms(gt, k, nb.scale[node.inputs[0]])
        lo, hi = _interval(gt, k, nb)
        lo, hi, nb.invalid = _poison(lo, hi, nb.invalid)
        if k in gt.relu_inputs and gt.needs_crown[k] and method == "crown" and not isinstance(node, gn.ReLU):
            # (a ReLU's bounds are its input's, clamped: nothing to tighten, no relaxation yet)
            if prior is not None and k in prior:
                lo, hi = torch.maximum(lo, prior[k][0]), torch.minimum(hi, prior[k][1])
            nb.lower.append(lo)
            nb.upper.append(hi)
            nb.scale.append(torch.maximum(lo.abs(), hi.abs()))
            check_deadline(deadline)
            # float32 first sides for a box's own bounds, not where a superset's bounds start
            # (its neurons still unstable there mostly stay so: both sides in float64 anyway)
            fresh = prior is None or k not in prior
            if gt.float32_first is not None and first32 is None and fresh:
                first32 = _Float32Bounds(gt.float32_first, lower, upper)
            lo, hi = _tighten(gt, k, nb, lower, upper, center if ONE_SIDE_FIRST else None,
                              first32 if fresh else None, deadline)
            lo, hi, nb.invalid = _poison(lo, hi, nb.invalid)
            nb.lower.pop(), nb.upper.pop(), nb.scale.pop()
        if isinstance(node, gn.ReLU):
            u = node.inputs[0]
            r = relu_relaxation(nb.lower[u].flatten(1), nb.upper[u].flatten(1))
            nb.relax[k] = r
            nb.invalid = nb.invalid | r.invalid
            scale = r.scale.reshape(bsz, *node.shape)
        elif isinstance(node, gn.LinearNode) and node.exact:
            scale = node.apply(nb.scale[node.inputs[0]])
        elif isinstance(node, gn.Concat):
            scale = torch.cat([nb.scale[i] for i in node.inputs], dim=node.axis + 1)
        else:
            scale = torch.maximum(lo.abs(), hi.abs())
        nb.lower.append(lo)
        nb.upper.append(hi)
        nb.scale.append(scale)
    return nb


def _tighten(gt: GraphTensors, k: int, nb: NodeBounds, lower: Tensor, upper: Tensor,
             center: Callable[[], list[Tensor]] | None = None, first32: _Float32Bounds | None = None,
             deadline: float = math.inf) -> tuple[Tensor, Tensor]:
    """Node ``k``'s interval bounds intersected with CROWN's, for the neurons unstable in
    each box (its own: a box's bounds do not depend on the other boxes of the batch), in
    chunks of :data:`CHUNK_ELEMENTS` coefficients. When ``k`` is a linear node, the first
    step of the pass is its rows ``W^T e_i``
    (:meth:`~parallelepipedonn.graph_nodes.LinearNode.rows_t`); a node with a window plan
    runs :mod:`oracles.graph_windows`.

    With ``center`` (called: every node's value at each box's center), in each box whose
    rows of both sides would fill more than one chunk, one side first: the lower bound of a
    neuron positive at the center (it cannot be dead there: proving it active settles it),
    the upper bound of the others (proving it dead settles it); the other side only for
    the neurons still unstable. A neuron proven stable keeps its interval bound on the other
    side (sound; its relaxation, exact, does not read it), in both modes
    (:func:`~oracles.bounds.settle`): a box's bounds do not depend on the batch.

    With ``first32`` (float64 passes; :attr:`GraphTensors.float32_first`), the first sides
    are bounded in float32 (its own rounding slack: sound, looser by at most that slack,
    and about twice as fast on a CPU), and both sides in float64 where the neuron is still
    unstable: a neuron still unstable gets the float64 pass's bounds, one settled the same
    exact relaxation; its proven side holds the float32 bound (which later interval bounds
    read). Faster where most neurons settle on their first side (a box's own bounds, not
    those a superset's start: :func:`node_bounds` passes it for those only). ``deadline``:
    looked at before each chunk of rows (:func:`~oracles.bounds.check_deadline`)."""
    lo, hi = nb.lower[k].flatten(1), nb.upper[k].flatten(1)
    box, idx = ((lo < 0) & (hi > 0)).nonzero(as_tuple=True)  # (box, neuron) pairs, by box
    if box.numel() == 0:
        return nb.lower[k], nb.upper[k]
    new_lo, new_hi = lo.clone(), hi.clone()
    all_rows = box, idx
    maps: dict = {}  # the windows of the maps, cut once for all chunks
    if center is None:
        one = None
    else:  # one side first in the boxes whose rows fill more than a chunk (else: one pass)
        counts, fits = torch.bincount(box, minlength=lo.shape[0]), _chunk(gt, k, 1)
        one = (2 * counts > fits)[box] if 2 * int(counts.max()) > fits else None
    if one is None or not bool(one.all()):
        rest = (box, idx) if one is None else (box[~one], idx[~one])
        both = torch.tensor([1.0, -1.0], dtype=gt.dtype, device=lo.device).expand(rest[0].numel(), 2)
        _signed_bounds(gt, k, nb, lower, upper, *rest, both, new_lo, new_hi, maps, deadline)
    if one is not None and bool(one.any()):
        box, idx = box[one], idx[one]
        first = torch.where(center()[k].flatten(1)[box, idx] >= 0, 1.0, -1.0).to(gt.dtype).unsqueeze(1)
        if first32 is None:
            _signed_bounds(gt, k, nb, lower, upper, box, idx, first, new_lo, new_hi, maps, deadline)
        else:
            gs = first32.gt
            with sound_kernels(gs.device, gs.dtype):
                _signed_bounds(gs, k, first32.bounds(nb, k), first32.lower, first32.upper, box, idx,
                               first.to(gs.dtype), new_lo, new_hi, {}, deadline)
        still = (new_lo[box, idx] < 0) & (new_hi[box, idx] > 0)
        if bool(still.any()):
            # the other side; after a float32 first side, both sides in float64
            signs = -first[still] if first32 is None else \
                torch.tensor([1.0, -1.0], dtype=gt.dtype, device=lo.device).expand(int(still.sum()), 2)
            _signed_bounds(gt, k, nb, lower, upper, box[still], idx[still], signs, new_lo, new_hi, maps, deadline)
    box, idx = all_rows
    settle(new_lo, new_hi, lo, hi, box, idx)
    return new_lo.reshape(nb.lower[k].shape), new_hi.reshape(nb.upper[k].shape)


class _Float32Bounds:
    """The node bounds of one :func:`node_bounds` call in float32 (``gt``: the graph's
    float32 twin), for :func:`_tighten`'s first sides: bounds rounded outward (each still
    a bound), scales up; terms and relaxations computed from them as the float32 pass
    computes its own; the boxes as :func:`~oracles.precision.box_tensors` makes them.
    The nodes before the one tightened are final: converted once."""

    def __init__(self, gt: GraphTensors, lower: Tensor, upper: Tensor) -> None:
        self.gt = gt
        self.lower, self.upper = outward(lower, upper, gt.dtype)
        self.nb = NodeBounds([], [], [], {}, {}, torch.zeros(0, dtype=torch.bool))
        self.final = 0  # the nodes converted for good

    def bounds(self, nb: NodeBounds, k: int) -> NodeBounds:
        """``nb`` (nodes ``0 .. k``, those before ``k`` final) in float32."""
        out, dt, nodes = self.nb, self.gt.dtype, self.gt.graph.nodes
        del out.lower[self.final:], out.upper[self.final:], out.scale[self.final:]
        for j in range(self.final, k + 1):
            lo, hi = outward(nb.lower[j], nb.upper[j], dt, even=False)
            out.lower.append(lo)
            out.upper.append(hi)
            out.scale.append(outward(nb.scale[j], nb.scale[j], dt, even=False)[1])
            if j in nb.terms:
                out.terms[j] = _terms(self.gt, j, out.scale[nodes[j].inputs[0]])
            if j in nb.relax:
                u = nodes[j].inputs[0]
                out.relax[j] = relu_relaxation(out.lower[u].flatten(1), out.upper[u].flatten(1))
        self.final = k
        out.invalid = nb.invalid
        return out


def _chunk(gt: GraphTensors, k: int, n_signs: int) -> int:
    """Neurons of node ``k`` per chunk of :func:`_signed_bounds` with ``n_signs`` rows each."""
    plan = gt.windows.get(k)
    if plan is not None:  # rows of one window each (graph_windows)
        widest = max(gt.graph.nodes[w.node].shape[0] * w.size[0] * w.size[1] for w in plan)
    else:
        widest = max(gt.graph.nodes[i].numel for i in gt.ancestors[k] | {k})
    return max(1, CHUNK_ELEMENTS.get(gt.dtype.itemsize, 2**18) // (n_signs * widest))


def _box_chunks(box: Tensor, chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of chunks of at most ``chunk`` rows of ``box`` (sorted): a box's
    rows apart from the other boxes' wherever it has half a chunk or more (a chunk of one
    box reads its bounds as a broadcast view, not copied per row), the other boxes' rows
    together."""
    counts = torch.unique_consecutive(box, return_counts=True)[1].tolist()
    out: list[tuple[int, int]] = []
    start = pos = 0
    for c in counts:
        if 2 * c >= chunk:
            if pos > start:
                out.append((start, pos))
            out += [(a, min(a + chunk, pos + c)) for a in range(pos, pos + c, chunk)]
            start = pos + c
        elif pos + c - start > chunk:
            out.append((start, pos))
            start = pos
        pos += c
    if pos > start:
        out.append((start, pos))
    return out


def _signed_bounds(gt: GraphTensors, k: int, nb: NodeBounds, lower: Tensor, upper: Tensor, box: Tensor,
                   idx: Tensor, signs: Tensor, new_lo: Tensor, new_hi: Tensor, maps: dict,
                   deadline: float = math.inf) -> None:
    """CROWN's lower bound of ``s z_k[box[r], idx[r]]`` for each sign ``s`` of ``signs[r]``
    (``(p, S)``, ±1): ``new_lo`` raised to it where ``s = 1``, ``new_hi`` lowered to its
    negation where ``s = -1`` (flat ``(B, n)``, in place); ``deadline`` looked at before
    each chunk."""
    node = gt.graph.nodes[k]
    n, n_signs = new_lo.shape[1], signs.shape[1]
    plan = gt.windows.get(k)
    chunk = _chunk(gt, k, n_signs)
    linear = isinstance(node, gn.LinearNode) and not node.exact
    wide = torch.float64
    for start, stop in _box_chunks(box, chunk):
        check_deadline(deadline)
        b, i, sg = box[start:stop], idx[start:stop], signs[start:stop]
        p = b.numel()
        if plan is not None:
            vals = windowed_bounds(gt, nb, k, plan, b, i, lower, upper, maps, sg)
        else:
            if linear:
                u = node.inputs[0]
                first = node.rows_t(i.view(1, p), gt.dtype).view(p, 1, *node.in_shape)
                bias = node.bias(gt.dtype, gt.device)
                const = bias.expand(1, *node.shape).reshape(-1)[i] if bias is not None else new_lo.new_zeros(p)
                mag = nb.terms[k].flatten(1)[b, i]
                under = (nb.scale[u].flatten(1).sum(1) + 1)[b].unsqueeze(1)
                spec = first * sg.view(p, n_signs, *([1] * len(node.in_shape)))  # exact: times 1 or -1
                bound = backward(gt, nb, u, spec, covered=True, const=(const.unsqueeze(1) * sg).to(wide),
                                 error=gt.slacks.back[k] * mag.unsqueeze(1).expand(p, n_signs).to(wide),
                                 underflow=under, rows=b)
            else:
                eye = torch.zeros(p, n_signs, n, dtype=gt.dtype, device=new_lo.device)
                eye[torch.arange(p, device=new_lo.device), :, i] = sg
                bound = backward(gt, nb, k, eye.reshape(p, n_signs, *node.shape), rows=b)
            vals = concretize_wide(bound, lower, upper, rows=b)
        vals = round_down(vals, gt.dtype)
        if n_signs == 2:  # (1, -1): the lower and the upper bound
            lows, highs = vals[:, 0], -vals[:, 1]
        else:  # one side each: the other bound stays
            up = sg[:, 0] > 0
            lows = torch.where(up, vals[:, 0], -torch.inf)
            highs = torch.where(up, torch.inf, -vals[:, 0])
        new_lo[b, i] = torch.maximum(lows.to(new_lo.dtype), new_lo[b, i])
        new_hi[b, i] = torch.minimum(highs.to(new_hi.dtype), new_hi[b, i])


def margin_lower_bounds(gt: GraphTensors, lower: Tensor, upper: Tensor, label: int,
                        method: str = "crown", prior: dict[int, tuple[Tensor, Tensor]] | None = None,
                        keep: list[NodeBounds] | None = None, deadline: float = math.inf) -> Tensor:
    """Proven lower bounds of ``logit_label - logit_j`` (``j != label``) over each box
    (``(B, n)`` tensors in ``gt.dtype``): shape ``(B, n_classes - 1)``; ``-inf`` where
    nothing is proven. ``prior``, ``deadline``: see :func:`node_bounds`; ``keep`` (optional)
    receives the node bounds."""
    with sound_kernels(gt.device, gt.dtype):
        nb = node_bounds(gt, lower, upper, method, prior, deadline=deadline)
        if keep is not None:
            keep.append(nb)
        spec = margin_spec(gt.graph.n_classes, label, lower.shape[0], lower.dtype, lower.device)
        return concretize_wide(backward(gt, nb, len(gt.graph.nodes) - 1, spec), lower, upper)


def tightened(gt: GraphTensors, method: str = "crown") -> tuple[int, ...]:
    """The nodes whose bounds CROWN tightens (inputs of ReLUs whose interval bounds are
    not exact): those a ``prior`` of :func:`node_bounds` can start from."""
    if method != "crown":
        return ()
    return tuple(sorted(k for k in gt.relu_inputs if gt.needs_crown[k] and not isinstance(gt.graph.nodes[k], gn.ReLU)))


__all__ = ["GraphTensors", "NodeBounds", "backward", "margin_lower_bounds", "node_bounds", "tightened",
           "unit_roundoff"]
