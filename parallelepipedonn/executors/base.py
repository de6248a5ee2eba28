"""What an executor of batch certification is given and gives back.

The driver (:func:`parallelepipedonn.batch.certify_batch`) reads each input, makes it a
:class:`Task` and hands the tasks to an :class:`Executor`, which runs each one once —
in this process, a worker process or a Ray cluster — and yields their
:class:`Outcome` in groups as they become ready. The driver turns every outcome into a
row of the results store and commits each group in one transaction: it is the store's
only writer. An executor never certifies anything itself: an outcome ``ok`` carries the
certificate :func:`~parallelepipedonn.certify.certify` returned; every other outcome
(``timeout``, ``error``, ``internal``, ``lost``) is stored without one, as ``unknown``
(``timeout``) or ``error`` (the others, tried again by the next run).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._version import __version__
from ..box import Box
from ..certify import CertifyConfig, certify
from ..errors import ParallelepipedoNNError
from ..network import Network

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

#: How a task ended: a certificate (``ok``), a time-out (stored as ``unknown``), an input
#: the library rejects (``error``), an internal error, or an executor failure (``lost``:
#: the worker or its node died more often than the executor retries).
KINDS = ("ok", "timeout", "error", "internal", "lost")


@dataclass(frozen=True, eq=False)
class Setup:
    """What every task of a batch shares: sent to each worker once."""

    network: Network
    config: CertifyConfig
    domain: Box
    model_path: str | None
    model_sha256: str | None
    threads: int | None = None  # torch threads of the driver: a local worker process uses as many
    version: str = __version__  # the driver's tool version: a worker of another version refuses the task


@dataclass(frozen=True, eq=False)
class Task:
    """One input to certify: ``x`` (checked against the network and domain), or the
    ``error`` that made it unreadable (such a task is answered without running)."""

    number: int  # the input's position in the batch
    input_id: str
    x: FloatArray | None
    label: int | None  # the label certified (``None``: the prediction)
    true_label: int | None
    predicted: int | None  # the network's prediction at ``x`` (computed by the driver)
    error: str | None = None


@dataclass(frozen=True, eq=False)
class Outcome:
    """How one task ended (``kind``, one of :data:`KINDS`): the certificate for ``ok``,
    else a one-line reason; ``seconds`` of work; ``where`` it ran (executor-specific)."""

    kind: str
    payload: Any
    seconds: float
    where: str = ""


def certify_task(setup: Setup, task: Task) -> Outcome:
    """Run one task in this process: ``ok`` with the certificate, ``error`` for an input
    the library rejects, ``internal`` for anything else (recorded, never a result)."""
    if task.error is not None:
        return Outcome("error", task.error, 0.0)
    assert task.x is not None
    start = time.perf_counter()
    try:
        cert = certify(setup.network, task.x, task.label, domain=setup.domain, config=setup.config,
                       model_path=setup.model_path, model_sha256=setup.model_sha256, true_label=task.true_label)
        return Outcome("ok", cert, time.perf_counter() - start)
    except ParallelepipedoNNError as exc:
        return Outcome("error", str(exc), time.perf_counter() - start)
    except Exception as exc:  # recorded (as an error, never a result) so that the batch goes on
        log.debug("internal error", exc_info=True)
        return Outcome("internal", f"internal error: {type(exc).__name__}: {exc}", time.perf_counter() - start)


def timeout_reason(time_limit: float, how: str = "the search was stopped") -> str:
    return f"time limit of {time_limit:g} s reached ({how})"


class Executor(ABC):
    """Runs the tasks of a batch (see the module's docstring)."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, setup: Setup, tasks: Iterable[Task], time_limit: float | None) -> Iterator[list[tuple[Task, Outcome]]]:
        """Run every task of ``tasks`` (read lazily) exactly once; yield ``(task,
        outcome)`` pairs as they become ready, grouped: the driver commits each group in
        one transaction. ``time_limit`` (seconds per task): a task that runs longer ends
        as ``timeout``. Closing the generator (the driver stopped, Ctrl-C) stops the
        tasks still running and releases the workers."""

    def describe(self) -> str:
        """Where the tasks ran, for the batch's report (after :meth:`run`)."""
        return self.name
