"""alpha-CROWN with optimised intermediate bounds (oracles/alpha.py).

What it must do: never be looser than CROWN, nor than optimising the final slopes alone;
stay below every sampled margin and around every sampled pre-activation; stay below the
exact minimum margin (rational arithmetic) of boxes that reach the decision boundary by
1e-12; report only bounds that one sound pass with the returned slopes reproduces; and
give the last call's proof again, without optimising, only for exactly its question.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

import oracles.alpha
from oracles.alpha import AlphaSettings, optimize_bounds
from oracles.bounds import (
    NetworkTensors,
    backward,
    concretize,
    input_scale,
    intermediate_bounds,
    margin_spec,
    relu_relaxation,
)
from oracles.crown import AlphaCrownOracle, CrownOracle
from oracles.precision import box_tensors
from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Affine, Network, ReLU
from tests.nets import random_network
from tests.test_float_soundness import NETS, LinearMarginNet, boxes_touching
from tests.test_oracles import random_boxes, sampled_margins

DEEP = random_network(41, [5, 12, 12, 12, 3], scale=1.6)


def _bounds(net: Network, lower: np.ndarray, upper: np.ndarray, label: int, **settings):
    tensors = NetworkTensors.of(net)
    lo, hi = box_tensors(lower, upper)
    spec = margin_spec(net.n_classes, label, lo.shape[0], lo.dtype, lo.device)
    return tensors, lo, hi, spec, optimize_bounds(tensors, lo, hi, spec, AlphaSettings(**settings))


def deepened(m: LinearMarginNet) -> Network:
    """``m``'s network with one more hidden layer that computes ``relu(z) - relu(-z) = z``
    and ``-z`` again: the same margin in exact arithmetic, with unstable neurons in a second
    layer, whose bounds alpha-CROWN optimises."""
    first, _, last = m.net.layers
    k = first.weight.shape[0] // 2
    eye = np.eye(k)
    middle = Affine(np.block([[eye, -eye], [-eye, eye]]), np.zeros(2 * k))
    return Network.from_layers(m.net.input_shape, [first, ReLU(), middle, ReLU(), last])


def test_bounds_are_never_looser_than_crown_nor_than_final_slopes_alone_and_tighter_somewhere():
    rng = np.random.default_rng(0)
    lower, upper = random_boxes(rng, 5, 24, 0.5)
    *_, full = _bounds(DEEP, lower, upper, 1, steps=30, stop_above=None)
    *_, final_only = _bounds(DEEP, lower, upper, 1, steps=30, stop_above=None, intermediate=False)
    crown = CrownOracle(DEEP).margin_lower_bounds(lower, upper, 1)
    full, final_only = full.final.numpy(), final_only.final.numpy()
    assert (full >= crown).all() and (final_only >= crown).all()
    assert (full >= final_only - 1e-9).mean() > 0.9  # a joint optimisation: rarely behind, never far
    assert (full - final_only).sum() > 0.1 * (final_only - crown).sum() > 0  # the intermediate bounds paid


def test_bounds_stay_below_sampled_margins_and_around_sampled_pre_activations():
    rng = np.random.default_rng(1)
    lower, upper = random_boxes(rng, 5, 12, 0.6)
    _, lo, hi, _, got = _bounds(DEEP, lower, upper, 2, steps=40, stop_above=None)
    assert (got.final.numpy() <= sampled_margins(DEEP, lower, upper, 2, rng) + 1e-12).all()
    reference = intermediate_bounds(NetworkTensors.of(DEEP), lo, hi)
    for b in range(len(lower)):
        pts = lower[b] + rng.random((500, 5)) * (upper[b] - lower[b])
        z = pts
        for i, affine in enumerate(DEEP.affines[:-1]):
            z = z @ affine.weight.T + affine.bias
            l_opt, u_opt = (t[b].numpy() for t in got.intermediate[i])
            l_ref, u_ref = (t[b].numpy() for t in reference[i])
            assert (l_opt <= z).all() and (z <= u_opt).all()
            assert (l_opt >= l_ref).all() and (u_opt <= u_ref).all()  # within CROWN's
            z = np.maximum(z, 0)


def test_the_reported_bound_is_one_sound_pass_with_the_returned_bounds_and_slopes():
    rng = np.random.default_rng(2)
    lower, upper = random_boxes(rng, 5, 8, 0.5)
    tensors, lo, hi, spec, got = _bounds(DEEP, lower, upper, 0, steps=25, stop_above=None)
    assert got.steps > 0
    assert all(0 <= float(s.min()) and float(s.max()) <= 1 for s in got.slopes)
    with torch.no_grad():
        relax = [relu_relaxation(a, b, alpha=s) for (a, b), s in zip(got.intermediate, got.slopes)]
        center = (hi + lo) / 2  # the passes carry the center term (coef @ center, reassociated)
        again = concretize(backward(tensors, spec, tensors.depth - 1, relax, input_scale(lo, hi), center=center),
                           lo, hi)
        crown = concretize(backward(tensors, spec, tensors.depth - 1,
                                    [relu_relaxation(a, b) for a, b in intermediate_bounds(tensors, lo, hi)],
                                    input_scale(lo, hi), center=center), lo, hi)
    assert torch.equal(got.final, torch.maximum(again, crown))


@pytest.mark.parametrize("key", NETS)
def test_bounds_stay_below_the_exact_minimum_margin_of_a_deep_net_at_the_boundary(key):
    m = NETS[key]
    net = deepened(m)
    lower, upper, exact = boxes_touching(m, [0.0, -1e-12, -1e-9, 1e-12, 1e-7], count=2)
    probe = np.random.default_rng(3).random((50, lower.shape[1]))
    assert np.allclose(net.margins(probe, 0), m.net.margins(probe, 0), atol=1e-12)  # the same margin
    for iterate in (torch.float32, None):
        *_, got = _bounds(net, lower, upper, 0, steps=30, stop_above=None, iterate_dtype=iterate)
        for bound, e in zip(got.final[:, 0].tolist(), exact):
            assert math.isfinite(bound) and Fraction(bound) <= e, (key, bound, float(e))
        assert AlphaCrownOracle(net).verify(lower, upper, 0)[0].verdict.name != "VERIFIED"


def test_an_expired_deadline_or_a_verified_box_stops_the_optimisation_at_once():
    lower, upper = random_boxes(np.random.default_rng(4), 5, 6, 0.5)
    *_, late = _bounds(DEEP, lower, upper, 1, steps=50, deadline=time.perf_counter() - 1)
    assert late.steps == 0
    assert (late.final.numpy() >= CrownOracle(DEEP).margin_lower_bounds(lower, upper, 1)).all()
    # past the deadline from the start: CROWN's bounds (the sound pass with CROWN's slopes), no step's passes
    assert torch.equal(late.final, _bounds(DEEP, lower, upper, 1, steps=0)[-1].final)
    x = np.full((1, 5), 0.5)
    label = int(DEEP.predict(x)[0])
    *_, point = _bounds(DEEP, x, x, label, steps=50)
    assert point.steps == 0 and (point.final > 0).all()


def test_the_oracle_settings_reach_the_optimisation_and_bad_ones_are_refused():
    lower, upper = random_boxes(np.random.default_rng(5), 5, 4, 0.5)
    none = AlphaCrownOracle(DEEP, steps=0).margin_lower_bounds(lower, upper, 0)
    # the same CROWN bounds, up to the rounding slack of two sound computations of them
    # (the crown oracle's intermediate pass tightens each box's unstable neurons on its own)
    np.testing.assert_allclose(none, CrownOracle(DEEP).margin_lower_bounds(lower, upper, 0), rtol=1e-6, atol=1e-9)
    ibp = AlphaCrownOracle(DEEP, steps=20, intermediate="ibp").margin_lower_bounds(lower, upper, 0)
    assert (ibp >= CrownOracle(DEEP, intermediate="ibp").margin_lower_bounds(lower, upper, 0)).all()
    for bad in ({"steps": -1}, {"lr": 0.0}, {"lr_decay": 1.5}, {"patience": 0}):
        with pytest.raises(OracleError):
            AlphaSettings(**bad)


def test_a_batch_too_large_for_one_optimisation_is_split_with_the_same_bounds(monkeypatch):
    lower, upper = random_boxes(np.random.default_rng(6), 5, 8, 0.5)
    settings = {"steps": 15, "stop_above": None, "patience": 100}
    *_, whole = _bounds(DEEP, lower, upper, 1, **settings)
    monkeypatch.setattr("oracles.alpha.MAX_SLOPES", 2000)  # a few boxes' worth
    monkeypatch.setattr("oracles.alpha.REMEMBERED", 0)  # optimised again, not remembered
    *_, split = _bounds(DEEP, lower, upper, 1, **settings)
    assert split.final.shape == whole.final.shape and len(split.slopes) == len(whole.slopes)
    assert torch.allclose(split.final, whole.final, atol=1e-9)
    for (a, b), (c, d) in zip(split.intermediate, whole.intermediate):
        unstable = (c < 0) & (d > 0)  # (a stable neuron's row exists only where some box of its batch needs it)
        assert torch.allclose(a[unstable], c[unstable], atol=1e-9) and torch.allclose(b[unstable], d[unstable], atol=1e-9)


def test_the_last_call_is_remembered_for_exactly_its_question(monkeypatch):
    lower, upper = random_boxes(np.random.default_rng(7), 5, 3, 0.5)
    settings = {"steps": 5, "stop_above": None}
    *_, first = _bounds(DEEP, lower, upper, 1, **settings)
    optimised = []
    run = oracles.alpha._optimize
    monkeypatch.setattr("oracles.alpha._optimize", lambda *a: optimised.append(1) or run(*a))
    # one of its boxes, asked again through other tensors of the same network: its proof
    *_, again = _bounds(DEEP, lower[1:2], upper[1:2], 1, **settings)
    assert not optimised and torch.equal(again.final[0], first.final[1])
    for (a, b), (c, d) in zip(again.intermediate, first.intermediate):
        assert torch.equal(a[0], c[1]) and torch.equal(b[0], d[1])
    # any other question is optimised: other settings, label, box or weights
    other = random_network(42, [5, 12, 12, 12, 3], scale=1.6)
    for net, lo, hi, label, extra in ((DEEP, lower[1:2], upper[1:2], 1, {"lr": 0.2}), (DEEP, lower[1:2], upper[1:2], 0, {}),
                                      (DEEP, lower[1:2], upper[1:2] + 1e-9, 1, {}), (other, lower[1:2], upper[1:2], 1, {})):
        count = len(optimised)
        _bounds(net, lo, hi, label, **settings, **extra)
        assert len(optimised) == count + 1
    # only the last call is kept
    _bounds(DEEP, lower[:1], upper[:1], 1, **settings)
    assert len(optimised) == 5
