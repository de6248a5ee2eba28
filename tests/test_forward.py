"""Forward-mode intermediate bounds (``intermediate="forward"``, :mod:`oracles.forward`) and
the compressed products of mostly-zero weight matrices (:class:`oracles.sparse_weights.SparseWeights`).

The forward bounds of every ReLU input contain its exact value (rationals on the numbers
used) at the corners and inner points of the box, with no floor under the relative slack,
on nets whose sums cancel and whose weights span many orders of magnitude, in float64 and
in float32; they are never looser than interval bounds; a box whose numbers overflow gets
no finite bound. CROWN and input splitting with them never verify a box that holds a point
misclassified in exact arithmetic (the crafted nets of issue 12) and agree with the
complete MILP oracle on small nets. Sparse layers give the dense products' bounds.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch

from oracles import Verdict, make_oracle
from oracles.bounds import NetworkTensors, intermediate_bounds
from oracles.crown import CrownOracle
from oracles.forward import forward_bounds
from oracles.input_split import InputSplitOracle
from oracles.sparse_weights import SparseWeights, times_weight, weight_times
from parallelepipedonn import tolerances
from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Affine, Network, ReLU
from tests.crafted_nets import all_cases, truly_misclassified
from tests.graph_nets import residual
from tests.nets import random_network

F = Fraction


def exact_pre_activations(net: Network, x: np.ndarray) -> list[list[Fraction]]:
    """Each ReLU input at ``x``, in rationals on the IR's float64 weights (what float32
    bounds must cover too: their weights are these, rounded)."""
    v = [F(float(t)) for t in x]
    out = []
    for a in net.affines[:-1]:
        z = [sum((F(float(w)) * t for w, t in zip(row, v)), F(float(c))) for row, c in zip(a.weight, a.bias)]
        out.append(z)
        v = [max(t, F(0)) for t in z]
    return out


def cancelling_chain(rng: np.random.Generator, n_in: int, width: int, depth: int, scale: float,
                     widths: tuple[int, ...] | None = None) -> Network:
    """Weights from 1 to ``scale`` whose columns cancel in pairs to 1e-9 of their size
    (``depth`` layers ``width`` wide, or ``widths``)."""
    layers: list = []
    fan = n_in
    for width in widths or (width,) * depth:
        w = rng.standard_normal((width, fan)) * scale ** rng.random((width, fan))
        if fan >= 2:
            w[:, 1::2][:, :fan // 2] = -w[:, ::2][:, :fan // 2] * (1 + rng.standard_normal((width, fan // 2)) * 1e-9)
        layers += [Affine(w, rng.standard_normal(width) * scale ** rng.random(width)), ReLU()]
        fan = width
    layers.append(Affine(rng.standard_normal((3, fan)), np.zeros(3)))
    return Network.from_layers((n_in,), layers)


#: CROWN_WIDTH and PASS_WIDTH of the forward bounds' variants: alone; with CROWN's passes on
#: the narrow layers, whole or ending on the forward bounds of the first wider layer below
#: (on nets that taper: 8 then 3 wide; 40 then 8)
VARIANTS = {"forward-alone": (0, 600), "crown-on-narrow-layers": (64, 600), "crown-ending-on-forward-bounds": (64, 4)}


def _ended(monkeypatch) -> list[int]:
    """The ``to`` of every pass :func:`oracles.forward.forward_bounds` asks for, as it asks."""
    import oracles.forward as fw

    ends: list[int] = []
    inner = fw.signed_bounds

    def spy(*args, **kwargs):
        ends.append(kwargs.get("to", 0))
        return inner(*args, **kwargs)

    monkeypatch.setattr(fw, "signed_bounds", spy)
    return ends


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_bounds_contain_every_exact_relu_input_with_the_counted_slack_alone(dtype, variant, monkeypatch):
    import oracles.forward as fw

    crown_width, pass_width = VARIANTS[variant]
    monkeypatch.setattr(fw, "CROWN_WIDTH", crown_width)
    monkeypatch.setattr(fw, "PASS_WIDTH", pass_width)
    ends = _ended(monkeypatch)
    monkeypatch.setattr(tolerances, "REL_SLACK_FLOOR", 0.0)
    tolerances.relative_slack.cache_clear()
    t = getattr(torch, dtype)
    rng = np.random.default_rng(3)
    try:
        checked = 0
        for trial in range(6):
            scale = 10.0 ** (trial if dtype == "float64" else trial // 2)
            net = cancelling_chain(rng, n_in=2 + trial % 2, width=6, depth=3, scale=scale,
                                   widths=(8, 3, 3) if pass_width < 6 else None)
            tensors = NetworkTensors.of(net, dtype=t)
            x = rng.uniform(-1, 1, net.n_inputs)
            for width in (0.0, 1e-9, 0.3):
                lo, hi = torch.tensor(x - width, dtype=t)[None], torch.tensor(x + width, dtype=t)[None]
                bounds = intermediate_bounds(tensors, lo, hi, "forward")
                corners = np.array(np.meshgrid(*zip(lo[0].double().numpy(), hi[0].double().numpy()))).reshape(
                    net.n_inputs, -1).T
                inner = lo[0].double().numpy() + rng.random((3, net.n_inputs)) * (hi - lo)[0].double().numpy()
                for p in np.concatenate([corners, inner]):
                    for (low, high), z in zip(bounds, exact_pre_activations(net, p)):
                        for j, v in enumerate(z):
                            if np.isfinite(float(low[0, j])):
                                checked += 1
                                assert F(float(low[0, j])) <= v <= F(float(high[0, j])), (trial, width, j)
        assert checked >= 500
        assert any(ends) == (variant == "crown-ending-on-forward-bounds"), ends  # (the passes ending at z_1)
    finally:
        monkeypatch.undo()
        tolerances.relative_slack.cache_clear()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seed", range(4))
def test_forward_bounds_are_never_looser_than_interval_bounds_and_hold_at_sampled_points(seed, variant, monkeypatch):
    import oracles.forward as fw

    crown_width, pass_width = VARIANTS[variant]
    monkeypatch.setattr(fw, "CROWN_WIDTH", crown_width)
    monkeypatch.setattr(fw, "PASS_WIDTH", 16 if pass_width < 6 else pass_width)
    net = random_network(seed, [2, 40, 8, 8, 3] if pass_width < 6 else [2, 24, 24, 24, 3])
    tensors = NetworkTensors.of(net)
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, (5, 2))
    lo, hi = torch.tensor(centers - 0.15), torch.tensor(centers + 0.15)
    forward = intermediate_bounds(tensors, lo, hi, "forward")
    ibp = intermediate_bounds(tensors, lo, hi, "ibp")
    for (fl, fu), (il, iu) in zip(forward, ibp):
        assert bool((fl >= il).all() and (fu <= iu).all())
    tighter = sum(int((fu - fl < iu - il - 1e-9).sum()) for (fl, fu), (il, iu) in zip(forward[1:], ibp[1:]))
    assert tighter > 0  # the point of it
    for b in range(5):
        pts = rng.uniform(lo[b].numpy(), hi[b].numpy(), (2000, 2))
        z = pts
        for k, (low, high) in enumerate(forward):
            z = z @ net.affines[k].weight.T + net.affines[k].bias
            assert (z >= low[b].numpy()).all() and (z <= high[b].numpy()).all()
            z = np.maximum(z, 0)


def test_forward_bounds_of_many_boxes_are_each_boxs_own_alone_or_in_chunks(monkeypatch):
    import oracles.forward as fw

    net = random_network(5, [3, 16, 16, 3])
    tensors = NetworkTensors.of(net)
    rng = np.random.default_rng(5)
    c = rng.uniform(0.2, 0.8, (7, 3))
    lo, hi = torch.tensor(c - 0.1), torch.tensor(c + 0.1)
    whole, _ = forward_bounds(tensors, lo, hi)
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 16 * 3 * 2)  # two boxes per chunk
    chunked, relax = forward_bounds(tensors, lo, hi)
    alone = [forward_bounds(tensors, lo[i:i + 1], hi[i:i + 1])[0] for i in range(7)]
    assert len(relax) == len(chunked)
    for k in range(len(whole)):  # the same up to the order of the products' sums
        for side in range(2):
            assert torch.allclose(whole[k][side], chunked[k][side], rtol=1e-12, atol=1e-12)
            assert torch.allclose(whole[k][side], torch.cat([a[k][side] for a in alone]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_boxes_whose_numbers_overflow_get_no_finite_forward_bound(dtype):
    big = 1e200 if dtype == "float64" else 1e30
    net = Network.from_layers((2,), [Affine([[big, -big], [1.0, 1.0]], [0.0, 0.0]), ReLU(),
                                     Affine([[big, big], [1.0, -1.0]], [0.0, 0.0]), ReLU(),
                                     Affine([[1.0, -1.0], [0.0, 1.0]], [0.0, 0.0])])
    tensors = NetworkTensors.of(net, dtype=getattr(torch, dtype))
    lo = torch.tensor([[-big, -big], [0.0, 0.0]], dtype=getattr(torch, dtype))
    hi = torch.tensor([[big, big], [1.0, 1.0]], dtype=getattr(torch, dtype))
    bounds = intermediate_bounds(tensors, lo, hi, "forward")
    assert not bool(torch.isfinite(bounds[1][0][0]).any())  # the first box: poisoned
    margins = CrownOracle(net, dtype=dtype, intermediate="forward").margin_lower_bounds(
        lo.double().numpy()[:1], hi.double().numpy()[:1], 0)
    assert not np.isfinite(margins).any()


def test_float32_bounds_cover_first_layer_weights_that_float32_rounds_to_zero():
    """Found by an adversarial review: a first-layer weight below float32's normal range
    (0.375 * 2^-149, 0 in float32) times an input of 2^100, scaled by 2^100: the forward
    bounds had started from the float32 weights with no error, and verified a box whose
    only point is misclassified in exact arithmetic (margin -2.1e14)."""
    s = 2.0 ** 100
    w0 = 0.375 * 2.0 ** -149
    b0 = max(64 * 2.0 ** -150 * s, 2.0 ** -38)
    w1 = 2.0 ** 100
    b1 = -w1 * (b0 + 0.5 * w0 * s)
    net = Network.from_layers((1,), [Affine([[w0]], [b0]), ReLU(), Affine([[w1]], [b1]), ReLU(),
                                     Affine([[-1.0], [0.0]], [0.25 * w1 * w0 * s, 0.0])])
    x = np.array([s])
    exact = net.exact_margin(x, 0)
    assert exact < 0
    for dtype in ("float32", "float64"):
        crown = CrownOracle(net, dtype=dtype, intermediate="forward")
        assert F(float(crown.margin_lower_bounds(x[None], x[None], 0)[0, 0])) <= exact
        assert crown.verify_box(x, x, 0).verdict != Verdict.VERIFIED


CASES = [c for c in all_cases() if c.net.n_inputs <= 16]


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
@pytest.mark.parametrize("oracle", ["crown", "crown-forward-alone", "alpha-crown", "input-split"])
def test_no_box_holding_an_exactly_misclassified_point_is_verified_with_forward_bounds(case, oracle, monkeypatch):
    """Issue 12's crafted nets (cancelling sums, overflow, underflow), with forward-mode
    intermediate bounds (and, on these narrow nets, CROWN's on the neurons they leave
    unstable; or not): VERIFIED never; FALSIFIED only with a point misclassified exactly."""
    import oracles.forward as fw

    assert truly_misclassified(case.net, case.p, case.label)
    if oracle == "crown-forward-alone":
        monkeypatch.setattr(fw, "CROWN_WIDTH", 0)
        oracle = "crown"
    options = {"intermediate": "forward"}
    if oracle != "crown":
        options["time_limit"] = 5.0
    o = make_oracle(oracle, case.net, **options)
    answer = o.verify_box(case.box.lower, case.box.upper, case.label)
    assert answer.verdict != Verdict.VERIFIED, case.key
    if answer.falsified:
        assert truly_misclassified(case.net, answer.counterexample, case.label)


@pytest.mark.parametrize("tapered", [False, True], ids=["even", "tapered-passes-ending-on-forward-bounds"])
@pytest.mark.parametrize("seed", range(3))
def test_crown_with_forward_bounds_is_sound_and_input_splitting_with_them_agrees_with_milp(seed, tapered,
                                                                                         monkeypatch):
    import oracles.forward as fw

    if tapered:  # the 6-wide layers' passes end on the 24-wide layer's forward bounds
        monkeypatch.setattr(fw, "PASS_WIDTH", 8)
    ends = _ended(monkeypatch)
    net = random_network(seed, [2, 24, 6, 6, 3] if tapered else [2, 12, 12, 12, 3])
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.3, 0.7, 2)
    label = int(net.predict(x)[0])
    crown = CrownOracle(net, intermediate="forward")
    split = InputSplitOracle(net, intermediate="forward", time_limit=20)
    milp = make_oracle("milp", net, time_limit=20)
    for r in (0.01, 0.05, 0.2):
        lo, hi = np.clip(x - r, 0, 1), np.clip(x + r, 0, 1)
        pts = rng.uniform(lo, hi, (3000, 2))
        logits = net.forward(pts)
        sampled = logits[:, label][:, None] - np.delete(logits, label, axis=1)
        bounds = crown.margin_lower_bounds(lo[None], hi[None], label)[0]
        assert (bounds <= sampled.min(axis=0)).all()
        a, m = split.verify_box(lo, hi, label), milp.verify_box(lo, hi, label)
        if m.verdict != Verdict.UNKNOWN and a.verdict != Verdict.UNKNOWN:
            assert a.verdict == m.verdict, (seed, r)
    assert split.settings()["intermediate"] == "forward"
    assert any(ends) == tapered


def test_forward_bounds_are_refused_on_graphs_that_are_not_chains():
    with pytest.raises(OracleError, match="forward"):
        CrownOracle(residual(0), intermediate="forward")


# -- sparse layers ---------------------------------------------------------------------------


def sparse_chain(seed: int, n_in: int = 2, widths: tuple[int, ...] = (300, 400, 300), density: float = 0.005) \
        -> Network:
    """A chain whose hidden-to-hidden matrices are mostly zeros (entries -1, 1 or random)."""
    rng = np.random.default_rng(seed)
    layers: list = [Affine(rng.standard_normal((widths[0], n_in)), rng.standard_normal(widths[0]) * 0.1), ReLU()]
    for a, b in zip(widths, widths[1:]):
        w = np.where(rng.random((b, a)) < density, rng.choice([-1.0, 1.0, 0.7], (b, a)), 0.0)
        layers += [Affine(w, rng.standard_normal(b) * 0.1), ReLU()]
    layers.append(Affine(rng.standard_normal((3, widths[-1])), np.zeros(3)))
    return Network.from_layers((n_in,), layers)


def test_only_large_mostly_zero_matrices_get_compressed_copies():
    net = sparse_chain(0)
    tensors = NetworkTensors.of(net)
    assert [s is not None for s in tensors.sparse] == [False, True, True, False]
    assert SparseWeights.of(torch.zeros(10, 10, dtype=torch.float64), torch.zeros(10, 10, dtype=torch.float64)) is None
    dense = torch.randn(400, 400, dtype=torch.float64)
    assert SparseWeights.of(dense, dense.abs()) is None
    # float32 magnitudes inflated for weights below the normal range: no compressed copy
    w = tensors.weights[1].float()
    assert SparseWeights.of(w, w.abs() + 1e-30) is None


def test_the_compressed_copies_hold_the_matrix_its_transpose_and_its_magnitudes_exactly():
    tensors = NetworkTensors.of(sparse_chain(2))
    for w, a, sp in zip(tensors.weights, tensors.abs_weights, tensors.sparse):
        if sp is not None:
            assert torch.equal(sp.w.to_dense(), w) and torch.equal(sp.w_t.to_dense(), w.T)
            assert torch.equal(sp.abs_w.to_dense(), a)


def test_one_networks_tensors_are_built_once_per_device_and_dtype_and_shared_by_a_cascade():
    from oracles import make_oracle

    net = sparse_chain(3)
    assert NetworkTensors.of(net) is NetworkTensors.of(net, "cpu", torch.float64)
    assert NetworkTensors.of(net, dtype=torch.float32) is not NetworkTensors.of(net)
    assert NetworkTensors.of(sparse_chain(3)) is not NetworkTensors.of(net)  # another object: its own
    cascade = make_oracle("crown+alpha-crown+bab", net)
    assert all(stage.tensors is NetworkTensors.of(net) for stage in cascade.stages)
    # built first inside inference mode, they still serve a pass that differentiates
    other = sparse_chain(4)
    with torch.inference_mode():
        first = NetworkTensors.of(other, dtype=torch.float32)
    assert not first.weights[0].is_inference()
    lo = torch.full((1, 2), 0.4, dtype=torch.float64, requires_grad=True)
    CrownOracle(other, dtype="float32").differentiable_margin_bounds(lo, lo.detach() + 0.1, 0).sum().backward()
    assert lo.grad is not None


def test_compressed_products_equal_the_dense_ones():
    tensors = NetworkTensors.of(sparse_chain(1))
    dense = dataclasses.replace(tensors, sparse=())
    rng = np.random.default_rng(1)
    lam = torch.tensor(rng.standard_normal((4, 3, 300)))  # rows of W_2 (300 x 400)
    x = torch.tensor(rng.standard_normal((5, 300)))
    assert torch.allclose(times_weight(tensors, 2, lam), times_weight(dense, 2, lam), rtol=1e-13, atol=1e-13)
    for absolute in (False, True):
        assert torch.allclose(weight_times(tensors, 1, x, absolute), weight_times(dense, 1, x, absolute),
                              rtol=1e-13, atol=1e-13)
    assert times_weight(tensors, 2, lam).is_contiguous()


@pytest.mark.parametrize("intermediate", ["crown", "forward"])
def test_crown_bounds_through_compressed_layers_are_the_dense_ones_and_sound(intermediate):
    net = sparse_chain(2)
    crown = CrownOracle(net, intermediate=intermediate)
    assert any(s is not None for s in crown.tensors.sparse)
    dense = CrownOracle(net, intermediate=intermediate)
    dense.tensors = dataclasses.replace(dense.tensors, sparse=())
    rng = np.random.default_rng(2)
    c = rng.uniform(-0.5, 0.5, (3, 2))
    lo, hi = c - 0.05, c + 0.05
    got, want = crown.margin_lower_bounds(lo, hi, 0), dense.margin_lower_bounds(lo, hi, 0)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-9)
    for b in range(3):
        logits = net.forward(rng.uniform(lo[b], hi[b], (3000, 2)))
        assert (got[b] <= (logits[:, :1] - logits[:, 1:]).min(axis=0)).all()


def test_gradients_of_bounds_pass_through_compressed_layers():
    net = sparse_chain(3)
    lo = torch.tensor([[-0.1, 0.2]], dtype=torch.float64, requires_grad=True)
    hi = torch.tensor([[0.0, 0.3]], dtype=torch.float64, requires_grad=True)
    grads = []
    for sparse in (True, False):
        crown = CrownOracle(net)
        if not sparse:
            crown.tensors = dataclasses.replace(crown.tensors, sparse=())
        bound = crown.differentiable_margin_bounds(lo, hi, 0).sum()
        grads.append(torch.autograd.grad(bound, (lo, hi)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
