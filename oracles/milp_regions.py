"""The MILP oracle's class-region queries (a mixin of :class:`~oracles.milp.MilpOracle`):
bounds of each input coordinate over the points a network classifies as one label
(:meth:`coordinate_extreme`, :meth:`class_extremes`, the dual boxes' MILP), and whether a
region holds such a point outside a box (:meth:`class_region`). Every bound is the
solver's, cut by its proof margin; every witness is confirmed by a forward pass."""


from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyomo.environ as pe
from numpy.typing import NDArray

from parallelepipedonn.box import Box
from parallelepipedonn.graph import Graph
from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import CLASS_SLACK, solver_coordinate_error

from .base import ClassBox, Extreme, FloatArray, RegionAnswer, RegionVerdict
from .milp_encoding import PROOF_MARGIN, Encoding, make_solver, solve
from .milp_graph import EncodingTimedOut, encode_model

log = logging.getLogger(__name__)

#: When a class-region optimum is not a confirmed class point (HiGHS may return one with
#: ``logit_label - logit_j = -CLASS_SLACK`` exactly), the problem is solved again with the
#: class rows ``logit_label - logit_j >= +m`` for these ``m`` in turn (well above the
#: feasibility tolerances, times the last layer's weights), so that the solver's point lies
#: inside the class, and that point is confirmed by a forward pass.
INTERIOR_MARGINS = (1e-5, 1e-3)

def class_encoding(network: Network | Graph, region: Box, bounds, label: int, margin: float | None = None,
                   deadline: float = math.inf) -> Encoding:
    """The network (a chain, or a graph) on ``region`` restricted to (a slight superset
    of) the class region: ``logit_label - logit_j >= margin`` for every ``j``
    (``-CLASS_SLACK`` by default; see :func:`set_class_margin`). A graph's encoding stops
    at ``deadline`` (:class:`~oracles.milp_graph.EncodingTimedOut`; a chain's, dense
    matrices, takes no noticeable time)."""
    timed = {"deadline": deadline} if isinstance(network, Graph) else {}
    enc = encode_model(network, region.lower, region.upper, bounds, **timed)
    set_class_margin(enc, label, -CLASS_SLACK if margin is None else margin)
    return enc


def set_class_margin(enc: Encoding, label: int, margin: float) -> None:
    """(Re)place the class rows ``logit_label - logit_j >= margin`` (every ``j``) of a class
    encoding: a negative ``margin`` admits a superset of the class region, a positive one
    only points inside it. A solver passed the model afterwards sees the new rows."""
    m = enc.model
    if m.component("class_rows") is not None:
        m.del_component("class_rows")
    m.class_rows = pe.ConstraintList()
    for j in range(len(enc.logits)):
        if j != label:
            m.class_rows.add(enc.logits[label] - enc.logits[j] >= margin)


# -- worker processes for class_extremes (module level, so that they can be pickled) -----------
_WORKER: dict[str, Any] = {}


def _worker_init(network: Network, region: Box, bounds, label: int, time_limit: float | None, gap: float,
                 scale: float | None = None) -> None:
    """One encoding and one persistent solver per process: each problem only changes the
    objective."""
    _WORKER.update(enc=class_encoding(network, region, bounds, label),
                   opt=make_solver(time_limit, gap, scale=scale))


def _worker_solve(task: tuple[int, bool]) -> tuple[int, bool, str, float | None, FloatArray | None]:
    index, maximize = task
    enc = _WORKER["enc"]
    res = solve(_WORKER["opt"], enc, enc.x[index], pe.maximize if maximize else pe.minimize)
    return index, maximize, res.status, res.bound, res.x


#: Points per forward pass of :meth:`ClassRegionQueries._single_changes` (witnesses times
#: coordinates).
SINGLE_CHANGE_POINTS = 4096


class ClassRegionQueries:
    """The class-region queries of :class:`~oracles.milp.MilpOracle` (which provides
    ``network``, ``stats``, ``_bounds``, ``_solver``, ``_deadline`` and ``_region_scale``)."""

    # -- class region ---------------------------------------------------------------------------
    def _class_encoding(self, region: Box, label: int, deadline: float = math.inf) -> Encoding:
        bounds, _ = self._bounds(region.lower, region.upper)
        return class_encoding(self.network, region, bounds, label, deadline=deadline)

    def _class_points(self, pts: FloatArray, label: int) -> NDArray[np.bool_]:
        """Per point: is it classified ``label``, ties included (exact margin >= 0)? Decided
        by the float64 margin where it is farther from 0 than its rounding error, in exact
        arithmetic otherwise."""
        return self.network.class_points(np.asarray(pts, dtype=np.float64).reshape(-1, self.network.n_inputs), label)

    def _is_class_point(self, x: FloatArray | None, label: int, region: Box) -> bool:
        return x is not None and region.contains(x) and bool(self._class_points(x, label)[0])

    def _interior_witness(self, enc: Encoding, objective, sense, label: int, region: Box, deadline: float,
                          keep=lambda w: True, scale: float | None = None) -> tuple[FloatArray | None, str]:
        """A confirmed class point that ``keep`` accepts, from the problem solved again with
        the class rows moved into the class (:data:`INTERIOR_MARGINS`, in turn); the class
        rows are put back afterwards. Returns it (or ``None``) and what happened."""
        note = "no interior point"
        try:
            for margin in INTERIOR_MARGINS:
                if time.perf_counter() >= deadline:
                    return None, "no time left for an interior point"
                set_class_margin(enc, label, margin)
                res = solve(self._solver(deadline, scale=scale), enc, objective, sense)
                if res.infeasible:
                    return None, f"no point with margin >= {margin:g}"
                if res.x is not None:
                    w = np.clip(res.x, region.lower, region.upper)
                    if keep(w) and self._is_class_point(w, label, region):
                        return w, f"interior point (margin >= {margin:g}, {res.status})"
                note = f"interior problem {res.status}"
            return None, note
        finally:
            set_class_margin(enc, label, -CLASS_SLACK)

    def coordinate_extreme(self, label: int, index: int, maximize: bool, region: Box,
                           encoding: Encoding | None = None) -> Extreme:
        """Min or max of ``x[index]`` over ``{x in region : class(x) = label}`` (ties included).

        The returned ``bound`` is proven (an outer bound of the true extreme); ``witness``,
        when given, is a confirmed point of the class region; ``exact`` when its coordinate
        is within :data:`PROOF_MARGIN` of the bound.
        """
        self.network.check_label(label)
        start = time.perf_counter()
        deadline = self._deadline()
        scale, untrusted = self._region_scale(region.lower, region.upper, label)
        if untrusted:
            edge = region.upper[index] if maximize else region.lower[index]
            return Extreme(float(edge), None, False, f"no proven bound ({untrusted}); the region's edge")
        sense = pe.maximize if maximize else pe.minimize
        try:
            try:
                enc = encoding or self._class_encoding(region, label, deadline)
            except EncodingTimedOut as exc:
                self.stats.timeouts += 1
                edge = region.upper[index] if maximize else region.lower[index]
                return Extreme(float(edge), None, False, f"no proven bound ({exc}); the region's edge")
            res = solve(self._solver(deadline, scale=scale), enc, enc.x[index], sense)
            if res.infeasible:
                return Extreme(-math.inf if maximize else math.inf, None, True, "the class region is empty")
            if res.bound is None:
                self.stats.timeouts += int(res.timed_out)
                edge = region.upper[index] if maximize else region.lower[index]
                return Extreme(float(edge), None, False, f"no proven bound ({res.status}); the region's edge")
            bound = res.bound + PROOF_MARGIN if maximize else res.bound - PROOF_MARGIN
            bound = float(min(bound, region.upper[index]) if maximize else max(bound, region.lower[index]))
            witness = np.clip(res.x, region.lower, region.upper) if res.x is not None else None
            reason = res.status
            if not self._is_class_point(witness, label, region):
                # an optimum on the edge of the class superset: look for a point inside the class
                witness, note = self._interior_witness(enc, enc.x[index], sense, label, region, deadline, scale=scale)
                reason = f"{res.status}; witness: {note}"
            exact = witness is not None and abs(witness[index] - bound) <= 2 * PROOF_MARGIN
            return Extreme(bound, witness, exact, reason)
        finally:
            self.stats.calls += 1
            self.stats.seconds += time.perf_counter() - start

    def class_extremes(self, label: int, region: Box, candidates: Any = (), *, workers: int = 1,
                       progress: Any = None, single_changes: int = 64) -> ClassBox:
        """The bounding box of ``{x in region : class(x) = label}`` (ties included), as
        proven outer bounds, coordinate by coordinate (``2n`` optimisation problems).

        Cheap first: the confirmed ``candidates`` (points of the class region) attain
        their coordinates; a coordinate whose extreme reaches the region's edge in some
        witness — or in a witness with only that coordinate moved to the edge (up to
        ``single_changes`` witnesses tried, batched forward passes) — is exact without a
        MILP. The other problems share one MILP encoding per process (``workers``
        processes, objectives changed in place); each contributes the solver's proven
        bound, never its incumbent (a time-out keeps the region's edge or the proven
        bound), and its optimum becomes a witness when confirmed. ``progress`` (optional)
        is called with the number of problems done after each MILP.
        """
        self.network.check_label(label)
        start = time.perf_counter()
        n = self.network.n_inputs
        lo_r, hi_r = region.lower, region.upper
        pts = np.asarray(candidates, dtype=np.float64).reshape(-1, n) if len(candidates) else np.zeros((0, n))
        pts = pts[region.contains_points(pts)]
        witnesses = pts[self._class_points(pts, label)] if len(pts) else pts
        lower, upper = lo_r.copy(), hi_r.copy()  # proven outer bounds
        reached_lo = witnesses.min(axis=0) if len(witnesses) else np.full(n, np.inf)
        reached_hi = witnesses.max(axis=0) if len(witnesses) else np.full(n, -np.inf)
        reached_lo, reached_hi, moved = self._single_changes(label, region, witnesses[:single_changes], reached_lo,
                                                             reached_hi)
        witnesses = np.concatenate([witnesses, moved])
        tasks = [(i, False) for i in range(n) if reached_lo[i] > lo_r[i]] + \
                [(i, True) for i in range(n) if reached_hi[i] < hi_r[i]]
        scale, untrusted = self._region_scale(lo_r, hi_r, label) if tasks else (None, "")
        if untrusted:
            log.warning("milp class extremes: %s; the region's edges are the bounds", untrusted)
            tasks = []
        milps = timeouts = 0
        empty = False
        for index, maximize, status, bound, x in self._run_extremes(label, region, tasks, workers, progress, scale):
            milps += 1
            if status == "infeasible":
                empty = True
                break
            timeouts += int(status == "maxTimeLimit")  # stopped early: its bound (if any) is proven, not optimal
            if bound is None:
                pass
            elif maximize:
                upper[index] = min(hi_r[index], bound + PROOF_MARGIN)
            else:
                lower[index] = max(lo_r[index], bound - PROOF_MARGIN)
            if x is not None:
                w = self._into_class(np.clip(x, lo_r, hi_r), witnesses, label, region)
                if w is not None:
                    witnesses = np.concatenate([witnesses, w[None]])
                    reached_lo, reached_hi = np.minimum(reached_lo, w), np.maximum(reached_hi, w)
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start
        self.stats.timeouts += timeouts
        if empty:
            return ClassBox(hi_r.copy(), lo_r.copy(), np.ones(n, bool), np.ones(n, bool), witnesses[:0], True, milps,
                            timeouts)
        exact_lo = (reached_lo <= lower + 2 * PROOF_MARGIN) | (reached_lo <= lo_r)
        exact_hi = (reached_hi >= upper - 2 * PROOF_MARGIN) | (reached_hi >= hi_r)
        return ClassBox(lower, upper, exact_lo, exact_hi, witnesses, False, milps, timeouts)

    def _into_class(self, x: FloatArray, witnesses: FloatArray, label: int, region: Box) -> FloatArray | None:
        """``x`` if it is a point of the class region; else — an optimum on the region's
        boundary, a hair outside after rounding — the point nearest to it on the segment to
        a known witness that is inside (``None`` without one)."""
        if self._is_class_point(x, label, region):
            return x
        if not len(witnesses):
            return None
        anchor = witnesses[0]
        ts = np.concatenate([np.geomspace(1e-9, 1e-3, 25), np.linspace(2e-3, 1.0, 40)])
        pts = x + ts[:, None] * (anchor - x)
        ok = np.flatnonzero(self._class_points(pts, label))
        return pts[ok[0]] if ok.size else None

    def _single_changes(self, label: int, region: Box, witnesses: FloatArray, reached_lo: FloatArray,
                        reached_hi: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Move one coordinate of each witness to the region's edge: where the point stays
        in the class, that edge is attained (the new witnesses are returned too: for each
        coordinate attained, its first witness that stays). The witnesses are tried in
        blocks (4, then 16, 64, ...), each only on the coordinates no earlier block attained:
        where most points of the region are in the class, the first witness attains nearly
        every coordinate (on the residual MNIST net at radius 0.02, 64 witnesses on every
        coordinate at once took 52 s of forward passes)."""
        n = self.network.n_inputs
        if not len(witnesses):
            return reached_lo, reached_hi, np.zeros((0, n))
        reached_lo, reached_hi = reached_lo.copy(), reached_hi.copy()
        found = []
        for edge, reached, better in ((region.lower, reached_lo, np.less), (region.upper, reached_hi, np.greater)):
            todo = np.flatnonzero(better(edge, reached))
            first, size = 0, 4
            while todo.size and first < len(witnesses):
                block = witnesses[first:first + size]
                per_call = max(1, SINGLE_CHANGE_POINTS // len(block))
                for chunk in np.array_split(todo, -(-todo.size // per_call)):
                    pts = np.repeat(block[None], chunk.size, axis=0)  # (coords, witnesses, n)
                    pts[np.arange(chunk.size), :, chunk] = edge[chunk][:, None]
                    ok = self._class_points(pts.reshape(-1, n), label).reshape(chunk.size, -1)
                    hit = ok.any(axis=1)
                    reached[chunk[hit]] = edge[chunk[hit]]
                    found += [pts[k, int(np.argmax(ok[k]))] for k in np.flatnonzero(hit)]
                todo = todo[better(edge[todo], reached[todo])]
                first, size = first + size, 4 * size
        return reached_lo, reached_hi, np.array(found).reshape(-1, n)

    def _run_extremes(self, label: int, region: Box, tasks: list[tuple[int, bool]], workers: int, progress: Any,
                      scale: float | None = None):
        """Solve the coordinate problems, in this process or in ``workers`` processes."""
        if not tasks:
            return
        bounds, _ = self._bounds(region.lower, region.upper)
        done = 0
        main = sys.modules.get("__main__")
        if len(tasks) < 16 * workers:  # starting processes costs seconds: not worth it for a few MILPs
            workers = 1
        if workers > 1 and not Path(getattr(main, "__file__", "") or "").is_file():
            log.info("no importable __main__ (interactive session): solving in this process")
            workers = 1
        if workers <= 1:
            _worker_init(self.network, region, bounds, label, self.time_limit, self.mip_rel_gap, scale)
            for task in tasks:
                yield _worker_solve(task)
                done += 1
                if progress is not None:
                    progress(done)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(self.network, region, bounds, label, self.time_limit,
                                           self.mip_rel_gap, scale)) as pool:
            for result in pool.map(_worker_solve, tasks, chunksize=4):
                yield result
                done += 1
                if progress is not None:
                    progress(done)

    def class_region(self, lower: FloatArray, upper: FloatArray, label: int, region: Box,
                     tolerance: float = PROOF_MARGIN) -> RegionAnswer:
        """Is there a point of ``region`` classified ``label`` outside the box by more than
        ``tolerance`` in some coordinate? One MILP maximises the largest such excess (over
        a slight superset of the class region: its proven bound proves ``NONE``). A
        ``WITNESS`` is a point outside the box confirmed as a class point by a forward pass
        (exact arithmetic near ties): the solver's optimum, or — when that lies on the
        superset's edge, outside the class — the optimum of the problem solved again with
        the class rows moved into the class (:data:`INTERIOR_MARGINS`)."""
        self.network.check_label(label)
        start = time.perf_counter()
        deadline = self._deadline()
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        faces = [(i, +1) for i in range(lo.size) if hi[i] < region.upper[i]] + \
                [(i, -1) for i in range(lo.size) if lo[i] > region.lower[i]]
        if not faces:
            return RegionAnswer(RegionVerdict.NONE, reason="the box covers the region")
        scale, untrusted = self._region_scale(region.lower, region.upper, label)
        if untrusted:
            return RegionAnswer(RegionVerdict.UNKNOWN, reason=untrusted)
        try:
            try:
                enc = self._class_encoding(region, label, deadline)
            except EncodingTimedOut as exc:
                self.stats.timeouts += 1
                return RegionAnswer(RegionVerdict.UNKNOWN, reason=f"undecided ({exc})", timed_out=True)
            m = enc.model
            excess = {(i, s): (region.upper[i] - hi[i]) if s > 0 else (lo[i] - region.lower[i]) for i, s in faces}
            top = max(excess.values())
            m.t = pe.Var(bounds=(-top, top))
            m.s = pe.Var(range(len(faces)), domain=pe.Binary)
            m.cons.add(sum(m.s[k] for k in range(len(faces))) == 1)
            for k, (i, s) in enumerate(faces):
                gap = enc.x[i] - hi[i] if s > 0 else lo[i] - enc.x[i]
                floor = (region.lower[i] - hi[i]) if s > 0 else (lo[i] - region.upper[i])
                m.cons.add(m.t <= gap + (top - floor) * (1 - m.s[k]))
            res = solve(self._solver(deadline, scale=scale), enc, m.t, pe.maximize)
            needed = tolerance - solver_coordinate_error(scale, float(np.max(region.upper - region.lower)))
            if res.infeasible or (res.bound is not None and res.bound <= needed):
                return RegionAnswer(RegionVerdict.NONE, reason=f"proven max excess {res.bound} (at most {needed:.3g})")

            def outside(w: FloatArray) -> bool:
                return bool(((w < lo) | (w > hi)).any())

            if res.x is not None:
                w = np.clip(res.x, region.lower, region.upper)
                if outside(w) and self._is_class_point(w, label, region):
                    return RegionAnswer(RegionVerdict.WITNESS, witness=w, reason=f"excess {res.value:.3g}")
            note = ""
            if not res.timed_out and res.bound is not None:
                # the optimum lies on the edge of the class superset (or was not returned)
                w, note = self._interior_witness(enc, m.t, pe.maximize, label, region, deadline, keep=outside,
                                                 scale=scale)
                if w is not None:
                    excess = float(np.max(np.maximum(lo - w, w - hi)))
                    return RegionAnswer(RegionVerdict.WITNESS, witness=w, reason=f"excess {excess:.3g}, {note}")
                note = f"; {note}"
            self.stats.timeouts += int(res.timed_out)
            return RegionAnswer(RegionVerdict.UNKNOWN, reason=f"undecided ({res.status}, bound {res.bound}{note})",
                                timed_out=res.timed_out)
        finally:
            self.stats.calls += 1
            self.stats.seconds += time.perf_counter() - start
