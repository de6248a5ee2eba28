"""VNN-COMP benchmark instances into a resumable results store.

A benchmark lists its instances in a CSV file of rows ``onnx,vnnlib,timeout`` (paths
relative to the CSV file, timeout in seconds; VNN-COMP's ``instances.csv``).
:func:`verify_instances` answers each instance with
:func:`~parallelepipedonn.verify.verify_property` and commits each result to the store
(:mod:`parallelepipedonn.store`) as soon as it is known, so that running the same
command again skips what is done, as a batch certification does:

* ``input_id`` — ``ONNX::VNNLIB``, the two files' resolved paths;
* ``input_sha256`` — the SHA-256 of both files' SHA-256 and the timeout: an instance
  whose model, property or timeout changed is verified again (its row replaced);
* ``status`` — the certificate vocabulary (``certified`` for ``unsat``, ``not-robust``
  for ``sat``, ``unknown`` for ``unknown`` and ``timeout``), or ``error`` when the instance
  could not be verified at all (unreadable or unsupported model or property; retried on
  the next run); ``reason`` starts with the VNN-COMP answer (``unsat: ...``);
* ``certificate`` — the :class:`~parallelepipedonn.verify.Verification` JSON;
* the run configuration (``config_key``) — the oracle, its options, the device and the
  domain.

The timeout of an instance is the budget of its verification (the oracles' time limits
are set to what is left of it); the process is not killed when an oracle overruns it.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .box import Box
from .errors import InputDataError, ModelError, ParallelepipedoNNError
from .io_utils import sha256_file
from .store import ERROR, ResultStore, StoredResult
from .verify import Verification, VerifyConfig, load_model_file, verify_property
from .vnnlib import read_vnnlib

if TYPE_CHECKING:
    from .graph import Graph
    from .network import Network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Instance:
    """One row of an instances file: a model, a property, a timeout (seconds), and the
    row's ``line`` (for messages)."""

    onnx: Path
    vnnlib: Path
    timeout: float
    line: int = 0

    @property
    def input_id(self) -> str:
        return f"{self.onnx.resolve()}::{self.vnnlib.resolve()}"

    def fingerprint(self) -> str:
        """SHA-256 of the model's and the property's SHA-256 and the timeout
        (``"unreadable"`` if a file cannot be read)."""
        try:
            parts = f"{sha256_file(self.onnx)}:{sha256_file(self.vnnlib)}:{self.timeout!r}"
        except OSError:
            return "unreadable"
        return hashlib.sha256(parts.encode()).hexdigest()


def read_instances(path: str | Path) -> list[Instance]:
    """The instances of a VNN-COMP ``instances.csv`` (rows ``onnx,vnnlib,timeout``, paths
    relative to the file; blank lines and lines starting with ``#`` skipped). A file that
    does not exist is read from its gzip-compressed copy ``NAME.gz`` where there is one (as
    VNN-COMP's benchmark repositories since 2022 ship them, the CSV naming the plain
    files). Every row is checked before any work: :class:`InputDataError` naming the file
    and the line for a malformed row, a timeout that is not a positive number, or a file
    that does not exist."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputDataError(f"cannot read instances file {str(p)!r}: {detail}") from exc
    out: list[Instance] = []
    base = p.parent
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in row]
        if not any(fields) or fields[0].startswith("#"):
            continue
        where = f"{p}:{line}"
        if len(fields) != 3:
            raise InputDataError(f"{where}: expected 'onnx,vnnlib,timeout', got {','.join(row)!r}")
        try:
            timeout = float(fields[2])
        except ValueError:
            raise InputDataError(f"{where}: the timeout {fields[2]!r} is not a number") from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InputDataError(f"{where}: the timeout must be a positive number of seconds, got {fields[2]!r}")
        files = []
        for name in fields[:2]:
            f = Path(name) if Path(name).is_absolute() else base / name
            if not f.exists() and f.with_name(f.name + ".gz").is_file():
                f = f.with_name(f.name + ".gz")
            if not f.is_file():
                raise InputDataError(f"{where}: {str(f)!r} " + ("is not a file" if f.exists() else "does not exist"))
            files.append(f)
        out.append(Instance(files[0], files[1], timeout, line))
    if not out:
        raise InputDataError(f"instances file {str(p)!r} lists no instance")
    ids = [i.input_id for i in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in out if ids.count(i.input_id) > 1)
        raise InputDataError(f"{p}:{dup.line}: the instance {dup.onnx.name}, {dup.vnnlib.name} is listed twice")
    return out


#: The ``model_sha256`` of a ``verify --instances`` configuration: each instance names its own model.
PER_INSTANCE = "per-instance"


def run_config(config: VerifyConfig, domain: tuple[float, float] | None) -> dict[str, Any]:
    """What determines an instance's result besides its files and timeout (the store's
    ``config_key`` is its hash)."""
    dom = None if domain is None else [float(domain[0]), float(domain[1])]
    return {"command": "verify", "algorithm": "verify", "oracle": config.oracle, "verify_config": asdict(config),
            "model_sha256": PER_INSTANCE,
            "domain": dom, "label": None, "time_limit": None, "timeouts": "per instance (instances file)"}


@dataclass(frozen=True)
class InstancesReport:
    """What a call of :func:`verify_instances` did; ``answers`` counts the answers (and
    ``error``) of the instances run now."""

    config_key: str
    total: int
    skipped: int
    computed: int
    answers: dict[str, int]
    errors: tuple[tuple[str, str], ...]
    internal_errors: int


def _row(key: str, item: Instance, fingerprint: str, result: Verification) -> StoredResult:
    return StoredResult(key, item.input_id, fingerprint, result.status.value,
                        f"{result.answer.value}: {result.reason}", oracle_calls=result.queries,
                        seconds=result.seconds, certificate=result.to_json(indent=None))


def verify_instances(instances: Sequence[Instance], store: ResultStore | str | Path, *,
                     config: VerifyConfig | None = None, domain: tuple[float, float] | None = None,
                     progress: Callable[[str], None] | None = None) -> InstancesReport:
    """Verify every instance not yet in ``store`` for this configuration, committing each
    result as soon as it is known (see the module docstring). ``domain`` ``(lo, hi)``
    (optional): every input box must lie in ``[lo, hi]^n``, else the instance is an error.
    ``progress`` (optional) is called with a line per instance."""
    config = config or VerifyConfig()
    if not isinstance(store, ResultStore):
        with ResultStore(store) as opened:
            return verify_instances(instances, opened, config=config, domain=domain, progress=progress)
    key = store.add_config(run_config(config, domain))
    done = store.done_keys(key)
    models: dict[str, Network | Graph] = {}
    answers: dict[str, int] = {}
    errors: list[tuple[str, str]] = []
    internal = skipped = 0
    for k, item in enumerate(instances, start=1):
        fp = item.fingerprint()
        if done.get(item.input_id) == fp:
            skipped += 1
            continue
        if progress is not None:
            progress(f"instance {k} of {len(instances)}: {item.onnx.name}, {item.vnnlib.name}")
        try:
            model_sha = sha256_file(item.onnx)
            if model_sha not in models:
                loaded = load_model_file(item.onnx)
                if loaded.file_sha256 != model_sha:
                    raise ModelError(f"model file {str(item.onnx)!r} changed while it was read")
                models[model_sha] = loaded
            prop = read_vnnlib(item.vnnlib.resolve())  # the result records resolved paths
            model = models[model_sha]
            box = None if domain is None else Box(np.full(model.n_inputs, domain[0]), np.full(model.n_inputs, domain[1]))
            result = verify_property(model, prop, config=config, timeout=item.timeout, domain=box,
                                     model_path=str(item.onnx.resolve()), model_sha256=model_sha,
                                     property_sha256=prop.sha256)
            row = _row(key, item, fp, result)
            answer = result.answer.value
        except (ParallelepipedoNNError, OSError) as exc:
            row, answer = StoredResult(key, item.input_id, fp, ERROR, str(exc)), ERROR
            errors.append((item.input_id, str(exc)))
        except Exception as exc:  # recorded (as an error, never a result) so that the run goes on
            log.debug("internal error", exc_info=True)
            message = f"internal error: {type(exc).__name__}: {exc}"
            row, answer = StoredResult(key, item.input_id, fp, ERROR, message), ERROR
            errors.append((item.input_id, message))
            internal += 1
        store.put(row)
        answers[answer] = answers.get(answer, 0) + 1
        if answer == ERROR:
            log.warning("%s: %s", item.input_id, row.reason)
    return InstancesReport(key, len(instances), skipped, len(instances) - skipped, answers, tuple(errors), internal)


def stored_answers(rows: Sequence[StoredResult]) -> dict[str, int]:
    """Counts of the VNN-COMP answers (and ``error``) of stored instance rows."""
    out: dict[str, int] = {}
    for r in rows:
        answer = ERROR if r.status == ERROR else r.reason.split(":", 1)[0]
        out[answer] = out.get(answer, 0) + 1
    return out


__all__ = ["Instance", "InstancesReport", "read_instances", "run_config", "stored_answers", "verify_instances"]
