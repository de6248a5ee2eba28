"""Named oracles: a registry that the CLI and the Python API resolve ``--oracle`` names in.

Third-party verifiers plug in either by calling :func:`register_oracle` or by declaring
an entry point in the group ``parallelepipedonn.oracles`` whose object is a factory
``factory(network, **options) -> Oracle`` (see README, "Plugging in a verifier").
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parallelepipedonn.errors import ConfigError

if TYPE_CHECKING:
    from parallelepipedonn.network import Network

    from .base import Oracle

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "parallelepipedonn.oracles"

OracleFactory = Callable[..., "Oracle"]


class OracleEntry:
    """A registered oracle: its name, its factory and a one-line description.

    The factory may be registered as a dotted path ``"package.module:attribute"``: it is
    imported on first use (``entry.factory``), so that naming and describing the built-in
    oracles (``parallelepipedonn list``, ``--help``) imports none of their backends.
    """

    __slots__ = ("name", "_factory", "_target", "_description")

    def __init__(self, name: str, factory: OracleFactory | str, description: str = "") -> None:
        self.name = name
        self._target = factory if isinstance(factory, str) else None
        self._factory = None if isinstance(factory, str) else factory
        self._description = description

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

    def __repr__(self) -> str:
        return f"OracleEntry({self.name!r}, {self._target or self._factory!r}, {self._description!r})"


_REGISTRY: dict[str, OracleEntry] = {}
_entry_points_loaded = False


def register_oracle(name: str, factory: OracleFactory | str, description: str = "", *,
                    replace: bool = False) -> None:
    """Make ``factory(network, **options)`` available under ``name``.

    ``factory`` may be a dotted path ``"package.module:attribute"``, imported when the
    oracle is first made (or described, if ``description`` is empty).
    """
    if name in _REGISTRY and not replace:
        raise ConfigError(f"an oracle named {name!r} is already registered")
    _REGISTRY[name] = OracleEntry(name, factory, description)


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
