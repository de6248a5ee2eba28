"""Every backend against every other, and the complete ones against exhaustive sampling.

No backend may say VERIFIED where another found a confirmed counterexample; complete
backends must decide every small query and agree with a dense grid; bounds must be
ordered crown <= alpha-crown <= the true minimum margin.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import parallelepipedonn as ppn
from oracles import (
    AlphaCrownOracle,
    AttackOracle,
    BabOracle,
    CrownOracle,
    MilpOracle,
    Verdict,
    lirpa_available,
    make_oracle,
    marabou_available,
    min_adversarial_distance,
)
from oracles.marabou import SNAPPED_UNSAT, UNTRUSTED_UNSAT, snaps_narrow_ranges
from parallelepipedonn.box import Box
from tests.nets import random_conv_network, random_network
from tests.test_oracles import random_boxes, sampled_margins

BACKENDS = ["crown", "alpha-crown", "milp", "bab", "attack", "cascade"]
if marabou_available():
    BACKENDS.append("marabou")
if lirpa_available():
    BACKENDS.append("lirpa")


def _networks():
    yield "dense", random_network(31, [5, 10, 10, 3], scale=1.5)
    yield "deep", random_network(32, [4, 8, 8, 8, 3], scale=1.5)
    yield "conv", random_conv_network(33)


@pytest.mark.parametrize("kind, net", list(_networks()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_backend_verifies_what_another_falsifies(kind, net):
    rng = np.random.default_rng(7)
    n = net.n_inputs
    lower, upper = random_boxes(rng, n, 12, 0.6)
    label = int(net.predict((lower + upper) / 2)[0])
    answers = {name: make_oracle(name, net).verify(lower, upper, label) for name in BACKENDS}
    for b in range(len(lower)):
        verdicts = {name: ans[b].verdict for name, ans in answers.items()}
        falsifiers = [name for name, v in verdicts.items() if v is Verdict.FALSIFIED]
        provers = [name for name, v in verdicts.items() if v is Verdict.VERIFIED]
        assert not (falsifiers and provers), f"box {b}: {provers} verified, {falsifiers} falsified"
        for name in falsifiers:
            cex = answers[name][b].counterexample
            assert ((cex >= lower[b]) & (cex <= upper[b])).all() and net.margins(cex, label)[0] <= 0
        for name in ("milp", "bab", "cascade"):  # complete: decide every box of this size
            assert verdicts[name] is not Verdict.UNKNOWN, f"{name} left box {b} undecided"


def _grid(lo: np.ndarray, hi: np.ndarray, k: int = 121) -> np.ndarray:
    axes = [np.linspace(a, b, k) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, lo.size)


@pytest.mark.parametrize("seed", range(6))
def test_complete_backends_agree_with_an_exhaustive_grid_on_tiny_nets(seed):
    net = random_network(100 + seed, [2, 8, 8, 3], scale=2.0)
    rng = np.random.default_rng(seed)
    oracles = [MilpOracle(net), BabOracle(net)] + ([make_oracle("marabou", net)] if marabou_available() else [])
    for _ in range(6):
        c = rng.random(2)
        r = rng.random() * 0.4
        lo, hi = np.clip(c - r, 0, 1), np.clip(c + r, 0, 1)
        label = int(net.predict(c)[0])
        grid_robust = bool((net.margins(_grid(lo, hi), label) > 0).all())
        for oracle in oracles:
            a = oracle.verify_box(lo, hi, label)
            if a.reason in (UNTRUSTED_UNSAT, SNAPPED_UNSAT):  # marabou's unsat, not a proof (deeper nets, its build)
                assert grid_robust
                continue
            assert a.verdict is not Verdict.UNKNOWN, (oracle.name, a.reason)
            if not grid_robust:
                assert a.verdict is Verdict.FALSIFIED, f"{oracle.name} missed a grid counterexample"
            if a.verdict is Verdict.FALSIFIED and grid_robust:
                # the counterexample lies between grid points: it must still be real
                assert net.margins(a.counterexample, label)[0] <= 0


@pytest.mark.parametrize("seed", range(4))
def test_crown_below_alpha_crown_below_the_sampled_minimum(seed):
    rng = np.random.default_rng(seed)
    net = random_network(200 + seed, [6, 12, 12, 12, 4])
    lower, upper = random_boxes(rng, 6, 16, 0.4)
    label = int(rng.integers(4))
    crown = CrownOracle(net).margin_lower_bounds(lower, upper, label)
    alpha = AlphaCrownOracle(net, steps=30).margin_lower_bounds(lower, upper, label)
    sampled = sampled_margins(net, lower, upper, label, rng)
    assert (crown <= alpha + 1e-12).all()
    assert (alpha <= sampled + 1e-12).all()
    assert (alpha > crown + 1e-6).any(), "alpha-CROWN never improved on CROWN"


def test_milp_coordinate_extremes_contain_the_sampled_class_region():
    net = random_network(301, [2, 10, 10, 3], scale=2.0)
    dom = Box.unit(2)
    pts = _grid(dom.lower, dom.upper, 201)
    pred = net.predict(pts)
    milp = MilpOracle(net)
    for label in range(3):
        members = pts[pred == label]
        if not len(members):
            continue
        for i in range(2):
            top = milp.coordinate_extreme(label, i, True, dom)
            bottom = milp.coordinate_extreme(label, i, False, dom)
            assert top.bound >= members[:, i].max() - 1e-9 and bottom.bound <= members[:, i].min() + 1e-9
            for e in (top, bottom):
                if e.witness is not None:
                    assert net.margins(e.witness, label)[0] >= 0
            # the grid's extremes are within one grid step of the exact ones
            assert top.bound <= members[:, i].max() + 1 / 200 + 2e-4


def test_milp_class_region_query():
    net = random_network(302, [2, 10, 10, 3], scale=2.0)
    dom = Box.unit(2)
    milp = MilpOracle(net)
    pts = _grid(dom.lower, dom.upper, 101)
    label = int(np.bincount(net.predict(pts)).argmax())
    members = pts[net.predict(pts) == label]
    assert milp.class_region(dom.lower, dom.upper, label, dom).verdict.value == "none"
    small = members.mean(axis=0)
    ans = milp.class_region(small - 0.01, small + 0.01, label, dom)
    assert ans.verdict.value == "witness"
    w = ans.witness
    assert dom.contains(w) and net.margins(w, label)[0] >= 0 and ((w < small - 0.01) | (w > small + 0.01)).any()


@pytest.mark.parametrize("seed", range(3))
def test_exact_distance_agrees_between_milp_and_bab_and_brackets_the_grid(seed):
    net = random_network(400 + seed, [2, 8, 8, 3], scale=2.0)
    x = np.array([0.4, 0.6])
    label = int(net.predict(x)[0])
    dom = Box.unit(2)
    results = [min_adversarial_distance(o, x, label, dom, rel_precision=1e-4, falsifier=AttackOracle(net))
               for o in (MilpOracle(net), BabOracle(net))]
    for d in results:
        # closes to the precision, except within the solver's proof margin (1e-4 on the
        # margin) of the boundary: on these tiny, flat nets that is a few 1e-4 of the radius
        assert d.lower <= d.upper
        assert np.isinf(d.upper) or d.upper - d.lower <= 5e-4 * d.upper
    if np.isfinite(results[0].upper):
        assert results[0].upper == pytest.approx(results[1].upper, rel=5e-4)
        assert max(r.lower for r in results) <= min(r.upper for r in results)
        pts = _grid(dom.lower, dom.upper, 401)
        bad = pts[net.margins(pts, label) <= 0]
        grid_min = np.abs(bad - x).max(axis=1).min()
        assert results[0].lower <= grid_min + 1e-12  # the proven radius never exceeds a real counterexample
        assert grid_min <= results[0].upper + 2 / 400  # and the grid finds one about as close


def test_time_outs_and_budgets_are_unknown_never_verified():
    net = random_network(500, [20, 40, 40, 40, 3], scale=1.0)
    x = np.full(20, 0.5)
    label = int(net.predict(x)[0])
    lo, hi = np.zeros(20), np.ones(20)
    bab = BabOracle(net, max_nodes=1)
    a = bab.verify_box(lo, hi, label)
    assert a.verdict in (Verdict.FALSIFIED, Verdict.UNKNOWN)
    if a.verdict is Verdict.UNKNOWN:
        assert a.timed_out and bab.stats.timeouts == 1
    milp = MilpOracle(net, time_limit=0.01)
    m = milp.verify_box(lo, hi, label)
    assert m.verdict in (Verdict.FALSIFIED, Verdict.UNKNOWN)


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed")
def test_marabou_agrees_with_milp_on_small_nets():
    net = random_network(600, [4, 8, 3], scale=1.5)  # one hidden layer: see UNTRUSTED_UNSAT
    rng = np.random.default_rng(6)
    lower, upper = random_boxes(rng, 4, 10, 0.5)
    label = int(net.predict((lower + upper) / 2)[0])
    mar = make_oracle("marabou", net).verify(lower, upper, label)
    mil = MilpOracle(net).verify(lower, upper, label)
    for a, b in zip(mar, mil):
        if a.reason == SNAPPED_UNSAT:  # this build's unsat proves nothing: milp proves the box
            assert b.verified
            continue
        assert a.verdict is not Verdict.UNKNOWN
        assert a.verified == b.verified


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed")
@pytest.mark.parametrize("width, slope, margin", [(9e-6, 1000.0, 0.005), (9.9e-6, 20.0, 1.5e-4)])
def test_marabou_never_verifies_a_box_narrower_than_its_fixing_threshold_holding_a_misclassified_point(
        width, slope, margin):
    """maraboupy 2.0.0's preprocessor fixes an input whose range is under 1e-5 wide at its
    lower bound, where the margin is positive; at the upper bound it is not (was VERIFIED,
    also with ordinary weights: slope 20). One hidden layer: the depth rule did not apply."""
    from parallelepipedonn.network import Affine, Network, ReLU

    net = Network.from_layers([1], [Affine(np.array([[slope]]), np.zeros(1)), ReLU(),
                                    Affine(np.array([[-1.0], [0.0]]), np.array([margin, 0.0]))])
    lo, hi = np.zeros(1), np.array([width])
    assert net.exact_margin(lo, 0) > 0 > net.exact_margin(hi, 0)
    oracle = make_oracle("marabou", net)
    answer = oracle.verify_box(lo, hi, 0)
    assert answer.verdict is not Verdict.VERIFIED
    assert snaps_narrow_ranges() is (answer.reason == SNAPPED_UNSAT)  # the installed wheel snaps
    assert oracle.settings()["unsat_is_proof"] is not snaps_narrow_ranges()
    oracle.close()


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed")
def test_marabou_is_complete_only_where_its_unsat_is_a_proof():
    """A build whose unsat is no proof (the 2.0.0 wheel, or a deeper net) proves no more
    than CROWN: it must not be taken as complete (``exact`` refuses it; ``certify``'s
    complete epsilon check is not skipped for it)."""
    from parallelepipedonn.errors import ConfigError
    from parallelepipedonn.search import make_search
    from parallelepipedonn.search.base import Problem

    x = np.full(2, 0.5)

    for net in (random_network(610, [2, 8, 3]), random_network(611, [2, 8, 8, 3])):
        oracle = make_oracle("marabou", net)
        assert oracle.capabilities.complete is oracle.settings()["unsat_is_proof"]
        assert make_oracle("crown+marabou", net).complete is oracle.complete
        if not oracle.complete:
            with pytest.raises(ConfigError, match="complete oracle"):
                make_search("exact").run(Problem(x, int(net.predict(x)[0]), Box.unit(2)), oracle)
        oracle.close()


@pytest.mark.skipif(not lirpa_available(), reason="auto_LiRPA is not installed (optional: install it from source)")
def test_lirpa_crown_matches_our_crown_and_its_alpha_crown_is_tighter():
    net = random_network(700, [6, 16, 16, 3])
    rng = np.random.default_rng(7)
    lower, upper = random_boxes(rng, 6, 8, 0.3)
    ours = CrownOracle(net).margin_lower_bounds(lower, upper, 0)
    theirs = make_oracle("lirpa", net, method="crown").margin_lower_bounds(lower, upper, 0)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)
    alpha = make_oracle("lirpa", net, method="alpha-crown").margin_lower_bounds(lower, upper, 0)
    assert (alpha >= ours - 1e-6).all()
    assert (alpha <= sampled_margins(net, lower, upper, 0, rng) + 1e-9).all()


@pytest.mark.skipif(not lirpa_available(), reason="auto_LiRPA is not installed (optional: install it from source)")
def test_lirpa_alpha_crown_stops_at_its_time_limit_and_says_so(capsys):
    """auto_LiRPA's alpha-CROWN ran every step whatever the time limit (42 s for a 0.5 s
    limit); it stops at the limit now, an unproven box is a time-out, and auto_LiRPA's
    message about stopping does not reach standard output."""
    import time

    net = random_network(702, [20, 64, 64, 64, 10])
    rng = np.random.default_rng(3)
    lower, upper = random_boxes(rng, 20, 8, 0.8)
    oracle = make_oracle("lirpa", net, method="alpha-crown", alpha_steps=100000, time_limit=0.3)
    start = time.perf_counter()
    answers = oracle.verify(lower, upper, 0)
    assert time.perf_counter() - start < 10
    assert all(a.timed_out for a in answers if not a.verified) and any(not a.verified for a in answers)
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(not lirpa_available(), reason="auto_LiRPA is not installed (optional: install it from source)")
@pytest.mark.parametrize("options", [{"alpha_steps": 0}, {"alpha_steps": 2.5}, {"alpha_steps": True},
                                     {"alpha_steps": "abc"}, {"method": None}, {"method": "beta"}])
def test_lirpa_refuses_bad_options_when_built(options):
    from parallelepipedonn.errors import OracleError

    with pytest.raises(OracleError, match="lirpa"):
        make_oracle("lirpa", random_network(703, [2, 4, 3]), **options)


@pytest.mark.skipif(not lirpa_available(), reason="auto_LiRPA is not installed (optional: install it from source)")
def test_lirpa_charges_coefficients_below_the_normal_range_times_huge_inputs():
    """8000 products ``1.49 * -2^-1074`` each lose ``0.49 * 2^-1074`` on the subnormal grid;
    times inputs of 8.9e307 that is 3.4e-12 of auto_LiRPA's bound, above the exact margin
    (-1e-13) by more than a flat slack (was VERIFIED, margin 2.3e-12)."""
    from fractions import Fraction

    from parallelepipedonn.network import Affine, Network, ReLU

    k, n, sub, big = 8000, 2, 5e-324, 8.9e307
    g_top = Fraction(1e-12) - n * Fraction(sub) * Fraction(big)  # the hidden neurons at the box's point
    last = np.array([[1.49] * k, [0.0] * k])
    net = Network.from_layers([n], [Affine(np.eye(n), np.zeros(n)), ReLU(),
                                    Affine(np.full((k, n), -sub), np.full(k, 1e-12)), ReLU(),
                                    Affine(last, np.array([-float(k * Fraction(1.49) * g_top) - 1e-13, 0.0]))])
    p = np.full(n, big)
    assert net.exact_margin(p, 0) < 0
    for method in ("crown", "alpha-crown"):
        assert make_oracle("lirpa", net, method=method).verify_box(p, p, 0).verdict is not Verdict.VERIFIED


@pytest.mark.skipif(not lirpa_available(), reason="auto_LiRPA is not installed (optional: install it from source)")
@pytest.mark.parametrize("a", [1 + 9.9e-6, 1.0])
def test_lirpa_refuses_a_network_auto_lirpa_rewrites(a):
    """auto_LiRPA fuses Linear -> ReLU -> Linear -> ReLU into one Linear -> ReLU where the
    second layer undoes the first's pair of rows ``y, -y`` up to ``torch.allclose`` (relative
    1e-5): with ``-a y``, ``a = 1 + 9.9e-6``, it bounded ``relu(y + 1)`` and verified a box
    whose exact margin at ``x = -0.6`` is -4.9e-6 (an adversarial review). The adapter
    refuses any network whose layers auto_LiRPA changed — the exact identity (``a = 1``)
    included, which it would not have to, but nothing smaller than the whole rewrite is
    checked; ``crown`` stays sound on it."""
    from parallelepipedonn.errors import OracleError
    from parallelepipedonn.network import Affine, Network, ReLU

    net = Network.from_layers([1], [Affine(np.array([[1.0], [-a]]), np.zeros(2)), ReLU(),
                                    Affine(np.array([[1.0, -1.0]]), np.array([1.0])), ReLU(),
                                    Affine(np.array([[1.0], [0.0]]), np.array([-0.4 + 1e-6, 0.0]))])
    lo, hi = np.array([-0.6]), np.array([-0.4])
    assert (net.exact_margin(lo, 0) < 0) is (a != 1.0)
    with pytest.raises(OracleError, match="rewrote the network"):
        make_oracle("lirpa", net)
    assert make_oracle("crown", net).verify_box(lo, hi, 0).verdict is (
        Verdict.UNKNOWN if a != 1.0 else Verdict.VERIFIED)


def test_cascade_asks_later_stages_only_about_unknown_boxes():
    net = random_network(800, [5, 10, 10, 3])
    rng = np.random.default_rng(8)
    lower, upper = random_boxes(rng, 5, 20, 0.5)
    label = 0
    oracle = make_oracle("crown+milp", net)
    oracle.verify(lower, upper, label)
    crown, milp = oracle.stages
    assert milp.stats.boxes == crown.stats.unknown
    assert oracle.complete and oracle.sound


def test_vertices_of_a_small_box_agree_with_milp():
    net = random_network(900, [3, 6, 3], scale=3.0)
    lo, hi = np.array([0.2, 0.3, 0.1]), np.array([0.6, 0.5, 0.4])
    label = int(net.predict((lo + hi) / 2)[0])
    vertices = np.array(list(itertools.product(*zip(lo, hi))))
    a = MilpOracle(net).verify_box(lo, hi, label)
    if (net.margins(vertices, label) <= 0).any():
        assert a.verdict is Verdict.FALSIFIED


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed")
def test_marabou_survives_its_worker_process_dying():
    net = random_network(601, [3, 6, 3], scale=2.0)
    oracle = make_oracle("marabou", net)
    lo, hi = np.zeros(3), np.ones(3)
    label = int(net.predict(np.full(3, 0.5))[0])
    first = oracle.verify_box(lo, hi, label)
    assert oracle._worker.proc is not None, "CROWN decided the box: Marabou was not asked"
    oracle._worker.proc.kill()  # as if Marabou had ended its process during a query
    during = oracle.verify_box(lo, hi, label)
    assert during.verdict is first.verdict or (during.verdict is Verdict.UNKNOWN and "exited" in during.reason)
    again = oracle.verify_box(lo, hi, label)  # a new worker answers
    assert again.verdict is first.verdict and first.verdict is not Verdict.UNKNOWN
    oracle.close()


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed")
def test_marabou_never_verifies_a_box_with_a_confirmed_counterexample_on_the_deep_default_net():
    """maraboupy 2.0 answers unsat on such boxes of the 784-100-100-10 net: the adapter
    must not turn that into VERIFIED."""
    net = ppn.load_onnx(ppn.default_model_path("mnist", "deep"))
    x, y = ppn.load_dataset("mnist", "test")[2]
    lo, hi = np.clip(x.reshape(-1) - 0.08, 0, 1)[None], np.clip(x.reshape(-1) + 0.08, 0, 1)[None]
    attack = AttackOracle(net, seed=0).verify(lo, hi, y)[0]
    assert attack.verdict is Verdict.FALSIFIED
    assert make_oracle("marabou", net, time_limit=30).verify(lo, hi, y)[0].verdict is not Verdict.VERIFIED
