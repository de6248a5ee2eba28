"""Batch certification into a resumable results store (:mod:`parallelepipedonn.store`).

:func:`certify_batch` certifies a list of :class:`BatchInput` (the files of a directory,
or images of a dataset) through an executor (:mod:`parallelepipedonn.executors`:
``local``, one input after the other on this machine, the default; or ``ray``, a Ray
cluster) and commits the results to the store as they come back: this process is the
store's only writer, and commits each group of results that are ready together in one
transaction. Inputs the store already holds for the same run configuration (and the
same content) are skipped, so running the same batch again resumes it.

The per-input time limit is enforced by the executor: an input that overruns it is
stored as ``unknown`` with the reason, never as certified (the local executor runs the
certifications in a worker process, started once with the network, and kills it; the
worker's start-up is not counted against any input).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .box import Box
from .certificate import Certificate
from .certify import CertifyConfig, check_config, resolve_domain
from .datasets import Dataset
from .errors import ConfigError, InputDataError, LabelError
from .executors import DEFAULT_EXECUTOR, make_executor
from .executors.base import Executor, Outcome, Setup, Task
from .inputs import as_network_input, read_input_file
from .io_utils import sha256_file
from .network import Network
from .progress import Progress
from .search import Status, make_search
from .store import ERROR, ResultStore, StoredResult
from .threads import current_threads

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

INPUT_SUFFIXES = (".npy", ".csv", ".png")


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BatchInput:
    """One input of a batch: a file (``path``) or given ``values``, identified in the
    store by ``input_id``."""

    input_id: str
    path: Path | None = None
    values: FloatArray | None = None
    true_label: int | None = None

    def read(self) -> FloatArray:
        """The input's numbers (:class:`InputDataError` if the file cannot be read)."""
        if self.path is not None:
            return read_input_file(self.path)
        assert self.values is not None
        return np.asarray(self.values, dtype=np.float64)

    def fingerprint(self) -> str:
        """SHA-256 of the content (file bytes, or the float64 values); ``"unreadable"``
        for a file that cannot be read."""
        if self.path is not None:
            try:
                return sha256_file(self.path)
            except OSError:
                return "unreadable"
        a = np.ascontiguousarray(self.values, dtype=np.float64)
        return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def inputs_from_directory(directory: str | Path) -> list[BatchInput]:
    """Every ``.npy``, ``.csv`` and ``.png`` file of ``directory`` (not its
    sub-directories), sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise InputDataError(f"input directory {str(d)!r} " + ("is not a directory" if d.exists()
                                                                else "does not exist"))
    try:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith(".")
                       and not p.is_dir())
    except OSError as exc:
        raise InputDataError(f"cannot list input directory {str(d)!r}: {exc.strerror or exc}") from exc
    if not files:
        raise InputDataError(f"input directory {str(d)!r} has no input files ({', '.join(INPUT_SUFFIXES)})")
    return [BatchInput(str(p.resolve()), path=p) for p in files]


# -- true labels of input files -------------------------------------------------------------
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _check_class(label: int, n_classes: int | None, where: str) -> None:
    if n_classes is not None and not 0 <= label < n_classes:
        raise LabelError(f"{where}: label {label} is not a class of the network (0..{n_classes - 1})")


def _file_inputs(inputs: Sequence[BatchInput], how: str) -> None:
    if any(item.path is None for item in inputs):
        raise ConfigError(f"{how} gives the true labels of input files, not of dataset images")


def labels_from_file(path: str | Path, inputs: Sequence[BatchInput], *,
                     n_classes: int | None = None) -> list[BatchInput]:
    """``inputs`` (files) with their true labels from the CSV file ``path``: one
    ``file name,label`` row per file (a first row whose label is not an integer, such as
    ``file,label``, is a header; blank lines and lines starting with ``#`` are skipped).

    A name without a directory part matches the input file of that base name; a name with
    one (``inputs/4-5.csv``, or absolute) matches the file it names, relative to the
    labels file's directory or to the current directory. Rows that match no input are
    ignored. Every input must match a row (two rows matching one input must agree), and
    with ``n_classes`` every label used must be a class of the network; otherwise
    :class:`InputDataError` (:class:`LabelError` for a label out of range).
    """
    _file_inputs(inputs, "a labels file")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputDataError(f"cannot read labels file {str(p)!r}: {detail}") from exc
    names = {item.path.name for item in inputs if item.path is not None}
    bases = {p.parent.resolve(), Path.cwd().resolve()}
    found: dict[tuple[str, str], dict[int, int]] = {}  # (kind, name) -> {label: line}
    first = True
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in row]
        if not any(fields) or fields[0].startswith("#"):
            continue
        where = f"labels file {str(p)!r} line {line}"
        if len(fields) != 2 or not fields[0]:
            raise InputDataError(f"{where}: expected 'file name,label', got {','.join(row)!r}")
        name, label_text = fields
        if not _INTEGER.fullmatch(label_text):
            if first and name not in names:
                first = False
                continue  # a header
            raise InputDataError(f"{where}: the label {label_text!r} of {name!r} is not an integer")
        first = False
        label = int(label_text)
        if Path(name).name == name:
            keys = {("name", name)}
        else:
            keys = {("path", str((base / name).resolve())) for base in bases}
        for key in keys:
            found.setdefault(key, {}).setdefault(label, line)
    out, missing = [], []
    for item in inputs:
        assert item.path is not None
        labels: dict[int, int] = {**found.get(("name", item.path.name), {}),
                                  **found.get(("path", str(item.path.resolve())), {})}
        if not labels:
            missing.append(item.path.name)
            continue
        if len(labels) > 1:
            raise InputDataError(f"labels file {str(p)!r} gives {item.path.name!r} different labels "
                                 f"(lines {', '.join(map(str, sorted(labels.values())))})")
        (label, line), = labels.items()
        _check_class(label, n_classes, f"labels file {str(p)!r} line {line} ({item.path.name!r})")
        out.append(replace(item, true_label=label))
    if missing:
        raise InputDataError(f"labels file {str(p)!r} has no label for {len(missing)} input file(s): "
                             f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    return out


def labels_from_name(pattern: str, inputs: Sequence[BatchInput], *,
                     n_classes: int | None = None) -> list[BatchInput]:
    """``inputs`` (files) with their true labels read from their file names:
    ``pattern`` (a regular expression with one capture group, the integer label) is
    searched in each file's base name, e.g. ``^(\\d+)-`` gives ``4-5.csv`` the label 4.
    :class:`ConfigError` for a bad pattern, :class:`InputDataError` for a name it does
    not match or that gives no integer, :class:`LabelError` for a label out of range
    (with ``n_classes``)."""
    _file_inputs(inputs, "a label pattern")
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"the label pattern '{pattern}' is not a regular expression: {exc}") from exc
    if rx.groups != 1:
        raise ConfigError(f"the label pattern '{pattern}' has {rx.groups} capture groups: it needs exactly one, "
                          r"the label (e.g. '^(\d+)-')")
    out = []
    for item in inputs:
        assert item.path is not None
        name = item.path.name
        m = rx.search(name)
        if m is None or m.group(1) is None:
            raise InputDataError(f"the label pattern '{pattern}' does not match the input file name {name!r}")
        if not _INTEGER.fullmatch(m.group(1).strip()):
            raise InputDataError(f"the label pattern '{pattern}' gives {m.group(1)!r} for {name!r}, not an "
                                 "integer label")
        label = int(m.group(1))
        _check_class(label, n_classes, f"the label pattern '{pattern}' on {name!r}")
        out.append(replace(item, true_label=label))
    return out


#: The most indices :func:`parse_indices` expands (far more images than any dataset here).
MAX_INDICES = 10_000_000


def parse_indices(spec: str) -> tuple[int, ...]:
    """Dataset indices from ``"0:100"`` (end excluded), ``"0-99"`` (end included),
    ``"7"`` or a comma-separated list of these; in the order given, without repeats."""
    out: dict[int, None] = {}
    for part in (p.strip() for p in spec.split(",")):
        try:
            if ":" in part:
                a, b = part.split(":")
                items = range(int(a), int(b))
            elif "-" in part:
                a, b = part.split("-")
                items = range(int(a), int(b) + 1)
            else:
                items = range(int(part), int(part) + 1)
        except ValueError as exc:
            raise ConfigError(f"bad index range {part!r} in {spec!r}: expected N, A:B, A-B or a comma list") from exc
        if not items or items.start < 0:
            raise ConfigError(f"bad index range {part!r}: empty, or negative indices")
        if len(out) + len(items) > MAX_INDICES:
            raise ConfigError(f"the index range {spec!r} has more than {MAX_INDICES:,} indices")
        out.update(dict.fromkeys(items))
    if not out:
        raise ConfigError(f"the index range {spec!r} is empty")
    return tuple(out)


def inputs_from_dataset(data: Dataset, indices: Sequence[int]) -> list[BatchInput]:
    """The images ``indices`` of ``data`` (all checked before any work)."""
    inputs = []
    for i in indices:
        image, true_label = data[i]
        inputs.append(BatchInput(f"{data.name}:{data.split}:{i}", values=image, true_label=true_label))
    return inputs


# -- configuration ---------------------------------------------------------------------------
def run_config(network: Network, config: CertifyConfig, *, label: int | str | None, domain: Box,
               model_sha256: str | None, time_limit: float | None) -> dict[str, Any]:
    """Everything that determines a result, as JSON (its hash is the store's ``config_key``).

    ``label``: the class certified for every input, ``None`` for each input's prediction,
    ``"true"`` for each input's true label. True labels are not part of it: they are
    per-input data, kept in each row."""
    search = make_search(config.algorithm, precision=config.precision)

    def dom(a: FloatArray) -> float | str:
        return float(a[0]) if (a == a[0]).all() else hashlib.sha256(a.tobytes()).hexdigest()

    return {
        "model_sha256": model_sha256 or f"ir:{network.digest}",
        "algorithm": search.name, "algorithm_settings": search.settings(), "oracle": config.oracle_name,
        "certify_config": _config_record(config),
        "label": label, "domain": [dom(domain.lower), dom(domain.upper)], "time_limit": time_limit,
    }


def _config_record(config: CertifyConfig) -> dict[str, Any]:
    """Every option of ``config`` (present and future), less the ``epsilon`` question's
    when it is not asked: stores written before it existed keep their configuration keys."""
    record = asdict(config)
    if config.epsilon is None:
        record.pop("epsilon")
        record.pop("epsilon_oracle")
    return record


# -- the batch -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchReport:
    """What a call of :func:`certify_batch` did."""

    config_key: str
    total: int
    skipped: int
    computed: int
    errors: tuple[tuple[str, str], ...]  # (input_id, reason) of the inputs stored as errors
    internal_errors: int  # errors that are not the input's fault (internal, or lost by the executor)
    relabelled: int = 0  # skipped inputs whose stored true label was updated
    executor: str = DEFAULT_EXECUTOR  # where the inputs were certified (e.g. "ray: 2 nodes, 4 CPUs")


def certify_batch(network: Network, inputs: Sequence[BatchInput], store: ResultStore | str | Path, *,
                  config: CertifyConfig | None = None, label: int | None = None, domain: Box | None = None,
                  model_path: str | None = None, time_limit: float | None = None,
                  progress: bool | None = False, certify_true_label: bool = False,
                  executor: Executor | str | None = None) -> BatchReport:
    """Certify every input not yet in ``store`` for this configuration; commit the
    results as they come back (each group that is ready together in one transaction).

    ``label`` (default: each input's prediction) and ``domain`` (default ``[0, 1]^n``)
    apply to all inputs; ``certify_true_label`` certifies each input's ``true_label``
    instead (every input needs one). An input's ``true_label`` is recorded in its row (for
    accuracy); an input already stored whose true label changed gets the new one without
    being certified again, unless it is the label certified. ``time_limit`` (seconds per
    input): an input that runs longer is stored as ``unknown``. ``executor``: an
    :class:`~parallelepipedonn.executors.base.Executor` or its name (default ``local``,
    see :mod:`parallelepipedonn.executors`). ``progress``: a status line on stderr (inputs
    done, certified, rate, time left; ``None``: only on a terminal). ``store`` may be a
    path: it is opened (created) only once the arguments are checked, and closed at the end.
    """
    network.check_classifier("certify")
    config = config or CertifyConfig()
    dom = resolve_domain(domain, network)
    if label is not None:
        if certify_true_label:
            raise ConfigError("give a label to certify, or certify each input's true label, not both")
        label = network.check_label(label)
    for item in inputs:
        if item.true_label is not None:
            if not 0 <= item.true_label < network.n_classes:
                raise LabelError(f"input {item.input_id}: the true label {item.true_label} is not a class of the "
                                 f"network (0..{network.n_classes - 1})")
        elif certify_true_label:
            raise ConfigError(f"input {item.input_id} has no true label to certify")
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"the time limit must be positive, got {time_limit}")
    check_config(network, config)  # bad algorithms, oracle names and options, an oracle the algorithm cannot use
    ids = [i.input_id for i in inputs]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"two inputs of the batch have the same identity {twice!r} (e.g. a link to another file "
                          "of the batch)")
    if not isinstance(executor, Executor):
        executor = make_executor(executor or DEFAULT_EXECUTOR)
    if not isinstance(store, ResultStore):
        with ResultStore(store) as opened:
            return certify_batch(network, inputs, opened, config=config, label=label, domain=dom,
                                 model_path=model_path, time_limit=time_limit, progress=progress,
                                 certify_true_label=certify_true_label, executor=executor)
    model_sha256 = network.model_digest(model_path)
    key = store.add_config(run_config(network, config, label="true" if certify_true_label else label, domain=dom,
                                      model_sha256=model_sha256, time_limit=time_limit))
    setup = Setup(network, config, dom, model_path, model_sha256, threads=current_threads())
    done = store.done_keys(key)
    stored_labels = store.done_labels(key) if done else {}
    todo, relabelled = [], 0
    for item in inputs:
        fp = item.fingerprint()
        if done.get(item.input_id) != fp:
            if item.input_id in done:
                log.warning("input %s changed since it was stored: certifying it again", item.input_id)
            todo.append((item, fp))
            continue
        stored_label, stored_true = stored_labels[item.input_id]
        if certify_true_label and stored_label != item.true_label:
            log.warning("the true label of input %s changed since it was stored: certifying it again",
                        item.input_id)
            todo.append((item, fp))
        elif item.true_label is not None and item.true_label != stored_true:
            store.set_true_label(key, item.input_id, item.true_label)
            relabelled += 1
    if relabelled:
        log.info("updated the true label of %d stored input(s)", relabelled)
    if not todo:  # nothing to compute: no executor (a cluster) is started
        return BatchReport(key, len(inputs), len(inputs), 0, (), 0, relabelled, executor.name)
    errors: list[tuple[str, str]] = []
    internal = 0
    tally = _Tally(len(inputs), len(inputs) - len(todo), executor.name)
    tasks = _tasks([item for item, _ in todo], setup, label, certify_true_label)
    with Progress("certify", enabled=progress, delay=2.0) as status, \
            closing(executor.run(setup, tasks, time_limit)) as groups:
        status(tally.message())
        for group in groups:
            rows = [_row(key, todo[task.number][1], task, outcome) for task, outcome in group]
            store.put_many(rows)
            for (task, outcome), row in zip(group, rows):
                tally.add(row.status)
                if row.status == ERROR:
                    errors.append((task.input_id, row.reason))
                    internal += outcome.kind in ("internal", "lost")
                    status.clear()
                    log.warning("%s", row.reason if task.input_id in row.reason else f"{task.input_id}: {row.reason}")
            status(tally.message())
    return BatchReport(key, len(inputs), len(inputs) - len(todo), len(todo), tuple(errors), internal, relabelled,
                       executor.describe())


def _tasks(items: Sequence[BatchInput], setup: Setup, label: int | None, certify_true_label: bool) -> Iterator[Task]:
    """The tasks of ``items``, read one at a time (as the executor asks for them): each
    input checked against the network and domain, with the network's prediction."""
    for number, item in enumerate(items):
        certified = item.true_label if certify_true_label else label
        try:
            x = as_network_input(item.read(), setup.network.input_shape, setup.domain, f"input {item.input_id!r}")
        except InputDataError as exc:
            yield Task(number, item.input_id, None, certified, item.true_label, None, error=str(exc))
            continue
        yield Task(number, item.input_id, x, certified, item.true_label, int(setup.network.predict(x)[0]))


def _row(key: str, fingerprint: str, task: Task, outcome: Outcome) -> StoredResult:
    """The store's row for a task's outcome (no certificate unless ``ok``)."""
    if outcome.kind == "ok":
        cert: Certificate = outcome.payload
        return StoredResult.from_certificate(key, task.input_id, fingerprint, cert)
    status = Status.UNKNOWN.value if outcome.kind == "timeout" else ERROR
    return StoredResult(key, task.input_id, fingerprint, status, str(outcome.payload),
                        label=task.predicted if task.label is None else task.label, predicted_label=task.predicted,
                        true_label=task.true_label, seconds=outcome.seconds)


class _Tally:
    """The progress of a batch: inputs done, certified, rate and time left."""

    def __init__(self, total: int, skipped: int, executor: str) -> None:
        self.total, self.skipped, self.executor = total, skipped, executor
        self.computed = self.certified = 0
        self.start = time.perf_counter()

    def add(self, status: str) -> None:
        self.computed += 1
        self.certified += status == Status.CERTIFIED.value

    def message(self) -> str:
        done = self.skipped + self.computed
        text = f"{done}/{self.total} inputs"
        if self.skipped:
            text += f" ({self.skipped} stored before)"
        if not self.computed:
            return text + f", starting ({self.executor} executor)"
        rate = self.computed / max(time.perf_counter() - self.start, 1e-9)
        text += f", {self.certified} certified, {rate:.3g} inputs/s"
        if done < self.total:
            text += f", {_duration((self.total - done) / rate)} left"
        return text


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``2 h 07 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
