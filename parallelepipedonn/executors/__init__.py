"""Executors of batch certification, by name: ``local`` (the default: one input at a
time on this machine) and ``ray`` (a Ray cluster; ``pip install -e ".[ray]"``).

:func:`make_executor` builds one from its name; :func:`register_executor` adds another.
Importing this package imports neither torch nor Ray: an executor's module is imported
when it is made.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Executor

#: ``name -> "module:class"`` (imported when made) or a factory taking the keyword options.
_REGISTRY: dict[str, str | Callable[..., Executor]] = {
    "local": "parallelepipedonn.executors.local:LocalExecutor",
    "ray": "parallelepipedonn.executors.ray_cluster:RayExecutor",
}

DEFAULT_EXECUTOR = "local"


def executor_names() -> tuple[str, ...]:
    """The names :func:`make_executor` knows, the default first."""
    return (DEFAULT_EXECUTOR, *sorted(set(_REGISTRY) - {DEFAULT_EXECUTOR}))


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    """Make ``factory(address=..., workers=...)`` the executor called ``name``."""
    if name in _REGISTRY:
        raise ConfigError(f"an executor called {name!r} exists already")
    _REGISTRY[name] = factory


def make_executor(name: str = DEFAULT_EXECUTOR, **options: Any) -> Executor:
    """The executor ``name`` with its ``options`` (``address``, ``workers``, ...);
    :class:`ConfigError` for an unknown name, an option value it refuses, or an executor
    whose library is not installed."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown executor {name!r} (known: {', '.join(executor_names())})")
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = getattr(importlib.import_module(module), cls)
    return entry(**options)
