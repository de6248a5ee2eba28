"""Executors of batch certification. The ``ray`` executor, on a two-node Ray cluster that
the tests start on this machine (one CPU per node, two in all), stores the rows the
``local`` executor stores; a rerun computes only the new inputs; a worker process
SIGKILLed in the middle of a task, or a node removed in the middle of a run, loses and
duplicates nothing (a task that still fails is stored as ``error`` with Ray's reason and
certified by the next run); Ctrl-C cancels the tasks in flight and keeps the rows
committed; a time limit gives ``unknown``, enforced in the worker or,
as a backstop, by the driver. The Ray tests are skipped without Ray (``pip install -e
".[ray]"``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from parallelepipedonn import executors
from parallelepipedonn.batch import BatchInput, certify_batch
from parallelepipedonn.certify import CertifyConfig
from parallelepipedonn.errors import ConfigError
from parallelepipedonn.executors import executor_names, make_executor, register_executor
from parallelepipedonn.executors.base import Setup, Task
from parallelepipedonn.executors.local import LocalExecutor
from parallelepipedonn.onnx_export import save_onnx
from parallelepipedonn.store import ResultStore
from tests.nets import random_network
from tests.test_batch import count_rows
from tests.test_cli import run

FAST = CertifyConfig(algorithm="apothem-bisection", precision=1e-5, falsifier=None)  # tens of ms per input
SLOW = CertifyConfig(algorithm="apothem-linear", precision=1e-3, falsifier=None)  # about 0.4 s per input
STUCK = CertifyConfig(algorithm="box-linear", precision=1e-7, falsifier=None)  # minutes per input
VOLATILE = ("created", "seconds")  # what may differ between two runs of the same input
TASK_TITLE = b"ray::parallelepipedonn-certify"  # a Ray worker process while it runs one of our tasks


@pytest.fixture(scope="module")
def net():
    return random_network(3, [16, 32, 32, 4])


def points(n: int, seed: int = 0) -> list[BatchInput]:
    return [BatchInput(f"p{i:02d}", values=x) for i, x in enumerate(np.random.default_rng(seed).random((n, 16)))]


def rows(store: Path) -> dict[str, dict]:
    """Each input's row, certificate parsed (without timestamps and timings), by input id;
    one row per id."""
    with ResultStore(store, read_only=True) as s:
        stored = s.rows()
    assert len({r.input_id for r in stored}) == len(stored)
    out = {}
    for r in stored:
        row = {k: v for k, v in vars(r).items() if k not in VOLATILE}
        if r.certificate is not None:
            row["certificate"] = {k: v for k, v in json.loads(r.certificate).items() if k not in VOLATILE}
        out[r.input_id] = row
    return out


# -- the registry and the local executor (no Ray needed) -------------------------------------
def test_executors_are_made_by_name():
    assert executor_names()[0] == "local" and "ray" in executor_names()
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ConfigError, match="unknown executor 'nope'"):
        make_executor("nope")
    with pytest.raises(ConfigError, match="one input at a time"):
        make_executor("local", workers=2)
    with pytest.raises(ConfigError, match="use it with --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(ConfigError, match="exists already"):
        register_executor("local", LocalExecutor)


def test_a_registered_executor_runs_a_batch(net, tmp_path, monkeypatch):
    class Reversed(LocalExecutor):
        """The local executor, backwards, all results in one group."""

        name = "reversed"

        def run(self, setup, tasks, time_limit):
            yield [pair for group in super().run(setup, list(tasks)[::-1], time_limit) for pair in group]

    monkeypatch.setattr(executors, "_REGISTRY", dict(executors._REGISTRY))
    register_executor("reversed", Reversed)
    inputs = points(3)
    report = certify_batch(net, inputs, tmp_path / "r.db", config=FAST, executor="reversed")
    assert (report.computed, report.executor) == (3, "reversed")
    local = certify_batch(net, inputs, tmp_path / "l.db", config=FAST)
    assert rows(tmp_path / "r.db") == rows(tmp_path / "l.db") and local.executor == "local"


def test_ray_executor_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="not a Ray Client address"):
        make_executor("ray", address="ray://head:10001")
    with pytest.raises(ConfigError, match="bad Ray address"):
        make_executor("ray", address="head")
    monkeypatch.chdir(tmp_path)
    for argv, message in [(["--executor", "ray", "--address", "x y"], "bad Ray address"),
                          (["--address", "auto"], "--address is for --executor ray"),
                          (["--workers", "2"], "--workers is for --executor ray"),
                          (["--executor", "ray", "--workers", "0"], "must be at least 1")]:
        code, _, err = run(capsys, "certify", "--dataset", "mnist", "--indices", "0:2", "--store", "r.db", *argv)
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--executor", "ray")
    assert code == 2 and "--executor is for a batch" in err
    monkeypatch.setattr("parallelepipedonn.executors.ray_cluster.find_spec", lambda name: None)
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--indices", "0:2", "--store", "r.db",
                       "--executor", "ray")
    assert code == 2 and 'pip install -e ".[ray]"' in err and err.count("\n") == 1
    assert not (tmp_path / "r.db").exists()


def test_the_worker_timer_stops_a_search_and_restores_the_signal_handler(net):
    pytest.importorskip("ray")
    from parallelepipedonn.executors.ray_cluster import _with_time_limit

    before = signal.getsignal(signal.SIGALRM)
    setup = Setup(net, STUCK, None, None, None)
    x = np.random.default_rng(1).random(16)
    start = time.perf_counter()
    outcome = _with_time_limit(setup, Task(0, "x", x, None, None, 0), 0.3)
    assert outcome.kind == "timeout" and outcome.payload == "time limit of 0.3 s reached (the search was stopped)"
    assert 0.3 <= outcome.seconds < 5 and time.perf_counter() - start < 5
    assert signal.getsignal(signal.SIGALRM) is before
    fast = _with_time_limit(Setup(net, FAST, None, None, None), Task(0, "x", x, None, None, 0), 30.0)
    assert fast.kind == "ok" and fast.payload.status.value == "certified"


def test_the_worker_timer_stops_a_search_whose_first_alarm_fell_in_a_finaliser(net, monkeypatch):
    """Python drops an exception raised in a finaliser or a garbage-collector callback
    ("Exception ignored in ..."): when one runs as the alarm fires, the timer's next alarm
    stops the search. (One alarm alone left such a search running for minutes and hung the
    suite: the alarm fell in hypothesis's ``gc.callbacks`` hook, installed in a pytest worker
    that had run hypothesis tests before.)"""
    from parallelepipedonn.executors import ray_cluster

    def busy(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    class Finaliser:
        def __del__(self) -> None:
            busy(0.5)  # the alarm, at 0.2 s, fires in here

    def search(setup, task):
        Finaliser()  # collected at once: its finaliser runs now
        busy(20.0)  # a search that stops only by the timer
        raise AssertionError("the timer did not stop the search")

    monkeypatch.setattr(ray_cluster, "certify_task", search)
    monkeypatch.setattr("sys.unraisablehook", lambda unraisable: None)  # the dropped exception, not printed
    before = signal.getsignal(signal.SIGALRM)
    start = time.perf_counter()
    outcome = ray_cluster._with_time_limit(Setup(net, STUCK, None, None, None),
                                           Task(0, "x", np.zeros(16), None, None, 0), 0.2)
    assert outcome.kind == "timeout" and outcome.payload == "time limit of 0.2 s reached (the search was stopped)"
    assert time.perf_counter() - start < 0.2 + 2 * ray_cluster.ALARM_REPEAT
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


class _SetupThatDoesNotPickle(Setup):
    def __reduce__(self):
        raise TypeError("this setup does not pickle")


class _SetupThatEndsItsWorker(Setup):
    def __reduce__(self):
        return os._exit, (3,)  # the worker process exits as it reads the setup


@pytest.mark.parametrize("setup_type, reason", [
    (_SetupThatDoesNotPickle, "the certification worker process could not be started: TypeError: this setup does "
                              "not pickle"),
    (_SetupThatEndsItsWorker, "the certification worker process did not start (exit code 3)"),
])
def test_a_worker_that_cannot_start_makes_each_input_an_internal_error_and_the_batch_goes_on(net, setup_type, reason):
    setup = setup_type(net, FAST, None, None, None)
    tasks = [Task(i, f"p{i}", x, None, None, 0) for i, x in enumerate(np.random.default_rng(0).random((2, 16)))]
    groups = list(LocalExecutor().run(setup, tasks, 30.0))
    assert [(task.input_id, outcome.kind, outcome.payload) for [(task, outcome)] in groups] == \
        [("p0", "internal", reason), ("p1", "internal", reason)]


def test_a_worker_that_died_while_idle_is_replaced_and_the_batch_goes_on(net):
    setup = Setup(net, FAST, None, None, None)
    tasks = [Task(i, f"p{i}", x, None, None, 0) for i, x in enumerate(np.random.default_rng(0).random((2, 16)))]
    groups = LocalExecutor().run(setup, iter(tasks), 1e9)  # a limit beyond what a pipe's poll takes
    [(_, first)] = next(groups)
    assert first.kind == "ok"
    frame = groups.gi_frame.f_locals["worker"]
    os.kill(frame.proc.pid, signal.SIGKILL)  # between two inputs
    frame.proc.join()
    [(_, second)] = next(groups)
    assert second.kind == "ok"
    groups.close()


def test_a_worker_whose_driver_is_gone_exits():
    """A worker whose parent process is gone (killed with no chance to kill it) exits by
    itself instead of running on past every time limit."""
    import subprocess
    import sys

    code = ("import multiprocessing as mp, os, sys, time\n"
            "from parallelepipedonn.executors.local import _orphan_watch\n"
            "def child(parent):\n    _orphan_watch(parent)\n"
            "if __name__ == '__main__':\n"
            "    p = mp.get_context('spawn').Process(target=child, args=(os.getpid(),))\n    p.start()\n"
            "    print(p.pid, flush=True)\n    os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the orphaned worker did not exit")


# -- the ray executor on a two-node cluster --------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of two nodes with one CPU each on this machine, this process its driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="ppn-rt-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_TMPDIR", temp)
        for name, value in [("period_ms", "300"), ("timeout_ms", "300"), ("failure_threshold", "3")]:
            mp.setenv(f"RAY_health_check_{name}", value)  # a node that dies is known dead within a second or two
        cluster = Cluster()
        try:
            cluster.add_node(num_cpus=1)  # the head
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def ray_executor(**options):
    from parallelepipedonn.executors.ray_cluster import RayExecutor

    return RayExecutor(**options)


def task_processes(cluster, nodes=None) -> list[int]:
    """The worker processes of ``nodes`` (default: every node of ``cluster``) running one
    of our tasks now."""
    raylets = {n.all_processes["raylet"][0].process.pid for n in (nodes or cluster.list_all_nodes())}
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            title = (d / "cmdline").read_bytes()
            parent = int((d / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent in raylets and title.startswith(TASK_TITLE):
            found.append(int(d.name))
    return found


def in_background(action, until) -> threading.Thread:
    """Run ``action()`` once ``until()`` holds (polled for up to a minute), in a thread."""
    def wait_then_act():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if until():
                action()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def slow_reference(net, tmp_path_factory) -> tuple[list[BatchInput], dict[str, dict]]:
    """Ten inputs that take about 0.4 s each, and their rows from the local executor."""
    inputs = points(10, seed=7)
    store = tmp_path_factory.mktemp("slow") / "local.db"
    certify_batch(net, inputs, store, config=SLOW)
    return inputs, rows(store)


def test_ray_stores_the_rows_of_the_local_executor(cluster, net, tmp_path):
    inputs = [*points(8), BatchInput("nan", values=np.full(16, np.nan))]  # one unreadable input: an error row
    local = certify_batch(net, inputs, tmp_path / "local.db", config=FAST, executor="local")
    remote = certify_batch(net, inputs, tmp_path / "ray.db", config=FAST, executor=ray_executor())
    assert remote.executor == "ray: 2 nodes, 2 CPUs" and (remote.computed, remote.skipped) == (9, 0)
    assert remote.errors == local.errors and len(remote.errors) == 1 and "non-finite" in remote.errors[0][1]
    assert remote.config_key == local.config_key and remote.internal_errors == 0
    expected = rows(tmp_path / "local.db")
    assert sum(r["status"] == "certified" for r in expected.values()) == 8
    assert rows(tmp_path / "ray.db") == expected


def test_the_command_line_runs_a_batch_on_ray(cluster, net, tmp_path, capsys):
    model, inputs = tmp_path / "net.onnx", tmp_path / "in"
    save_onnx(net, model)
    inputs.mkdir()
    for p in points(3):
        np.save(inputs / f"{p.input_id}.npy", p.values)
    argv = ["certify", "--model", str(model), "--inputs", str(inputs), "--falsifier", "none"]
    code, out, err = run(capsys, *argv, "--store", str(tmp_path / "ray.db"), "--executor", "ray")
    assert code == 0, err
    assert "3 run now" in out and "ray: 2 nodes, 2 CPUs" in out and "3 inputs: 3 certified" in out
    assert run(capsys, *argv, "--store", str(tmp_path / "local.db"))[0] == 0
    assert rows(tmp_path / "ray.db") == rows(tmp_path / "local.db")


def test_a_rerun_computes_only_the_new_inputs(cluster, net, tmp_path):
    store = tmp_path / "r.db"
    first = certify_batch(net, points(5), store, config=FAST, executor=ray_executor())
    before = rows(store)
    with ResultStore(store) as s:
        created = {r.input_id: r.created for r in s.rows()}
    second = certify_batch(net, points(8), store, config=FAST, executor=ray_executor())
    assert (first.computed, second.skipped, second.computed) == (5, 5, 3)
    after = rows(store)
    assert len(after) == 8 and {k: after[k] for k in before} == before
    with ResultStore(store) as s:
        assert {r.input_id: r.created for r in s.rows() if r.input_id in created} == created  # not rewritten
    third = certify_batch(net, points(8), store, config=FAST, executor=ray_executor())
    assert (third.skipped, third.computed, third.executor) == (8, 0, "ray")  # nothing to run: the executor not used


def test_a_worker_killed_mid_task_is_retried_and_each_input_stored_once(cluster, net, slow_reference, tmp_path):
    inputs, expected = slow_reference
    store, killed = tmp_path / "r.db", []

    def kill():
        pid = task_processes(cluster)[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = in_background(kill, lambda: count_rows(store) >= 1 and task_processes(cluster))
    report = certify_batch(net, inputs, store, config=SLOW, executor=ray_executor())
    thread.join()
    assert killed, "no task was seen running"
    assert report.computed == len(inputs) and report.errors == ()
    assert count_rows(store) == len(inputs) and rows(store) == expected


def test_ctrl_c_cancels_the_tasks_in_flight_and_keeps_the_committed_rows(cluster, net, slow_reference, tmp_path,
                                                                          monkeypatch):
    inputs, expected = slow_reference
    store = tmp_path / "r.db"
    put_many = ResultStore.put_many

    def commit_then_ctrl_c(self, results):  # Ctrl-C in the driver once two rows are committed
        put_many(self, results)
        if count_rows(store) >= 2:
            raise KeyboardInterrupt

    # deterministic, unlike a timed _thread.interrupt_main: inputs certified faster than
    # the interrupt arrives would finish the batch first, and the interrupt hit later code
    monkeypatch.setattr(ResultStore, "put_many", commit_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        certify_batch(net, inputs, store, config=SLOW, executor=ray_executor())
    monkeypatch.undo()
    done = rows(store)
    assert 2 <= len(done) < len(inputs) and done == {k: expected[k] for k in done}
    deadline = time.monotonic() + 10
    while task_processes(cluster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not task_processes(cluster), "a cancelled task still runs"
    again = certify_batch(net, inputs, store, config=SLOW, executor=ray_executor())
    assert (again.skipped, again.computed) == (len(done), len(inputs) - len(done))
    assert rows(store) == expected


def test_a_task_that_keeps_failing_is_an_error_that_the_next_run_certifies(cluster, net, slow_reference, tmp_path):
    inputs, expected = slow_reference
    inputs = inputs[:4]
    store, killed = tmp_path / "r.db", []

    def kill():
        pid = task_processes(cluster)[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = in_background(kill, lambda: task_processes(cluster))
    report = certify_batch(net, inputs, store, config=SLOW, executor=ray_executor(max_retries=0))
    thread.join()
    assert killed and report.internal_errors == 1 and len(report.errors) == 1
    lost, reason = report.errors[0]
    assert "lost by the Ray executor after 0 retries" in reason
    assert rows(store)[lost]["status"] == "error" and rows(store)[lost]["reason"] == reason
    again = certify_batch(net, inputs, store, config=SLOW, executor=ray_executor())
    assert (again.skipped, again.computed, again.errors) == (3, 1, ())
    assert count_rows(store) == 4 and rows(store) == {i.input_id: expected[i.input_id] for i in inputs}


def test_an_input_over_the_time_limit_is_unknown(cluster, net, tmp_path):
    points_ = np.random.default_rng(1).random((40, 16))
    labels = net.predict(points_)
    inputs = [BatchInput("a-other-class", values=points_[labels != labels[0]][0]),  # fast: not robust for the label
              BatchInput("b-the-class", values=points_[0])]  # far too slow at this precision
    store = tmp_path / "r.db"
    report = certify_batch(net, inputs, store, config=STUCK, label=int(labels[0]), time_limit=1.0,
                           executor=ray_executor())
    assert report.errors == ()
    stored = rows(store)
    fast, slow = stored["a-other-class"], stored["b-the-class"]
    assert fast["status"] == "not-robust" and "classifies the input as" in fast["reason"]
    assert slow["status"] == "unknown" and slow["reason"] == "time limit of 1 s reached (the search was stopped)"
    assert slow["certificate"] is None and slow["apothem"] is None
    with ResultStore(store) as s:
        assert 1 <= next(r.seconds for r in s.rows() if r.input_id == "b-the-class") < 30


def test_the_driver_cancels_a_task_far_over_its_time_limit(cluster, net, tmp_path):
    x = np.random.default_rng(1).random(16)
    store = tmp_path / "r.db"
    start = time.monotonic()
    report = certify_batch(net, [BatchInput("stuck", values=x)], store, config=STUCK, time_limit=0.5,
                           executor=ray_executor(worker_timer=False, backstop_grace=0.0, max_retries=0))
    assert len(report.errors) == 1 and time.monotonic() - start < 30
    (row,) = rows(store).values()  # not a time-out of the search (it may never have run): an error, run again
    assert row["status"] == "error" and row["certificate"] is None
    assert row["reason"].startswith("no result") and "the driver cancelled it; a resume runs it again" in row["reason"]
    assert ResultStore(store, read_only=True).done_keys(report.config_key) == {}


def test_a_node_removed_mid_run_loses_and_duplicates_nothing(cluster, net, slow_reference, tmp_path):
    inputs, expected = slow_reference
    node = next(iter(cluster.worker_nodes))
    store, removed = tmp_path / "r.db", []

    def remove():
        cluster.remove_node(node, allow_graceful=False)  # its processes killed, as when a machine fails
        removed.append(node)

    thread = in_background(remove, lambda: count_rows(store) >= 2 and task_processes(cluster, [node]))
    try:
        report = certify_batch(net, inputs, store, config=SLOW, executor=ray_executor())
        thread.join()
        assert removed, "no task was seen running on the node"
        assert report.computed == len(inputs) and report.errors == ()
        assert count_rows(store) == len(inputs) and rows(store) == expected
    finally:
        thread.join()
        if removed:  # back to two nodes for the tests that follow
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
