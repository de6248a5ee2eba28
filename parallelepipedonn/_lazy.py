"""Lazy public names of a package (PEP 562): each is imported from its module on first
use, so that importing the package loads no heavy backend (torch, pyomo, matplotlib)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``names`` is loaded from its
    module (relative to the package) when first looked up and then kept; any other name
    is tried as a submodule not imported yet."""

    def __getattr__(name: str) -> Any:
        namespace = sys.modules[package].__dict__
        module = names.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module, package), name)
            namespace[name] = value
            return value
        if not name.startswith("__"):
            try:
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | set(names))

    return __getattr__, __dir__
