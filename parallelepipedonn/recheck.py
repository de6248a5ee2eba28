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
  box again (:func:`parallelepipedonn.verify_recheck.recheck_verification`).

Anything the oracle cannot decide (``UNKNOWN``, time-out) is reported as undecided,
never as confirmed.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from oracles.registry import require_queries

from .certificate import FORMAT_NAME as CERTIFICATE_FORMAT
from .certificate import FORMAT_VERSION as CERTIFICATE_VERSION
from .certificate import Certificate, json_schema, read_json_object
from .dual import FORMAT_NAME as DUAL_FORMAT
from .dual import FORMAT_VERSION as DUAL_VERSION
from .dual import DualBox
from .errors import ConfigError, InputDataError, ModelError, ModelMismatchError, ParallelepipedoNNError
from .instances import PER_INSTANCE
from .io_utils import sha256_file
from .network import Network
from .recheck_claims import (
    Outcome,
    make_recheck_oracle,
    recheck_certificate,
    recheck_dual,
    recheck_epsilon,
    recheck_verification_claim,
)
from .tolerances import METRIC_RTOL
from .verify import FORMAT_NAME as VERIFICATION_FORMAT
from .verify import FORMAT_VERSION as VERIFICATION_VERSION
from .verify import Verification, load_model_file

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

#: The default oracle of a recheck: complete (exact MILP with HiGHS).
DEFAULT_RECHECK_ORACLE = "milp"


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
    #: where the result was stored, when not the file itself (a store's row: its input)
    source: str = ""

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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
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


def _property_path(result: Verification, stored_in: Path | None) -> Path | None:
    """The VNN-LIB property file a verification result names, found as its model is."""
    p = result.property
    return _stored_path(str(p["path"]), stored_in) if p.get("kind") == "vnnlib" else None


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
    """Re-verify every result stored in ``path``: one certificate or dual box, a JSON
    list of them (``compare --json`` writes one), or a results store (``--store``: every
    row's certificate or verification, and the row's own columns against it,
    :func:`store_items`), each as :func:`recheck` would. The network is loaded once per
    model file."""
    path = Path(path)
    extra: dict[str, str] = {}
    if is_store(path):
        items, results = store_items(path, extra)
    else:
        items, results = [(stored, raw, "") for stored, raw in load_stored_list(path)], []
    check_oracle_answers(oracle, [stored for stored, _, _ in items])
    networks: dict[Path, Network] = {}
    for stored, raw, source in items:
        model_path = resolve_model(stored, model, path.parent)
        if model_path not in networks:
            check_model_hash(model_path, stored.model_sha256)
            networks[model_path] = load_model_file(model_path)
        result = _recheck_one(stored, raw, path.parent, model, oracle, time_limit, device, networks[model_path])
        results.append(replace(result, source=source, notes=result.notes + ((extra[source],) if source in extra
                                                                            else ())))
    return results


def is_store(path: Path) -> bool:
    """Whether ``path`` is an SQLite file (a results store, or not: :class:`ResultStore` says)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def store_items(path: Path, notes: dict[str, str] | None = None
                ) -> tuple[list[tuple[Stored, dict[str, Any], str]], list[Recheck]]:
    """The results of a store to recheck (each row's stored certificate or verification,
    named by its input), and the rows already refuted by their own columns: a status,
    label, prediction or apothem that is not its certificate's, a status that claims a
    result with no certificate stored, or a certificate of another model than its
    configuration's, or a certificate whose input is not the row's (the file its id names,
    or the dataset image, read again where found: ``notes`` gets a line where not). Rows
    that claim nothing (errors, time-outs without a certificate) are skipped."""
    from .store import ResultStore

    items: list[tuple[Stored, dict[str, Any], str]] = []
    refuted: list[Recheck] = []
    with ResultStore(path, read_only=True) as store:
        configs = store.configs()
        rows = store.rows()
    for row in rows:
        where = f"{path}: {row.input_id!r}"

        def wrong(why: str) -> Recheck:
            return Recheck(Outcome.REFUTED, "stored row", f"the row of {row.input_id!r}", why, None,
                           str(configs.get(row.config_key, {}).get("model_path", "")), int(row.label or 0),
                           source=where)

        if row.certificate is None:
            if row.status not in ("error", "unknown"):
                refuted.append(wrong(f"its status {row.status!r} claims a result, but the row stores none"))
            continue
        try:
            d = json.loads(row.certificate)
        except json.JSONDecodeError as exc:
            raise InputDataError(f"{where}: the stored result is not JSON: {exc}") from exc
        if not isinstance(d, dict) or d.get("format") not in _FORMATS:
            raise InputDataError(f"{where}: the stored result is neither a certificate nor a verification result")
        validate_stored(d, where)
        stored = _parse(d)
        said = configs.get(row.config_key, {}).get("model_sha256")
        mismatch = _row_mismatch(row, stored)
        if mismatch is not None:
            refuted.append(wrong(mismatch))
        elif said is not None and said != PER_INSTANCE and stored.model_sha256 != said:
            refuted.append(wrong(f"its certificate names model {stored.model_sha256}, its configuration {said}"))
        elif isinstance(stored, Certificate) and (other := _other_input(row, stored, where, notes)) is not None:
            refuted.append(wrong(other))
        else:
            items.append((stored, d, where))
    return items, refuted


@functools.lru_cache(maxsize=4)
def _dataset(name: str, split: str) -> Any:
    """A dataset split, read once per recheck of a store (its rows name images of it)."""
    from .datasets import load_dataset

    return load_dataset(name, split)


def _other_input(row: Any, cert: Certificate, where: str, notes: dict[str, str] | None) -> str | None:
    """Why a store row's certificate is not about the row's input (the file its id names,
    or the dataset image ``name:split:index``, read again: the same content, by the row's
    fingerprint, and other values in the certificate), or ``None``; a line in ``notes``
    where the input cannot be read again or has changed since."""
    from .batch import BatchInput

    item: BatchInput | None = None
    name, _, index = row.input_id.rpartition(":")
    try:
        if Path(row.input_id).is_absolute() and Path(row.input_id).is_file():
            item = BatchInput(row.input_id, path=Path(row.input_id))
        elif name.count(":") == 1 and index.isdigit():
            data, split = name.split(":")
            item = BatchInput(row.input_id, values=_dataset(data, split)[int(index)][0])
    except ParallelepipedoNNError as exc:
        item, why = None, str(exc)
    else:
        why = "it is neither a file that exists nor a dataset image"
    if item is None or item.fingerprint() != row.input_sha256:
        if notes is not None:
            notes[where] = (f"the row's input is not compared with its certificate's: {why}" if item is None else
                            "the row's input has changed since it was certified: not compared with its certificate's")
        return None
    values = np.asarray(item.read(), dtype=np.float64).reshape(-1)
    if not np.array_equal(values, cert.input.reshape(-1)):
        return "its certificate is about another input than the row's (read again, the same content as certified)"
    return None


def _dual_metrics_claim(dual: DualBox, raw: dict[str, Any] | None) -> str | None:
    """What a stored dual box's own numbers say that its box does not (whether it is
    empty, its exact-bound count, min edge, log-volume, whether it covers the region), or
    ``None``."""
    if raw is None:
        return None
    box = dual.box
    actual = {"empty": box is None, "exact_bounds": dual.exact_count, "covers_region": dual.covers_region,
              "min_edge": dual.min_edge(),
              "log_volume": None if box is None or math.isinf(box.log_volume()) else box.log_volume()}
    for key, value in actual.items():
        said = raw.get(key)
        if key == "log_volume" and said is not None and value is not None:
            same = math.isclose(float(said), value, rel_tol=1e-12, abs_tol=1e-12)
        else:
            same = (said is None and value is None) or (isinstance(said, bool) == isinstance(value, bool)
                                                         and said is not None and value is not None and said == value)
        if key in raw and not same:
            return f"its stored {key} {said!r} is not its box's {value!r}"
    return None


def _row_mismatch(row: Any, stored: Stored) -> str | None:
    """What a store row's columns say that its stored result does not, or ``None``."""
    status = stored.status.value
    if row.status != status:
        return f"its status {row.status!r} is not its certificate's {status!r}"
    if isinstance(stored, Certificate):
        # (the true label and the box's metrics too: `store summary`'s accuracies read them)
        for column, value, rtol in (("label", stored.label, 0.0), ("predicted_label", stored.predicted_label, 0.0),
                                    ("true_label", stored.true_label, 0.0), ("apothem", stored.apothem, 0.0),
                                    ("apothem_upper_bound", stored.apothem_upper_bound, 0.0),
                                    ("min_edge", stored.min_edge, 0.0), ("log_volume", stored.log_volume, METRIC_RTOL)):
            mine = getattr(row, column)
            if not _same(mine, value, rtol):
                return f"its {column} {mine!r} is not its certificate's {value!r}"
    return None


def _same(mine: Any, value: Any, rtol: float) -> bool:
    """A store column against its certificate's value: equal (both None, both NaN), or
    within ``rtol`` (the log-volume: see :data:`~parallelepipedonn.tolerances.METRIC_RTOL`)."""
    if mine == value or (mine is None and value is None):
        return True
    if not (isinstance(mine, (int, float)) and isinstance(value, (int, float))) or isinstance(mine, bool):
        return False
    if math.isnan(mine) or math.isnan(value):
        return math.isnan(mine) and math.isnan(value)
    if math.isinf(mine) or math.isinf(value):
        return False
    return abs(mine - value) <= rtol * max(abs(mine), abs(value), 1e-300)


def _recheck_one(stored: Stored, raw: dict[str, Any] | None, stored_in: Path | None,
                 model: str | Path | None, oracle: str, time_limit: float | None, device: str,
                 network: Network | None) -> Recheck:
    start = time.perf_counter()
    model_path = resolve_model(stored, model, stored_in)
    notes = [n for n in [check_model_hash(model_path, stored.model_sha256)] if n]
    net = network if network is not None else load_model_file(model_path)
    if isinstance(stored, Verification):
        result = recheck_verification_claim(stored, net, _property_path(stored, stored_in), oracle, time_limit,
                                            device)
        label = int(stored.property.get("label", 0))
        return Recheck(**{**result, "model_path": str(model_path), "label": label,
                          "seconds": time.perf_counter() - start, "notes": tuple(notes)})
    net.check_classifier("a certificate" if isinstance(stored, Certificate) else "a dual box")
    label = net.check_label(stored.label)
    if isinstance(stored, Certificate):
        result = recheck_certificate(stored, raw, net, label, oracle, time_limit, device, model_path)
        if stored.epsilon is not None and result["outcome"] is Outcome.CONFIRMED:
            result = recheck_epsilon(stored, net, label, oracle, time_limit, device, result)
    else:
        result = recheck_dual(stored, net, label, oracle, time_limit, device)
        wrong = None if result["outcome"] is Outcome.REFUTED else _dual_metrics_claim(stored, raw)
        if wrong is not None:  # (a box refuted by a witness says more)
            result = {**result, "outcome": Outcome.REFUTED, "reason": wrong}
        if stored.exact_count:
            notes.append(f"its {stored.exact_count} exactness flags (faces attained by a class point) are not "
                         "rechecked: the file keeps no witnesses")
    return Recheck(**{**result, "model_path": str(model_path), "label": label, "seconds": time.perf_counter() - start,
                      "notes": tuple(notes) + tuple(result.get("notes", ()))})


__all__ = ["DEFAULT_RECHECK_ORACLE", "Outcome", "Recheck", "Stored", "check_model_hash", "check_oracle_answers",
           "load_stored", "load_stored_list", "make_recheck_oracle", "recheck", "recheck_all", "resolve_model",
           "validate_stored"]
