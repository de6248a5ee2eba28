"""Soundness of the DAG path, by attack: graphs crafted so that a rounding error, an
overflow or an importer shortcut would turn a wrong class into a proof. Every case has its
ground truth in exact rational arithmetic on the stored float64 weights; a proof
(VERIFIED) of a box that holds a point of exact margin <= 0 is a soundness bug."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from oracles.base import Verdict
from oracles.crown import CrownOracle
from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph
from tests.devices import DEVICES

F = Fraction


def _dense(i: int, weight, bias) -> gn.Dense:
    w = np.asarray(weight, dtype=np.float64)
    return gn.Dense(inputs=(i,), shape=(w.shape[0],), in_shape=(w.shape[1],), weight=w, bias_=bias)


# -- float32 mode: weights that float32 cannot hold to relative precision --------------------
def _subnormal_f32_weight_graph(relu: bool) -> tuple[Graph, float, Fraction]:
    """``logit_0 = 2^100 * (w x)``, ``logit_1 = 1.875 * 2^51`` at ``x = 2^100`` with
    ``w = 1.75 * 2^-149``: a float32 subnormal, which float32 rounds to ``2^-148`` (+14 %,
    an absolute error of 2^-151 that the huge weight after it amplifies to 2^49)."""
    w, x = 1.75 * 2.0**-149, 2.0**100
    nodes: list[gn.Node] = [gn.Input(inputs=(), shape=(1,)), _dense(0, [[w]], [0.0])]
    if relu:
        nodes.append(gn.ReLU(inputs=(1,), shape=(1,)))
    nodes.append(_dense(len(nodes) - 1, [[2.0**100], [0.0]], [0.0, 1.875 * 2.0**51]))
    exact = F(2) ** 100 * F(w) * F(x) - F(1.875) * F(2) ** 51  # = -2^48
    return Graph((1,), tuple(nodes)), x, exact


@pytest.mark.parametrize("device", DEVICES)
def test_float32_crown_covers_the_rounding_of_weights_below_float32s_normal_range(device):
    g, x, exact = _subnormal_f32_weight_graph(relu=False)
    assert not g.is_chain and exact == -(F(2) ** 48)
    assert g.exact_margin([x], 0) == exact and g.misclassified([[x]], 0)[0]
    for dtype in ("float64", "float32"):
        answer = CrownOracle(g, dtype=dtype, device=device).verify_box([x], [x], 0)
        assert answer.verdict is not Verdict.VERIFIED, dtype


@pytest.mark.parametrize("device", DEVICES)
def test_float32_chain_crown_covers_the_rounding_of_weights_below_float32s_normal_range(device):
    g, x, exact = _subnormal_f32_weight_graph(relu=True)
    assert g.is_chain and g.exact_margin([x], 0) == exact < 0
    answer = CrownOracle(g.as_network(), dtype="float32", device=device).verify_box([x], [x], 0)
    assert answer.verdict is not Verdict.VERIFIED


# -- non-finite intermediate bounds -------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_a_box_that_overflows_is_unknown_without_costing_the_other_boxes_of_its_batch(device):
    """``ReLU(ReLU(1e300 x))`` (a ReLU read by a ReLU) overflows on the box around
    ``x = 1e10``: that box is UNKNOWN; the box ``[0, 1]^2`` of the same batch is still
    proven (margin >= 1: ``logit_0 = 1 + 2e-300 relu(1e300 x_0) >= 1``, ``logit_1 = 0``),
    not lost to an error of the whole batch."""
    nodes = [gn.Input(inputs=(), shape=(2,)), _dense(0, [[1e300, 0], [0, 1e300]], [0.0, 0.0]),
             gn.ReLU(inputs=(1,), shape=(2,)), gn.ReLU(inputs=(2,), shape=(2,)), gn.Add(inputs=(3, 3), shape=(2,)),
             _dense(4, [[1e-300, 0], [0, 0]], [1.0, 0.0])]
    g = Graph((2,), tuple(nodes))
    for dtype in ("float64", "float32"):
        oracle = CrownOracle(g, dtype=dtype, device=device)
        ok, overflow = oracle.verify(np.array([[0.0, 0.0], [1e10, 0.0]]), np.array([[1.0, 1.0], [1e10, 1.0]]), 0)
        assert overflow.verdict is Verdict.UNKNOWN and oracle.stats.errors == 0, dtype
        if dtype == "float64":
            assert ok.verdict is Verdict.VERIFIED


# -- ONNX import: the graph is the model onnxruntime runs, or the model is refused -------------
def _onnx_model(nodes, inits: dict, in_shape: list[int], n_flat: int, opset: int = 17):
    """``nodes`` from ``x`` to ``z``, then Flatten and a Gemm to 3 class scores ``y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = {**inits, "G": rng.normal(size=(3, n_flat)).astype(np.float32),
             "Gb": rng.normal(size=3).astype(np.float32)}
    graph = helper.make_graph(
        [*nodes, helper.make_node("Flatten", ["z"], ["f"]), helper.make_node("Gemm", ["f", "G", "Gb"], ["y"], transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _kernel(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)


def _refused_maxpools():
    """MaxPool the lowering to ``b + relu(a - b)`` does not cover: name, model, the reason."""
    from onnx import TensorProto, helper

    n = helper.make_node
    yield "maxpool pads", _onnx_model([n("MaxPool", ["x"], ["z"], kernel_shape=[2, 2], pads=[1, 1, 0, 0])], {},
                                      [1, 2, 5, 5], 50), "pads [1, 1, 0, 0]: padding (with -inf)"
    yield "maxpool SAME_UPPER", _onnx_model([n("MaxPool", ["x"], ["z"], kernel_shape=[2, 2], strides=[2, 2],
                                               auto_pad="SAME_UPPER")], {}, [1, 2, 5, 5], 18), "auto_pad SAME_UPPER"
    yield "maxpool ceil_mode", _onnx_model([n("MaxPool", ["x"], ["z"], kernel_shape=[2, 2], strides=[2, 2],
                                              ceil_mode=1)], {}, [1, 2, 5, 5], 18), "ceil_mode 1 with a partial"
    yield "maxpool 1-D", _onnx_model([n("MaxPool", ["x"], ["z"], kernel_shape=[2])], {}, [1, 2, 5], 8), \
        "only 2-D pooling"
    yield "globalmaxpool 3-D", _onnx_model([n("GlobalMaxPool", ["x"], ["z"])], {}, [1, 2, 3, 3, 3], 2), \
        "(op GlobalMaxPool): input of shape [1, 2, 3, 3, 3]"
    yield "maxpool indices read", _onnx_model(
        [n("MaxPool", ["x"], ["m", "i"], kernel_shape=[2, 2], storage_order=1), n("Cast", ["i"], ["c"], to=TensorProto.FLOAT),
         n("Add", ["m", "c"], ["z"])], {}, [1, 2, 5, 5], 32), "its output 'i' is not supported"


def _refused_models():
    from onnx import TensorProto, helper

    n = helper.make_node
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    for name, model, _ in _refused_maxpools():
        yield name, model
    yield "avgpool ceil_mode", _onnx_model([n("AveragePool", ["x"], ["z"], kernel_shape=[2, 2], strides=[2, 2],
                                              ceil_mode=1)], {}, [1, 2, 5, 5], 18)
    yield "avgpool SAME_UPPER", _onnx_model([n("AveragePool", ["x"], ["z"], kernel_shape=[2, 2], strides=[2, 2],
                                               auto_pad="SAME_UPPER")], {}, [1, 2, 5, 5], 18)
    yield "avgpool dilations", _onnx_model([n("AveragePool", ["x"], ["z"], kernel_shape=[2, 2], dilations=[2, 2])],
                                           {}, [1, 2, 5, 5], 18, opset=19)
    for mode in ("reflect", "edge"):
        yield f"pad {mode}", _onnx_model([n("Pad", ["x", "p"], ["q"], mode=mode), n("Conv", ["q", "K"], ["z"])],
                                         {"p": pads, "K": _kernel(2, 2, 3, 3)}, [1, 2, 5, 5], 50)
    yield "pad value 0.5", _onnx_model([n("Pad", ["x", "p", "v"], ["q"]), n("Conv", ["q", "K"], ["z"])],
                                       {"p": pads, "v": np.array(0.5, np.float32), "K": _kernel(2, 2, 3, 3)},
                                       [1, 2, 5, 5], 50)
    yield "pad axes", _onnx_model([n("Pad", ["x", "p", "", "a"], ["q"]), n("Conv", ["q", "K"], ["z"])],
                                  {"p": np.array([1, 0, 0, 1], np.int64), "a": np.array([2, 3], np.int64),
                                   "K": _kernel(2, 2, 2, 2)}, [1, 2, 5, 5], 50, opset=18)
    for to in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
        yield f"cast {to}", _onnx_model([n("Conv", ["x", "K"], ["c"]), n("Cast", ["c"], ["h"], to=to),
                                         n("Cast", ["h"], ["z"], to=TensorProto.FLOAT)],
                                        {"K": _kernel(2, 2, 2, 2)}, [1, 2, 5, 5], 32)
    yield "conv x*x", _onnx_model([n("Conv", ["x", "x"], ["z"])], {}, [1, 1, 2, 2], 1)


@pytest.mark.parametrize("name,model", list(_refused_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_importer_refuses_what_the_ir_cannot_represent(name, model):
    from parallelepipedonn.errors import ModelError
    from parallelepipedonn.onnx_import import model_from_onnx

    with pytest.raises(ModelError):
        model_from_onnx(model, name)


@pytest.mark.parametrize("name,model,reason", list(_refused_maxpools()), ids=[c[0] for c in _refused_maxpools()])
def test_a_max_pooling_the_lowering_does_not_cover_exits_2_with_its_reason_in_one_line(name, model, reason,
                                                                                      tmp_path, capsys):
    from tests.test_cli import run

    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    code, stdout, err = run(capsys, "info", "--model", str(path))
    assert code == 2 and stdout == "", err
    assert err.startswith("parallelepipedonn: error: ") and err.count("\n") == 1 and reason in err, err


def _geometry_models():
    from onnx import helper

    n = helper.make_node
    for include in (0, 1):
        for pads, strides in (([1, 1, 1, 1], [2, 1]), ([0, 1, 1, 0], [1, 1]), ([1, 0, 0, 1], [2, 2])):
            ho, wo = (5 + pads[0] + pads[2] - 3) // strides[0] + 1, (6 + pads[1] + pads[3] - 2) // strides[1] + 1
            yield f"avgpool include={include} pads={pads} strides={strides}", _onnx_model(
                [n("AveragePool", ["x"], ["z"], kernel_shape=[3, 2], pads=pads, strides=strides,
                   count_include_pad=include)], {}, [1, 2, 5, 6], 2 * ho * wo)
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for s, k in ((2, 4), (3, 2), (2, 3)):
            o = -(-7 // s)
            yield f"conv {auto_pad} stride {s} kernel {k}", _onnx_model(
                [n("Conv", ["x", "K"], ["z"], auto_pad=auto_pad, strides=[s, s])], {"K": _kernel(2, 1, k, k)},
                [1, 1, 7, 7], 2 * o * o)
    yield "conv grouped dilated strided padded", _onnx_model(
        [n("Conv", ["x", "K"], ["z"], group=2, dilations=[2, 1], pads=[2, 0, 1, 1], strides=[1, 2])],
        {"K": _kernel(4, 2, 2, 3)}, [1, 4, 7, 5], 64)
    # MaxPool on a tensor of any sign (x is normal): overlapping windows of 9, a ceil_mode that
    # adds no window, dilations, auto_pad VALID, a 1x1 kernel, unread Indices, GlobalMaxPool
    yield "maxpool kernel 3 stride 2", _onnx_model([n("MaxPool", ["x"], ["z"], kernel_shape=[3, 3], strides=[2, 2])],
                                                   {}, [1, 2, 7, 7], 18)
    yield "maxpool ceil_mode exact fit", _onnx_model(
        [n("MaxPool", ["x"], ["z"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)], {}, [1, 2, 7, 7], 18)
    yield "maxpool dilated VALID", _onnx_model(
        [n("MaxPool", ["x"], ["z"], kernel_shape=[2, 3], dilations=[2, 1], strides=[1, 2], auto_pad="VALID")],
        {}, [1, 2, 6, 7], 24)
    yield "maxpool 1x1 stride 2", _onnx_model([n("MaxPool", ["x"], ["z"], kernel_shape=[1, 1], strides=[2, 2])],
                                              {}, [1, 2, 5, 5], 18)
    yield "maxpool unread indices", _onnx_model(
        [n("MaxPool", ["x"], ["z", "i"], kernel_shape=[2, 2], storage_order=1)], {}, [1, 2, 5, 5], 32)
    yield "globalmaxpool", _onnx_model([n("GlobalMaxPool", ["x"], ["z"])], {}, [1, 2, 5, 6], 2)
    yield "conv then globalmaxpool", _onnx_model([n("Conv", ["x", "K"], ["c"]), n("GlobalMaxPool", ["c"], ["z"])],
                                                 {"K": _kernel(3, 2, 2, 2)}, [1, 2, 5, 4], 3)
    yield "pad then avgpool", _onnx_model(
        [n("Pad", ["x", "p"], ["q"]), n("AveragePool", ["q"], ["z"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        {"p": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64)}, [1, 2, 5, 5], 2 * 6 * 6)


@pytest.mark.parametrize("name,model", list(_geometry_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_imported_window_geometry_is_the_one_onnxruntime_runs(name, model):
    ort = pytest.importorskip("onnxruntime")
    from parallelepipedonn.onnx_import import model_from_onnx

    g = model_from_onnx(model, name)
    assert isinstance(g, Graph)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, *g.input_shape)).astype(np.float32)
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
    ours = g.forward(x.astype(np.float64).reshape(3, -1))
    assert np.abs(ref - ours).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("name,model", [m for m in _geometry_models() if "maxpool" in m[0]],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_crown_bounds_of_a_lowered_max_pooling_hold_every_sampled_margin(name, model):
    """On inputs of both signs, so that the window maxima switch entries inside the box."""
    from parallelepipedonn.onnx_import import model_from_onnx

    g = model_from_onnx(model, name)
    rng = np.random.default_rng(1)
    x = rng.normal(size=g.n_inputs)
    label = int(g.predict(x[None])[0])
    for r in (0.01, 0.3):
        bound = CrownOracle(g).margin_lower_bounds((x - r)[None], (x + r)[None], label)[0]
        pts = np.concatenate([rng.uniform(x - r, x + r, (2000, g.n_inputs)), x - r + 2 * r * (rng.random(
            (500, g.n_inputs)) < 0.5)])
        logits = g.forward(pts)
        assert (bound <= (logits[:, [label]] - np.delete(logits, label, axis=1)).min(axis=0)).all()
