"""Apothem (cubic, L-infinity) searches: the largest verified cube around ``x`` within D."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from oracles.base import Oracle, Verdict

from .base import OracleLedger, Problem, SearchResult, Status

#: Radii, as multiples of the smallest unverified one, at which the falsifier looks for
#: the counterexample that bounds the best apothem from above (one batched call).
ESCALATION = np.array([1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])


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


@dataclass(frozen=True)
class ApothemBisection:
    """Bottom-up dichotomic apothem search (bisection on the cube radius).

    Invariant: the cube of radius ``lo`` was VERIFIED (or ``lo = 0`` not yet asked) and
    the cube of radius ``hi`` was not. Stops when ``hi - lo <= precision``; a confirmed
    counterexample at distance ``d`` lowers ``hi`` to ``d``. Oracle calls:
    ``ceil(log2(radius_max / precision)) + 2`` at most.
    """

    precision: float = 1e-4
    name: str = "apothem-bisection"

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        ledger = OracleLedger(problem, oracle)
        rmax = problem.radius_max
        whole = ledger.ask_radii(np.array([rmax]))[0]
        if whole.verdict is Verdict.VERIFIED:
            return finish(problem, ledger, rmax, None)
        lo, hi, verified = 0.0, min(rmax, ledger.best_distance), None
        while hi - lo > self.precision:
            mid = (lo + hi) / 2
            answer = ledger.ask_radii(np.array([mid]))[0]
            if answer.verdict is Verdict.VERIFIED:
                lo, verified = mid, mid
            else:
                hi = min(mid, ledger.best_distance)
        if verified is None and ledger.ask_radii(np.array([0.0]))[0].verdict is Verdict.VERIFIED:
            verified = 0.0
        fledger = None
        if falsifier is not None and verified is not None:
            fledger = OracleLedger(problem, falsifier)
            fledger.best_distance = ledger.best_distance
            falsify_upward(problem, falsifier, hi, fledger)
        return finish(problem, ledger, verified, fledger)

