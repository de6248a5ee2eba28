"""Combinator: ask several oracles in turn, each only about the boxes still UNKNOWN."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError

from .base import Answer, Distance, FloatArray, Oracle, Verdict

if TYPE_CHECKING:
    from parallelepipedonn.network import Network


class Cascade(Oracle):
    """``stages[0]``, then ``stages[1]`` on what ``stages[0]`` left UNKNOWN, and so on.

    Sound if every stage is sound (each stage's VERIFIED is its own proof); complete if
    any stage is. The answer for a box is the first definite one (VERIFIED or FALSIFIED),
    else the last stage's UNKNOWN. ``reason`` says which stage answered. The distance
    query goes to the last stage that answers it (e.g. ``milp``), if any.
    """

    name = "cascade"
    batched = True

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
        self._distance = next((s for s in reversed(self.stages) if s.distance_query), None)
        self.distance_query = self._distance is not None  # type: ignore[misc]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "stages": [{"oracle": s.name, **s.settings()} for s in self.stages]}

    @contextlib.contextmanager
    def time_limited(self, seconds: float | None) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for stage in self.stages:
                stack.enter_context(stage.time_limited(seconds))
            stack.enter_context(super().time_limited(seconds))
            yield

    def min_distance(self, x: FloatArray, label: int, domain: Box, **options: Any) -> Distance:
        if self._distance is None:
            return super().min_distance(x, label, domain, **options)
        return self._distance.min_distance(x, label, domain, **options)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        answers: list[Answer] = [Answer(Verdict.UNKNOWN, reason="not asked")] * len(lower)
        pending = list(range(len(lower)))
        for stage in self.stages:
            if not pending:
                break
            got = stage.verify(lower[pending], upper[pending], label)
            still = []
            for i, a in zip(pending, got):
                reason = f"{stage.name}: {a.reason}" if a.reason else stage.name
                answers[i] = Answer(a.verdict, a.counterexample, a.margin, reason, a.timed_out)
                if a.verdict is Verdict.UNKNOWN:
                    still.append(i)
            pending = still
        return answers
