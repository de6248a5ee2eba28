"""Branch and bound (oracles/bab.py) on chains: alpha-CROWN at the root, sub-domains
warm-started from their parent, FSB-style branching (graphs: tests/test_bab_graph.py).

What it must do: decide every small query, agree with MILP and with sampled
counterexamples whatever the branching, prove at the root what optimised intermediate
bounds prove, never need more sub-domains with its optimised root than with CROWN's, and,
after an alpha-crown stage in a cascade, start from that stage's bounds without
optimising the root again.
"""

from __future__ import annotations

import numpy as np
import pytest

import oracles.alpha
from oracles import BabOracle, MilpOracle, Verdict, make_oracle
from oracles.crown import AlphaCrownOracle, CrownOracle
from parallelepipedonn.errors import OracleError
from tests.nets import random_network
from tests.test_oracles import random_boxes

NET = random_network(51, [6, 16, 16, 16, 3], scale=1.5)


def _queries(count: int, seed: int, width: float = 0.5) -> list[tuple[np.ndarray, np.ndarray, int]]:
    lower, upper = random_boxes(np.random.default_rng(seed), 6, count, width)
    labels = NET.predict((lower + upper) / 2)
    return [(lo, hi, int(c)) for lo, hi, c in zip(lower, upper, labels)]


@pytest.mark.parametrize("candidates", [1, 3])
def test_every_small_query_is_decided_and_agrees_with_milp(candidates):
    bab, milp = BabOracle(NET, candidates=candidates), MilpOracle(NET)
    for lo, hi, label in _queries(10, 0):
        ours, exact = bab.verify_box(lo, hi, label), milp.verify_box(lo, hi, label)
        assert ours.verdict is not Verdict.UNKNOWN, ours.reason
        assert ours.verdict is exact.verdict, (ours.reason, exact.reason)
        if ours.verdict is Verdict.FALSIFIED:
            cex = ours.counterexample
            assert ((lo <= cex) & (cex <= hi)).all() and NET.misclassified(cex, label)[0]


def test_the_optimised_root_proves_what_alpha_crown_proves_without_branching(monkeypatch):
    monkeypatch.setattr("oracles.alpha.REMEMBERED", 0)  # bab's root optimised by bab, not alpha-crown's remembered
    for lo, hi, label in _queries(40, 1, 0.5):
        crown = CrownOracle(NET).verify_box(lo, hi, label)
        alpha = AlphaCrownOracle(NET, steps=20, lr=0.3).verify_box(lo, hi, label)
        if crown.verdict is Verdict.UNKNOWN and alpha.verified:
            bab = BabOracle(NET, root_steps=20)
            assert bab.verify_box(lo, hi, label).verified and bab.last_nodes == 0
            plain = BabOracle(NET, root_steps=0)
            assert plain.verify_box(lo, hi, label).verified and plain.last_nodes > 0
            return
    pytest.fail("no box that alpha-CROWN proves and CROWN does not")


def test_branching_with_candidates_and_an_optimised_root_needs_no_more_sub_domains():
    counts = {}
    for options in ({"root_steps": 0, "candidates": 1}, {"root_steps": 20, "candidates": 3}):
        bab = BabOracle(NET, **options)
        counts[tuple(options.values())] = total = []
        for lo, hi, label in _queries(8, 2, 0.6):
            answer = bab.verify_box(lo, hi, label)
            total.append(bab.last_nodes if answer.verified else 0)
    assert sum(counts[(20, 3)]) <= sum(counts[(0, 1)])


def test_after_an_alpha_crown_stage_the_root_is_not_optimised_again(monkeypatch):
    optimised = []
    run = oracles.alpha._optimize
    monkeypatch.setattr("oracles.alpha._optimize", lambda *a: optimised.append(1) or run(*a))
    for lo, hi, label in _queries(40, 3, 0.6):
        cascade = make_oracle("alpha-crown+bab", NET)
        count = len(optimised)
        answer = cascade.verify_box(lo, hi, label)
        if answer.verdict is Verdict.VERIFIED and answer.reason.startswith("bab") and cascade.stages[1].last_nodes:
            assert len(optimised) == count + 1  # the alpha-crown stage's only
            assert answer.verdict is MilpOracle(NET).verify_box(lo, hi, label).verdict
            return
    pytest.fail("no box that bab verifies by branching after alpha-crown")


@pytest.mark.parametrize("options", [{"candidates": 0}, {"root_steps": -1}, {"iterates": "float16"}])
def test_bad_options_are_refused(options):
    with pytest.raises(OracleError):
        BabOracle(NET, **options)
