"""Combinator: ask several oracles in turn, each only about the boxes still UNKNOWN."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError

from .base import QUERIES, Answer, ClassBox, Distance, Extreme, FloatArray, Oracle, RegionAnswer, Verdict

if TYPE_CHECKING:
    from parallelepipedonn.network import Network


class Cascade(Oracle):
    """``stages[0]``, then ``stages[1]`` on what ``stages[0]`` left UNKNOWN, and so on.

    Sound if every stage is sound (each stage's VERIFIED is its own proof); complete if
    any stage is. The answer for a box is the first definite one (VERIFIED or FALSIFIED),
    else the last stage's UNKNOWN. ``reason`` says which stage answered. The cascade's
    ``time_limit`` bounds the whole call: each stage gets what the previous ones left. It answers the
    other queries (:data:`~oracles.base.QUERIES`) that any stage declares: each goes to the
    last stage that declares it (e.g. the distance to ``milp``).
    """

    name = "cascade"
    batched = True
    reads_graphs = True  # as its stages, which must all be bound to the same network

    def __init__(self, network: Network, stages: Sequence[Oracle], *, time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        if not stages:
            raise OracleError("a cascade needs at least one oracle")
        for stage in stages:
            if stage.network is not network:
                raise OracleError("every stage of a cascade must be bound to the same network")
        self.stages = tuple(stages)
        self.sound = all(s.sound for s in self.stages)  # type: ignore[misc]
        self.complete = any(s.complete for s in self.stages)  # type: ignore[misc]
        self.name = "+".join(s.name for s in self.stages)  # type: ignore[misc]
        #: the stage that answers each query (the last one that declares it)
        self.routes: dict[str, Oracle] = {q: s for s in self.stages for q in QUERIES if s.supports(q)}
        self.queries = frozenset(self.routes)  # type: ignore[misc]
        #: the first stage's device other than the CPU (the stages share a device option)
        self.device = next((s.device for s in self.stages if str(s.device) != "cpu"), self.stages[0].device)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "stages": [{"oracle": s.name, **s.settings()} for s in self.stages]}

    @contextlib.contextmanager
    def time_limited(self, seconds: float | None) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for stage in self.stages:
                stack.enter_context(stage.time_limited(seconds))
            stack.enter_context(super().time_limited(seconds))
            yield

    def _stage(self, query: str) -> Oracle:
        if query not in self.routes:
            raise self._unsupported(query)
        return self.routes[query]

    def class_region(self, lower: Any, upper: Any, label: int, region: Box, tolerance: float = 1e-4) -> RegionAnswer:
        return self._stage("class_region").class_region(lower, upper, label, region, tolerance)

    def coordinate_extreme(self, label: int, index: int, maximize: bool, region: Box) -> Extreme:
        return self._stage("coordinate_extreme").coordinate_extreme(label, index, maximize, region)

    def class_extremes(self, label: int, region: Box, candidates: Any = (), **options: Any) -> ClassBox:
        return self._stage("class_extremes").class_extremes(label, region, candidates, **options)

    def min_distance(self, x: FloatArray, label: int, domain: Box, **options: Any) -> Distance:
        return self._stage("distance").min_distance(x, label, domain, **options)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        """The stages in turn; under a time limit each stage gets what the stages before it
        left of it (not the whole limit again), and a stage reached with no time left is not
        asked (its boxes stay UNKNOWN, timed out)."""
        answers: list[Answer] = [Answer(Verdict.UNKNOWN, reason="not asked")] * len(lower)
        pending = list(range(len(lower)))
        deadline = None if self.time_limit is None else time.perf_counter() + self.time_limit
        for stage in self.stages:
            if not pending:
                break
            remaining = None if deadline is None else deadline - time.perf_counter()
            if remaining is not None and remaining <= 0:  # the stages share the cascade's limit
                for i in pending:
                    answers[i] = Answer(Verdict.UNKNOWN, None, answers[i].margin,
                                        f"{answers[i].reason}; time out before {stage.name}", True)
                break
            with stage.time_limited(remaining):
                got = stage.verify(lower[pending], upper[pending], label)
            still = []
            for i, a in zip(pending, got):
                reason = f"{stage.name}: {a.reason}" if a.reason else stage.name
                answers[i] = Answer(a.verdict, a.counterexample, a.margin, reason, a.timed_out)
                if a.verdict is Verdict.UNKNOWN:
                    still.append(i)
            pending = still
        return answers
