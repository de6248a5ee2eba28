"""Box (parallelepipedal) searches: grow or shrink the faces of a box independently.

A *face* is one side (lower or upper) of one coordinate. Faces on the domain's boundary
cannot move outward. Every search keeps the box it returns VERIFIED by its oracle (or
returns none), reports oracle calls (boxes asked) and rounds (batched calls), and keeps
the closest confirmed counterexample as an upper bound of the best apothem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from oracles.base import Answer, Oracle, Verdict

from ..box import Box
from ..errors import ConfigError
from .apothem import falsify_upward
from .base import FloatArray, OracleLedger, Problem, SearchResult, Status, check_oracle, grows

TIME_LIMIT = "time limit reached: the box is certified but not grown to the end"

def _faces_with_room(problem: Problem, lo: FloatArray, hi: FloatArray) -> list[tuple[int, int]]:
    """``(coordinate, side)`` for every face that can still move outward (side 0: lower)."""
    dom = problem.domain
    return [(i, s) for i in range(lo.size) for s in (0, 1)
            if (s == 0 and lo[i] > dom.lower[i]) or (s == 1 and hi[i] < dom.upper[i])]


def _bound(problem: Problem, face: tuple[int, int]) -> float:
    i, s = face
    return float(problem.domain.lower[i] if s == 0 else problem.domain.upper[i])


def _moved(lo: FloatArray, hi: FloatArray, faces: list[tuple[int, int]], values: list[float]) -> tuple:
    """Copies of ``lo``, ``hi`` with each face set to its value (one face per copy):
    arrays of shape ``(len(faces), n)``."""
    los, his = np.repeat(lo[None], len(faces), axis=0), np.repeat(hi[None], len(faces), axis=0)
    for row, ((i, s), v) in enumerate(zip(faces, values)):
        (los if s == 0 else his)[row, i] = v
    return los, his


def _result(problem: Problem, ledger: OracleLedger, box: Box | None, falsifier: Oracle | None,
            reason: str = "") -> SearchResult:
    """Assemble a box search's result; the falsifier bounds the best apothem from above,
    starting just beyond the box's apothem."""
    fboxes = 0
    best_d, cex = ledger.best_distance, ledger.best_counterexample
    trace = list(ledger.trace)
    if falsifier is not None and box is not None:
        apothem = box.apothem(problem.x, problem.domain)
        if math.isfinite(apothem):
            fledger = OracleLedger(problem, falsifier)
            fledger.best_distance = best_d
            falsify_upward(problem, falsifier, max(apothem, 1e-6), fledger)
            fboxes = fledger.boxes
            trace += fledger.trace
            if fledger.best_distance < best_d:
                best_d, cex = fledger.best_distance, fledger.best_counterexample
    status = Status.CERTIFIED if box is not None else Status.UNKNOWN
    return SearchResult(status, box, best_d, cex, ledger.boxes, ledger.rounds, fboxes,
                        reason or ("" if box is not None else "no box verified"), tuple(trace))


def _check_start(problem: Problem, ledger: OracleLedger) -> bool:
    """A search that grows from the point must first know the point is robust (a start box
    from an earlier search is already verified)."""
    if problem.start is not None:
        return True
    return ledger.ask(problem.x[None], problem.x[None])[0].verdict is Verdict.VERIFIED


@dataclass(frozen=True)
class FaceByFace:
    """The original system's per-face bottom-up search ("bu-d-dfs", volume-oriented):
    faces in coordinate order (lower, then upper), each pushed outward as far as the
    oracle verifies before the next one moves — by bisection (``mode="bisection"``, first
    trying the domain's boundary) or in steps of ``precision`` (``mode="linear"``). With a
    batched oracle, bisection tests ``k`` positions of a face per call."""

    precision: float = 1e-4
    mode: str = "bisection"
    k: int = 8
    name: str = "box-bisection"
    grows: ClassVar[bool] = True  # from the problem's start box

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "mode": self.mode, "k": self.k}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        ledger = OracleLedger(problem, oracle)
        if not _check_start(problem, ledger):
            return _result(problem, ledger, None, falsifier, "the input point is not verified")
        start = problem.start_box
        lo, hi = start.lower.copy(), start.upper.copy()
        k = self.k if oracle.batched and self.mode == "bisection" else 1
        reason = ""
        for face in _faces_with_room(problem, lo, hi):
            if problem.expired:
                reason = TIME_LIMIT
                break
            i, s = face
            current, bound = (lo[i] if s == 0 else hi[i]), _bound(problem, face)
            if self.mode == "linear":
                value = self._linear(ledger, lo, hi, face, current, bound, problem)
            else:
                value = self._kary(ledger, lo, hi, face, current, bound, k)
            (lo if s == 0 else hi)[i] = value
        if problem.expired:
            reason = TIME_LIMIT
        return _result(problem, ledger, Box(lo, hi), falsifier, reason)

    def _linear(self, ledger: OracleLedger, lo, hi, face, current: float, bound: float, problem: Problem) -> float:
        direction = 1.0 if bound > current else -1.0
        while current != bound and not problem.expired:  # the face stays at its last verified value
            step = current + direction * self.precision
            step = min(step, bound) if direction > 0 else max(step, bound)
            if step == current:  # a precision below the spacing of floats here
                break
            los, his = _moved(lo, hi, [face], [step])
            if ledger.ask(los, his)[0].verdict is not Verdict.VERIFIED:
                break
            current = step
        return current

    def _kary(self, ledger: OracleLedger, lo, hi, face, verified: float, failed: float, k: int) -> float:
        first = True
        while abs(failed - verified) > self.precision:
            fractions = np.arange(1, k + 1) / (k if first else k + 1)
            values = [verified + (failed - verified) * f for f in fractions]
            if not first and all(v in (verified, failed) for v in values):  # no float between them
                break
            answers = ledger.ask(*_moved(lo, hi, [face] * len(values), values))
            ok = [a.verdict is Verdict.VERIFIED for a in answers]
            if first and ok[-1]:
                return failed  # the domain's boundary itself
            first = False
            best = max((j for j, v in enumerate(ok) if v), default=-1)
            if best >= 0:
                verified = values[best]
            failed = values[best + 1] if best + 1 < len(values) else failed
        return verified


@dataclass(frozen=True)
class FaceExpansion:
    """Every face at once: each round proposes, for every face, a position halfway to
    where it last failed (first: the domain's boundary), asks all single-face moves in
    one batched call, then commits the largest verified prefix of the successful moves
    (nested boxes, sizes 1, 2, 4, ..., in a second batched call). Converges when every
    face's bracket is below ``precision``; then every face pushed ``precision`` further
    is asked once more, and the search resumes for those that verify.

    ``order="index"`` commits in face order (``box-maximal``, started from the apothem
    cube: an apothem-optimal, inclusion-maximal box); ``order="volume"`` commits the
    largest log-volume gains first (``volume-greedy``, a volume-based method started from
    the point).
    """

    precision: float = 1e-4
    order: str = "index"
    max_rounds: int = 200
    name: str = "box-maximal"
    grows: ClassVar[bool] = True  # from the problem's start box

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "order": self.order, "max_rounds": self.max_rounds}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        ledger = OracleLedger(problem, oracle)
        if not _check_start(problem, ledger):
            return _result(problem, ledger, None, falsifier, "the input point is not verified")
        start = problem.start_box
        lo, hi = start.lower.copy(), start.upper.copy()
        faces = _faces_with_room(problem, lo, hi)
        verified = {f: float(lo[f[0]] if f[1] == 0 else hi[f[0]]) for f in faces}
        failed = {f: _bound(problem, f) for f in faces}
        tried: set[tuple[int, int]] = set()
        checks = 0
        reason = ""
        for _ in range(self.max_rounds):
            if problem.expired:
                reason = TIME_LIMIT
                break
            active = [f for f in faces if abs(failed[f] - verified[f]) > self.precision]
            if not active:
                # inclusion-maximality: every face pushed one precision step further
                reopened = self._maximality(problem, ledger, lo, hi, faces, verified, failed)
                checks += 1
                if not reopened or checks > 50:
                    break
                continue
            values = [failed[f] if f not in tried else (verified[f] + failed[f]) / 2 for f in active]
            tried.update(active)
            answers = ledger.ask_boxes(*_moved(lo, hi, active, values))
            good = []
            for f, v, a in zip(active, values, answers):
                if a.verdict is Verdict.VERIFIED:
                    good.append((f, v))
                else:
                    failed[f] = v
            if good:
                self._commit(ledger, lo, hi, self._ordered(good, lo, hi), verified)
        return _result(problem, ledger, Box(lo, hi), falsifier, reason)

    def _ordered(self, good: list, lo: FloatArray, hi: FloatArray) -> list:
        if self.order != "volume":
            return good

        def gain(item) -> float:
            (i, _), v = item
            width = hi[i] - lo[i]
            return math.log(width + abs(v - (lo[i] if item[0][1] == 0 else hi[i])) + 1e-12) - math.log(width + 1e-12)

        return sorted(good, key=gain, reverse=True)

    @staticmethod
    def _commit(ledger: OracleLedger, lo: FloatArray, hi: FloatArray, good: list, verified: dict) -> None:
        """Commit the largest prefix of ``good`` whose moves, made together, verify."""
        sizes = sorted({min(2 ** e, len(good)) for e in range(int(math.log2(len(good))) + 2)})
        los, his = np.repeat(lo[None], len(sizes), axis=0), np.repeat(hi[None], len(sizes), axis=0)
        for row, size in enumerate(sizes):
            for (i, s), v in good[:size]:
                (los if s == 0 else his)[row, i] = v
        answers = ledger.ask_boxes(los, his)
        ok = [size for size, a in zip(sizes, answers) if a.verdict is Verdict.VERIFIED]
        if not ok:
            return
        for (i, s), v in good[:max(ok)]:
            (lo if s == 0 else hi)[i] = v
            verified[(i, s)] = v

    def _maximality(self, problem: Problem, ledger: OracleLedger, lo, hi, faces, verified, failed) -> bool:
        movable = [f for f in faces if verified[f] != _bound(problem, f)]
        if not movable:
            return False
        values = []
        for f in movable:
            step = self.precision if f[1] == 1 else -self.precision
            bound = _bound(problem, f)
            values.append(min(verified[f] + step, bound) if f[1] == 1 else max(verified[f] + step, bound))
        answers = ledger.ask_boxes(*_moved(lo, hi, movable, values))
        reopened = False
        for f, a in zip(movable, answers):
            if a.verdict is Verdict.VERIFIED:
                failed[f] = _bound(problem, f)
                reopened = True
        return reopened


@dataclass(frozen=True)
class TopDownBox:
    """Top-down box shrinking by counterexamples (the original system's "td"): start from
    the whole domain; each counterexample ``c`` is cut off just inside it — on every
    coordinate where it lies in the outer eighth of the box (else on the one where it lies
    farthest out), the face moves to ``c_i`` minus the precision, or by an eighth of its
    distance to ``x`` if that is more; when the oracle answers UNKNOWN and the falsifier
    finds no counterexample either, every face moves halfway towards ``x``."""

    precision: float = 1e-4
    max_iterations: int = 5_000
    name: str = "box-topdown"

    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "max_iterations": self.max_iterations}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        ledger = OracleLedger(problem, oracle)
        fledger = OracleLedger(problem, falsifier) if falsifier is not None else None
        x = problem.x
        lo, hi = problem.domain.lower.copy(), problem.domain.upper.copy()
        box, reason = None, "no box verified"
        for _ in range(self.max_iterations):
            if problem.expired:
                reason = "time limit reached before any box was verified"
                break
            answer = ledger.ask(lo[None], hi[None])[0]
            if answer.verdict is Verdict.VERIFIED:
                box, reason = Box(lo, hi), ""
                break
            cex = self._counterexample(answer, fledger, lo, hi)
            if cex is None:
                if (hi - lo).max() <= 0:
                    break
                lo, hi = np.minimum((lo + x) / 2, x), np.maximum((hi + x) / 2, x)
                continue
            self._cut(x, cex, lo, hi)
        result = _result(problem, ledger, box, None, reason)
        if fledger is None:
            return result
        best = min((result.apothem_upper_bound, result.counterexample),
                   (fledger.best_distance, fledger.best_counterexample), key=lambda t: t[0])
        return SearchResult(result.status, box, best[0], best[1], result.oracle_calls, result.rounds, fledger.boxes,
                            result.reason, result.trace + tuple(fledger.trace))

    def _cut(self, x: FloatArray, cex: FloatArray, lo: FloatArray, hi: FloatArray) -> None:
        above = cex > x
        distance = np.abs(cex - x)
        extent = np.where(above, hi - x, x - lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(extent > 0, distance / extent, 0.0)
        cut = depth >= 7 / 8
        if not cut.any():
            cut = depth == depth.max()
        new = np.maximum(np.minimum(distance - self.precision, extent * 7 / 8), 0.0)
        hi[:] = np.where(cut & above, x + new, hi)
        lo[:] = np.where(cut & ~above, x - new, lo)

    @staticmethod
    def _counterexample(answer: Answer, fledger: OracleLedger | None, lo, hi) -> FloatArray | None:
        if answer.verdict is Verdict.FALSIFIED:
            return answer.counterexample
        if fledger is not None:
            a = fledger.ask(lo[None], hi[None])[0]
            if a.verdict is Verdict.FALSIFIED:
                return a.counterexample
        return None


@dataclass(frozen=True)
class Compose:
    """``first``, then ``second`` grown from the box ``first`` certified (e.g. apothem
    first, then every face pushed out). Calls, rounds and counterexamples add up; the
    result is ``exact`` when ``first``'s is (a box holding an optimal cube has that
    apothem: no larger one holds no counterexample). ``second`` must grow from a given
    box (:func:`~parallelepipedonn.search.base.grows`): one that starts afresh would
    throw ``first``'s box away, so it is refused (:class:`ConfigError`)."""

    first: Any
    second: Any
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.first.name}+{self.second.name}")
        if not grows(self.second):
            raise ConfigError(f"{self.second.name!r} starts afresh (it does not grow a given box), so it cannot "
                              f"follow {self.first.name!r} in a composition")

    @property
    def grows(self) -> bool:
        return grows(self.first)

    def check_oracle(self, oracle: Oracle) -> None:
        check_oracle(self.first, oracle)
        check_oracle(self.second, oracle)

    def settings(self) -> dict[str, Any]:
        return {"first": {"algorithm": self.first.name, **self.first.settings()},
                "second": {"algorithm": self.second.name, **self.second.settings()}}

    def run(self, problem: Problem, oracle: Oracle, falsifier: Oracle | None = None) -> SearchResult:
        a = self.first.run(problem, oracle, falsifier)
        if a.box is None:
            return a
        b = self.second.run(replace(problem, start=a.box), oracle, falsifier)
        box = b.box if b.box is not None else a.box
        best, cex = (a.apothem_upper_bound, a.counterexample) if a.apothem_upper_bound <= b.apothem_upper_bound \
            else (b.apothem_upper_bound, b.counterexample)
        return SearchResult(Status.CERTIFIED, box, best, cex, a.oracle_calls + b.oracle_calls, a.rounds + b.rounds,
                            a.falsifier_calls + b.falsifier_calls, b.reason or a.reason, a.trace + b.trace,
                            exact=a.exact)
