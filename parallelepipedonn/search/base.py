"""What every search algorithm shares: the problem, the result, and oracle bookkeeping.

A search only ever asks its oracle (and, optionally, a falsifier): it never reads the
network. Its state (counters, current radii) lives in local variables of ``run``.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from oracles.base import Answer, Oracle, Verdict

from ..box import Box, linf_distance_up

FloatArray = NDArray[np.float64]


class Status(str, enum.Enum):
    """Outcome of a certification: the only three words the tool uses."""

    CERTIFIED = "certified"
    NOT_ROBUST = "not-robust"
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class Problem:
    """Certify ``x`` (flat, inside ``domain``) for ``label``; box searches grow ``start``
    (a box already verified around ``x``, e.g. by a previous search) or the point.

    ``deadline`` (a ``time.perf_counter()`` value): anytime box searches stop growing
    their box once it has passed and return the box certified so far (still proven, no
    longer maximal; their ``reason`` says so). ``progress`` (optional) is called with a
    short status line as a long search advances."""

    x: FloatArray
    label: int
    domain: Box
    start: Box | None = None
    deadline: float | None = None
    progress: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None`` without one)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())

    def report(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    @property
    def start_box(self) -> Box:
        return self.start if self.start is not None else Box.point(self.x)

    @property
    def radius_max(self) -> float:
        """The smallest radius whose cube (within the domain) is the whole domain."""
        return float(np.max(np.maximum(self.x - self.domain.lower, self.domain.upper - self.x)))

    def cube(self, radius: float) -> Box:
        return Box.cube(self.x, radius, self.domain)

    def cubes(self, radii: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds of the cubes of several radii, shape ``(k, n)``."""
        r = np.asarray(radii, dtype=np.float64)[:, None]
        return np.maximum(self.domain.lower, self.x - r), np.minimum(self.domain.upper, self.x + r)

    def distance(self, point: FloatArray) -> float:
        """``||point - x||_inf``, rounded up (an upper bound of the apothem stays one)."""
        return linf_distance_up(point, self.x)


@dataclass(frozen=True, eq=False)
class SearchResult:
    """A search's answer.

    ``box`` is a box every point of which an oracle proved robust (``None`` if none);
    ``apothem_upper_bound`` is proven: no certification of ``x`` has a larger apothem
    (the distance of the closest confirmed counterexample; ``inf`` when none was found).
    ``exact`` (searches that aim at the optimum): whether the box's apothem is the best
    one to the search's precision (``None`` for the others).
    """

    status: Status
    box: Box | None
    apothem_upper_bound: float
    counterexample: FloatArray | None
    oracle_calls: int
    rounds: int
    falsifier_calls: int = 0
    reason: str = ""
    trace: tuple[tuple[float, str], ...] = field(default=(), repr=False)
    exact: bool | None = None


class Search(Protocol):
    """A certification algorithm. Declared, where it applies: ``grows`` (true for a search
    that grows its box from the problem's ``start`` box, so that it can follow another in
    a composition) and ``check_oracle(oracle)`` (raises :class:`ConfigError` for an oracle
    the search cannot use); see :func:`grows` and :func:`check_oracle`."""

    name: str

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult: ...

    def settings(self) -> dict[str, Any]: ...


def grows(search: Search) -> bool:
    """Does ``search`` grow its box from the problem's ``start`` box (a search that starts
    afresh would throw an earlier stage's box away)?"""
    return bool(getattr(search, "grows", False))


def check_oracle(search: Search, oracle: Oracle) -> None:
    """Raises :class:`ConfigError` when ``search`` declares that it cannot use ``oracle``
    (e.g. ``exact`` needs a complete one): checked before any work."""
    check = getattr(search, "check_oracle", None)
    if check is not None:
        check(oracle)


class OracleLedger:
    """Asks an oracle and keeps the search's own counts (boxes asked, batched rounds) and
    the closest confirmed counterexample."""

    def __init__(self, problem: Problem, oracle: Oracle) -> None:
        self.problem = problem
        self.oracle = oracle
        self.boxes = 0
        self.rounds = 0
        self.best_distance = math.inf
        self.best_counterexample: FloatArray | None = None
        self.trace: list[tuple[float, str]] = []

    def ask(self, lower: FloatArray, upper: FloatArray, radii: FloatArray | None = None) -> tuple[Answer, ...]:
        """The oracle's answers, the call limited to the time left before the problem's
        deadline (an oracle honours it as its own time limit: boxes it has no time for are
        UNKNOWN, time-outs)."""
        with self.oracle.time_limited(self.problem.remaining):
            answers = self.oracle.verify(lower, upper, self.problem.label)
        self.boxes += len(answers)
        self.rounds += 1
        best = "" if math.isinf(self.best_distance) else f", closest counterexample {self.best_distance:.4g}"
        self.problem.report(f"{self.boxes} boxes in {self.rounds} oracle calls{best}")
        for i, a in enumerate(answers):
            if radii is not None:
                self.trace.append((float(radii[i]), a.verdict.value))
            if a.verdict is Verdict.FALSIFIED and a.counterexample is not None:
                d = self.problem.distance(a.counterexample)
                if d < self.best_distance:
                    self.best_distance, self.best_counterexample = d, a.counterexample
        return answers

    def ask_radii(self, radii: FloatArray) -> tuple[Answer, ...]:
        lo, hi = self.problem.cubes(radii)
        return self.ask(lo, hi, radii)

    def ask_boxes(self, lower: FloatArray, upper: FloatArray, chunk: int = 4096) -> list[Answer]:
        """Ask about many boxes, in batched calls of at most ``chunk`` boxes."""
        out: list[Answer] = []
        for s in range(0, len(lower), chunk):
            out += self.ask(lower[s:s + chunk], upper[s:s + chunk])
        return out
