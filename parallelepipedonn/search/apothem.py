"""Apothem (cubic, L-infinity) searches: the largest verified cube around ``x`` within D.

Every search here returns the cube ``{x' in D : ||x' - x||_inf <= r}`` of the largest
radius ``r`` its oracle VERIFIED (``None`` if none), the closest confirmed counterexample
it met (an upper bound of the best apothem), and its oracle calls (boxes asked) and
rounds (batched calls). With a falsifier, one batched call at the end looks for
counterexamples just beyond the verified radius, to bound the best apothem from above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from oracles.base import Oracle, Verdict

from .base import OracleLedger, Problem, SearchResult, Status

#: Radii, as multiples of the smallest unverified one, at which the falsifier looks for
#: the counterexample that bounds the best apothem from above (one batched call).
ESCALATION = np.array([1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])

#: The reason of a search its problem's deadline stopped (the cube is still proven).
TIME_LIMIT = "time limit reached: the cube is the largest verified so far, not searched to the precision"


def falsify_upward(problem: Problem, falsifier: Oracle, start: float, ledger: OracleLedger) -> None:
    """Ask the falsifier, in one batched call, for counterexamples in cubes of radius
    ``start`` × ``ESCALATION`` (capped at the domain); the ledger keeps the closest."""
    rmax = problem.radius_max
    radii = np.unique(np.minimum(max(start, 1e-6) * ESCALATION, rmax))
    radii = radii[radii < ledger.best_distance]
    if radii.size:
        ledger.ask_radii(radii)


def finish(problem: Problem, ledger: OracleLedger, verified_radius: float | None, falsifier_ledger: OracleLedger | None,
           reason: str = "") -> SearchResult:
    """Assemble the result of an apothem search from its ledgers."""
    best_d, cex = ledger.best_distance, ledger.best_counterexample
    if falsifier_ledger is not None and falsifier_ledger.best_distance < best_d:
        best_d, cex = falsifier_ledger.best_distance, falsifier_ledger.best_counterexample
    box = None if verified_radius is None else problem.cube(verified_radius)
    status = Status.CERTIFIED if box is not None else Status.UNKNOWN
    if box is None and not reason:
        reason = "the oracle could not verify even the input point"
    trace = tuple(ledger.trace) + (tuple(falsifier_ledger.trace) if falsifier_ledger else ())
    return SearchResult(status, box, best_d, cex, ledger.boxes, ledger.rounds,
                        falsifier_ledger.boxes if falsifier_ledger else 0, reason, trace)


class _ApothemSearch:
    """The frame shared by the apothem searches: the subclass finds a verified radius and
    the smallest radius it could not verify; then the point itself is tried if nothing
    was verified, and the falsifier bounds the best apothem from above."""

    name = "apothem"
    precision: float

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision}

    def _search(self, problem: Problem, ledger: OracleLedger) -> tuple[float | None, float]:
        raise NotImplementedError

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        """The subclass's search, stopped between oracle calls once the problem's deadline
        has passed (the largest cube verified by then, with :data:`TIME_LIMIT`)."""
        ledger = OracleLedger(problem, oracle)
        verified, unverified = self._search(problem, ledger)
        if problem.expired:
            return finish(problem, ledger, verified, None, reason=TIME_LIMIT if verified is not None else
                          "time limit reached before any cube was verified")
        if verified is None and ledger.ask_radii(np.array([0.0]))[0].verdict is Verdict.VERIFIED:
            verified = 0.0
        fledger = None
        if falsifier is not None and verified is not None and math.isfinite(unverified):
            fledger = OracleLedger(problem, falsifier)
            fledger.best_distance = ledger.best_distance
            falsify_upward(problem, falsifier, unverified, fledger)
        return finish(problem, ledger, verified, fledger)


@dataclass(frozen=True)
class ApothemLinear(_ApothemSearch):
    """Bottom-up linear search (the original system's algorithm): radii ``δ, 2δ, 3δ, ...``
    until one is not verified. Oracle calls: ``r*/δ + 1`` — linear in ``diameter/δ``."""

    precision: float = 1e-4
    name: str = "apothem-linear"

    def _search(self, problem: Problem, ledger: OracleLedger) -> tuple[float | None, float]:
        rmax, verified, k = problem.radius_max, None, 1
        while not problem.expired:
            r = min(k * self.precision, rmax)
            if ledger.ask_radii(np.array([r]))[0].verdict is not Verdict.VERIFIED:
                return verified, min(r, ledger.best_distance)
            verified = r
            if r >= rmax:
                return verified, math.inf
            k += 1
        return verified, min(k * self.precision, rmax, ledger.best_distance)


@dataclass(frozen=True)
class ApothemBisection(_ApothemSearch):
    """Bottom-up dichotomic search (bisection on the radius).

    Invariant: the cube of radius ``lo`` was VERIFIED (or ``lo = 0`` not yet asked) and
    the cube of radius ``hi`` was not. Stops when ``hi - lo <= precision``; a confirmed
    counterexample at distance ``d`` lowers ``hi`` to ``d``. Oracle calls:
    ``ceil(log2(radius_max / precision)) + 2`` at most.
    """

    precision: float = 1e-4
    name: str = "apothem-bisection"

    def _search(self, problem: Problem, ledger: OracleLedger) -> tuple[float | None, float]:
        rmax = problem.radius_max
        if ledger.ask_radii(np.array([rmax]))[0].verdict is Verdict.VERIFIED:
            return rmax, math.inf
        lo, hi, verified = 0.0, min(rmax, ledger.best_distance), None
        while hi - lo > self.precision and not problem.expired:
            mid = (lo + hi) / 2
            if not lo < mid < hi:  # a precision below the spacing of floats here: nothing between
                break
            if ledger.ask_radii(np.array([mid]))[0].verdict is Verdict.VERIFIED:
                lo, verified = mid, mid
            else:
                hi = min(mid, ledger.best_distance)
        return verified, hi


@dataclass(frozen=True)
class ApothemKary(_ApothemSearch):
    """Batched k-ary search: each round asks ``k`` radii evenly spread over the current
    bracket in one batched oracle call, and keeps the largest verified one and the next
    one up. Rounds: ``ceil(log_{k+1}(radius_max / precision))`` + 1; calls: k per round."""

    precision: float = 1e-4
    k: int = 16
    name: str = "apothem-kary"

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "k": self.k}

    def _search(self, problem: Problem, ledger: OracleLedger) -> tuple[float | None, float]:
        rmax = problem.radius_max
        lo, hi, verified = 0.0, rmax, None
        first = True
        while hi - lo > self.precision and not problem.expired:
            # the first round includes the whole domain; later ones only the bracket's inside
            steps = np.arange(1, self.k + 1) / (self.k if first else self.k + 1)
            radii = lo + (hi - lo) * steps
            if not first and not ((radii > lo) & (radii < hi)).any():  # no float between: precision below it
                break
            answers = ledger.ask_radii(radii)
            ok = np.array([a.verdict is Verdict.VERIFIED for a in answers])
            if first and ok[-1]:
                return rmax, math.inf
            first = False
            if ok.any():
                best = int(np.flatnonzero(ok)[-1])
                lo, verified = float(radii[best]), float(radii[best])
                if best + 1 < len(radii):
                    hi = float(radii[best + 1])
            else:
                hi = float(radii[0])
            hi = min(hi, ledger.best_distance)
        return verified, hi


@dataclass(frozen=True)
class ApothemTopDown(_ApothemSearch):
    """Top-down counterexample-guided search: start from the whole domain; after each
    counterexample at distance ``d``, try the radius ``d - δ`` just inside it — or
    ``7/8`` of the current radius, if that is smaller (a counterexample on the cube's
    boundary would otherwise shrink it by only δ per call); when the oracle answers UNKNOWN
    without one (and the falsifier finds none either), halve the radius. Stops at the first
    verified radius."""

    precision: float = 1e-4
    max_iterations: int = 10_000
    name: str = "apothem-topdown"

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "max_iterations": self.max_iterations}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        ledger = OracleLedger(problem, oracle)
        fledger = OracleLedger(problem, falsifier) if falsifier is not None else None
        r = problem.radius_max
        for _ in range(self.max_iterations):
            if problem.expired:
                return finish(problem, ledger, None, fledger, reason=TIME_LIMIT)
            answer = ledger.ask_radii(np.array([r]))[0]
            if answer.verdict is Verdict.VERIFIED:
                return finish(problem, ledger, r, fledger)
            if answer.verdict is Verdict.UNKNOWN and fledger is not None:
                fledger.ask_radii(np.array([r]))
            nearest = min(ledger.best_distance, fledger.best_distance if fledger else math.inf)
            if nearest <= r:
                r = max(min(nearest - self.precision, r * 7 / 8), 0.0)
            elif r == 0.0:
                break
            else:
                r = r / 2 if r > self.precision else 0.0
        return finish(problem, ledger, None, fledger, reason="no radius verified")
