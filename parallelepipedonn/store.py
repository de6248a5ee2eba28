"""A resumable results store for batch certification: one SQLite file (WAL mode).

One row per (input, run configuration), enforced by ``UNIQUE (config_key, input_id)``.
Each :meth:`ResultStore.put` (one row) or :meth:`ResultStore.put_many` (a group of rows)
is one transaction, committed (and synced) before it returns, so a process killed at any
moment loses at most the results it had not committed yet, and a re-run never duplicates
a row (an existing row is replaced). A batch commits the results that are ready together
in one transaction (one synced transaction per row caps a store at a few hundred rows
per second).

* ``input_id`` — the input's identity: the resolved path of an input file, or
  ``dataset:split:index``; ``input_sha256`` hashes its content (file bytes, or the
  image's float64 values), so an input whose content changed is certified again.
* ``config_key`` — :func:`config_key`, the SHA-256 of the canonical JSON of everything
  that determines a result: model SHA-256, algorithm, oracle, every certify option
  (falsifier, precision, device, dual, ...), label, domain and the per-input time limit.
  The JSON itself is kept in the ``configs`` table.
* ``status`` — ``certified``, ``not-robust``, ``unknown`` (incomplete oracle, or the
  time limit ran out: see ``reason``) or ``error`` (the input could not be certified at
  all — unreadable, wrong size, outside the domain, internal error; ``reason`` says
  which). Errors are retried when the batch is run again; the others are not.
* ``certificate`` — the certificate JSON exactly as
  :meth:`~parallelepipedonn.certificate.Certificate.to_json` writes it (``NULL`` for a
  time-out or an error: there is no certificate then).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import sqlite3
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .certificate import Certificate
from .errors import InputDataError, OutputPathError, ParallelepipedoNNError
from .io_utils import check_writable

SCHEMA_VERSION = 1
ERROR = "error"  # the store's status for an input that could not be certified at all

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    config_key TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    config_key TEXT NOT NULL REFERENCES configs (config_key),
    input_id TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    label INTEGER,
    predicted_label INTEGER,
    true_label INTEGER,
    apothem REAL,
    min_edge REAL,
    log_volume REAL,
    apothem_upper_bound REAL,
    oracle_calls INTEGER,
    seconds REAL,
    certificate TEXT,
    created TEXT NOT NULL,
    UNIQUE (config_key, input_id)
);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no white space: equal values give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def config_key(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a run configuration."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


@dataclass(frozen=True)
class StoredResult:
    """One row of the store: the outcome of one input under one configuration."""

    config_key: str
    input_id: str
    input_sha256: str
    status: str
    reason: str = ""
    label: int | None = None
    predicted_label: int | None = None
    true_label: int | None = None
    apothem: float | None = None
    min_edge: float | None = None
    log_volume: float | None = None
    apothem_upper_bound: float | None = None
    oracle_calls: int | None = None
    seconds: float | None = None
    certificate: str | None = None
    created: str = ""

    @classmethod
    def from_certificate(cls, key: str, input_id: str, input_sha256: str, cert: Certificate) -> StoredResult:
        return cls(key, input_id, input_sha256, cert.status.value, cert.reason, cert.label, cert.predicted_label,
                   cert.true_label, cert.apothem, cert.min_edge, cert.log_volume, cert.apothem_upper_bound,
                   cert.oracle_calls, cert.seconds, cert.to_json(indent=None))

    def to_certificate(self) -> Certificate | None:
        """The stored certificate (``None`` for a time-out or an error); a row of ``verify
        --instances`` holds a verification result instead: :meth:`to_result` reads both."""
        result = self.to_result()
        if result is not None and not isinstance(result, Certificate):
            raise InputDataError(f"the row of {self.input_id!r} holds a verification result, not a certificate: "
                                 f"read it with to_result()")
        return result

    def to_result(self) -> Any:
        """The stored result: a :class:`Certificate` (``certify``), a
        :class:`~parallelepipedonn.verify.Verification` (``verify --instances``), or ``None``
        for a time-out or an error."""
        if self.certificate is None:
            return None
        from .verify import FORMAT_NAME, Verification  # lazy: the verify module loads the oracles' base

        data = json.loads(self.certificate)
        if isinstance(data, dict) and data.get("format") == FORMAT_NAME:
            return Verification.from_dict(data)
        return Certificate.from_dict(data)


_COLUMNS = tuple(f.name for f in fields(StoredResult))


_NUMBERS = ("apothem", "min_edge", "log_volume", "apothem_upper_bound", "seconds")
_INTEGERS = ("label", "predicted_label", "true_label", "oracle_calls")
_TEXTS = ("config_key", "input_id", "input_sha256", "status", "reason")


def _well_typed(r: StoredResult) -> bool:
    """Whether a row read back has the column types the store writes."""
    return (all(isinstance(getattr(r, c), str) for c in _TEXTS)
            and all(getattr(r, c) is None or (isinstance(getattr(r, c), (int, float))
                                              and not isinstance(getattr(r, c), bool)) for c in _NUMBERS)
            and all(getattr(r, c) is None or isinstance(getattr(r, c), int) for c in _INTEGERS)
            and (r.certificate is None or isinstance(r.certificate, str)))


class ResultStore:
    """The results store at ``path`` (created if missing), or with ``read_only`` an
    existing one, opened for reading. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        error: type[ParallelepipedoNNError] = InputDataError if read_only else OutputPathError
        if self.path.is_dir():
            raise error(f"cannot use {str(self.path)!r} as a results store: it is a directory")
        if read_only and not self.path.is_file():
            raise error(f"results store {str(self.path)!r} does not exist")
        if not self.path.exists():
            check_writable(self.path)
        try:
            if read_only:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
            else:
                self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
                tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and not {"meta", "configs", "results"} <= tables:
                    self._db.close()
                    raise error(f"{str(self.path)!r} is an SQLite database, but not a results store")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise error(f"cannot use {str(self.path)!r} as a results store: {exc}") from exc
        if row is None or not str(row[0]).isdigit() or int(row[0]) > SCHEMA_VERSION:
            self._db.close()
            raise error(f"{str(self.path)!r} is not a results store of this tool's version "
                        f"(schema {row[0] if row else 'missing'}, this tool reads up to {SCHEMA_VERSION})")

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """The rows of a query; a damaged file is an :class:`InputDataError` naming it."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise InputDataError(f"the results store {str(self.path)!r} is damaged: {exc}") from exc

    def _write(self, sql: str, params: tuple, *more: tuple) -> None:
        """Run ``sql`` with ``params`` (and with each of ``more``) in one transaction."""
        try:
            with self._db:  # one transaction, committed on exit
                self._db.execute("BEGIN IMMEDIATE")
                for p in (params, *more):
                    self._db.execute(sql, p)
        except sqlite3.Error as exc:
            raise OutputPathError(f"cannot write to the results store {str(self.path)!r}: {exc}") from exc

    # -- configurations -----------------------------------------------------------------
    def add_config(self, config: Mapping[str, Any]) -> str:
        """Record a run configuration; return its key."""
        key = config_key(config)
        self._write("INSERT OR IGNORE INTO configs VALUES (?, ?, ?)", (key, canonical_json(config), _now()))
        return key

    def configs(self) -> dict[str, dict[str, Any]]:
        """Every configuration recorded, by key."""
        return {k: json.loads(v) for k, v in self._read("SELECT config_key, config_json FROM configs "
                                                         "ORDER BY created, config_key")}

    # -- results ------------------------------------------------------------------------
    def done_keys(self, key: str) -> dict[str, str]:
        """``input_id -> input_sha256`` of the inputs with a result (not an error) for
        configuration ``key``: what a resumed batch skips."""
        return dict(self._read("SELECT input_id, input_sha256 FROM results WHERE config_key = ? AND status != ?",
                               (key, ERROR)))

    def done_labels(self, key: str) -> dict[str, tuple[int | None, int | None]]:
        """``input_id -> (label, true_label)`` of the rows :meth:`done_keys` lists."""
        rows = self._read("SELECT input_id, label, true_label FROM results WHERE config_key = ? AND status != ?",
                          (key, ERROR))
        return {i: (label, true) for i, label, true in rows}

    def set_true_label(self, key: str, input_id: str, true_label: int | None) -> None:
        """Record another true label for a stored input (in its row and its certificate):
        the true label is data about the input, not part of the result."""
        row = self._db.execute("SELECT certificate FROM results WHERE config_key = ? AND input_id = ?",
                               (key, input_id)).fetchone()
        if row is None:
            raise KeyError(input_id)
        cert = row[0]
        if cert is not None:
            d = json.loads(cert)
            d["true_label"] = true_label
            cert = json.dumps(d, allow_nan=False)  # as Certificate.to_json(indent=None) writes it
        self._write("UPDATE results SET true_label = ?, certificate = ? WHERE config_key = ? AND input_id = ?",
                    (true_label, cert, key, input_id))

    def put(self, result: StoredResult) -> None:
        """Insert (or replace) one row, in its own committed transaction."""
        self.put_many([result])

    def put_many(self, results: Sequence[StoredResult]) -> None:
        """Insert (or replace) rows, all in one committed transaction (nothing if empty)."""
        if not results:
            return
        now = _now()
        values = []
        for result in results:
            row = tuple(None if isinstance(v, float) and math.isnan(v) else v
                        for v in (getattr(result, c) for c in _COLUMNS))
            values.append(row[:-1] + (result.created or now,))
        cols = ", ".join(_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("config_key", "input_id"))
        self._write(f"INSERT INTO results ({cols}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                    f"ON CONFLICT (config_key, input_id) DO UPDATE SET {updates}", *values)

    def rows(self, key: str | None = None) -> list[StoredResult]:
        """The rows of configuration ``key`` (all if ``None``), in insertion order."""
        return list(self.iter_rows(key))

    def iter_rows(self, key: str | None = None) -> Iterator[StoredResult]:
        where, params = ("WHERE config_key = ?", (key,)) if key is not None else ("", ())
        for row in self._read(f"SELECT {', '.join(_COLUMNS)} FROM results {where} ORDER BY id", params):
            result = StoredResult(*row)
            if not _well_typed(result):
                raise InputDataError(f"the results store {str(self.path)!r} is damaged: the row of "
                                     f"{result.input_id!r} has values of the wrong types")
            yield result


@dataclass(frozen=True)
class Summary:
    """Counts and medians over some rows of a store.

    ``by_status`` counts every status, whatever the label certified (by default each
    input's prediction, right or wrong). Accuracies are over the ``labelled`` rows (those
    with a true label): ``correct`` (clean accuracy: predicted label = true label; an
    input that could not be read is not correct), ``misclassified`` (a prediction that is
    not the true label), ``certified_accurate`` (certified, for the true label: a
    misclassified input never is) and ``at_epsilon`` (``(ε, count)``: of those, the ones
    whose certified apothem is at least ε).
    """

    total: int
    by_status: dict[str, int]
    median_apothem: float | None
    median_seconds: float | None
    seconds: float
    labelled: int = 0
    correct: int = 0
    misclassified: int = 0
    certified_accurate: int = 0
    at_epsilon: tuple[tuple[float, int], ...] = ()

    @classmethod
    def of(cls, rows: list[StoredResult], epsilons: tuple[float, ...] | list[float] = ()) -> Summary:
        by_status: dict[str, int] = {}
        for r in rows:
            by_status[r.status] = by_status.get(r.status, 0) + 1
        apothems = [r.apothem for r in rows if r.status == "certified" and r.apothem is not None]
        seconds = [r.seconds for r in rows if r.seconds is not None]
        labelled = [r for r in rows if r.true_label is not None]
        accurate = [r for r in labelled if r.status == "certified" and r.label == r.true_label
                    and r.predicted_label == r.true_label]
        return cls(len(rows), by_status, statistics.median(apothems) if apothems else None,
                   statistics.median(seconds) if seconds else None, float(sum(seconds)), len(labelled),
                   sum(r.predicted_label == r.true_label for r in labelled),
                   sum(r.predicted_label is not None and r.predicted_label != r.true_label for r in labelled),
                   len(accurate),
                   tuple((float(e), sum(r.apothem is not None and r.apothem >= e for r in accurate))
                         for e in epsilons))

    def as_dict(self) -> dict[str, Any]:
        """The numbers as JSON-ready values (accuracies ``None`` without true labels)."""
        def rate(k: int) -> float | None:
            return k / self.labelled if self.labelled else None

        return {"inputs": self.total, "by_status": dict(self.by_status), "labelled": self.labelled,
                "correct": self.correct, "clean_accuracy": rate(self.correct), "misclassified": self.misclassified,
                "certified_accurate": self.certified_accurate, "certified_accuracy": rate(self.certified_accurate),
                "certified_accuracy_at": [{"epsilon": e, "count": k, "accuracy": rate(k)} for e, k in self.at_epsilon],
                "median_apothem": self.median_apothem, "median_seconds": self.median_seconds,
                "seconds": self.seconds}

    def describe_accuracy(self) -> list[str]:
        """Lines such as ``clean accuracy 9/10 = 90.0% (1 misclassified); certified accuracy
        (certified for the true label) 7/10 = 70.0%`` and ``certified accuracy at epsilon
        0.01: 5/10 = 50.0%; ...``, or that the true labels are unknown (n/a)."""
        if not self.labelled:
            return ["true labels unknown: clean accuracy n/a, certified accuracy n/a"]

        def rate(k: int) -> str:
            return f"{k}/{self.labelled} = {100 * k / self.labelled:.1f}%"

        text = (f"clean accuracy {rate(self.correct)} ({self.misclassified} misclassified); certified accuracy "
                f"(certified for the true label) {rate(self.certified_accurate)}")
        if self.labelled < self.total:
            text += f" (over the {self.labelled} inputs with a true label; {self.total - self.labelled} without)"
        lines = [text]
        if self.at_epsilon:
            lines.append("certified accuracy at epsilon " + "; ".join(f"{e:g}: {rate(k)}" for e, k in self.at_epsilon))
        return lines

    def describe(self) -> str:
        """One line: ``30 inputs: 28 certified, 2 unknown; median apothem ...``."""
        order = ["certified", "not-robust", "unknown", ERROR]
        counts = ", ".join(f"{self.by_status[s]} {s}" for s in order + sorted(set(self.by_status) - set(order))
                           if s in self.by_status)
        text = f"{self.total} input{'s' if self.total != 1 else ''}" + (f": {counts}" if counts else "")
        if self.median_apothem is not None:
            text += f"; median certified apothem {self.median_apothem:.4g}"
        if self.median_seconds is not None:
            text += f"; median {self.median_seconds:.3g} s, total {self.seconds:.3g} s"
        return text

