"""ONNX import: the IR computes what onnxruntime computes, or the import fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from parallelepipedonn.errors import ModelError, ModelTooLargeError, UnsupportedOperatorError, ValueRangeError
from parallelepipedonn.models import DEFAULT_MODELS, data_dir
from parallelepipedonn.onnx_export import network_to_onnx
from parallelepipedonn.onnx_import import load_onnx, model_from_onnx, network_from_onnx, network_from_onnx_bytes
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
    """Every embedded network (MLPs as chains, the CNN and the residual net as graphs)."""
    path = data_dir() / fname
    net = load_onnx(path)
    x = np.random.default_rng(0).random((32, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), ort_forward(onnx.load(str(path)), x),
                               rtol=RTOL, atol=ATOL)


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
def _tiny(nodes_between: list[onnx.NodeProto], last: str, extra: tuple = ()) -> onnx.ModelProto:
    (w1, b1), (w2, b2) = _mlp_weights(7, [4, 4, 3])
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1, name="dense1"), *nodes_between,
             helper.make_node("Gemm", [last, "W2", "B2"], ["y"], transB=1, name="dense2")]
    return make_model(nodes, ["N", 4], initializers=[tensor("W1", w1), tensor("B1", b1), tensor("W2", w2),
                                                    tensor("B2", b2), *extra])


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
    (w1, b1), _ = _mlp_weights(7, [4, 4, 3])
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "W2", "B2"], ["y"], transB=1)]
    model = make_model(nodes, ["N", 4], initializers=[tensor("W1", w1), tensor("B1", b1),
                                                     tensor("W2", np.ones((1, 4), np.float32)),
                                                     tensor("B2", np.zeros(1, np.float32))])
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


# -- issue 12: casts, dropped operators, operators that depend on the number of outputs ----------
def _cast_model(*casts: int, in_type: int = onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """x [1, 4] → Gemm ``h`` → the chain of Casts (named cast0, cast1, ...) → ``y``."""
    dtype = np.float32 if in_type == onnx.TensorProto.FLOAT else np.float64
    (w, b), = _mlp_weights(8, [4, 3])
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["c0"], transB=1)]
    nodes += [helper.make_node("Cast", [f"c{i}"], [f"c{i + 1}"], to=to, name=f"cast{i}") for i, to in enumerate(casts)]
    nodes.append(helper.make_node("Identity", [f"c{len(casts)}"], ["y"]))
    graph = helper.make_graph(nodes, "casts", [helper.make_tensor_value_info("x", in_type, [1, 4])],
                              [helper.make_tensor_value_info("y", casts[-1] if casts else in_type, [1, 3])],
                              initializer=[tensor("W", w.astype(dtype)), tensor("B", b.astype(dtype))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


F32, F64, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16


@pytest.mark.parametrize("casts, in_type, node, message", [
    ((F16, F32), F32, "cast0", "cast to float16"),  # the crafted net: half precision is not the identity
    ((onnx.TensorProto.BFLOAT16, F32), F32, "cast0", "cast to bfloat16"),
    ((onnx.TensorProto.INT64, F32), F32, "cast0", "cast to int64"),
    ((onnx.TensorProto.BOOL,), F32, "cast0", "cast to bool"),
    ((F32,), F64, "cast0", "rounding"),  # float64 → float32 rounds
    ((F64, F32), F32, "cast1", "rounding"),  # even back from a widening: a float64 value is not float32
])
def test_casts_that_round_are_refused_naming_the_node(casts, in_type, node, message):
    with pytest.raises(UnsupportedOperatorError, match=rf"'{node}' \(op Cast\).*{message}"):
        network_from_onnx(_cast_model(*casts, in_type=in_type))


@pytest.mark.parametrize("casts, in_type", [((F32,), F32), ((F64,), F32), ((F64, F64), F64), ((F64,), F64)])
def test_casts_that_do_not_round_are_imported(casts, in_type):
    model = _cast_model(*casts, in_type=in_type)
    net = network_from_onnx(model)
    x = np.random.default_rng(0).random((1, 4))
    got = ort_forward_typed(model, x.astype(np.float32 if in_type == F32 else np.float64))
    np.testing.assert_allclose(net.forward(x.astype(np.float32 if in_type == F32 else np.float64)), got,
                               rtol=RTOL, atol=ATOL)


def ort_forward_typed(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_float16_inputs_are_refused():
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "half",
                              [helper.make_tensor_value_info("x", F16, [1, 3])],
                              [helper.make_tensor_value_info("y", F16, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="float16: only float32 and float64 inputs"):
        network_from_onnx(model)


def _final(op: str, shape: list[int], opset: int = 17, **attrs) -> onnx.ModelProto:
    """x [1, 4] → Gemm to 3 scores → Reshape to ``shape`` → final ``op`` (named probs)."""
    (w, b), = _mlp_weights(9, [4, 3])
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1),
             helper.make_node("Reshape", ["h", "S"], ["logits"]),
             helper.make_node(op, ["logits"], ["y"], name="probs", **attrs)]
    return make_model(nodes, [1, 4], opset=opset, initializers=[tensor("W", w), tensor("B", b),
                                                                tensor("S", np.array(shape, np.int64))])


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape, opset, attrs", [
    ([1, 3], 17, dict(axis=0)),  # over the batch axis: a softmax of one value, a constant 1
    ([3, 1], 17, {}),  # the last axis has size 1
    ([3, 1], 17, dict(axis=1)),
    ([1, 3, 1], 17, dict(axis=-1)),
    ([1, 3, 1], 17, dict(axis=0)),
    ([3, 1], 11, {}),  # opset < 13: default axis 1, over the flattened dimensions [1:] of size 1
    ([3, 1, 1], 11, dict(axis=1)),
])
def test_a_final_softmax_over_a_degenerate_or_wrong_axis_is_refused(op, shape, opset, attrs):
    model = _final(op, shape, opset, **attrs)
    x = np.random.default_rng(0).random((16, 1, 4)).astype(np.float32)
    # onnxruntime's outputs are a tie everywhere (or normalise scores separately)
    outs = np.stack([ort_forward(model, xi) for xi in x])
    assert np.ptp(outs.reshape(16, -1), axis=1).max() == 0
    with pytest.raises(UnsupportedOperatorError, match=rf"'probs' \(op {op}\).*not order-preserving"):
        network_from_onnx(model)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape, opset, attrs", [
    ([1, 3], 17, {}), ([1, 3], 17, dict(axis=1)), ([3, 1], 17, dict(axis=0)), ([3], 17, {}), ([1, 3, 1], 17,
                                                                                              dict(axis=1)),
    ([1, 3], 11, {}), ([1, 3], 11, dict(axis=0)), ([1, 3, 1], 11, dict(axis=1)), ([3, 1], 11, dict(axis=0)),
])
def test_a_final_softmax_over_all_the_scores_is_dropped(op, shape, opset, attrs):
    model = _final(op, shape, opset, **attrs)
    net = network_from_onnx(model)
    x = np.random.default_rng(0).random((32, 1, 4)).astype(np.float32)
    outs = np.stack([ort_forward(model, xi).reshape(-1) for xi in x])
    np.testing.assert_array_equal(net.predict(x.reshape(32, 4)), outs.argmax(axis=1))


def test_a_softmax_that_is_not_the_last_node_is_refused():
    model = _tiny([helper.make_node("Softmax", ["h"], ["s"], name="mid")], "s")
    with pytest.raises(UnsupportedOperatorError, match=r"'mid' \(op Softmax\).*only as the last node"):
        network_from_onnx(model)


def test_dropout_in_training_mode_and_random_constants_are_refused():
    def dropout(train: bool) -> onnx.ModelProto:
        return _tiny([helper.make_node("Dropout", ["h", "ratio", "train"], ["d"], name="drop")], "d",
                     extra=(tensor("ratio", np.array(0.5, np.float32)), tensor("train", np.array(train))))

    with pytest.raises(UnsupportedOperatorError, match=r"'drop' \(op Dropout\).*training_mode"):
        network_from_onnx(dropout(True))
    assert_same_as_onnxruntime(dropout(False), (8, 4))
    noise = _tiny([helper.make_node("RandomUniform", [], ["u"], shape=[1, 4], name="noise"),
                   helper.make_node("Add", ["h", "u"], ["d"])], "d")
    with pytest.raises(UnsupportedOperatorError, match=r"'noise' \(op RandomUniform\).*random"):
        network_from_onnx(noise)


def test_batchnorm_whose_statistics_are_outputs_is_training_mode_and_refused():
    """Before opset 14, onnxruntime normalises with the batch's own statistics when the
    running statistics are outputs of the node (the old importer ignored them)."""
    c = 4
    stats = [tensor(n, np.full(c, v, np.float32)) for n, v in [("s", 1.0), ("bb", 0.0), ("mu", 0.5), ("var", 2.0)]]
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1),
             helper.make_node("BatchNormalization", ["h", "s", "bb", "mu", "var"], ["y", "m", "v", "sm", "sv"],
                              name="bn")]
    (w, b), = _mlp_weights(10, [4, c])
    model = make_model(nodes, [1, 4], opset=9, initializers=[tensor("W", w), tensor("B", b), *stats])
    with pytest.raises(UnsupportedOperatorError, match=r"'bn' \(op BatchNormalization\).*training"):
        network_from_onnx(model)


@pytest.mark.parametrize("lin_shape, const_shape, lin_first", [
    ([3], [2, 3, 4], True),  # a vector times a stack of matrices (the old importer mixed the row axis in)
    ([2, 3], [4, 3, 2], True),
    ([3, 1], [2, 1, 4, 3], False),
    ([4], [4, 3], True), ([4, 3], [3], True), ([3], [3, 2], True), ([2, 3], [2], False),
])
def test_matmul_broadcasting_against_a_constant_of_higher_rank(lin_shape, const_shape, lin_first):
    rng = np.random.default_rng(0)
    n = int(np.prod(lin_shape))
    nodes = [helper.make_node("Gemm", ["x", "W0", "B0"], ["h"], transB=1),
             helper.make_node("Reshape", ["h", "S"], ["a"]),
             helper.make_node("MatMul", ["a", "C"] if lin_first else ["C", "a"], ["m"]),
             helper.make_node("Reshape", ["m", "minus1"], ["y"])]
    model = make_model(nodes, [1, 4], initializers=[
        tensor("W0", rng.normal(0, 1, (n, 4)).astype(np.float32)), tensor("B0", rng.normal(0, 1, n).astype(np.float32)),
        tensor("S", np.array(lin_shape, np.int64)), tensor("C", rng.normal(0, 1, const_shape).astype(np.float32)),
        tensor("minus1", np.array([-1], np.int64))])
    net = network_from_onnx(model)
    x = rng.random((6, 1, 4)).astype(np.float32)
    want = np.stack([ort_forward(model, xi).reshape(-1) for xi in x])
    np.testing.assert_allclose(net.forward(x.reshape(6, 4)), want, rtol=RTOL, atol=ATOL)


def test_gemm_with_an_input_dependent_c():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Gemm", ["x", "W0", "B0"], ["h"], transB=1),
             helper.make_node("Gemm", ["A", "Bm", "h"], ["y"], alpha=0.5, beta=-2.0)]
    weights = {"W0": (3, 4), "B0": (3,), "A": (1, 2), "Bm": (2, 3)}
    model = make_model(nodes, [1, 4], initializers=[tensor(k, rng.normal(0, 1, s).astype(np.float32))
                                                    for k, s in weights.items()])
    assert_same_as_onnxruntime(model, (1, 4))


def test_values_that_overflow_float32_in_onnxruntime_are_refused():
    """``h * 1e30 * 1e30 * 1e-40`` is ``h * 1e20`` in float64, infinite in float32."""
    nodes = [helper.make_node("Mul", ["h", "big"], ["h1"]), helper.make_node("Mul", ["h1", "big"], ["h2"], name="mul2"),
             helper.make_node("Mul", ["h2", "small"], ["h3"])]
    model = _tiny(nodes, "h3", extra=(tensor("big", np.array(1e30, np.float32)),
                                      tensor("small", np.array(1e-40, np.float32))))
    with pytest.raises(ValueRangeError, match=r"'mul2' \(op Mul\).*overflow float32"):
        network_from_onnx(model)


def test_values_that_underflow_float32_in_onnxruntime_are_refused():
    """``h * 1e-30 * 1e-30 * 1e30 * 1e30`` is ``h`` folded in float64, 0 in float32."""
    nodes = [helper.make_node("Mul", ["h", "small"], ["h1"]),
             helper.make_node("Mul", ["h1", "small"], ["h2"], name="mul2"),
             helper.make_node("Mul", ["h2", "big"], ["h3"]), helper.make_node("Mul", ["h3", "big"], ["h4"])]
    model = _tiny(nodes, "h4", extra=(tensor("big", np.array(1e30, np.float32)),
                                      tensor("small", np.array(1e-30, np.float32))))
    rng = np.random.default_rng(0)  # onnxruntime's scores do not depend on the input (they are dense2's bias)
    assert (ort_forward(model, rng.random((1, 4), np.float32)) == ort_forward(model, rng.random((1, 4), np.float32))).all()
    with pytest.raises(ValueRangeError, match=r"'mul2' \(op Mul\).*underflow float32"):
        network_from_onnx(model)


def _scaled_pair(nodes: list[onnx.NodeProto], inits: list, conv_first: bool = False) -> onnx.ModelProto:
    """Two inputs, two scores; optionally a 1x1 identity convolution first (so that
    ``load_onnx`` reads the model with the graph importer first)."""
    if not conv_first:
        return make_model(nodes, ["N", 2], initializers=inits)
    pre = [helper.make_node("Conv", ["x", "Wid"], ["xc"]), helper.make_node("Flatten", ["xc"], ["x0"])]
    nodes = [helper.make_node(n.op_type, ["x0" if i == "x" else i for i in n.input], list(n.output)) for n in nodes]
    return make_model(pre + nodes, ["N", 1, 1, 2], initializers=[*inits, tensor("Wid", np.ones((1, 1, 1, 1), np.float32))])


@pytest.mark.parametrize("conv_first", [False, True])
def test_an_underflow_a_later_factor_amplifies_is_refused_by_either_importer(conv_first):
    """``y0 = x0 * 1e-44 * 1e38 * 1e6``: onnxruntime rounds ``x0 * 1e-44`` to float32's
    subnormal grid (0.49 -> 0.42 after scaling: class 1 at [0.49, 0.45]); folded, the IR
    computes ``0.98 x0`` (class 0). Neither the chain importer nor the fallback from the
    graph importer may accept it."""
    nodes = [helper.make_node("Mul", ["x", "a"], ["h1"]), helper.make_node("Mul", ["h1", "b"], ["h2"]),
             helper.make_node("Mul", ["h2", "c"], ["y"])]
    inits = [tensor("a", np.array([1e-44, 1], np.float32)), tensor("b", np.array([1e38, 1], np.float32)),
             tensor("c", np.array([1e6, 1], np.float32))]
    model = _scaled_pair(nodes, inits, conv_first)
    x = np.array([0.49, 0.45], np.float32).reshape((1, 1, 1, 2) if conv_first else (1, 2))
    assert ort_forward(model, x).argmax() == 1
    with pytest.raises(ValueRangeError, match="amplifies the underflow"):
        model_from_onnx(model)


@pytest.mark.parametrize("conv_first", [False, True])
def test_a_partial_sum_that_overflows_float32_is_refused(conv_first):
    """``s0 = -3e38 x0 - 3e38 x0 + 3e38 x0`` folds to ``-3e38 x0`` (in range), but
    onnxruntime's running sum reaches ``-6e38 x0``: infinite for ``x0 > 0.57``."""
    w1 = np.array([[1, 1, 1, 0], [0, 0, 0, 1]], np.float32)
    w2 = np.array([[-3e38, 0], [-3e38, 0], [3e38, 0], [0, 1]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["s"]),
             helper.make_node("Mul", ["s", "K"], ["t"]), helper.make_node("Add", ["t", "B"], ["y"])]
    inits = [tensor("W1", w1), tensor("W2", w2), tensor("K", np.array([1e-38, 1], np.float32)),
             tensor("B", np.array([0, -5], np.float32))]
    model = _scaled_pair(nodes, inits, conv_first)
    x = np.array([0.9, 0.5], np.float32).reshape((1, 1, 1, 2) if conv_first else (1, 2))
    assert np.isneginf(ort_forward(model, x)).any()
    with pytest.raises(ValueRangeError, match="reach 9e\\+38"):
        model_from_onnx(model)


@pytest.mark.parametrize("conv_first", [False, True])
def test_a_domain_beyond_the_inputs_proven_in_range_is_refused(conv_first):
    """``y0 = 300 - x0 * 1e37 * 1e-37``: in range for inputs up to about 34, infinite in
    onnxruntime beyond (class 1 at x = [200, 50]), ``100`` in the IR (class 0)."""
    from parallelepipedonn.box import Box
    from parallelepipedonn.verify import verify_epsilon

    nodes = [helper.make_node("Mul", ["x", "a"], ["h1"]), helper.make_node("Mul", ["h1", "b"], ["h2"]),
             helper.make_node("Mul", ["h2", "n"], ["h3"]), helper.make_node("Add", ["h3", "d"], ["y"])]
    inits = [tensor("a", np.array([1e37, 1], np.float32)), tensor("b", np.array([1e-37, 1], np.float32)),
             tensor("n", np.array([-1, 1], np.float32)), tensor("d", np.array([300, 0], np.float32))]
    model = _scaled_pair(nodes, inits, conv_first)
    x = np.array([200.0, 50.0], np.float32)
    assert ort_forward(model, x.reshape((1, 1, 1, 2) if conv_first else (1, 2))).argmax() == 1
    net = model_from_onnx(model)
    assert net.input_bound == pytest.approx(float(np.finfo(np.float32).max) / 1e37, rel=1e-3)
    verify_epsilon(net, [0.5, 0.5], 0.1)  # the unit domain is in range
    with pytest.raises(ValueRangeError, match="magnitude 255"):
        verify_epsilon(net, x, 1.0, label=0, domain=Box(np.zeros(2), np.full(2, 255.0)))


def batchnorm_model(conv: bool) -> onnx.ModelProto:
    """A BatchNormalization without an ``epsilon`` attribute whose channel 0 has variance
    ``-float32(1e-5)``: onnxruntime adds ``float32(1e-5)`` (its output is NaN there)."""
    var = np.array([-np.float32(1e-5), 1.0], np.float32)
    stats = [tensor("s", np.ones(2, np.float32)), tensor("b", np.zeros(2, np.float32)),
             tensor("mu", np.zeros(2, np.float32)), tensor("var", var)]
    if conv:
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
                 helper.make_node("BatchNormalization", ["c", "s", "b", "mu", "var"], ["bn"], name="bn"),
                 helper.make_node("Flatten", ["bn"], ["y"])]
        return make_model(nodes, [1, 2, 1, 1], initializers=[tensor("w", np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1)),
                                                             *stats])
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "mu", "var"], ["y"], name="bn")]
    return make_model(nodes, [1, 2], initializers=stats)


@pytest.mark.parametrize("conv", [False, True], ids=["chain", "graph"])
def test_batchnorm_default_epsilon_is_onnxs_float32(conv):
    """(Was the float64 1e-5: a variance of ``-float32(1e-5)`` was scaled by about 2e6.)"""
    from parallelepipedonn.onnx_import import model_from_onnx

    model = batchnorm_model(conv)
    assert np.isnan(ort_forward(model, np.ones((1, 2, 1, 1) if conv else (1, 2), np.float32))[0, 0])
    with pytest.raises(ModelError, match="'bn' .*variance \\+ epsilon is not positive"):
        model_from_onnx(model)


def test_opsets_before_7_are_refused():
    model = _tiny([], "h")
    model.opset_import[0].version = 6
    with pytest.raises(ModelError, match="opset 6"):
        network_from_onnx(model)


# -- issue 12: memory guard ------------------------------------------------------------------------
def _wide(width: int) -> onnx.ModelProto:
    """x [1, 4] → Gemm to ``width`` (named wide) → Relu (named act) → Gemm to 3."""
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1, name="wide"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["y"], transB=1, name="out")]
    return make_model(nodes, [1, 4], initializers=[
        tensor("W1", np.full((width, 4), 0.01, np.float32)), tensor("B1", np.zeros(width, np.float32)),
        tensor("W2", np.full((3, width), 0.01, np.float32)), tensor("B2", np.zeros(3, np.float32))])


def test_a_relu_on_a_very_wide_layer_is_read_without_its_identity_matrix():
    """The rows after a Relu on 100,000 values (a dense identity would take 74.5 GiB) are a
    view of 200,000 numbers, and the Gemm that reads them takes its weights as they are."""
    model = _wide(100_000)
    net = network_from_onnx(model)
    assert net.describe() == "4-100000-3 ReLU network"
    assert np.array_equal(net.affines[1].weight, np.full((3, 100_000), np.float32(0.01), np.float64))
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 4))
    assert np.allclose(net.forward(x[:, 0]), np.concatenate([ort_forward(model, row) for row in x]),
                       rtol=1e-5, atol=1e-6)


def test_fresh_rows_are_a_read_only_view_of_the_identity():
    from parallelepipedonn.onnx_import import _identity_rows
    from parallelepipedonn.onnx_read import fresh_rows

    for n, shape in ((1, (1,)), (6, (6,)), (12, (1, 3, 2, 2)), (0, (0,))):
        rows = fresh_rows(n, shape)
        assert rows.shape == (n + 1, *shape) and np.array_equal(rows, _identity_rows(n, shape))
        assert not rows.flags.writeable
    root = fresh_rows(1000, (1000,))
    while root.base is not None:
        root = root.base
    assert root.size == 2000


@pytest.mark.parametrize("op", ["Neg", "Mul", "Transpose", "Relu"])
def test_an_operator_computing_on_a_wide_relus_output_is_charged_its_dense_rows(op):
    """Every operator but reshapes and a product with the identity computes on all the
    rows: it is refused by the memory limit, naming it, before anything is allocated."""
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Reshape", ["r", "S"], ["r2"]),
             helper.make_node(op, ["r2", "C"] if op == "Mul" else ["r2"], ["m"], name="next"),
             helper.make_node("Reshape", ["m", "S"], ["m2"]),
             helper.make_node("Gemm", ["m2", "W2"], ["y"], transB=1)]
    width = 100_000
    model = make_model(nodes, [1, 4], initializers=[
        tensor("W1", np.full((width, 4), 0.01, np.float32)), tensor("B1", np.zeros(width, np.float32)),
        tensor("S", np.array([1, width], np.int64)), tensor("C", np.float32(2.0)),
        tensor("W2", np.full((3, width), 0.01, np.float32))])
    with pytest.raises(ModelTooLargeError, match=rf"node 'next' \({op}\) on 100000 values would need a dense "
                                                 r"100001x100000 float64 matrix \(74\.5 GiB\)"):
        network_from_onnx(model)


def test_a_product_with_fresh_variables_gives_the_ir_of_the_per_row_products_bit_for_bit():
    """``MatMul(A, x)`` on a 1-D input takes ``A`` itself; followed by another product
    (folded into it), its sums run in the order of the per-row products it replaces (``x``
    times an exact 1 first: the same values, no longer the input's own variables): the same
    digest (an adversarial review found the rows column-major at first, 1-4 ulps off)."""
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, (7, 6)).astype(np.float32), rng.normal(0, 1, (7, 9)).astype(np.float32)
    inits = [tensor("A", a), tensor("B", b), tensor("one", np.ones(6, np.float32))]
    fast = make_model([helper.make_node("MatMul", ["A", "x"], ["t"]), helper.make_node("MatMul", ["t", "B"], ["y"])],
                      [6], initializers=inits)
    per_row = make_model([helper.make_node("Mul", ["x", "one"], ["x1"]), helper.make_node("MatMul", ["A", "x1"], ["t"]),
                          helper.make_node("MatMul", ["t", "B"], ["y"])], [6], initializers=inits)
    assert network_from_onnx(fast).digest == network_from_onnx(per_row).digest


def test_an_operator_reading_a_relus_output_twice_makes_one_dense_copy(monkeypatch):
    from parallelepipedonn.onnx_read import OnnxWalker

    calls = []
    dense = OnnxWalker.dense
    monkeypatch.setattr(OnnxWalker, "dense", lambda self, label, op, v: calls.append(op) or dense(self, label, op, v))
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Add", ["r", "r"], ["s"]), helper.make_node("Gemm", ["s", "W2"], ["y"], transB=1)]
    model = make_model(nodes, [1, 4], initializers=[tensor("W1", np.ones((5, 4), np.float32)),
                                                    tensor("W2", np.ones((3, 5), np.float32))])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 4))
    assert np.allclose(network_from_onnx(model).forward(x), ort_forward(model, x), rtol=1e-6)
    assert calls.count("Add") == 1


def test_a_product_of_a_constant_and_a_wide_relus_1d_output_takes_the_weights():
    """As VNN-COMP 2021's nn4sys models: a 1-D input, ``MatMul(W, r)`` with the constant
    on the left, a Relu on 60,100 values (here 50,000): read without the identity (the
    product with it is each weight once, ``+ 0.0``), equal to onnxruntime."""
    rng = np.random.default_rng(3)
    width = 50_000
    w1, b1 = rng.normal(0, 1, (width, 1)).astype(np.float32), rng.normal(0, 1, width).astype(np.float32)
    w2 = rng.normal(0, 0.01, (2, width)).astype(np.float32)
    w2[0, :7] = -0.0
    nodes = [helper.make_node("MatMul", ["W1", "x"], ["h"]), helper.make_node("Add", ["h", "B1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r"]), helper.make_node("MatMul", ["W2", "r"], ["y"])]
    model = make_model(nodes, [1], initializers=[tensor("W1", w1), tensor("B1", b1), tensor("W2", w2)])
    net = network_from_onnx(model)
    assert net.describe() == f"1-{width}-2 ReLU network"
    assert net.affines[1].weight.tobytes() == (w2.astype(np.float64) + 0.0).tobytes()
    x = rng.uniform(-3, 3, (6, 1))
    ort = np.stack([ort_forward(model, row) for row in x])
    assert np.allclose(net.forward(x), ort, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [[1, 10**10], ["N", 100_000], [1, 2**40, 2**40]])
def test_an_absurd_declared_input_size_is_refused(shape):
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], shape)
    with pytest.raises(ModelTooLargeError, match=r"input 'x' of shape .* would need a dense"):
        network_from_onnx(model)


def test_a_convolution_too_large_to_expand_is_refused():
    nodes = [helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Flatten", ["c"], ["y"])]
    model = make_model(nodes, [1, 1, 32, 32], initializers=[tensor("K", np.ones((512, 1, 3, 3), np.float32))])
    with pytest.raises(ModelTooLargeError, match=r"node 'conv1' \(Conv\) would need a dense 524288x1025 float64 "
                                                 r"matrix \(4 GiB\)"):
        network_from_onnx(model)


def test_broadcasting_too_large_and_huge_constants_are_refused():
    add = make_model([helper.make_node("Add", ["x", "C"], ["y"], name="grow")], [1, 1000],
                     initializers=[tensor("C", np.zeros((100_000, 1), np.float32))])
    with pytest.raises(ModelTooLargeError, match=r"node 'grow' \(Add\) would need a dense"):
        network_from_onnx(add)
    const = make_model([helper.make_node("ConstantOfShape", ["S"], ["big"], name="fill"),
                        helper.make_node("Add", ["x", "big"], ["y"])], [1, 4],
                       initializers=[tensor("S", np.array([10**10, 4], np.int64))])
    with pytest.raises(ModelTooLargeError, match=r"constant 'big' of node 'fill' \(ConstantOfShape\)"):
        network_from_onnx(const)


def test_the_memory_limit_is_a_module_constant(monkeypatch):
    import parallelepipedonn.onnx_import as onnx_import

    model = _wide(200)
    assert network_from_onnx(model).describe() == "4-200-3 ReLU network"
    monkeypatch.setattr(onnx_import, "MAX_DENSE_BYTES", 8 * 5 * 200 - 1)  # the first Gemm's rows: 5 x 200
    with pytest.raises(ModelTooLargeError, match="'wide'"):
        network_from_onnx(model)


def test_a_network_beyond_float32_or_a_graph_is_not_written_as_onnx(tmp_path):
    from parallelepipedonn.network import Affine, Network, ReLU
    from parallelepipedonn.onnx_export import save_onnx
    from tests.graph_nets import residual

    big = Network((2,), (Affine(np.array([[1e39, 0.0], [0.0, 1.0]]), np.zeros(2)), ReLU(),
                         Affine(np.eye(2), np.zeros(2))))
    with pytest.raises(ModelError, match="beyond float32's range"):
        save_onnx(big, tmp_path / "big.onnx")
    with pytest.raises(ModelError, match="only a chain network"):
        save_onnx(residual(), tmp_path / "g.onnx")
    assert not list(tmp_path.iterdir())


def test_dequantized_weights_fold_at_the_opsets_before_19():
    """QDQ models (int8 weights, DequantizeLinear) at opset 13: onnx's reference evaluator
    has DequantizeLinear from opset 19 only, with the same semantics for 8-bit types. The
    IR is the model's float semantics: onnxruntime's with its graph optimizations off
    (on, it fuses the pattern into a dynamically quantized product, 0.4% off here)."""
    import onnxruntime as ort

    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["W"]), helper.make_node("MatMul", ["x", "W"], ["y"])]
    inits = [tensor("q", np.array([[-128, 5], [1, 127], [3, -4]], np.int8)), tensor("s", np.array(0.1, np.float32)),
             tensor("zp", np.array(3, np.int8))]
    model = make_model(nodes, ["N", 3], initializers=inits, opset=13)
    x = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = plain.run(None, {"x": x})[0]
    np.testing.assert_allclose(model_from_onnx(model).forward(x.astype(np.float64)), expected, rtol=1e-6, atol=1e-6)


def _unbatched(nodes: list[onnx.NodeProto], inits: list, n: int, m: int) -> onnx.ModelProto:
    """A model whose input has no batch axis (``[n]``, reshaped to ``[1, n]``): a structure
    only the chain importer reads."""
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shp"], ["x2"]), *nodes], "unbatched",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, m])],
                              initializer=[tensor("shp", np.array([1, n], np.int64)), *inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_an_amplified_underflow_is_refused_where_only_the_chain_importer_reads_the_model():
    """``y0 = x * 2^-149 * 2^126 * 2^23`` (``x`` in the IR, 0 in float32 at 0.3), on an
    input without a batch axis, which the graph importer does not read: the chain
    importer's own underflow bound refuses it."""
    nodes = [helper.make_node("Gemm", ["x2", "W"], ["t"]), helper.make_node("Mul", ["t", "a"], ["t1"]),
             helper.make_node("Mul", ["t1", "b"], ["t2"]), helper.make_node("Mul", ["t2", "c"], ["y"])]
    inits = [tensor("W", np.array([[1, 0.5]], np.float32)), tensor("a", np.array([2.0**-149, 1], np.float32)),
             tensor("b", np.array([2.0**126, 1], np.float32)), tensor("c", np.array([2.0**23, 1], np.float32))]
    model = _unbatched(nodes, inits, 1, 2)
    assert ort_forward(model, np.array([0.3], np.float32)).reshape(-1).argmax() == 1
    with pytest.raises(ValueRangeError, match="amplify the underflow"):
        model_from_onnx(model)
    ordinary = _unbatched([helper.make_node("Gemm", ["x2", "W"], ["y"])],
                          [tensor("W", np.array([[1, 0.5]], np.float32))], 1, 2)
    assert model_from_onnx(ordinary).n_classes == 2


@pytest.mark.parametrize("fused", ["gemm", "matmul-add"])
def test_partial_sums_that_start_from_the_added_constant_are_bounded(fused):
    """onnxruntime's Gemm starts its sums from ``beta C`` (and fuses a MatMul and an Add of a
    constant into one): ``3e38`` plus a thousand terms ``w x`` that cancel to 0 overflows on
    the way although the folded result, ``3e38``, does not."""
    k = 1024
    w = np.zeros((k, 2), np.float32)
    w[:k // 2, 0], w[k // 2:, 0] = 1e38 / (k // 2), -1e38 / (k // 2)
    c = np.array([3e38, 0.0], np.float32)
    dup = [helper.make_node("MatMul", ["x", "D"], ["h"])]
    if fused == "gemm":
        nodes = dup + [helper.make_node("Gemm", ["h", "W", "C"], ["y"])]
    else:
        nodes = dup + [helper.make_node("MatMul", ["h", "W"], ["p"]), helper.make_node("Add", ["p", "C"], ["y"])]
    model = make_model(nodes, ["N", 1], initializers=[tensor("D", np.ones((1, k), np.float32)),
                                                      tensor("W", w), tensor("C", c)])
    assert not np.isfinite(ort_forward(model, np.array([[1.0]], np.float32))).all()
    with pytest.raises(ValueRangeError, match="partial sums"):
        model_from_onnx(model)


@pytest.mark.parametrize("conv", [False, True])
def test_a_batchnorm_shift_whose_products_overflow_is_refused(conv):
    """onnxruntime computes a BatchNormalization's shift ``B - mean * a`` in float32:
    ``mean * a = 5e38`` overflows although the folded shift, ``-2e38``, does not."""
    stats = [tensor("s", np.array([1e9, 1.0], np.float32)), tensor("B", np.array([3e38, 0.0], np.float32)),
             tensor("mu", np.array([5e29, 0.0], np.float32)), tensor("v", np.array([1.0, 1.0], np.float32))]
    if conv:
        nodes = [helper.make_node("Conv", ["x", "K"], ["c"]), helper.make_node("BatchNormalization",
                 ["c", "s", "B", "mu", "v"], ["b"]), helper.make_node("Flatten", ["b"], ["y"])]
        model = make_model(nodes, ["N", 2, 1, 1], initializers=[tensor("K", np.eye(2, dtype=np.float32)
                                                                      .reshape(2, 2, 1, 1)), *stats])
    else:
        nodes = [helper.make_node("BatchNormalization", ["x", "s", "B", "mu", "v"], ["y"])]
        model = make_model(nodes, ["N", 2], initializers=stats)
    with pytest.raises(ValueRangeError, match="shift's products reach 5e\\+38"):
        model_from_onnx(model)


def test_a_gzip_compressed_model_loads_and_records_the_files_hash(tmp_path):
    import gzip
    import hashlib

    from parallelepipedonn.network import Affine, Network, ReLU
    from parallelepipedonn.onnx_export import save_onnx

    net = Network((2,), (Affine(np.eye(2), np.zeros(2)), ReLU(), Affine(np.eye(2), np.zeros(2))))
    save_onnx(net, tmp_path / "m.onnx")
    (tmp_path / "m.onnx.gz").write_bytes(gzip.compress((tmp_path / "m.onnx").read_bytes()))
    loaded = load_onnx(tmp_path / "m.onnx.gz")
    assert loaded.file_sha256 == hashlib.sha256((tmp_path / "m.onnx.gz").read_bytes()).hexdigest()
    np.testing.assert_array_equal(loaded.forward(np.eye(2)), net.forward(np.eye(2)))


def test_an_underflow_amplified_after_a_cast_to_float64_is_refused_by_the_chain_importer():
    """``x * 1e-44`` in float32 (on the subnormal grid), then cast to float64 and scaled by
    1e44: onnxruntime's 0.42 against the IR's 0.49 at 0.49, on an unbatched input."""
    nodes = [helper.make_node("Reshape", ["x", "shp"], ["x2"]), helper.make_node("Mul", ["x2", "a"], ["h"]),
             helper.make_node("Cast", ["h"], ["h64"], to=onnx.TensorProto.DOUBLE),
             helper.make_node("Mul", ["h64", "b"], ["y"])]
    graph = helper.make_graph(nodes, "cast", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [1, 2])],
                              initializer=[tensor("shp", np.array([1, 2], np.int64)),
                                           tensor("a", np.array([1e-44, 1], np.float32)),
                                           tensor("b", np.array([1e44, 1.0]))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(ValueRangeError, match="amplify the underflow"):
        model_from_onnx(model)


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_a_stages_first_product_takes_the_weights_bit_for_bit_without_multiplying_the_identity(op, monkeypatch):
    """The variables after a Relu (or the input) times a constant matrix is that matrix
    (the importer skips the n-fold product: 45 s on a 6272-wide layer); the IR is the one
    the full product gives, bit for bit, negative zeros and consecutive layers included."""
    from parallelepipedonn import onnx_import

    rng = np.random.default_rng(7)
    w1, w2, w3 = (rng.normal(0, 1, s).astype(np.float32) for s in ((6, 8), (8, 5), (5, 3)))
    w1[0, 0], w2[1, :] = -0.0, -0.0
    b = rng.normal(0, 1, 8).astype(np.float32)
    if op == "MatMul":
        nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "b"], ["h2"]),
                 helper.make_node("Relu", ["h2"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["s"]),
                 helper.make_node("MatMul", ["s", "W3"], ["y"])]
        inits = [tensor("W1", w1), tensor("b", b), tensor("W2", w2), tensor("W3", w3)]
    else:
        nodes = [helper.make_node("Gemm", ["x", "W1", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Gemm", ["r", "W2"], ["s"]), helper.make_node("Gemm", ["s", "W3"], ["y"])]
        inits = [tensor("W1", w1.T.copy()), tensor("b", b), tensor("W2", w2), tensor("W3", w3)]
    model = make_model(nodes, ["N", 6], initializers=inits)
    fast = model_from_onnx(model)
    monkeypatch.setattr(onnx_import, "_identity_product", lambda rows, const, fresh=False: False)
    full = model_from_onnx(model)
    assert [(a.weight.tobytes(), a.bias.tobytes()) for a in fast.affines] == \
        [(a.weight.tobytes(), a.bias.tobytes()) for a in full.affines]
    assert np.array_equal(fast.affines[0].weight, w1.T.astype(np.float64))


def _wide_model(declared_weight: bool = False, symbolic: bool = False) -> onnx.ModelProto:
    """x (N, 80) -> MatMul W (80 x 100, more elements than SHAPE_ONLY_ELEMENTS) -> Add b
    -> Relu -> Reshape (by a small shape initializer) -> Gemm (100 -> 3); ``declared_weight``:
    W also a graph input (as old exporters list initializers), ``symbolic``: declared with
    a symbolic first dimension."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("Reshape", ["h2", "shape"], ["h3"]),
             helper.make_node("Gemm", ["h3", "W2", "b2"], ["y"], transB=1)]
    inits = [tensor("W", rng.normal(size=(80, 100)).astype(np.float32)), tensor("b", np.zeros(100, np.float32)),
             tensor("shape", np.array([-1, 100], np.int64)),
             tensor("W2", rng.normal(size=(3, 100)).astype(np.float32)), tensor("b2", np.zeros(3, np.float32))]
    model = make_model(nodes, ["N", 80], initializers=inits)
    if declared_weight:
        model.graph.input.append(helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT,
                                                               ["k" if symbolic else 80, 100]))
    return model


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    g = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True).graph
    return {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in [*g.value_info, *g.output]}


@pytest.mark.parametrize("declared_weight", [False, True])
def test_shape_inference_reads_large_initializers_as_typed_inputs(declared_weight, tmp_path):
    """ONNX's shape inference serializes the model and parses it back: its large
    initializers reach it as graph inputs of their type and shape, without values (the
    small ones, such as Reshape's shape, keep theirs); the shapes it infers are the same,
    and the model itself is unchanged."""
    from parallelepipedonn.onnx_read import SHAPE_ONLY_ELEMENTS, shapes_model

    model = _wide_model(declared_weight)
    before = model.SerializeToString()
    light = shapes_model(model)
    assert model.SerializeToString() == before
    assert 80 * 100 > SHAPE_ONLY_ELEMENTS >= 3 * 100
    assert {t.name for t in light.graph.initializer} == {"b", "shape", "W2", "b2"}
    assert [i.name for i in light.graph.input] == ["x", "W"]
    assert _inferred_shapes(light) == _inferred_shapes(model)
    assert _inferred_shapes(light)["h3"][1] == 100  # through the Reshape, by its shape's values
    path = tmp_path / "wide.onnx"
    path.write_bytes(before)
    net = load_onnx(path)  # (ONNX's checker reads the file's bytes, not the model serialized again)
    x = np.random.default_rng(1).random((4, 80)).astype(np.float32)
    assert np.allclose(net.forward(x.astype(np.float64)), ort_forward(model, x), rtol=1e-4, atol=1e-4)


def test_an_initializer_declared_as_an_input_of_another_shape_keeps_its_values():
    """Inference reconciles an initializer with its declaration as an input; where the two
    differ (here a symbolic dimension), the initializer reaches it as it is."""
    from parallelepipedonn.onnx_read import shapes_model

    model = _wide_model(declared_weight=True, symbolic=True)
    light = shapes_model(model)
    assert "W" in {t.name for t in light.graph.initializer}
    assert [i.name for i in light.graph.input] == ["x", "W"]
    assert _inferred_shapes(light) == _inferred_shapes(model)


def test_the_subnormal_test_on_bit_patterns_is_the_comparison():
    """``_below(m, tiny)``: some ``0 < m < tiny``, decided on the float64 bit patterns."""
    from parallelepipedonn.onnx_read import _below

    tiny = float(np.finfo(np.float32).smallest_subnormal)
    edges = [0.0, 5e-324, np.nextafter(tiny, 0.0), tiny, np.nextafter(tiny, 1.0), 1.0, 3e38, 1e308]
    for value in edges:
        for others in ([], [0.0, 0.0], [1.0, tiny]):
            m = np.array([*others, value])
            assert _below(m, tiny) == bool(((m > 0) & (m < tiny)).any()), (value, others)
    assert not _below(np.zeros((3, 4)), tiny) and not _below(np.empty(0), tiny)
