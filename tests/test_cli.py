"""The command line as a user meets it: outputs, one-line errors, exit codes, nothing half-written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from parallelepipedonn.cli import main
from tests.nets import make_model, tensor


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_certify_default_mnist_digit_writes_json_and_png(tmp_path, capsys):
    j, p = tmp_path / "c.json", tmp_path / "c.png"
    code, out, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--json", str(j), "--plot", str(p))
    assert code == 0, err
    assert out.startswith("CERTIFIED") and "apothem" in out
    cert = json.loads(j.read_text())
    assert cert["status"] == "certified" and cert["apothem"] > 0
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(p) as img:
        assert img.width > 800 and img.height > 200


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("parallelepipedonn") or str(Path(sys.executable).parent / "parallelepipedonn")
    if not os.path.exists(exe):
        pytest.skip("console script not installed (package not pip-installed)")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "parallelepipedonn" in proc.stdout


def test_reference_7_1_is_certified_with_a_positive_apothem(reference, tmp_path, capsys):
    j = tmp_path / "c.json"
    code, out, err = run(capsys, "certify", "--model", str(reference / "nets" / "mnist_nn-32.onnx"), "--input",
                         str(reference / "inputs" / "mnist" / "7-1.csv"), "--label", "7", "--json", str(j))
    assert code == 0, err
    cert = json.loads(j.read_text())
    assert cert["status"] == "certified" and cert["apothem"] > 0 and cert["label"] == 7
    assert len(cert["model_sha256"]) == 64


def test_reference_4_1_is_not_robust_with_the_reason(reference, tmp_path, capsys):
    j = tmp_path / "c.json"
    code, out, _ = run(capsys, "certify", "--model", str(reference / "nets" / "mnist_nn-32.onnx"), "--input",
                       str(reference / "inputs" / "mnist" / "4-1.csv"), "--label", "4", "--json", str(j))
    assert code == 0
    cert = json.loads(j.read_text())
    assert cert["status"] == "not-robust" and "classifies the input as 7, not 4" in cert["reason"]
    assert "classifies the input as 7, not 4" in out


def _unsupported_model(path: Path) -> None:
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "B"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["y"], name="squash")]
    model = make_model(nodes, ["N", 28, 28], initializers=[tensor("W", np.zeros((10, 784), np.float32)),
                                                          tensor("B", np.zeros(10, np.float32))])
    onnx.save(model, str(path))


@pytest.fixture
def default_net_copy(tmp_path) -> Path:
    from parallelepipedonn.models import default_model_path

    dst = tmp_path / "net.onnx"
    shutil.copy(default_model_path("mnist"), dst)
    return dst


def _grid(rows: int, cols: int, bad: str | None = None) -> str:
    cells = [["0.5"] * cols for _ in range(rows)]
    if bad:
        cells[3][4] = bad
    return "\n".join(" ".join(r) for r in cells) + "\n"


@pytest.mark.parametrize("case, message", [
    ("malformed-onnx", "not a valid ONNX model"),
    ("unsupported-op", r"unsupported ONNX node 'squash' \(op Tanh\)"),
    ("27x28", r"756 values \(27×28\)"),
    ("nan", "non-finite value"),
    ("outside", "outside the domain"),
    ("empty", "is empty"),
    ("missing", "does not exist"),
])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(case, message, tmp_path, capsys, default_net_copy):
    model, inp = default_net_copy, tmp_path / "x.csv"
    inp.write_text(_grid(28, 28))
    if case == "malformed-onnx":
        model = tmp_path / "bad.onnx"
        model.write_bytes(b"\x08\x07garbage that is not a model")
    elif case == "unsupported-op":
        model = tmp_path / "tanh.onnx"
        _unsupported_model(model)
    elif case == "27x28":
        inp.write_text(_grid(27, 28))
    elif case == "nan":
        inp.write_text(_grid(28, 28, "nan"))
    elif case == "outside":
        inp.write_text(_grid(28, 28, "1.01"))
    elif case == "empty":
        inp.write_text("")
    elif case == "missing":
        inp = tmp_path / "nope.csv"
    outs = [tmp_path / "out.json", tmp_path / "out.png"]
    before = sorted(tmp_path.iterdir())
    code, out, err = run(capsys, "certify", "--model", str(model), "--input", str(inp), "--json", str(outs[0]),
                         "--plot", str(outs[1]))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("parallelepipedonn: error:"), err
    assert re.search(message, err), err
    assert not any(p.exists() for p in outs)
    assert sorted(tmp_path.iterdir()) == before  # no partial or temporary files either


def test_reference_empty_input_9_5(reference, tmp_path, capsys):
    out = tmp_path / "c.json"
    code, _, err = run(capsys, "certify", "--model", str(reference / "nets" / "mnist_nn-32.onnx"), "--input",
                       str(reference / "inputs" / "mnist" / "9-5.csv"), "--json", str(out))
    assert code == 2 and "is empty" in err and err.count("\n") == 1
    assert not out.exists()


def test_unwritable_output_fails_before_any_work(tmp_path, capsys):
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--json",
                       str(tmp_path / "no" / "such" / "dir" / "c.json"))
    assert code == 4 and "does not exist" in err


@pytest.mark.parametrize("argv, message", [
    (["certify", "--dataset", "mnist"], "needs --index"),
    (["certify", "--input", "x.csv"], "needs --model"),
    (["certify", "--dataset", "mnist", "--index", "0", "--oracle", "nope"], "unknown oracle"),
    (["certify", "--dataset", "mnist", "--index", "0", "--algorithm", "nope"], "unknown algorithm"),
    (["certify", "--dataset", "mnist", "--index", "0", "--label", "12"], "not a class"),
    (["certify", "--dataset", "mnist", "--index", "5000"], "out of range"),
    (["certify", "--dataset", "mnist", "--index", "0", "--precision", "-1"], "positive"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_label_that_is_not_predicted_is_reported_not_robust(capsys):
    code, out, _ = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--label", "3")
    assert code == 0 and out.startswith("NOT-ROBUST") and "not 3" in out


def test_info_and_list(capsys, default_net_copy):
    code, out, _ = run(capsys, "info", "--model", str(default_net_copy))
    assert code == 0 and "784-32-10" in out and "test_accuracy" in out
    code, out, _ = run(capsys, "list")
    assert code == 0 and "crown" in out and "apothem-bisection" in out


def test_info_reads_a_gzipped_model_and_prints_metadata_as_data(tmp_path, capsys, default_net_copy):
    """``info`` crashed on ``.onnx.gz`` after its first line (the metadata reader did not
    decompress), and printed a metadata value's newlines and escapes as they are: a value
    could forge a ``sha256`` line."""
    import gzip

    import onnx

    model = onnx.load(str(default_net_copy))
    model.metadata_props.add(key="note", value="fine\n  sha256 0000\x1b[31m")
    data = model.SerializeToString()
    (tmp_path / "m.onnx.gz").write_bytes(gzip.compress(data))
    code, out, err = run(capsys, "info", "--model", str(tmp_path / "m.onnx.gz"))
    assert code == 0, err
    assert "test_accuracy" in out and "  note: fine\\n  sha256 0000\\x1b[31m" in out
    assert sum(line.lstrip().startswith("sha256") for line in out.splitlines()) == 1


def test_train_is_reproducible_and_exports_onnx(tmp_path, capsys):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        code, text, err = run(capsys, "train", "--dataset", "mnist", "--hidden", "8", "--epochs", "1", "--out",
                              str(out), "--quiet")
        assert code == 0, err
        assert "test accuracy" in text
    assert a.read_bytes() == b.read_bytes()
    from tests.nets import ort_forward

    model = onnx.load(str(a))
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    from parallelepipedonn.onnx_import import load_onnx

    np.testing.assert_allclose(load_onnx(a).forward(x), ort_forward(model, x), rtol=1e-4, atol=1e-5)


def test_oracle_options_on_the_command_line_may_name_a_stage(tmp_path, capsys):
    j = tmp_path / "c.json"
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--oracle", "crown+alpha-crown",
                         "--oracle-option", "alpha-crown.steps=3", "--oracle-option", "time_limit=30",
                         "--json", str(j))
    assert code == 0, err
    stages = {s["oracle"]: s for s in json.loads(j.read_text())["oracle_settings"]["stages"]}
    assert stages["alpha-crown"]["steps"] == 3 and stages["crown"]["time_limit"] == 30
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--oracle", "alpha-crown+bab",
                       "--oracle-option", "steps=3")
    assert code == 2 and "alpha-crown.steps=... or bab.steps=..." in err
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--oracle-option", "steps")
    assert code == 2 and "KEY=VALUE" in err


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_train_convolutional_architectures(arch, tmp_path, capsys):
    """``train --arch`` exports a reproducible ONNX model whose IR agrees with onnxruntime."""
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        code, text, err = run(capsys, "train", "--dataset", "mnist", "--arch", arch, "--epochs", "1", "--out",
                              str(out), "--quiet")
        assert code == 0, err
        assert "test accuracy" in text
    assert a.read_bytes() == b.read_bytes()
    from parallelepipedonn.onnx_import import load_onnx
    from tests.nets import ort_forward

    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(load_onnx(a).forward(x), ort_forward(onnx.load(str(a)), x), rtol=1e-4, atol=1e-5)


def test_training_that_diverges_is_an_error_and_writes_nothing(tmp_path, capsys):
    """A learning rate of 1e38 overflowed inside Adam (an internal error, exit 1)."""
    out = tmp_path / "t.onnx"
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--lr", "1e38", "--epochs", "1", "--out", str(out),
                       "--quiet")
    assert code == 2 and "diverged" in err and "--lr" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["dual", "--dataset", "mnist", "--label", "0", "--domain", "1", "0"], "non-empty finite interval"),
    (["dual", "--dataset", "mnist", "--label", "0", "--time-limit", "0"], "positive number"),
    (["dual", "--dataset", "mnist", "--label", "0", "--workers", "0"], "at least 1"),
    (["certify", "--dataset", "mnist", "--index", "0", "--device", "foo"], "unknown device"),
    (["compare", "--dataset", "mnist", "--index", "0", "--algorithms", ","], "names no algorithm"),
    (["compare", "--dataset", "mnist", "--index", "0", "--algorithm", "apothem-kary"], "not --algorithm"),
    (["compare", "--dataset", "mnist", "--index", "0", "--oracle", "crown", "--algorithms", "apothem-kary,exact"],
     "needs a complete oracle"),
    (["certify", "--dataset", "mnist", "--index", "0", "--algorithm", "apothem-kary+volume-gradient"],
     "starts afresh"),
    (["certify", "--dataset", "mnist", "--indices", "0:2", "--store", "/nonexistent/r.db", "--executor", "local",
      "--workers", "2"], "--workers is for --executor ray, not --executor local"),
    (["train", "--dataset", "mnist", "--weight-decay", "nan", "--out", "/nonexistent/t.onnx"], "weight decay"),
    (["train", "--dataset", "mnist", "--seed", "99999999999999999999", "--out", "/nonexistent/t.onnx"], "seed"),
    (["train", "--dataset", "mnist", "--arch", "cnn", "--hidden", "64", "--out", "/nonexistent/t.onnx"],
     "fixed layers"),
    (["train", "--dataset", "mnist", "--hidden", "32,,32", "--out", "/nonexistent/t.onnx"], "sizes like"),
])
def test_bad_options_of_dual_certify_and_compare_are_usage_errors(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err, err


def test_negative_numbers_in_scientific_notation_are_numbers_not_options():
    """``--domain -1e-3 1`` failed with "expected 2 arguments" (argparse took -1e-3 for an option)."""
    from parallelepipedonn.cli import build_parser

    args = build_parser().parse_args(["certify", "--dataset", "mnist", "--index", "0", "--domain", "-1e-3", "1"])
    assert [float(v) for v in args.domain] == [-1e-3, 1.0]
    args = build_parser().parse_args(["certify", "--dataset", "mnist", "--index", "0", "--domain", "-inf", "1"])
    assert float(args.domain[0]) == float("-inf")


def test_compare_skips_what_the_oracle_cannot_serve_from_its_default_list_and_takes_a_time_limit(tmp_path, capsys):
    """``compare --oracle crown`` ran seven algorithms, then stopped at ``exact`` (it needs
    a complete oracle) with no table; now ``exact`` is skipped with a note before any work,
    and ``--time-limit`` reaches every search."""
    j = tmp_path / "c.json"
    code, out, err = run(capsys, "compare", "--dataset", "mnist", "--index", "0", "--oracle", "crown",
                         "--falsifier", "none", "--time-limit", "0.05", "--json", str(j))
    assert code == 0, err
    assert out.splitlines()[0].startswith("skipped exact: --algorithm exact needs a complete oracle")
    rows = json.loads(j.read_text())
    assert [r["algorithm"] for r in rows] == ["apothem-kary", "apothem-bisection", "apothem-max-box",
                                              "box-bisection", "topdown-box", "volume-greedy", "volume-gradient"]
    assert all(r["seconds"] < 5 for r in rows)


def test_compare_names_a_dual_bound_as_such_not_as_a_counterexample(tmp_path, capsys):
    """Without a falsifier the best apothem's bound is the dual box's (no counterexample
    was found): the line said "closest confirmed counterexample of all runs"."""
    from parallelepipedonn.network import Affine, Network
    from tests.crafted_nets import save_float64_onnx

    # logit 0 - logit 1 = 0.5 - x0: class 0 exactly where x0 < 0.5
    save_float64_onnx(Network.from_layers((2,), [Affine(np.array([[-1.0, 0.0], [0.0, 0.0]]), np.array([0.5, 0.0]))],
                                          name="lin"), tmp_path / "lin.onnx")
    np.save(tmp_path / "x.npy", np.array([0.2, 0.5]))
    code, out, err = run(capsys, "compare", "--model", str(tmp_path / "lin.onnx"), "--input", str(tmp_path / "x.npy"),
                         "--algorithms", "apothem-kary", "--dual", "milp", "--falsifier", "none")
    assert code == 0, err
    line = next(v for v in out.splitlines() if v.startswith("best apothem <="))
    assert "dual box of the apothem-kary run" in line and "counterexample" not in line


def test_a_batch_refuses_a_bad_epsilon_oracle_and_compare_a_bad_option_before_any_work(tmp_path, capsys):
    """Both ran first: the batch stored every input as an error (the epsilon oracle was
    built after each search), compare skipped every algorithm as if the oracle could not
    serve it."""
    store = tmp_path / "r.db"
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--indices", "0:2", "--store", str(store),
                       "--epsilon", "0.1", "--epsilon-oracle", "nope")
    assert code == 2 and "nope" in err and not store.exists()
    code, out, err = run(capsys, "compare", "--dataset", "mnist", "--index", "0",
                         "--oracle-option", "bab.max_nodes=1000")
    assert code == 2 and "bab.max_nodes" in err and "skipped" not in out


@pytest.mark.parametrize("value, shown", [(1.00000005, "1.001"), (1.0, "1"), (0.12341, "0.1235"), (9.99951, "10"),
                                          (2.5, "2.5"), (1e-5, "1.001e-05"), (123456.0, "1.235e+05"),
                                          (1e-323, "9.882e-324"), (-5e-324, "-4.94e-324"), (np.float32(1.0), "1"),
                                          (float("inf"), "inf"), (None, "unknown")])
def test_an_upper_bound_is_printed_rounded_up(value, shown):
    """``gmm`` printed "encoder Lipschitz <= 1" for a bound of 1.00000005; the decimal rounded
    up is printed as it is (converted back to a float, a subnormal one came out below)."""
    from decimal import Decimal

    from parallelepipedonn.cli.common import fmt_up

    assert fmt_up(value) == shown
    if value is not None and np.isfinite(value):
        assert Decimal(shown) >= Decimal(float(value))
    rng = np.random.default_rng(0)
    for v in np.concatenate([rng.integers(1, 5000, 200) * 5e-324, rng.normal(size=200) * 10.0 ** rng.integers(-300, 300, 200)]):
        assert Decimal(fmt_up(float(v))) >= Decimal(float(v)), v


@pytest.mark.parametrize("value, shown", [(0.08085691023814368, "0.08085"), (0.99999995, "0.9999"), (1.0, "1"),
                                          (-0.5000001, "-0.5001"), (1e-323, "9.881e-324"), (123456.0, "1.234e+05")])
def test_a_certified_lower_bound_is_printed_rounded_down(value, shown):
    """The default certification printed "apothem 0.08086" for a certified 0.0808569."""
    from decimal import Decimal

    from parallelepipedonn.cli.common import fmt_down

    assert fmt_down(value) == shown and Decimal(shown) <= Decimal(value)
    rng = np.random.default_rng(1)
    for v in np.concatenate([rng.integers(1, 5000, 200) * 5e-324, rng.normal(size=200) * 10.0 ** rng.integers(-300, 300, 200)]):
        assert Decimal(fmt_down(float(v))) <= Decimal(float(v)), v
