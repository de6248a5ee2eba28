"""The torch thread policy: one thread unless asked for more.

The tool's problems are small (networks of a few thousand ReLUs, batches of a few dozen
boxes): each torch operation takes microseconds to a few milliseconds, too little to
share out. torch's default thread pool (one thread per core) then mostly synchronises,
and on a machine whose cores are busy with other work its threads spin and wait for one
another: measured on a 2-core machine with 3 competing CPU-bound processes, the default
certification took 8× its idle time with torch's default threads and 1.4× with one
thread, as fast as the default pool when idle (``python -m benchmarks.responsiveness``,
README "Responsiveness"). So the command line runs torch on **one thread** unless told
otherwise: ``--threads N`` (a global option; ``0``: torch's own default), else the
environment variable ``PARALLELEPIPEDONN_THREADS``, else 1.

The Python API leaves torch as it is: call :func:`configure_threads` once, at the start
of a program, to apply the same policy (batch worker processes take the thread count of
the process that starts them). The only state is torch's own thread settings.
"""

from __future__ import annotations

import os

from .errors import ConfigError

ENV_VAR = "PARALLELEPIPEDONN_THREADS"
DEFAULT_THREADS = 1
#: The most threads the policy asks torch for: more is refused (torch overflows a 32-bit
#: count, and allocates per-thread state up front: 100,000 threads crashed the process).
MAX_THREADS = 1024


def resolve_threads(n: int | None = None) -> int | None:
    """The number of torch threads the policy asks for: ``n`` if given, else
    ``$PARALLELEPIPEDONN_THREADS`` if set, else :data:`DEFAULT_THREADS` (1). ``0`` means
    torch's own default: the result is then ``None`` (leave torch as it is)."""
    if n is None:
        text = os.environ.get(ENV_VAR, "").strip()
        if not text:
            return DEFAULT_THREADS
        try:
            n = int(text)
        except ValueError:
            raise ConfigError(f"{ENV_VAR} must be a whole number of threads (0: torch's default), "
                              f"got {text!r}") from None
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_THREADS:
        raise ConfigError(f"the number of threads must be a whole number from 0 to {MAX_THREADS} (0: torch's "
                          f"default), got {n!r}")
    return None if n == 0 else n


def configure_threads(n: int | None = None) -> int:
    """Apply the thread policy to torch (imports it): ``n`` intra-op threads (see
    :func:`resolve_threads` for the default), and as many inter-op threads where torch
    still allows it (only before its first parallel work). Returns the number of
    intra-op threads torch now uses."""
    threads = resolve_threads(n)
    import torch

    if threads is not None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # set already, or inter-op work has started: torch keeps its pool
            pass
    return torch.get_num_threads()


def current_threads() -> int | None:
    """torch's intra-op thread count, or ``None`` if torch is not imported yet."""
    import sys

    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())
