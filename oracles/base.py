"""The oracle interface: one batched robustness query, answered honestly.

An oracle is bound to one network (the IR) and answers, for each box of a batch and one
label ``c``:

* ``VERIFIED``  — proven: at every point of the box the logit of ``c`` is strictly above
  every other logit;
* ``FALSIFIED`` — a counterexample inside the box, confirmed before it is returned (the
  base class re-checks every one: by a float64 forward pass of the IR, and in exact
  rational arithmetic when its margin is within the pass's rounding error of 0);
* ``UNKNOWN``   — anything else: incomplete method, time limit, solver trouble.

Nothing but a proof is ever reported as ``VERIFIED``: subclasses implement
:meth:`Oracle._verify` and the base class validates the query, re-checks counterexamples,
turns exceptions into ``UNKNOWN`` and keeps statistics.

Besides ``verify``, a backend may answer the queries of :data:`QUERIES` on class regions
and distances; each oracle class declares the ones it answers in ``queries`` and callers
ask :meth:`Oracle.supports` before they rely on one (an undeclared query raises
:class:`~parallelepipedonn.errors.OracleError` naming the oracle and the query).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError
from parallelepipedonn.tolerances import gradual_underflow

from .capabilities import QUERIES, VERIFY_ONLY, Capabilities, check_queries

if TYPE_CHECKING:  # torch is imported with the oracles that use it, not here
    from parallelepipedonn.graph import Graph
    from parallelepipedonn.network import Network

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]


class Verdict(str, enum.Enum):
    """The fixed vocabulary of robustness answers."""

    VERIFIED = "verified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class Answer:
    """The answer for one box.

    ``margin`` is, for VERIFIED/UNKNOWN, a proven lower bound on
    ``min_x (logit_c(x) - max_{j != c} logit_j(x))`` over the box when the method computes
    one (else ``None``); for FALSIFIED, the float64 margin at the counterexample (<= 0;
    the exact margin there is <= 0 too).
    """

    verdict: Verdict
    counterexample: FloatArray | None = None
    margin: float | None = None
    reason: str = ""
    timed_out: bool = False

    @property
    def verified(self) -> bool:
        return self.verdict is Verdict.VERIFIED

    @property
    def falsified(self) -> bool:
        return self.verdict is Verdict.FALSIFIED


class RegionVerdict(str, enum.Enum):
    """Answers to the class-region query."""

    NONE = "none"  # proven: no point of the region with that class outside the box
    WITNESS = "witness"  # a confirmed point of that class outside the box
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class RegionAnswer:
    verdict: RegionVerdict
    witness: FloatArray | None = None
    reason: str = ""
    timed_out: bool = False


@dataclass(frozen=True, eq=False)
class Extreme:
    """The min or max of one input coordinate over a class region: ``bound`` is proven
    (an outer bound), ``witness`` a confirmed point of the class region (or ``None``),
    ``exact`` when the witness attains the bound up to the solver's proof margin."""

    bound: float
    witness: FloatArray | None
    exact: bool
    reason: str = ""


@dataclass(frozen=True, eq=False)
class ClassBox:
    """Bounds of every input coordinate over a class region (see
    :meth:`Oracle.class_extremes`): ``lower``/``upper`` are proven outer bounds, exact
    (attained by a confirmed point, up to the solver's proof margin) where ``exact_lower``
    / ``exact_upper`` say so; ``witnesses`` are confirmed points of the class region;
    ``empty`` is proven emptiness of the region."""

    lower: FloatArray
    upper: FloatArray
    exact_lower: NDArray[np.bool_]
    exact_upper: NDArray[np.bool_]
    witnesses: FloatArray
    empty: bool = False
    milps: int = 0
    timeouts: int = 0


@dataclass(frozen=True, eq=False)
class Distance:
    """The minimum adversarial L-infinity distance of an input within the domain,
    bracketed: ``lower`` is proven (no point of the domain nearer than that is
    misclassified); ``upper`` is the distance of ``counterexample`` (confirmed), ``inf``
    if none was found. ``decisions`` counts the oracle's robustness or MILP decisions."""

    lower: float
    upper: float
    counterexample: FloatArray | None
    decisions: int
    seconds: float
    reason: str = ""

    @property
    def gap(self) -> float:
        return self.upper - self.lower

    def exact(self, rel_precision: float) -> bool:
        return self.upper - self.lower <= rel_precision * self.upper


@dataclass
class OracleStats:
    """Counters of one oracle instance (calls = batched calls, boxes = boxes asked)."""

    calls: int = 0
    boxes: int = 0
    seconds: float = 0.0
    verified: int = 0
    falsified: int = 0
    unknown: int = 0
    timeouts: int = 0
    errors: int = 0
    rejected_counterexamples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: An oracle's constructor (which prepares the constants of its error bounds) and public
#: queries: each runs with gradual underflow (subnormal numbers kept:
#: :func:`~parallelepipedonn.tolerances.gradual_underflow`) and outside a caller's
#: ``torch.inference_mode`` (whose tensors no gradient step can use), whichever class defines it.
NUMERIC_ENTRY_POINTS = ("__init__", "verify", "class_region", "coordinate_extreme", "min_distance",
                        "class_extremes", "margin_lower_bounds")


def _numeric_entry(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` run within :func:`~parallelepipedonn.tolerances.gradual_underflow`, and
    with inference mode off (where torch is imported and it is on)."""
    if getattr(method, "gradual_underflow", False):
        return method

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and torch.is_inference_mode_enabled():
            with torch.inference_mode(False), gradual_underflow():
                return method(*args, **kwargs)
        with gradual_underflow():
            return method(*args, **kwargs)

    run.gradual_underflow = True  # type: ignore[attr-defined]
    return run


class Oracle(ABC):
    """Base class of every verifier backend (see module docstring)."""

    name: ClassVar[str] = "oracle"
    sound: ClassVar[bool] = True
    complete: ClassVar[bool] = False
    batched: ClassVar[bool] = True
    #: the queries (names of :data:`QUERIES`) this oracle answers; ``distance``: it answers
    #: :meth:`min_distance` itself (else the distance is found by root finding on verify)
    queries: ClassVar[frozenset[str]] = VERIFY_ONLY
    #: whether it reads a :class:`~parallelepipedonn.graph.Graph` as it is; the others are
    #: bound to its chain expansion (:func:`oracles.chain.chain_network`, recorded in
    #: :meth:`settings` as ``bridge``) or refuse it (a residual graph) when constructed
    reads_graphs: ClassVar[bool] = False
    #: the torch device its computations run on (a ``torch.device`` where it takes one;
    #: ``"cpu"`` for the backends without a device option): helpers it builds for the same
    #: query (e.g. the exact search's CROWN floor) run there too
    device: Any = "cpu"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.queries = check_queries(cls.queries, f"oracle class {cls.__name__}")
        for name in NUMERIC_ENTRY_POINTS:  # those it defines or takes from a mixin (Oracle's own are)
            method = getattr(cls, name, None)
            if callable(method) and not getattr(method, "gradual_underflow", False):
                setattr(cls, name, _numeric_entry(method))

    def __init__(self, network: Network | Graph, *, time_limit: float | None = None) -> None:
        #: the record of the chain expansion of a graph this oracle is bound to (or None)
        self.bridge: dict[str, Any] | None = None
        #: the network as given: counterexamples are confirmed on it (a graph, not its chain)
        self.model: Network | Graph = network
        if not self.reads_graphs and hasattr(network, "as_network"):  # a Graph
            from .chain import chain_network

            network, self.bridge = chain_network(network, self.name)
        self.network: Network = network  # type: ignore[assignment]
        self.time_limit = time_limit
        self.stats = OracleStats()

    # -- what subclasses implement --------------------------------------------------------
    @abstractmethod
    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        """Answer for each row of ``lower``/``upper`` (shape ``(B, n)``, float64)."""

    def settings(self) -> dict[str, Any]:
        """The oracle's settings, JSON-serialisable (recorded in certificates)."""
        return {"time_limit": self.time_limit, **({"bridge": self.bridge} if self.bridge else {})}

    # -- optional queries (complete backends) -----------------------------------------------
    def supports(self, query: str) -> bool:
        """Whether this oracle answers ``query`` (a name of :data:`QUERIES`)."""
        if query not in QUERIES:
            raise OracleError(f"unknown oracle query {query!r}; known: {', '.join(sorted(QUERIES))}")
        return query in self.queries

    def _unsupported(self, query: str) -> OracleError:
        answered = ", ".join(sorted(self.queries))
        return OracleError(f"oracle {self.name!r} does not answer {query} queries (it answers: {answered})")

    @_numeric_entry
    def class_region(self, lower: ArrayLike, upper: ArrayLike, label: int, region: Box,
                     tolerance: float = 1e-4) -> RegionAnswer:
        """Is there a point of ``region`` that the network classifies ``label`` (ties
        included) outside ``[lower, upper]`` by more than ``tolerance``?"""
        raise self._unsupported("class_region")

    @_numeric_entry
    def coordinate_extreme(self, label: int, index: int, maximize: bool, region: Box) -> Extreme:
        """Min (or max) of input coordinate ``index`` over the points of ``region`` that the
        network classifies ``label`` (ties included)."""
        raise self._unsupported("coordinate_extreme")

    @_numeric_entry
    def min_distance(self, x: FloatArray, label: int, domain: Box, *, lower: float = 0.0,
                     counterexample: FloatArray | None = None, falsifier: Oracle | None = None,
                     time_limit: float | None = None, progress: Callable[[str], None] | None = None) -> Distance:
        """The minimum L-infinity distance from ``x`` to a point of ``domain`` not classified
        ``label``, bracketed (``lower`` a radius already proven robust; ``counterexample``
        a misclassified point, if known — re-checked; ``time_limit`` in seconds for the
        whole query, besides the oracle's own limit; ``progress``, optional, is called with
        the bracket as it closes). Any oracle's can be found with
        :func:`oracles.min_adversarial_distance`; backends that support ``"distance"``
        answer it directly."""
        raise self._unsupported("distance")

    @_numeric_entry
    def class_extremes(self, label: int, region: Box, candidates: ArrayLike = (), **options: Any) -> ClassBox:
        """Min and max of every input coordinate over the points of ``region`` classified
        ``label`` (ties included): the class region's bounding box, as outer bounds.
        ``candidates`` are points that may belong to the class region (re-checked)."""
        raise self._unsupported("class_extremes")

    @contextlib.contextmanager
    def time_limited(self, seconds: float | None) -> Iterator[None]:
        """Within the block, each call takes at most ``seconds`` (and at most the oracle's
        own limit): for callers with a deadline of their own (anytime searches)."""
        if seconds is None:
            yield
            return
        saved = self.time_limit
        self.time_limit = max(0.01, seconds if saved is None else min(saved, seconds))
        try:
            yield
        finally:
            self.time_limit = saved

    # -- the public query ---------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.sound, self.complete, self.batched, self.queries)

    @_numeric_entry
    def verify(self, lower: ArrayLike, upper: ArrayLike, label: int) -> tuple[Answer, ...]:
        """Robustness query for a batch of boxes ``[lower[b], upper[b]]`` and one label."""
        lo, hi = self._check_query(lower, upper, label)
        start = time.perf_counter()
        try:
            answers = tuple(self._verify(lo, hi, int(label)))
        except OracleError:
            raise
        except Exception as exc:  # a backend failure is never a proof
            log.warning("oracle %s failed: %s", self.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            self.stats.errors += 1
            answers = tuple(Answer(Verdict.UNKNOWN, reason=f"{self.name} error: {exc}") for _ in range(len(lo)))
        if len(answers) != len(lo):
            raise OracleError(f"oracle {self.name} answered {len(answers)} of {len(lo)} boxes")
        answers = tuple(self._recheck(a, lo[i], hi[i], int(label)) for i, a in enumerate(answers))
        self._count(answers, time.perf_counter() - start)
        return answers

    def verify_box(self, lower: ArrayLike, upper: ArrayLike, label: int) -> Answer:
        """The query for a single box."""
        return self.verify(np.asarray(lower, dtype=np.float64)[None], np.asarray(upper, dtype=np.float64)[None],
                           label)[0]

    # -- helpers ------------------------------------------------------------------------
    def _check_query(self, lower: ArrayLike, upper: ArrayLike, label: int,
                     finite: bool = True) -> tuple[FloatArray, FloatArray]:
        """The boxes as float64 arrays ``(B, n)`` (one box may be given as ``(n,)``); typed
        errors for a wrong shape, non-finite bounds (unless ``finite`` is off), an empty
        box (lower > upper) or a label the network does not have."""
        n = self.network.n_inputs
        lo = np.asarray(lower, dtype=np.float64)
        hi = np.asarray(upper, dtype=np.float64)
        if lo.ndim == 1:
            lo, hi = lo[None], hi[None]
        if lo.shape != hi.shape or lo.ndim != 2 or lo.shape[1] != n:
            raise OracleError(f"boxes must have shape (B, {n}); got {lo.shape} and {hi.shape}")
        if finite and not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise OracleError("box bounds must be finite")
        if (lo > hi).any():
            raise OracleError("a box has lower > upper")
        self.network.check_label(label)
        return lo, hi

    def _recheck(self, a: Answer, lo: FloatArray, hi: FloatArray, label: int) -> Answer:
        if a.verdict is Verdict.VERIFIED and not self.sound:
            return Answer(Verdict.UNKNOWN, margin=None, reason=f"{self.name} is not sound")
        if a.verdict is not Verdict.FALSIFIED:
            return a
        cex = None if a.counterexample is None else np.asarray(a.counterexample, dtype=np.float64).reshape(-1)
        if cex is None or cex.shape != lo.shape or not ((cex >= lo).all() and (cex <= hi).all()):
            self.stats.rejected_counterexamples += 1
            return Answer(Verdict.UNKNOWN, reason=f"{self.name}: counterexample outside the box")
        margin = float(self.model.margins(cex, label)[0])
        if not self.model.misclassified(cex, label)[0]:  # exact where float64 rounding could decide
            self.stats.rejected_counterexamples += 1
            return Answer(Verdict.UNKNOWN, reason=f"{self.name}: counterexample not confirmed (margin {margin:.3g})")
        cex = cex.copy()
        cex.setflags(write=False)
        return Answer(Verdict.FALSIFIED, counterexample=cex, margin=min(margin, 0.0), reason=a.reason)

    def _count(self, answers: Sequence[Answer], seconds: float) -> None:
        s = self.stats
        s.calls += 1
        s.boxes += len(answers)
        s.seconds += seconds
        for a in answers:
            if a.verdict is Verdict.VERIFIED:
                s.verified += 1
            elif a.verdict is Verdict.FALSIFIED:
                s.falsified += 1
            else:
                s.unknown += 1
                s.timeouts += int(a.timed_out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, network={self.network.describe()!r})"
