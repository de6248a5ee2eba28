"""The exact encoding, and the minimum adversarial distance, against closed forms."""

from __future__ import annotations

import numpy as np
import pyomo.environ as pe
import pytest
import torch

from oracles import AttackOracle, BabOracle, MilpOracle, Verdict, make_oracle, min_adversarial_distance
from oracles.bounds import NetworkTensors, intermediate_bounds
from oracles.cascade import Cascade
from oracles.distance import pull_counterexample
from oracles.milp import flip_distances
from oracles.milp_encoding import encode, make_solver, solve
from parallelepipedonn.box import Box
from parallelepipedonn.errors import ConfigError, OracleError
from parallelepipedonn.network import Affine, Network, ReLU
from tests.nets import random_network


def _bounds(net, lo, hi):
    inter = intermediate_bounds(NetworkTensors.of(net), torch.tensor(lo)[None], torch.tensor(hi)[None])
    return [(a[0].numpy(), b[0].numpy()) for a, b in inter]


@pytest.mark.parametrize("seed", range(3))
def test_encoding_at_a_point_reproduces_the_forward_pass(seed):
    net = random_network(seed, [4, 7, 7, 3])
    rng = np.random.default_rng(seed)
    lo, hi = np.zeros(4), np.ones(4)
    enc = encode(net, lo, hi, _bounds(net, lo, hi))
    opt = make_solver(10.0)
    for _ in range(3):
        p = rng.random(4)
        for i, v in enumerate(enc.x):
            v.fix(float(p[i]))
        logits = net.forward(p)[0]
        for j in range(3):
            res = solve(opt, enc, enc.logits[j])
            assert res.optimal and res.bound == pytest.approx(logits[j], abs=1e-6)


def test_the_convex_shortcut_keeps_minimisation_exact():
    net = random_network(11, [3, 10, 3], scale=2.0)
    lo, hi = np.full(3, 0.2), np.full(3, 0.7)
    bounds = _bounds(net, lo, hi)
    w = net.affines[-1].weight
    full = encode(net, lo, hi, bounds)
    shortcuts = 0
    for c, j in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]:
        fast = encode(net, lo, hi, bounds, minimize_last=w[c] - w[j])
        shortcuts += len(full.binaries) - len(fast.binaries)
        a = solve(make_solver(10.0), full, full.logits[c] - full.logits[j])
        b = solve(make_solver(10.0), fast, fast.logits[c] - fast.logits[j])
        assert a.bound == pytest.approx(b.bound, abs=1e-6)
    assert shortcuts > 0


def _linear_classifier(a: np.ndarray, c: float) -> Network:
    """margin(x) = a @ x + c exactly (two logits, ReLU layer kept positive)."""
    n = a.size
    first = Affine(np.eye(n), np.full(n, 10.0))  # inputs in [0,1]: always active
    last = Affine(np.stack([a, np.zeros(n)]), np.array([c - 10.0 * a.sum(), 0.0]))
    return Network.from_layers((n,), [first, ReLU(), last])


def test_minimum_distance_of_a_linear_margin_matches_the_closed_form():
    a = np.array([1.0, -2.0, 0.5])
    x = np.array([0.5, 0.4, 0.5])
    net = _linear_classifier(a, 0.3)
    margin = net.margins(x, 0)[0]
    exact = margin / np.abs(a).sum()  # L-infinity distance to {a.x + c <= 0}, no clipping here
    for oracle in (MilpOracle(net), BabOracle(net)):
        d = min_adversarial_distance(oracle, x, 0, Box.unit(3), rel_precision=1e-5, falsifier=AttackOracle(net))
        assert d.lower <= exact <= d.upper + 1e-12
        assert d.upper - d.lower <= 1e-3 * exact
        assert net.margins(d.counterexample, 0)[0] <= 0


def test_pulled_counterexample_is_closer_and_still_misclassified():
    net = _linear_classifier(np.array([1.0, 1.0]), -0.5)
    x, far = np.array([0.5, 0.5]), np.array([0.0, 0.0])
    assert net.margins(x, 0)[0] > 0 and net.margins(far, 0)[0] <= 0
    pulled = pull_counterexample(net, x, far, 0)
    assert net.margins(pulled, 0)[0] <= 0
    assert np.abs(pulled - x).max() < np.abs(far - x).max()
    assert np.abs(pulled - x).max() == pytest.approx(0.25, abs=1e-4)


def test_composed_oracle_names_build_a_cascade():
    net = random_network(12, [3, 5, 3])
    oracle = make_oracle("crown+milp", net, time_limit=5.0, device="cpu")
    assert isinstance(oracle, Cascade) and [s.name for s in oracle.stages] == ["crown", "milp"]
    assert oracle.stages[1].time_limit == 5.0
    with pytest.raises(ConfigError, match="takes option"):
        make_oracle("crown+milp", net, gradient_steps=3)
    with pytest.raises(ConfigError, match="malformed"):
        make_oracle("crown+", net)


def test_milp_counterexample_is_the_true_minimiser():
    net = random_network(13, [2, 6, 3], scale=3.0)
    lo, hi = np.zeros(2), np.ones(2)
    x = np.full(2, 0.5)
    label = int(net.predict(x)[0])
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 301), np.linspace(0, 1, 301)), -1).reshape(-1, 2)
    a = MilpOracle(net).verify_box(lo, hi, label)
    if (net.margins(grid, label) <= 0).any():
        assert a.verdict is Verdict.FALSIFIED
    enc = encode(net, lo, hi, _bounds(net, lo, hi))
    for j in range(3):
        if j == label:
            continue
        res = solve(make_solver(10.0), enc, enc.logits[label] - enc.logits[j], pe.minimize)
        grid_min = (net.forward(grid)[:, label] - net.forward(grid)[:, j]).min()
        assert res.bound <= grid_min + 1e-9  # a proven lower bound
        assert res.bound >= grid_min - 0.05  # and close to the grid's minimum


# -- the distance query ----------------------------------------------------------------------
@pytest.mark.parametrize("seed, sizes", [(20, [5, 12, 3]), (21, [5, 12, 3]), (22, [4, 8, 8, 3]), (23, [6, 10, 10, 4])])
def test_the_distance_query_brackets_the_same_optimum_as_root_finding_and_nothing_nearer_is_misclassified(seed, sizes):
    net = random_network(seed, sizes, scale=2.0)
    x = np.random.default_rng(seed).random(sizes[0])
    label = int(net.predict(x)[0])
    domain = Box.unit(sizes[0])
    milp = MilpOracle(net)
    assert milp.supports("distance")
    d = milp.min_distance(x, label, domain, falsifier=AttackOracle(net))
    bab = min_adversarial_distance(BabOracle(net), x, label, domain, rel_precision=1e-6, falsifier=AttackOracle(net))
    if np.isinf(bab.upper):
        assert np.isinf(d.lower) and d.counterexample is None
        return
    assert d.exact(1e-4) and net.misclassified(d.counterexample, label)[0]
    assert np.abs(d.counterexample - x).max() == pytest.approx(d.upper, abs=1e-15)
    assert bab.lower <= d.upper and d.lower <= bab.upper
    # soundness by sampling and attack inside the proven cube
    cube = Box.cube(x, d.lower, domain)
    points = np.random.default_rng(seed).uniform(cube.lower, cube.upper, (4000, x.size))
    assert not net.misclassified(points, label).any()
    assert AttackOracle(net).verify_box(cube.lower, cube.upper, label).verdict is not Verdict.FALSIFIED
    # without a falsifier or any counterexample, the whole domain is searched: same answer
    alone = milp.min_distance(x, label, domain)
    assert alone.lower <= d.upper and d.lower <= alone.upper


def test_the_distance_query_reports_a_robust_domain_as_infinitely_far():
    net = _linear_classifier(np.array([0.1, -0.1]), 1.0)  # margin >= 0.9 on [0,1]^2
    d = MilpOracle(net).min_distance(np.array([0.5, 0.5]), 0, Box.unit(2), falsifier=AttackOracle(net))
    assert d.lower == d.upper == np.inf and d.counterexample is None


def test_cascades_pass_the_distance_query_to_their_milp_stage():
    net = random_network(20, [5, 12, 3], scale=2.0)
    x = np.random.default_rng(20).random(5)
    label = int(net.predict(x)[0])
    cascade = make_oracle("crown+milp", net)
    assert cascade.supports("distance") and not make_oracle("crown+bab", net).supports("distance")
    assert cascade.routes["distance"].name == "milp" and cascade.routes["class_extremes"].name == "milp"
    a = cascade.min_distance(x, label, Box.unit(5))
    b = MilpOracle(net).min_distance(x, label, Box.unit(5))
    assert a.lower == pytest.approx(b.lower, rel=1e-9) and a.upper == pytest.approx(b.upper, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_flip_distances_are_the_least_distances_at_which_first_layer_neurons_change_phase(seed):
    net = random_network(30 + seed, [6, 9, 3], scale=2.0)
    rng = np.random.default_rng(seed)
    x = rng.random(6)
    domain = Box.unit(6)
    w, b = net.affines[0].weight, net.affines[0].bias
    z0 = w @ x + b
    flips = flip_distances(net, x, domain)
    assert flips
    for k, (tau, active) in flips.items():
        assert active == (z0[k] > 0)
        # nothing nearer flips it: the extreme point of the cube of radius tau (1 - 1e-6)
        toward = -np.sign(z0[k]) * np.sign(w[k])
        for r, flipped in ((tau * (1 - 1e-6), False), (tau * (1 + 1e-6), True)):
            p = np.clip(x + r * toward, domain.lower, domain.upper)
            assert (np.sign(w[k] @ p + b[k]) != np.sign(z0[k])) == flipped
        sample = np.clip(x + rng.uniform(-tau, tau, (2000, 6)) * (1 - 1e-6), 0, 1)
        assert (np.sign(sample @ w[k] + b[k]) == np.sign(z0[k])).all()


def test_the_solver_keeps_matrix_entries_far_below_highs_default_small_value():
    m = pe.ConcreteModel()
    m.x = pe.Var(bounds=(0, 1e12))
    m.c = pe.Constraint(expr=1e-10 * m.x >= 1.0)  # dropped as 0 by HiGHS's default (1e-9): infeasible
    m.objective = pe.Objective(expr=m.x)
    res = make_solver(10.0).solve(m)
    assert res.termination_condition.name == "optimal"
    assert res.best_objective_bound == pytest.approx(1e10, rel=1e-6)


def test_a_distance_query_out_of_time_keeps_a_valid_bracket():
    net = random_network(23, [6, 10, 10, 4], scale=2.0)
    x = np.random.default_rng(23).random(6)
    label = int(net.predict(x)[0])
    domain = Box.unit(6)
    full = MilpOracle(net).min_distance(x, label, domain, falsifier=AttackOracle(net))
    cut = MilpOracle(net).min_distance(x, label, domain, lower=0.01, falsifier=AttackOracle(net), time_limit=1e-9)
    assert "time limit" in cut.reason and cut.lower == 0.01
    assert cut.lower <= full.upper and full.lower <= cut.upper
    assert cut.counterexample is not None and net.misclassified(cut.counterexample, label)[0]


@pytest.mark.parametrize("seed", [11, 1])
def test_a_counterexample_just_above_the_optimum_never_lifts_the_proven_distance_above_it(seed):
    # with the MILP's cap on t at the best counterexample's distance, 3e-6 (relative) above
    # the optimum, HiGHS's presolve at default tolerances reported the cap as the bound
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(2, 7)), int(rng.integers(3, 5))
    hidden = [int(rng.integers(6, 16))] if seed % 2 == 0 else [int(rng.integers(6, 12)), int(rng.integers(6, 12))]
    net = random_network(seed, [n, *hidden, c], scale=float(rng.choice([1.0, 2.0, 5.0])))
    domain, x = Box.unit(n), rng.random(n)
    label = int(net.predict(x)[0])
    bab = min_adversarial_distance(BabOracle(net), x, label, domain, rel_precision=1e-7, falsifier=AttackOracle(net))
    assert np.isfinite(bab.upper)
    for delta in (1e-7, 1e-6, 3e-6):
        near = next(p for s in np.geomspace(delta, 10 * delta, 20)
                    for p in [np.clip(x + (1 + s) * (bab.counterexample - x), 0, 1)] if net.misclassified(p, label)[0])
        d = MilpOracle(net).min_distance(x, label, domain, counterexample=near)
        assert d.lower <= bab.upper and bab.lower <= d.upper


def test_counterexamples_are_rechecked_before_they_bound_the_distance():
    net = random_network(20, [5, 12, 3], scale=2.0)
    x = np.random.default_rng(20).random(5)
    label = int(net.predict(x)[0])
    true = MilpOracle(net).min_distance(x, label, Box.unit(5))
    fake = np.clip(x + 1e-3, 0, 1)  # classified label: not a counterexample
    d = MilpOracle(net).min_distance(x, label, Box.unit(5), counterexample=fake)
    assert d.lower <= true.upper and true.lower <= d.upper and d.upper > 1e-3
    with pytest.raises(OracleError):
        MilpOracle(net).min_distance(x + 2.0, label, Box.unit(5))


def test_an_lp_stopped_early_proves_no_bound():
    net = _linear_classifier(np.array([1.0, -2.0, 0.5]), 0.3)
    enc = encode(net, np.zeros(3), np.ones(3), _bounds(net, np.zeros(3), np.ones(3)))
    assert not enc.binaries
    opt = make_solver(10.0)
    opt.highs_options = {**opt.highs_options, "simplex_iteration_limit": 0, "presolve": "off"}
    res = solve(opt, enc, enc.logits[0] - enc.logits[1])
    assert res.status != "optimal" and res.bound is None


# -- solver points are confirmed, never trusted (highspy 1.16) --------------------------------------
def _net_and_cube_at_the_distance(seed: int, sizes: list[int]):
    """A random net, an input, its label and the cube at its exact minimum adversarial
    distance: the least margin over the cube is a hair below 0."""
    net = random_network(seed, sizes, scale=2.0)
    x = np.random.default_rng(seed).random(sizes[0])
    label = int(net.predict(x)[0])
    d = MilpOracle(net).min_distance(x, label, Box.unit(sizes[0]))
    lo, hi = np.maximum(0.0, x - d.upper), np.minimum(1.0, x + d.upper)
    return net, x, label, lo, hi


@pytest.mark.parametrize("solver_noise", ["value a hair above 0", "point a hair inside"])
@pytest.mark.parametrize("seed", [20, 21])
def test_a_boundary_optimum_is_confirmed_whatever_the_sign_the_solver_reports(monkeypatch, seed, solver_noise):
    # HiGHS 1.16 reported +5.9e-17 for an optimum whose exact margin is -1.3e-17 (the
    # 'thirds' net of test_float_soundness): the solver's value is rounding noise at the
    # boundary; the forward pass decides. A point a hair on the robust side is pushed out.
    import dataclasses

    import oracles.milp as milp_module

    net, x, label, lo, hi = _net_and_cube_at_the_distance(seed, [5, 12, 3])
    real = milp_module.solve

    def noisy(opt, enc, objective, sense=pe.minimize):
        res = real(opt, enc, objective, sense)
        if res.value is None or res.x is None:
            return res
        if solver_noise == "value a hair above 0":
            return dataclasses.replace(res, value=max(res.value, 0.0) + 5.9e-17, bound=max(res.bound, 2.8e-17))
        return dataclasses.replace(res, x=res.x + 1e-4 * (x - res.x))  # towards the robust input

    monkeypatch.setattr(milp_module, "solve", noisy)
    if solver_noise == "point a hair inside":  # the point the solver returns is not a counterexample
        enc, margin = MilpOracle(net)._margin_problem(lo, hi, label, 1)
        assert not net.misclassified(np.clip(noisy(make_solver(10.0), enc, margin).x, lo, hi), label)[0]
    a = MilpOracle(net).verify_box(lo, hi, label)
    assert a.verdict is Verdict.FALSIFIED, a.reason
    assert Box(lo, hi).contains(a.counterexample) and net.misclassified(a.counterexample, label)[0]


def test_a_point_a_hair_on_the_robust_side_is_pushed_to_a_confirmed_counterexample():
    net = _linear_classifier(np.array([1.0, -1.0]), 0.0)  # margin x0 - x1, exactly
    p = np.array([0.5, np.nextafter(0.5, 0.0)])  # exact margin 2^-54 > 0
    lo, hi = np.zeros(2), np.ones(2)
    assert not net.misclassified(p, 0)[0]
    cex = MilpOracle(net)._confirm_counterexample(p, lo, hi, 0, 1)
    assert cex is not None and net.misclassified(cex, 0)[0] and np.abs(cex - p).max() < 1e-9
    # a box without a counterexample yields none, however hard it is pushed
    assert MilpOracle(net)._confirm_counterexample(p, np.array([0.5, 0.0]), np.array([1.0, 0.5 - 1e-9]), 0, 1) is None


def _diagonal_classifier() -> Network:
    """Class 0 where x0 >= x1, class 1 where x1 >= x0 (logits x0 and x1, exactly)."""
    return Network.from_layers((2,), [Affine(np.eye(2), np.zeros(2)), ReLU(), Affine(np.eye(2), np.zeros(2))])


def test_class_region_witnesses_come_from_inside_the_class_when_the_optimum_lies_on_the_slack(monkeypatch):
    # With x0 <= 0.97 in the region, the superset x0 - x1 >= -0.05 of class 0 reaches x1 = 1,
    # the class itself only x1 = 0.97: every optimum of the superset problem lies outside
    # the class (as HiGHS 1.16 returned one at margin -CLASS_SLACK on the reference nets)
    import oracles.milp_regions as regions_module  # where the class-region encoding reads it

    monkeypatch.setattr(regions_module, "CLASS_SLACK", 0.05)
    net = _diagonal_classifier()
    region = Box(np.zeros(2), np.array([0.97, 1.0]))
    milp = MilpOracle(net)
    ans = milp.class_region(np.zeros(2), np.array([0.97, 0.5]), 0, region, tolerance=0.0)
    assert ans.verdict.value == "witness" and "interior point" in ans.reason, ans.reason
    w = ans.witness
    assert region.contains(w) and w[1] > 0.5 and not net.misclassified(w, 0)[0]
    ext = milp.coordinate_extreme(0, 1, True, region)
    assert ext.bound >= 0.97 and "interior point" in ext.reason, ext.reason
    assert ext.witness is not None and region.contains(ext.witness) and not net.misclassified(ext.witness, 0)[0]
    # the class rows are put back: the superset again (its proven bound stays an outer bound)
    assert milp.coordinate_extreme(0, 1, True, region).bound >= 0.97


def test_a_tie_is_a_class_point_only_in_exact_arithmetic():
    net = _linear_classifier(np.array([0.1, -0.1]), 0.0)  # margin 0.1 x0 - 0.1 x1 (+ rounding)
    milp = MilpOracle(net)
    xs = np.random.default_rng(0).uniform(0.2, 0.8, 200)
    below = np.stack([np.nextafter(xs, 0), xs], axis=1)  # x0 one ulp below x1: exact margin < 0
    assert not milp._class_points(below, 0).any()
    assert milp._class_points(np.stack([xs, xs], axis=1), 0).all()  # exact ties are class points


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_coordinate_changes_attain_the_same_edges_as_trying_every_witness_on_every_coordinate(seed):
    """The witnesses are tried in growing blocks, each on the coordinates not yet attained:
    the same edges are attained as by every witness on every coordinate, each by the first
    witness that stays in the class, and every point returned is a class point with one
    coordinate moved to the edge."""
    net = random_network(seed, [6, 8, 8, 3])
    rng = np.random.default_rng(seed)
    region = Box(np.full(6, 0.2), np.full(6, 0.8))
    pts = rng.uniform(0.2, 0.8, (400, 6))
    label = int(np.bincount(net.predict(pts)).argmax())
    witnesses = pts[net.class_points(pts, label)][:40]
    lo0, hi0 = witnesses.min(axis=0), witnesses.max(axis=0)
    lo, hi, found = MilpOracle(net)._single_changes(label, region, witnesses, lo0, hi0)
    for edge, reached, start in ((region.lower, lo, lo0), (region.upper, hi, hi0)):
        for i in range(6):
            moved = witnesses.copy()
            moved[:, i] = edge[i]
            ok = net.class_points(moved, label)
            assert reached[i] == (edge[i] if ok.any() else start[i])
            if ok.any():  # its first witness that stays is among the points returned
                assert any(np.array_equal(moved[int(np.argmax(ok))], f) for f in found)
    assert len(found) == int((lo == region.lower).sum() - (lo0 == region.lower).sum()
                             + (hi == region.upper).sum() - (hi0 == region.upper).sum())
    assert net.class_points(found, label).all()


def _vertex_tied_in_float64() -> Network:
    """One input on [0, 1], label 0 (logit 0): class 1's logit ``h - 2^-54 h - 1`` is 0 in
    float64 at ``x = 1`` and ``-2^-54`` exactly (the margin there, ``+2^-54``, too small for
    a solver to prove); class 2's logit ``h - 2 relu(x - 1/2) - 1/4`` makes ``x = 1/2`` a
    counterexample (exact margin ``-1/4``)."""
    t = 2.0 ** -54
    return Network((1,), (Affine(np.ones((3, 1)), np.array([0.0, 0.0, -0.5])), ReLU(),
                          Affine(np.array([[0.0, 0.0, 0.0], [1.0, -t, 0.0], [1.0, 0.0, -2.0]]),
                                 np.array([0.0, -1.0, -0.25]))))


@pytest.mark.parametrize("name", ["milp", "bab"])
def test_a_vertex_misclassified_in_float64_only_does_not_hide_a_counterexample(name):
    """A complete oracle's early counterexamples (CROWN's minimising vertex, bab's leaf
    vertices and LP optima) count only where exact arithmetic confirms them, and a class the
    solver cannot decide does not stop the search for another class's counterexample: both
    answered UNKNOWN here, where a point of exact margin -1/4 lies in the box (found by an
    adversarial review)."""
    net = _vertex_tied_in_float64()
    assert net.margins(np.array([1.0]), 0)[0] == 0.0 and net.exact_margin(np.array([1.0]), 0) > 0
    answer = make_oracle(name, net).verify_box(np.array([0.0]), np.array([1.0]), 0)
    assert answer.verdict is Verdict.FALSIFIED and net.exact_margin(answer.counterexample, 0) < 0
