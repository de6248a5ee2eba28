"""Verify a property: a VNN-LIB file, or L-infinity robustness at a given radius.

The answers are VNN-COMP's: ``unsat`` (the property holds: proven — no unsafe input
exists), ``sat`` (a counterexample, confirmed), ``unknown``, ``timeout``. What counts:

* ``unsat`` only when an oracle VERIFIED every region of the property (its
  :class:`~parallelepipedonn.property_net.Reduction`: a proof about the region's box
  rounded outward, with the property's constants rounded toward the safe side), or when
  the assertions admit no unsafe point at all;
* ``sat`` only for a counterexample confirmed on the **original model** against the
  property's **own** (decimal, exact) constants: inside the input box and satisfying every
  output constraint of a disjunct of the unsafe set, decided in exact rational arithmetic
  on the model's float64 weights (:func:`exact_outputs`) — a verifier's candidate that
  fails this (one unit in the last place outside the box, a tie) is not a counterexample.
  Its coordinates are float64 numbers, except where an input's interval holds none (an
  input pinned to a decimal such as 0.3): there the exact value (or a finite decimal of the
  interval), and the point is evaluated exactly as such;
* ``timeout`` when the time ran out (a time-out answer, or no time left for a region)
  before anything was decided; ``unknown`` otherwise.

:func:`verify_property` answers a VNN-LIB property, :func:`verify_epsilon` the robustness
of an input at radius ``epsilon`` (the same answers: ``unsat`` = robust). Both return a
:class:`Verification`, stored as JSON (``parallelepipedonn-verification``, JSON Schema
``verification-v1.schema.json``) and re-checked by
:func:`parallelepipedonn.verify_recheck.recheck_verification`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oracles.base import Oracle, Verdict

from ._version import __version__
from .box import Box
from .certificate import _num, _unnum, parse_stored
from .certify import CertifyConfig, build_oracles, confirm_in_ball, resolve_domain
from .classifier import apply_final
from .counterexamples import (  # noqa: F401  (re-exported)
    Point,
    as_point,
    confirm_counterexample,
    exact_outputs,
    region_center,
    snap_to_region,
)
from .errors import ConfigError
from .exact_numbers import MAX_DECIMAL_PLACES, decimal_text, is_float64, to_float64
from .inputs import as_network_input
from .io_utils import atomic_write_bytes
from .network import Network
from .search.base import Status
from .vnnlib import VnnlibProperty, format_counterexample

if TYPE_CHECKING:
    from .graph import Graph

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

FORMAT_NAME = "parallelepipedonn-verification"
FORMAT_VERSION = 1

#: The oracle ``verify`` asks by default: CROWN first (most properties hold, and it is
#: cheaper than the attack on small nets; its screen also confirms a violating corner), the
#: attack (``sat``), alpha-CROWN, then branch and bound (complete).
DEFAULT_VERIFY_ORACLE = "crown+attack+alpha-crown+bab"
#: Models with at most :data:`FEW_INPUTS` inputs are asked :data:`FEW_INPUTS_ORACLE` instead
#: of the default: branch and bound on the input box (:mod:`oracles.input_split`) needs a
#: number of sub-boxes that grows exponentially with the number of inputs it splits, and
#: beats splitting ReLUs where there are few (ACAS Xu: 5). 16 leaves room for every input
#: to be halved a few times within the sub-box budget; beyond, the ReLU splits of ``bab``
#: are the better bet. CROWN before the attack, as in the default (the attack was first
#: until 2026-12-06: on nn4sys's 1-input 60,000-neuron model its 10,000 starts took 1.2 s
#: per input region where CROWN proves one in 0.04 s; a 50-region property, proven in 7 s,
#: timed out at 60 s).
FEW_INPUTS = 16
FEW_INPUTS_ORACLE = "crown+attack+input-split+bab"
#: ... whose attack, on so few inputs, starts from many random points (cheap: ACAS Xu's
#: properties 7 and 8 are falsified in about 1 s where 8 restarts of 40 steps found nothing
#: in 60 s; about 0.5 s more on a property that holds). Options the user gives win.
FEW_INPUTS_OPTIONS = {"attack.restarts": 10_000, "attack.steps": 10}
#: ... at most this many multiply-adds per step over all the random points (fewer points,
#: at least :data:`FEW_INPUTS_MIN_RESTARTS`, on wider nets): ACAS Xu's nets (13,000 per point)
#: keep 10,000 points; on VNN-COMP's tllverifybench nets (2 inputs, 0.9-45 M per point)
#: 10,000 took 12 s of a 37 s proof (profiled). The floor wins over the work on the widest.
FEW_INPUTS_ATTACK_WORK = 200_000_000
FEW_INPUTS_MIN_RESTARTS = 16
#: ... and, on chains of affine maps and ReLUs, whose crown stage uses forward-mode
#: intermediate bounds, as input-split does there by default (:mod:`oracles.forward`): on
#: tllverifybench's 6272-wide nets CROWN's own took seconds for the whole box.
FEW_INPUTS_CHAIN_OPTIONS = {"crown.intermediate": "forward"}


class Answer(str, enum.Enum):
    """VNN-COMP's answers."""

    UNSAT = "unsat"  # the property holds (proven)
    SAT = "sat"  # a confirmed counterexample
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"

    @property
    def status(self) -> Status:
        """The certificate vocabulary: unsat is ``certified``, sat ``not-robust``."""
        return {Answer.UNSAT: Status.CERTIFIED, Answer.SAT: Status.NOT_ROBUST}.get(self, Status.UNKNOWN)


@dataclass(frozen=True)
class VerifyConfig:
    """Which oracle (any name or cascade ``a+b+c``, with its options) and torch device.
    ``fallback`` (optional): the oracle used instead for a graph model that ``oracle``'s
    chain stages cannot read (a residual graph, or one whose dense expansion is too large),
    e.g. ``attack+crown`` when the default was not chosen by the user. ``few_inputs``
    (default :data:`FEW_INPUTS_ORACLE`): the oracle asked instead of the default one
    (:data:`DEFAULT_VERIFY_ORACLE`, and only that one) for a model with at most
    :data:`FEW_INPUTS` inputs; ``None``: never."""

    oracle: str = DEFAULT_VERIFY_ORACLE
    oracle_options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    fallback: str | None = None
    few_inputs: str | None = FEW_INPUTS_ORACLE

    def for_model(self, model: Network | Graph) -> tuple[VerifyConfig, str]:
        """This configuration, or its ``few_inputs`` or ``fallback`` oracle where the model
        needs it (and why)."""
        from oracles.chain import chain_network

        from .errors import ModelTooLargeError, OracleError
        from .property_net import reads_graphs

        if self.few_inputs is not None and self.oracle == DEFAULT_VERIFY_ORACLE and model.n_inputs <= FEW_INPUTS \
                and self._takes_options(self.few_inputs):
            note = f"{model.n_inputs} inputs: input splitting instead of the default {self.oracle}"
            log.info("%s", note)
            given = {k.rpartition(".")[2] for k in self.oracle_options if k.startswith("attack.") or "." not in k}
            options = {**FEW_INPUTS_OPTIONS, "attack.restarts": max(FEW_INPUTS_MIN_RESTARTS, min(
                FEW_INPUTS_OPTIONS["attack.restarts"], FEW_INPUTS_ATTACK_WORK // max(1, _forward_work(model))))}
            if isinstance(model, Network) or model.as_network() is not None:
                options.update(FEW_INPUTS_CHAIN_OPTIONS)
            defaults = {k: v for k, v in options.items() if k.rpartition(".")[2] not in given}
            return replace(self, oracle=self.few_inputs, few_inputs=None, fallback=None,
                           oracle_options={**defaults, **self.oracle_options}), note
        if self.fallback is None or isinstance(model, Network) or reads_graphs(self.oracle) or \
                model.as_network() is not None:
            return self, ""
        try:
            chain_network(model, self.oracle)  # the expansion is cached on the graph
        except (OracleError, ModelTooLargeError) as exc:
            note = f"{self.oracle} cannot read this model ({exc}): {self.fallback} used instead"
            log.info("%s", note)
            return replace(self, oracle=self.fallback, fallback=None), note
        return self, ""

    def within(self, timeout: float | None) -> VerifyConfig:
        """This configuration for a call with ``timeout`` seconds: unless the options set a
        ``time_limit`` (plain or ``stage.time_limit``), no stage keeps its own default limit
        (e.g. bab's 60 s), so the call's deadline alone bounds each stage, which gets what
        the earlier ones left."""
        if timeout is None or any(k.rpartition(".")[2] == "time_limit" for k in self.oracle_options):
            return self
        unlimited = replace(self, oracle_options={**self.oracle_options, "time_limit": None})
        return unlimited if unlimited._takes_options(self.oracle) else self

    def _takes_options(self, oracle: str) -> bool:
        from oracles.registry import stage_options

        try:
            stage_options(oracle, self.oracle_options)
        except ConfigError:
            return False
        return True

    def build(self, network: Network | Graph) -> Oracle:
        oracle, _ = build_oracles(network, CertifyConfig(oracle=self.oracle, oracle_options=self.oracle_options,
                                                         device=self.device, falsifier=None))
        return oracle


@dataclass(frozen=True, eq=False)
class Verification:
    """The answer to one property (see the module docstring), with what a recheck needs:
    the model (path and sha256), the ``property`` (``kind`` ``vnnlib``: its file, sha256
    and domain; ``epsilon``: the input, radius, label and domain), the confirmed
    ``counterexample`` and the model's float64 ``outputs`` there, and per region (input
    box) of the property what was asked and answered. ``counterexample_exact``: the
    counterexample's exact coordinates where some of them is no float64 number (an input
    pinned to 0.3); ``counterexample`` then holds the nearest float64 numbers (for display:
    not a counterexample itself) and ``outputs`` the exact outputs rounded to float64."""

    answer: Answer
    reason: str
    property: dict[str, Any]
    model_path: str | None
    model_sha256: str | None
    network: str
    input_shape: tuple[int, ...]
    oracle: str
    oracle_settings: dict[str, Any]
    counterexample: FloatArray | None
    outputs: FloatArray | None
    regions: tuple[dict[str, Any], ...]
    timeout: float | None
    seconds: float
    load_seconds: float | None = None
    tool_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    #: the model file's final Softmax / LogSoftmax that its IR drops (``outputs`` are the
    #: IR's scores, before it; the VNN-COMP result file applies it), or ""
    dropped_final: str = ""
    counterexample_exact: tuple[Fraction, ...] | None = None

    @property
    def point(self) -> Point | None:
        """The counterexample as confirmed: its exact coordinates, or the float64 ones."""
        return self.counterexample_exact if self.counterexample_exact is not None else self.counterexample

    @property
    def status(self) -> Status:
        return self.answer.status

    @property
    def queries(self) -> int:
        return sum(1 for r in self.regions if r.get("verdict") != "not asked")

    def vnncomp_result(self) -> str:
        """The result file of VNN-COMP: the answer on the first line, then, for ``sat``,
        the counterexample ``((X_0 v) ... (Y_0 v) ...)``."""
        text = f"{self.answer.value}\n"
        point = self.point
        if self.answer is Answer.SAT and point is not None and self.outputs is not None:
            text += format_counterexample(point, apply_final(self.dropped_final, self.outputs))
        return text

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool": "parallelepipedonn",
            "tool_version": self.tool_version, "created": self.created, "result": self.answer.value,
            "status": self.status.value, "reason": self.reason, "model_path": self.model_path,
            "model_sha256": self.model_sha256, "network": self.network, "input_shape": list(self.input_shape),
            "property": self.property, "oracle": self.oracle, "oracle_settings": self.oracle_settings,
            "counterexample": None if self.counterexample is None else self.counterexample.tolist(),
            "outputs": None if self.outputs is None else [_num(float(v)) for v in self.outputs],
            "dropped_final": self.dropped_final or None,
            "counterexample_exact": None if self.counterexample_exact is None else [
                None if is_float64(q) else decimal_text(q) for q in self.counterexample_exact],
            "regions": list(self.regions), "timeout": self.timeout, "seconds": self.seconds,
            **({} if self.load_seconds is None else {"load_seconds": self.load_seconds}),
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        atomic_write_bytes(Path(path), (self.to_json() + "\n").encode())

    def save_vnncomp(self, path: str | Path) -> None:
        """Write :meth:`vnncomp_result`, atomically."""
        atomic_write_bytes(Path(path), self.vnncomp_result().encode())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verification:
        def build(d: dict[str, Any]) -> Verification:
            cex, out = d.get("counterexample"), d.get("outputs")
            return cls(answer=Answer(d["result"]), reason=d.get("reason", ""), property=dict(d["property"]),
                       model_path=d.get("model_path"), model_sha256=d.get("model_sha256"),
                       network=d.get("network", ""), input_shape=tuple(d["input_shape"]), oracle=d["oracle"],
                       oracle_settings=d.get("oracle_settings", {}),
                       counterexample=None if cex is None else np.asarray(cex, dtype=np.float64),
                       outputs=None if out is None else np.asarray([_unnum(v) for v in out], dtype=np.float64),
                       regions=tuple(d.get("regions", ())), timeout=d.get("timeout"), seconds=float(d["seconds"]),
                       load_seconds=d.get("load_seconds"), tool_version=d.get("tool_version", ""), created=d.get("created", ""),
                       dropped_final=str(d.get("dropped_final") or ""),
                       counterexample_exact=_exact_point(d.get("counterexample_exact"), cex))

        return parse_stored(d, FORMAT_NAME, FORMAT_VERSION, "verification result", build)


def _forward_work(model: Network | Graph) -> int:
    """Multiply-adds of one forward pass of one point (its linear maps)."""
    if isinstance(model, Network):
        return sum(a.weight.size for a in model.affines)
    from . import graph_nodes as gn

    return sum(n.numel * n.fan_in for n in model.nodes if isinstance(n, gn.LinearNode) and not n.exact)


def load_model_file(path: str | Path) -> Network | Graph:
    """:func:`~parallelepipedonn.onnx_import.load_onnx` (which reads gzip-compressed
    models too), for VNN-LIB properties: a single-output (regression) model is read with
    a constant zero score after its output (``pad_outputs``)."""
    from .onnx_import import load_onnx

    return load_onnx(path, pad_outputs=True)


# -- the result file's exact counterexample ---------------------------------------------------------
def _exact_point(stored: Any, floats: Any) -> tuple[Fraction, ...] | None:
    """A stored ``counterexample_exact`` read back: per coordinate a finite decimal
    (a string), or null where the float64 one of ``counterexample`` is exact."""
    if stored is None:
        return None
    if not isinstance(stored, list) or floats is None or len(stored) != len(floats):
        raise ValueError("counterexample_exact is not a list of one entry per coordinate of the counterexample")
    out = []
    for v, f in zip(stored, floats):
        if v is None:
            if not isinstance(f, (int, float)) or not math.isfinite(f):
                raise ValueError(f"counterexample_exact: null over {f!r}, which is no finite number")
            out.append(Fraction(f))
        elif isinstance(v, str) and len(v) <= _DECIMAL_CHARS and _DECIMAL.fullmatch(v):
            out.append(Fraction(v))
        else:
            raise ValueError(f"counterexample_exact: {v[:40] if isinstance(v, str) else v!r} is not a decimal "
                             f"number (a string of at most {_DECIMAL_CHARS} characters) or null")
    return tuple(out)


_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_DECIMAL_CHARS = MAX_DECIMAL_PLACES + 405  # what decimal_text writes: sign, integer part below 10^400, places



# -- verification -------------------------------------------------------------------------------------
class _Clock:
    """The deadline ``timeout`` seconds after ``started`` (a :func:`time.perf_counter`
    reading; default now), and the time elapsed since now (the verification's own)."""

    def __init__(self, timeout: float | None, started: float | None = None) -> None:
        self.start = time.perf_counter()
        self.deadline = None if timeout is None else (self.start if started is None else started) + timeout

    @property
    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.perf_counter()

    @property
    def expired(self) -> bool:
        r = self.remaining
        return r is not None and r <= 0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _ask(oracle: Oracle, lower: FloatArray, upper: FloatArray, label: int, clock: _Clock):
    remaining = clock.remaining
    with oracle.time_limited(None if remaining is None else max(0.01, remaining)):
        return oracle.verify_box(lower, upper, label)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"the timeout must be a positive number of seconds, got {timeout}")


def check_property(model: Network | Graph, prop: VnnlibProperty, domain: Box | None = None) -> None:
    """What :func:`verify_property` refuses before verifying anything (``verify --check``
    and the VNN-COMP scripts' ``prepare_instance.sh`` run the same): a property whose
    numbers of inputs and outputs are not the model's or whose output constraints are not
    exact in float64 (:meth:`VnnlibProperty.check_model`), a constraint on what a final
    Softmax / LogSoftmax the model's IR dropped changes (:meth:`VnnlibProperty.check_final`),
    an input box outside ``domain`` (:meth:`VnnlibProperty.check_domain`) or outside the
    model's input range (``check_input_range``). Each a one-line error naming the line."""
    prop.check_model(model.n_inputs, model.n_outputs)
    if model.dropped_final:
        prop.check_final(model.dropped_final)
    if domain is not None:
        prop.check_domain(domain.lower, domain.upper)
    for k, region in enumerate(prop.regions):
        model.check_input_range(*region.outer_box(), what=f"the property's input box {k + 1}")


def verify_property(model: Network | Graph, prop: VnnlibProperty, *, config: VerifyConfig | None = None,
                    timeout: float | None = None, domain: Box | None = None, model_path: str | None = None,
                    model_sha256: str | None = None, property_sha256: str | None = None,
                    progress: Callable[[str], None] | None = None, started: float | None = None) -> Verification:
    """Answer the VNN-LIB property ``prop`` for ``model`` within ``timeout`` seconds (see
    the module docstring). ``domain`` (optional): every input box must lie in it
    (:class:`~parallelepipedonn.errors.PropertyError` naming the bound's line otherwise;
    :func:`check_property`). The regions (input boxes) are asked in turn; the first
    confirmed counterexample answers ``sat``. ``started`` (a :func:`time.perf_counter`
    reading; default: the call): when the ``timeout`` began (the command line's start: the
    time it took to load the model and read the property counts); where it has run out
    before verifying starts, the answer is ``timeout``."""
    _check_timeout(timeout)
    clock = _Clock(timeout, started)
    check_property(model, prop, domain)
    from .property_net import ReductionError, reduce_region

    config, note = (config or VerifyConfig()).within(timeout).for_model(model)
    records: list[dict[str, Any]] = []
    oracle_name, settings = config.oracle, {}
    timed_out = False

    def result(answer: Answer, reason: str, cex: Point | None = None) -> Verification:
        exact = None
        if isinstance(cex, tuple):  # exact coordinates: the nearest float64 numbers, the exact outputs rounded
            exact, cex = cex, np.array([to_float64(q) for q in cex], dtype=np.float64)
            outputs = np.array([to_float64(q) for q in exact_outputs(model, exact)], dtype=np.float64)
        else:
            outputs = None if cex is None else model.forward(cex)[0][:model.n_outputs]
        info = {"kind": "vnnlib", "path": prop.path, "sha256": property_sha256, "inputs": prop.n_inputs,
                "outputs": prop.n_outputs, "regions": len(prop.regions),
                "domain": None if domain is None else _domain_json(domain)}
        return Verification(answer, reason, info, model_path, model_sha256, model.describe(), model.input_shape,
                            oracle_name, {**settings, **({"note": note} if note else {})}, cex, outputs,
                            tuple(records), timeout, clock.elapsed, dropped_final=model.dropped_final,
                            counterexample_exact=exact)

    if clock.expired:  # (loading the model and reading the property took the time)
        records.extend({"index": k, "verdict": "not asked", "reason": "time out", "timed_out": True}
                       for k in range(len(prop.regions)))
        return result(Answer.TIMEOUT, "the time ran out before verifying started (loading the model and the "
                      "property)")
    if not prop.regions:
        return result(Answer.UNSAT, "the assertions admit no unsafe point")
    setup = 0.0  # how long the last region's reduction and oracle took to build
    for k, region in enumerate(prop.regions):
        left = clock.remaining
        if clock.expired or (left is not None and left < setup):  # (no time to build this one's and ask)
            timed_out = True
            records.append({"index": k, "verdict": "not asked", "reason": "time out", "timed_out": True})
            continue
        if progress is not None:
            progress(f"region {k + 1} of {len(prop.regions)}")
        start = time.perf_counter()
        if any(not d for d in region.disjuncts):  # every point of the box is unsafe
            cex = confirm_counterexample(model, region, region_center(region))
            records.append({"index": k, "verdict": "falsified" if cex is not None else "unknown", "form": "trivial",
                            "reason": "every point of the box is unsafe", "timed_out": False,
                            "seconds": time.perf_counter() - start})
            if cex is not None:
                return result(Answer.SAT, f"every point of input box {k + 1} is unsafe (its center, confirmed)", cex)
            continue
        try:
            reduction = reduce_region(model, region, config.oracle, prop.path)
        except ReductionError as exc:
            records.append({"index": k, "verdict": "unknown", "reason": str(exc), "timed_out": False,
                            "seconds": time.perf_counter() - start})
            continue
        if clock.expired:  # building the reduction took the time that was left
            timed_out = True
            records.append({"index": k, "verdict": "not asked", "reason": "time out", "timed_out": True,
                            "seconds": time.perf_counter() - start})
            continue
        oracle = config.build(reduction.network)
        oracle_name, settings = oracle.name, oracle.settings()
        setup = time.perf_counter() - start
        if clock.expired:  # building the oracle took the time that was left
            timed_out = True
            records.append({"index": k, "verdict": "not asked", "reason": "time out", "timed_out": True,
                            "seconds": setup})
            continue
        answer = _ask(oracle, reduction.lower, reduction.upper, reduction.label, clock)
        record = {"index": k, "verdict": answer.verdict.value, **reduction.describe(), "reason": answer.reason,
                  "margin": answer.margin if answer.margin is None or np.isfinite(answer.margin) else None,
                  "timed_out": bool(answer.timed_out), "seconds": time.perf_counter() - start}
        if answer.verdict is Verdict.FALSIFIED:
            cex = confirm_counterexample(model, region, answer.counterexample)
            if cex is not None:
                records.append(record)
                return result(Answer.SAT, f"{oracle.name} found a counterexample in input box {k + 1}, confirmed "
                              "exactly against the property", cex)
            record = {**record, "verdict": "unknown",
                      "reason": "a counterexample of the reduction that the property's own constants do not confirm"}
        records.append(record)
        if answer.verdict is Verdict.UNKNOWN and (answer.timed_out or clock.expired):
            timed_out = True
    if all(r["verdict"] == "verified" for r in records):
        return result(Answer.UNSAT, f"{oracle_name} verified every input box ({len(records)})")
    if timed_out:
        return result(Answer.TIMEOUT, "the time ran out before every input box was decided")
    open_ = [r for r in records if r["verdict"] != "verified"]
    return result(Answer.UNKNOWN, f"{len(open_)} of {len(records)} input box(es) undecided: {open_[0]['reason']}")


def _domain_json(domain: Box) -> dict[str, Any]:
    def one(a: FloatArray) -> float | list[float]:
        return float(a[0]) if a.size and (a == a[0]).all() else a.tolist()

    return {"lower": one(domain.lower), "upper": one(domain.upper)}


def verify_epsilon(model: Network | Graph, x: ArrayLike, epsilon: float, *, label: int | None = None,
                   domain: Box | None = None, config: VerifyConfig | None = None, timeout: float | None = None,
                   model_path: str | None = None, model_sha256: str | None = None,
                   started: float | None = None) -> Verification:
    """Is ``model`` robust at radius ``epsilon`` around ``x`` for ``label`` (default: its
    prediction), within ``domain`` (default ``[0, 1]^n``)? ``unsat``: every point of the
    ball (rounded outward, :meth:`Box.outer_cube`) is classified ``label`` with a strictly
    larger logit, proven; ``sat``: a confirmed point of the exact ball is not.
    ``started``: as for :func:`verify_property`."""
    _check_timeout(timeout)
    model.check_classifier("robustness at epsilon")
    if not (epsilon > 0 and np.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a positive number, got {epsilon}")
    clock = _Clock(timeout, started)
    dom = resolve_domain(domain, model)
    xa = as_network_input(np.asarray(x, dtype=np.float64), model.input_shape, dom)
    predicted = int(model.predict(xa)[0])
    label = predicted if label is None else model.check_label(label)
    info = {"kind": "epsilon", "input": xa.tolist(), "epsilon": float(epsilon), "label": label,
            "predicted_label": predicted, "domain": _domain_json(dom)}
    config, note = (config or VerifyConfig()).within(timeout).for_model(model)
    records: list[dict[str, Any]] = []
    oracle_name, settings = config.oracle, {}

    def result(answer: Answer, reason: str, cex: FloatArray | None = None) -> Verification:
        outputs = None if cex is None else model.forward(cex)[0]
        return Verification(answer, reason, info, model_path, model_sha256, model.describe(), model.input_shape,
                            oracle_name, {**settings, **({"note": note} if note else {})}, cex, outputs,
                            tuple(records), timeout, clock.elapsed, dropped_final=model.dropped_final)

    if clock.expired:
        return result(Answer.TIMEOUT, "the time ran out before verifying started (loading the model and the input)")
    if model.misclassified(xa, label)[0]:
        why = f"classifies it as {predicted}" if predicted != label else "has a tie there"
        return result(Answer.SAT, f"the input itself is a counterexample: the network {why}, not strictly {label}",
                      xa)
    ball = Box.outer_cube(xa, epsilon, dom)
    oracle = config.build(model)
    oracle_name, settings = oracle.name, oracle.settings()
    if clock.expired:  # building the oracle took the time that was left
        records.append({"index": 0, "verdict": "not asked", "reason": "time out", "timed_out": True,
                        "seconds": clock.elapsed})
        return result(Answer.TIMEOUT, "the time ran out while the oracle was built")
    answer = _ask(oracle, ball.lower, ball.upper, label, clock)
    records.append({"index": 0, "verdict": answer.verdict.value, "form": "robustness", "label": label,
                    "reason": answer.reason, "timed_out": bool(answer.timed_out), "seconds": clock.elapsed,
                    "margin": answer.margin if answer.margin is None or np.isfinite(answer.margin) else None})
    if answer.verdict is Verdict.VERIFIED:
        return result(Answer.UNSAT, f"{oracle.name} verified the ball")
    if answer.verdict is Verdict.FALSIFIED:
        cex = confirm_in_ball(model, xa, epsilon, dom, label, answer.counterexample)
        if cex is not None:
            return result(Answer.SAT, f"{oracle.name} found a counterexample in the ball, confirmed", cex)
        return result(Answer.UNKNOWN, f"{oracle.name}'s counterexample lies just outside the exact ball")
    if answer.timed_out or clock.expired:
        return result(Answer.TIMEOUT, f"{oracle.name} ran out of time: {answer.reason}")
    return result(Answer.UNKNOWN, answer.reason or f"{oracle.name} could not decide")


__all__ = ["DEFAULT_VERIFY_ORACLE", "FEW_INPUTS", "FEW_INPUTS_OPTIONS", "FEW_INPUTS_ORACLE", "FORMAT_NAME",
           "FORMAT_VERSION", "Answer", "Point", "Verification", "VerifyConfig", "as_point", "check_property",
           "confirm_counterexample", "exact_outputs", "load_model_file", "snap_to_region", "verify_epsilon",
           "verify_property"]
