"""Re-verify a stored certificate or dual box: the function behind ``parallelepipedonn recheck``.

A stored file is first validated against the JSON Schema of its format
(``parallelepipedonn/schemas``; a file that does not conform is a usage error naming the
field). A stored result is then checked against the model file it names (or another one given, which
must have the same sha256) with an oracle of the user's choice, independently of how it
was computed:

* a **certificate** — its geometry (the input lies in the box, the box in the domain,
  the stored apothem, min edge and log-volume are those of the box), its counterexample
  (inside the domain, misclassified by a float64 forward pass, no farther than the stored
  apothem upper bound), and, when it says ``certified``, the box itself: the oracle must
  answer ``VERIFIED`` (a ``FALSIFIED`` answer refutes it with a confirmed counterexample);
* the **closed-form radii** of a latent-mixture classifier's certificate (its ``gmm``
  section, ``parallelepipedonn gmm certify``) — recomputed from the model file: each stored
  radius must be at most the recomputed proven one; one beyond a linear classifier's exact
  radius is refuted by the confirmed counterexample there
  (:func:`parallelepipedonn.gmm.certify.recheck_closed_form`);
* a **dual box** — its region (the domain, or its intersection with the ball of the
  stored radius around the stored centre) and the class-region query: the oracle must
  prove that no point of the region classified ``label`` lies outside the box (``NONE``,
  asked with tolerance 0); a witness refutes it once a forward pass confirms it (in the
  region, outside the box, classified ``label`` in exact arithmetic near ties);
* a **verification** (``verify --json``) — against its model and, for a VNN-LIB property,
  its property file (found as the model is; its sha256 must be the recorded one): ``sat``
  needs its counterexample confirmed exactly, ``unsat`` the oracle to verify every input
  box again (:func:`parallelepipedonn.verify.recheck_verification`).

Anything the oracle cannot decide (``UNKNOWN``, time-out) is reported as undecided,
never as confirmed.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from oracles.base import Oracle, RegionVerdict, Verdict
from oracles.registry import require_queries

from .box import Box
from .certificate import FORMAT_NAME as CERTIFICATE_FORMAT
from .certificate import FORMAT_VERSION as CERTIFICATE_VERSION
from .certificate import Certificate, json_schema, read_json_object
from .certify import CertifyConfig, build_oracles
from .dual import FORMAT_NAME as DUAL_FORMAT
from .dual import FORMAT_VERSION as DUAL_VERSION
from .dual import DualBox
from .errors import ConfigError, InputDataError, ModelError, ModelMismatchError
from .io_utils import sha256_file
from .network import Network
from .search.base import Status
from .verify import FORMAT_NAME as VERIFICATION_FORMAT
from .verify import FORMAT_VERSION as VERIFICATION_VERSION
from .verify import Verification, VerifyConfig, load_model_file, recheck_verification

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

#: The default oracle of a recheck: complete (exact MILP with HiGHS).
DEFAULT_RECHECK_ORACLE = "milp"

#: Relative tolerance when comparing a stored metric with the one recomputed from the box
#: (JSON keeps float64 exactly, so they agree unless the file was edited).
_METRIC_RTOL = 1e-12


class Outcome(str, enum.Enum):
    """The outcome of a recheck."""

    CONFIRMED = "confirmed"  # every claim re-verified
    REFUTED = "refuted"  # some claim is false (a counterexample in the box, a box outside the domain, ...)
    UNDECIDED = "undecided"  # the oracle could not decide (UNKNOWN, time-out)


@dataclass(frozen=True, eq=False)
class Recheck:
    """What a recheck found. ``counterexample`` (with its L-infinity ``distance`` from
    the input and its ``logits``) is a confirmed point that refutes the claim, when one
    was found."""

    outcome: Outcome
    kind: str  # "certificate" or "dual box"
    claim: str  # what was rechecked, in words
    reason: str  # why this outcome
    oracle: str | None
    model_path: str
    label: int
    checks: tuple[str, ...] = ()  # the claims that held
    counterexample: FloatArray | None = None
    distance: float | None = None
    logits: FloatArray | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def confirmed(self) -> bool:
        return self.outcome is Outcome.CONFIRMED


#: Per stored format: its kind of JSON Schema (:func:`~parallelepipedonn.certificate.json_schema`),
#: the format version the schema describes, and its name in messages.
_FORMATS = {CERTIFICATE_FORMAT: ("certificate", CERTIFICATE_VERSION, "certificate"),
            DUAL_FORMAT: ("dual", DUAL_VERSION, "dual box"),
            VERIFICATION_FORMAT: ("verification", VERIFICATION_VERSION, "verification result")}

Stored = Certificate | DualBox | Verification


def _parse(d: dict[str, Any]) -> Stored:
    fmt = d["format"]
    return (Certificate.from_dict(d) if fmt == CERTIFICATE_FORMAT else DualBox.from_dict(d) if fmt == DUAL_FORMAT
            else Verification.from_dict(d))


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, allow_nan=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def validate_stored(d: dict[str, Any], where: str) -> None:
    """Validate a stored certificate or dual box (``d``, of a known ``format``) against the
    JSON Schema of its format: :class:`InputDataError` naming the first offending field
    (``where`` names the file, or the list item). A format version newer than the schema's
    is left to the reader (which refuses it, saying so)."""
    kind, version, what = _FORMATS[d["format"]]
    found = d.get("format_version")
    if isinstance(found, int) and not isinstance(found, bool) and found > version:
        return
    try:
        import jsonschema
    except ImportError as exc:  # a runtime dependency: an incomplete installation
        raise ConfigError("recheck validates files with jsonschema, which is not installed "
                          "(pip install jsonschema)") from exc
    validator = jsonschema.Draft202012Validator(json_schema(kind))
    error = jsonschema.exceptions.best_match(validator.iter_errors(d))
    if error is None:
        return
    field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message, shown = error.message, repr(error.instance)
    if message.startswith(shown):  # jsonschema's messages start with the value, whole: shorten it
        message = _short(error.instance) + message[len(shown):]
    if len(message) > 200:
        message = message[:197] + "..."
    raise InputDataError(f"{where} is not a valid {what} (schema {json_schema(kind)['$id']}): "
                         f"field {field!r}: {message}")


def load_stored(path: str | Path) -> tuple[Stored, dict[str, Any]]:
    """The certificate, dual box or verification result stored in ``path`` (told apart by
    its ``format``, then validated against its JSON Schema), and the raw JSON object."""
    d = read_json_object(path, "certificate")
    fmt = d.get("format")
    if fmt not in _FORMATS:
        raise InputDataError(f"{str(path)!r} is neither a parallelepipedonn certificate, a dual box nor a "
                             f"verification result (format {fmt!r})")
    validate_stored(d, repr(str(path)))
    return _parse(d), d


def load_stored_list(path: str | Path) -> list[tuple[Stored, dict[str, Any]]]:
    """What :func:`load_stored` reads, for a file holding one result or a JSON list of them."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        d = None  # load_stored reports it
    if not isinstance(d, list):
        return [load_stored(path)]
    if not d:
        raise InputDataError(f"{str(path)!r} holds an empty list")
    items = []
    for k, item in enumerate(d):
        fmt = item.get("format") if isinstance(item, dict) else None
        if fmt not in _FORMATS:
            raise InputDataError(f"item {k} of {str(path)!r} is neither a parallelepipedonn certificate, a dual "
                                 f"box nor a verification result (format {fmt!r})")
        validate_stored(item, f"item {k} of {str(path)!r}")
        items.append((_parse(item), item))
    return items


def resolve_model(stored: Stored, model: str | Path | None, stored_in: Path | None) -> Path:
    """The model file to recheck against: ``model`` if given, else the one the result
    names (a relative path is tried from the working directory, then from ``stored_in``)."""
    if model is not None:
        return Path(model)
    if not stored.model_path:
        raise ConfigError("the certificate names no model file: give one with --model M.onnx")
    return _stored_path(stored.model_path, stored_in)


def _stored_path(name: str, stored_in: Path | None) -> Path:
    path = Path(name)
    if not path.is_absolute() and not path.exists() and stored_in is not None and (stored_in / path).exists():
        return stored_in / path
    return path


def check_model_hash(path: Path, expected: str | None) -> str | None:
    """Raise :class:`ModelMismatchError` unless the sha256 of ``path`` is ``expected``
    (``None``: the result records no hash; a note is returned instead)."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read model {str(path)!r}: {exc.strerror or exc}") from exc
    if expected is None:
        note = "the certificate records no model sha256: the box is rechecked against the model given"
        log.warning(note)
        return note
    if actual != expected.lower():
        raise ModelMismatchError(f"model {str(path)!r} has sha256 {actual[:16]}..., the certificate was made with "
                                 f"{expected[:16]}...: refusing to recheck against another model")
    return None


def make_recheck_oracle(network: Network, name: str, time_limit: float | None, device: str) -> Oracle:
    """The oracle ``name`` (any registered name or cascade) bound to ``network``."""
    options = {} if time_limit is None else {"time_limit": time_limit}
    oracle, _ = build_oracles(network, CertifyConfig(oracle=name, oracle_options=options, device=device,
                                                     falsifier=None))
    return oracle


def recheck(stored: Stored | str | Path, *, model: str | Path | None = None,
            oracle: str = DEFAULT_RECHECK_ORACLE, time_limit: float | None = None, device: str = "cpu",
            network: Network | None = None) -> Recheck:
    """Re-verify a stored certificate, dual box or verification result (a path to its
    JSON, or the object).

    ``model`` (a path) replaces the model file the result names; its sha256 must match
    the recorded one (else :class:`ModelMismatchError`). ``oracle`` is any registered
    oracle name or cascade (``time_limit`` per query, seconds). ``network``, if given,
    is used instead of loading the model file (which is still hashed).
    """
    raw: dict[str, Any] | None = None
    stored_in = None
    if isinstance(stored, (str, Path)):
        stored_in = Path(stored).parent
        stored, raw = load_stored(stored)
    check_oracle_answers(oracle, [stored])
    return _recheck_one(stored, raw, stored_in, model, oracle, time_limit, device, network)


def check_oracle_answers(oracle: str, stored: list[Stored]) -> None:
    """A :class:`ConfigError` before any work if the oracle cannot answer what rechecking
    ``stored`` needs: dual boxes need class-region queries (an empty one, the
    coordinate-extreme query)."""
    needed = {"class_region" if d.box is not None else "coordinate_extreme" for d in stored if isinstance(d, DualBox)}
    if needed:
        require_queries(oracle, needed, "rechecking a dual box")


def recheck_all(path: str | Path, *, model: str | Path | None = None, oracle: str = DEFAULT_RECHECK_ORACLE,
                time_limit: float | None = None, device: str = "cpu") -> list[Recheck]:
    """Re-verify every result stored in ``path``: one certificate or dual box, or a JSON
    list of them (``compare --json`` writes one), each as :func:`recheck` would. The
    network is loaded once per model file."""
    path = Path(path)
    items = load_stored_list(path)
    check_oracle_answers(oracle, [stored for stored, _ in items])
    networks: dict[Path, Network] = {}
    results = []
    for stored, raw in items:
        model_path = resolve_model(stored, model, path.parent)
        if model_path not in networks:
            check_model_hash(model_path, stored.model_sha256)
            networks[model_path] = load_model_file(model_path)
        results.append(_recheck_one(stored, raw, path.parent, model, oracle, time_limit, device,
                                    networks[model_path]))
    return results


def _recheck_one(stored: Stored, raw: dict[str, Any] | None, stored_in: Path | None,
                 model: str | Path | None, oracle: str, time_limit: float | None, device: str,
                 network: Network | None) -> Recheck:
    start = time.perf_counter()
    model_path = resolve_model(stored, model, stored_in)
    notes = [n for n in [check_model_hash(model_path, stored.model_sha256)] if n]
    net = network if network is not None else load_model_file(model_path)
    if isinstance(stored, Verification):
        result = _recheck_verification(stored, net, stored_in, oracle, time_limit, device)
        label = int(stored.property.get("label", 0))
        return Recheck(**{**result, "model_path": str(model_path), "label": label,
                          "seconds": time.perf_counter() - start, "notes": tuple(notes)})
    label = net.check_label(stored.label)
    if isinstance(stored, Certificate):
        result = _recheck_certificate(stored, raw, net, label, oracle, time_limit, device, model_path)
        if stored.epsilon is not None and result["outcome"] is Outcome.CONFIRMED:
            result = _recheck_epsilon(stored, net, label, oracle, time_limit, device, result)
    else:
        result = _recheck_dual(stored, net, label, oracle, time_limit, device)
    return Recheck(**{**result, "model_path": str(model_path), "label": label, "seconds": time.perf_counter() - start,
                      "notes": tuple(notes) + tuple(result.get("notes", ()))})


# -- certificates ------------------------------------------------------------------------------
class _Refuted(Exception):
    """A claim of the stored result is false (internal control flow)."""

    def __init__(self, reason: str, point: FloatArray | None = None) -> None:
        super().__init__(reason)
        self.point = point


def _close(claimed: Any, actual: float | None) -> bool:
    """Whether a stored metric (a number, ``"inf"``/``"-inf"`` or ``None``) is ``actual``."""
    if claimed is None or actual is None:
        return claimed is None and actual is None
    value = float(claimed)
    if math.isinf(value) or math.isinf(actual):
        return value == actual
    return abs(value - actual) <= _METRIC_RTOL * max(abs(value), abs(actual), 1e-300)


def _check_geometry(cert: Certificate, raw: dict[str, Any] | None, net: Network) -> list[str]:
    """The certificate's geometric claims (raises :class:`_Refuted`); the checks done."""
    x, dom, box = cert.input, cert.domain, cert.box
    if x.size != net.n_inputs:
        raise InputDataError(f"the certificate's input has {x.size} values, the network {net.n_inputs} inputs")
    if not dom.contains(x):
        raise _Refuted("the input is not inside the certificate's domain")
    checks = ["input in domain"]
    if box is not None:
        if box.n != x.size:
            raise InputDataError(f"the certificate's box has {box.n} dimensions, its input {x.size}")
        if not box.contains(x):
            raise _Refuted("the box does not contain the input")
        if not dom.contains_box(box):
            raise _Refuted("the box is not inside the domain")
        checks += ["input in box", "box in domain"]
    if raw is not None:
        for key, actual in (("apothem", cert.apothem), ("min_edge", cert.min_edge), ("log_volume", cert.log_volume)):
            if not _close(raw.get(key), actual):
                raise _Refuted(f"the stored {key} {raw.get(key)} is not the box's ({actual})")
        if "gap" in raw and not _close(raw.get("gap"), cert.gap):
            raise _Refuted(f"the stored gap {raw.get('gap')} is not the apothem upper bound minus the apothem "
                           f"({cert.gap})")
        checks.append("apothem, min edge, log-volume and gap are the box's")
    predicted = int(net.predict(x)[0])
    if predicted != cert.predicted_label:
        raise _Refuted(f"the network predicts {predicted} at the input, not {cert.predicted_label}")
    return checks


def _check_counterexample(cert: Certificate, net: Network) -> list[str]:
    """A stored counterexample must be a misclassified point of the domain (confirmed as
    the oracles confirm theirs: float64, exact arithmetic near the boundary), no farther
    from the input than the stored apothem upper bound, of the stored class if one is."""
    cex = cert.counterexample
    if cex is None:
        return []
    if cex.size != cert.input.size:
        raise InputDataError(f"the counterexample has {cex.size} values, the input {cert.input.size}")
    if not cert.domain.contains(cex):
        raise _Refuted("the counterexample is not inside the domain", cex)
    margin = float(net.margins(cex, cert.label)[0])
    if not net.misclassified(cex, cert.label)[0]:
        raise _Refuted(f"the counterexample is classified {cert.label} (margin {margin:.3g} > 0)", cex)
    if cert.status is Status.CERTIFIED and cert.box is not None and cert.box.contains(cex):
        raise _Refuted("the certificate's own counterexample lies inside its box", cex)
    stored = cert.counterexample_class
    if stored is not None:  # the class recorded for it (absent from older certificates)
        logits = net.forward(cex)[0]
        best = float(np.delete(logits, cert.label).max())
        # a near tie between two other classes may be ordered differently by another float64 pass
        with np.errstate(over="ignore", invalid="ignore"):
            tie = 2 * float(net.margin_errors(cex, cert.label)[1][0]) + _METRIC_RTOL * max(1.0, abs(best))
        tie = tie if math.isfinite(tie) else math.inf
        if not (0 <= stored < logits.size and stored != cert.label and logits[stored] >= best - tie):
            actual = int(np.argmax(np.where(np.arange(logits.size) == cert.label, -np.inf, logits)))
            raise _Refuted(f"the counterexample is classified {actual}, not {stored} as stored", cex)
    distance = float(np.abs(cex - cert.input).max())
    cls = "" if stored is None else f"class {stored}, "
    return [f"counterexample confirmed ({cls}distance {distance:.6g}, margin {margin:.3g})"]


def _unproven_bounds(cert: Certificate) -> list[str]:
    """The claims about the best apothem that the file does not prove: ``apothem_upper_bound``
    is proven by the counterexample (no farther from the input; confirmed by
    :func:`_check_counterexample`), else it rests on the stored dual box's bound, which is
    not rechecked (returned, for an undecided outcome); without either it is refuted.
    ``exact`` claims the apothem within the algorithm's precision of that bound."""
    bound = cert.apothem_upper_bound
    if bound is None or math.isinf(bound):
        unproven = []
    elif cert.counterexample is not None and \
            float(np.abs(cert.counterexample - cert.input).max()) <= bound * (1 + _METRIC_RTOL) + 1e-300:
        unproven = []
    elif (cert.dual or {}).get("apothem_bound") is not None:
        unproven = [f"the apothem upper bound {bound:.6g} rests on the stored dual box's bound, which is not rechecked"]
    elif cert.counterexample is not None:
        raise _Refuted(f"the counterexample is at distance {float(np.abs(cert.counterexample - cert.input).max()):.6g}"
                       f", beyond the stored apothem upper bound {bound:.6g}", cert.counterexample)
    else:
        raise _Refuted(f"the stored apothem upper bound {bound:.6g} comes without the counterexample that would "
                       "prove it")
    if cert.exact:
        settings = cert.algorithm_settings or {}
        a, precision = cert.apothem, settings.get("rel_precision")  # the exact search's (relative)
        if a is not None and not math.isinf(a):
            if bound is None or math.isinf(bound):
                raise _Refuted("the certificate claims its apothem is the best one (exact), with no apothem upper "
                               "bound to show it")
            if precision is None:
                unproven.append("the certificate claims its apothem is the best one (exact), with no relative "
                                "precision recorded to check it against")
            elif bound - a > float(precision) * bound * (1 + _METRIC_RTOL):
                raise _Refuted(f"the certificate claims its apothem {a:.6g} is the best one (exact) to precision "
                               f"{precision:g}, but its apothem upper bound is {bound:.6g}")
    return unproven


def _recheck_certificate(cert: Certificate, raw: dict[str, Any] | None, net: Network, label: int, oracle_name: str,
                         time_limit: float | None, device: str, model_path: Path | None = None) -> dict[str, Any]:
    """Every claim of a certificate: its geometry, counterexample and box
    (:func:`_recheck_claims`), and the closed-form radii of a latent-mixture classifier's
    certificate (its ``gmm`` section), recomputed from the model file."""
    result = _recheck_claims(cert, raw, net, label, oracle_name, time_limit, device)
    if cert.gmm is None or result["outcome"] is Outcome.REFUTED:
        return result
    part = _recheck_gmm(cert, model_path, label)
    checks = tuple(result.get("checks", ())) + part.checks
    if part.outcome == "refuted":
        return {**result, **_refutation(net, cert.input, label, f"closed form: {part.reason}", part.point),
                "checks": checks}
    if part.outcome == "undecided" and result["outcome"] is Outcome.CONFIRMED:
        return {**result, "outcome": Outcome.UNDECIDED, "checks": checks, "reason": f"closed form: {part.reason}"}
    return {**result, "checks": checks}


def _recheck_gmm(cert: Certificate, model_path: Path | None, label: int):
    """The closed-form part of a latent-mixture classifier's certificate, recomputed from
    the model file (:func:`parallelepipedonn.gmm.certify.recheck_closed_form`)."""
    from .gmm.certify import ClosedFormCheck, recheck_closed_form
    from .gmm.model import load_gmm

    if model_path is None:
        return ClosedFormCheck("undecided", (), "no model file to recompute the closed-form radii from")
    try:
        classifier = load_gmm(model_path)
    except ModelError as exc:
        return ClosedFormCheck("refuted", (), f"the certificate has closed-form radii of a latent-mixture classifier, "
                               f"but {exc}")
    return recheck_closed_form(cert.gmm or {}, classifier, cert.input, label, cert.domain)


def _recheck_claims(cert: Certificate, raw: dict[str, Any] | None, net: Network, label: int, oracle_name: str,
                    time_limit: float | None, device: str) -> dict[str, Any]:
    claim = (f"the box is robust for label {label}" if cert.status is Status.CERTIFIED
             else f"the input is not robust for label {label}" if cert.status is Status.NOT_ROBUST
             else "nothing proven (status unknown)")
    out: dict[str, Any] = {"kind": "certificate", "claim": claim, "oracle": None}
    notes = []
    try:
        checks = _check_geometry(cert, raw, net) + _check_counterexample(cert, net)
        unproven = _unproven_bounds(cert)
    except _Refuted as exc:
        return {**out, **_refutation(net, cert.input, label, str(exc), exc.point)}
    if cert.status is Status.NOT_ROBUST and cert.counterexample is None:
        return {**out, "outcome": Outcome.REFUTED, "reason": "a not-robust certificate without a counterexample",
                "checks": tuple(checks)}
    if cert.dual is not None and cert.dual.get("apothem_bound") is not None and not unproven:
        notes.append("the apothem bound of the stored dual box is not rechecked")
    if unproven and cert.status is not Status.CERTIFIED:
        return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks), "notes": tuple(notes),
                "reason": "; ".join(unproven)}
    if cert.status is not Status.CERTIFIED:
        return {**out, "outcome": Outcome.CONFIRMED, "checks": tuple(checks), "notes": tuple(notes),
                "reason": "the counterexample is confirmed by a forward pass" if cert.counterexample is not None
                else "the certificate claims no certified box"}
    if cert.box is None:
        return {**out, "outcome": Outcome.REFUTED, "reason": "a certified certificate without a box",
                "checks": tuple(checks)}
    oracle = make_recheck_oracle(net, oracle_name, time_limit, device)
    out["oracle"] = oracle.name
    answer = oracle.verify_box(cert.box.lower, cert.box.upper, label)
    if answer.verdict is Verdict.VERIFIED:
        margin = "" if answer.margin is None else f", margin >= {answer.margin:.3g}"
        if unproven:
            return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks + [f"box verified by {oracle.name}"]),
                    "notes": tuple(notes), "reason": "; ".join(unproven)}
        return {**out, "outcome": Outcome.CONFIRMED, "checks": tuple(checks + [f"box verified by {oracle.name}"]),
                "reason": f"{oracle.name} verified the box{margin}", "notes": tuple(notes)}
    if answer.verdict is Verdict.FALSIFIED:
        return {**out, "checks": tuple(checks), **_refutation(
            net, cert.input, label, f"{oracle.name} found a counterexample inside the box", answer.counterexample)}
    return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks), "notes": tuple(notes),
            "reason": f"{oracle.name} could not decide{' (time-out)' if answer.timed_out else ''}: {answer.reason}"}


def _recheck_epsilon(cert: Certificate, net: Network, label: int, oracle_name: str, time_limit: float | None,
                     device: str, result: dict[str, Any]) -> dict[str, Any]:
    """The ``epsilon`` claim of a certificate whose other claims were confirmed: ``certified``
    needs the ball (rounded outward) inside the rechecked box or verified by the oracle;
    ``not-robust`` needs the (rechecked) counterexample inside the exact ball."""
    from .certify import confirm_in_ball, within_distance

    assert cert.epsilon is not None
    eps, claim = float(cert.epsilon["epsilon"]), cert.epsilon["status"]
    checks = tuple(result.get("checks", ()))
    if claim == Status.NOT_ROBUST.value:
        if cert.counterexample is None or not within_distance(cert.counterexample, cert.input, eps):
            return {**result, "outcome": Outcome.REFUTED,
                    "reason": f"the certificate says not robust at epsilon {eps:g}, but its counterexample is not "
                    "within that distance"}
        return {**result, "checks": checks + (f"counterexample within epsilon {eps:g}",)}
    if claim != Status.CERTIFIED.value:
        return result
    ball = Box.outer_cube(cert.input, eps, cert.domain)
    if cert.status is Status.CERTIFIED and cert.box is not None and cert.box.contains_box(ball):
        return {**result, "checks": checks + (f"the ball of radius {eps:g} lies in the box",)}
    oracle = make_recheck_oracle(net, oracle_name, time_limit, device)
    answer = oracle.verify_box(ball.lower, ball.upper, label)
    if answer.verdict is Verdict.VERIFIED:
        return {**result, "checks": checks + (f"the ball of radius {eps:g} verified by {oracle.name}",)}
    if answer.verdict is Verdict.FALSIFIED:
        cex = confirm_in_ball(net, cert.input, eps, cert.domain, label, answer.counterexample)
        if cex is not None:
            return {**result, **_refutation(net, cert.input, label, f"{oracle.name} found a counterexample in the "
                                            f"ball of radius {eps:g} the certificate says is certified", cex)}
    return {**result, "outcome": Outcome.UNDECIDED,
            "reason": f"{oracle.name} could not decide the ball of radius {eps:g}: {answer.reason}"}


def _refutation(net: Network, x: FloatArray | None, label: int, reason: str,
                point: FloatArray | None) -> dict[str, Any]:
    """A refuted outcome, with the refuting point, its distance from ``x`` and its logits."""
    out: dict[str, Any] = {"outcome": Outcome.REFUTED, "reason": reason}
    if point is not None:
        p = np.asarray(point, dtype=np.float64).reshape(-1)
        out.update(counterexample=p, logits=net.forward(p)[0],
                   distance=None if x is None else float(np.abs(p - x).max()))
    return out


# -- verification results ----------------------------------------------------------------------------
def _recheck_verification(result: Verification, net: Network, stored_in: Path | None, oracle: str,
                          time_limit: float | None, device: str) -> dict[str, Any]:
    from .vnnlib import read_vnnlib

    p = result.property
    prop = None
    if p.get("kind") == "vnnlib":
        path = _stored_path(str(p["path"]), stored_in)
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise InputDataError(f"cannot read the property file {str(path)!r}: {exc.strerror or exc}") from exc
        if p.get("sha256") is not None and actual != str(p["sha256"]).lower():
            raise ModelMismatchError(f"property file {str(path)!r} has sha256 {actual[:16]}..., the result was "
                                     f"made with {str(p['sha256'])[:16]}...: refusing to recheck against another "
                                     "property")
        prop = read_vnnlib(path)
        claim = {"unsat": f"the property of {path} holds", "sat": f"the property of {path} is violated"}.get(
            result.answer.value, f"nothing proven ({result.answer.value})")
    else:
        claim = {"unsat": f"the input is robust at epsilon {p.get('epsilon')} for label {p.get('label')}",
                 "sat": f"the input is not robust at epsilon {p.get('epsilon')}"}.get(
            result.answer.value, f"nothing proven ({result.answer.value})")
    check = recheck_verification(result, net, prop, config=VerifyConfig(oracle=oracle, device=device),
                                 time_limit=time_limit)
    return {"kind": "verification", "claim": claim, "oracle": check.oracle, "outcome": Outcome(check.outcome),
            "reason": check.reason, "checks": check.checks}


# -- dual boxes --------------------------------------------------------------------------------
def _witness_problem(net: Network, label: int, region: Box, box: Box | None, witness: Any) -> str | None:
    """Why ``witness`` does not refute the dual box (``None`` if it does): it must be a
    point of the region, outside the box (if any), classified ``label`` — ties included,
    decided in exact arithmetic where the float64 margin is within its rounding error."""
    if witness is None:
        return "no point"
    w = np.asarray(witness, dtype=np.float64).reshape(-1)
    if w.shape != (region.n,) or not np.isfinite(w).all() or not region.contains(w):
        return "not a point of the region"
    if box is not None and box.contains(w):
        return "inside the box"
    margin, err = net.margin_errors(w, label)
    if margin[0] < err[0] and (margin[0] <= -err[0] or net.exact_margin(w, label) < 0):
        return f"classified otherwise, margin {margin[0]:.3g}"
    return None


def _recheck_dual(dual: DualBox, net: Network, label: int, oracle_name: str, time_limit: float | None,
                  device: str) -> dict[str, Any]:
    region = dual.region
    where = "the domain" if dual.center is None else f"the ball of radius {dual.radius:.6g} around the input"
    out: dict[str, Any] = {"kind": "dual box", "oracle": None,
                           "claim": f"every point of {where} classified {label} lies in the box"
                           if dual.box is not None else f"no point of {where} is classified {label}"}
    if region.n != net.n_inputs:
        raise InputDataError(f"the dual box's region has {region.n} dimensions, the network {net.n_inputs} inputs")
    checks = []
    if dual.domain is not None:
        expected = dual.domain if dual.center is None else Box.cube(dual.center, float(dual.radius or 0), dual.domain)
        if expected != region:
            return {**out, "outcome": Outcome.REFUTED, "reason": f"the stored region is not {where}"}
        checks.append(f"region is {where}")
    if dual.box is not None:
        if not region.contains_box(dual.box):
            return {**out, "outcome": Outcome.REFUTED, "reason": "the box is not inside the region"}
        checks.append("box in region")
    oracle = make_recheck_oracle(net, oracle_name, time_limit, device)
    out["oracle"] = oracle.name
    query = "coordinate_extreme" if dual.box is None else "class_region"
    if not oracle.supports(query):
        raise ConfigError(f"dual boxes are rechecked with an oracle that answers {query} queries (milp, or a "
                          f"cascade with a milp stage); {oracle.name!r} answers {', '.join(sorted(oracle.queries))}")
    if dual.box is None:
        ext = oracle.coordinate_extreme(label, 0, False, region)
        verdict = (RegionVerdict.NONE if ext.bound == math.inf
                   else RegionVerdict.WITNESS if ext.witness is not None else RegionVerdict.UNKNOWN)
        witness, why = ext.witness, ext.reason
    else:
        ans = oracle.class_region(dual.box.lower, dual.box.upper, label, region, tolerance=0.0)
        verdict, witness, why = ans.verdict, ans.witness, ans.reason
    if verdict is RegionVerdict.NONE:
        return {**out, "outcome": Outcome.CONFIRMED, "checks": tuple(checks + [f"class region proven by {oracle.name}"]),
                "reason": f"{oracle.name} proved it ({why})"}
    if verdict is RegionVerdict.WITNESS:
        what = "outside the box" if dual.box is not None else "in the region"
        problem = _witness_problem(net, label, region, dual.box, witness)
        if problem is not None:  # never refute with an unconfirmed point
            return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks),
                    "reason": f"{oracle.name}'s witness is not confirmed ({problem}): {why}"}
        return {**out, "checks": tuple(checks), **_refutation(
            net, dual.center, label, f"{oracle.name} found a point of class {label} {what}", witness)}
    return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks),
            "reason": f"{oracle.name} could not decide: {why}"}
