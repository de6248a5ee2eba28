"""The exact best apothem: the minimum adversarial L-infinity distance, with a complete oracle."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from oracles.base import Oracle, Verdict
from oracles.distance import min_adversarial_distance

from ..errors import ConfigError
from .apothem import ApothemKary
from .base import Problem, SearchResult, Status


@dataclass(frozen=True)
class ExactApothem:
    """The cube of the largest radius a complete oracle proves, with the closest
    counterexample it finds: both ends of the best apothem, to a *relative*
    ``precision`` (a certified apothem of at least ``1 - precision`` times the optimum).

    Anytime and never worse than the default search: the default search (``apothem-kary``
    on CROWN, absolute precision ``precision``, stopped by the problem's deadline) runs first, and its certified radius and
    counterexample seed the bracket. Then root finding on the radius
    (:func:`oracles.distance.min_adversarial_distance`): the falsifier tightens the upper
    end cheaply, the oracle is asked just inside it, and regula falsi on the margins it
    reports closes the bracket; the returned cube is one an oracle VERIFIED. An oracle that
    answers the distance query itself (``milp``, or a cascade with a ``milp`` stage) is
    asked for it directly instead; the cube's radius is then the solver's proven bound,
    exact to its gap. When the budget (``time_limit``, the problem's deadline, or the
    oracle's own limits) runs out first, the result has ``exact=False`` and its reason
    gives the bracket reached and why.
    """

    precision: float = 1e-4
    time_limit: float | None = None
    name: str = "exact"

    def __post_init__(self) -> None:
        if not 0 < self.precision < 1:  # relative: 1 would call any apothem, 0 included, the best
            raise ConfigError(f"the exact search's precision is relative: it must lie in (0, 1), got {self.precision}")

    def settings(self) -> dict[str, Any]:
        return {"rel_precision": self.precision, "time_limit": self.time_limit}

    def _remaining(self, problem: Problem, start: float) -> float | None:
        limits = [t for t in (problem.remaining,
                              None if self.time_limit is None else self.time_limit - (time.perf_counter() - start))
                  if t is not None]
        return max(0.0, min(limits)) if limits else None

    def check_oracle(self, oracle: Oracle) -> None:
        """Raises :class:`ConfigError` for an oracle that is not complete."""
        if not oracle.complete:
            raise ConfigError(f"--algorithm {self.name} needs a complete oracle (milp, bab, a cascade or composition "
                              f"with one, or marabou where its unsat is a proof), not {oracle.name!r}")

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        self.check_oracle(oracle)
        from oracles.crown import CrownOracle  # torch: not imported with the search registry

        start = time.perf_counter()
        problem.report("default search (the floor)")
        crown = CrownOracle(oracle.network, device=str(oracle.device))  # (on the complete oracle's device)
        # the floor: the default search, stopped by the deadline like the rest (then it is the
        # cube verified so far; never worse than the default search given the same time)
        with crown.time_limited(problem.remaining):
            floor = ApothemKary(precision=self.precision).run(problem, crown, falsifier)
        r0 = floor.box.apothem(problem.x, problem.domain) if floor.status is Status.CERTIFIED and floor.box else 0.0
        calls = floor.oracle_calls
        if math.isinf(r0):  # the whole domain is proven already
            return SearchResult(Status.CERTIFIED, floor.box, math.inf, None, calls, floor.rounds,
                                floor.falsifier_calls, "the whole domain is robust", exact=True)
        d = min_adversarial_distance(oracle, problem.x, problem.label, problem.domain, lower=r0,
                                     counterexample=floor.counterexample, rel_precision=self.precision,
                                     falsifier=falsifier, time_limit=self._remaining(problem, start),
                                     progress=problem.report)
        calls += d.decisions
        radius = max(d.lower, r0)
        upper = min(d.upper, floor.apothem_upper_bound)
        cex = d.counterexample if d.upper <= floor.apothem_upper_bound else floor.counterexample
        if radius == 0.0:  # 0 is assumed (x is classified robustly), not yet asked
            calls += 1
            if oracle.verify(problem.x[None], problem.x[None], problem.label)[0].verdict is not Verdict.VERIFIED:
                return SearchResult(Status.UNKNOWN, None, upper, cex, calls, calls, 0,
                                    "the oracle could not verify the input point", exact=False)
        box = problem.domain if math.isinf(radius) else problem.cube(radius)
        exact = bool(math.isinf(radius) or (math.isfinite(upper) and upper - radius <= self.precision * upper))
        reason = d.reason
        if not exact:
            why = f" ({d.reason})" if d.reason else " (the oracle's distance bounds end this far apart: its proof " \
                "margin or gap)"
            reason = f"not exact: the best apothem lies in [{radius:.6g}, {upper:.6g}]{why}"
        cex = None if cex is None else np.asarray(cex)
        return SearchResult(Status.CERTIFIED, box, upper, cex, calls, calls, floor.falsifier_calls, reason,
                            exact=exact)
