"""Certificates: the result of certifying one input, as an immutable value and as JSON.

JSON conventions: arrays are flat lists in the row-major order of ``input_shape``; an
infinite apothem (the box is the whole domain) is the string ``"inf"``; an unknown
``apothem_upper_bound`` is ``null``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._version import __version__
from .box import Box
from .errors import InputDataError
from .io_utils import atomic_write_bytes
from .search.base import Status

FORMAT_VERSION = 1
FORMAT_NAME = "parallelepipedonn-certificate"
#: The JSON Schemas of the stored formats (package data, ``parallelepipedonn/schemas``).
SCHEMA_FILES = {"certificate": "certificate-v1.schema.json", "dual": "dual-box-v1.schema.json",
                "verification": "verification-v1.schema.json"}

FloatArray = NDArray[np.float64]
T = TypeVar("T")


def json_schema(kind: str = "certificate") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a stored certificate (``"certificate"``), dual
    box (``"dual"``) or verification result (``"verification"``, ``verify --json``), as
    shipped with the package."""
    from importlib import resources

    if kind not in SCHEMA_FILES:
        raise ValueError(f"unknown schema {kind!r}; available: {', '.join(SCHEMA_FILES)}")
    return json.loads(resources.files("parallelepipedonn").joinpath("schemas", SCHEMA_FILES[kind]).read_text())


def _num(v: float | None) -> float | str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def _unnum(v: Any) -> float | None:
    return None if v is None else float(v)


def _array_or_scalar(a: FloatArray) -> float | list[float]:
    return float(a[0]) if a.size and (a == a[0]).all() else a.tolist()


@dataclass(frozen=True, eq=False)
class Certificate:
    """The outcome of certifying ``input`` for ``label``.

    When ``status`` is ``certified``, every point of ``box`` was proven (by ``oracle``)
    to be classified ``label`` with a strictly larger logit than every other class.
    ``apothem_upper_bound`` (if not ``None``) is proven by a confirmed counterexample: no
    certification of this input can have a larger apothem. ``counterexample_class`` is the
    class the network gives ``counterexample`` (the highest logit other than the label's:
    the network's prediction there, ties with the label going to the other class);
    ``None`` without a counterexample, or in a certificate written before it was recorded.
    ``exact`` (algorithms that aim at the best apothem, e.g. ``exact``): whether the
    certified apothem is the best one to the algorithm's precision (``False``: the
    budget ran out first, and ``reason`` gives the bracket reached); ``None`` otherwise.
    ``epsilon`` (with ``certify --epsilon``): whether the ball of that radius around the
    input is certified (``epsilon``, ``status``, ``reason``, ``decided_by``, ``timed_out``;
    see :func:`parallelepipedonn.certify.decide_epsilon`); ``None`` otherwise.
    ``gmm`` (latent-mixture classifiers, ``parallelepipedonn gmm certify``): the closed-form
    radii, each proven (:mod:`parallelepipedonn.gmm.certify`); ``None`` otherwise.
    """

    status: Status
    label: int
    predicted_label: int
    input: FloatArray
    input_shape: tuple[int, ...]
    domain: Box
    box: Box | None
    apothem_upper_bound: float | None
    oracle: str
    oracle_settings: dict[str, Any]
    algorithm: str
    algorithm_settings: dict[str, Any]
    oracle_calls: int
    rounds: int
    seconds: float
    reason: str = ""
    counterexample: FloatArray | None = None
    counterexample_class: int | None = None
    model_path: str | None = None
    model_sha256: str | None = None
    network: str = ""
    true_label: int | None = None
    falsifier: str | None = None
    falsifier_calls: int = 0
    dual: dict[str, Any] | None = None
    exact: bool | None = None
    epsilon: dict[str, Any] | None = None
    gmm: dict[str, Any] | None = None
    tool_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    # -- metrics ------------------------------------------------------------------------
    @property
    def apothem(self) -> float | None:
        return None if self.box is None else self.box.apothem(self.input, self.domain)

    @property
    def min_edge(self) -> float | None:
        return None if self.box is None else self.box.min_edge()

    @property
    def log_volume(self) -> float | None:
        return None if self.box is None else self.box.log_volume()

    @property
    def gap(self) -> float | None:
        """``apothem_upper_bound - apothem``: how far the apothem can be from the best."""
        a, u = self.apothem, self.apothem_upper_bound
        if a is None or u is None or math.isinf(a):
            return None
        return max(u - a, 0.0)

    def with_updates(self, **changes: Any) -> Certificate:
        return replace(self, **changes)

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        box = self.box
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tool": "parallelepipedonn",
            "tool_version": self.tool_version,
            "created": self.created,
            "status": self.status.value,
            "reason": self.reason,
            "model_path": self.model_path,
            "model_sha256": self.model_sha256,
            "network": self.network,
            "label": self.label,
            "predicted_label": self.predicted_label,
            "true_label": self.true_label,
            "input_shape": list(self.input_shape),
            "input": self.input.tolist(),
            "domain": {"lower": _array_or_scalar(self.domain.lower), "upper": _array_or_scalar(self.domain.upper)},
            "lower": None if box is None else box.lower.tolist(),
            "upper": None if box is None else box.upper.tolist(),
            "apothem": _num(self.apothem),
            "min_edge": _num(self.min_edge),
            "log_volume": _num(self.log_volume),
            "apothem_upper_bound": _num(self.apothem_upper_bound),
            "gap": _num(self.gap),
            "counterexample": None if self.counterexample is None else self.counterexample.tolist(),
            "counterexample_class": None if self.counterexample is None or self.counterexample_class is None
            else int(self.counterexample_class),
            "oracle": self.oracle,
            "oracle_settings": self.oracle_settings,
            "falsifier": self.falsifier,
            "algorithm": self.algorithm,
            "algorithm_settings": self.algorithm_settings,
            "oracle_calls": self.oracle_calls,
            "falsifier_calls": self.falsifier_calls,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "dual": self.dual,
            "exact": self.exact,
            "epsilon": self.epsilon,
            "gmm": self.gmm,
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> None:
        """Write the certificate as JSON, atomically."""
        atomic_write_bytes(Path(path), (self.to_json() + "\n").encode())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Certificate:
        def build(d: dict[str, Any]) -> Certificate:
            x = np.asarray(d["input"], dtype=np.float64)
            n = x.size
            dom = d["domain"]
            domain = Box(np.broadcast_to(np.asarray(dom["lower"], dtype=np.float64), (n,)),
                         np.broadcast_to(np.asarray(dom["upper"], dtype=np.float64), (n,)))
            box = None if d["lower"] is None else Box(d["lower"], d["upper"])
            cex = d.get("counterexample")
            cex_class = d.get("counterexample_class")  # absent from certificates written before it was recorded
            return cls(
                status=Status(d["status"]), label=int(d["label"]), predicted_label=int(d["predicted_label"]),
                input=x, input_shape=tuple(d["input_shape"]), domain=domain, box=box,
                apothem_upper_bound=_unnum(d.get("apothem_upper_bound")), oracle=d["oracle"],
                oracle_settings=d.get("oracle_settings", {}), algorithm=d["algorithm"],
                algorithm_settings=d.get("algorithm_settings", {}), oracle_calls=int(d["oracle_calls"]),
                rounds=int(d.get("rounds", 0)), seconds=float(d["seconds"]), reason=d.get("reason", ""),
                counterexample=None if cex is None else np.asarray(cex, dtype=np.float64),
                counterexample_class=None if cex is None or cex_class is None else int(cex_class),
                model_path=d.get("model_path"), model_sha256=d.get("model_sha256"), network=d.get("network", ""),
                true_label=d.get("true_label"), falsifier=d.get("falsifier"),
                falsifier_calls=int(d.get("falsifier_calls", 0)), dual=d.get("dual"), exact=d.get("exact"),
                epsilon=d.get("epsilon"), gmm=d.get("gmm"),
                tool_version=d.get("tool_version", ""),
                created=d.get("created", ""),
            )

        return parse_stored(d, FORMAT_NAME, FORMAT_VERSION, "certificate", build)

    @classmethod
    def load(cls, path: str | Path) -> Certificate:
        return cls.from_dict(read_json_object(path))


def parse_stored(d: dict[str, Any], name: str, version: int, what: str, build: Callable[[dict[str, Any]], T]) -> T:
    """``build(d)`` for a stored ``name`` document of a format version this tool reads;
    :class:`InputDataError` (naming ``what``) for another document or a missing or
    malformed field."""
    try:
        if d.get("format") != name:
            raise InputDataError(f"not a parallelepipedonn {what}")
        if int(d["format_version"]) > version:
            raise InputDataError(f"{what} format version {d['format_version']} is newer than this tool's")
        return build(d)
    except InputDataError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # (a JSON integer beyond float64: overflow)
        raise InputDataError(f"malformed {what}: {exc}") from exc


def read_json_object(path: str | Path, what: str = "certificate") -> dict[str, Any]:
    """The JSON object stored in ``path`` (:class:`InputDataError` if unreadable or not one)."""
    try:
        d = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputDataError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # (nesting beyond Python's stack)
        raise InputDataError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise InputDataError(f"{what} {str(path)!r} is not a JSON object")
    return d
