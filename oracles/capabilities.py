"""What an oracle can be asked: the names of its queries and its capabilities.

Free of numpy and of every backend, so that the registry can describe the built-in
oracles (``parallelepipedonn list``) without importing them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from parallelepipedonn.errors import OracleError

#: Every query an oracle may answer, by name, with the method that answers it.
QUERY_METHODS: dict[str, str] = {
    "verify": "verify",  # robustness of boxes (every oracle)
    "class_region": "class_region",  # a point of a class outside a box? (proven NONE / WITNESS)
    "coordinate_extreme": "coordinate_extreme",  # min/max of one input coordinate over a class region
    "class_extremes": "class_extremes",  # the bounding box of a class region
    "distance": "min_distance",  # the minimum adversarial distance, answered directly
}
QUERIES: frozenset[str] = frozenset(QUERY_METHODS)
#: What an oracle that declares nothing answers (e.g. a plug-in written before ``queries``).
VERIFY_ONLY: frozenset[str] = frozenset({"verify"})


def check_queries(queries: Iterable[str], owner: str) -> frozenset[str]:
    """``queries`` as a frozenset, checked: known names, ``verify`` included."""
    out = frozenset(queries)
    unknown = sorted(out - QUERIES)
    if unknown:
        raise OracleError(f"{owner} declares unknown queries {', '.join(unknown)}; known: {', '.join(sorted(QUERIES))}")
    if "verify" not in out:
        raise OracleError(f"{owner} must answer 'verify'")
    return out


def describe_queries(queries: Iterable[str]) -> str:
    """``queries`` as a comma list, in the order of :data:`QUERY_METHODS`."""
    given = set(queries)
    return ", ".join(q for q in QUERY_METHODS if q in given)


@dataclass(frozen=True)
class Capabilities:
    """What an oracle is: ``sound`` (VERIFIED is a proof), ``complete`` (decides every
    box, time permitting), ``batched`` (one call for many boxes), and the ``queries`` it
    answers (names of :data:`QUERIES`)."""

    sound: bool
    complete: bool
    batched: bool
    queries: frozenset[str] = VERIFY_ONLY
