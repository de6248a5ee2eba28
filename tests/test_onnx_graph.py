"""ONNX → DAG IR: convolutional and residual models exported from torch become graphs
(convolutions kept) that compute what onnxruntime and torch compute; chains stay chains;
max pooling is refused clearly."""

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
}


@pytest.mark.parametrize("name", MODELS)
def test_convolutional_models_become_graphs_that_match_onnxruntime_and_torch(name):
    make, shape = MODELS[name]
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


def test_a_batchnorm_after_a_conv_is_folded_into_it():
    make, shape = MODELS["batchnorm"]
    g = model_from_onnx(export(_randomise(make(), 3), shape))
    assert [n.kind for n in g.nodes] == ["input", "conv2d", "relu", "reshape", "dense"]


def test_a_batchnorm_whose_conv_output_is_read_twice_is_a_per_channel_scale():
    g = model_from_onnx(export(_randomise(TwoBranches(), 3), (2, 6, 6)))
    assert sum(isinstance(n, gn.Scale) for n in g.nodes) == 3  # Sub and Div of the normalisation, the batchnorm
    assert any(isinstance(n, gn.Concat) for n in g.nodes) and any(isinstance(n, gn.AvgPool2d) for n in g.nodes)


def test_chains_stay_chain_networks(tmp_path):
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3))
    path = tmp_path / "mlp.onnx"
    path.write_bytes(export(module, (3, 4)).SerializeToString())
    assert isinstance(load_onnx(path), Network)


def test_max_pooling_is_refused_with_the_node_named():
    model = export(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2)),
                   (1, 6, 6))
    with pytest.raises(UnsupportedOperatorError, match=r"\(op MaxPool\): max pooling is not supported"):
        model_from_onnx(model)


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
