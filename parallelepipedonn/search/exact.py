"""The exact best apothem: the minimum adversarial L-infinity distance, with a complete oracle."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from oracles.base import Oracle, Verdict
from oracles.distance import min_adversarial_distance

from ..errors import ConfigError
from .base import Problem, SearchResult, Status


@dataclass(frozen=True)
class ExactApothem:
    """The cube of the largest radius a complete oracle proves, with the closest
    counterexample it finds: both ends of the best apothem, to a *relative*
    ``precision`` (a certified apothem of at least ``1 - precision`` times the optimum).

    Root finding on the radius (:func:`oracles.distance.min_adversarial_distance`): the
    falsifier tightens the upper end cheaply, the oracle is asked just inside it, and
    regula falsi on the margins it reports closes the bracket; the returned cube is one
    the oracle VERIFIED. An oracle that answers the distance query itself (``milp``, or
    a cascade with a ``milp`` stage) is asked for it directly instead; the returned
    cube's radius is then the solver's proven bound, exact to its gap.
    """

    precision: float = 1e-4
    time_limit: float | None = None
    name: str = "exact"

    def settings(self) -> dict[str, Any]:
        return {"rel_precision": self.precision, "time_limit": self.time_limit}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        if not oracle.complete:
            raise ConfigError(f"--algorithm {self.name} needs a complete oracle (milp, bab, marabou, cascade, or a "
                              f"composition with one), not {oracle.name!r}")
        d = min_adversarial_distance(oracle, problem.x, problem.label, problem.domain, rel_precision=self.precision,
                                     falsifier=falsifier, time_limit=self.time_limit)
        calls = d.decisions
        radius = d.lower
        if radius == 0.0:  # 0 is assumed (x is classified robustly), not yet asked
            calls += 1
            if oracle.verify(problem.x[None], problem.x[None], problem.label)[0].verdict is not Verdict.VERIFIED:
                return SearchResult(Status.UNKNOWN, None, d.upper, d.counterexample, calls, calls, 0,
                                    "the oracle could not verify the input point")
        box = problem.domain if math.isinf(radius) else problem.cube(radius)
        cex = None if d.counterexample is None else np.asarray(d.counterexample)
        return SearchResult(Status.CERTIFIED, box, d.upper, cex, calls, calls, 0, d.reason)
