"""The ``local`` executor (the default): one input after the other, on this machine.

Without a time limit each input is certified in this process. With one, the
certifications run in a worker process (started once, with the network) that is killed
when an input overruns the limit: that input ends as ``timeout`` (stored as ``unknown``,
never certified) and a fresh worker takes the next input. The worker's start-up is not
counted against any input; a worker that cannot start (a setup that does not pickle, a
process that exits at once) makes the input ``internal`` (stored as ``error``, with the
reason) and the next input tries again. Each outcome is its own group: the driver commits every
result as soon as it is known.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from ..errors import ConfigError
from ..threads import configure_threads
from .base import Executor, Outcome, Setup, Task, certify_task, timeout_reason

#: Seconds between a worker's checks that its parent is still there.
ORPHAN_POLL = 1.0
#: The longest single wait on the worker's pipe (its poll takes milliseconds as a C int).
LONGEST_POLL = 86400.0


def _orphan_watch(parent: int) -> None:
    """Exit once the parent is gone (killed with no chance to kill us): a search stuck in
    native code would otherwise run on past every time limit."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL)
    os._exit(1)


def _worker_main(conn: Connection, setup: Setup, parent: int) -> None:
    """The worker process: certify each task it receives until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    if setup.threads is not None:  # a spawned process starts with torch's default thread pool
        configure_threads(setup.threads)
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(certify_task(setup, task))
        except (BrokenPipeError, OSError):
            return


class _NotStarted(Exception):
    """The worker process could not be started (the reason in the message)."""


class _Worker:
    """A spawned process running :func:`certify_task`, killed when it overruns a time limit."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.proc: Any = None
        self.conn: Connection | None = None

    def start(self) -> None:
        """Start the process (if it is not running) and wait until it is ready; raise
        :class:`_NotStarted` with the reason if it cannot be."""
        if self.proc is not None and self.proc.is_alive():
            return
        self.close()  # a worker that died while idle: a fresh one
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, self.setup, os.getpid()), daemon=True)
        try:
            self.proc.start()  # pickles the setup: raises before a process exists if it cannot
        except Exception as exc:
            self.close()
            raise _NotStarted(f"the certification worker process could not be started: "
                              f"{type(exc).__name__}: {exc}") from exc
        finally:
            child.close()
        try:
            ready = self.conn.recv()
        except (EOFError, OSError):
            ready = None
        if ready != "ready":
            self.proc.join(5)
            code = self.proc.exitcode
            self.close()
            raise _NotStarted(f"the certification worker process did not start (exit code {code})")

    def run(self, task: Task, time_limit: float) -> Outcome:
        try:
            self.start()  # its start-up does not count against the input's time
        except _NotStarted as exc:  # this input is an error (retried by the next run); the next input tries again
            return Outcome("internal", str(exc), 0.0)
        assert self.conn is not None
        start = time.perf_counter()
        try:
            self.conn.send(task)
        except (BrokenPipeError, OSError):  # it died between the check and the send
            code = self.proc.exitcode if self.proc is not None else None
            self.close()
            return Outcome("internal", f"the worker process died before the input was sent (exit code {code})", 0.0)
        if not self._wait(time_limit):
            self.close()
            return Outcome("timeout", timeout_reason(time_limit), time.perf_counter() - start)
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.close()
            return Outcome("internal", f"the worker process died (exit code {code})", time.perf_counter() - start)

    def _wait(self, seconds: float) -> bool:
        """Whether the worker answers within ``seconds`` (polled in steps a pipe's poll takes)."""
        assert self.conn is not None
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if self.conn.poll(max(0.0, min(left, LONGEST_POLL))):
                return True
            if left <= LONGEST_POLL:
                return False

    def close(self) -> None:
        """Kill the process and close the pipe; safe to call again, and on a process
        that never started."""
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        if proc is not None:
            if proc.pid is not None:  # None: start() raised before there was a process
                proc.kill()
                proc.join()
            proc.close()
        if conn is not None:
            conn.close()


class LocalExecutor(Executor):
    """Certify one input at a time on this machine (see the module's docstring)."""

    name = "local"

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        if address is not None:
            raise ConfigError("--address names a Ray cluster: use it with --executor ray")
        if workers is not None and workers != 1:
            raise ConfigError(f"the local executor certifies one input at a time (asked for {workers} workers): "
                              "use --executor ray for more")

    def run(self, setup: Setup, tasks: Iterable[Task], time_limit: float | None) -> Iterator[list[tuple[Task, Outcome]]]:
        worker = _Worker(setup) if time_limit is not None else None
        try:
            for task in tasks:
                if worker is not None and task.error is None:
                    outcome = worker.run(task, time_limit)
                else:
                    outcome = certify_task(setup, task)
                yield [(task, outcome)]
        finally:
            if worker is not None:
                worker.close()
