"""The ``ray`` executor: the tasks of a batch on a Ray cluster (``pip install -e ".[ray]"``).

One Ray task per input. The setup (network, configuration, domain) is put into the
object store once, and each worker process deserialises it once. At most
:data:`TASKS_PER_CPU` tasks per CPU of the cluster are in flight (``workers`` on a
cluster started elsewhere: at most that many), so the inputs are read as the work goes
and the driver stays responsive; the results come back as they are ready, in groups
that the driver commits in one transaction each.

Failures: a worker process or node that dies takes its task with it; Ray runs it again
(up to ``max_retries`` times), on another node if its node is gone. A task that still
fails ends as ``lost`` (stored as ``error`` with Ray's reason; the next run tries it
again). A time limit is enforced in the worker (a timer interrupts the search: the input
ends as ``timeout``, stored as ``unknown``); as a backstop for a search stuck in native
code, the driver cancels (kills) a task that has given no result long after its limit:
``(max_retries + 2)`` × the limit plus :data:`BACKSTOP_GRACE` seconds after it was sent.
Closing the run (Ctrl-C) cancels every task in flight.

``address``: ``"local"`` (the default) starts a private single-machine cluster for this
run (``workers`` CPUs, default all; its socket files in a short temporary directory),
shut down at the end; ``"auto"`` or ``HOST:PORT`` connects to a running cluster
(``ray start --head``). If this process is connected to Ray already, that connection is
used, and left open.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

from .._version import __version__
from ..errors import ConfigError
from .base import Executor, Outcome, Setup, Task, certify_task, timeout_reason

log = logging.getLogger(__name__)

RAY_REQUIREMENT = "ray>=2.60,<2.61"  # pyproject.toml's ray extra
INSTALL_HINT = f"pip install -e \".[ray]\" (or pip install \"{RAY_REQUIREMENT}\")"
TASKS_PER_CPU = 2  # tasks in flight per CPU of the cluster: one running, one waiting
DEFAULT_MAX_RETRIES = 3  # runs of a task after its worker or node died
BACKSTOP_GRACE = 60.0  # seconds, beyond (max_retries + 2) × the time limit
CAPACITY_REFRESH = 5.0  # seconds between two looks at the cluster's CPUs (nodes come and go)
POLL = 0.5  # seconds the driver waits for a result before it checks the backstop
_ADDRESS = re.compile(r"local|auto|[^\s:/]+:\d+")
_SOCKET_PATH_ROOM = 50  # characters of a temporary directory under which Ray's socket paths stay short


# -- in the worker ---------------------------------------------------------------------------
class _TimeLimitReached(BaseException):
    """Raised in a task by its timer (a BaseException: ``except Exception`` lets it through)."""


_SETUP: dict[str, Setup] = {}  # the setup of the batch this worker process serves, by object id
_armed = False
# Seconds between two alarms of one timer, until the task stops: long, so that a search
# stopped by the first one has finished its cleanup (``finally`` blocks restoring settings)
# before a second one could interrupt it.
ALARM_REPEAT = 1.0


def _on_alarm(signum: int, frame: Any) -> None:
    if _armed:
        raise _TimeLimitReached


def _with_time_limit(setup: Setup, task: Task, time_limit: float | None) -> Outcome:
    """:func:`certify_task`, interrupted by a timer after ``time_limit`` seconds (a
    ``timeout``; a certificate completed as the timer fired is kept).

    The timer repeats every :data:`ALARM_REPEAT` seconds until the task stops: Python
    runs a signal handler in whatever Python code runs at that moment, and where that
    is a finaliser (``__del__``, a weakref callback, run by the garbage collector in the
    middle of the search), the handler's exception is printed and dropped ("Exception
    ignored in ..."); one alarm alone would then leave the search running for minutes."""
    global _armed
    if time_limit is None or threading.current_thread() is not threading.main_thread():
        return certify_task(setup, task)  # off the main thread, only the driver's backstop applies
    start, outcome = time.perf_counter(), None
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        _armed = True
        signal.setitimer(signal.ITIMER_REAL, time_limit, ALARM_REPEAT)
        outcome = certify_task(setup, task)
    except _TimeLimitReached:
        pass
    finally:
        # First statement, before any call: from here an alarm still pending does nothing.
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if outcome is None:
        return Outcome("timeout", timeout_reason(time_limit), time.perf_counter() - start)
    return outcome


def _remote_task(driver_version: str, setup_ref: list, task: Task, time_limit: float | None) -> Outcome:
    """A Ray task: certify ``task`` with the setup ``setup_ref[0]`` (an object reference,
    in a list so that Ray hands it over unresolved and this worker resolves it once)."""
    import ray

    from ..threads import configure_threads

    where = ray.get_runtime_context().get_node_id()
    if driver_version != __version__:
        return Outcome("lost", f"a Ray worker on node {where} runs parallelepipedonn {__version__}, the driver "
                       f"{driver_version}: install the same version on every node", 0.0, where)
    (ref,) = setup_ref
    setup = _SETUP.get(ref.hex())
    if setup is None:
        setup = ray.get(ref)
        _SETUP.clear()
        _SETUP[ref.hex()] = setup
    configure_threads(1)  # one torch thread per task: each task has one CPU
    outcome = _with_time_limit(setup, task, time_limit)
    return Outcome(outcome.kind, outcome.payload, outcome.seconds, where)


# -- in the driver ---------------------------------------------------------------------------
@dataclass
class _Flight:
    task: Task
    sent: float
    deadline: float
    cancelled: bool = False


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short_temp_root() -> str:
    """A directory for Ray's session files whose socket paths stay under the AF_UNIX limit
    (107 bytes): ``$RAY_TMPDIR`` or the system's temporary directory if short, else ``/tmp``."""
    for root in (os.environ.get("RAY_TMPDIR"), tempfile.gettempdir(), "/tmp"):
        if root and len(root) <= _SOCKET_PATH_ROOM and os.path.isdir(root):
            return root
    return "/tmp"


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse ``HOST:PORT`` at once if nothing answers there (Ray would retry for minutes)."""
    if address in ("local", "auto"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc}): is the head node's "
                              "'ray start --head' running, and is this its GCS port?") from exc


class RayExecutor(Executor):
    """The tasks of a batch on a Ray cluster (see the module's docstring)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, backstop_grace: float = BACKSTOP_GRACE,
                 worker_timer: bool = True) -> None:
        """``max_retries``: runs of a task after its worker or node died; ``backstop_grace``:
        seconds beyond ``(max_retries + 2)`` × the time limit before the driver cancels a
        task; ``worker_timer=False`` leaves the time limit to that backstop alone (tests)."""
        if find_spec("ray") is None:
            raise ConfigError(f"the ray executor needs Ray: {INSTALL_HINT}")
        address = "local" if address is None else address.strip()
        if address.startswith("ray://"):
            raise ConfigError("the ray executor runs its driver on a node of the cluster: give the cluster's "
                              "address as HOST:PORT (or auto), not a Ray Client address (ray://)")
        if not _ADDRESS.fullmatch(address):
            raise ConfigError(f"bad Ray address {address!r}: expected local, auto or HOST:PORT")
        if workers is not None and workers < 1:
            raise ConfigError(f"the number of workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        self.address, self.workers = address, workers
        self.max_retries, self.backstop_grace, self.worker_timer = max_retries, backstop_grace, worker_timer
        self._where = "ray"

    # -- the cluster ------------------------------------------------------------------------
    def _import_ray(self) -> Any:
        """Ray, imported with usage statistics off and, for a private local cluster, token
        authentication (Ray's default) set explicitly: Ray reads both when imported."""
        if "ray" not in sys.modules:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if self.address == "local":
                os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray

        return ray

    def _connect(self, ray: Any) -> str | None:
        """Connect to (or start) the cluster unless connected already; the temporary
        directory of a cluster started here (``""`` if connected to another; ``None`` if
        this process was connected before)."""
        if ray.is_initialized():
            return None
        options: dict[str, Any] = {"configure_logging": False, "log_to_driver": log.isEnabledFor(logging.INFO)}
        temp = ""
        try:
            if self.address == "local":
                temp = tempfile.mkdtemp(prefix="ppn-ray-", dir=_short_temp_root())
                ray.init(address="local", num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False,
                         _temp_dir=temp, **options)
            else:
                _check_reachable(self.address)
                ray.init(address=self.address, **options)
        except Exception as exc:  # ConnectionError, RuntimeError, AuthenticationError, ValueError
            if temp:
                shutil.rmtree(temp, ignore_errors=True)
            where = "start a local Ray cluster" if self.address == "local" else \
                f"connect to the Ray cluster at {self.address}"
            raise ConfigError(f"cannot {where}: {_one_line(exc)} (every node and this driver need the same Python, "
                              "parallelepipedonn and Ray versions, and the same RAY_AUTH_MODE; with token "
                              "authentication, the cluster's token)") from exc
        return temp

    def _capacity(self, ray: Any, started: bool) -> int:
        """How many tasks may be in flight now: on a shared cluster at most ``workers`` of
        ours, and never more than its CPUs take (a task waiting in the queue would use up
        its time limit's backstop before it starts)."""
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        if cpus < 1:
            raise ConfigError(f"the Ray cluster ({self.address}) offers no CPU: no task could run (start its nodes "
                              "with --num-cpus of at least 1)")
        if self.workers is not None and not started:
            return max(1, min(self.workers, int(cpus)))
        return max(1, int(TASKS_PER_CPU * cpus))

    def describe(self) -> str:
        return self._where

    # -- the run ----------------------------------------------------------------------------
    def run(self, setup: Setup, tasks: Iterable[Task], time_limit: float | None) -> Iterator[list[tuple[Task, Outcome]]]:
        ray = self._import_ray()
        temp = self._connect(ray)
        started = bool(temp)
        pending: dict[Any, _Flight] = {}
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            self._where = (f"ray: {len(nodes)} node{'s' if len(nodes) != 1 else ''}, "
                           f"{ray.cluster_resources().get('CPU', 0):g} CPUs")
            remote = ray.remote(_remote_task).options(num_cpus=1, max_retries=self.max_retries,
                                                      retry_exceptions=False, name="parallelepipedonn-certify")
            setup_ref = [ray.put(setup)]
            source, exhausted = iter(tasks), False
            capacity, looked = self._capacity(ray, started), time.monotonic()
            answered: list[tuple[Task, Outcome]] = []
            while True:
                now = time.monotonic()
                if now - looked > CAPACITY_REFRESH:
                    capacity, looked = self._capacity(ray, started), now
                while not exhausted and len(pending) < capacity:
                    task = next(source, None)
                    if task is None:
                        exhausted = True
                    elif task.error is not None:  # unreadable: answered here
                        answered.append((task, certify_task(setup, task)))
                    else:
                        deadline = float("inf") if time_limit is None else \
                            now + (self.max_retries + 2) * time_limit + self.backstop_grace
                        ref = remote.remote(setup.version, setup_ref, task, time_limit if self.worker_timer else None)
                        pending[ref] = _Flight(task, now, deadline)
                if answered:
                    yield answered
                    answered = []
                if not pending:  # and, as the loop above fills it while tasks remain, no task left
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL)
                if ready:  # and whatever else is ready now: one group
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                    yield [(pending[ref].task, self._outcome(ray, ref, pending.pop(ref), time_limit))
                           for ref in ready]
                self._backstop(ray, pending, time_limit)
        except BaseException:  # Ctrl-C, the driver stopped, the cluster failed: stop what runs
            for ref, flight in pending.items():
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # the cluster is gone: nothing left to stop
                    log.debug("cannot cancel task %s", flight.task.input_id, exc_info=True)
            raise
        finally:
            if temp is not None:
                ray.shutdown()
            if temp:
                shutil.rmtree(temp, ignore_errors=True)

    def _backstop(self, ray: Any, pending: dict[Any, _Flight], time_limit: float | None) -> None:
        """Cancel (kill) the tasks with no result long after their time limit."""
        now = time.monotonic()
        for ref, flight in pending.items():
            if not flight.cancelled and now > flight.deadline:
                log.warning("input %s: no result %.0f s after it was sent (time limit %g s): cancelling its task",
                            flight.task.input_id, now - flight.sent, time_limit)
                flight.cancelled = True
                ray.cancel(ref, force=True)

    def _outcome(self, ray: Any, ref: Any, flight: _Flight, time_limit: float | None) -> Outcome:
        """The outcome of a finished task; Ray's errors become ``lost``, ``internal`` or
        (the backstop) ``timeout`` outcomes."""
        elapsed = time.monotonic() - flight.sent
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if flight.cancelled and time_limit is not None:
                # not a time-out of the certification: the task may have waited in the cluster's
                # queue, or its worker hung; lost (an error row), so that a resume runs it again
                return Outcome("lost", f"no result {elapsed:.0f} s after the task was sent (time limit "
                               f"{time_limit:g} s): the driver cancelled it; a resume runs it again", elapsed)
            if isinstance(exc, ray.exceptions.RayTaskError):  # raised by the task's own code: not retried
                return Outcome("internal", f"internal error in a Ray task: {_one_line(exc)}", elapsed)
            return Outcome("lost", f"lost by the Ray executor after {self.max_retries} retries "
                           f"({type(exc).__name__}): {_one_line(exc)}", elapsed)
        if not isinstance(outcome, Outcome):
            return Outcome("internal", f"internal error: a Ray task returned {type(outcome).__name__}", elapsed)
        return outcome
