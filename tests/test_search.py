"""Apothem search: certified cubes are really robust, bounds are honest, calls are few."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import AttackOracle, CrownOracle
from parallelepipedonn.box import Box
from parallelepipedonn.errors import ConfigError
from parallelepipedonn.network import Affine, Network, ReLU
from parallelepipedonn.search import ApothemBisection, Problem, Status, make_search
from tests.nets import random_network


def assert_robust_everywhere(net: Network, box: Box, label: int, seed: int = 0) -> None:
    """Sampling, every vertex (small n) or random vertices, and a strong PGD attack inside
    the box: no point may have margin <= 0."""
    rng = np.random.default_rng(seed)
    pts = [box.samples(2000, rng), box.vertices_sample(500, rng), box.center[None]]
    if box.n <= 10:
        pts.append(np.array(list(itertools.product(*zip(box.lower, box.upper)))))
    assert (net.margins(np.concatenate(pts), label) > 0).all(), "a sampled point of a certified box is misclassified"
    attack = AttackOracle(net, steps=100, restarts=20, seed=seed)
    points, margins = attack.search(box.lower[None], box.upper[None], label)
    assert net.margins(points, label)[0] > 0, "PGD found a counterexample inside a certified box"


@settings(max_examples=60)
@given(seed=st.integers(0, 100_000), n=st.integers(2, 8), depth=st.integers(1, 3))
def test_certified_cubes_are_robust_under_sampling_and_attack(seed, n, depth):
    rng = np.random.default_rng(seed)
    net = random_network(seed, [n] + [10] * depth + [3])
    x = rng.random(n)
    label = int(net.predict(x)[0])
    problem = Problem(x, label, Box.unit(n))
    result = ApothemBisection(precision=1e-3).run(problem, CrownOracle(net), AttackOracle(net, seed=seed))
    if result.status is Status.CERTIFIED:
        box = result.box
        assert box.contains(x) and Box.unit(n).contains_box(box)
        assert_robust_everywhere(net, box, label, seed)
        apothem = box.apothem(x, problem.domain)
        assert apothem <= result.apothem_upper_bound
    if math.isfinite(result.apothem_upper_bound):
        cex = result.counterexample
        assert net.margins(cex, label)[0] <= 0
        assert problem.distance(cex) == pytest.approx(result.apothem_upper_bound)


def test_bisection_stops_within_precision_and_uses_logarithmically_many_calls():
    net = random_network(11, [6, 12, 12, 3])
    x = np.full(6, 0.4)
    problem = Problem(x, int(net.predict(x)[0]), Box.unit(6))
    for precision in (1e-2, 1e-4, 1e-6):
        result = ApothemBisection(precision=precision).run(problem, CrownOracle(net))
        assert result.status is Status.CERTIFIED
        assert result.oracle_calls <= math.ceil(math.log2(problem.radius_max / precision)) + 2
        assert result.rounds == result.oracle_calls  # one box per call
        r = result.box.apothem(x, problem.domain)
        # one more step of the precision is not verified by the same oracle (maximality)
        unverified = [rad for rad, verdict in result.trace if verdict != "verified"]
        assert min(unverified) - r <= precision + 1e-15


def test_whole_domain_certified_for_a_constant_classifier():
    net = Network.from_layers((3,), [Affine(np.zeros((4, 3)), np.zeros(4)), ReLU(),
                                     Affine(np.zeros((2, 4)), np.array([1.0, 0.0]))])
    x = np.array([0.2, 0.5, 0.9])
    result = ApothemBisection().run(Problem(x, 0, Box.unit(3)), CrownOracle(net))
    assert result.status is Status.CERTIFIED and result.box == Box.unit(3)
    assert result.box.apothem(x, Box.unit(3)) == math.inf and result.oracle_calls == 1


def test_an_oracle_that_never_verifies_certifies_nothing():
    net = random_network(12, [4, 8, 3])
    x = np.full(4, 0.5)
    label = int(net.predict(x)[0])
    result = ApothemBisection(precision=1e-3).run(Problem(x, label, Box.unit(4)), AttackOracle(net))
    assert result.status is Status.UNKNOWN and result.box is None
    assert "could not verify" in result.reason


def test_the_falsifier_bounds_the_best_apothem_from_above():
    net = random_network(13, [5, 16, 3], scale=3.0)
    x = np.full(5, 0.5)
    label = int(net.predict(x)[0])
    problem = Problem(x, label, Box.unit(5))
    plain = ApothemBisection(precision=1e-4).run(problem, CrownOracle(net), AttackOracle(net))
    assert plain.status is Status.CERTIFIED and math.isfinite(plain.apothem_upper_bound)
    assert plain.box.apothem(x, problem.domain) <= plain.apothem_upper_bound


def test_unknown_algorithm_or_bad_precision():
    with pytest.raises(ConfigError, match="unknown algorithm"):
        make_search("nope")
    with pytest.raises(ConfigError, match="precision"):
        make_search("apothem-bisection", precision=0)


@pytest.mark.parametrize("name", ["box-maximal", "apothem-kary", "volume-greedy"])
def test_every_oracle_call_of_a_search_gets_at_most_the_time_left(name, monkeypatch):
    """The deadline was checked only between oracle calls, and a call could take any time
    (a CROWN call over a box search's faces on a residual CIFAR net: 135 s of a 2 s limit)."""
    import time

    net = random_network(31, [6, 10, 3])
    x = np.full(6, 0.5)
    oracle = CrownOracle(net)
    limits: list[float | None] = []
    verify = oracle.verify

    def spy(lower, upper, label):
        limits.append(oracle.time_limit)
        return verify(lower, upper, label)

    monkeypatch.setattr(oracle, "verify", spy)
    deadline = time.perf_counter() + 30
    make_search(name).run(Problem(x, int(net.predict(x[None])[0]), Box.unit(6), deadline=deadline), oracle)
    assert limits and all(t is not None and t <= 30 for t in limits)
    assert oracle.time_limit is None  # restored
