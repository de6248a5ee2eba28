"""The search algorithms' soundness on random tiny networks and inputs (hypothesis): every
box they certify is confirmed by the exact MILP oracle and survives sampling and a PGD
attack, and every counterexample they report is real."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import AttackOracle, MilpOracle, Verdict, make_oracle
from parallelepipedonn.box import Box
from parallelepipedonn.search import Problem, Status, default_oracle, make_search
from tests.nets import random_network
from tests.test_search import assert_robust_everywhere

ALGORITHMS = ("apothem-kary", "apothem-topdown", "box-topdown", "box-maximal", "volume-greedy", "exact")


@settings(max_examples=12)
@given(seed=st.integers(0, 100_000), n=st.integers(2, 5), depth=st.integers(1, 2), width=st.integers(4, 10),
       algorithm=st.sampled_from(ALGORITHMS))
def test_certified_boxes_are_confirmed_by_milp_and_survive_attacks(seed, n, depth, width, algorithm):
    rng = np.random.default_rng(seed)
    net = random_network(seed, [n] + [width] * depth + [3], scale=2.0)
    x = rng.random(n)
    label = int(net.predict(x)[0])
    problem = Problem(x, label, Box.unit(n))
    result = make_search(algorithm, precision=1e-3).run(problem, make_oracle(default_oracle(algorithm), net),
                                                        AttackOracle(net, seed=seed))
    if math.isfinite(result.apothem_upper_bound):  # a real counterexample at that distance
        assert net.misclassified(result.counterexample, label)[0]
        assert problem.distance(result.counterexample) <= result.apothem_upper_bound * (1 + 1e-12)
    if result.status is not Status.CERTIFIED:
        return
    box = result.box
    assert box.contains(x) and problem.domain.contains_box(box)
    assert box.apothem(x, problem.domain) <= result.apothem_upper_bound
    answer = MilpOracle(net).verify_box(box.lower, box.upper, label)
    # the exact oracle proves it, or (a box within its proof margin of the boundary, as
    # `exact` returns) leaves it undecided with a non-negative proven minimum margin
    assert answer.verdict is Verdict.VERIFIED or (answer.verdict is Verdict.UNKNOWN and answer.margin is not None
                                                 and answer.margin > -1e-6), answer.reason
    assert_robust_everywhere(net, box, label, seed)
