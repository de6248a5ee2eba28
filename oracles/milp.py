"""``milp``: exact MILP encoding (pyomo) solved by HiGHS — sound and complete.

Robustness of a box: for every class ``j`` whose margin alpha-CROWN cannot prove, one
MILP minimises ``logit_label - logit_j`` over the box (inputs along which that margin is
monotone fixed first; pre-activation bounds from CROWN/interval propagation over the
box; stable neurons without binaries; big-M for the rest; the last layer's convex
neurons without binaries). A row is proven only if the
solver's *dual bound* exceeds :data:`PROOF_MARGIN`; an incumbent <= 0 is a counterexample
candidate, re-checked by a forward pass. A time-out or any other solver status is
UNKNOWN.

Also answers the class-region and coordinate-extreme queries (see :mod:`oracles.base`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyomo.environ as pe
import torch

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network

from .base import Answer, ClassBox, Extreme, FloatArray, Oracle, RegionAnswer, RegionVerdict, Verdict
from .bounds import (
    NetworkTensors,
    backward,
    fix_monotone_inputs,
    intermediate_bounds,
    margin_spec,
    relu_relaxation,
)
from .crown import AlphaCrownOracle
from .milp_encoding import PROOF_MARGIN, Encoding, encode, make_solver, solve

log = logging.getLogger(__name__)

#: Class constraints ``logit_c - logit_j >= -CLASS_SLACK`` define a (slightly larger)
#: superset of the class region, so that solver tolerances cannot cut true points off.
CLASS_SLACK = 1e-6


def class_encoding(network: Network, region: Box, bounds, label: int) -> Encoding:
    """The network on ``region`` restricted to (a slight superset of) the class region:
    ``logit_label - logit_j >= -CLASS_SLACK`` for every ``j``."""
    enc = encode(network, region.lower, region.upper, bounds)
    for j in range(network.n_classes):
        if j != label:
            enc.model.cons.add(enc.logits[label] - enc.logits[j] >= -CLASS_SLACK)
    return enc


# -- worker processes for class_extremes (module level, so that they can be pickled) -----------
_WORKER: dict[str, Any] = {}


def _worker_init(network: Network, region: Box, bounds, label: int, time_limit: float | None, gap: float) -> None:
    """One encoding and one persistent solver per process: each problem only changes the
    objective."""
    _WORKER.update(enc=class_encoding(network, region, bounds, label), opt=make_solver(time_limit, gap))


def _worker_solve(task: tuple[int, bool]) -> tuple[int, bool, str, float | None, FloatArray | None]:
    index, maximize = task
    enc = _WORKER["enc"]
    res = solve(_WORKER["opt"], enc, enc.x[index], pe.maximize if maximize else pe.minimize)
    return index, maximize, res.status, res.bound, res.x


class MilpOracle(Oracle):
    """Exact MILP verification with pyomo and HiGHS (see module docstring)."""

    name = "milp"
    sound = True
    complete = True
    batched = False

    def __init__(self, network: Network, *, time_limit: float | None = 60.0, mip_rel_gap: float = 1e-6,
                 threads: int = 1) -> None:
        super().__init__(network, time_limit=time_limit)
        if not 0 <= mip_rel_gap < 1:
            raise OracleError("mip_rel_gap must be in [0, 1)")
        self.mip_rel_gap, self.threads = mip_rel_gap, threads
        self.tensors = NetworkTensors.of(network)
        self._prefilter = AlphaCrownOracle(network)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "mip_rel_gap": self.mip_rel_gap, "threads": self.threads,
                "proof_margin": PROOF_MARGIN, "solver": "HiGHS via pyomo appsi"}

    # -- helpers --------------------------------------------------------------------------------
    def _bounds(self, lower: FloatArray, upper: FloatArray) -> tuple[list[tuple[FloatArray, FloatArray]], list]:
        lo = torch.tensor(lower, dtype=torch.float64)[None]
        hi = torch.tensor(upper, dtype=torch.float64)[None]
        inter = intermediate_bounds(self.tensors, lo, hi)
        return [(a[0].numpy(), b[0].numpy()) for a, b in inter], inter

    def _solver(self, deadline: float):
        remaining = deadline - time.perf_counter()
        return make_solver(None if math.isinf(remaining) else max(remaining, 0.01), self.mip_rel_gap, self.threads)

    def _deadline(self) -> float:
        return math.inf if self.time_limit is None else time.perf_counter() + self.time_limit

    # -- robustness -----------------------------------------------------------------------------
    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        return [self._verify_box(lower[i], upper[i], label) for i in range(len(lower))]

    def _verify_box(self, lower: FloatArray, upper: FloatArray, label: int) -> Answer:
        deadline = self._deadline()
        _, inter = self._bounds(lower, upper)
        lo = torch.tensor(lower, dtype=torch.float64)[None]
        hi = torch.tensor(upper, dtype=torch.float64)[None]
        spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
        # classes alpha-CROWN already proves need no MILP
        crown = self._prefilter.margin_lower_bounds(lower[None], upper[None], label)[0]
        others = [j for j in range(self.network.n_classes) if j != label]
        # per class, the vertex minimising CROWN's linear bound: its true margin bounds the
        # minimum from above (a counterexample if <= 0) and orders the MILPs, smallest first
        with torch.no_grad():
            linear = backward(self.tensors, spec, self.tensors.depth - 1, [relu_relaxation(a, b) for a, b in inter])
        corners = torch.where(linear.coef[0] > 0, lo, hi).numpy()
        estimate = np.array([self.network.margins(corners[r], label)[0] for r in range(len(others))])
        if (estimate <= 0).any():
            r = int(np.argmin(estimate))
            return Answer(Verdict.FALSIFIED, counterexample=corners[r].copy(), reason="CROWN's minimising vertex")
        proven = crown.copy()  # per class: a proven lower bound of the margin, once > 0
        w_last = self.network.affines[-1].weight
        smallest = math.inf  # the smallest margin minimum solved exactly so far
        for row in np.argsort(estimate):
            if crown[row] > 0:
                continue
            j = others[row]
            # inputs along which the margin is monotone on the box are fixed at its minimising
            # end: the minimum, and so the answer, is unchanged, and the MILP gets smaller
            with torch.no_grad():
                lo_j, hi_j, inter_j = fix_monotone_inputs(self.tensors, lo, hi, spec[0, row])
            bounds_j = [(a[0].numpy(), b[0].numpy()) for a, b in inter_j]
            enc = encode(self.network, lo_j[0].numpy(), hi_j[0].numpy(), bounds_j,
                         minimize_last=w_last[label] - w_last[j])
            margin = enc.logits[label] - enc.logits[j]
            # once one class is solved exactly, the others only need to be shown above that
            # minimum: with ``margin <= cutoff`` added, nodes whose relaxation exceeds the
            # cutoff are pruned, and "infeasible" proves the class's margin above it
            cutoff = max(smallest, 2 * PROOF_MARGIN) if math.isfinite(smallest) else None
            if cutoff is not None:
                enc.model.cons.add(margin <= cutoff)
            res = solve(self._solver(deadline), enc, margin)
            if res.x is not None and res.value is not None and res.value <= 0:
                return Answer(Verdict.FALSIFIED, counterexample=np.clip(res.x, lower, upper),
                              reason=f"MILP optimum {res.value:.3g} for class {j}")
            if cutoff is not None and res.infeasible:
                proven[row] = cutoff - PROOF_MARGIN
                continue
            if res.bound is not None and res.bound > PROOF_MARGIN:
                proven[row] = res.bound
                smallest = min(smallest, res.bound)
                continue
            return Answer(Verdict.UNKNOWN, margin=res.bound, timed_out=res.timed_out,
                          reason=f"MILP for class {j} undecided ({res.status}, bound {res.bound})")
        return Answer(Verdict.VERIFIED, margin=float(proven.min()))

    # -- class region ---------------------------------------------------------------------------
    def _class_encoding(self, region: Box, label: int) -> Encoding:
        bounds, _ = self._bounds(region.lower, region.upper)
        return class_encoding(self.network, region, bounds, label)

    def _is_class_point(self, x: FloatArray | None, label: int, region: Box) -> bool:
        return x is not None and region.contains(x) and bool(self.network.margins(x, label)[0] >= 0)

    def coordinate_extreme(self, label: int, index: int, maximize: bool, region: Box,
                           encoding: Encoding | None = None) -> Extreme:
        """Min or max of ``x[index]`` over ``{x in region : class(x) = label}`` (ties included).

        The returned ``bound`` is proven (an outer bound of the true extreme); ``witness``,
        when given, is a confirmed point of the class region; ``exact`` when its coordinate
        is within :data:`PROOF_MARGIN` of the bound.
        """
        self.network.check_label(label)
        start = time.perf_counter()
        enc = encoding or self._class_encoding(region, label)
        res = solve(self._solver(self._deadline()), enc, enc.x[index], pe.maximize if maximize else pe.minimize)
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start
        if res.infeasible:
            return Extreme(-math.inf if maximize else math.inf, None, True, "the class region is empty")
        if res.bound is None:
            self.stats.timeouts += int(res.timed_out)
            edge = region.upper[index] if maximize else region.lower[index]
            return Extreme(float(edge), None, False, f"no proven bound ({res.status}); the region's edge")
        bound = res.bound + PROOF_MARGIN if maximize else res.bound - PROOF_MARGIN
        bound = float(min(bound, region.upper[index]) if maximize else max(bound, region.lower[index]))
        witness = np.clip(res.x, region.lower, region.upper) if res.x is not None else None
        if not self._is_class_point(witness, label, region):
            witness = None
        exact = witness is not None and abs(witness[index] - bound) <= 2 * PROOF_MARGIN
        return Extreme(bound, witness, exact, res.status)

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
        witnesses = pts[self.network.margins(pts, label) >= 0] if len(pts) else pts
        lower, upper = lo_r.copy(), hi_r.copy()  # proven outer bounds
        reached_lo = witnesses.min(axis=0) if len(witnesses) else np.full(n, np.inf)
        reached_hi = witnesses.max(axis=0) if len(witnesses) else np.full(n, -np.inf)
        reached_lo, reached_hi, moved = self._single_changes(label, region, witnesses[:single_changes], reached_lo,
                                                             reached_hi)
        witnesses = np.concatenate([witnesses, moved])
        tasks = [(i, False) for i in range(n) if reached_lo[i] > lo_r[i]] + \
                [(i, True) for i in range(n) if reached_hi[i] < hi_r[i]]
        milps = timeouts = 0
        empty = False
        for index, maximize, status, bound, x in self._run_extremes(label, region, tasks, workers, progress):
            milps += 1
            if status == "infeasible":
                empty = True
                break
            if bound is None:
                timeouts += int(status == "maxTimeLimit")
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
        ok = np.flatnonzero(self.network.margins(pts, label) >= 0)
        return pts[ok[0]] if ok.size else None

    def _single_changes(self, label: int, region: Box, witnesses: FloatArray, reached_lo: FloatArray,
                        reached_hi: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Move one coordinate of each witness to the region's edge: where the point stays
        in the class, that edge is attained (the new witnesses are returned too)."""
        n = self.network.n_inputs
        if not len(witnesses):
            return reached_lo, reached_hi, np.zeros((0, n))
        reached_lo, reached_hi = reached_lo.copy(), reached_hi.copy()
        found = []
        for edge, reached, better in ((region.lower, reached_lo, np.less), (region.upper, reached_hi, np.greater)):
            todo = np.flatnonzero(better(edge, reached))
            for chunk in np.array_split(todo, max(1, len(todo) // 64)):
                if not chunk.size:
                    continue
                pts = np.repeat(witnesses[None], chunk.size, axis=0)  # (coords, witnesses, n)
                pts[np.arange(chunk.size), :, chunk] = edge[chunk][:, None]
                ok = (self.network.margins(pts.reshape(-1, pts.shape[-1]), label) >= 0).reshape(chunk.size, -1)
                hit = ok.any(axis=1)
                reached[chunk[hit]] = edge[chunk[hit]]
                found += [pts[k, int(np.argmax(ok[k]))] for k in np.flatnonzero(hit)]
        return reached_lo, reached_hi, np.array(found).reshape(-1, n)

    def _run_extremes(self, label: int, region: Box, tasks: list[tuple[int, bool]], workers: int, progress: Any):
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
            _worker_init(self.network, region, bounds, label, self.time_limit, self.mip_rel_gap)
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
                                           self.mip_rel_gap)) as pool:
            for result in pool.map(_worker_solve, tasks, chunksize=4):
                yield result
                done += 1
                if progress is not None:
                    progress(done)

    def class_region(self, lower: FloatArray, upper: FloatArray, label: int, region: Box,
                     tolerance: float = PROOF_MARGIN) -> RegionAnswer:
        """Is there a point of ``region`` classified ``label`` outside the box by more than
        ``tolerance`` in some coordinate? One MILP maximises the largest such excess."""
        self.network.check_label(label)
        start = time.perf_counter()
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        enc = self._class_encoding(region, label)
        m = enc.model
        faces = [(i, +1) for i in range(lo.size) if hi[i] < region.upper[i]] + \
                [(i, -1) for i in range(lo.size) if lo[i] > region.lower[i]]
        if not faces:
            return RegionAnswer(RegionVerdict.NONE, reason="the box covers the region")
        excess = {(i, s): (region.upper[i] - hi[i]) if s > 0 else (lo[i] - region.lower[i]) for i, s in faces}
        top = max(excess.values())
        m.t = pe.Var(bounds=(-top, top))
        m.s = pe.Var(range(len(faces)), domain=pe.Binary)
        m.cons.add(sum(m.s[k] for k in range(len(faces))) == 1)
        for k, (i, s) in enumerate(faces):
            gap = enc.x[i] - hi[i] if s > 0 else lo[i] - enc.x[i]
            floor = (region.lower[i] - hi[i]) if s > 0 else (lo[i] - region.upper[i])
            m.cons.add(m.t <= gap + (top - floor) * (1 - m.s[k]))
        res = solve(self._solver(self._deadline()), enc, m.t, pe.maximize)
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start
        if res.infeasible or (res.bound is not None and res.bound <= tolerance):
            return RegionAnswer(RegionVerdict.NONE, reason=f"proven max excess {res.bound}")
        if res.x is not None and res.value is not None and res.value > 0:
            w = np.clip(res.x, region.lower, region.upper)
            outside = bool(((w < lo) | (w > hi)).any())
            if outside and self._is_class_point(w, label, region):
                return RegionAnswer(RegionVerdict.WITNESS, witness=w, reason=f"excess {res.value:.3g}")
        self.stats.timeouts += int(res.timed_out)
        return RegionAnswer(RegionVerdict.UNKNOWN, reason=f"undecided ({res.status}, bound {res.bound})",
                            timed_out=res.timed_out)
