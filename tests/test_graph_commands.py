"""Graph models (convolutional and residual) through the chain bridge, the oracles and the commands.

crown, alpha-crown, milp, bab and attack read any graph as it is. A convolutional chain is
expanded into dense affine maps for the chain-only oracles (``Graph.to_chain``,
``oracles.chain``: marabou, lirpa, plug-ins that declare nothing); a residual graph is
refused by them up front, in one line; certificates of graph models recheck.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from oracles.base import Verdict
from oracles.chain import chain_network
from oracles.crown import CrownOracle
from oracles.registry import _REGISTRY, make_oracle, register_oracle
from parallelepipedonn.cli import main
from parallelepipedonn.errors import ModelTooLargeError, NotAChainError, OracleError
from parallelepipedonn.graph import Graph
from parallelepipedonn.onnx_import import load_onnx
from tests.graph_nets import Builder, residual

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter


# -- tiny models --------------------------------------------------------------------------------
class SmallCnn(nn.Module):
    """conv 4x4 s2 p1, relu, conv 4x4 s2 p1, relu, flatten, dense: the MNIST CNN, narrow."""

    def __init__(self, c_in: int = 1, side: int = 28, classes: int = 3) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c_in, 2, 4, 2, 1), nn.Conv2d(2, 2, 4, 2, 1)
        self.head = nn.Linear(2 * (side // 4) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


class SmallResidual(nn.Module):
    """conv, relu, relu(h + conv(relu(conv h))), avgpool 2, flatten, dense."""

    def __init__(self, side: int = 28, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 4, 4)
        self.a, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * (side // 8) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.head(nn.functional.avg_pool2d(h, 2).flatten(1))


def export(module: nn.Module, shape: tuple[int, ...], path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    for p in module.parameters():  # deterministic weights, whatever torch's init
        nn.init.normal_(p, 0.0, 0.4)
    module.eval()
    buf = io.BytesIO()
    torch.onnx.export(module, torch.zeros(1, *shape), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("graph-models")
    return {"cnn": export(SmallCnn(), (1, 28, 28), d / "cnn.onnx"),
            "cnn-rgb": export(SmallCnn(3, 32), (3, 32, 32), d / "cnn-rgb.onnx"),
            "cnn-8": export(SmallCnn(1, 8), (1, 8, 8), d / "cnn-8.onnx"),  # small enough for MILPs
            "resnet": export(SmallResidual(), (1, 28, 28), d / "resnet.onnx")}


def an_input(graph: Graph, path: Path, seed: int = 1) -> tuple[Path, np.ndarray]:
    x = np.random.default_rng(seed).random(graph.input_shape)
    np.save(path, x)
    return path, x.reshape(-1)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the expansion ----------------------------------------------------------------------------
def test_conv_chain_expands_exactly(models):
    graph = load_onnx(models["cnn"])
    assert isinstance(graph, Graph) and graph.as_network() is None
    expansion = graph.chain_expansion()
    chain = expansion.network
    assert expansion.exact and [a.weight.shape for a in chain.affines] == [(392, 784), (98, 392), (3, 98)]
    x = np.random.default_rng(0).random((20, 784))
    np.testing.assert_allclose(chain.forward(x), graph.forward(x), rtol=0, atol=1e-12)
    assert graph.to_chain() is chain  # cached
    record = expansion.record()
    assert record["exact"] and record["graph_sha256"] == graph.digest and record["chain_sha256"] == chain.digest


def test_composing_two_rounding_nodes_is_flagged_inexact():
    b = Builder((2, 6, 6), seed=3)
    h = b.scale(0, np.array([[[0.3]], [[1 / 3]]]), np.array([[[0.1]], [[-0.2]]]))  # input normalisation
    h = b.relu(b.conv(h, 3, 3))
    b.dense(b.flatten(b.avgpool(b.conv(h, 2, 3), 2, 2)), 3)  # conv then pooling: composed, rounded
    graph = b.graph()
    expansion = graph.chain_expansion()
    assert not expansion.exact and "last bits" in expansion.record()["semantics"]
    x = np.random.default_rng(1).random((10, graph.n_inputs))
    np.testing.assert_allclose(expansion.network.forward(x), graph.forward(x), rtol=1e-12, atol=1e-12)


def cancelling_stage() -> Graph:
    """``3x`` into Dense(1e16 + 2) and Dense(1e16), then Sub: the graph's coefficient is
    exactly 6, the float64 composition's ``fl(3 (1e16 + 2)) - fl(3e16)`` is 8; the second
    score 7 sits between them, so that the graph and its expansion disagree at ``x = 1``."""
    from parallelepipedonn import graph_nodes as gn

    nodes = [gn.Input(inputs=(), shape=(1,)),
             gn.Scale(inputs=(0,), shape=(1,), in_shape=(1,), scale=np.array([3.0]), shift=np.array([0.0])),
             gn.Dense(inputs=(1,), shape=(1,), in_shape=(1,), weight=np.array([[1e16 + 2]]), bias_=np.zeros(1)),
             gn.Dense(inputs=(1,), shape=(1,), in_shape=(1,), weight=np.array([[1e16]]), bias_=np.zeros(1)),
             gn.Sub(inputs=(2, 3), shape=(1,)), gn.ReLU(inputs=(4,), shape=(1,)),
             gn.Dense(inputs=(5,), shape=(2,), in_shape=(1,), weight=np.array([[1.0], [0.0]]),
                      bias_=np.array([0.0, 7.0]))]
    return Graph((1,), tuple(nodes), "cancel")


def test_an_inexact_expansion_is_refused_by_the_oracles_that_read_chains():
    """The expansion's margin at x = 1 is +1, the graph's -1: lirpa and marabou verified the
    point (an adversarial review); now they refuse the graph, and the graph readers do not
    verify it."""
    g = cancelling_stage()
    p = np.ones(1)
    expansion = g.chain_expansion()
    assert not expansion.exact and g.exact_margin(p, 0) < 0 < expansion.network.exact_margin(p, 0)
    with pytest.raises(OracleError, match="lirpa reads the model as a chain.*is not exact.*use crown"):
        chain_network(g, "lirpa")
    from oracles import lirpa_available, marabou_available
    from parallelepipedonn.box import Box

    for name, available in (("lirpa", lirpa_available), ("marabou", marabou_available)):
        if available():
            with pytest.raises(OracleError, match=f"{name} reads the model as a chain.*not exact"):
                make_oracle(name, g)
    with pytest.raises(OracleError, match="class extremes.*not exact"):
        CrownOracle(g).class_extremes(0, Box(np.zeros(1), np.ones(1)))
    for name in ("crown", "milp"):
        assert make_oracle(name, g).verify_box(p, p, 0).verdict is not Verdict.VERIFIED


def test_duplicating_concat_and_segment_adds():
    b = Builder((4,), seed=2)
    cat = b.concat([0, 0])  # every input twice: a dense layer after it sums two products
    b.dense(b.relu(b.dense(cat, 5)), 3)
    assert not b.graph().chain_expansion().exact
    b = Builder((4,), seed=2)
    h = b.relu(b.dense(0, 5))
    b.dense(b.add(h, b.transpose(h, (0,))), 3)  # an Add of two values of one stage: still a chain
    expansion = b.graph().chain_expansion()
    x = np.random.default_rng(0).random((8, 4))
    np.testing.assert_allclose(expansion.network.forward(x), b.graph().forward(x), atol=1e-12)
    assert len(expansion.network.affines) == 2


def test_residual_and_side_by_side_relus_are_not_chains():
    with pytest.raises(NotAChainError, match="residual connection"):
        residual().to_chain()
    b = Builder((4,), seed=0)
    b.dense(b.concat([b.relu(b.dense(0, 3)), b.relu(b.dense(0, 3))]), 2)
    with pytest.raises(NotAChainError, match="side by side"):
        b.graph().to_chain()


def test_the_relaxed_dual_on_a_residual_graph_is_refused_before_the_search_and_points_to_milp():
    """crown's class extremes read chains: on a residual graph certify --dual relaxed ran the
    whole search, then failed with "use crown, ..." (crown itself being what failed)."""
    import parallelepipedonn as ppn
    from parallelepipedonn.certify import build_oracles

    g = residual()
    x = np.random.default_rng(0).random(g.n_inputs)
    for config in (ppn.CertifyConfig(dual="relaxed"), ppn.CertifyConfig(oracle="milp", dual="relaxed")):
        oracle, falsifier = build_oracles(g, config)
        with pytest.raises(ppn.ConfigError, match="relaxed dual.*residual connection.*use the milp dual") as err:
            ppn.certify(g, x, config=config, oracle=oracle, falsifier=falsifier)
        assert "use crown" not in str(err.value)
        assert oracle.stats.calls == falsifier.stats.calls == 0  # refused before the search asked anything
    with pytest.raises(OracleError, match="class extremes.*use the milp dual") as err:
        CrownOracle(g).class_extremes(0, ppn.Box(np.zeros(g.n_inputs), np.ones(g.n_inputs)))
    assert "use crown" not in str(err.value)


def test_size_guard(models):
    graph = load_onnx(models["cnn"])
    with pytest.raises(ModelTooLargeError, match="MAX_DENSE_BYTES"):
        graph.to_chain(max_bytes=100_000)
    fresh = load_onnx(models["cnn"])  # loaded under the default limit; its chain expansion checked under 1000 bytes
    with pytest.raises(ModelTooLargeError, match="milp reads the model as a chain"):
        import parallelepipedonn.onnx_import as imp

        saved = imp.MAX_MODEL_BYTES
        imp.MAX_MODEL_BYTES = 1000
        try:
            chain_network(fresh, "milp")
        finally:
            imp.MAX_MODEL_BYTES = saved


def test_the_graph_importer_reads_the_model_size_setting_when_it_applies(models, monkeypatch):
    import parallelepipedonn.onnx_import as imp

    monkeypatch.setattr(imp, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ModelTooLargeError, match=r"onnx_import\.MAX_MODEL_BYTES"):
        load_onnx(models["cnn"])


# -- oracles ----------------------------------------------------------------------------------
class ChainCrown(CrownOracle):
    """CROWN as a plug-in that declares nothing about graphs: it reads chains only."""

    name = "chain-crown"
    reads_graphs = False


@pytest.fixture
def chain_only():
    register_oracle("chain-crown", ChainCrown, "CROWN on chains only (test plug-in)", replace=True)
    yield "chain-crown"
    _REGISTRY.pop("chain-crown", None)


def test_chain_oracles_take_a_conv_graph_and_refuse_a_residual_one(models, chain_only):
    cnn, res = load_onnx(models["cnn"]), load_onnx(models["resnet"])
    oracle = make_oracle(chain_only, cnn)
    assert oracle.model is cnn and oracle.settings()["bridge"]["exact"]
    cascade = make_oracle(f"crown+{chain_only}+milp", cnn)  # one chain reader: every stage the chain
    assert "bridge" in cascade.settings() and all(s.network is cascade.network for s in cascade.stages)
    for name in (chain_only, f"crown+{chain_only}", "marabou"):
        with pytest.raises(OracleError, match=r"supports chain networks.*residual connection.*use crown, alpha-crown, "
                                              r"milp, bab, input-split or attack"):
            make_oracle(name, res)
    assert not CrownOracle(res).supports("class_extremes") and CrownOracle(cnn).supports("class_extremes")


def test_chain_oracles_read_a_transposed_convolution_graph_through_its_exact_expansion(chain_only):
    """A generator's upsampling (transposed convolutions, stride, pads, output padding,
    groups, dilation) expands exactly; the chain plug-in's margins (CROWN on the expansion)
    are crown's on the graph, and auto_LiRPA's CROWN on the expansion, where installed, is
    close (its intermediate bounds differ: a few percent either way here); all hold at
    sampled points of each box."""
    from oracles import lirpa_available
    from tests.graph_nets import transposed

    g = transposed(seed=1)
    assert g.chain_expansion().exact
    rng = np.random.default_rng(4)
    centre = rng.random((6, g.n_inputs))
    lo, hi = np.clip(centre - 0.02, 0, 1), np.clip(centre + 0.02, 0, 1)
    label = int(np.bincount(g.predict(centre)).argmax())
    ours = CrownOracle(g).margin_lower_bounds(lo, hi, label)
    names = [chain_only] + (["lirpa"] if lirpa_available() else [])
    points = lo[:, None] + (hi - lo)[:, None] * rng.random((6, 200, g.n_inputs))
    scores = g.forward(points.reshape(-1, g.n_inputs)).reshape(6, 200, -1)
    true = (scores[..., label:label + 1] - np.delete(scores, label, axis=2)).min(axis=1)
    assert (ours <= true).all()
    for name in names:
        oracle = make_oracle(name, g)
        assert oracle.settings()["bridge"]["exact"]
        theirs = oracle.margin_lower_bounds(lo, hi, label)
        if name == chain_only:
            np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-12)
        else:
            assert np.abs(theirs - ours).max() <= 0.05 * np.abs(ours).max()
        assert (theirs <= true).all()


def test_complete_oracles_read_conv_and_residual_graphs_as_they_are(models):
    for kind in ("cnn", "resnet"):
        graph = load_onnx(models[kind])
        for name in ("milp", "bab", "alpha-crown", "crown+milp", "crown+alpha-crown+bab", "cascade"):
            oracle = make_oracle(name, graph)
            assert oracle.network is graph and oracle.model is graph and "bridge" not in oracle.settings()
        assert make_oracle("milp", graph).supports("distance") and make_oracle("milp", graph).supports("class_extremes")


def test_milp_and_bab_agree_with_crown_on_a_conv_graph(models):
    graph = load_onnx(models["cnn-8"])
    x = np.random.default_rng(5).random(64)
    label = int(graph.predict(x)[0])
    radii = np.array([1e-4, 3e-3, 1e-2, 3e-2, 0.1, 0.3])
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    crown = make_oracle("crown", graph).verify(lo, hi, label)
    decided = 0
    for name in ("milp", "bab"):
        answers = make_oracle(name, graph, time_limit=20).verify(lo, hi, label)
        for c, a in zip(crown, answers):
            assert not (c.verdict is Verdict.VERIFIED and a.verdict is Verdict.FALSIFIED)
            if c.verdict is Verdict.VERIFIED:
                decided += 1
                assert a.verdict is Verdict.VERIFIED, name
            if a.verdict is Verdict.FALSIFIED:
                assert graph.misclassified(a.counterexample, label)[0]
    assert decided >= 2


def test_attack_runs_on_a_residual_graph(models):
    graph = load_onnx(models["resnet"])
    x = np.random.default_rng(2).random(784)
    label = int(graph.predict(x)[0])
    answer = make_oracle("attack", graph).verify_box(np.zeros(784), np.ones(784), label)
    assert answer.verdict is Verdict.FALSIFIED and graph.misclassified(answer.counterexample, label)[0]


# -- commands ---------------------------------------------------------------------------------
def _sound(cert: dict, graph: Graph, seed: int = 0) -> None:
    """No point sampled in the certified box (corners included) is misclassified."""
    lo, hi = np.array(cert["lower"], dtype=float).reshape(-1), np.array(cert["upper"], dtype=float).reshape(-1)
    rng = np.random.default_rng(seed)
    pts = lo + rng.random((200, lo.size)) * (hi - lo)
    corners = np.where(rng.random((50, lo.size)) < 0.5, lo, hi)
    assert not graph.misclassified(np.concatenate([pts, corners]), cert["label"]).any()


@pytest.mark.parametrize("kind", ["cnn", "resnet"])
def test_certify_with_crown_plots_and_rechecks(kind, models, tmp_path, capsys):
    graph = load_onnx(models[kind])
    inp, _ = an_input(graph, tmp_path / "x.npy")
    cert_path, png = tmp_path / "c.json", tmp_path / "c.png"
    code, out, err = run(capsys, "certify", "--model", str(models[kind]), "--input", str(inp), "--json",
                         str(cert_path), "--plot", str(png))
    assert code == 0, err
    cert = json.loads(cert_path.read_text())
    assert cert["status"] == "certified" and cert["network"] == graph.describe() and png.stat().st_size > 0
    _sound(cert, graph)
    code, out, err = run(capsys, "recheck", str(cert_path), "--oracle", "crown")
    assert code == 0 and out.startswith("CONFIRMED"), out + err
    if kind == "resnet":
        code, out, err = run(capsys, "certify", "--model", str(models[kind]), "--input", str(inp), "--oracle",
                             "marabou")
        assert code == 2 and err.count("\n") == 1 and "marabou supports chain networks" in err and "use crown" in err
    code, out, err = run(capsys, "recheck", str(cert_path))  # its default oracle, milp: reads either graph
    assert code == 0 and out.startswith("CONFIRMED"), out + err


@pytest.mark.parametrize("oracle", ["crown+milp", "bab"])
def test_certify_complete_on_a_conv_graph_reads_the_graph(oracle, models, tmp_path, capsys):
    graph = load_onnx(models["cnn-8"])
    inp, _ = an_input(graph, tmp_path / "x.npy")
    cert_path = tmp_path / "c.json"
    code, out, err = run(capsys, "certify", "--model", str(models["cnn-8"]), "--input", str(inp), "--oracle",
                         oracle, "--precision", "1e-2", "--time-limit", "3", "--json", str(cert_path))
    assert code == 0, err
    cert = json.loads(cert_path.read_text())
    assert "bridge" not in cert["oracle_settings"] and cert["model_sha256"]
    if cert["lower"] is not None:
        _sound(cert, graph)


def test_plot_of_a_colour_cnn(models, tmp_path, capsys):
    graph = load_onnx(models["cnn-rgb"])
    assert graph.input_shape == (3, 32, 32)
    inp, _ = an_input(graph, tmp_path / "x.npy")
    png = tmp_path / "c.png"
    code, out, err = run(capsys, "certify", "--model", str(models["cnn-rgb"]), "--input", str(inp), "--plot",
                         str(png))
    assert code == 0 and png.stat().st_size > 0, err


def test_info_and_dual_of_a_conv_graph(models, tmp_path, capsys):
    code, out, err = run(capsys, "info", "--model", str(models["resnet"]))
    assert code == 0 and "graph" in out, err
    graph = load_onnx(models["cnn"])
    inp, _ = an_input(graph, tmp_path / "x.npy")
    dual = tmp_path / "d.json"
    code, out, err = run(capsys, "dual", "--model", str(models["cnn"]), "--input", str(inp), "--radius", "0.01",
                         "--method", "relaxed", "--json", str(dual))
    assert code == 0, err
    assert json.loads(dual.read_text())["details"]["bridge"]["exact"]
    code, out, err = run(capsys, "dual", "--model", str(models["resnet"]), "--input", str(inp), "--radius", "0.01",
                         "--method", "relaxed")
    assert code == 2 and "residual connection" in err, err
