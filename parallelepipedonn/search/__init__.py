"""Search algorithms, by name (the ``--algorithm`` values of the CLI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .apothem import ApothemBisection
from .base import OracleLedger, Problem, Search, SearchResult, Status

#: name -> (factory taking the common options, one-line description)
SEARCHES: dict[str, tuple[Callable[..., Search], str]] = {
    "apothem-bisection": (lambda precision, **_: ApothemBisection(precision=precision),
                          "bottom-up dichotomic apothem search (bisection on the cube radius)"),
}

DEFAULT_SEARCH = "apothem-bisection"


def make_search(name: str, *, precision: float = 1e-4, **options: Any) -> Search:
    """The search algorithm registered as ``name``."""
    if name not in SEARCHES:
        raise ConfigError(f"unknown algorithm {name!r}; available: {', '.join(sorted(SEARCHES))}")
    if not precision > 0:
        raise ConfigError(f"precision must be > 0, got {precision}")
    return SEARCHES[name][0](precision=precision, **options)


__all__ = ["ApothemBisection", "DEFAULT_SEARCH", "OracleLedger", "Problem", "SEARCHES", "Search", "SearchResult",
           "Status", "make_search"]
