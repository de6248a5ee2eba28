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
from collections.abc import Callable, Iterable
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

    __slots__ = ("name", "_factory", "_target", "_description", "_queries")

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


def make_oracle(name: str, network: Network, **options: Any) -> Oracle:
    """Instantiate the oracle registered as ``name`` for ``network``.

    ``"a+b+c"`` builds a :class:`~oracles.cascade.Cascade` of the named oracles (each given
    the options it accepts). Options no factory accepts are rejected with
    :class:`ConfigError`.
    """
    if "+" in name:
        from .cascade import Cascade

        parts = [p.strip() for p in name.split("+")]
        if not all(parts):
            raise ConfigError(f"malformed oracle composition {name!r}")
        used: set[str] = set()
        stages = []
        for part in parts:
            accepted = _accepted_options(part, options)
            used |= set(accepted)
            stages.append(make_oracle(part, network, **accepted))
        unused = sorted(set(options) - used - {"time_limit"})
        if unused:
            raise ConfigError(f"no oracle of {name!r} takes option(s) {', '.join(unused)}")
        return Cascade(network, stages, time_limit=options.get("time_limit"))
    entries = oracle_entries()
    if name not in entries:
        raise ConfigError(f"unknown oracle {name!r}; available: {', '.join(sorted(entries))}")
    factory = entries[name].factory
    unknown = sorted(set(options) - set(_accepted_options(name, options)))
    if unknown:
        raise ConfigError(f"oracle {name!r} does not take option(s) {', '.join(unknown)}")
    return factory(network, **options)


def _accepted_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that the factory registered as ``name`` accepts."""
    entries = oracle_entries()
    if name not in entries:
        raise ConfigError(f"unknown oracle {name!r}; available: {', '.join(sorted(entries))}")
    params = inspect.signature(entries[name].factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def accepts_option(name: str, option: str) -> bool:
    """Whether the oracle ``name`` (or every part of ``a+b``) takes ``option``."""
    return all(option in _accepted_options(part.strip(), {option: None}) for part in name.split("+"))
