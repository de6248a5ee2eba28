"""``milp``: exact MILP encoding (pyomo) solved by HiGHS — sound and complete.

Robustness of a box: for every class ``j`` whose margin alpha-CROWN cannot prove, one
MILP minimises ``logit_label - logit_j`` over the box (inputs along which that margin is
monotone fixed first; pre-activation bounds from CROWN/interval propagation over the
box; stable neurons without binaries; big-M for the rest; the last layer's convex
neurons without binaries). A row is proven only if the
solver's *dual bound* exceeds :data:`PROOF_MARGIN`. An incumbent whose objective is at most
:data:`PROOF_MARGIN` is a counterexample candidate, whatever the sign HiGHS reports for
it (at the boundary that sign is rounding noise: HiGHS 1.16 reported ``+5.9e-17`` for a
point whose exact margin is ``-1.3e-17``): it counts only once a forward pass confirms it
(exact arithmetic near the boundary), else it is pushed, in geometric steps, towards the
box's vertices that lower the margin until one is confirmed. A time-out or any other
solver status is UNKNOWN.

Class-region answers (witnesses) come from MILPs over a slight superset of the class
region (:data:`CLASS_SLACK`); an optimum on that superset's edge, a hair outside the
class, is no witness: it is confirmed as a class point (exact arithmetic near ties) or,
failing that, the problem is solved again with the class rows moved *into* the class
(:data:`INTERIOR_MARGINS`) and that optimum confirmed instead.

Also answers the distance query (the exact best apothem, :meth:`MilpOracle.min_distance`)
and the class-region and coordinate-extreme queries (see :mod:`oracles.base`).

A :class:`~parallelepipedonn.graph.Graph` is read as it is (a Dense/ReLU chain graph as its
chain): encoded by :mod:`oracles.milp_graph` on graph CROWN's node bounds, classes ruled
out by alpha-CROWN over the graph, one encoding of the box shared by the classes' MILPs
(one persistent solver: the objective and the cutoff row replaced, tolerances and time
limit retuned per class); the chain-only shortcuts (inputs along which the margin is
monotone, first-layer flip distances) are skipped. The error model, proof margins and
confirmations are the same.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyomo.environ as pe
import torch

from parallelepipedonn.box import Box, linf_distance_up
from parallelepipedonn.errors import OracleError
from parallelepipedonn.graph import Graph
from parallelepipedonn.network import Network, ReLU
from parallelepipedonn.tolerances import (
    CLASS_SLACK,
    DISTANCE_ABS_MARGIN,
    DISTANCE_CAP_SLACK,
    DISTANCE_MARGIN,
    solver_proof_margin,
    solver_trusted,
)

from .base import Answer, Distance, FloatArray, Oracle, Verdict
from .bounds import (
    NetworkTensors,
    backward,
    input_scale,
    intermediate_bounds,
    margin_spec,
    relu_relaxation,
    term_magnitude,
)
from .crown import AlphaCrownOracle
from .distance import confirmed_upper, cube, push_counterexample, seed_upper
from .graph_bounds import GraphTensors
from .milp_encoding import PROOF_MARGIN, Encoding, encode, make_solver, retune, solve
from .milp_graph import EncodingTimedOut, GraphBoxBounds, box_bounds, crown_margins, encode_graph
from .milp_graph import margin_gradient as graph_margin_gradient
from .milp_graph import term_magnitude as graph_term_magnitude
from .milp_regions import ClassRegionQueries
from .monotone import fix_monotone_inputs, shrink_monotone

log = logging.getLogger(__name__)

#: HiGHS options for the distance queries: the RINS and RENS sub-MIP heuristics took most
#: of the time on the reference MNIST net (the attack's counterexample is a good
#: incumbent already); without them the slowest inputs ran 2-3 times faster.
#: The absolute gap is HiGHS's default 1e-6 otherwise: too coarse for distances near 1e-3.
#: Feasibility tolerances 1e-9 instead of 1e-6 / 1e-7: presolve fixes variables whose
#: bounds lie within them, and a distance is only as exact as they are.
DISTANCE_OPTIONS = {"mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False, "mip_abs_gap": 1e-10,
                    "mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9}

#: Radii at which alpha-CROWN bounds each class's distance from below before its MILP.
PER_CLASS_RADII = 32


def margin_gradient(network: Network, x: FloatArray, label: int, j: int) -> FloatArray:
    """The gradient of ``logit_label - logit_j`` at ``x`` on the linear piece of the
    network that ``x`` lies in (its ReLU phases at ``x``)."""
    h = np.asarray(x, dtype=np.float64).reshape(-1)
    masks = []
    for layer in network.layers:
        if isinstance(layer, ReLU):
            masks.append(h > 0)
            h = np.maximum(h, 0.0)
        else:
            h = layer.weight @ h + layer.bias
    v = np.zeros(network.n_classes)
    v[label], v[j] = 1.0, -1.0
    for layer in reversed(network.layers):
        if isinstance(layer, ReLU):
            v = v * masks.pop()
        else:
            v = layer.weight.T @ v
    return v


def flip_distances(network: Network, x: FloatArray, domain: Box) -> dict[int, tuple[float, bool]]:
    """For each first-layer neuron whose pre-activation ``z0`` at ``x`` is not 0: the least L-infinity distance from ``x`` within ``domain`` at which its
    pre-activation can change sign: the least ``t`` with ``sum_i |w_i| min(t, room_i) >=
    |z0|``, ``room_i`` the room towards the domain's edge in the direction that moves
    ``z`` towards 0 (none when it cannot reach 0 in the domain), and whether the neuron
    is active at ``x``. Computed in float64, then lowered by a relative 1e-9, so that it
    stays a lower bound after rounding."""
    w, b = network.affines[0].weight, network.affines[0].bias
    z0 = w @ x + b
    out: dict[int, tuple[float, bool]] = {}
    for k in np.flatnonzero(z0 != 0):
        direction = -np.sign(z0[k]) * np.sign(w[k])  # moving x_i this way moves z_k towards 0
        room = np.where(direction > 0, domain.upper - x, np.where(direction < 0, x - domain.lower, 0.0))
        weight = np.abs(w[k])
        order = np.argsort(room)
        room, weight = room[order], weight[order]
        # reach(t) = sum_i weight_i min(t, room_i): piecewise linear, increasing
        done = np.concatenate([[0.0], np.cumsum(weight * room)])  # from coordinates already at their edge
        rest = np.concatenate([np.cumsum(weight[::-1])[::-1], [0.0]])  # slope from the others
        need = abs(z0[k])
        for i in range(len(room) + 1):
            top = room[i] if i < len(room) else math.inf
            if rest[i] > 0 and (need - done[i]) / rest[i] <= top:
                out[int(k)] = (max(0.0, (need - done[i]) / rest[i]) * (1 - 1e-9), bool(z0[k] > 0))
                break
    return out


class MilpOracle(ClassRegionQueries, Oracle):
    """Exact MILP verification with pyomo and HiGHS (see module docstring)."""

    name = "milp"
    sound = True
    complete = True
    batched = False
    queries = frozenset({"verify", "class_region", "coordinate_extreme", "class_extremes", "distance"})
    reads_graphs = True

    def __init__(self, network: Network | Graph, *, time_limit: float | None = 60.0, mip_rel_gap: float = 1e-6,
                 threads: int = 1) -> None:
        super().__init__(network, time_limit=time_limit)
        if not 0 <= mip_rel_gap < 1:
            raise OracleError("mip_rel_gap must be in [0, 1)")
        self.mip_rel_gap, self.threads = mip_rel_gap, threads
        #: for a graph that is not a Dense/ReLU chain: its CROWN tensors (oracles.graph_bounds)
        self.graph_tensors: GraphTensors | None = None
        if isinstance(self.network, Graph):
            chain = self.network.as_network()
            if chain is None:
                self.graph_tensors = GraphTensors.of(self.network)
            else:  # the same semantics: the chain encoding
                self.network = chain
        self.tensors = NetworkTensors.of(self.network) if self.graph_tensors is None else None
        # over the graph for a graph; its optimisation stops at the oracle's time limit (its
        # bounds hold at any step), so that a query does not run long past it before any MILP
        self._prefilter = AlphaCrownOracle(self.network, time_limit=time_limit)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "mip_rel_gap": self.mip_rel_gap, "threads": self.threads,
                "proof_margin": PROOF_MARGIN, "solver": "HiGHS via pyomo appsi"}

    # -- helpers --------------------------------------------------------------------------------
    def _bounds(self, lower: FloatArray, upper: FloatArray) -> tuple[Any, Any]:
        """The bounds the encoding takes over the box (chain: per ReLU layer, its input's;
        graph: :class:`~oracles.milp_graph.GraphBoxBounds`) and the tensors they come from."""
        if self.graph_tensors is not None:
            nb, _, _ = box_bounds(self.graph_tensors, lower[None], upper[None])
            return GraphBoxBounds.of(self.network, nb), nb
        lo = torch.tensor(lower, dtype=torch.float64)[None]
        hi = torch.tensor(upper, dtype=torch.float64)[None]
        inter = intermediate_bounds(self.tensors, lo, hi)
        return [(a[0].numpy(), b[0].numpy()) for a, b in inter], inter

    def _solver(self, deadline: float, mip_rel_gap: float | None = None, options: dict[str, Any] | None = None,
                scale: float | None = None):
        """A solver with the time left before ``deadline``, its tolerances set for a problem
        of ``scale`` (:func:`~parallelepipedonn.tolerances.solver_tolerance`)."""
        return make_solver(self._remaining(deadline), self.mip_rel_gap if mip_rel_gap is None else mip_rel_gap,
                           self.threads, options, scale)

    @staticmethod
    def _remaining(deadline: float) -> float | None:
        """Seconds left before ``deadline`` (at least 0.01; ``None`` without one)."""
        remaining = deadline - time.perf_counter()
        return None if math.isinf(remaining) else max(remaining, 0.01)

    def _deadline(self) -> float:
        return math.inf if self.time_limit is None else time.perf_counter() + self.time_limit

    def _scale(self, lower: FloatArray, upper: FloatArray, label: int, inter: list | None = None) -> FloatArray:
        """Per class ``j != label``, the scale of ``logit_label - logit_j`` over the box for
        the solver error model (:func:`~oracles.bounds.term_magnitude`)."""
        lo, hi = torch.tensor(lower, dtype=torch.float64)[None], torch.tensor(upper, dtype=torch.float64)[None]
        spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
        if self.graph_tensors is not None:
            nb = box_bounds(self.graph_tensors, lower[None], upper[None])[0] if inter is None else inter
            return graph_term_magnitude(self.graph_tensors, nb, spec)[0].numpy()
        with torch.no_grad():
            inter = intermediate_bounds(self.tensors, lo, hi) if inter is None else inter
            return term_magnitude(self.tensors, spec, lo, hi, inter)[0].numpy()

    def _region_scale(self, lower: FloatArray, upper: FloatArray, label: int) -> tuple[float, str]:
        """The scale of the class-region problems of ``label`` on this box (the largest of
        its margins'), and why HiGHS's answers prove nothing there (the scale is beyond the
        solver error model), or ``""``."""
        scale = float(self._scale(lower, upper, label).max())
        if solver_trusted(scale):
            return scale, ""
        return scale, f"the network's scale on this box ({scale:.3g}) makes HiGHS's tolerances no proof"

    # -- robustness -----------------------------------------------------------------------------
    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        return [self._verify_box(lower[i], upper[i], label) for i in range(len(lower))]

    def _prefiltered(self, lower: FloatArray, upper: FloatArray, label: int) -> tuple[FloatArray, FloatArray, Any]:
        """Per class ``j != label``: a proven lower bound of the margin over the box
        (alpha-CROWN), the vertex minimising CROWN's linear bound of it, and the bounds of
        the box (for :meth:`_scale`)."""
        if self.graph_tensors is not None:
            nb, lo_t, hi_t = box_bounds(self.graph_tensors, lower[None], upper[None])
            margins, corners = crown_margins(self.graph_tensors, nb, lo_t, hi_t, label)
            if not (margins > 0).all():
                margins = np.maximum(margins, self._prefilter.margin_lower_bounds(lower[None], upper[None], label))
            return margins[0], corners[0], nb
        _, inter = self._bounds(lower, upper)
        lo = torch.tensor(lower, dtype=torch.float64)[None]
        hi = torch.tensor(upper, dtype=torch.float64)[None]
        spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
        crown = self._prefilter.margin_lower_bounds(lower[None], upper[None], label)[0]
        with torch.no_grad():
            linear = backward(self.tensors, spec, self.tensors.depth - 1, [relu_relaxation(a, b) for a, b in inter],
                              input_scale(lo, hi))
        return crown, torch.where(linear.coef[0] > 0, lo, hi).numpy(), inter

    def _verify_box(self, lower: FloatArray, upper: FloatArray, label: int) -> Answer:
        deadline = self._deadline()
        # classes alpha-CROWN already proves need no MILP; per class, the
        # vertex minimising CROWN's linear bound: its true margin bounds the minimum from
        # above (a counterexample if <= 0) and orders the MILPs, smallest first
        crown, corners, inter = self._prefiltered(lower, upper, label)
        others = [j for j in range(self.network.n_classes) if j != label]
        estimate = np.array([self.network.margins(corners[r], label)[0] for r in range(len(others))])
        # a vertex is a counterexample only where exact arithmetic confirms it (a float margin of 0
        # at a vertex whose exact margin is positive answered FALSIFIED, the recheck UNKNOWN, and
        # no MILP ran: a counterexample elsewhere in the box went unfound)
        wrong = self.network.misclassified(corners[:len(others)], label)
        if wrong.any():
            r = int(np.argmin(np.where(wrong, estimate, np.inf)))
            return Answer(Verdict.FALSIFIED, counterexample=corners[r].copy(), reason="CROWN's minimising vertex")
        proven = crown.copy()  # per class: a proven lower bound of the margin, once > 0
        smallest = math.inf  # the smallest margin minimum solved exactly so far
        # a solver bound proves a margin only beyond the error model's margin at this scale
        scale = [float(v) for v in self._scale(lower, upper, label, inter)]
        needed = [solver_proof_margin(v) for v in scale]
        bounds = None
        if self.graph_tensors is not None:
            bounds = GraphBoxBounds.of(self.network, inter)
            if not bounds.finite and not (crown > 0).all():
                return Answer(Verdict.UNKNOWN, reason="the graph's node bounds over the box are not finite numbers")
        shared = None  # a graph: one encoding of the box and one persistent solver for every class
        undecided: Answer | None = None  # the first class neither proven nor falsified
        for row in np.argsort(estimate):
            if crown[row] > 0:
                continue
            j = others[row]
            if time.perf_counter() >= deadline:
                return Answer(Verdict.UNKNOWN, timed_out=True, reason=f"time limit before the MILP for class {j}"
                              + (f" ({undecided.reason})" if undecided is not None else ""))
            if bounds is not None:
                if shared is None:
                    try:
                        shared = (encode_graph(self.network, lower, upper, bounds, deadline=deadline),
                                  self._solver(deadline, scale=scale[row]))
                    except EncodingTimedOut:
                        return Answer(Verdict.UNKNOWN, timed_out=True,
                                      reason=f"time limit while the MILP for class {j} was being built")
                    shared[1].set_instance(shared[0].model)  # loaded now: the time limit is the solver's
                enc, opt = shared
                retune(opt, self._remaining(deadline), scale[row])
                margin = enc.logits[label] - enc.logits[j]
                if enc.model.component("cutoff") is not None:
                    enc.model.del_component("cutoff")
            else:
                enc, margin = self._margin_problem(lower, upper, label, j)  # a chain's: no graph encoding
                opt = self._solver(deadline, scale=scale[row])
            # once one class is solved exactly, the others only need to be shown above that
            # minimum: with ``margin <= cutoff`` added, nodes whose relaxation exceeds the
            # cutoff are pruned, and "infeasible" proves the class's margin above it
            cutoff = max(smallest, 2 * needed[row]) if math.isfinite(smallest) else None
            if cutoff is not None:
                enc.model.add_component("cutoff", pe.Constraint(expr=margin <= cutoff))
            res = solve(opt, enc, margin)
            if res.x is not None and res.value is not None and res.value <= needed[row]:
                # a candidate whatever the sign of the solver's value (rounding noise at the
                # boundary): it counts only once a forward pass confirms it
                cex = self._confirm_counterexample(res.x, lower, upper, label, j, corners[row])
                if cex is not None:
                    return Answer(Verdict.FALSIFIED, counterexample=cex,
                                  reason=f"MILP optimum {res.value:.3g} for class {j}, confirmed")
            if res.infeasible:  # a proof only where the error model trusts the solver's claims
                if solver_trusted(scale[row]):
                    proven[row] = cutoff - needed[row] if cutoff is not None else math.inf
                    continue
            elif res.bound is not None and res.bound > needed[row]:
                proven[row] = res.bound - needed[row] + PROOF_MARGIN
                smallest = min(smallest, res.bound)
                continue
            # undecided: the other classes are still solved, for a counterexample of theirs
            undecided = undecided or Answer(Verdict.UNKNOWN, margin=res.bound, timed_out=res.timed_out,
                                            reason=f"MILP for class {j} undecided ({res.status}, bound {res.bound})")
        if undecided is not None:
            return undecided
        return Answer(Verdict.VERIFIED, margin=float(proven.min()))

    def _confirm_counterexample(self, point: FloatArray, lower: FloatArray, upper: FloatArray, label: int, j: int,
                                vertex: FloatArray | None = None) -> FloatArray | None:
        """A confirmed counterexample (:meth:`Network.misclassified`: exact arithmetic near
        the boundary) in the box, at or near a solver's ``point``: the point itself
        (clipped to the box), else the first of ``p + s (v - p)`` (``s`` from 1e-12 to 1,
        geometric) that is confirmed, for the vertices ``v`` that lower the margin: the
        one the signs of the margin's gradient at ``p`` pick, then ``vertex`` (CROWN's
        minimising vertex). ``None`` if none is."""
        net = self.network
        p = np.clip(np.asarray(point, dtype=np.float64), lower, upper)
        if net.misclassified(p, label)[0]:
            return p
        grad = (graph_margin_gradient(net, p, label, j) if self.graph_tensors is not None
                else margin_gradient(net, p, label, j))
        targets = [np.where(grad > 0, lower, np.where(grad < 0, upper, p))]
        if vertex is not None:
            targets.append(np.asarray(vertex, dtype=np.float64))
        steps = np.geomspace(1e-12, 1.0, 37)
        for target in targets:
            pts = np.clip(p + steps[:, None] * (target - p), lower, upper)
            margin, err = net.margin_errors(pts, label)
            for k in np.flatnonzero(margin <= err)[:4]:  # the exact margin may be <= 0 only there
                if net.misclassified(pts[k], label)[0]:
                    return pts[k]
        return None

    def _margin_problem(self, lower: FloatArray, upper: FloatArray, label: int, j: int,
                        bounds: GraphBoxBounds | None = None, deadline: float = math.inf) -> tuple[Encoding, Any]:
        """The MILP of ``logit_label - logit_j`` over the box, to be minimised: inputs along
        which the margin is monotone on the box are fixed at its minimising end (the
        minimum is unchanged, the MILP smaller; chains only), and the last layer's convex
        neurons need no binary. Returns the encoding and the margin expression. A graph
        is encoded on the node ``bounds`` of the box (computed when not given), before
        ``deadline`` (else :class:`~oracles.milp_graph.EncodingTimedOut`)."""
        net = self.network
        if self.graph_tensors is not None:
            if bounds is None:
                bounds = self._bounds(lower, upper)[0]
            enc = encode_graph(net, lower, upper, bounds, minimize_row=self._margin_row(label, j), deadline=deadline)
            return enc, enc.logits[label] - enc.logits[j]
        spec = margin_spec(net.n_classes, label, 1, torch.float64, torch.device("cpu"))
        with torch.no_grad():
            lo_j, hi_j, inter = fix_monotone_inputs(self.tensors, torch.tensor(lower)[None], torch.tensor(upper)[None],
                                                    spec[0, j - (j > label)])
        bounds = [(a[0].numpy(), b[0].numpy()) for a, b in inter]
        w_last = net.affines[-1].weight
        enc = encode(net, lo_j[0].numpy(), hi_j[0].numpy(), bounds, minimize_last=w_last[label] - w_last[j])
        return enc, enc.logits[label] - enc.logits[j]

    def _margin_row(self, label: int, j: int) -> FloatArray:
        """``e_label - e_j``: the margin's coefficients over the class scores."""
        row = np.zeros(self.network.n_classes)
        row[label], row[j] = 1.0, -1.0
        return row

    # -- the minimum adversarial distance ---------------------------------------------------------
    def min_distance(self, x: FloatArray, label: int, domain: Box, *, lower: float = 0.0,
                     counterexample: FloatArray | None = None, falsifier: Oracle | None = None,
                     time_limit: float | None = None, progress: Callable[[str], None] | None = None) -> Distance:
        """The minimum L-infinity distance from ``x`` to a point of ``domain`` not classified
        ``label`` (the exact best apothem), by MILPs, one or two per class.

        The best known counterexample (``counterexample``, improved by the ``falsifier``
        if given) sets the radius ``r`` searched: the cube of radius ``r`` around ``x``
        within ``domain``; alpha-CROWN rules out the classes that cannot win anywhere in
        it and bounds each other class's distance from below. Then per class ``j``, the
        class of the best counterexample first:

        * except for the first class, a MILP minimises ``logit_label - logit_j`` over the
          cube of the best distance so far: a proven bound above :data:`PROOF_MARGIN`
          shows that class ``j`` is no nearer, and the class is done;
        * otherwise a MILP minimises ``t`` subject to ``|x' - x| <= t``, ``t`` at most
          the best distance, and ``logit_label(x') - logit_j(x') <= CLASS_SLACK`` (a
          superset of class ``j``'s points, so that tolerances cannot cut true points
          off); see :meth:`_distance_encoding`.

        ``lower`` in the result is the least of the solvers' proven bounds on ``t``,
        lowered by :data:`DISTANCE_MARGIN` (relative): no point of the domain nearer
        than that is misclassified. ``upper`` is the distance of a confirmed
        counterexample: each optimum, pushed outwards by the least amount that makes a
        forward pass misclassify it, then pulled back along the segment to ``x``. A
        time-out (``time_limit`` for the whole query, or the oracle's own limit) keeps
        the bounds proven so far, and ``lower`` (optional) is a radius already proven
        robust.
        """
        self.network.check_label(label)
        start = time.perf_counter()
        deadline = min(self._deadline(), math.inf if time_limit is None else start + time_limit)
        net = self.network
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (net.n_inputs,) or not domain.contains(x):
            raise OracleError(f"x must be a point of the domain with {net.n_inputs} coordinates")
        if net.misclassified(x, label)[0]:
            return Distance(0.0, 0.0, x.copy(), 0, 0.0, "x itself is not classified robustly")
        hi, cex = confirmed_upper(net, x, label, domain, counterexample)
        if falsifier is not None:
            hi, cex = seed_upper(falsifier, x, label, domain, hi, cex)
        rmax = float(np.max(np.maximum(x - domain.lower, domain.upper - x)))
        radius = min(hi, rmax)
        lo_r, hi_r = cube(x, radius, domain)
        # per class, the largest of the radii between ``lower`` and ``radius`` within which
        # alpha-CROWN proves that the class never reaches the label's logit
        radii = lower + (radius - lower) * np.arange(1, PER_CLASS_RADII + 1) / PER_CLASS_RADII
        los, his = np.maximum(domain.lower, x - radii[:, None]), np.minimum(domain.upper, x + radii[:, None])
        proved = self._prefilter.margin_lower_bounds(los, his, label) > 0  # (radii, classes)
        floor = {j: radii[col].max() if col.any() else lower
                 for j, col in zip([j for j in range(net.n_classes) if j != label], proved.T)}
        todo = [j for j in sorted(floor, key=floor.get) if not proved[-1, j - (j > label)]]
        if cex is not None:  # the class of the best counterexample first: its distance is likely the least
            winner = int(np.argmax(np.delete(net.forward(cex[None])[0], label)))
            winner += winner >= label
            todo.sort(key=lambda j: j != winner)
        flips = flip_distances(net, x, domain) if self.graph_tensors is None else {}
        proven = math.inf if math.isinf(hi) else hi  # least proven bound over the classes solved so far
        milps, reason = 0, ""
        untrusted = self._region_scale(lo_r, hi_r, label)[1] if todo else ""
        if untrusted:  # alpha-CROWN's per-class floors are all that is proven
            proven, reason, todo = min(proven, min(max(lower, floor[j]) for j in todo)), untrusted, []
        for position, j in enumerate(todo):
            if time.perf_counter() >= deadline:
                proven, reason = min(proven, lower), f"time limit before class {j}"
                break
            try:
                if position > 0 and not math.isinf(hi):
                    # first the cheaper question: can class j win at all within the best distance?
                    lo_c, hi_c = cube(x, hi, domain)
                    enc, margin = self._margin_problem(lo_c, hi_c, label, j, deadline=deadline)
                    # any proven bound above the proof margin settles it: no need to close the gap
                    res = solve(self._solver(deadline, mip_rel_gap=0.5, options=DISTANCE_OPTIONS), enc, margin)
                    milps += 1
                    needed = solver_proof_margin(float(self._scale(lo_c, hi_c, label).max()))
                    if res.bound is not None and res.bound > needed:
                        continue  # no point of class j within the distance: it cannot be nearer
                    if res.x is not None:
                        hi, cex = self._closer(x, res.x, lo_c, hi_c, label, domain, hi, cex)
                lo_r, hi_r = cube(x, min(hi, rmax), domain)
                enc = self._distance_encoding(x, lo_r, hi_r, label, j, max(lower, floor[j]), hi, flips, deadline)
            except EncodingTimedOut:
                proven, reason = min(proven, lower), f"time limit while the MILP for class {j} was being built"
                break
            res = solve(self._solver(deadline, options=DISTANCE_OPTIONS), enc, enc.model.t)
            milps += 1
            if res.x is not None:
                hi, cex = self._closer(x, res.x, lo_r, hi_r, label, domain, hi, cex)
            if res.infeasible:
                continue  # no point of class j nearer than the cap on t (above the best distance)
            if res.bound is None:
                proven, reason = min(proven, lower), f"MILP for class {j} undecided ({res.status})"
                self.stats.timeouts += int(res.timed_out)
                continue
            proven = min(proven, max(lower, res.bound * (1 - DISTANCE_MARGIN) - DISTANCE_ABS_MARGIN))
            if not res.optimal:
                reason = f"MILP for class {j}: {res.status}, bound {res.bound:.6g}"
                self.stats.timeouts += int(res.timed_out)
            if progress is not None:
                progress(f"class {j} done ({position + 1}/{len(todo)}), best distance <= {hi:.6g}")
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start
        if math.isinf(proven) and math.isinf(hi):
            reason = "the whole domain is robust"
        return Distance(min(proven, hi), hi, cex, milps, time.perf_counter() - start, reason)

    def _closer(self, x: FloatArray, point: FloatArray, lo: FloatArray, hi: FloatArray, label: int, domain: Box,
                best: float, cex: FloatArray | None) -> tuple[float, FloatArray | None]:
        """The nearer of the best counterexample and a solver's ``point`` made a confirmed one."""
        found = push_counterexample(self.network, x, np.clip(point, lo, hi), label, domain)
        if found is not None and linf_distance_up(found, x) < best:
            return linf_distance_up(found, x), found
        return best, cex

    def _distance_encoding(self, x: FloatArray, lo_r: FloatArray, hi_r: FloatArray, label: int, j: int,
                           lower: float, upper: float, flips: dict[int, tuple[float, bool]],
                           deadline: float = math.inf) -> Encoding:
        """The MILP ``min t`` over the points of the region ``[lo_r, hi_r]`` with
        ``logit_label - logit_j <= CLASS_SLACK`` and ``|x' - x| <= t``, ``lower <= t <=
        upper (1 + DISTANCE_CAP_SLACK)``, in a form with the same optimum but a tighter
        relaxation (the region must hold the cube of radius ``upper``; points beyond it
        that the cap lets in do no harm: ``t`` is their distance all the same):

        * the region shrinks towards ``x`` along the inputs in which the margin is
          monotone (:func:`~oracles.monotone.shrink_monotone`): a nearest point of class
          ``j`` has a counterpart no further away in the shrunk region; where the room
          left lets it, such an input is tied to ``t`` (``x'_i = x_i -/+ t``), since the
          counterpart may take it as far as the distance allows;
        * a first-layer neuron changes phase only at distance ``tau`` or more
          (:func:`flip_distances`): ``t >= tau`` when its binary says it has;
        * the last layer's convex neurons need no binary (the margin is constrained
          from above only).
        """
        net = self.network
        if self.graph_tensors is not None:  # a graph: the region as it is
            lo_j, hi_j, direction = lo_r, hi_r, np.zeros(net.n_inputs, dtype=np.int8)
            enc = encode_graph(net, lo_j, hi_j, self._bounds(lo_r, hi_r)[0], minimize_row=self._margin_row(label, j),
                               deadline=deadline)
        else:
            spec = margin_spec(net.n_classes, label, 1, torch.float64, torch.device("cpu"))
            row = j - (j > label)
            with torch.no_grad():
                lo_t, hi_t, inter, direction = shrink_monotone(
                    self.tensors, torch.tensor(lo_r)[None], torch.tensor(hi_r)[None], spec[0, row],
                    torch.tensor(x)[None])
            lo_j, hi_j, direction = lo_t[0].numpy(), hi_t[0].numpy(), direction.numpy()
            bounds = [(a[0].numpy(), b[0].numpy()) for a, b in inter]
            w_last = net.affines[-1].weight
            enc = encode(net, lo_j, hi_j, bounds, minimize_last=w_last[label] - w_last[j])
        m = enc.model
        m.t = pe.Var(bounds=(max(lower, 0.0), None if math.isinf(upper) else upper * (1 + DISTANCE_CAP_SLACK)))
        for i in range(net.n_inputs):
            xi = float(x[i])
            if direction[i] > 0 and xi - lo_j[i] >= upper:  # the margin increases in x_i: as low as t allows
                m.cons.add(enc.x[i] + m.t == xi)
            elif direction[i] < 0 and hi_j[i] - xi >= upper:
                m.cons.add(enc.x[i] - m.t == xi)
            else:
                if hi_j[i] > xi:
                    m.cons.add(enc.x[i] - m.t <= xi)
                if lo_j[i] < xi:
                    m.cons.add(enc.x[i] + m.t >= xi)
        m.cons.add(enc.logits[label] - enc.logits[j] <= CLASS_SLACK)
        for k, (tau, active) in flips.items():
            d = enc.binaries.get((0, k))
            if d is not None:
                m.cons.add(m.t >= tau * (1 - d if active else d))
        return enc
