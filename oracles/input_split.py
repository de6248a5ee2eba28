"""Input splitting: branch and bound on the input box, for networks with few inputs.

A box is VERIFIED when every sub-box of a partition of it is verified by CROWN (or
alpha-CROWN): the sub-boxes are halves of halves, ``[l, m]`` and ``[m, u]`` along one
input dimension with the float64 midpoint ``m`` shared (every point of the box lies in a
leaf), and the proof is the conjunction of the leaves' sound proofs (the reported
``margin`` is the smallest leaf bound: a proven lower bound over the whole box). Sub-boxes
are bounded many at a time (the bound propagation is batched over boxes), the ones with the
lowest bounds first (on a hard problem, those CROWN leaves open are bounded again by
alpha-CROWN with a few steps); each one still open is split along the input dimension with the
largest ``(upper - lower) * (|d bound / d lower| + |d bound / d upper|)`` (the width times
the weight of that input in CROWN's linear lower bound of the worst margin, read from the
bound's gradient, as alpha-beta-CROWN's input-split branching scores inputs; ``branching``
``bound``, the default on chains of more than two inputs), the width times the margin's
gradient at the centre (``smear``: no gradient of the bound, more sub-boxes; the default on
other graphs, where the bound's gradient would keep every intermediate pass's tensors for
the backward: on a 160,000-neuron generator and discriminator of VNN-COMP 2023's cgan, over
16 GB for one sub-box), or the widest (``width``, the default on nets with at most two inputs).

Each bounded sub-box is also searched for a counterexample: its centre and the vertex where
CROWN's linear lower bound is smallest (``bound`` branching; else where the margin's
linearisation at the centre is) are evaluated in float64, and a point with a margin
<= 0 is confirmed exactly (:meth:`Classifier.misclassified`, then again by the base class)
before FALSIFIED is answered. Anything else — the time limit (checked before every batch,
and a batch is sized from the measured time per sub-box to fit what is left), more than
``max_domains`` open sub-boxes, a sub-box too thin to split, bounds that are not finite
even on the box's centre point (overflow, where splitting gives up at once) — is UNKNOWN,
never a proof.

It is complete in the limit on ReLU networks whose minimum margin over the box is not 0
(small boxes make every ReLU stable, where CROWN is exact), but the time and the number of
sub-boxes are bounded: the class declares itself incomplete.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network

from .base import Answer, FloatArray, Oracle, Verdict
from .bounds import BoundsTimedOut
from .crown import DTYPES, AlphaCrownOracle, CrownOracle, resolve_device
from .precision import box_tensors, sound_kernels

if TYPE_CHECKING:
    from parallelepipedonn.graph import Graph

log = logging.getLogger(__name__)

#: The branching heuristics: ``smear`` (width times |d margin / d input| at the centre), ``bound`` (width
#: times the input's weight in CROWN's linear bound, from the bound's gradient), ``width``.
BRANCHINGS = ("smear", "bound", "width")
#: Networks with at most this many inputs are split along the widest by default (``width``):
#: between two inputs the bound's gradient seldom chooses better than alternating, and it
#: makes each sub-box about 2.3 times as costly (tllverifybench's N=40 net, forward-mode
#: bounds: 16 against 38 ms); measured there, N=40 instances 1 and 2: ``width`` 32 s and
#: 59 s, ``bound`` 56 s and a time-out at 60 s. Wider ones: ``bound`` (ACAS Xu's 5 inputs).
WIDTH_INPUTS = 2
#: The number of sub-boxes bounded per call doubles (up to ``batch``) while a call takes less.
ROUND_SECONDS = 2.0


class InputSplitOracle(Oracle):
    """Branch and bound on the input box with batched CROWN bounds (see the module
    docstring). Options: ``batch`` (most sub-boxes bounded per call), ``max_domains`` (most
    open sub-boxes), ``branching`` (:data:`BRANCHINGS`; default ``bound`` on chains, ``smear``
    on other graphs, ``width`` for at most :data:`WIDTH_INPUTS` inputs), ``alpha_steps`` (default 3; 0:
    none): once ``alpha_after`` sub-boxes were bounded (default 256: the easy problems are
    done by then, CROWN alone is faster on them), the sub-boxes that CROWN leaves open are
    bounded again by alpha-CROWN with that many steps, the larger bound kept (both are
    sound; on the hard ACAS Xu instances this needs 5-10 times fewer sub-boxes), ``device``, ``dtype``,
    ``intermediate`` (CROWN's intermediate bounds, :data:`~oracles.crown.INTERMEDIATE`; default
    ``forward`` on chains of affine maps and ReLUs, where the intermediate bounds of one box
    of tllverifybench's 2-input nets take 0.03 s against CROWN's 0.85 s (N=40, 3200 wide)
    and 0.06 against 4.3 s (N=56, 6272 wide), and ``crown`` on other graphs)."""

    name = "input-split"
    sound = True
    complete = False
    batched = True
    queries = frozenset({"verify"})
    reads_graphs = True  # as CROWN does

    def __init__(self, network: Network | Graph, *, batch: int = 1024, max_domains: int = 1_000_000,
                 branching: str | None = None, alpha_steps: int = 3, alpha_after: int = 256, device: str = "cpu",
                 dtype: str = "float64", intermediate: str | None = None, time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        if batch < 1 or max_domains < 1:
            raise OracleError("input-split needs batch >= 1 and max_domains >= 1")
        chain = isinstance(self.network, Network) or self.network.as_network() is not None
        if branching is None:
            branching = "width" if self.network.n_inputs <= WIDTH_INPUTS else "bound" if chain else "smear"
        if branching not in BRANCHINGS:
            raise OracleError(f"input-split branching must be one of {', '.join(BRANCHINGS)}, not {branching!r}")
        if alpha_steps < 0:
            raise OracleError("input-split needs alpha_steps >= 0")
        if dtype not in DTYPES:
            raise OracleError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.batch, self.max_domains, self.branching, self.alpha_steps = batch, max_domains, branching, alpha_steps
        self.alpha_after = alpha_after
        self.dtype = dtype
        self.device = resolve_device(device)
        if intermediate is None:  # forward-mode bounds where they apply (chains), else CROWN's
            intermediate = "forward" if chain else "crown"
        self.intermediate = intermediate
        self.crown = CrownOracle(self.network, device=device, dtype=dtype, screen=False, reuse=False, bisect=False,
                                 chunk_size=batch, intermediate=intermediate)
        self.alpha = AlphaCrownOracle(self.network, steps=alpha_steps, device=device, chunk_size=batch,
                                      intermediate=intermediate) if alpha_steps > 0 else None
        self.module = self.network.to_torch(torch.float64, self.device, shared=True) \
            if isinstance(self.network, Network) else self.network.to_torch(torch.float64, self.device)
        #: what the last verified or decided box took: sub-boxes bounded, rounds
        self.last: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "batch": self.batch, "max_domains": self.max_domains,
                "branching": self.branching, "alpha_steps": self.alpha_steps, "alpha_after": self.alpha_after,
                "device": str(self.device), "dtype": self.dtype, "intermediate": self.intermediate}

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        return [self._solve(lower[i], upper[i], label, deadline) for i in range(len(lower))]

    # -- one box ------------------------------------------------------------------------------------
    def _solve(self, lower: FloatArray, upper: FloatArray, label: int, deadline: float) -> Answer:
        """Branch and bound on ``[lower, upper]`` (see the module docstring)."""
        open_lo, open_hi = lower[None].copy(), upper[None].copy()
        keys = np.full(1, -np.inf)  # the parent's bound: the lowest first
        smallest = np.inf  # the smallest bound of a verified leaf
        bounded = rounds = 0
        size = 1  # sub-boxes per call: doubled while calls are fast, at most ``batch``
        per_box = 0.0  # seconds per sub-box, measured
        alpha_on = False
        while len(open_lo):
            if not alpha_on and self.alpha is not None and bounded >= self.alpha_after:
                # alpha-CROWN from now on: the time per sub-box is not known, start small again
                alpha_on, size, per_box = True, min(size, 16), per_box * 2 * (self.alpha_steps + 1)
            now = time.perf_counter()
            if now >= deadline or (per_box and deadline - now < per_box):
                self.last = {"bounded": bounded, "rounds": rounds}
                return Answer(Verdict.UNKNOWN, reason=f"time limit, {len(open_lo)} sub-boxes open "
                              f"after {bounded} bounded", timed_out=True)
            k = min(size, len(open_lo))
            if per_box and math.isfinite(deadline):
                k = max(1, min(k, int((deadline - now) / per_box)))
            take = np.argpartition(keys, k - 1)[:k] if k < len(open_lo) else np.arange(len(open_lo))
            lo, hi = open_lo[take], open_hi[take]
            keep = np.ones(len(open_lo), dtype=bool)
            keep[take] = False
            open_lo, open_hi, keys = open_lo[keep], open_hi[keep], keys[keep]
            start = time.perf_counter()
            try:
                bounds, score, corner = self._bound(lo, hi, label, alpha=alpha_on, deadline=deadline)
            except BoundsTimedOut:
                self.last = {"bounded": bounded, "rounds": rounds}
                return Answer(Verdict.UNKNOWN, reason=f"time limit, reached while {k} sub-boxes were bounded "
                              f"({len(open_lo) + k} open after {bounded} bounded)", timed_out=True)
            rounds += 1
            bounded += k
            cex = self._falsify(lo, hi, corner, label)
            if cex is not None:
                self.last = {"bounded": bounded, "rounds": rounds}
                return Answer(Verdict.FALSIFIED, counterexample=cex,
                              reason=f"a confirmed counterexample after {bounded} sub-boxes")
            worst = bounds.min(axis=1)
            if rounds == 1 and not np.isfinite(worst).all() and not self._finite_at_center(lo, hi, label):
                self.last = {"bounded": bounded, "rounds": rounds}
                return Answer(Verdict.UNKNOWN, reason="the bounds are not finite even on the box's centre "
                              "point (overflow): splitting gives up")
            done = np.isfinite(worst) & (worst > 0)
            if done.any():
                smallest = min(smallest, float(worst[done].min()))
            todo = np.flatnonzero(~done)
            if len(todo):
                split = self._split(lo[todo], hi[todo], score[todo])
                if split is None:
                    self.last = {"bounded": bounded, "rounds": rounds}
                    return Answer(Verdict.UNKNOWN, reason="a sub-box too thin to split is not verified "
                                  "and has no confirmed counterexample")
                (a_lo, a_hi), (b_lo, b_hi) = split
                parent = np.where(np.isfinite(worst[todo]), worst[todo], -np.inf)
                open_lo = np.concatenate([open_lo, a_lo, b_lo])
                open_hi = np.concatenate([open_hi, a_hi, b_hi])
                keys = np.concatenate([keys, parent, parent])
            if len(open_lo) > self.max_domains:
                self.last = {"bounded": bounded, "rounds": rounds}
                return Answer(Verdict.UNKNOWN, reason=f"more than {self.max_domains} open sub-boxes")
            elapsed = time.perf_counter() - start
            per_box = elapsed / k
            log.debug("input-split round %d: %d sub-boxes in %.3f s, %d verified, %d open", rounds, k, elapsed,
                      int(done.sum()), len(open_lo))
            if elapsed < ROUND_SECONDS and k == size:
                size = min(2 * size, self.batch)
        self.last = {"bounded": bounded, "rounds": rounds}
        return Answer(Verdict.VERIFIED, margin=smallest,
                      reason=f"every one of the sub-boxes verified ({bounded} bounded, {rounds} rounds)")

    def _bound(self, lo: FloatArray, hi: FloatArray, label: int, alpha: bool = True, deadline: float = math.inf) \
            -> tuple[FloatArray, FloatArray, FloatArray]:
        """Proven lower bounds of the margins on each box ``(k, classes - 1)``, a branching
        score per input ``(k, n)`` and a vertex of each box worth evaluating ``(k, n)``:
        where CROWN's linear lower bound of the worst margin is smallest (``bound``
        branching), else where a signed-gradient step from the centre leads. alpha-CROWN
        (``alpha``) stops optimising at ``deadline`` (its bound then is the best of the
        steps it took: every step's is proven); CROWN's intermediate bounds stop there
        (:class:`~oracles.bounds.BoundsTimedOut`)."""
        lo_t, hi_t = box_tensors(lo, hi, DTYPES[self.dtype], self.device)
        grads = self.branching == "bound"
        lo_t.requires_grad_(grads)
        hi_t.requires_grad_(grads)
        g_lo = g_hi = None
        with torch.enable_grad() if grads else torch.no_grad(), sound_kernels(self.device, DTYPES[self.dtype]):
            b = CrownOracle._bounds(self.crown, lo_t, hi_t, label, deadline)
            if grads:
                worst = b.min(dim=1).values
                target = torch.where(torch.isfinite(worst), worst, torch.zeros_like(worst)).sum()
                if target.requires_grad:
                    g_lo, g_hi = torch.autograd.grad(target, (lo_t, hi_t), allow_unused=True)
        bounds = b.detach().to(torch.float64).cpu().numpy()
        if self.alpha is not None and alpha:
            open_ = np.flatnonzero(~(np.isfinite(bounds.min(axis=1)) & (bounds.min(axis=1) > 0)))
            if len(open_):
                left = None if math.isinf(deadline) else max(0.0, deadline - time.perf_counter())
                with self.alpha.time_limited(left):
                    better = self.alpha.margin_lower_bounds(lo[open_], hi[open_], label)
                bounds[open_] = np.where(np.isfinite(better), np.fmax(bounds[open_], better), bounds[open_])
        if grads:
            zeros = np.zeros_like(lo)
            g_lo = zeros if g_lo is None else np.nan_to_num(g_lo.to(torch.float64).cpu().numpy())
            g_hi = zeros if g_hi is None else np.nan_to_num(g_hi.to(torch.float64).cpu().numpy())
            slope = g_lo + g_hi  # the sign of the bound's coefficient of each input
            weight = np.abs(g_lo) + np.abs(g_hi)
        else:  # the gradient of the margin at the centre, against the runner-up class
            slope = self._center_gradient(lo, hi, label)
            weight = np.abs(slope)
        score = hi - lo if self.branching == "width" else (hi - lo) * weight
        # a linear function a . x + c is smallest at x_i = lower_i where a_i > 0 (for the margin's
        # gradient as for the bound's coefficients: the gradient negated picked the vertex where
        # the margin's linearisation is largest)
        corner = np.where(slope > 0, lo, np.where(slope < 0, hi, lo + (hi - lo) / 2))
        return bounds, score, np.clip(corner, lo, hi)

    def _finite_at_center(self, lo: FloatArray, hi: FloatArray, label: int) -> bool:
        """Whether CROWN's bounds are finite on the point box at the centre of each box:
        when they are not (overflowing weights or values), the leaf holding the centre is not
        expected to get finite bounds either, so splitting gives up (UNKNOWN: always sound)."""
        center = np.clip(lo + (hi - lo) / 2, lo, hi)
        return bool(np.isfinite(self._bound(center, center, label, alpha=False)[0]).all())

    def _center_gradient(self, lo: FloatArray, hi: FloatArray, label: int) -> FloatArray:
        """The gradient of ``logit_label - logit_r`` at each box's centre (``r`` the runner-up there)."""
        center = torch.tensor(lo + (hi - lo) / 2, dtype=torch.float64, device=self.device, requires_grad=True)
        with torch.enable_grad():
            logits = self.module(center)
            others = logits.detach().clone()
            others[:, label] = -torch.inf
            margin = logits[:, label] - logits.gather(1, others.argmax(dim=1, keepdim=True))[:, 0]
            (grad,) = torch.autograd.grad(margin.sum(), center)
        return np.nan_to_num(grad.cpu().numpy())

    def _split(self, lo: FloatArray, hi: FloatArray, score: FloatArray) \
            -> tuple[tuple[FloatArray, FloatArray], tuple[FloatArray, FloatArray]] | None:
        """Each box halved along its best-scored dimension that has a float64 midpoint
        strictly inside (the widest such one where no score is positive); ``None`` when
        some box has none."""
        mid = lo + (hi - lo) / 2
        splittable = (mid > lo) & (mid < hi)
        if not splittable.any(axis=1).all():
            return None
        width = np.where(splittable, hi - lo, -np.inf)
        scored = np.where(splittable & np.isfinite(score), score, -np.inf)
        use_score = (scored > 0).any(axis=1)
        dim = np.where(use_score, scored.argmax(axis=1), width.argmax(axis=1))
        rows = np.arange(len(lo))
        m = mid[rows, dim]
        a_hi, b_lo = hi.copy(), lo.copy()
        a_hi[rows, dim] = m
        b_lo[rows, dim] = m
        return (lo, a_hi), (b_lo, hi)

    def _falsify(self, lo: FloatArray, hi: FloatArray, corner: FloatArray, label: int) -> FloatArray | None:
        """A point of one of the boxes (its centre or ``corner``) that the model misclassifies,
        confirmed exactly; else ``None``."""
        center = np.clip(lo + (hi - lo) / 2, lo, hi)
        points = np.concatenate([center, corner])
        with torch.no_grad():
            logits = self.module(torch.tensor(points, dtype=torch.float64, device=self.device))
            own = logits[:, label].clone()
            logits[:, label] = -torch.inf
            gap = (own - logits.max(dim=1).values).cpu().numpy()
        for i in np.argsort(gap)[:8]:
            if not gap[i] <= 1e-9:  # float64 margins far above 0 cannot be misclassified
                break
            if self.model.misclassified(points[i:i + 1], label)[0]:
                return points[i].copy()
        return None


__all__ = ["BRANCHINGS", "InputSplitOracle"]
