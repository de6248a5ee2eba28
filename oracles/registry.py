"""Named oracles: a registry that the CLI and the Python API resolve ``--oracle`` names in.

Third-party verifiers plug in either by calling :func:`register_oracle` or by declaring
an entry point in the group ``parallelepipedonn.oracles`` whose object is a factory
``factory(network, **options) -> Oracle`` (see README, "Plugging in a verifier"). Each
entry knows the queries its oracles answer (:data:`oracles.base.QUERIES`): declared at
registration, else the factory's ``queries`` (an :class:`~oracles.base.Oracle` subclass),
else ``verify`` only.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from parallelepipedonn.errors import ConfigError, OracleError

from .capabilities import VERIFY_ONLY, check_queries, describe_queries

if TYPE_CHECKING:
    from parallelepipedonn.network import Network

    from .base import Oracle

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "parallelepipedonn.oracles"

OracleFactory = Callable[..., "Oracle"]


class OracleEntry:
    """A registered oracle: its name, its factory, a one-line description and the queries
    it answers.

    The factory may be registered as a dotted path ``"package.module:attribute"``: it is
    imported on first use (``entry.factory``), so that naming and describing the built-in
    oracles (``parallelepipedonn list``, ``--help``) imports none of their backends (they
    declare their description and queries at registration).
    """

    __slots__ = ("_description", "_factory", "_queries", "_target", "name")

    def __init__(self, name: str, factory: OracleFactory | str, description: str = "",
                 queries: Iterable[str] | None = None) -> None:
        self.name = name
        self._target = factory if isinstance(factory, str) else None
        self._factory = None if isinstance(factory, str) else factory
        self._description = description
        self._queries = None if queries is None else _checked_queries(queries, f"oracle {name!r}")

    @property
    def factory(self) -> OracleFactory:
        if self._factory is None:
            module, _, attribute = str(self._target).partition(":")
            obj: Any = importlib.import_module(module)
            for part in attribute.split("."):
                obj = getattr(obj, part)
            self._factory = obj
        return self._factory

    @property
    def description(self) -> str:
        return self._description or (inspect.getdoc(self.factory) or "").split("\n")[0]

    @property
    def summary(self) -> str:
        """The description and the queries, on one line."""
        return f"{self.description}; queries: {describe_queries(self.queries)}"

    @property
    def queries(self) -> frozenset[str]:
        """The queries its oracles answer: as registered, else the factory's own
        ``queries`` (an Oracle class), else ``verify`` only."""
        if self._queries is None:
            declared = getattr(self.factory, "queries", None)
            self._queries = (_checked_queries(declared, f"oracle {self.name!r}")
                             if isinstance(declared, (frozenset, set, tuple)) else VERIFY_ONLY)
        return self._queries

    def __repr__(self) -> str:
        return f"OracleEntry({self.name!r}, {self._target or self._factory!r}, {self._description!r})"


_REGISTRY: dict[str, OracleEntry] = {}
_entry_points_loaded = False


def register_oracle(name: str, factory: OracleFactory | str, description: str = "", *,
                    queries: Iterable[str] | None = None, replace: bool = False) -> None:
    """Make ``factory(network, **options)`` available under ``name``.

    ``factory`` may be a dotted path ``"package.module:attribute"``, imported when the
    oracle is first made (or described, if ``description`` is empty, or asked for its
    queries, if ``queries`` is not given). ``queries``: the names of
    :data:`oracles.base.QUERIES` its oracles answer (default: the factory's ``queries``
    if it is an Oracle class, else ``verify`` only).
    """
    if "+" in name or "." in name or "=" in name:
        raise ConfigError(f"an oracle name may not contain '+', '.' or '=' (got {name!r})")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"an oracle named {name!r} is already registered")
    _REGISTRY[name] = OracleEntry(name, factory, description, queries)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib import metadata

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            register_oracle(ep.name, ep.load())
        except Exception as exc:  # a broken plug-in must not break the tool
            log.warning("cannot load oracle plug-in %r (%s): %s", ep.name, ep.value, exc)


def oracle_entries() -> dict[str, OracleEntry]:
    """All registered oracles (built-in and plug-ins), by name."""
    _load_entry_points()
    return dict(_REGISTRY)


def _checked_queries(queries: Iterable[str], owner: str) -> frozenset[str]:
    try:
        return check_queries(frozenset(queries), owner)
    except OracleError as exc:
        raise ConfigError(str(exc)) from exc


def oracle_queries(name: str) -> frozenset[str]:
    """The queries the oracle ``name`` answers (for ``a+b``: those any stage answers),
    known without importing the backends of the built-in oracles."""
    entries = oracle_entries()
    out: frozenset[str] = frozenset()
    for part in (p.strip() for p in name.split("+")):
        if part not in entries:
            raise ConfigError(f"unknown oracle {part!r}; available: {', '.join(sorted(entries))}")
        out |= entries[part].queries
    return out


def require_queries(name: str, needed: Iterable[str], purpose: str) -> None:
    """A :class:`ConfigError` up front if the oracle ``name`` does not answer a query of ``needed``."""
    missing = sorted(set(needed) - oracle_queries(name))
    if missing:
        able = sorted(n for n, e in oracle_entries().items() if set(needed) <= e.queries)
        raise ConfigError(f"{purpose} needs an oracle that answers {', '.join(missing)} queries; {name!r} "
                          f"answers {', '.join(sorted(oracle_queries(name)))} (oracles that do: "
                          f"{', '.join(able) or 'none'})")


#: Options that the stages of a composition take under their plain name: each stage that
#: accepts one gets the same value (and the composition takes ``time_limit`` itself).
#: Any other option that two or more stages take must name its stage: ``bab.steps=20``.
SHARED_OPTIONS: frozenset[str] = frozenset({"time_limit", "device", "dtype"})


def make_oracle(name: str, network: Network, **options: Any) -> Oracle:
    """Instantiate the oracle registered as ``name`` for ``network``.

    ``"a+b+c"`` builds a :class:`~oracles.cascade.Cascade` of the named oracles, each
    given its options (see :func:`stage_options`: ``stage.option`` for one stage, a plain
    option for the one stage that takes it, or for all if it is shared). Options no
    factory accepts, and plain options that two stages take, are rejected with
    :class:`ConfigError`.

    A :class:`~parallelepipedonn.graph.Graph` that is a Dense/ReLU chain is read as that
    chain (the same semantics) by every stage of a cascade, so that they share one
    network (milp and bab read such a graph as its chain). Any other graph goes as it is to
    oracles whose factory sets ``reads_graphs`` (crown, alpha-crown, milp, bab, attack); if
    any stage does not, every stage is bound to the graph's chain expansion
    (:func:`oracles.chain.chain_network`:
    refused, naming that stage, for a residual graph), recorded as the oracle's
    ``bridge``; counterexamples are still confirmed on the graph.
    """
    stages = stage_options(name, options)
    entries = oracle_entries()
    graph, bridge = None, None
    chain_readers = [p for p, _ in stages if not getattr(entries[p].factory, "reads_graphs", False)]
    if hasattr(network, "as_network"):  # a Graph
        chain = network.as_network()
        if chain is not None:
            if chain_readers or len(stages) > 1:
                graph, network = network, chain
        elif chain_readers:  # for a chain-only stage
            from .chain import chain_network

            graph = network
            network, bridge = chain_network(network, chain_readers[0])
    if len(stages) > 1:
        from .cascade import Cascade

        built = [make_oracle(part, network, **opts) for part, opts in stages]
        oracle = Cascade(network, built, time_limit=options.get("time_limit"))
    else:
        part, opts = stages[0]
        oracle = entries[part].factory(network, **opts)
    if graph is not None:
        for o in (oracle, *getattr(oracle, "stages", ())):
            o.model = graph
        oracle.bridge = bridge
    return oracle


def stage_options(name: str, options: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each oracle of ``name`` (``"a+b+c"``, or one oracle) with the options it is given.

    ``stage.option`` goes to that stage only; a plain option to the one stage that takes
    it, or to every stage that takes it if it is one of :data:`SHARED_OPTIONS`; a plain
    option that two or more stages take is ambiguous (a :class:`ConfigError` naming the
    namespaced forms); a namespaced option beats the plain one for its stage.
    """
    parts = [p.strip() for p in name.split("+")]
    entries = oracle_entries()
    if not all(parts):
        raise ConfigError(f"malformed oracle composition {name!r}")
    for part in parts:
        if part not in entries:
            raise ConfigError(f"unknown oracle {part!r}; available: {', '.join(sorted(entries))}")
    stages = list(dict.fromkeys(parts))
    given: dict[str, dict[str, Any]] = {p: {} for p in stages}
    namespaced, unknown, ambiguous = [], [], []
    for key, value in options.items():
        stage, dot, option = key.partition(".")
        if dot:
            if stage not in given:
                raise ConfigError(f"option {key!r} names no oracle of {name!r} (its stages: {', '.join(stages)})")
            if not _takes(stage, option):
                raise ConfigError(f"oracle {stage!r} does not take option(s) {option} (given as {key!r})")
            namespaced.append((stage, option, value))
            continue
        takers = [p for p in stages if _takes(p, key)]
        if len(takers) == 1 or (takers and key in SHARED_OPTIONS):
            for p in takers:
                given[p][key] = value
        elif len(takers) > 1:
            ambiguous.append(f"{key!r} (write {' or '.join(f'{p}.{key}=...' for p in takers)})")
        elif not (key == "time_limit" and len(parts) > 1):  # a cascade takes time_limit itself
            unknown.append(key)
    if unknown:
        raise ConfigError(f"oracle {name!r} does not take option(s) {', '.join(sorted(unknown))}" if len(parts) == 1
                          else f"no oracle of {name!r} takes option(s) {', '.join(sorted(unknown))}")
    if ambiguous:
        raise ConfigError(f"several oracles of {name!r} take option(s) {'; '.join(ambiguous)}: give the stage")
    for stage, option, value in namespaced:
        given[stage][option] = value
    return [(p, dict(given[p])) for p in parts]


def _takes(name: str, option: str) -> bool:
    """Whether the factory registered as ``name`` accepts the keyword ``option``."""
    params = inspect.signature(oracle_entries()[name].factory).parameters
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def accepts_option(name: str, option: str) -> bool:
    """Whether the oracle ``name`` (or every part of ``a+b``) takes ``option``; a
    namespaced ``stage.option``: whether that stage of ``name`` takes it."""
    entries = oracle_entries()
    parts = [p.strip() for p in name.split("+")]
    for part in parts:
        if part not in entries:
            raise ConfigError(f"unknown oracle {part!r}; available: {', '.join(sorted(entries))}")
    stage, dot, plain = option.partition(".")
    if dot:
        return stage in parts and _takes(stage, plain)
    return all(_takes(part, option) for part in parts)


def parse_oracle_options(texts: Iterable[str]) -> dict[str, Any]:
    """``["steps=30", "bab.steps=20", "device=cuda"]`` as options: each ``[STAGE.]KEY=VALUE``,
    the value an int, a float, true/false/none, or else a string (the command line's
    ``--oracle-option``)."""
    out: dict[str, Any] = {}
    for text in texts:
        key, eq, raw = (t.strip() for t in text.partition("="))
        if not eq or not all(part and not any(c.isspace() for c in part) for part in key.split(".")):
            raise ConfigError(f"an oracle option is KEY=VALUE or STAGE.KEY=VALUE (e.g. bab.steps=20), got {text!r}")
        if key in out:
            raise ConfigError(f"oracle option {key!r} given twice")
        value = _option_value(raw)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"oracle option {key!r}: {raw!r} is not a finite number")
        if key.rsplit(".", 1)[-1] == "time_limit" and not (isinstance(value, (int, float)) and value > 0
                                                             and not isinstance(value, bool)):
            raise ConfigError(f"oracle option {key!r}: a time limit is a positive number of seconds, got {raw!r}")
        out[key] = value
    return out


def _option_value(raw: str) -> Any:
    words = {"true": True, "false": False, "none": None, "null": None}
    if raw.lower() in words:
        return words[raw.lower()]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
