"""The MILP encoding of the DAG IR (oracles.milp_graph) and the milp oracle on graphs.

The encoding is the graph (at a fixed input its logits are the forward pass); convolutions
are sparse rows that compute the convolution (never a dense matrix); milp on
convolutional and residual graphs agrees with CROWN, with sampling and attacks, and on a
two-input graph with an enumeration of the input square: its exact distance, class
extremes and class regions.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from oracles import AttackOracle, MilpOracle, Verdict, make_oracle
from oracles.base import RegionVerdict
from oracles.graph_bounds import GraphTensors
from oracles.milp_encoding import make_solver, solve
from oracles.milp_graph import (
    EncodingTimedOut,
    GraphBoxBounds,
    box_bounds,
    encode_graph,
    linear_triples,
    move_map,
    relu_nodes,
)
from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.box import Box
from parallelepipedonn.certify import CertifyConfig, certify
from parallelepipedonn.errors import OracleError
from parallelepipedonn.graph import Graph
from tests.graph_nets import Builder, mixed, residual, small_cnn, transposed


def two_inputs(seed: int = 0) -> Graph:
    """Two inputs (1, 1, 2) through zero padding, two convolutions side by side, Concat, a
    residual Sub across a ReLU, a Transpose and two dense layers: small enough to
    enumerate its input square."""
    b = Builder((1, 1, 2), seed)
    p = b.relu(b.conv(0, 3, (1, 2), pad=(0, 1, 0, 1), scale=2.0))  # (3, 1, 3)
    q = b.relu(b.conv(b.pad(0, (0, 0, 1, 0, 0, 1)), 3, (1, 2), scale=2.0))  # (3, 1, 3)
    c = b.concat([p, q], axis=0)  # (6, 1, 3)
    s = b.relu(b.sub(c, b.conv(b.relu(b.conv(c, 6, 1, scale=2.0)), 6, 1, groups=2)))
    h = b.relu(b.dense(b.flatten(b.transpose(s, (0, 2, 1))), 8, scale=2.0))
    b.dense(h, 3, scale=2.0)
    return b.graph("two-inputs")


GRAPHS = {"small_cnn": small_cnn, "residual": residual, "mixed": mixed, "transposed": transposed, "two_inputs": two_inputs}


def _bounds(graph: Graph, lo: np.ndarray, hi: np.ndarray) -> GraphBoxBounds:
    nb, _, _ = box_bounds(GraphTensors.of(graph), lo[None], hi[None])
    return GraphBoxBounds.of(graph, nb)


def _grid(n: int = 301) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)


# -- the encoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRAPHS)
def test_the_encoding_at_a_point_is_the_forward_pass(name):
    graph = GRAPHS[name]()
    lo, hi = np.zeros(graph.n_inputs), np.ones(graph.n_inputs)
    enc = encode_graph(graph, lo, hi, _bounds(graph, lo, hi))
    assert enc.n_unstable > 0 and len(enc.binaries) == enc.n_unstable
    opt = make_solver(10.0)
    rng = np.random.default_rng(1)
    for _ in range(2):
        p = rng.random(graph.n_inputs)
        for i, v in enumerate(enc.x):
            v.fix(float(p[i]))
        logits = graph.forward(p)[0]
        for j in range(graph.n_classes):
            res = solve(opt, enc, enc.logits[j])
            assert res.optimal and res.bound == pytest.approx(logits[j], abs=1e-6)


def test_a_sum_read_by_two_linear_nodes_gets_one_set_of_variables():
    """An Add's value (a combination of variables) read by two convolutions (as in a
    lowered MaxPool) is materialised once; the encoding is still the forward pass."""
    b = Builder((1, 4, 4), 3)
    h = b.relu(b.conv(0, 2, 2))
    s = b.add(h, b.conv(h, 2, 1))
    b.dense(b.flatten(b.add(b.relu(b.conv(s, 2, 2)), b.conv(s, 2, 2))), 3)
    graph = b.graph("shared-sum")
    lo, hi = np.zeros(graph.n_inputs), np.ones(graph.n_inputs)
    enc = encode_graph(graph, lo, hi, _bounds(graph, lo, hi))
    p = np.random.default_rng(2).random(graph.n_inputs)
    for i, v in enumerate(enc.x):
        v.fix(float(p[i]))
    logits = graph.forward(p)[0]
    opt = make_solver(10.0)
    for j in range(graph.n_classes):
        res = solve(opt, enc, enc.logits[j])
        assert res.optimal and res.bound == pytest.approx(logits[j], abs=1e-6)


@pytest.mark.parametrize("name", ["small_cnn", "mixed", "two_inputs"])
def test_convolution_rows_are_sparse_and_compute_the_node(name):
    graph = GRAPHS[name]()
    rng = np.random.default_rng(0)
    seen = 0
    for node in graph.nodes:
        if not isinstance(node, gn.LinearNode) or node.exact:
            continue
        x = rng.normal(size=node.in_shape)
        y = np.zeros(node.numel)
        count = 0
        for out, inp, w in linear_triples(node):
            np.add.at(y, out, w * x.reshape(-1)[inp])
            count += len(out)
        assert count <= node.numel * node.fan_in  # each output its window, never all the inputs
        with torch.no_grad():
            want = node.apply(torch.tensor(x)[None])[0].reshape(-1).numpy()
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
        seen += isinstance(node, (gn.Conv2d, gn.AvgPool2d))
    assert seen >= 1


def test_moves_copy_the_values_they_move():
    graph = mixed()
    rng = np.random.default_rng(2)
    values = evaluate_all(graph, rng.random((1, graph.n_inputs)))
    checked = 0
    for node in graph.nodes:
        if isinstance(node, gn.Concat) or (isinstance(node, gn.LinearNode) and node.exact):
            shapes = [graph.nodes[i].shape for i in node.inputs]
            stacked = np.concatenate([values[i].reshape(-1) for i in node.inputs])
            idx = move_map(node, shapes)
            moved = np.where(idx >= 0, stacked[np.maximum(idx, 0)], 0.0)
            np.testing.assert_array_equal(moved, values[graph.nodes.index(node)].reshape(-1))
            checked += 1
    assert checked >= 3


def evaluate_all(graph: Graph, x: np.ndarray) -> list[np.ndarray]:
    from parallelepipedonn.graph import evaluate

    with torch.no_grad():
        return [v[0].numpy() for v in evaluate(graph, torch.tensor(x), keep=True)]


def test_the_convex_last_relus_keep_the_minimum_and_phases_fix_neurons():
    graph = residual(seed=3)
    x = np.random.default_rng(3).random(graph.n_inputs)
    lo, hi = np.clip(x - 0.05, 0, 1), np.clip(x + 0.05, 0, 1)
    bounds = _bounds(graph, lo, hi)
    label = int(graph.predict(x)[0])
    full = encode_graph(graph, lo, hi, bounds)
    shortcuts = 0
    for j in range(graph.n_classes):
        if j == label:
            continue
        row = np.zeros(graph.n_classes)
        row[label], row[j] = 1.0, -1.0
        fast = encode_graph(graph, lo, hi, bounds, minimize_row=row)
        shortcuts += len(full.binaries) - len(fast.binaries)
        a = solve(make_solver(20.0), full, full.logits[label] - full.logits[j])
        b = solve(make_solver(20.0), fast, fast.logits[label] - fast.logits[j])
        assert a.optimal and b.optimal and a.bound == pytest.approx(b.bound, abs=1e-6)
        relaxed = encode_graph(graph, lo, hi, bounds, relax=True)
        c = solve(make_solver(20.0), relaxed, relaxed.logits[label] - relaxed.logits[j])
        assert c.bound <= a.bound + 1e-6
    assert shortcuts > 0
    # every neuron fixed to its phase at x, and x itself: the forward pass
    values = evaluate_all(graph, x[None])
    phases = [np.where(values[graph.nodes[k].inputs[0]].reshape(-1) > 0, 1, -1).astype(np.int8)
              for k in relu_nodes(graph)]
    fixed = encode_graph(graph, lo, hi, bounds, phases=phases)
    fixed.fix_phases(phases)
    for i, v in enumerate(fixed.x):
        v.fix(float(x[i]))
    res = solve(make_solver(10.0), fixed, fixed.logits[label])
    assert res.optimal and res.bound == pytest.approx(graph.forward(x)[0][label], abs=1e-6)


def test_bounds_that_are_not_finite_build_no_milp():
    b = Builder((1, 2, 2))
    h = b.relu(b.conv(0, 2, 1, scale=1e300))
    b.dense(b.flatten(b.relu(b.conv(h, 2, 1, scale=1e300))), 2)
    graph = b.graph()
    lo, hi = np.zeros(4), np.ones(4)
    assert not _bounds(graph, lo, hi).finite
    with pytest.raises(OracleError, match="not all finite"):
        encode_graph(graph, lo, hi, _bounds(graph, lo, hi))
    answer = MilpOracle(graph).verify_box(lo, hi, 0)
    assert not answer.verified


def test_an_encoding_stops_at_its_deadline():
    graph = small_cnn()
    lo, hi = np.zeros(graph.n_inputs), np.full(graph.n_inputs, 0.2)
    bounds = _bounds(graph, lo, hi)
    with pytest.raises(EncodingTimedOut, match="time limit"):
        encode_graph(graph, lo, hi, bounds, deadline=time.perf_counter())
    enc = encode_graph(graph, lo, hi, bounds, deadline=time.perf_counter() + 600)
    assert len(enc.x) == graph.n_inputs


def test_a_time_limit_that_passes_while_the_milp_is_built_proves_nothing(monkeypatch):
    """The MILP oracle's time limit covers building a graph's encoding (a CIFAR-size
    convnet's takes seconds): past it, UNKNOWN and timed out, for verify and distance."""
    import oracles.milp as milp_module

    graph = residual()
    rng = np.random.default_rng(5)
    x = rng.random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    radii = np.array([0.03, 0.0737, 0.1])  # the middle one needs a MILP
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    before = MilpOracle(graph, time_limit=10).verify(lo, hi, label)
    real = milp_module.encode_graph
    monkeypatch.setattr(milp_module, "encode_graph", lambda *a, **k: real(*a, **{**k, "deadline": -math.inf}))
    after = MilpOracle(graph, time_limit=10).verify(lo, hi, label)
    expired = [a for a in after if a.timed_out]
    assert expired, [b.reason for b in before]
    for b, a in zip(before, after):
        if a.timed_out:
            assert a.verdict is Verdict.UNKNOWN and "being built" in a.reason
        else:
            assert a.verdict is b.verdict
    d = MilpOracle(graph, time_limit=10).min_distance(x, label, Box(np.zeros(graph.n_inputs), np.ones(graph.n_inputs)))
    assert "being built" in d.reason, d.reason  # its first class's MILP is not built in time
    assert d.lower <= d.upper


# -- the oracle -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small_cnn", "residual", "mixed"])
def test_milp_on_a_graph_agrees_with_crown_sampling_and_attacks(name):
    graph = GRAPHS[name]()
    rng = np.random.default_rng(5)
    x = rng.random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    radii = np.array([1e-3, 1e-2, 3e-2, 0.1])
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    crown = make_oracle("crown", graph).verify(lo, hi, label)
    milp = make_oracle("milp", graph, time_limit=10)
    assert milp.network is graph and milp.graph_tensors is not None
    answers = milp.verify(lo, hi, label)
    attack = AttackOracle(graph, steps=30, restarts=4)
    for i, (c, a) in enumerate(zip(crown, answers)):
        assert a.verdict is not Verdict.UNKNOWN, a.reason
        if c.verified:
            assert a.verified and a.margin >= c.margin - 1e-9
        if a.falsified:
            assert graph.misclassified(a.counterexample, label)[0]
        else:
            pts = rng.uniform(lo[i], hi[i], (2000, graph.n_inputs))
            corners = np.where(rng.random((200, graph.n_inputs)) < 0.5, lo[i], hi[i])
            assert not graph.misclassified(np.concatenate([pts, corners]), label).any()
            assert not attack.verify_box(lo[i], hi[i], label).falsified
    assert Verdict.VERIFIED in {a.verdict for a in answers}


def test_exact_distance_of_a_two_input_graph_matches_an_enumeration():
    graph = two_inputs(seed=4)
    x = np.array([0.45, 0.55])
    label = int(graph.predict(x)[0])
    domain = Box.unit(2)
    d = make_oracle("milp", graph).min_distance(x, label, domain, falsifier=AttackOracle(graph))
    assert np.isfinite(d.upper) and d.exact(1e-4), d.reason
    assert graph.misclassified(d.counterexample, label)[0]
    grid = _grid()
    bad = grid[graph.misclassified(grid, label)]
    nearest = np.abs(bad - x).max(axis=1).min()
    assert d.lower <= nearest  # nothing misclassified nearer than the proven radius
    assert d.upper <= nearest + 1e-12  # and the optimum no farther than the grid's nearest
    # the exact apothem is at least CROWN's certified one
    cert = certify(graph, x, label, config=CertifyConfig(precision=1e-4, falsifier=None))
    assert cert.apothem <= d.upper


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
def test_exact_distance_of_an_exported_residual_net_agrees_with_onnxruntime(tmp_path):
    """A torch residual block exported to ONNX: no point onnxruntime samples in the proven
    cube is misclassified, and onnxruntime misclassifies the counterexample moved 2 %
    further out."""
    import io

    import onnx
    from torch import nn

    from parallelepipedonn.onnx_import import load_onnx
    from tests.nets import ort_forward

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.a, self.b = nn.Conv2d(1, 2, 3, 2, 1), nn.Conv2d(2, 2, 3, 1, 1), nn.Conv2d(2, 2, 3, 1, 1)
            self.head = nn.Linear(2 * 2 * 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.stem(x))
            h = torch.relu(h + self.b(torch.relu(self.a(h))))
            return self.head(nn.functional.avg_pool2d(h, 2, 1).flatten(1))

    torch.manual_seed(0)
    block = Block().eval()
    for p in block.parameters():
        nn.init.normal_(p, 0.0, 0.5)
    buf = io.BytesIO()
    torch.onnx.export(block, torch.zeros(1, 1, 6, 6), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    (tmp_path / "block.onnx").write_bytes(buf.getvalue())
    graph, model = load_onnx(tmp_path / "block.onnx"), onnx.load(tmp_path / "block.onnx")
    assert isinstance(graph, Graph) and graph.as_network() is None  # residual: no chain
    x = np.random.default_rng(3).random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    d = make_oracle("milp", graph).min_distance(x, label, Box.unit(graph.n_inputs), falsifier=AttackOracle(graph))
    assert d.exact(1e-4) and graph.misclassified(d.counterexample, label)[0]
    further = np.clip(x + 1.02 * (d.counterexample - x), 0, 1)
    assert int(ort_forward(model, further.reshape(1, 1, 6, 6)).argmax()) != label
    cube = Box.cube(x, d.lower, Box.unit(graph.n_inputs))
    pts = np.random.default_rng(4).uniform(cube.lower, cube.upper, (3000, graph.n_inputs))
    assert (ort_forward(model, pts.reshape(-1, 1, 6, 6)).argmax(axis=1) == label).all()


def test_class_extremes_and_class_regions_of_a_two_input_graph_hold_every_class_point():
    graph = two_inputs(seed=6)
    grid = _grid()
    labels = graph.predict(grid)
    counts = np.bincount(labels, minlength=3)
    label = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))  # the smallest class region
    assert (labels == label).sum() > 10
    region = Box.unit(2)
    milp = MilpOracle(graph, time_limit=20)
    cb = milp.class_extremes(label, region, grid[labels == label][:5])
    points = grid[labels == label]
    assert not cb.empty and (points >= cb.lower).all() and (points <= cb.upper).all()
    assert (graph.margins(cb.witnesses, label) >= 0).all()
    assert cb.exact_lower.all() and cb.exact_upper.all()
    assert np.allclose(cb.lower, points.min(axis=0), atol=1e-2) and np.allclose(cb.upper, points.max(axis=0),
                                                                                   atol=1e-2)
    assert milp.class_region(cb.lower, cb.upper, label, region).verdict is RegionVerdict.NONE
    middle = (cb.lower + cb.upper) / 2
    answer = milp.class_region(middle, middle, label, region)
    assert answer.verdict is RegionVerdict.WITNESS and graph.margins(answer.witness, label)[0] >= 0


def test_class_region_queries_whose_encoding_outlasts_the_time_limit_prove_nothing(monkeypatch):
    """The class-region queries' time limit covers building a graph's encoding: past it,
    ``class_region`` answers UNKNOWN (timed out) and ``coordinate_extreme`` keeps the
    region's edge, not exact."""
    import oracles.milp_regions as regions

    graph = two_inputs(seed=6)
    label = int(graph.predict(np.array([0.5, 0.5]))[0])
    region = Box.unit(2)
    real = regions.encode_model
    monkeypatch.setattr(regions, "encode_model", lambda *a, **k: real(*a, **{**k, "deadline": -math.inf}))
    milp = MilpOracle(graph, time_limit=20)
    answer = milp.class_region(np.full(2, 0.5), np.full(2, 0.5), label, region)
    assert answer.verdict is RegionVerdict.UNKNOWN and answer.timed_out and "being built" in answer.reason
    ext = milp.coordinate_extreme(label, 0, True, region)
    assert ext.bound == 1.0 and ext.witness is None and not ext.exact and "being built" in ext.reason
    assert milp.stats.timeouts == 2


def test_a_cancelling_residual_with_huge_weights_is_not_verified():
    """As for CROWN (tests/test_graph_bounds.py): the exact margin is ``-1e-7`` everywhere,
    far below the 1e12 terms: the solver error model trusts no claim at that scale."""
    big = 1e12 + 1 / 3
    w = big - 1e12
    b = Builder((1, 2, 2))
    a = b._add(gn.Conv2d(inputs=(0,), shape=(1, 2, 2), in_shape=(1, 2, 2), weight=np.full((1, 1, 1, 1), big),
                         bias_=np.zeros(1)))
    c = b._add(gn.Conv2d(inputs=(0,), shape=(1, 2, 2), in_shape=(1, 2, 2), weight=np.full((1, 1, 1, 1), -1e12),
                         bias_=np.zeros(1)))
    t = b.scale(0, np.full((1, 1, 1), w), np.full((1, 1, 1), 1e-7))
    d = b.flatten(b.relu(b.sub(b.add(a, c), t)))
    b.dense(d, 2, weight=np.vstack([np.ones((1, 4)), np.zeros((1, 4))]), bias=np.full(2, 0.0))
    graph = b.graph("cancel")
    x = np.full(4, 0.7)
    label = 1  # logit 1 is 0, logit 0 is relu(-1e-7) = 0: a tie, never a robust win
    for eps in (0.0, 1e-9, 0.01):
        answer = MilpOracle(graph).verify_box(x - eps, x + eps, label)
        assert not answer.verified
        if answer.falsified:
            assert graph.misclassified(answer.counterexample, label)[0]


# -- the registry and the commands ---------------------------------------------------------------
def test_exact_runs_on_a_residual_graph_with_its_default_oracle():
    res = residual()
    oracle = make_oracle("crown+alpha-crown+bab", res)
    assert oracle.network is res and all(s.network is res for s in oracle.stages)
    x = np.random.default_rng(3).random(res.n_inputs)
    cert = certify(res, x, config=CertifyConfig(algorithm="exact", precision=1e-3))
    assert cert.oracle == "crown+alpha-crown+bab" and cert.exact, cert.reason
    lo, hi = cert.box.lower, cert.box.upper
    pts = np.random.default_rng(7).uniform(lo, hi, (2000, res.n_inputs))
    assert not res.misclassified(pts, cert.label).any()
    assert res.misclassified(cert.counterexample, cert.label)[0]
    # the same best apothem as milp's distance query
    d = make_oracle("milp", res).min_distance(x, cert.label, Box.unit(res.n_inputs), falsifier=AttackOracle(res))
    assert d.lower <= cert.apothem_upper_bound and cert.apothem <= d.upper


def _tiny_weight_on_a_large_value(graph: bool):
    """``h = 1e11 x``, ``y = 1e-13 h`` (in [0, 0.01]), margin ``|y - 0.005| - 0.001`` over
    ``x`` in [0, 1]: 0.004 at both ends, -0.001 at 0.5. HiGHS drops a coefficient of
    1e-13: with it gone, ``y = 0`` and the margin looks like a constant 0.004."""
    from parallelepipedonn import graph_nodes as gn
    from parallelepipedonn.graph import Graph
    from parallelepipedonn.network import Affine, Network, ReLU

    layers = [([[1e11]], [0.0]), ([[1e-13]], [0.0]), ([[1.0], [-1.0]], [-0.005, 0.005]), None,
              ([[1.0, 1.0], [0.0, 0.0]], [-0.001, 0.0])]
    if not graph:  # as a chain: a ReLU after h (>= 0 on the box), the two next maps merged
        return Network.from_layers((1,), [Affine(*layers[0]), ReLU(), Affine([[1e-13], [-1e-13]], [-0.005, 0.005]),
                                          ReLU(), Affine(*layers[4])])

    nodes: list = [gn.Input(inputs=(), shape=(1,))]
    for spec in layers:
        if spec is None:
            nodes.append(gn.ReLU(inputs=(len(nodes) - 1,), shape=nodes[-1].shape))
            continue
        w, b = np.array(spec[0]), np.array(spec[1])
        nodes.append(gn.Dense(inputs=(len(nodes) - 1,), shape=(w.shape[0],), in_shape=(w.shape[1],), weight=w, bias_=b))
    return Graph((1,), tuple(nodes), "tiny-weight")


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "chain"])
@pytest.mark.parametrize("name", ["milp", "bab"])
def test_a_weight_that_highs_drops_proves_nothing(name, graph):
    """A solve in which HiGHS dropped entries (at or below its ``small_matrix_value``) that
    can move a row beyond the error model's share proves nothing: milp and bab answered
    VERIFIED (margin 0.004) on a box holding a point of exact margin -0.001."""
    g = _tiny_weight_on_a_large_value(graph)
    assert (g.as_network() is None) == graph if hasattr(g, "as_network") else not graph
    assert g.misclassified(np.array([[0.5]]), 0)[0]
    answer = make_oracle(name, g, time_limit=30.0).verify_box([0.0], [1.0], 0)
    assert answer.verdict is not Verdict.VERIFIED
    assert answer.falsified or "which HiGHS drops" in answer.reason
    distance = make_oracle("milp", g, time_limit=30.0).min_distance(np.array([0.0]), 0, Box.unit(1))
    assert distance.lower <= 0.4


def test_dropped_entries_are_measured_per_row_on_the_variables_bounds():
    """``dropped_shift``: a coefficient HiGHS drops times the larger magnitude of its
    variable's bounds, summed per row (infinite on an unbounded variable); a solve beyond
    the share of the feasibility tolerance reports an error, not a bound."""
    import pyomo.environ as pe

    from oracles.milp_encoding import Encoding

    m = pe.ConcreteModel()
    m.x = pe.Var(range(2), bounds=(-3.0, 2.0))
    m.y = pe.Var(bounds=(-1.0, 1.0))
    m.c = pe.Constraint(expr=m.y - 1e-13 * m.x[0] - 2e-13 * m.x[1] == 0)
    opt = make_solver(10.0)
    enc = Encoding(m, [m.x[0], m.x[1]], [m.y], {}, 0)
    res = solve(opt, enc, m.y)
    assert opt.dropped_shift() == pytest.approx((3e-13 + 6e-13, 0.0))  # within 1% of 1e-9: the result stands
    assert res.optimal and res.bound is not None
    m.x[1].setlb(-1e6)
    res = solve(opt, enc, m.y)
    assert opt.dropped_shift() == pytest.approx((3e-13 + 2e-7, 0.0))
    assert res.status.startswith("error: coefficients at or below 1e-12") and res.bound is None and not res.infeasible
    m.x[1].setlb(None)
    assert opt.dropped_shift()[0] == math.inf


@pytest.mark.parametrize("k", [1, 100])
def test_coefficients_below_highs_default_small_value_prove_nothing_either(k):
    """Weights of 2e-12 k and -1.5e-12 k on hidden values up to 1e10 / k (kept by HiGHS,
    above its 1e-12) were still lost in its MIP solves: milp verified the box and proved
    class 1's region empty, though x = 0.5 is class 1 (exact margin of class 0: -5e-4)."""
    from parallelepipedonn.network import Affine, Network, ReLU

    w, v, h = 2e-12 * k, -1.5e-12 * k, 1e10 / k
    net = Network.from_layers((1,), [Affine([[h], [h]], [0.0, 0.0]), ReLU(),
                                     Affine([[w, v], [-w, -v]], [-0.0025, 0.0025]), ReLU(),
                                     Affine([[1.0, 1.0], [0.0, 0.0]], [-0.0005, 0.0])])
    assert net.misclassified(np.array([[0.5]]), 0)[0]
    oracle = make_oracle("milp", net, time_limit=30.0)
    assert oracle.verify_box([0.0], [1.0], 0).verdict is not Verdict.VERIFIED
    assert not oracle.class_extremes(1, Box.unit(1)).empty


# -- HiGHS's presolve and infeasible leaves ------------------------------------------------------
# A residual net, a box and a point of it, from an adversarial review's random search (seed 1,
# iteration 2049): HiGHS 1.16's presolve called the leaf whose phases are the point's infeasible.
_PRESOLVE_W0 = [0.0007596925062276295, -0.00023766309096557702, -0.0012404774527919554, -0.0007596925065258207,
    0.00023766309113964403, 0.0012404774530580987, 0.0009481811070271179, -0.00040082912325384437,
    -0.0010412308182235282, -0.0009481811064684687, 0.0004008291232084684, 0.001041230817585673,
    0.0002089086621793009, 0.0008086542200271473, 0.0003622014568298185, -0.00020890866206505398,
    -0.0008086542202495639, -0.00036220145685516084, -0.0017798896136488383, -0.001956172941472952,
    0.0004270515938668226]
_PRESOLVE_B0 = [-0.0009292441296601296, 0.0009292832960299798, -3.786548192053787e-05, 3.788740168624773e-05,
    -0.0004470533739340629, 0.00044711228904875, -0.0007124647762345883]
_PRESOLVE_W1 = [-0.019533252700112767, -0.26220011684712086, -0.008241964128801316, -0.6457344609896576,
    0.16666530548430225, 0.32016809770280225, 0.03613504254967538, -0.34964160457824295,
    -0.15608926862214328, -0.055799796751435156, -0.018487168442654817, 0.04735299159226659,
    0.004956434494427881, -0.31675840447265236, 0.06229399383299544, 0.41938424830383053,
    0.0010284162712987264, 0.11741636646112215, 0.06721018787469761, -0.25785668308209186,
    0.22846534097795082, 0.047273301149686225, 0.26118833340470266, 0.0005896183394242116,
    0.044953452518600855, 0.07377993873065285, 0.028594938250317215, 0.22803100226147355,
    0.03715789362719813, 0.1632412505578227, -0.08748768862593538, 0.024842809367392697,
    0.04577401728422656, 0.03542309609966145, -0.11223486765670804, -0.16801120886998036,
    -0.03123531532505353, 0.16553755800565156, 0.0012936051069773287, -0.0264156783755712,
    -0.14648908729814636, -0.20951135106548588, -0.06494519093756809, -0.0344676264402872,
    0.37198271464952554, 0.40017840649034575, 0.04937746091560037, 0.054757115212041435,
    0.27797461792486206]
_PRESOLVE_B1 = [0.08156294248370279, -0.06122890342053997, -0.05274158511026816, -0.04807067932760612,
    -0.0098604288377375, 0.0557414993156581, 0.055735044058362895]
_PRESOLVE_W2 = [10.74514997482088, -0.22087274288387226, 18.520332404442424, 3.949480754625871,
    2.652655957832859, -5.419019925945032, -0.3322537601141429, 10.745061037628014,
    -0.22087400340373844, 18.520549621326953, 3.94949132908305, 2.6526626530107755,
    -5.419049479781794, -0.33225918385996905, -14.502927846738082, -0.11575059136082008,
    1.6182203875569667, 20.08927115164722, -7.189579010635821, -5.835981790286338,
    -3.551755701322991]
_PRESOLVE_B2 = [37.17625917967487, 434.4760586774081, 632.4851680450502]
_PRESOLVE_LO = [58.28718941720475, -97.30839961060234, -145.5734297369776]
_PRESOLVE_HI = [87.90784311435523, -64.55584417360554, -96.74083351868482]
_PRESOLVE_XS = [74.59560983332788, -81.82560598350426, -129.25744520804622]
_PRESOLVE_PHASES = [[1, -1, 1, -1, -1, 1, -1], [1, -1, 1, -1, -1, 1, 1]]


def test_an_infeasible_answer_of_highs_presolve_is_checked_without_it():
    """The branch-and-bound leaf LP whose ReLU phases are those of a point of the box (every
    ReLU input at least 0.028 from 0 there, its margin -397.3) was answered ``infeasible``
    (with HiGHS's presolve) and would have closed the leaf as a proof; the solve without
    presolve finds its optimum, which is then the answer."""
    from oracles.bounds import margin_spec
    from oracles.milp_graph import term_magnitude

    w0, w1, w2 = (np.array(w).reshape(n, -1) for w, n in ((_PRESOLVE_W0, 7), (_PRESOLVE_W1, 7), (_PRESOLVE_W2, 3)))
    nodes = (gn.Input(inputs=(), shape=(3,), name="x"),
             gn.Dense(inputs=(0,), shape=(7,), in_shape=(3,), weight=w0, bias_=np.array(_PRESOLVE_B0)),
             gn.ReLU(inputs=(1,), shape=(7,)),
             gn.Dense(inputs=(2,), shape=(7,), in_shape=(7,), weight=w1, bias_=np.array(_PRESOLVE_B1)),
             gn.Add(inputs=(3, 1), shape=(7,)), gn.ReLU(inputs=(4,), shape=(7,)),
             gn.Dense(inputs=(5,), shape=(3,), in_shape=(7,), weight=w2, bias_=np.array(_PRESOLVE_B2)))
    g = Graph((3,), nodes, "presolve-infeasible")
    lo, hi, x = (np.array(v)[None] for v in (_PRESOLVE_LO, _PRESOLVE_HI, _PRESOLVE_XS))
    phases = [np.array(p, dtype=np.int8) for p in _PRESOLVE_PHASES]
    z1 = x[0] @ w0.T + _PRESOLVE_B0
    z2 = np.maximum(z1, 0) @ w1.T + _PRESOLVE_B1 + z1
    assert ((lo <= x) & (x <= hi)).all() and (np.sign(z1) == phases[0]).all() and (np.sign(z2) == phases[1]).all()
    assert min(np.abs(z1).min(), np.abs(z2).min()) > 0.028
    assert g.exact_margin(x[0], 0) < -397  # label 0 against the others, exactly
    gt = GraphTensors.of(g, "cpu")
    nb, _, _ = box_bounds(gt, lo, hi)
    enc = encode_graph(g, lo[0], hi[0], GraphBoxBounds.of(g, nb))
    scale = term_magnitude(gt, nb, margin_spec(3, 0, 1, torch.float64, "cpu"))[0, 0].item()
    enc.fix_phases(phases)
    result = solve(make_solver(None, scale=scale), enc, enc.logits[0] - enc.logits[1])
    assert result.status == "optimal" and result.bound <= -397.29
