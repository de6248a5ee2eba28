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

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyomo.environ as pe
import torch

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network

from .base import Answer, Extreme, FloatArray, Oracle, RegionAnswer, RegionVerdict, Verdict
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

#: Class constraints ``logit_c - logit_j >= -CLASS_SLACK`` define a (slightly larger)
#: superset of the class region, so that solver tolerances cannot cut true points off.
CLASS_SLACK = 1e-6


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
        enc = encode(self.network, region.lower, region.upper, bounds)
        for j in range(self.network.n_classes):
            if j != label:
                enc.model.cons.add(enc.logits[label] - enc.logits[j] >= -CLASS_SLACK)
        return enc

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
