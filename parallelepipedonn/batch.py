"""Batch certification into a resumable results store (:mod:`parallelepipedonn.store`).

:func:`certify_batch` certifies a list of :class:`BatchInput` (the files of a directory,
or images of a dataset) one after the other and commits each result to the store as
soon as it is known. Inputs the store already holds for the same run configuration
(and the same content) are skipped, so running the same batch again resumes it.

The per-input time limit is enforced by running the certifications in a worker process
(started once, with the network) and killing it when an input overruns the limit: that
input is stored as ``unknown`` with the reason, never as certified, and a fresh worker
takes the next input. The worker's start-up is not counted against any input.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .box import Box
from .certificate import Certificate
from .certify import CertifyConfig, build_oracles, certify, resolve_domain
from .datasets import Dataset
from .errors import ConfigError, InputDataError, ParallelepipedoNNError
from .inputs import as_network_input, read_input_file
from .io_utils import sha256_file
from .network import Network
from .search import Status, make_search
from .store import ERROR, ResultStore, StoredResult

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
def run_config(network: Network, config: CertifyConfig, *, label: int | None, domain: Box,
               model_sha256: str | None, time_limit: float | None) -> dict[str, Any]:
    """Everything that determines a result, as JSON (its hash is the store's ``config_key``)."""
    search = make_search(config.algorithm, precision=config.precision)

    def dom(a: FloatArray) -> float | str:
        return float(a[0]) if (a == a[0]).all() else hashlib.sha256(a.tobytes()).hexdigest()

    return {
        "model_sha256": model_sha256 or f"ir:{network.digest}",
        "algorithm": search.name, "algorithm_settings": search.settings(), "oracle": config.oracle_name,
        "certify_config": asdict(config),  # every option, present and future
        "label": label, "domain": [dom(domain.lower), dom(domain.upper)], "time_limit": time_limit,
    }


# -- running one input -----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Setup:
    network: Network
    config: CertifyConfig
    domain: Box
    model_path: str | None
    model_sha256: str | None


def _certify_one(setup: _Setup, x: FloatArray, label: int | None, true_label: int | None) -> tuple[str, Any]:
    """``("ok", certificate)``, ``("error", message)`` for an input the library rejects,
    or ``("internal", message)``."""
    try:
        return "ok", certify(setup.network, x, label, domain=setup.domain, config=setup.config,
                             model_path=setup.model_path, model_sha256=setup.model_sha256, true_label=true_label)
    except ParallelepipedoNNError as exc:
        return "error", str(exc)
    except Exception as exc:  # recorded (as an error, never a result) so that the batch goes on
        log.debug("internal error", exc_info=True)
        return "internal", f"internal error: {type(exc).__name__}: {exc}"


def _worker_main(conn: Connection, setup: _Setup) -> None:
    """The worker process: certify each task it receives until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(_certify_one(setup, *task))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    """A spawned process running :func:`_certify_one`, killed when it overruns a time limit."""

    def __init__(self, setup: _Setup) -> None:
        self.setup = setup
        self.proc: Any = None
        self.conn: Connection | None = None

    def start(self) -> None:
        """Start the process (if it is not running) and wait until it is ready."""
        if self.proc is not None:
            return
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, self.setup), daemon=True)
        self.proc.start()
        child.close()
        try:
            ready = self.conn.recv()
        except (EOFError, OSError):
            ready = None
        if ready != "ready":
            self.close()
            raise RuntimeError("the certification worker process did not start")

    def run(self, task: tuple, time_limit: float) -> tuple[str, Any]:
        self.start()
        assert self.conn is not None
        self.conn.send(task)
        if not self.conn.poll(time_limit):
            self.close()
            return "timeout", f"time limit of {time_limit:g} s reached (the search was stopped)"
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.close()
            return "internal", f"the worker process died (exit code {code})"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- the batch -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchReport:
    """What a call of :func:`certify_batch` did."""

    config_key: str
    total: int
    skipped: int
    computed: int
    errors: tuple[tuple[str, str], ...]  # (input_id, reason) of the inputs stored as errors
    internal_errors: int


def certify_batch(network: Network, inputs: Sequence[BatchInput], store: ResultStore | str | Path, *,
                  config: CertifyConfig | None = None, label: int | None = None, domain: Box | None = None,
                  model_path: str | None = None, time_limit: float | None = None,
                  progress: bool | None = False) -> BatchReport:
    """Certify every input not yet in ``store`` for this configuration; commit each result
    as soon as it is known.

    ``label`` (default: each input's prediction) and ``domain`` (default ``[0, 1]^n``)
    apply to all inputs. ``time_limit`` (seconds per input) runs the certifications in a
    worker process killed on time-out (the input is then ``unknown``). ``progress``:
    a progress bar on stderr (``None``: only on a terminal). ``store`` may be a path: it
    is opened (created) only once the arguments are checked, and closed at the end.
    """
    config = config or CertifyConfig()
    dom = resolve_domain(domain, network.n_inputs)
    if label is not None:
        label = network.check_label(label)
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"the time limit must be positive, got {time_limit}")
    build_oracles(network, config)  # reject bad oracle names and options before any work
    ids = [i.input_id for i in inputs]
    if len(set(ids)) != len(ids):
        raise ConfigError("two inputs of the batch have the same identity")
    if not isinstance(store, ResultStore):
        with ResultStore(store) as opened:
            return certify_batch(network, inputs, opened, config=config, label=label, domain=dom,
                                 model_path=model_path, time_limit=time_limit, progress=progress)
    model_sha256 = sha256_file(model_path) if model_path is not None else None
    key = store.add_config(run_config(network, config, label=label, domain=dom, model_sha256=model_sha256,
                                      time_limit=time_limit))
    setup = _Setup(network, config, dom, model_path, model_sha256)
    done = store.done_keys(key)
    todo = [(item, item.fingerprint()) for item in inputs]
    todo = [(item, fp) for item, fp in todo if done.get(item.input_id) != fp]
    for item, _ in todo:
        if item.input_id in done:
            log.warning("input %s changed since it was stored: certifying it again", item.input_id)
    errors: list[tuple[str, str]] = []
    internal = 0
    worker = _Worker(setup) if time_limit is not None else None
    bar = tqdm(total=len(inputs), initial=len(inputs) - len(todo), desc="certify", unit="input",
               disable=None if progress is None else not progress, dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():
            for item, fp in todo:
                row, kind = _run_one(item, fp, key, setup, label, worker, time_limit)
                store.put(row)
                if row.status == ERROR:
                    errors.append((item.input_id, row.reason))
                    internal += kind == "internal"
                    log.warning("%s", row.reason if item.input_id in row.reason else f"{item.input_id}: {row.reason}")
                bar.update(1)
                bar.set_postfix_str(row.status, refresh=False)
    finally:
        bar.close()
        if worker is not None:
            worker.close()
    return BatchReport(key, len(inputs), len(inputs) - len(todo), len(todo), tuple(errors), internal)


def _run_one(item: BatchInput, fingerprint: str, key: str, setup: _Setup, label: int | None,
             worker: _Worker | None, time_limit: float | None) -> tuple[StoredResult, str]:
    """Read and certify one input (in the worker, if any): its row, and how it ended
    (``ok``, ``timeout``, ``error`` or ``internal``)."""
    if worker is not None:
        worker.start()  # its start-up does not count against the input's time
    start, predicted = time.perf_counter(), None
    try:
        x = as_network_input(item.read(), setup.network.input_shape, setup.domain, f"input {item.input_id!r}")
    except InputDataError as exc:
        kind, payload = "error", str(exc)
    else:
        predicted = int(setup.network.predict(x)[0])
        task = (x, label, item.true_label)
        kind, payload = worker.run(task, time_limit) if worker is not None else _certify_one(setup, *task)
    if kind == "ok":
        cert: Certificate = payload
        return StoredResult.from_certificate(key, item.input_id, fingerprint, cert), kind
    status = Status.UNKNOWN.value if kind == "timeout" else ERROR
    return StoredResult(key, item.input_id, fingerprint, status, payload, label=predicted if label is None else label,
                        predicted_label=predicted, true_label=item.true_label,
                        seconds=time.perf_counter() - start), kind
