"""ONNX import: the IR computes what onnxruntime computes, or the import fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from parallelepipedonn.errors import ModelError, UnsupportedOperatorError
from parallelepipedonn.models import DEFAULT_MODELS, data_dir
from parallelepipedonn.onnx_export import network_to_onnx
from parallelepipedonn.onnx_import import load_onnx, network_from_onnx, network_from_onnx_bytes
from tests.nets import make_model, ort_forward, random_network, tensor

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to compare outputs")

RTOL, ATOL = 1e-4, 1e-5


def assert_same_as_onnxruntime(model: onnx.ModelProto, batch_shape: tuple[int, ...], seed: int = 0) -> None:
    net = network_from_onnx(model)
    rng = np.random.default_rng(seed)
    x = rng.random(batch_shape).astype(np.float32)
    expected = ort_forward(model, x).reshape(batch_shape[0], -1)
    got = net.forward(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


# -- real networks -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist_nn-32.onnx", "fashion_mnist_nn-64.onnx"])
def test_reference_networks_match_onnxruntime(reference: Path, name: str):
    path = reference / "nets" / name
    net = load_onnx(path)
    assert net.input_shape == (28, 28) and net.describe() == "784-32-10 ReLU network"
    x = np.random.default_rng(0).random((64, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), ort_forward(onnx.load(str(path)), x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("fname", [f for sizes in DEFAULT_MODELS.values() for f in sizes.values()])
def test_default_networks_match_onnxruntime(fname: str):
    model = onnx.load(str(data_dir() / fname))
    assert_same_as_onnxruntime(model, (32, 1, 28, 28))


def test_export_then_import_is_the_float32_rounding_of_the_network():
    net = random_network(0, [12, 7, 5, 3], input_shape=(3, 4))
    back = network_from_onnx(network_to_onnx(net))
    assert back.input_shape == (3, 4)
    x = np.random.default_rng(0).random((10, 12))
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-5, atol=1e-5)
    # exporting the re-imported network again is exact (idempotence)
    again = network_from_onnx(network_to_onnx(back))
    np.testing.assert_array_equal(again.forward(x), back.forward(x))


# -- hand-built graphs ----------------------------------------------------------------------------
def _mlp_weights(seed: int, sizes: list[int]):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 1 / np.sqrt(a), (b, a)).astype(np.float32), rng.normal(0, 0.2, b).astype(np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])]


def test_gemm_with_trans_b_alpha_and_beta():
    (w1, b1), (w2, b2) = _mlp_weights(1, [6, 5, 3])
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1, alpha=0.5, beta=2.0, name="g1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2t", "B2"], ["y"], name="g2")]
    model = make_model(nodes, ["N", 6], initializers=[tensor("W1", w1), tensor("B1", b1), tensor("W2t", w2.T.copy()),
                                                     tensor("B2", b2)])
    assert_same_as_onnxruntime(model, (16, 6))


def test_gemm_with_constant_a_trans_a_and_data_b_transposed():
    (w1, b1), (w2, b2) = _mlp_weights(2, [6, 5, 3])
    nodes = [helper.make_node("Gemm", ["W1t", "x", "B1"], ["h"], transA=1, transB=1),  # (5,6)·(6,1) -> (5,1)
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["W2", "r", "B2"], ["y"])]  # (3,5)·(5,1) -> (3,1)
    model = make_model(nodes, [1, 6], initializers=[tensor("W1t", w1.T.copy()), tensor("B1", b1[:, None]),
                                                   tensor("W2", w2), tensor("B2", b2[:, None])])
    net = network_from_onnx(model)
    x = np.random.default_rng(0).random((1, 6)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x)[0], ort_forward(model, x)[:, 0], rtol=RTOL, atol=ATOL)


def test_matmul_add_reshape_like_the_reference_networks():
    (w1, b1), (w2, b2) = _mlp_weights(3, [12, 8, 4])
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W1"], ["m1"]),
             helper.make_node("Add", ["B1", "m1"], ["a1"]),  # constant first
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "W2"], ["m2"]),
             helper.make_node("Add", ["m2", "B2"], ["y"])]
    model = make_model(nodes, ["N", 3, 4], initializers=[
        tensor("shape", np.array([-1, 12], np.int64)), tensor("W1", w1.T.copy()), tensor("B1", b1),
        tensor("W2", w2.T.copy()), tensor("B2", b2)])
    assert_same_as_onnxruntime(model, (16, 3, 4))


def test_input_normalisation_is_folded_into_the_first_affine_map():
    (w1, b1), (w2, b2) = _mlp_weights(4, [9, 6, 3])
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]),
             helper.make_node("Div", ["c", "std"], ["n"]),
             helper.make_node("Mul", ["scale", "n"], ["s"]),
             helper.make_node("Flatten", ["s"], ["f"]),
             helper.make_node("Gemm", ["f", "W1", "B1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["y"], transB=1)]
    model = make_model(nodes, ["N", 1, 3, 3], initializers=[
        tensor("mean", np.array([0.1307], np.float32)), tensor("std", np.array([0.3081], np.float32)),
        tensor("scale", np.array(2.0, np.float32)), tensor("W1", w1), tensor("B1", b1), tensor("W2", w2),
        tensor("B2", b2)])
    net = network_from_onnx(model)
    assert net.describe() == "9-6-3 ReLU network"  # no extra layer for the normalisation
    assert_same_as_onnxruntime(model, (16, 1, 3, 3))


@pytest.mark.parametrize("conv_attrs", [
    dict(strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(dilations=[2, 2]),
])
def test_conv_networks_match_onnxruntime(conv_attrs):
    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32)  # grouped: 2 groups of 2 channels
    b1, b2 = rng.normal(0, 0.1, 4).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], kernel_shape=[3, 3], **conv_attrs),
             helper.make_node("BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"])]
    ort_model = make_model(nodes + [helper.make_node("Identity", ["f"], ["probe"])], ["N", 1, 8, 8], output="probe",
                           initializers=[tensor("W1", w1), tensor("B1", b1), tensor("W2", w2), tensor("B2", b2),
                                         tensor("g", rng.uniform(0.5, 1.5, 4).astype(np.float32)),
                                         tensor("beta", rng.normal(0, 0.1, 4).astype(np.float32)),
                                         tensor("mu", rng.normal(0, 0.1, 4).astype(np.float32)),
                                         tensor("var", rng.uniform(0.5, 1.5, 4).astype(np.float32))])
    width = ort_forward(ort_model, np.zeros((1, 1, 8, 8), np.float32)).shape[1]
    w3 = rng.normal(0, 1 / np.sqrt(width), (3, width)).astype(np.float32)
    nodes.append(helper.make_node("Gemm", ["f", "W3", "B3"], ["y"], transB=1))
    model = make_model(nodes, ["N", 1, 8, 8], initializers=list(ort_model.graph.initializer) + [
        tensor("W3", w3), tensor("B3", np.zeros(3, np.float32))])
    assert_same_as_onnxruntime(model, (8, 1, 8, 8))


def test_constant_identity_transpose_and_the_torch_view_pattern():
    (w1, b1), (w2, b2) = _mlp_weights(6, [6, 5, 3])
    nodes = [helper.make_node("Constant", [], ["W1"], value=tensor("W1v", w1)),
             helper.make_node("Identity", ["x"], ["xi"]),
             helper.make_node("Transpose", ["xi"], ["xt"], perm=[0, 2, 1]),  # (N,2,3) -> (N,3,2)
             helper.make_node("Shape", ["xt"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
             helper.make_node("Reshape", ["xt", "newshape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W1", "B1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    model = make_model(nodes, ["N", 2, 3], initializers=[
        tensor("B1", b1), tensor("W2", w2), tensor("B2", b2), tensor("zero", np.array(0, np.int64)),
        tensor("axes", np.array([0], np.int64)), tensor("minus1", np.array([-1], np.int64))])
    net = network_from_onnx(model)
    x = np.random.default_rng(0).random((20, 2, 3)).astype(np.float32)
    # the final Softmax is dropped: same class order, not the same numbers
    np.testing.assert_array_equal(net.predict(x), ort_forward(model, x).argmax(axis=1))
    logits_model = make_model(nodes[:-1], ["N", 2, 3], output="logits", initializers=model.graph.initializer)
    assert_same_as_onnxruntime(logits_model, (20, 2, 3))


# -- failures ---------------------------------------------------------------------------------------
def _tiny(nodes_between: list[onnx.NodeProto], last: str) -> onnx.ModelProto:
    (w1, b1), (w2, b2) = _mlp_weights(7, [4, 4, 3])
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1, name="dense1"), *nodes_between,
             helper.make_node("Gemm", [last, "W2", "B2"], ["y"], transB=1, name="dense2")]
    return make_model(nodes, ["N", 4], initializers=[tensor("W1", w1), tensor("B1", b1), tensor("W2", w2),
                                                    tensor("B2", b2)])


def test_unsupported_operator_is_named_with_its_node():
    model = _tiny([helper.make_node("Sigmoid", ["h"], ["s"], name="act1")], "s")
    with pytest.raises(UnsupportedOperatorError, match=r"'act1' \(op Sigmoid\)") as info:
        network_from_onnx(model)
    assert info.value.node_name == "act1" and info.value.op_type == "Sigmoid"


def test_product_of_two_input_dependent_tensors_is_rejected():
    model = _tiny([helper.make_node("Mul", ["h", "h"], ["sq"], name="square")], "sq")
    with pytest.raises(UnsupportedOperatorError, match="square.*not affine"):
        network_from_onnx(model)


def test_skip_connection_across_a_relu_is_rejected():
    model = _tiny([helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Add", ["r", "h"], ["s"], name="skip")],
                  "s")
    with pytest.raises(ModelError, match="not a chain"):
        network_from_onnx(model)


def test_output_that_is_not_a_vector_of_scores_is_rejected():
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    with pytest.raises(ModelError, match="not a vector of class scores"):
        network_from_onnx(make_model(nodes, ["N", 3, 4]))


def test_single_output_is_not_a_classifier():
    model = _tiny([], "h")
    model.graph.initializer[2].CopyFrom(tensor("W2", np.ones((1, 4), np.float32)))
    model.graph.initializer[3].CopyFrom(tensor("B2", np.zeros(1, np.float32)))
    with pytest.raises(ModelError, match="classifier"):
        network_from_onnx(model)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"this is not a protobuf \x00\xff\xfe", "not a valid ONNX model"),
])
def test_malformed_bytes_are_a_model_error(data, message):
    with pytest.raises(ModelError, match=message):
        network_from_onnx_bytes(data, "bad.onnx")


def test_truncated_model_is_a_model_error():
    data = _tiny([helper.make_node("Relu", ["h"], ["r"])], "r").SerializeToString()
    with pytest.raises(ModelError):
        network_from_onnx_bytes(data[: len(data) // 2], "truncated.onnx")


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read model file"):
        load_onnx(tmp_path / "nope.onnx")
