"""Branch and bound (oracles/bab.py) on chains: alpha-CROWN at the root, sub-domains
warm-started from their parent, FSB-style branching (graphs: tests/test_bab_graph.py).

What it must do: decide every small query, agree with MILP and with sampled
counterexamples whatever the branching, prove at the root what optimised intermediate
bounds prove, never need more sub-domains with its optimised root than with CROWN's, and,
after an alpha-crown stage in a cascade, start from that stage's bounds without
optimising the root again.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import oracles.alpha
from oracles import BabOracle, MilpOracle, Verdict, make_oracle
from oracles.bab_domains import Nodes, stored
from oracles.crown import AlphaCrownOracle, CrownOracle
from parallelepipedonn.errors import OracleError
from tests.nets import random_network
from tests.test_oracles import random_boxes

NET = random_network(51, [6, 16, 16, 16, 3], scale=1.5)


def _queries(count: int, seed: int, width: float = 0.5) -> list[tuple[np.ndarray, np.ndarray, int]]:
    lower, upper = random_boxes(np.random.default_rng(seed), 6, count, width)
    labels = NET.predict((lower + upper) / 2)
    return [(lo, hi, int(c)) for lo, hi, c in zip(lower, upper, labels)]


@pytest.mark.parametrize("options", [{"candidates": 1}, {"candidates": 3},
                                     {"steps": 20, "lr": 0.01, "beta_lr": 0.03, "lr_decay": 0.98}])
def test_every_small_query_is_decided_and_agrees_with_milp(options):
    bab, milp = BabOracle(NET, **options), MilpOracle(NET)
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


def _slowed(monkeypatch, module: str, name: str, seconds: float) -> list[float]:
    """``module.name`` made ``seconds`` slower per call; returns the calls' start times."""
    import importlib
    import time

    real = getattr(importlib.import_module(module), name)
    calls: list[float] = []

    def slow(*args, **kwargs):
        calls.append(time.perf_counter())
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(f"{module}.{name}", slow)
    return calls


def test_a_time_limit_that_passes_while_the_root_is_bounded_stops_it():
    """The root's passes look at the deadline between layers and chunks of rows: a root of
    tllverifybench's 8192-wide nets took 20-30 s, and a bab stage started with under a
    second left overran a 60 s limit by 39 s. Past the deadline: UNKNOWN, timed out."""
    import time

    lo, hi = np.zeros(6), np.ones(6)  # the whole cube: unstable neurons in every layer
    label = int(NET.predict(np.full((1, 6), 0.5))[0])
    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        calls = _slowed(m, "oracles.bounds", "signed_bounds", 0.2)
        start = time.perf_counter()
        answer = BabOracle(NET, time_limit=0.3).verify_box(lo, hi, label)
        took = time.perf_counter() - start
    assert answer.verdict is Verdict.UNKNOWN and answer.timed_out and "root" in answer.reason, answer.reason
    assert len(calls) == 2 and took < 0.3 + 0.2 + 0.15  # one slowed chunk past the deadline, not all of them


def test_an_interruptible_optimisation_raises_past_its_deadline_the_others_end_with_crowns_bounds():
    import time

    from oracles.alpha import AlphaSettings, optimize_bounds
    from oracles.bounds import BoundsTimedOut, NetworkTensors, intermediate_bounds, margin_spec

    net = NetworkTensors.of(NET)
    lo, hi = torch.zeros(2, 6, dtype=torch.float64), torch.ones(2, 6, dtype=torch.float64)
    spec = margin_spec(3, 0, 2, torch.float64, lo.device)
    past = time.perf_counter() - 1
    with pytest.raises(BoundsTimedOut, match="time limit"):
        intermediate_bounds(net, lo, hi, deadline=past)
    with pytest.raises(BoundsTimedOut):
        optimize_bounds(net, lo, hi, spec, AlphaSettings(deadline=past, interruptible=True))
    crown = optimize_bounds(net, lo, hi, spec, AlphaSettings(steps=0)).final
    assert torch.equal(optimize_bounds(net, lo, hi, spec, AlphaSettings(deadline=past)).final, crown)
    for (a, b), (c, d) in zip(intermediate_bounds(net, lo, hi, deadline=time.perf_counter() + 600),
                              intermediate_bounds(net, lo, hi)):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_crowns_rows_are_chunked_by_the_widest_layer_they_pass_with_the_same_bounds(monkeypatch):
    """A 2-input net with wide hidden layers: chunks sized by the input alone held every row
    of a layer (tllverifybench's N = 64: 2.2 s, in which no deadline was seen)."""
    import oracles.bounds as ob

    net = random_network(8, [2, 300, 300, 300, 3])
    tensors = ob.NetworkTensors.of(net)
    lo, hi = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    whole = ob.intermediate_bounds(tensors, lo, hi)
    chunks = []
    real = ob.backward
    monkeypatch.setattr(ob, "backward", lambda *a, **k: chunks.append(k["rows"].numel()) or real(*a, **k))
    monkeypatch.setattr(ob, "ROW_CHUNK_ELEMENTS", 2 * 300 * 16)  # 16 rows of both sides (32 of one) through 300
    for (a, b), (c, d) in zip(ob.intermediate_bounds(tensors, lo, hi), whole):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert chunks and max(chunks) <= 32 < sum(chunks)


@pytest.mark.parametrize("options", [{"candidates": 0}, {"root_steps": -1}, {"iterates": "float16"}, {"lr": 0},
                                     {"beta_lr": -0.1}, {"lr_decay": 0}, {"lr_decay": 1.5}])
def test_bad_options_are_refused(options):
    with pytest.raises(OracleError):
        BabOracle(NET, **options)


def test_a_sub_domains_refined_bounds_hold_where_its_splits_hold_and_tighten_later_layers():
    """After splits, the deeper layers' ReLU input bounds are computed again (float32 sound
    passes): every sampled point of the box that satisfies the splits has its ReLU inputs
    inside them, and the splits make some later bound strictly tighter than the tree's."""
    rng = np.random.default_rng(7)
    bab = BabOracle(NET, root_steps=0)
    tightened = checked = 0
    for lo, hi, label in _queries(30, 4, 0.6):
        trees = bab._trees(torch.tensor(lo)[None], torch.tensor(hi)[None], label, math.inf)
        if trees is None:
            continue
        count = len(trees.target)
        phases = [torch.zeros(count, u.shape[1], dtype=torch.int8) for u in trees.unstable]
        for layer in (0, 1):  # split two unstable neurons of each of the first two layers
            for t in range(count):
                idx = trees.unstable[layer][t].nonzero()[:, 0]
                pick = idx[torch.from_numpy(rng.permutation(idx.numel())[:2])]
                phases[layer][t, pick] = torch.tensor(rng.choice([-1, 1], pick.numel()), dtype=torch.int8)
        lower, upper = stored(trees.bounds)
        nodes = Nodes(phases, [s.float() for s in trees.slopes], [torch.zeros_like(s, dtype=torch.float32)
                                                                    for s in trees.slopes],
                       torch.arange(count), lower, upper, torch.ones(count, dtype=torch.long))
        refined = bab._refined_bounds(nodes, trees)
        for t in range(count):
            box_lo, box_hi = trees.lower[t].numpy(), trees.upper[t].numpy()
            pts = box_lo + rng.random((20000, box_lo.size)) * (box_hi - box_lo)
            z, ok = [], np.ones(len(pts), dtype=bool)
            a = pts
            for layer, affine in enumerate(NET.affines[:-1]):
                z.append(a @ affine.weight.T + affine.bias)
                ph = phases[layer][t].numpy()
                ok &= ((z[-1] >= 0) | (ph <= 0)).all(axis=1) & ((z[-1] <= 0) | (ph >= 0)).all(axis=1)
                a = np.maximum(z[-1], 0)
            if not ok.any():  # the splits leave no sampled point (maybe none at all)
                continue
            checked += int(ok.sum())
            for layer, (lb, ub) in enumerate(refined):
                inside = z[layer][ok]
                assert (inside >= lb[t].numpy() - 1e-12).all() and (inside <= ub[t].numpy() + 1e-12).all()
                if layer >= 1:
                    tree_lb, tree_ub = trees.bounds[layer][0][t], trees.bounds[layer][1][t]
                    tightened += int(((lb[t] > tree_lb) | (ub[t] < tree_ub)).sum())
    assert tightened > 0 and checked > 1000
