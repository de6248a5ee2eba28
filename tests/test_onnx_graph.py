"""ONNX → DAG IR: convolutional and residual models exported from torch become graphs
(convolutions kept) that compute what onnxruntime and torch compute; chains stay chains;
max pooling becomes ReLUs (``max(a, b) = b + relu(a - b)``) that the exact evaluation,
CROWN, milp and bab read soundly."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from oracles.crown import CrownOracle
from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.errors import UnsupportedOperatorError
from parallelepipedonn.graph import Graph
from parallelepipedonn.network import Network
from parallelepipedonn.onnx_import import load_onnx, model_from_onnx
from tests.nets import ort_forward

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to compare outputs")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter


def export(module: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    module.eval()
    buf = io.BytesIO()
    torch.onnx.export(module, torch.zeros(1, *shape), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


class Residual(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.head = nn.Linear(c * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.head(h.flatten(1))


class TwoBranches(nn.Module):
    """Concat of a grouped dilated conv and a strided conv after padding; a BatchNorm whose
    conv output is also read elsewhere (not folded); normalisation; global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Conv2d(2, 4, 3, dilation=2, padding=2, groups=2)
        self.q = nn.Conv2d(2, 4, 3, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.r = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.3) / 0.2
        q = self.q(x)
        h = torch.cat([torch.relu(self.p(x)), torch.relu(self.bn(q) + q)], dim=1)
        h = torch.relu(self.r(h))
        return self.head(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module


MODELS = {
    "small_cnn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                        nn.Flatten(), nn.Linear(4 * 2 * 2, 5)), (3, 9, 9)),
    "residual": (Residual, (1, 6, 6)),
    "batchnorm": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                                        nn.Linear(3 * 25, 4)), (1, 7, 7)),
    "grouped_dilated": (lambda: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2, dilation=2, padding=1), nn.ReLU(),
                                              nn.Conv2d(6, 6, (2, 3), stride=(2, 1), groups=3), nn.ReLU(),
                                              nn.Flatten(), nn.Linear(6 * 2 * 3, 3)), (4, 7, 7)),
    "concat": (TwoBranches, (2, 6, 6)),
    "cifar": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                                    nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16 * 16, 100), nn.ReLU(),
                                    nn.Linear(100, 10)), (3, 32, 32)),
    # a generator's upsampling: transposed convolutions with padding, output padding, groups and
    # dilation, a batch norm after one (a per-channel scale)
    "transposed": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(),
                                         nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                                         nn.BatchNorm2d(4), nn.ReLU(),
                                         nn.ConvTranspose2d(4, 4, (2, 3), stride=(1, 2), groups=2, dilation=(2, 1)),
                                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 13, 3)), (2, 5, 5)),
    "maxpool": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(8, 3)), (1, 6, 6)),
    # overlapping windows of 9 (odd: one passes a tree level unpaired), on a tensor of any sign
    "maxpool_overlapping": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(3, stride=2), nn.ReLU(),
                                                  nn.Flatten(), nn.Linear(27, 3)), (2, 9, 9)),
    "maxpool_dilated": (lambda: nn.Sequential(nn.Conv2d(1, 2, 2), nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1)),
                                              nn.Flatten(), nn.Linear(24, 3)), (1, 7, 8)),
    "maxpool_whole_map": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 2), nn.AdaptiveMaxPool2d(1),
                                             nn.Flatten(), nn.Linear(3, 3)), (1, 6, 5)),
}
MAXPOOLS = [name for name in MODELS if "maxpool" in name]


def _seeded(make, seed: int) -> nn.Module:
    """``make()`` with weights drawn from ``seed`` (whatever ran before)."""
    torch.manual_seed(seed)
    return make()


@pytest.mark.parametrize("name", MODELS)
def test_convolutional_models_become_graphs_that_match_onnxruntime_and_torch(name):
    make, shape = MODELS[name]
    torch.manual_seed(0)  # the weights too (not only the batch norms'): the same whatever ran before
    module = _randomise(make(), 0)
    model = export(module, shape)
    g = model_from_onnx(model)
    assert isinstance(g, Graph) and g.input_shape == shape
    assert any(isinstance(n, gn.Conv2d) for n in g.nodes)
    assert not any(isinstance(n, gn.Dense) and n.fan_in * n.numel > 10**6 and n.in_shape == (int(np.prod(shape)),)
                   for n in g.nodes)  # no convolution expanded to a dense matrix
    x = np.random.default_rng(1).random((8, *shape)).astype(np.float32)
    np.testing.assert_allclose(g.forward(x), ort_forward(model, x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        ref = module.double()(torch.tensor(x, dtype=torch.float64)).numpy()
    # the same float32 weights in float64 (BatchNormalization's epsilon is a float32 attribute in ONNX)
    np.testing.assert_allclose(g.forward(x), ref, rtol=1e-7, atol=1e-9)


def test_transposed_convolutions_are_kept_as_such_and_output_shape_is_refused():
    """ConvTranspose becomes a ConvTranspose2d node (its transpose a convolution, never a
    dense matrix); ``output_shape`` (pads computed from it) is refused by name."""
    make, shape = MODELS["transposed"]
    model = export(_randomise(make(), 0), shape)
    g = model_from_onnx(model)
    assert sum(isinstance(n, gn.ConvTranspose2d) for n in g.nodes) == 2
    assert not any(isinstance(n, gn.Dense) and n.in_shape != (4 * 8 * 13,) for n in g.nodes)
    node = next(n for n in model.graph.node if n.op_type == "ConvTranspose")
    node.attribute.append(onnx.helper.make_attribute("output_shape", [6, 6]))
    with pytest.raises(UnsupportedOperatorError, match="ConvTranspose.*output_shape"):
        model_from_onnx(model)


def test_a_transposed_convolution_whose_output_padding_reaches_its_stride_is_refused():
    """ONNX's checker accepts an output padding below the dilation but not below the stride;
    onnxruntime refuses to run it, and so does the importer, in one line (it crashed in
    torch's kernel)."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    w = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    node = oh.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[1, 1], dilations=[2, 2], output_padding=[1, 0])
    graph = oh.make_graph([node, oh.make_node("Flatten", ["c"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 30])], [nh.from_array(w, "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    with pytest.raises(UnsupportedOperatorError, match="ConvTranspose.*output padding .*below the stride"):
        model_from_onnx(model)


def test_a_batchnorm_after_a_conv_is_folded_into_it():
    make, shape = MODELS["batchnorm"]
    g = model_from_onnx(export(_randomise(make(), 3), shape))
    assert [n.kind for n in g.nodes] == ["input", "conv2d", "relu", "reshape", "dense"]


def test_a_batchnorm_whose_conv_output_is_read_twice_is_a_per_channel_scale():
    g = model_from_onnx(export(_randomise(TwoBranches(), 3), (2, 6, 6)))
    assert sum(isinstance(n, gn.Scale) for n in g.nodes) == 3  # Sub and Div of the normalisation, the batchnorm
    assert any(isinstance(n, gn.Concat) for n in g.nodes) and any(isinstance(n, gn.AvgPool2d) for n in g.nodes)


def _model_with_unread_nodes(extra: str, conv: bool) -> onnx.ModelProto:
    """A classifier whose output ``y`` is followed by ``extra`` nodes that no output reads:
    ``relu`` (``Relu(y)``), ``neg`` (``Neg(y)``: the scores negated), ``gemm`` (a Gemm
    of ``y`` to 27 values), ``branch`` (a Relu of the hidden layer, read by nothing, before
    the output)."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(1)
    if conv:
        shape = ["N", 2, 5, 5]
        inits = [nh.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")]
        body = [oh.make_node("Conv", ["x", "w"], ["h"]), oh.make_node("GlobalAveragePool", ["h"], ["p"]),
                oh.make_node("Flatten", ["p"], ["y"])]
    else:
        shape = ["N", 12]
        inits = [nh.from_array(rng.standard_normal((5, 12)).astype(np.float32), "w"),
                 nh.from_array(rng.standard_normal((3, 5)).astype(np.float32), "v")]
        body = [oh.make_node("Gemm", ["x", "w"], ["h"], transB=1), oh.make_node("Gemm", ["h", "v"], ["y"], transB=1)]
    if extra == "gemm":
        inits.append(nh.from_array(rng.standard_normal((27, 3)).astype(np.float32), "u"))
    extra_nodes = {"relu": [oh.make_node("Relu", ["y"], ["dead"])],
                   "neg": [oh.make_node("Neg", ["y"], ["dead"])],
                   "gemm": [oh.make_node("Gemm", ["y", "u"], ["dead"], transB=1)],
                   "branch": [oh.make_node("Relu", ["h"], ["dead"])]}[extra]
    nodes = body[:1] + extra_nodes + body[1:] if extra == "branch" else body + extra_nodes
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("extra", ["relu", "neg", "gemm", "branch"])
def test_nodes_no_output_reads_are_not_imported(extra, conv):
    """A graph's last node is its output: a node computed after the ONNX output, or on a
    branch no output reads, is left out, not certified in the output's place (a dead Neg
    after the scores made the IR's scores their negation, a dead Relu their positive part;
    found by an adversarial sweep against onnxruntime)."""
    model = _model_with_unread_nodes(extra, conv)
    net = model_from_onnx(model)
    x = np.random.default_rng(0).uniform(-1, 1, (16, net.n_inputs))
    expected = ort_forward(model, x.reshape(-1, *(2, 5, 5) if conv else (12,)))
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-5, atol=1e-5)
    assert (net.predict(x) == expected.argmax(1)).all()
    if isinstance(net, Graph):  # every node but the output is read
        assert all(net.consumers[k] for k in range(len(net.nodes) - 1))


def test_a_dense_model_with_an_operator_only_graphs_read_is_a_graph():
    """The chain importer refuses Concat; a dense model that concatenates (here ``x`` with
    itself, then ``x`` with ``sigmoid(x)``) is read by the graph importer instead, exactly
    (it was refused as an unsupported operator); one that neither reads gets the chain
    importer's refusal, as before."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    def model(second: str, nodes: list) -> onnx.ModelProto:
        w = np.random.default_rng(2).standard_normal((3, 24)).astype(np.float32)
        nodes = [*nodes, oh.make_node("Concat", ["x", second], ["c"], axis=1),
                 oh.make_node("Gemm", ["c", "w"], ["y"], transB=1)]
        graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])],
                              [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [nh.from_array(w, "w")])
        m = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
        m.ir_version = 7
        return m

    doubled = model("x", [])
    net = model_from_onnx(doubled)
    assert isinstance(net, Graph) and any(isinstance(n, gn.Concat) for n in net.nodes)
    x = np.random.default_rng(0).uniform(-1, 1, (16, 12))
    np.testing.assert_allclose(net.forward(x), ort_forward(doubled, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(UnsupportedOperatorError, match="Sigmoid"):
        model_from_onnx(model("s", [oh.make_node("Sigmoid", ["x"], ["s"])]))


def test_chains_stay_chain_networks(tmp_path):
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3))
    path = tmp_path / "mlp.onnx"
    path.write_bytes(export(module, (3, 4)).SerializeToString())
    assert isinstance(load_onnx(path), Network)


def test_max_pooling_is_lowered_to_grouped_one_hot_convolutions_and_relus():
    make, shape = MODELS["maxpool"]
    model = export(make(), shape)
    assert "MaxPool" in [n.op_type for n in model.graph.node]
    g = model_from_onnx(model)
    # a 2x2 window: "b + relu(a - b)" along one axis, then along the other
    assert [n.kind for n in g.nodes] == ["input", "conv2d", "relu", "conv2d", "conv2d", "relu", "add", "conv2d",
                                         "conv2d", "relu", "add", "reshape", "dense"]
    pools = [n for n in g.nodes[3:] if isinstance(n, gn.Conv2d)]
    assert all(n.groups == 2 and set(np.unique(n.weight)) <= {-1.0, 0.0, 1.0} and not n.bias_.any() for n in pools)
    whole = model_from_onnx(export(MODELS["maxpool_whole_map"][0](), MODELS["maxpool_whole_map"][1]))
    assert whole.nodes[-3].shape == (3, 1, 1)  # torch exports the adaptive pooling as a 4x4 MaxPool


@pytest.mark.parametrize("name", MAXPOOLS)
def test_the_exact_evaluation_of_a_lowered_max_pooling_is_the_max(name):
    make, shape = MODELS[name]
    module = _seeded(make, 7)
    g = model_from_onnx(export(module, shape))
    module.double()
    x = np.random.default_rng(4).random((2, int(np.prod(shape))))
    x[1] = 0.5  # every window a tie
    for xi in x:
        label = int(g.predict(xi[None])[0])
        with torch.no_grad():
            ref = module(torch.tensor(xi.reshape(1, *shape)))[0].numpy()
        exact = float(g.exact_margin(xi, label))
        assert exact == pytest.approx(ref[label] - np.delete(ref, label).max(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", MAXPOOLS)
def test_crown_and_alpha_crown_bound_every_sampled_and_attacked_margin_of_a_max_pooling_model(name):
    from oracles import AttackOracle
    from oracles.crown import AlphaCrownOracle

    make, shape = MODELS[name]
    g = model_from_onnx(export(_seeded(make, 5), shape))
    n = g.n_inputs
    rng = np.random.default_rng(2)
    x = rng.random(n)
    label = int(g.predict(x[None])[0])
    radii = np.array([0.003, 0.01, 0.03, 0.1])
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    crown = CrownOracle(g).margin_lower_bounds(lo, hi, label).min(axis=1)
    alpha = AlphaCrownOracle(g).margin_lower_bounds(lo, hi, label).min(axis=1)
    assert (alpha >= crown - 1e-9).all() and crown[0] > 0
    points, _ = AttackOracle(g, steps=50, restarts=4).search(lo, hi, label)
    for i in range(len(radii)):
        pts = np.concatenate([rng.uniform(lo[i], hi[i], (1000, n)), points[i][None]])
        assert max(crown[i], alpha[i]) <= g.margins(pts, label).min()


def test_a_certified_box_of_a_max_pooling_model_is_robust_under_sampling_and_attack():
    from parallelepipedonn.certify import certify
    from parallelepipedonn.search import Status
    from tests.test_search import assert_robust_everywhere

    make, shape = MODELS["maxpool_overlapping"]
    g = model_from_onnx(export(_seeded(make, 1), shape))
    cert = certify(g, np.random.default_rng(0).random(g.n_inputs))
    assert cert.status is Status.CERTIFIED and cert.box.contains(cert.input.reshape(-1))
    assert_robust_everywhere(g, cert.box, cert.label)


def test_crown_certifies_an_imported_residual_model_soundly():
    module = _randomise(Residual(), 5)
    g = model_from_onnx(export(module, (1, 6, 6)))
    x = np.random.default_rng(2).random((3, 36))
    label = int(g.predict(x[:1])[0])
    bound = CrownOracle(g).margin_lower_bounds(x - 0.01, x + 0.01, label).min(axis=1)
    pts = x[:, None] + np.random.default_rng(3).uniform(-0.01, 0.01, (3, 500, 36))
    assert (bound <= g.margins(pts.reshape(-1, 36), label).reshape(3, 500).min(axis=1)).all()


def test_a_convolution_too_large_to_expand_loads_as_a_graph(tmp_path):
    """The chain importer refuses it (a dense 524288x1025 matrix); the graph keeps the
    convolution (issue 14)."""
    from onnx import helper

    from parallelepipedonn.errors import ModelTooLargeError
    from parallelepipedonn.onnx_import import network_from_onnx
    from tests.nets import make_model, tensor

    nodes = [helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Flatten", ["c"], ["y"])]
    model = make_model(nodes, [1, 1, 32, 32], initializers=[tensor("K", np.ones((512, 1, 3, 3), np.float32))])
    with pytest.raises(ModelTooLargeError, match=r"node 'conv1' \(Conv\) would need a dense 524288x1025"):
        network_from_onnx(model)
    path = tmp_path / "conv.onnx"
    path.write_bytes(model.SerializeToString())
    g = load_onnx(path)
    assert isinstance(g, Graph) and g.n_classes == 512 * 32 * 32
    assert max(p.size for n in g.nodes for p in n.params()) == 512 * 9


def test_milp_and_bab_agree_on_a_max_pooling_model_and_with_sampling():
    """milp's exact distance: bab proves the cube just inside, falsifies the one just
    outside; no sampled point of the inside cube is misclassified."""
    from oracles import AttackOracle, Verdict, make_oracle
    from parallelepipedonn.box import Box

    module = _seeded(lambda: nn.Sequential(nn.Conv2d(1, 2, 2), nn.MaxPool2d(2, stride=1), nn.ReLU(), nn.MaxPool2d(2),
                                           nn.Flatten(), nn.Linear(2, 3)), 0)
    g = model_from_onnx(export(module, (1, 4, 4)))
    x = np.random.default_rng(5).random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    d = make_oracle("milp", g, time_limit=30).min_distance(x, label, Box.unit(g.n_inputs), falsifier=AttackOracle(g))
    assert d.exact(1e-4) and d.lower > 0
    bab = make_oracle("bab", g, time_limit=30)
    lo, hi = np.clip(x - 0.99 * d.lower, 0, 1), np.clip(x + 0.99 * d.lower, 0, 1)
    inside = bab.verify_box(lo, hi, label)
    assert inside.verdict is Verdict.VERIFIED, inside.reason
    pts = np.random.default_rng(6).uniform(lo, hi, (5000, g.n_inputs))
    assert (g.margins(np.concatenate([pts, np.array(list(Box(lo, hi).vertices_sample(500, np.random.default_rng(7))))]),
                      label) > 0).all()
    outside = bab.verify_box(np.clip(x - 1.01 * d.upper, 0, 1), np.clip(x + 1.01 * d.upper, 0, 1), label)
    assert outside.verdict is Verdict.FALSIFIED and g.misclassified(outside.counterexample, label)[0]


def test_verify_on_a_max_pooling_model_proves_what_sampling_holds_and_refutes_with_a_point_onnxruntime_confirms():
    from parallelepipedonn.verify import Answer, exact_outputs, verify_property
    from parallelepipedonn.vnnlib import parse_vnnlib
    from tests.test_verify import ball, property_text, robustness

    make, shape = MODELS["maxpool_overlapping"]
    model = export(_seeded(make, 1), shape)
    g = model_from_onnx(model)
    x = np.random.default_rng(0).random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    near, far = ball(x, 0.002), ball(x, 0.5)
    unsat = verify_property(g, parse_vnnlib(property_text(*near, robustness(label, 3), 3), "near"))
    assert unsat.answer is Answer.UNSAT
    pts = np.random.default_rng(1).uniform(*near, (3000, g.n_inputs))
    assert (g.predict(pts) == label).all()
    prop = parse_vnnlib(property_text(*far, robustness(label, 3), 3), "far")
    sat = verify_property(g, prop)
    assert sat.answer is Answer.SAT
    (region,) = prop.regions
    cex = sat.counterexample
    assert region.contains(cex) and region.violated_disjunct(exact_outputs(g, cex)) is not None
    y = ort_forward(model, cex.reshape(1, *shape).astype(np.float32))[0]
    assert np.delete(y, label).max() >= y[label] - 1e-5 * np.abs(y).max()


def scaled_conv_model(factors: list[float]) -> onnx.ModelProto:
    """Conv (identity) → Mul by each of ``factors`` (float32 constants) → Flatten → Gemm."""
    from onnx import helper

    from tests.nets import make_model, tensor

    nodes = [helper.make_node("Conv", ["x", "w"], ["m0"])]
    inits = [tensor("w", np.ones((1, 1, 1, 1), np.float32))]
    for k, f in enumerate(factors):
        nodes.append(helper.make_node("Mul", [f"m{k}", f"f{k}"], [f"m{k + 1}"], name=f"mul{k + 1}"))
        inits.append(tensor(f"f{k}", np.array(f, np.float32)))
    nodes += [helper.make_node("Flatten", [f"m{len(factors)}"], ["flat"]),
              helper.make_node("Gemm", ["flat", "W", "B"], ["y"], transB=1)]
    inits += [tensor("W", np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)), tensor("B", np.array([0.0, 0.5], np.float32))]
    return make_model(nodes, [1, 1, 1, 2], initializers=inits)


@pytest.mark.parametrize("factors, message", [
    ([1e30, 1e30, 1e-30, 1e-30], r"'mul2'.*reach 1e\+60.*beyond float32's range"),
    ([1e-30, 1e-30, 1e30, 1e30], r"'mul2'.*amplifies the underflow"),
], ids=["overflow", "underflow"])
def test_values_beyond_float32_in_onnxruntime_are_refused(factors, message):
    """onnxruntime computes the scores in float32 (inf - inf, or 0), the IR exactly (``x``):
    a certificate would be about another function. (Both were imported; ``verify`` proved a
    class onnxruntime never predicts.)"""
    from parallelepipedonn.errors import ModelError

    model = scaled_conv_model(factors)
    x = np.full((1, 1, 1, 2), 0.5, np.float32)
    assert not np.isfinite(ort_forward(model, x)).all() or not ort_forward(model, x)[0, 0]
    with pytest.raises(ModelError, match=message):
        model_from_onnx(model)
    assert isinstance(model_from_onnx(scaled_conv_model([1e10, 1e10, 1e-10, 1e-10])), Graph)  # within range



def _float32_models() -> dict:
    """Models whose float32 values onnxruntime cannot represent on the way, where the IR's
    exact values are finite (each was imported, and verify proved a class onnxruntime never
    predicts): a product across a ReLU, a BatchNormalization factor beyond float32 (folded
    by the importer in float64), Gemm's ``A B`` before ``alpha`` and an average pooling's
    window sum. ``conv``: behind a 1x1 convolution (read by whichever importer takes it)."""
    from onnx import helper

    from tests.nets import make_model, tensor

    def front(conv: bool, channels: int, nodes: list, inits: list) -> tuple[str, list]:
        if not conv:
            return "x", [channels]
        nodes.append(helper.make_node("Conv", ["x", "w"], ["c"]))
        inits.append(tensor("w", np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)))
        nodes.append(helper.make_node("Flatten", ["c"], ["xf"]))
        return "xf", [channels, 1, 1]

    def relu(conv):
        nodes, inits = [], [tensor("big", np.array([1e30, 1], np.float32)), tensor("small", np.array([1e-30, 1], np.float32))]
        src, shape = front(conv, 2, nodes, inits)
        nodes += [helper.make_node("Mul", [src, "big"], ["m1"]), helper.make_node("Relu", ["m1"], ["r"]),
                  helper.make_node("Mul", ["r", "big"], ["m2"]), helper.make_node("Mul", ["m2", "small"], ["m3"]),
                  helper.make_node("Mul", ["m3", "small"], ["y"])]
        return make_model(nodes, [1, *shape], initializers=inits)

    def batchnorm(conv):
        nodes, inits = [], [tensor("k", np.array([1e-10, 1], np.float32))]
        src, shape = front(conv, 2, nodes, inits)
        inits += [tensor("s", np.array([1e38, 1], np.float32)), tensor("b", np.zeros(2, np.float32)),
                  tensor("mu", np.zeros(2, np.float32)), tensor("var", np.array([0, 1], np.float32))]
        nodes += [helper.make_node("Mul", [src, "k"], ["c2"]),
                  helper.make_node("BatchNormalization", ["c2", "s", "b", "mu", "var"], ["y"])]
        return make_model(nodes, [1, *shape], initializers=inits)

    def gemm(conv):
        nodes, inits = [], [tensor("B", np.array([[3e38, 3e38], [0, 0]], np.float32))]
        src, shape = front(conv, 2, nodes, inits)
        nodes.append(helper.make_node("Gemm", [src, "B"], ["y"], transB=1, alpha=1e-10))
        return make_model(nodes, [1, *shape], initializers=inits)

    def avgpool(conv):
        pool = helper.make_node("GlobalAveragePool", ["c"], ["p"]) if conv else \
            helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[2, 2])
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), pool, helper.make_node("Flatten", ["p"], ["f"]),
                 helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)]
        return make_model(nodes, [1, 1, 2, 2], initializers=[tensor("w", np.full((1, 1, 1, 1), 3e38, np.float32)),
                                                             tensor("W", np.array([[1.0], [-1.0]], np.float32))])

    return {"relu": relu, "batchnorm": batchnorm, "gemm-alpha": gemm, "avgpool": avgpool}


@pytest.mark.parametrize("conv", [False, True], ids=["plain", "conv"])
@pytest.mark.parametrize("name", ["relu", "batchnorm", "gemm-alpha", "avgpool"])
def test_values_onnxruntime_computes_on_the_way_beyond_float32_are_refused(name, conv):
    from parallelepipedonn.errors import ModelError

    model = _float32_models()[name](conv)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert not np.isfinite(ort_forward(model, np.full(shape, 0.9, np.float32))).all()
    with pytest.raises(ModelError, match="float32's range"):
        model_from_onnx(model)


def test_a_batchnorm_channel_with_scale_zero_is_folded_and_imported():
    """(A pruned channel: its factor is 0, nothing to divide back for the range check.)"""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    with torch.no_grad():
        m[1].weight[0] = 0.0
    g = model_from_onnx(export(m, (1, 6, 6)))
    assert [n.kind for n in g.nodes] == ["input", "conv2d", "relu", "reshape", "dense"]
