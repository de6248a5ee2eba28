"""alpha-CROWN and branch and bound over the DAG IR: sound (below every sampled margin,
on every sub-domain whatever the multipliers), never looser than CROWN, and complete:
on convolutional and residual graphs bab decides the cubes just inside and just outside
the exact distance that milp finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import AttackOracle, Verdict, make_oracle
from oracles.bounds import margin_spec, relu_relaxation
from oracles.crown import AlphaCrownOracle, CrownOracle
from oracles.graph_bounds import GraphTensors, backward, concretize_wide, node_bounds
from oracles.milp_graph import relu_nodes
from parallelepipedonn.box import Box
from parallelepipedonn.graph import evaluate
from tests.graph_nets import mixed, residual, small_cnn, transposed
from tests.test_milp_graph import two_inputs

GRAPHS = {"small_cnn": small_cnn, "residual": residual, "mixed": mixed, "transposed": transposed}


@pytest.mark.parametrize("name", GRAPHS)
def test_alpha_crown_over_a_graph_is_sound_and_never_looser_than_crown(name):
    graph = GRAPHS[name]()
    rng = np.random.default_rng(1)
    x = rng.random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    radii = np.array([0.01, 0.03, 0.1])
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    oracle = AlphaCrownOracle(graph)
    assert oracle.graph_tensors is not None
    alpha = oracle.margin_lower_bounds(lo, hi, label)
    crown = CrownOracle(graph).margin_lower_bounds(lo, hi, label)
    assert (alpha >= crown).all()
    for i in range(len(radii)):
        pts = rng.uniform(lo[i], hi[i], (3000, graph.n_inputs))
        logits = graph.forward(pts)
        sampled = (logits[:, [label]] - np.delete(logits, label, axis=1)).min(axis=0)
        assert (alpha[i] <= sampled).all()


@pytest.mark.parametrize("name", GRAPHS)
def test_alpha_crowns_answers_on_a_graph_come_from_its_own_bounds(name):
    """verify answers with alpha-CROWN's bounds (not CROWN's: a box CROWN leaves open that
    alpha-CROWN proves is VERIFIED), nested boxes included."""
    graph = GRAPHS[name]()
    x = np.random.default_rng(1).random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    radii = np.array([0.005, 0.01, 0.02, 0.03, 0.05])
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    alpha = AlphaCrownOracle(graph).margin_lower_bounds(lo, hi, label).min(axis=1)
    answers = AlphaCrownOracle(graph).verify(lo, hi, label)
    for bound, answer in zip(alpha, answers):
        if answer.verdict is not Verdict.FALSIFIED:  # (the screen's: a confirmed corner)
            assert answer.verified == (bound > 0), (name, bound, answer)
    if name == "small_cnn":  # where CROWN and alpha-CROWN part
        crown = CrownOracle(graph).margin_lower_bounds(lo, hi, label).min(axis=1)
        assert ((crown <= 0) & (alpha > 0)).any()


@pytest.mark.parametrize("name", ["residual", "mixed"])
def test_split_terms_give_sound_bounds_on_a_sub_domain_whatever_the_multipliers(name):
    graph = GRAPHS[name]()
    gt = GraphTensors.of(graph)
    rng = np.random.default_rng(2)
    x = rng.random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    lo, hi = torch.tensor(np.clip(x - 0.15, 0, 1))[None], torch.tensor(np.clip(x + 0.15, 0, 1))[None]
    nb = node_bounds(gt, lo, hi)
    relus = relu_nodes(graph)
    pts = torch.tensor(rng.uniform(lo[0].numpy(), hi[0].numpy(), (20000, graph.n_inputs)))
    with torch.no_grad():
        values = evaluate(graph, pts, keep=True)
    spec = margin_spec(graph.n_classes, label, 1, torch.float64, torch.device("cpu"))
    checked = 0
    for trial in range(8):
        # one ReLU node: a phase for two neurons unstable on the box, the signs they have at
        # a sampled point; the points of the box on that sub-domain are those with these signs
        keep = torch.ones(len(pts), dtype=torch.bool)
        split = relus[trial % len(relus)]
        anchor = int(rng.integers(len(pts)))
        relax, terms = {}, {}
        for k in relus:
            u = graph.nodes[k].inputs[0]
            lb, ub = nb.lower[u].flatten(1), nb.upper[u].flatten(1)
            phase = torch.zeros_like(lb, dtype=torch.int8)
            if k == split:
                unstable = torch.nonzero((lb[0] < 0) & (ub[0] > 0))[:, 0]
                for i in unstable[torch.randperm(len(unstable), generator=torch.Generator().manual_seed(trial))[:2]]:
                    z = values[u].flatten(1)[:, i]
                    phase[0, i] = 1 if z[anchor] >= 0 else -1
                    keep &= (z >= 0) if phase[0, i] > 0 else (z <= 0)
            lb_c, ub_c = torch.where(phase > 0, lb.clamp(min=0), lb), torch.where(phase < 0, ub.clamp(max=0), ub)
            alpha = torch.tensor(rng.random((1, spec.shape[1], lb.shape[1])))
            relax[k] = relu_relaxation(lb_c, ub_c, alpha=alpha)
            beta = torch.tensor(rng.exponential(2.0, (1, spec.shape[1], lb.shape[1])))
            terms[k] = -beta * phase.to(torch.float64).unsqueeze(1)
        nb.relax = relax
        bound = concretize_wide(backward(gt, nb, len(graph.nodes) - 1, spec, split_terms=terms), lo, hi)[0]
        if not keep.any():
            continue
        logits = values[-1][keep].numpy()
        sampled = (logits[:, [label]] - np.delete(logits, label, axis=1)).min(axis=0)
        assert (bound.numpy() <= sampled).all()
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("graph", [two_inputs(4), two_inputs(6), residual(), small_cnn()],
                         ids=["two_inputs-4", "two_inputs-6", "residual", "small_cnn"])
def test_bab_over_a_graph_decides_the_cubes_around_the_exact_distance(graph):
    x = np.random.default_rng(5).random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    d = make_oracle("milp", graph, time_limit=30).min_distance(x, label, Box.unit(graph.n_inputs),
                                                             falsifier=AttackOracle(graph))
    assert d.exact(1e-4) and d.lower > 0
    bab = make_oracle("bab", graph, time_limit=30)
    assert bab.network is graph and bab.graph_tensors is not None
    inside = bab.verify_box(np.clip(x - 0.99 * d.lower, 0, 1), np.clip(x + 0.99 * d.lower, 0, 1), label)
    assert inside.verdict is Verdict.VERIFIED, inside.reason
    outside = bab.verify_box(np.clip(x - 1.01 * d.upper, 0, 1), np.clip(x + 1.01 * d.upper, 0, 1), label)
    assert outside.verdict is Verdict.FALSIFIED and graph.misclassified(outside.counterexample, label)[0]


def test_bab_leaves_of_a_graph_are_decided_by_the_lp():
    graph = two_inputs(6)
    x = np.random.default_rng(5).random(graph.n_inputs)
    label = int(graph.predict(x)[0])
    bab = make_oracle("bab", graph, time_limit=30, steps=0, leaf_steps=0)  # CROWN only: LPs decide the leaves
    leaves = []
    decide = bab._leaf_lp

    def counted(*args, **kwargs):
        answer = decide(*args, **kwargs)
        leaves.append(answer.verdict)
        return answer

    bab._leaf_lp = counted
    answer = bab.verify_box(np.clip(x - 0.67, 0, 1), np.clip(x + 0.67, 0, 1), label)  # distance 0.68
    assert answer.verdict is Verdict.VERIFIED and leaves and set(leaves) == {Verdict.VERIFIED}


def test_a_graph_whose_relus_are_all_off_the_path_to_the_output_is_bounded_and_decided():
    """alpha-CROWN stepped on a bound no slope reaches (autograd raised): milp's prefilter
    answered UNKNOWN ("milp error") and its ``min_distance`` raised to the caller."""
    from parallelepipedonn import graph_nodes as gn
    from parallelepipedonn.graph import Graph

    nodes = (gn.Input(inputs=(), shape=(2,), name="x"),
             gn.Dense(inputs=(0,), shape=(2,), in_shape=(2,), weight=np.array([[1.0, -1.0], [-1.0, 1.0]]),
                      bias_=np.zeros(2)),
             gn.ReLU(inputs=(1,), shape=(2,)),  # read by nothing
             gn.Dense(inputs=(0,), shape=(2,), in_shape=(2,), weight=np.eye(2), bias_=np.zeros(2)),
             gn.Add(inputs=(3, 1), shape=(2,)))
    g = Graph((2,), nodes, "dead-relu")  # margin of class 0: 3 (x0 - x1), linear
    lo, hi = np.array([0.1, 0.0]), np.array([0.5, 0.4])
    bound = AlphaCrownOracle(g, steps=5).margin_lower_bounds(lo[None], hi[None], 0)
    assert bound[0, 0] == pytest.approx(-0.9, abs=1e-9)
    assert make_oracle("milp", g).verify_box(lo, hi, 0).verdict is Verdict.FALSIFIED
    x = np.array([0.3, 0.2])
    d = make_oracle("milp", g, time_limit=30).min_distance(x, 0, Box.unit(2), falsifier=AttackOracle(g))
    assert d.lower == pytest.approx(0.05, abs=1e-6) and d.upper == pytest.approx(0.05, abs=1e-6)


def test_a_time_limit_that_passes_while_a_graphs_root_is_bounded_stops_it(monkeypatch):
    """As on chains (tests/test_bab.py): the root's node bounds look at the deadline before
    each node CROWN tightens; past it, UNKNOWN, timed out."""
    import time

    from tests.test_bab import _slowed

    graph = mixed()  # four nodes CROWN tightens at the root
    label = int(graph.predict(np.full((1, graph.n_inputs), 0.5))[0])
    calls = _slowed(monkeypatch, "oracles.graph_bounds", "_tighten", 0.2)
    start = time.perf_counter()
    answer = make_oracle("bab", graph, time_limit=0.3).verify_box(np.zeros(graph.n_inputs), np.ones(graph.n_inputs),
                                                                  label)
    assert answer.verdict is Verdict.UNKNOWN and answer.timed_out and "root" in answer.reason, answer.reason
    assert len(calls) == 2 and time.perf_counter() - start < 0.3 + 0.2 + 0.15
