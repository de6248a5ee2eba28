"""Bad input everywhere: every way a model, an input, a label or an output path can be
wrong gives a one-line error naming the problem and its exit code on the command line,
a typed exception in the Python API, and no output file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from parallelepipedonn import plotting
from parallelepipedonn.box import Box
from parallelepipedonn.certify import certify
from parallelepipedonn.cli import build_parser
from parallelepipedonn.errors import (
    ConfigError,
    InputDataError,
    LabelError,
    ModelError,
    ModelTooLargeError,
    OutputPathError,
    UnsupportedOperatorError,
)
from parallelepipedonn.inputs import load_input
from parallelepipedonn.io_utils import check_writable
from parallelepipedonn.onnx_export import save_onnx
from parallelepipedonn.onnx_import import load_onnx
from parallelepipedonn.plotting import plot_certificate
from parallelepipedonn.search import Status
from tests.nets import make_model, random_network, tensor
from tests.test_cli import run

NET = random_network(0, [4, 8, 3])
X = np.full(4, 0.5)
PREDICTED = int(NET.predict(X[None])[0])


def _permissions_stop_us(directory: Path) -> bool:
    """Whether a file without read permission is unreadable to us (not so for root)."""
    probe = directory / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        probe.read_text()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)
        probe.unlink()
    return False


# -- models ----------------------------------------------------------------------------------
def _gemm(k: int, *after: onnx.NodeProto, out: str = "y", extra: tuple = (), weight: float = 1.0) -> onnx.ModelProto:
    """x [1, 4] -> Gemm to k outputs (named ``h`` if nodes follow) -> ``after``."""
    w = np.full((k, 4), weight, np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["h" if after else out], transB=1), *after]
    return make_model(nodes, [1, 4], output=out,
                      initializers=[tensor("W", w), tensor("B", np.zeros(k, np.float32)), *extra])


def _reshaped(shape: list[int]) -> onnx.ModelProto:
    return _gemm(int(np.prod(shape)), helper.make_node("Reshape", ["h", "S"], ["y"]),
                 extra=(tensor("S", np.array(shape, np.int64)),))


def _wide_relu() -> onnx.ModelProto:
    """x [1, 4] → 100,000 hidden units → Relu → Neg: the identity after the Relu, on which
    Neg computes, would take 74.5 GiB (a product reads it as a view: it loads without Neg)."""
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="wide"),
             helper.make_node("Neg", ["r"], ["n"], name="negate"),
             helper.make_node("Gemm", ["n", "W2", "B2"], ["y"], transB=1)]
    return make_model(nodes, [1, 4], initializers=[
        tensor("W", np.full((100_000, 4), 0.01, np.float32)), tensor("B", np.zeros(100_000, np.float32)),
        tensor("W2", np.full((3, 100_000), 0.01, np.float32)), tensor("B2", np.zeros(3, np.float32))])


def _save(model: onnx.ModelProto) -> Callable[[Path], None]:
    return lambda p: onnx.save(model, str(p))


def _good_model(p: Path) -> None:
    save_onnx(NET, p)


def _truncated(p: Path) -> None:
    _good_model(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _unreadable(p: Path) -> None:
    p.write_text("0.5 0.5 0.5 0.5\n")
    p.chmod(0)


def _truncated_npy(p: Path) -> None:
    np.save(p, X)
    p.write_bytes(p.read_bytes()[:90])


MODELS: dict[str, Callable[[Path], None]] = {
    "malformed": lambda p: p.write_bytes(b"\x08\x07garbage that is not a model"),
    "truncated": _truncated,
    "empty": lambda p: p.write_bytes(b""),
    "directory": lambda p: p.mkdir(),
    "unreadable": _unreadable,
    "sigmoid": _save(_gemm(3, helper.make_node("Sigmoid", ["h"], ["y"], name="squash"))),
    "tanh": _save(_gemm(3, helper.make_node("Tanh", ["h"], ["y"], name="squash"))),
    "max-of-two": _save(_gemm(3, helper.make_node("Max", ["h", "h"], ["y"], name="mx"))),
    "one-output": _save(_gemm(1)),
    "output-2x3": _save(_reshaped([2, 3])),
    "output-1x2x3": _save(_reshaped([1, 2, 3])),
    "nan-weights": _save(_gemm(3, weight=float("nan"))),
    "cast-float16": _save(_gemm(3, helper.make_node("Cast", ["h"], ["h16"], to=onnx.TensorProto.FLOAT16, name="half"),
                                helper.make_node("Cast", ["h16"], ["y"], to=onnx.TensorProto.FLOAT))),
    "softmax-axis-0": _save(_gemm(3, helper.make_node("Softmax", ["h"], ["y"], axis=0, name="probs"))),
    "huge-input": _save(make_model([helper.make_node("Identity", ["x"], ["y"])], [1, 10**10])),
    "wide-relu": lambda p: onnx.save(_wide_relu(), str(p)),
}


# -- inputs ----------------------------------------------------------------------------------
def _npy(values) -> Callable[[Path], None]:
    return lambda p: np.save(p, np.asarray(values, dtype=np.float64))


INPUTS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "wrong-size": ("x.npy", _npy(np.full(5, 0.5))),
    "nan": ("x.npy", _npy([0.5, np.nan, 0.5, 0.5])),
    "inf": ("x.npy", _npy([0.5, np.inf, 0.5, 0.5])),
    "outside-domain": ("x.npy", _npy([0.5, 1.5, 0.5, 0.5])),
    "empty": ("x.csv", lambda p: p.write_text("")),
    "truncated-npy": ("x.npy", _truncated_npy),
    "not-numbers": ("x.csv", lambda p: p.write_text("0.5 half 0.5 0.5\n")),
    "directory": ("x.npy", lambda p: p.mkdir()),
    "missing": ("x.npy", lambda p: None),
    "unreadable": ("x.csv", _unreadable),
}


@dataclass(frozen=True)
class Case:
    """One bad invocation: how to make it, the exit code and message the CLI gives, and
    the exception the Python API raises (``None``: a check of the command line alone)."""

    name: str
    code: int
    message: str
    error: type[Exception] | None
    model: str = "good"
    input: str = "good"
    args: tuple[str, ...] = ()
    root_can_read: bool = False  # the case relies on file permissions, which root ignores


CASES = [
    Case("malformed ONNX", 2, "is not a valid ONNX model", ModelError, model="malformed"),
    Case("truncated ONNX", 2, "is not a valid ONNX model", ModelError, model="truncated"),
    Case("empty model file", 2, "is an empty file", ModelError, model="empty"),
    Case("model is a directory", 2, "Is a directory", ModelError, model="directory"),
    Case("missing model", 2, "No such file", ModelError, model="missing"),
    Case("unreadable model", 2, "Permission denied", ModelError, model="unreadable", root_can_read=True),
    Case("sigmoid", 2, "unsupported ONNX node 'squash' (op Sigmoid)", UnsupportedOperatorError, model="sigmoid"),
    Case("tanh", 2, "unsupported ONNX node 'squash' (op Tanh)", UnsupportedOperatorError, model="tanh"),
    Case("unsupported op", 2, "unsupported ONNX node 'mx' (op Max)", UnsupportedOperatorError, model="max-of-two"),
    Case("one output", 2, "a classifier needs at least 2", ModelError, model="one-output"),
    Case("2x3 output", 2, "output has shape [2, 3]: not a vector of class scores", ModelError, model="output-2x3"),
    Case("1x2x3 output", 2, "output has shape [1, 2, 3]: not a vector", ModelError, model="output-1x2x3"),
    Case("NaN weights", 2, "NaN or infinite", ModelError, model="nan-weights"),
    Case("cast to float16", 2, "unsupported ONNX node 'half' (op Cast): cast to float16", UnsupportedOperatorError,
         model="cast-float16"),
    Case("softmax over the batch axis", 2, "unsupported ONNX node 'probs' (op Softmax)", UnsupportedOperatorError,
         model="softmax-axis-0"),
    Case("input of 1e10 values", 2, "input 'x' of shape [1, 10000000000] would need a dense", ModelTooLargeError,
         model="huge-input"),
    Case("relu on 100,000 values", 2, "node 'negate' (Neg) on 100000 values would need a dense 100001x100000 "
         "float64 matrix (74.5 GiB)", ModelTooLargeError, model="wide-relu"),
    Case("wrong input size", 2, "has 5 values (5); the network expects 4", InputDataError, input="wrong-size"),
    Case("NaN input", 2, "non-finite value (nan) at position 1", InputDataError, input="nan"),
    Case("inf input", 2, "non-finite value (inf) at position 1", InputDataError, input="inf"),
    Case("outside domain", 2, "value 1.5 at position 1 is outside the domain [0, 1]", InputDataError,
         input="outside-domain"),
    Case("empty input", 2, "is empty", InputDataError, input="empty"),
    Case("truncated npy", 2, "is not a valid .npy array", InputDataError, input="truncated-npy"),
    Case("input not numbers", 2, "line 1: could not convert string to float", InputDataError, input="not-numbers"),
    Case("input is a directory", 2, "is a directory, not a file", InputDataError, input="directory"),
    Case("missing input", 2, "does not exist", InputDataError, input="missing"),
    Case("unreadable input", 2, "permission denied", InputDataError, input="unreadable", root_can_read=True),
    Case("label too large", 2, "label 3 is not a class of the network (0..2)", LabelError, args=("--label", "3")),
    Case("negative label", 2, "label -1 is not a class of the network (0..2)", LabelError, args=("--label", "-1")),
    Case("empty domain", 2, "the domain [1.0, 0.0] must be a non-empty finite interval", None,
         args=("--domain", "1", "0")),
    Case("unbounded domain", 2, "must be a non-empty finite interval", None, args=("--domain", "0", "inf")),
    Case("json into a missing directory", 4, "does not exist", OutputPathError, args=("--json", "{out}/no/c.json")),
    Case("json under a file", 4, "is not a directory", OutputPathError, args=("--json", "{out}/x.npy/c.json")),
    Case("json is a directory", 4, "it is a directory", OutputPathError, args=("--json", "{out}")),
    Case("plot is a directory", 4, "it is a directory", OutputPathError, args=("--plot", "{out}")),
    Case("json in a read-only directory", 4, "permission denied", OutputPathError,
         args=("--json", "{ro}/c.json"), root_can_read=True),
    Case("json and plot the same file", 2, "two outputs name the same file", None,
         args=("--json", "{out}/c", "--plot", "{out}/c")),
    Case("json over the input", 2, "would overwrite an input file", None, args=("--json", "{input}")),
    Case("store is a directory", 4, "it is a directory", None, args=("--store", "{out}")),
]


@pytest.fixture
def make_case(tmp_path) -> Callable[[Case], tuple[list[str], Path]]:
    """Lay out a case's files; return the ``certify`` arguments and the output directory."""

    def make(case: Case) -> tuple[list[str], Path]:
        if case.root_can_read and not _permissions_stop_us(tmp_path):
            pytest.skip("file permissions do not stop this user (root)")
        out, ro = tmp_path / "out", tmp_path / "ro"
        out.mkdir()
        ro.mkdir()
        (out / "x.npy").write_bytes(b"a file where a directory is expected")
        model = tmp_path / "model.onnx"
        if case.model != "missing":
            MODELS.get(case.model, _good_model)(model)
        name, write = INPUTS.get(case.input, ("x.npy", _npy(X)))
        inp = tmp_path / name
        write(inp)
        ro.chmod(0o555)
        subst = {"out": str(out), "ro": str(ro), "input": str(inp)}
        args = [a.format(**subst) for a in case.args]
        if "--json" not in args and "--store" not in args:
            args += ["--json", str(out / "c.json")]
        if "--plot" not in args and "--store" not in args:
            args += ["--plot", str(out / "c.png")]
        return ["certify", "--model", str(model), "--input", str(inp), *args], out

    yield make
    for d in tmp_path.rglob("*"):  # let pytest clean up what the cases made unreadable
        d.chmod(0o755 if d.is_dir() else 0o644)


def _outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != "x.npy")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_command_line_names_the_problem_in_one_line_and_writes_nothing(case, make_case, capsys):
    argv, out = make_case(case)
    code, stdout, err = run(capsys, *argv)
    assert code == case.code, err
    assert err.startswith("parallelepipedonn: error: ") and err.count("\n") == 1, err
    assert case.message in err
    assert _outputs(out) == [] and stdout == ""


@pytest.mark.parametrize("model", ["cast-float16", "softmax-axis-0", "huge-input", "wide-relu"])
def test_info_on_a_refused_model_exits_2_with_one_line(model, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    MODELS[model](path)
    code, stdout, err = run(capsys, "info", "--model", str(path))
    assert code == 2 and stdout == "", err
    assert err.startswith("parallelepipedonn: error: ") and err.count("\n") == 1, err


def _certify_with_the_api(argv: list[str]) -> None:
    """What ``certify`` does, through the Python API."""
    args = build_parser().parse_args(argv)
    for path in (args.json, args.plot):
        if path:
            check_writable(path)
    net = load_onnx(args.model)
    cert = certify(net, load_input(args.input, net.input_shape), args.label, model_path=args.model)
    if args.json:
        cert.save(args.json)
    if args.plot:
        plot_certificate(cert, args.plot)


@pytest.mark.parametrize("case", [c for c in CASES if c.error is not None],
                         ids=[c.name for c in CASES if c.error is not None])
def test_the_api_raises_the_typed_exception(case, make_case):
    argv, out = make_case(case)
    with pytest.raises(case.error) as info:
        _certify_with_the_api(argv)
    assert case.message in str(info.value) and "\n" not in str(info.value)
    assert _outputs(out) == []


def test_a_label_that_is_not_the_prediction_is_not_robust_with_the_reason(tmp_path, capsys):
    model, inp, out = tmp_path / "m.onnx", tmp_path / "x.npy", tmp_path / "c.json"
    _good_model(model)
    np.save(inp, X)
    other = (PREDICTED + 1) % 3
    code, stdout, err = run(capsys, "certify", "--model", str(model), "--input", str(inp), "--label", str(other),
                            "--json", str(out))
    reason = f"the network classifies the input as {PREDICTED}, not {other}"
    assert code == 0, err
    assert stdout.startswith(f"NOT-ROBUST: {reason}")
    cert = certify(load_onnx(model), X, other)
    assert cert.status is Status.NOT_ROBUST and cert.reason == reason and cert.box is None
    assert '"status": "not-robust"' in out.read_text()


def test_when_the_plot_fails_after_the_json_neither_is_left(tmp_path, capsys, monkeypatch):
    model, inp = tmp_path / "m.onnx", tmp_path / "x.npy"
    _good_model(model)
    np.save(inp, X)

    def disk_full(path, data):
        raise OutputPathError(f"cannot write {str(path)!r}: No space left on device")

    monkeypatch.setattr(plotting, "atomic_write_bytes", disk_full)
    code, _, err = run(capsys, "certify", "--model", str(model), "--input", str(inp), "--json",
                       str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png"))
    assert code == 4 and "No space left on device" in err and err.count("\n") == 1
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "c.png").exists()


def test_the_api_rejects_inputs_that_are_not_numbers_and_unbounded_domains():
    with pytest.raises(InputDataError, match="not an array of numbers"):
        certify(NET, ["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match="bounded"):
        certify(NET, X, domain=Box(np.zeros(4), np.full(4, np.inf)))


def test_a_model_path_given_twice_as_output_is_untouched(tmp_path, capsys):
    model, inp = tmp_path / "m.onnx", tmp_path / "x.npy"
    _good_model(model)
    np.save(inp, X)
    before = model.read_bytes()
    code, _, err = run(capsys, "certify", "--model", str(model), "--input", str(inp), "--json", str(model))
    assert code == 2 and "would overwrite an input file" in err
    assert model.read_bytes() == before


@pytest.mark.parametrize("model, inputs, message", [
    ("malformed", "one", "is not a valid ONNX model"),
    ("sigmoid", "one", "(op Sigmoid)"),
    ("good", "missing", "input directory"),
    ("good", "empty", "has no input files"),
])
def test_a_batch_that_cannot_start_creates_no_store(model, inputs, message, tmp_path, capsys):
    path, directory, store = tmp_path / "m.onnx", tmp_path / "inputs", tmp_path / "r.db"
    MODELS.get(model, _good_model)(path)
    if inputs != "missing":
        directory.mkdir()
    if inputs == "one":
        np.save(directory / "x.npy", X)
    code, _, err = run(capsys, "certify", "--model", str(path), "--inputs", str(directory), "--store", str(store))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not store.exists()
