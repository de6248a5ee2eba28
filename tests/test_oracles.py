"""Oracles: proofs are sound, counterexamples are real, UNKNOWN never becomes VERIFIED."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import Answer, AttackOracle, CrownOracle, Oracle, Verdict, make_oracle, oracle_entries, register_oracle
from oracles.precision import box_tensors
from parallelepipedonn.errors import ConfigError, LabelError, OracleError
from tests.graph_nets import small_cnn
from tests.nets import random_network


def random_boxes(rng: np.random.Generator, n: int, count: int, max_width: float = 0.5):
    centers = rng.random((count, n))
    half = rng.random((count, 1)) * max_width / 2 * rng.random((count, n))
    return np.clip(centers - half, 0, 1), np.clip(centers + half, 0, 1)


def sampled_margins(net, lower, upper, label, rng, k=400):
    """Per box, per other class j: the smallest sampled logit_label - logit_j (samples and vertices)."""
    out = []
    for lo, hi in zip(lower, upper):
        pts = np.concatenate([lo + rng.random((k, lo.size)) * (hi - lo), np.where(rng.random((k, lo.size)) < 0.5, lo,
                                                                                   hi)])
        logits = net.forward(pts)
        out.append((logits[:, [label]] - np.delete(logits, label, axis=1)).min(axis=0))
    return np.array(out)


@pytest.mark.parametrize("net", [random_network(3, [5, 8, 3]), small_cnn()],
                         ids=["chain", "graph"])
def test_margin_bounds_check_their_boxes_as_verify_does(net):
    """``margin_lower_bounds`` takes what ``verify`` takes (no boxes, one box as a vector)
    and refuses what it refuses (an empty box, an unknown label) with typed errors, never
    a bound for a box that has no points."""
    oracle, n, k = CrownOracle(net), net.n_inputs, net.n_classes - 1
    assert oracle.margin_lower_bounds(np.zeros((0, n)), np.zeros((0, n)), 0).shape == (0, k)
    one = oracle.margin_lower_bounds(np.zeros(n), np.full(n, 0.1), 0)
    assert one.shape == (1, k) and (one == oracle.margin_lower_bounds(np.zeros((1, n)), np.full((1, n), 0.1), 0)).all()
    with pytest.raises(OracleError, match="lower > upper"):
        oracle.margin_lower_bounds(np.ones((1, n)), np.zeros((1, n)), 0)
    with pytest.raises(LabelError):
        oracle.margin_lower_bounds(np.zeros((1, n)), np.ones((1, n)), -1)
    with pytest.raises(OracleError, match="shape"):
        oracle.margin_lower_bounds(np.zeros((1, n + 1)), np.ones((1, n + 1)), 0)


@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3))
def test_crown_bounds_are_below_every_sampled_margin(seed, depth):
    rng = np.random.default_rng(seed)
    net = random_network(seed, [5] + [8] * depth + [3])
    lower, upper = random_boxes(rng, 5, 16)
    label = int(rng.integers(3))
    bounds = CrownOracle(net).margin_lower_bounds(lower, upper, label)
    assert (bounds <= sampled_margins(net, lower, upper, label, rng) + 1e-12).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_center_term_reassociated_by_the_pass_is_within_the_charged_error(dtype):
    """``lam @ (W_0 c)`` (the pass's ``center_value``) and ``(lam @ W_0) @ c`` are the same
    sums in another order: they differ by less than the bound's charged rounding error, on
    weights spanning many orders of magnitude."""
    import torch

    import oracles.bounds as ob
    from parallelepipedonn.network import Affine, Network, ReLU

    rng = np.random.default_rng(0)
    layers: list = []
    for a in random_network(3, [12, 16, 16, 4]).affines:  # weights from 1e-6 to 1e6
        layers += [Affine(a.weight * 10.0 ** rng.integers(-6, 7, a.weight.shape), a.bias), ReLU()]
    net = Network.from_layers((12,), layers[:-1], name="spread")
    lower, upper = random_boxes(rng, 12, 8)
    lo, hi = box_tensors(lower, upper, getattr(torch, dtype))
    tensors = ob.NetworkTensors.of(net, dtype=getattr(torch, dtype))
    image: list = []  # W_0 c as the intermediate bounds compute it: half of (u + l) W_0^T
    relax = [ob.relu_relaxation(*b) for b in ob.intermediate_bounds(tensors, lo, hi, image_out=image)]
    spec = ob.margin_spec(4, 1, 8, lo.dtype, lo.device)
    with_center = ob.backward(tensors, spec, tensors.depth - 1, relax, ob.input_scale(lo, hi), center=(hi + lo) / 2)
    plain = (with_center.coef.double() @ ((hi + lo) / 2).double().unsqueeze(-1)).squeeze(-1)
    assert (torch.abs(with_center.center_value.double() - plain) <= with_center.error.double()).all()
    halved = ob.backward(tensors, spec, tensors.depth - 1, relax, ob.input_scale(lo, hi), center_image=image[0])
    assert (torch.abs(halved.center_value.double() - plain) <= halved.error.double()).all()
    without = ob.backward(tensors, spec, tensors.depth - 1, relax, ob.input_scale(lo, hi))
    both = ob.concretize(with_center, lo, hi), ob.concretize(without, lo, hi)
    assert (torch.abs(both[0] - both[1]).double() <= 2 * with_center.error.double()).all()
    assert (both[0].double().numpy() <= sampled_margins(net, lower, upper, 1, rng) + 1e-12).all()


def test_crown_is_exact_on_a_point(rng):
    net = random_network(7, [6, 10, 10, 4])
    x = rng.random((5, 6))
    label = 2
    bounds = CrownOracle(net).margin_lower_bounds(x, x, label)
    logits = net.forward(x)
    np.testing.assert_allclose(bounds, logits[:, [label]] - np.delete(logits, label, axis=1), atol=1e-8)


def test_crown_bounds_of_a_box_do_not_depend_on_the_other_boxes_of_the_batch(rng):
    """Each box tightens its own unstable neurons (oracles.bounds.intermediate_bounds): a
    batch gives every box the bounds it gets alone (up to the order of summation)."""
    net = random_network(9, [6, 16, 16, 16, 4])
    lower, upper = random_boxes(rng, 6, 24, 0.4)
    oracle = CrownOracle(net)
    batch = oracle.margin_lower_bounds(lower, upper, 1)
    alone = np.concatenate([oracle.margin_lower_bounds(lower[i:i + 1], upper[i:i + 1], 1) for i in range(24)])
    np.testing.assert_allclose(batch, alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("boxes", [1, 5, 16, 17, 40, 100])
@pytest.mark.parametrize("order", ["sorted", "shuffled", "gaps"])
def test_each_rows_dot_product_reads_its_own_boxs_vector(boxes, order):
    """``rows_dot`` (the concretisation's and the pass's products of each row with its box's
    radius, centre or terms) multiplies several boxes' vectors at once and keeps each row's
    own: the products of the rows with their gathered vectors, up to the order of the sums."""
    import torch

    from oracles.rows import rows_dot

    gen = torch.Generator().manual_seed(boxes)
    rows = torch.randint(0, boxes, (3 * boxes + 7,), generator=gen).sort().values
    if order == "shuffled":
        rows = rows[torch.randperm(rows.numel(), generator=gen)]
    elif order == "gaps":  # boxes without rows, at both ends and between
        rows = rows[(rows % 3 == 1) & (rows < boxes - 1)]
    a = torch.randn(rows.numel(), 2, 30, dtype=torch.float64, generator=gen)
    v = torch.randn(boxes, 30, dtype=torch.float64, generator=gen)
    expected = (a * v[rows].unsqueeze(1)).sum(-1)
    got = rows_dot(a, v, rows)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # differentiable, as input-split's gradient steps need it
    a.requires_grad_(True)
    v.requires_grad_(True)
    rows_dot(a, v, rows).sum().backward()
    torch.testing.assert_close(v.grad, torch.zeros_like(v).index_add_(0, rows, a.detach().sum(1)), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_side_first_gives_the_bounds_of_both_sides_at_once_with_fewer_rows(dtype, rng, monkeypatch):
    """Above ONE_SIDE_MIN unstable neurons, CROWN bounds first the side each neuron's value
    at its box's center favours, and the other side only where the neuron is still
    unstable: fewer rows, and the same bounds as both sides in one pass (which drops, as
    one side first never computes it, the other side of a neuron a side proved stable:
    it keeps its interval bound). Every bound holds at sampled points."""
    import torch

    import oracles.bounds as ob

    rows = {"one": 0, "both": 0}
    signed = ob.signed_bounds

    def counted(net, k, box, neuron, side, *rest):
        rows[mode] += side.numel()
        return signed(net, k, box, neuron, side, *rest)

    monkeypatch.setattr(ob, "signed_bounds", counted)
    net = random_network(5, [8, 24, 24, 24, 3])
    lower, upper = random_boxes(rng, 8, 12, 0.3)
    tensors = ob.NetworkTensors.of(net, dtype=getattr(torch, dtype))
    lo, hi = box_tensors(lower, upper, tensors.dtype)
    bounds = {}
    for mode, least in (("one", 0), ("both", 10**9)):
        monkeypatch.setattr(ob, "ONE_SIDE_MIN", least)
        bounds[mode] = ob.intermediate_bounds(tensors, lo, hi)
        for k in range(1, len(bounds[mode])):  # the interval bounds from the layer before
            (l_p, u_p), (l_k, u_k) = bounds[mode][k - 1], bounds[mode][k]
            l_i, u_i = ob._interval_affine(tensors, k, l_p.clamp(min=0), u_p.clamp(min=0))
            settled = (l_i < 0) & (u_i > 0) & ((l_k >= 0) | (u_k <= 0))
            assert torch.equal(torch.where(l_k >= 0, u_k, u_i)[settled], u_i[settled])
            assert torch.equal(torch.where(u_k <= 0, l_k, l_i)[settled], l_i[settled])
    assert 0 < rows["one"] < rows["both"]
    tol = 1e-12 if dtype == "float64" else 1e-5  # the same sums, in other batches of rows
    for (l1, u1), (l2, u2) in zip(bounds["one"], bounds["both"]):
        np.testing.assert_allclose(l1.double().numpy(), l2.double().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(u1.double().numpy(), u2.double().numpy(), rtol=tol, atol=tol)
    # every pre-activation at sampled points of each box lies within its bounds
    pts = lower[:, None] + rng.random((12, 300, 8)) * (upper - lower)[:, None]
    z = pts
    for i, (l_k, u_k) in enumerate(bounds["one"]):
        a = net.affines[i]
        z = z @ a.weight.T + a.bias
        assert (z >= l_k.double().numpy()[:, None]).all() and (z <= u_k.double().numpy()[:, None]).all()
        z = np.maximum(z, 0)


def test_crown_ibp_intermediate_bounds_are_looser_but_sound(rng):
    net = random_network(8, [5, 12, 12, 12, 3])
    lower, upper = random_boxes(rng, 5, 32, 0.3)
    tight = CrownOracle(net).margin_lower_bounds(lower, upper, 0)
    loose = CrownOracle(net, intermediate="ibp").margin_lower_bounds(lower, upper, 0)
    assert (loose <= tight + 1e-9).all()
    assert (tight <= sampled_margins(net, lower, upper, 0, rng) + 1e-12).all()


@given(seed=st.integers(0, 10_000))
def test_attack_counterexamples_are_real_and_inside_their_box(seed):
    rng = np.random.default_rng(seed)
    net = random_network(seed, [4, 8, 8, 3], scale=2.0)
    lower, upper = random_boxes(rng, 4, 24, 1.0)
    label = int(rng.integers(3))
    attack, crown = AttackOracle(net, seed=seed), CrownOracle(net)
    for a, c, lo, hi in zip(attack.verify(lower, upper, label), crown.verify(lower, upper, label), lower, upper):
        assert a.verdict is not Verdict.VERIFIED
        if a.verdict is Verdict.FALSIFIED:
            assert ((a.counterexample >= lo) & (a.counterexample <= hi)).all()
            assert net.margins(a.counterexample, label)[0] <= 0
            assert c.verdict is not Verdict.VERIFIED, "CROWN proved a box the attack broke"


def test_attack_finds_the_obvious_counterexample():
    net = random_network(3, [4, 8, 3])
    x = np.full(4, 0.5)
    other = int(np.argsort(net.forward(x)[0])[-2])
    ans = AttackOracle(net).verify_box(np.zeros(4), np.ones(4), other)
    assert ans.verdict is Verdict.FALSIFIED  # the predicted class at x beats `other` at x


def test_attack_is_deterministic_for_a_seed(rng):
    net = random_network(4, [6, 10, 3])
    lower, upper = random_boxes(rng, 6, 8, 1.0)
    a = [x.counterexample for x in AttackOracle(net, seed=5).verify(lower, upper, 1)]
    b = [x.counterexample for x in AttackOracle(net, seed=5).verify(lower, upper, 1)]
    for u, v in zip(a, b):
        assert (u is None and v is None) or np.array_equal(u, v)


# -- the base class keeps backends honest -------------------------------------------------------------
class _Scripted(Oracle):
    """A backend that answers what the test scripts (to test the base class's checks)."""

    name = "scripted"

    def __init__(self, network, answers=None, error=None, unsound=False):
        super().__init__(network)
        self.answers, self.error = answers, error
        if unsound:
            self.sound = False  # type: ignore[misc]

    def _verify(self, lower, upper, label):
        if self.error:
            raise self.error
        return self.answers


@pytest.fixture
def net():
    return random_network(5, [3, 6, 3])


def test_unconfirmed_counterexample_becomes_unknown(net):
    x = np.full(3, 0.5)
    label = int(net.predict(x)[0])
    oracle = _Scripted(net, [Answer(Verdict.FALSIFIED, counterexample=x)])
    ans = oracle.verify_box(x, x, label)
    assert ans.verdict is Verdict.UNKNOWN and "not confirmed" in ans.reason
    assert oracle.stats.rejected_counterexamples == 1


def test_counterexample_outside_the_box_becomes_unknown(net):
    x = np.full(3, 0.5)
    other = int(np.argsort(net.forward(x)[0])[-2])
    oracle = _Scripted(net, [Answer(Verdict.FALSIFIED, counterexample=x)])
    ans = oracle.verify_box(x + 0.1, x + 0.2, other)
    assert ans.verdict is Verdict.UNKNOWN and "outside the box" in ans.reason


def test_backend_failure_is_unknown_not_verified(net):
    oracle = _Scripted(net, error=RuntimeError("solver crashed"))
    ans = oracle.verify(np.zeros((2, 3)), np.ones((2, 3)), 0)
    assert [a.verdict for a in ans] == [Verdict.UNKNOWN] * 2
    assert "solver crashed" in ans[0].reason and oracle.stats.errors == 1


def test_an_unsound_backend_cannot_verify(net):
    oracle = _Scripted(net, [Answer(Verdict.VERIFIED)], unsound=True)
    assert oracle.verify_box(np.zeros(3), np.ones(3), 0).verdict is Verdict.UNKNOWN


def test_statistics_count_boxes_and_calls(net):
    oracle = CrownOracle(net)
    oracle.verify(np.zeros((4, 3)), np.ones((4, 3)), 0)
    oracle.verify_box(np.zeros(3), np.zeros(3), 0)
    assert (oracle.stats.calls, oracle.stats.boxes) == (2, 5)
    assert oracle.stats.verified + oracle.stats.unknown == 5


@pytest.mark.parametrize("lower, upper, label, error", [
    (np.zeros((2, 4)), np.ones((2, 4)), 0, OracleError),
    (np.ones((1, 3)), np.zeros((1, 3)), 0, OracleError),
    (np.zeros((1, 3)), np.full((1, 3), np.inf), 0, OracleError),
    (np.zeros((1, 3)), np.ones((1, 3)), 3, LabelError),
])
def test_malformed_queries_are_rejected(net, lower, upper, label, error):
    with pytest.raises(error):
        CrownOracle(net).verify(lower, upper, label)


# -- registry ---------------------------------------------------------------------------------------
def test_registry_builds_named_oracles_with_options(net):
    assert {"crown", "attack"} <= set(oracle_entries())
    oracle = make_oracle("attack", net, steps=3, restarts=1)
    assert isinstance(oracle, AttackOracle) and oracle.settings()["steps"] == 3
    with pytest.raises(ConfigError, match="unknown oracle"):
        make_oracle("nope", net)
    with pytest.raises(ConfigError, match="does not take"):
        make_oracle("crown", net, gradient_steps=3)


def test_third_party_oracle_plugs_in_by_name(net):
    class Interval(Oracle):
        """Interval arithmetic (a user's own verifier)."""

        name = "test-interval"

        def _verify(self, lower, upper, label):
            return CrownOracle(self.network, intermediate="ibp").verify(lower, upper, label)

    register_oracle("test-interval", Interval, replace=True)
    oracle = make_oracle("test-interval", net)
    x = np.full(3, 0.5)
    assert oracle.verify_box(x, x, int(net.predict(x)[0])).verdict is Verdict.VERIFIED
    with pytest.raises(ConfigError, match="already registered"):
        register_oracle("test-interval", Interval)


def test_cuda_request_without_cuda_is_a_clear_error(net):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(OracleError, match="CUDA is not available"):
        CrownOracle(net, device="cuda")


# -- capabilities: what each oracle answers, declared -----------------------------------------------
def test_every_built_in_oracle_declares_what_it_answers_and_the_registry_agrees(net):
    from oracles.capabilities import QUERY_METHODS

    for name, entry in oracle_entries().items():
        if name in ("lirpa", "marabou") or name.startswith("test-"):
            continue  # optional backends (their classes are checked below) / the tests' plug-ins
        oracle = make_oracle(name, net)
        assert oracle.queries == entry.queries and oracle.capabilities.queries == oracle.queries, name
        assert oracle.supports("verify")
    from oracles.lirpa import LirpaOracle
    from oracles.marabou import MarabouOracle

    for cls in (LirpaOracle, MarabouOracle):
        assert cls.queries == oracle_entries()[cls.name].queries
    for cls in _oracle_classes():  # a declared query has its method; an undeclared one keeps the default
        for query, method in QUERY_METHODS.items():
            overridden = getattr(cls, method) is not getattr(Oracle, method)
            assert (query in cls.queries) == overridden or query == "verify", (cls.__name__, query)


def _oracle_classes():
    import oracles

    return [getattr(oracles, n) for n in ("AttackOracle", "BabOracle", "CrownOracle", "AlphaCrownOracle",
                                          "LirpaOracle", "MarabouOracle", "MilpOracle")]


def test_an_undeclared_query_says_which_oracle_and_which_query(net):
    from parallelepipedonn.box import Box

    oracle = CrownOracle(net)
    assert not oracle.supports("class_region") and oracle.supports("class_extremes")
    with pytest.raises(OracleError, match="'crown' does not answer class_region queries"):
        oracle.class_region(np.zeros(3), np.ones(3), 0, Box.unit(3))
    with pytest.raises(OracleError, match="unknown oracle query"):
        oracle.supports("teleport")


def test_a_cascade_answers_what_its_stages_declare(net):
    cascade = make_oracle("attack+crown", net)
    assert cascade.queries == {"verify", "class_extremes"} and cascade.routes["class_extremes"].name == "crown"
    assert not cascade.supports("distance")
    from oracles import oracle_queries, require_queries

    assert oracle_queries("crown+milp") == oracle_entries()["milp"].queries
    with pytest.raises(ConfigError, match="needs an oracle that answers class_region.*oracles that do: cascade, milp"):
        require_queries("crown+bab", ["class_region"], "rechecking a dual box")


def test_plug_ins_answer_what_they_declare_else_verify_only(net):
    class Quiet(Oracle):
        name = "test-quiet"

        def _verify(self, lower, upper, label):
            return [Answer(Verdict.UNKNOWN)] * len(lower)

    def factory(network, **options):
        return Quiet(network, **options)

    register_oracle("test-quiet", factory, replace=True)
    register_oracle("test-quiet-class", Quiet, replace=True)
    register_oracle("test-quiet-declared", factory, queries=("verify", "distance"), replace=True)
    entries = oracle_entries()
    assert entries["test-quiet"].queries == entries["test-quiet-class"].queries == {"verify"}
    assert entries["test-quiet-declared"].queries == {"verify", "distance"}
    assert make_oracle("test-quiet", net).queries == {"verify"}
    with pytest.raises(ConfigError, match="unknown queries teleport"):
        register_oracle("test-bad", factory, queries=("verify", "teleport"))
    with pytest.raises(OracleError, match="unknown queries"):
        type("Bad", (Quiet,), {"queries": frozenset({"verify", "teleport"})})


# -- options of a composition: namespaced per stage ------------------------------------------------
def test_a_namespaced_option_goes_to_its_stage_only(net):
    oracle = make_oracle("crown+alpha-crown+bab", net, **{"alpha-crown.steps": 7, "bab.steps": 3, "time_limit": 9})
    settings = {s["oracle"]: s for s in oracle.settings()["stages"]}
    assert settings["alpha-crown"]["steps"] == 7 and settings["bab"]["steps"] == 3
    assert oracle.time_limit == 9 and all(s["time_limit"] == 9 for s in settings.values())  # shared
    one = make_oracle("alpha-crown+bab", net, max_nodes=5, **{"bab.time_limit": 1, "time_limit": 2})
    assert one.stages[1].settings()["max_nodes"] == 5  # a plain option one stage takes
    assert one.stages[1].time_limit == 1 and one.stages[0].time_limit == 2  # the stage's own beats the shared
    assert make_oracle("attack", net, **{"attack.steps": 4}).settings()["steps"] == 4


@pytest.mark.parametrize("options, message", [
    ({"steps": 3}, r"several oracles .* take option\(s\) 'steps' \(write alpha-crown.steps=... or bab.steps=...\)"),
    ({"lr": 0.1}, "write alpha-crown.lr=... or bab.lr=..."),
    ({"milp.steps": 3}, r"names no oracle of 'alpha-crown\+bab'"),
    ({"bab.restarts": 3}, "oracle 'bab' does not take option"),
    ({"restarts": 3}, r"no oracle of 'alpha-crown\+bab' takes option"),
])
def test_ambiguous_or_unknown_composition_options_are_config_errors(net, options, message):
    with pytest.raises(ConfigError, match=message):
        make_oracle("alpha-crown+bab", net, **options)


def test_oracle_options_from_text():
    from oracles.registry import SHARED_OPTIONS, parse_oracle_options

    assert SHARED_OPTIONS == {"time_limit", "device", "dtype"}
    assert parse_oracle_options(["bab.steps=20", "lr=1e-2", "device=cpu", "x=true", "y=none"]) == {
        "bab.steps": 20, "lr": 0.01, "device": "cpu", "x": True, "y": None}
    for bad in (["steps"], ["=3"], ["bab.=3"], ["steps=1", "steps=2"]):
        with pytest.raises(ConfigError):
            parse_oracle_options(bad)


def test_certify_config_takes_namespaced_options_and_records_them(net):
    import parallelepipedonn as ppn

    x = np.full(3, 0.5)
    config = ppn.CertifyConfig(oracle="crown+alpha-crown", oracle_options={"alpha-crown.steps": 5,
                                                                           "crown.chunk_size": 64})
    cert = ppn.certify(net, x, config=config)
    stages = {s["oracle"]: s for s in cert.oracle_settings["stages"]}
    assert stages["alpha-crown"]["steps"] == 5
    with pytest.raises(ConfigError, match="write crown.intermediate=... or alpha-crown.intermediate=..."):
        ppn.certify(net, x, config=ppn.CertifyConfig(oracle="crown+alpha-crown",
                                                     oracle_options={"intermediate": "ibp"}))


def test_a_cascade_under_a_time_limit_gives_each_stage_only_what_is_left(net):
    """The cascade's limit bounds the whole call: a later stage gets what the earlier ones
    left (not the whole limit again), and is not asked once nothing is left."""
    import time

    from oracles.cascade import Cascade

    class Slow(Oracle):
        name = "test-slow"

        def __init__(self, network, seconds):
            super().__init__(network)
            self.seconds, self.limits = seconds, []

        def _verify(self, lower, upper, label):
            self.limits.append(self.time_limit)
            time.sleep(self.seconds)
            return [Answer(Verdict.UNKNOWN, reason="slow")] * len(lower)

    first, second, third = Slow(net, 0.3), Slow(net, 0.3), Slow(net, 0.0)
    cascade = Cascade(net, [first, second, third])
    with cascade.time_limited(0.5):
        (answer,) = cascade.verify(np.zeros((1, net.n_inputs)), np.ones((1, net.n_inputs)), 0)
    assert 0.45 < first.limits[0] <= 0.5 and 0.0 < second.limits[0] <= 0.2 + 1e-9
    assert third.limits == [] and answer.verdict is Verdict.UNKNOWN and answer.timed_out
    assert "time out before test-slow" in answer.reason
    assert first.time_limit is None and second.time_limit is None      # restored after the block


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_oracles_answer_the_same_inside_a_callers_torch_grad_mode(mode):
    """Built and asked inside ``torch.no_grad()`` or ``torch.inference_mode()``, every oracle
    answers as outside: the attack's gradient steps (it answered UNKNOWN, its gradients
    refused, under both) and the screen's (crown answered UNKNOWN everywhere on graphs
    under inference mode) run whatever the caller's mode."""
    import torch

    from tests.graph_nets import small_cnn

    net = small_cnn()
    x = np.random.default_rng(1).uniform(0, 1, net.n_inputs)
    label = int(net.predict(x[None])[0])
    lower, upper = np.stack([x - 0.002, x - 0.2]), np.stack([x + 0.002, x + 0.2])
    for name in ("crown", "alpha-crown", "attack", "input-split"):
        want = [a.verdict for a in make_oracle(name, net).verify(lower, upper, label)]
        with getattr(torch, mode)():
            oracle = make_oracle(name, net)
            got = [a.verdict for a in oracle.verify(lower, upper, label)]
        assert got == want and oracle.stats.errors == 0, (name, got, want)
    assert want[1] is Verdict.FALSIFIED


@pytest.mark.parametrize("graph", [False, True])
def test_crown_stops_bounding_at_its_time_limit_and_calls_the_rest_time_outs(graph, monkeypatch):
    """A CROWN call over thousands of boxes (a box search's faces) took 40 s on a residual
    CIFAR net whatever the time limit: it now stops between chunks of boxes."""
    import time

    from oracles import graph_bounds

    net = small_cnn() if graph else random_network(5, [6, 8, 3])
    oracle = CrownOracle(net, chunk_size=1, time_limit=0.05, bisect=False)
    slow = graph_bounds.margin_lower_bounds if graph else oracle._bounds

    def slowed(*args, **kwargs):
        time.sleep(0.03)
        return slow(*args, **kwargs)

    monkeypatch.setattr(graph_bounds if graph else oracle, "margin_lower_bounds" if graph else "_bounds", slowed)
    x = np.full(net.n_inputs, 0.5)
    label = int(net.predict(x[None])[0])
    boxes = np.stack([x] * 20)
    answers = oracle.verify(boxes, boxes, label)
    bounded = [a for a in answers if not a.timed_out]
    assert 1 <= len(bounded) < 20 and all(a.verdict is Verdict.VERIFIED for a in bounded)
    assert all(a.verdict is Verdict.UNKNOWN and "time limit" in a.reason for a in answers if a.timed_out)


def test_networks_that_share_affine_maps_share_their_tensors_and_give_the_same_bounds(rng):
    """A property's reductions of one model (one per input region) keep the model's maps
    but the last: their tensors (weights, magnitudes, float32 iterates, the attack's module)
    are made once per map and shared, not copied per network (nn4sys: 1.4 s per region of
    a 60,000-neuron model); the bounds are those of tensors built afresh. A map's tensors
    go with it."""
    import gc

    import torch

    from oracles.alpha import iterate_tensors
    from oracles.network_tensors import _LAYERS, NetworkTensors
    from parallelepipedonn.network import _AFFINE_TENSORS, Affine, Network

    net = random_network(5, [6, 9, 9, 3])
    other = Network(net.input_shape, tuple(net.layers[:-1]) + (Affine(-net.affines[-1].weight, net.affines[-1].bias),))
    a, b = NetworkTensors.of(net), NetworkTensors.of(other)
    assert all(x is y for x, y in zip(a.weights[:-1], b.weights[:-1])) and a.weights[-1] is not b.weights[-1]
    assert all(x is y for x, y in zip(a.abs_weights[:-1], b.abs_weights[:-1]))
    f32a, f32b = iterate_tensors(a, torch.float32), iterate_tensors(b, torch.float32)
    assert f32a.weights[0] is f32b.weights[0] and f32a.weights[0].dtype == torch.float32
    ma, mb = (AttackOracle(n, dtype="float64").module for n in (net, other))
    assert ma[0].weight.data_ptr() == mb[0].weight.data_ptr() == a.weights[0].data_ptr()
    assert net.to_torch()[0].weight.data_ptr() != a.weights[0].data_ptr()  # not shared unless asked
    lo, hi = random_boxes(rng, net.n_inputs, 4, 0.2)
    fresh = Network(other.input_shape, tuple(Affine(x.weight.copy(), x.bias.copy()) if isinstance(x, Affine) else x
                                             for x in other.layers))
    np.testing.assert_array_equal(CrownOracle(other).margin_lower_bounds(lo, hi, 0),
                                  CrownOracle(fresh).margin_lower_bounds(lo, hi, 0))
    ident = id(fresh.affines[0])
    assert ident in _AFFINE_TENSORS and ident in _LAYERS
    del fresh
    gc.collect()
    assert ident not in _AFFINE_TENSORS and ident not in _LAYERS
