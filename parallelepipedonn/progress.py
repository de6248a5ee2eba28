"""A one-line progress display for long single runs (certify, compare, dual, recheck,
bench): silent unless its stream is a terminal, and only once the run has taken longer
than ``delay`` seconds, so that quick runs and piped output stay clean.

Library code reports through a plain callable (``progress("exact: [0.061, 0.072]")``),
never through this class; the CLI passes an instance where a terminal is attached.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """``progress(message)`` rewrites one status line on ``stream`` (default stderr)."""

    def __init__(self, title: str, *, stream: TextIO | None = None, delay: float = 2.0,
                 enabled: bool | None = None, min_interval: float = 0.2) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        self.min_interval = min_interval
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.start = time.perf_counter()
        self._last = -float("inf")
        self._width = 0
        self._message = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __call__(self, message: str) -> None:
        self._message = message
        self._draw(force=False)

    def _draw(self, force: bool) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.start < self.delay or (not force and now - self._last < self.min_interval):
            return
        with self._lock:
            self._last = now
            line = f"{self.title}: {self._message or 'working'}  [{now - self.start:.0f} s]"
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._width = len(line)

    def _tick(self) -> None:
        """Redraw once a second, so that a long step without reports still shows it runs."""
        while not self._stop.wait(1.0):
            self._draw(force=True)

    def clear(self) -> None:
        """Erase the status line (if one is drawn), e.g. before a log line; the next
        message draws it again."""
        with self._lock:
            if self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0

    def close(self) -> None:
        """Stop the ticker and clear the status line (if one was drawn)."""
        self._stop.set()
        self.clear()

    def __enter__(self) -> Progress:
        if self.enabled:
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
