"""Batch certification into a resumable results store: a batch killed with SIGKILL and
resumed loses and duplicates nothing; time limits give ``unknown``; configurations do not
collide; a finished batch is not run again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parallelepipedonn.batch import (
    BatchInput,
    certify_batch,
    inputs_from_directory,
    labels_from_file,
    labels_from_name,
    parse_indices,
)
from parallelepipedonn.certify import CertifyConfig
from parallelepipedonn.errors import ConfigError, InputDataError, LabelError, OutputPathError
from parallelepipedonn.onnx_export import save_onnx
from parallelepipedonn.store import ResultStore, StoredResult, Summary
from tests.nets import random_network
from tests.test_cli import run

N_INPUTS, N_FEW = 24, 4
FAST = ("--falsifier", "none")
VOLATILE = ("created", "seconds")  # what may differ between two runs of the same input


def _write_inputs(directory: Path, n: int, seed: int = 0) -> None:
    """``n`` points of [0, 1]^16: .npy files, plus one .csv and one .png; and a file that
    is not an input."""
    directory.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n - 2):
        np.save(directory / f"x{i:02d}.npy", rng.random(16))
    (directory / "x90.csv").write_text(" ".join(f"{v:.6f}" for v in rng.random(16)) + "\n")
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8), mode="L").save(directory / "x91.png")
    (directory / "notes.txt").write_text("not an input\n")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 16-32-32-4 ReLU classifier as ONNX."""
    path = tmp_path_factory.mktemp("model") / "net.onnx"
    save_onnx(random_network(3, [16, 32, 32, 4]), path)
    return path


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """24 inputs: a batch long enough to be killed in the middle."""
    d = tmp_path_factory.mktemp("many") / "inputs"
    _write_inputs(d, N_INPUTS)
    return d


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("few") / "inputs"
    _write_inputs(d, N_FEW)
    return d


def certify_args(model: Path, inputs: Path, store: Path, *extra: str) -> list[str]:
    return ["certify", "--model", str(model), "--inputs", str(inputs), "--store", str(store), *extra]


def cli(*argv: str) -> subprocess.Popen:
    """The command line in a fresh process (one torch thread, as every run of a comparison)."""
    return subprocess.Popen([sys.executable, "-m", "parallelepipedonn.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def results(store: Path) -> dict[str, dict]:
    """Each input's certificate (without timestamps and timings), by input id; one row per id."""
    with ResultStore(store, read_only=True) as s:
        rows = s.rows()
    assert len({r.input_id for r in rows}) == len(rows)
    out = {}
    for r in rows:
        cert = json.loads(r.certificate)
        assert (r.status, r.apothem) == (cert["status"], cert["apothem"])
        out[r.input_id] = {k: v for k, v in cert.items() if k not in VOLATILE}
    return out


def count_rows(store: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_batch_killed_with_sigkill_resumes_with_one_identical_row_per_input(model, many, tmp_path):
    reference, store = tmp_path / "reference.db", tmp_path / "killed.db"
    argv = ("--algorithm", "apothem-bisection", "--precision", "1e-5")  # tens of ms per input
    uninterrupted = cli(*certify_args(model, many, reference, *argv))
    killed = cli(*certify_args(model, many, store, *argv))
    deadline = time.monotonic() + 120
    while count_rows(store) < 2 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    done = count_rows(store)
    assert 0 < done < N_INPUTS, "the kill should land in the middle of the batch"

    resumed = cli(*certify_args(model, many, store, *argv))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{done} already in" in out
    assert uninterrupted.communicate(timeout=300)[0] and uninterrupted.returncode == 0

    expected = results(reference)
    assert len(expected) == N_INPUTS and all(c["status"] == "certified" for c in expected.values())
    assert results(store) == expected


def test_rerunning_a_finished_batch_does_nothing(model, few, tmp_path, capsys):
    store = tmp_path / "r.db"
    assert run(capsys, *certify_args(model, few, store, *FAST))[0] == 0
    with ResultStore(store) as s:
        before = s.rows()
    code, out, err = run(capsys, *certify_args(model, few, store, *FAST))
    assert code == 0, err
    assert f"{N_FEW} already in" in out and "0 run now" in out
    with ResultStore(store) as s:
        assert s.rows() == before


def test_configurations_do_not_collide(model, few, tmp_path, capsys):
    store = tmp_path / "r.db"
    for extra in [FAST, (*FAST, "--precision", "1e-2"), (*FAST, "--label", "1")]:
        assert run(capsys, *certify_args(model, few, store, *extra))[0] == 0
    with ResultStore(store) as s:
        configs = s.configs()
        assert len(configs) == 3
        assert all(len(s.rows(key)) == N_FEW for key in configs)
    code, out, _ = run(capsys, "store", "summary", str(store))
    assert code == 0 and "3 configuration(s)" in out and out.count(f"{N_FEW} inputs") == 3


def test_an_input_over_the_time_limit_is_unknown_with_the_reason(tmp_path, capsys):
    net = random_network(3, [16, 32, 32, 4])
    model, inputs = tmp_path / "net.onnx", tmp_path / "in"
    save_onnx(net, model)
    inputs.mkdir()
    points = np.random.default_rng(1).random((40, 16))
    labels = net.predict(points)
    np.save(inputs / "a-other-class.npy", points[labels != labels[0]][0])  # fast: not robust for the label
    np.save(inputs / "b-the-class.npy", points[0])  # far too slow at this precision
    store = tmp_path / "r.db"
    code, out, err = run(capsys, "certify", "--model", str(model), "--inputs", str(inputs), "--store", str(store),
                         "--label", str(labels[0]), "--algorithm", "box-linear", "--precision", "1e-7",
                         "--time-limit", "2")
    assert code == 0, err
    with ResultStore(store) as s:
        fast, slow = s.rows()
    assert fast.status == "not-robust" and "classifies the input as" in fast.reason
    assert slow.status == "unknown" and "time limit of 2 s" in slow.reason
    assert slow.certificate is None and slow.apothem is None and 2 <= slow.seconds < 30
    assert "1 not-robust, 1 unknown" in out


def test_a_bad_file_is_stored_as_an_error_and_retried_once_fixed(tmp_path, capsys):
    model, inputs = tmp_path / "net.onnx", tmp_path / "in"
    save_onnx(random_network(0, [4, 8, 3]), model)
    inputs.mkdir()
    np.save(inputs / "good.npy", np.full(4, 0.5))
    np.save(inputs / "nan.npy", np.array([0.5, np.nan, 0.5, 0.5]))
    argv = ["certify", "--model", str(model), "--inputs", str(inputs), "--store", str(tmp_path / "r.db"),
            "--falsifier", "none"]
    code, out, err = run(capsys, *argv)
    assert code == 2 and "1 input(s) could not be certified" in err and "non-finite value" in err
    assert "1 certified, 1 error" in out
    np.save(inputs / "nan.npy", np.full(4, 0.25))
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "1 already in" in out and "2 certified" in out


def test_a_changed_input_is_certified_again_in_place(tmp_path):
    net = random_network(0, [4, 8, 3])
    path = tmp_path / "x.npy"
    np.save(path, np.full(4, 0.5))
    store = tmp_path / "r.db"
    cfg = CertifyConfig(falsifier=None)
    certify_batch(net, [BatchInput("x", path=path)], store, config=cfg)
    np.save(path, np.full(4, 0.25))
    report = certify_batch(net, [BatchInput("x", path=path)], store, config=cfg)
    assert report.computed == 1
    with ResultStore(store) as s:
        (row,) = s.rows()
    assert row.to_certificate().input.tolist() == [0.25] * 4


def test_dataset_index_ranges_name_the_same_inputs(tmp_path, capsys):
    store = tmp_path / "r.db"
    code, out, err = run(capsys, "certify", "--dataset", "mnist", "--indices", "0:3", "--store", str(store),
                         "--falsifier", "none")
    assert code == 0, err
    code, out, err = run(capsys, "certify", "--dataset", "mnist", "--indices", "0-2", "--store", str(store),
                         "--falsifier", "none")
    assert code == 0 and "3 already in" in out
    with ResultStore(store) as s:
        rows = s.rows()
    assert [r.input_id for r in rows] == ["mnist:test:0", "mnist:test:1", "mnist:test:2"]
    assert all(r.true_label is not None and r.to_certificate().true_label == r.true_label for r in rows)


@pytest.mark.parametrize("spec, indices", [("0:3", (0, 1, 2)), ("0-2", (0, 1, 2)), ("7", (7,)),
                                           ("5,1-2,5,9:11", (5, 1, 2, 9, 10))])
def test_index_ranges(spec, indices):
    assert parse_indices(spec) == indices


@pytest.mark.parametrize("spec", ["", "a", "3:1", "-1", "1-", "1:2:3", "0:1000000000"])
def test_bad_index_ranges(spec):
    with pytest.raises(ConfigError, match="index range"):
        parse_indices(spec)


def test_a_negative_dataset_index_is_refused_not_a_second_name_for_an_image(tmp_path, capsys):
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "-1", "--store", str(tmp_path / "r.db"))
    assert code == 2 and "out of range" in err, err


def test_the_store_records_the_model_bytes_that_were_read_not_a_file_replaced_since(model, tmp_path):
    import hashlib

    from parallelepipedonn.onnx_import import load_onnx

    path = tmp_path / "net.onnx"
    path.write_bytes(model.read_bytes())
    read = hashlib.sha256(path.read_bytes()).hexdigest()
    network = load_onnx(path)
    save_onnx(random_network(4, [16, 8, 4]), path)  # replaced after it was read
    x = np.random.default_rng(0).random(16)
    report = certify_batch(network, [BatchInput("x", values=x)], tmp_path / "r.db",
                           config=CertifyConfig(precision=1e-2), model_path=str(path))
    with ResultStore(tmp_path / "r.db", read_only=True) as store:
        assert store.configs()[report.config_key]["model_sha256"] == read
        (row,) = store.rows(report.config_key)
        assert row.to_certificate().model_sha256 == read


@pytest.mark.parametrize("values, message", [
    (np.array([0.5 + 0.4j] * 16), "not real numbers"), (None, "npz archive")])
def test_an_input_file_that_is_not_one_real_array_is_an_error_row(tmp_path, values, message, model):
    from parallelepipedonn.onnx_import import load_onnx

    path = tmp_path / "x.npy"
    if values is None:
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(16))
    else:
        np.save(path, values)
    report = certify_batch(load_onnx(model), [BatchInput("x", path=path)], tmp_path / "r.db",
                           config=CertifyConfig(precision=1e-2))
    assert len(report.errors) == 1 and message in report.errors[0][1]


@pytest.mark.parametrize("damage, message", [("schema", "not a results store"), ("apothem", "wrong types")])
def test_a_damaged_store_is_a_one_line_error(model, few, tmp_path, capsys, damage, message):
    store = tmp_path / "r.db"
    assert run(capsys, *certify_args(model, few, store))[0] == 0
    with closing(sqlite3.connect(store)) as db:
        if damage == "schema":
            db.execute("UPDATE meta SET value = 'x' WHERE key = 'schema_version'")
        else:
            db.execute("UPDATE results SET apothem = 'big'")
        db.commit()
    code, _, err = run(capsys, "store", "summary", str(store))
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, message", [
    (["--inputs", "DIR", "--store", "r.db", "--json", "c.json"], "a batch stores every certificate"),
    (["--inputs", "DIR"], "needs --store"),
    (["--inputs", "DIR", "--store", "r.db", "--input", "x.npy"], "give one of"),
    (["--dataset", "mnist", "--indices", "0:2", "--index", "1", "--store", "r.db"], "--indices needs"),
    (["--dataset", "mnist", "--store", "r.db"], "--dataset needs --indices"),
    (["--dataset", "mnist", "--indices", "0:5000", "--store", "r.db"], "out of range"),
])
def test_batch_usage_errors(argv, message, model, few, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(few) if a == "DIR" else a for a in argv]
    code, _, err = run(capsys, "certify", *(["--model", str(model)] if "--inputs" in argv else []), *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "c.json").exists()


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(InputDataError, match="has no input files"):
        inputs_from_directory(tmp_path)


def test_store_api_round_trip(tmp_path):
    with ResultStore(tmp_path / "r.db") as s:
        key = s.add_config({"model_sha256": "abc", "algorithm": "x"})
        s.put(StoredResult(key, "a", "h1", "unknown", "time limit of 1 s reached", seconds=1.0))
        s.put(StoredResult(key, "b", "h2", "error", "bad input"))
        s.put(StoredResult(key, "a", "h1", "unknown", "time limit of 1 s reached", seconds=1.5))
        assert s.done_keys(key) == {"a": "h1"}  # errors are retried
        assert [(r.input_id, r.seconds) for r in s.rows(key)] == [("a", 1.5), ("b", None)]
    with closing(sqlite3.connect(tmp_path / "r.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_that_is_not_a_store_is_refused(tmp_path, model, few, capsys):
    bogus, other = tmp_path / "r.db", tmp_path / "other.db"
    bogus.write_bytes(b"not a database at all" * 100)
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()
    for path in (bogus, other):
        before = path.read_bytes()
        code, _, err = run(capsys, *certify_args(model, few, path))
        assert code == 4 and "results store" in err and err.count("\n") == 1, err
        assert path.read_bytes() == before
    code, _, err = run(capsys, "store", "summary", str(bogus))
    assert code == 2 and "cannot use" in err
    code, _, err = run(capsys, "store", "summary", str(tmp_path / "missing.db"))
    assert code == 2 and "does not exist" in err


# -- true labels and accuracy ----------------------------------------------------------------
def _row(name: str, status: str, label: int | None, predicted: int | None, true: int | None,
         apothem: float | None = None) -> StoredResult:
    return StoredResult("k", name, "h", status, label=label, predicted_label=predicted, true_label=true,
                        apothem=apothem, seconds=0.5)


def test_summary_counts_accuracy_against_the_true_label(tmp_path, capsys):
    rows = [_row("a", "certified", 1, 1, 1, 0.2), _row("b", "certified", 2, 2, 0, 0.3),  # b: misclassified
            _row("c", "not-robust", 0, 0, 0), _row("d", "unknown", 1, 1, 1), _row("e", "error", None, None, 2),
            _row("f", "certified", 1, 1, 1, 0.05), _row("g", "certified", 0, 0, None, 0.4)]
    s = Summary.of(rows, epsilons=(0.1, 1.0))
    assert (s.total, s.labelled, s.correct, s.misclassified, s.certified_accurate) == (7, 6, 4, 1, 2)
    assert s.by_status == {"certified": 4, "not-robust": 1, "unknown": 1, "error": 1}  # the existing counts
    assert s.at_epsilon == ((0.1, 1), (1.0, 0))
    assert s.describe_accuracy() == [
        "clean accuracy 4/6 = 66.7% (1 misclassified); certified accuracy (certified for the true label) "
        "2/6 = 33.3% (over the 6 inputs with a true label; 1 without)",
        "certified accuracy at epsilon 0.1: 1/6 = 16.7%; 1: 0/6 = 0.0%"]
    d = s.as_dict()
    assert (d["clean_accuracy"], d["certified_accurate"], d["certified_accuracy_at"][0]["count"]) == (4 / 6, 2, 1)
    unlabelled = Summary.of([_row("g", "certified", 0, 0, None, 0.4)])
    assert "n/a" in unlabelled.describe_accuracy()[0] and unlabelled.as_dict()["clean_accuracy"] is None

    with ResultStore(tmp_path / "r.db") as store:
        key = store.add_config({"label": None})
        for r in rows:
            store.put(replace(r, config_key=key))
    code, out, err = run(capsys, "store", "summary", str(tmp_path / "r.db"), "--epsilon", "0.1,1")
    assert code == 0, err
    assert "7 inputs: 4 certified, 1 not-robust, 1 unknown, 1 error" in out
    assert "clean accuracy 4/6 = 66.7% (1 misclassified); certified accuracy (certified for the true label) " \
           "2/6 = 33.3%" in out and "at epsilon 0.1: 1/6 = 16.7%; 1: 0/6 = 0.0%" in out


@pytest.fixture
def labelled(tmp_path) -> tuple[Path, Path, list[int], list[int]]:
    """A 3-class model and 4 inputs named ``<true label>-<i>.npy``: the network predicts
    the true label of the first three, not of the last (misclassified)."""
    net = random_network(0, [4, 8, 3])
    model, inputs = tmp_path / "net.onnx", tmp_path / "in"
    save_onnx(net, model)
    inputs.mkdir()
    points = np.random.default_rng(5).random((4, 4))
    predicted = [int(p) for p in net.predict(points)]
    true = predicted[:3] + [(predicted[3] + 1) % 3]
    for i, (x, t) in enumerate(zip(points, true)):
        np.save(inputs / f"{t}-{i}.npy", x)
    return model, inputs, predicted, true


def _stored(store: Path) -> dict[str, StoredResult]:
    """The rows by file name, in the order of the inputs' numbers (``<label>-<i>.npy``)."""
    with ResultStore(store, read_only=True) as s:
        rows = sorted(s.rows(), key=lambda r: int(Path(r.input_id).stem.split("-")[1]))
    return {Path(r.input_id).name: r for r in rows}


def test_true_labels_from_file_names_give_the_accuracies(labelled, tmp_path, capsys):
    model, inputs, predicted, true = labelled
    store = tmp_path / "r.db"
    code, out, err = run(capsys, *certify_args(model, inputs, store, *FAST, "--label-from-name", r"^(\d+)-"))
    assert code == 0, err
    rows = _stored(store)
    assert [r.true_label for r in rows.values()] == true
    assert [r.label for r in rows.values()] == predicted  # the prediction is certified, not the true label
    wrong = rows[f"{true[3]}-3.npy"]
    assert wrong.status == "certified" and wrong.label != wrong.true_label  # certified, for the wrong class
    accurate = sum(r.status == "certified" for r in list(rows.values())[:3])
    assert "4 inputs: 4 certified" in out
    assert f"clean accuracy 3/4 = 75.0% (1 misclassified); certified accuracy (certified for the true label) " \
           f"{accurate}/4 = {accurate * 25:.1f}%" in out
    code, out, _ = run(capsys, "store", "summary", str(store))
    assert code == 0 and f"certified accuracy (certified for the true label) {accurate}/4" in out


def test_a_labels_file_records_true_labels_without_changing_the_configuration(labelled, tmp_path, capsys,
                                                                             monkeypatch):
    model, inputs, predicted, true = labelled
    store = tmp_path / "r.db"
    assert run(capsys, *certify_args(model, inputs, store, *FAST))[0] == 0
    code, out, _ = run(capsys, "store", "summary", str(store))
    assert "true labels unknown: clean accuracy n/a, certified accuracy n/a" in out
    names = [f"{t}-{i}.npy" for i, t in enumerate(true)]
    labels = tmp_path / "labels.csv"  # a header; base names, a path relative to the labels file and an absolute one
    labels.write_text(f"file,label\n{names[0]},{true[0]}\nin/{names[1]}, {true[1]}\n\n{inputs / names[2]},{true[2]}\n"
                      f"{names[3]},{true[3]}\nnot-in-the-batch.npy,7\n")
    monkeypatch.chdir(inputs)  # relative paths are also taken from the current directory: no effect here
    code, out, err = run(capsys, *certify_args(model, inputs, store, *FAST, "--labels", str(labels)))
    assert code == 0, err
    assert "4 already in" in out and "0 run now" in out and "the true label of 4 stored input(s) updated" in out
    rows = _stored(store)
    assert [r.true_label for r in rows.values()] == true
    assert all(r.to_certificate().true_label == r.true_label for r in rows.values())
    with ResultStore(store, read_only=True) as s:
        assert len(s.configs()) == 1  # true labels are data of the inputs, not of the configuration

    # a label that changes: recorded again in place, not certified again
    labels.write_text(labels.read_text().replace(f"{names[0]},{true[0]}", f"{names[0]},{(true[0] + 1) % 3}"))
    code, out, err = run(capsys, *certify_args(model, inputs, store, *FAST, "--labels", str(labels)))
    assert code == 0 and "0 run now" in out and "the true label of 1 stored input(s) updated" in out
    assert _stored(store)[names[0]].true_label == (true[0] + 1) % 3


def test_certify_true_label_certifies_each_input_for_its_true_label(labelled, tmp_path, capsys):
    model, inputs, predicted, true = labelled
    store = tmp_path / "r.db"
    argv = certify_args(model, inputs, store, *FAST, "--label-from-name", r"^(\d+)-", "--certify-true-label")
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    rows = _stored(store)
    assert [r.label for r in rows.values()] == true
    wrong = rows[f"{true[3]}-3.npy"]
    assert wrong.status == "not-robust" and "classifies the input as" in wrong.reason
    assert "(1 misclassified)" in out
    with ResultStore(store, read_only=True) as s:
        (config,) = s.configs().values()
    assert config["label"] == "true"
    # another true label for an input is another label certified: that input is certified again
    new = inputs / f"{predicted[3]}-3.npy"
    (inputs / f"{true[3]}-3.npy").rename(new)
    code, out, err = run(capsys, *argv)
    assert code == 0 and "1 run now" in out, err
    assert _stored(store)[new.name].status == "certified"


@pytest.mark.parametrize("labels, extra, message", [
    ("file,label\n{0},0\n{1},1\n{2},2\n", (), "has no label for 1 input file(s): {3}"),
    ("{0},0\n{1},one\n{2},2\n{3},0\n", (), "line 2: the label 'one' of '{1}' is not an integer"),
    ("{0},0\n{1},1\n{2},3\n{3},0\n", (), "line 3 ('{2}'): label 3 is not a class of the network (0..2)"),
    ("{0},0\n{0},1\n{1},1\n{2},2\n{3},0\n", (), "gives '{0}' different labels (lines 1, 2)"),
    ("{0};0\n", (), "expected 'file name,label'"),
    (None, ("--labels", "missing.csv"), "cannot read labels file"),
    (None, ("--label-from-name", r"^\d+-"), "has 0 capture groups: it needs exactly one"),
    (None, ("--label-from-name", r"^(\d+)_"), r"does not match the input file name '0-0.npy'"),
    (None, ("--label-from-name", r"^(\d+)-(\d)"), "has 2 capture groups"),
    (None, ("--label-from-name", "(["), "is not a regular expression"),
    (None, ("--label-from-name", r"^(\d+)-", "--label", "1", "--certify-true-label"), "not both"),
    (None, ("--certify-true-label",), "--certify-true-label needs the true labels"),
    (None, ("--labels", "l.csv", "--label-from-name", r"^(\d+)-"), "not both"),
])
def test_bad_labels_are_one_line_errors_before_any_work(labels, extra, message, tmp_path, capsys, monkeypatch):
    model, inputs = tmp_path / "net.onnx", tmp_path / "in"
    save_onnx(random_network(0, [4, 8, 3]), model)
    inputs.mkdir()
    names = [f"{t}-{i}.npy" for i, t in enumerate([0, 1, 2, 0])]
    for name in names:
        np.save(inputs / name, np.full(4, 0.5))
    monkeypatch.chdir(tmp_path)
    if labels is not None:
        (tmp_path / "l.csv").write_text(labels.format(*names))
        extra = ("--labels", "l.csv")
    code, out, err = run(capsys, *certify_args(model, inputs, tmp_path / "r.db", *extra))
    assert code == 2 and message.format(*names) in err and err.count("\n") == 1, err
    assert out == "" and not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist", "--indices", "0:2", "--store", "r.db", "--labels", "l.csv"], "a dataset has its own"),
    (["--dataset", "mnist", "--index", "0", "--label-from-name", "(.)"], "is for a batch"),
])
def test_labels_of_files_are_refused_for_a_dataset(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "certify", *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r.db").exists()


def test_labels_api(tmp_path):
    net = random_network(0, [4, 8, 3])
    (tmp_path / "7-1.npy").write_bytes(b"")
    items = inputs_from_directory(tmp_path)
    assert labels_from_name(r"-(\d)\.", items)[0].true_label == 1
    with pytest.raises(LabelError, match="is not a class"):
        labels_from_name(r"^(\d)", items, n_classes=3)
    with pytest.raises(LabelError, match="true label 7 is not a class"):
        certify_batch(net, labels_from_name(r"^(\d)", items), tmp_path / "r.db")
    with pytest.raises(ConfigError, match="has no true label"):
        certify_batch(net, items, tmp_path / "r.db", certify_true_label=True)
    with pytest.raises(ConfigError, match="not of dataset images"):
        labels_from_file(tmp_path / "l.csv", [BatchInput("d:0", values=np.zeros(4))])
    assert not (tmp_path / "r.db").exists()


def test_put_many_commits_a_group_of_rows_in_one_transaction(tmp_path):
    with ResultStore(tmp_path / "r.db") as s:
        key = s.add_config({"model_sha256": "abc"})
        s.put_many([StoredResult(key, name, "h", "unknown") for name in "abc"])
        assert [r.input_id for r in s.rows(key)] == ["a", "b", "c"]
        with pytest.raises(OutputPathError):  # a bad row: nothing of its group is written
            s.put_many([StoredResult(key, "d", "h", "unknown"), StoredResult(key, "e", None, "unknown")])
        assert [r.input_id for r in s.rows(key)] == ["a", "b", "c"]
        s.put_many([])


def test_the_status_line_counts_inputs_certified_rate_and_time_left(monkeypatch):
    from parallelepipedonn import batch

    clock = iter([100.0, 110.0])
    monkeypatch.setattr(batch.time, "perf_counter", lambda: next(clock))
    tally = batch._Tally(total=40, skipped=10, executor="ray")
    assert tally.message() == "10/40 inputs (10 stored before), starting (ray executor)"
    for status in ["certified"] * 4 + ["unknown"]:
        tally.add(status)
    assert tally.message() == "15/40 inputs (10 stored before), 4 certified, 0.5 inputs/s, 50 s left"
    assert batch._duration(3725) == "1 h 02 min" and batch._duration(185) == "3 min 05 s"


def test_the_epsilon_question_enters_the_configuration_key_only_when_asked():
    """Stores written before ``certify --epsilon`` existed keep their keys (and resume)."""
    from parallelepipedonn.batch import run_config
    from parallelepipedonn.box import Box

    net = random_network(0, [4, 3, 2])
    domain = Box(np.zeros(4), np.ones(4))
    plain = run_config(net, CertifyConfig(), label=None, domain=domain, model_sha256=None, time_limit=None)
    asked = run_config(net, CertifyConfig(epsilon=0.1), label=None, domain=domain, model_sha256=None,
                       time_limit=None)
    assert "epsilon" not in plain["certify_config"] and "epsilon_oracle" not in plain["certify_config"]
    assert asked["certify_config"]["epsilon"] == 0.1


def test_recheck_reads_a_store_and_refutes_rows_that_are_not_their_certificates(model, few, tmp_path, capsys):
    store = tmp_path / "r.db"
    assert run(capsys, *certify_args(model, few, store))[0] == 0
    code, out, _ = run(capsys, "recheck", str(store))
    ids = sorted(results(store))
    assert code == 0 and out.count("CONFIRMED") == len(ids) and all(repr(i) in out for i in ids)
    with closing(sqlite3.connect(store)) as db:
        db.execute("UPDATE results SET apothem = apothem * 2 WHERE input_id = ?", (ids[0],))
        db.execute("UPDATE results SET status = 'certified', certificate = NULL WHERE input_id = ?", (ids[1],))
        db.commit()
    code, out, _ = run(capsys, "recheck", str(store))
    assert code == 5 and out.count("REFUTED") == 2, out
    assert "is not its certificate's" in out and "claims a result, but the row stores none" in out


@pytest.mark.parametrize("column, value", [("true_label", 9), ("min_edge", 0.5), ("log_volume", 0.0)])
def test_recheck_refutes_a_store_row_whose_true_label_or_metrics_are_not_its_certificates(
        column, value, model, few, tmp_path, capsys):
    """`store summary`'s accuracies read the true label: a row whose true label (or the box's
    minimum edge or log-volume) was edited is refuted, not confirmed (an edited true label
    turned a 6/6 certified accuracy into 4/6 under a clean recheck; found by an adversarial
    review)."""
    store = tmp_path / "r.db"
    assert run(capsys, *certify_args(model, few, store))[0] == 0
    ids = sorted(results(store))
    with closing(sqlite3.connect(store)) as db:
        db.execute(f"UPDATE results SET {column} = ? WHERE input_id = ?", (value, ids[0]))
        db.commit()
    code, out, _ = run(capsys, "recheck", str(store))
    assert code == 5 and out.count("REFUTED") == 1 and f"its {column} " in out, out


def test_recheck_refutes_a_store_row_whose_certificate_is_another_inputs(model, few, tmp_path, capsys):
    store = tmp_path / "r.db"
    assert run(capsys, *certify_args(model, few, store))[0] == 0
    ids = sorted(results(store))
    cols = "status, reason, label, predicted_label, apothem, min_edge, log_volume, apothem_upper_bound, certificate"
    with closing(sqlite3.connect(store)) as db:
        src = db.execute(f"SELECT {cols} FROM results WHERE input_id = ?", (ids[0],)).fetchone()
        db.execute(f"UPDATE results SET ({cols}) = ({', '.join('?' * len(src))}) WHERE input_id = ?", (*src, ids[1]))
        db.commit()
    code, out, _ = run(capsys, "recheck", str(store))
    assert code == 5 and "its certificate is about another input than the row's" in out, out
