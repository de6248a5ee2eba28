"""Search algorithms, by name (the ``--algorithm`` values of the CLI).

``"a+b"`` composes two searches: ``b`` grows the box ``a`` certified (see
:class:`~parallelepipedonn.search.box.Compose`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .apothem import ApothemBisection, ApothemKary, ApothemLinear, ApothemTopDown
from .base import OracleLedger, Problem, Search, SearchResult, Status, check_oracle, grows
from .box import Compose, FaceByFace, FaceExpansion, TopDownBox
from .exact import ExactApothem

if TYPE_CHECKING:
    from .volume import VolumeGradient


def __getattr__(name: str) -> Any:
    if name == "VolumeGradient":  # torch: imported on first use, not with the package
        from .volume import VolumeGradient

        return VolumeGradient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SearchEntry:
    """A named search: its factory (taking the precision), what it is, the oracle it uses
    when none is named, and its family (``apothem``, ``box``, ``volume`` or ``exact``)."""

    factory: Callable[[float], Search]
    description: str
    family: str
    default_oracle: str = "crown"


def _apothem_max_box(p: float) -> Search:
    return Compose(ApothemKary(precision=p), FaceExpansion(precision=p), name="apothem-max-box")


def _topdown_box(p: float) -> Search:
    return Compose(TopDownBox(precision=p), FaceByFace(precision=p), name="topdown-box")


def _volume_gradient(p: float) -> Search:
    from .volume import VolumeGradient

    return VolumeGradient(precision=p)


SEARCHES: dict[str, SearchEntry] = {
    "apothem-kary": SearchEntry(lambda p: ApothemKary(precision=p),
                                "apothem: batched k-ary search, 16 radii per oracle call (the default)", "apothem"),
    "apothem-bisection": SearchEntry(lambda p: ApothemBisection(precision=p),
                                     "apothem: bottom-up dichotomic search (bisection on the radius)", "apothem"),
    "apothem-linear": SearchEntry(lambda p: ApothemLinear(precision=p),
                                  "apothem: bottom-up linear search in steps of the precision (the paper's)",
                                  "apothem"),
    "apothem-topdown": SearchEntry(lambda p: ApothemTopDown(precision=p),
                                   "apothem: top-down from the domain, just inside each counterexample", "apothem"),
    "box-bisection": SearchEntry(lambda p: FaceByFace(precision=p, mode="bisection"),
                                 "box: each face in turn pushed out by bisection (the paper's bu-d-dfs)", "box"),
    "box-linear": SearchEntry(lambda p: FaceByFace(precision=p, mode="linear", name="box-linear"),
                              "box: each face in turn pushed out in steps of the precision", "box"),
    "box-topdown": SearchEntry(lambda p: TopDownBox(precision=p),
                               "box: from the domain, cut just inside each counterexample (the paper's td)", "box"),
    "box-maximal": SearchEntry(lambda p: FaceExpansion(precision=p),
                               "box: all faces pushed out together to an inclusion-maximal box", "box"),
    "apothem-max-box": SearchEntry(_apothem_max_box,
                                   "composition: apothem-kary, then box-maximal (apothem-optimal, inclusion-maximal)",
                                   "box"),
    "topdown-box": SearchEntry(_topdown_box, "composition: box-topdown, then box-bisection (the paper's td+bu-d-dfs)",
                               "box"),
    "volume-greedy": SearchEntry(lambda p: FaceExpansion(precision=p, order="volume", name="volume-greedy"),
                                 "volume-based: from the point, faces grown largest log-volume gain first", "volume"),
    "volume-gradient": SearchEntry(_volume_gradient,
                                   "volume-based: gradient ascent on log-volume under a CROWN margin bound, then "
                                   "verified", "volume"),
    "exact": SearchEntry(lambda p: ExactApothem(precision=p),
                         "exact best apothem with a complete oracle (precision is relative)", "exact",
                         default_oracle="crown+alpha-crown+bab"),
}

DEFAULT_SEARCH = "apothem-kary"


def make_search(name: str, *, precision: float = 1e-4) -> Search:
    """The search algorithm registered as ``name`` (``"a+b"``: ``b`` after ``a``)."""
    if not precision > 0:
        raise ConfigError(f"precision must be > 0, got {precision}")
    if "+" in name:
        parts = [p.strip() for p in name.split("+")]
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"malformed algorithm composition {name!r}")
        search = make_search(parts[0], precision=precision)
        for part in parts[1:]:
            then = make_search(part, precision=precision)
            if not grows(then):
                growing = [n for n, e in SEARCHES.items() if grows(e.factory(precision))]
                raise ConfigError(f"{part!r} starts afresh (it does not grow a given box), so it cannot follow "
                                  f"{search.name!r} in {name!r}: a later part must be one of {', '.join(growing)}")
            search = Compose(search, then, name="")
        return Compose(search.first, search.second, name=name) if isinstance(search, Compose) else search
    if name not in SEARCHES:
        raise ConfigError(f"unknown algorithm {name!r}; available: {', '.join(sorted(SEARCHES))}")
    return SEARCHES[name].factory(precision)


def default_oracle(algorithm: str) -> str:
    """The oracle an algorithm uses when none is named (for ``a+b``: the first part's that
    is not crown, e.g. ``exact``'s complete cascade, else crown)."""
    for part in algorithm.split("+"):
        entry = SEARCHES.get(part.strip())
        if entry is not None and entry.default_oracle != "crown":
            return entry.default_oracle
    return "crown"


__all__ = [
    "ApothemBisection", "ApothemKary", "ApothemLinear", "ApothemTopDown", "Compose", "DEFAULT_SEARCH",
    "ExactApothem", "FaceByFace", "FaceExpansion", "OracleLedger", "Problem", "SEARCHES", "Search", "SearchEntry",
    "SearchResult", "Status", "TopDownBox", "VolumeGradient", "check_oracle", "default_oracle", "grows", "make_search",
]
