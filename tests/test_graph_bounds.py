"""CROWN over the DAG IR (oracles.graph_bounds): the chain's bounds on chains, sound
bounds on convolutional and residual graphs in float64 and float32 (below every sampled
and attacked margin), no wrong proof on a cancelling residual, no dense convolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import parallelepipedonn
from oracles.base import Verdict
from oracles.crown import CrownOracle
from oracles.graph_bounds import GraphTensors, margin_lower_bounds
from oracles.precision import box_tensors
from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.certify import CertifyConfig
from parallelepipedonn.errors import OracleError
from parallelepipedonn.graph import Graph
from tests.devices import DEVICES
from tests.graph_nets import Builder, mixed, residual, small_cnn, transposed
from tests.nets import random_network

GRAPHS = {"small_cnn": small_cnn, "residual": residual, "mixed": mixed, "transposed": transposed}


def _sampled_margins(g: Graph, x: np.ndarray, eps: float, label: int, rng: np.random.Generator,
                     k: int = 2000) -> np.ndarray:
    """The smallest float64 margin of ``label`` over ``k`` points of each box (vertices
    included): ``(B,)``."""
    pts = x[:, None] + rng.uniform(-eps, eps, (len(x), k, g.n_inputs))
    pts[:, : k // 4] = x[:, None] + eps * np.sign(pts[:, : k // 4] - x[:, None])
    return g.margins(pts.reshape(-1, g.n_inputs), label).reshape(len(x), k).min(axis=1)


def _pgd_margins(g: Graph, x: np.ndarray, eps: float, label: int, steps: int = 30) -> np.ndarray:
    """Margins at points of each box found by projected gradient descent on the margin."""
    module = g.to_torch(torch.float64)
    lo, hi = torch.tensor(x - eps), torch.tensor(x + eps)
    z = (lo + hi) / 2 + eps * (2 * torch.rand(lo.shape, generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64) - 1) / 2
    for _ in range(steps):
        z.requires_grad_(True)
        logits = module(z)
        others = torch.cat([logits[:, :label], logits[:, label + 1:]], dim=1)
        margin = logits[:, label] - others.max(dim=1).values
        (grad,) = torch.autograd.grad(margin.sum(), z)
        z = torch.minimum(torch.maximum(z.detach() - eps / 10 * grad.sign(), lo), hi)
    return g.margins(z.detach().numpy(), label)


# -- chains -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,sizes,shape", [(0, [6, 20, 15, 3], (2, 3)), (1, [10, 30, 4], None),
                                              (2, [8, 16, 16, 16, 5], (8,))])
def test_on_chains_the_graph_crown_gives_the_chain_crown_bounds(seed, sizes, shape):
    net = random_network(seed, sizes, input_shape=shape)
    x = np.random.default_rng(seed).random((6, net.n_inputs))
    lo, hi = x - 0.05, x + 0.05
    for label in (0, sizes[-1] - 1):
        chain = CrownOracle(net).margin_lower_bounds(lo, hi, label)
        gt = GraphTensors.of(Graph.from_network(net))
        for i in range(len(x)):  # box by box: the chain code tightens neurons unstable in any box of a batch
            graph = margin_lower_bounds(gt, *box_tensors(lo[i:i + 1], hi[i:i + 1]), label).numpy()
            np.testing.assert_allclose(graph, CrownOracle(net).margin_lower_bounds(lo[i:i + 1], hi[i:i + 1], label),
                                       rtol=1e-9, atol=1e-12)
        # a chain graph given to CrownOracle runs the chain code itself
        np.testing.assert_array_equal(CrownOracle(Graph.from_network(net)).margin_lower_bounds(lo, hi, label), chain)


# -- soundness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", GRAPHS)
def test_proven_margin_bounds_are_below_every_sampled_and_attacked_margin(name, dtype, device):
    rng = np.random.default_rng(7)
    for seed in range(3):
        g = GRAPHS[name](seed=seed)
        oracle = CrownOracle(g, dtype=dtype, device=device)
        x = rng.random((4, g.n_inputs))
        for eps in (0.003, 0.05):
            for label in range(g.n_classes):
                worst = oracle.margin_lower_bounds(x - eps, x + eps, label).min(axis=1)
                assert np.isfinite(worst).all()
                assert (worst <= _sampled_margins(g, x, eps, label, rng)).all()
                assert (worst <= _pgd_margins(g, x, eps, label)).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", GRAPHS)
def test_a_verified_box_contains_no_misclassified_point(name, dtype, device):
    rng = np.random.default_rng(3)
    verified = 0
    for seed in range(4):
        g = GRAPHS[name](seed=seed)
        x = rng.random((6, g.n_inputs))
        labels = g.predict(x)
        oracle = CrownOracle(g, dtype=dtype, device=device)
        for i, label in enumerate(labels):
            for eps in (0.001, 0.01):
                answer = oracle.verify_box(x[i] - eps, x[i] + eps, int(label))
                if answer.verified:
                    verified += 1
                    pts = x[i] + rng.uniform(-eps, eps, (500, g.n_inputs))
                    assert not g.misclassified(pts, int(label)).any()
    assert verified > 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_scale_whose_shift_broadcasts_over_the_channels_is_bounded(dtype):
    """A Scale node with a per-channel scale and one shift for all channels (shape (1, 1, 1)):
    its bias is summed as a broadcast, not as one value per channel (was a size mismatch)."""
    rng = np.random.default_rng(0)
    nodes = [gn.Input(inputs=(), shape=(3, 2, 2)),
             gn.Scale(inputs=(0,), shape=(3, 2, 2), in_shape=(3, 2, 2), scale=np.full((3, 1, 1), 0.5),
                      shift=np.full((1, 1, 1), 0.25)),
             gn.Conv2d(inputs=(1,), shape=(2, 1, 1), in_shape=(3, 2, 2), weight=rng.normal(size=(2, 3, 2, 2)),
                       bias_=np.zeros(2)),
             gn.ReLU(inputs=(2,), shape=(2, 1, 1)),
             gn.Reshape(inputs=(3,), shape=(2,), in_shape=(2, 1, 1)),
             gn.Dense(inputs=(4,), shape=(2,), in_shape=(2,), weight=np.array([[1.0, -1.0], [0.0, 1.0]]),
                      bias_=np.zeros(2))]
    g = Graph((3, 2, 2), tuple(nodes), "broadcast shift")
    x = rng.random((3, 12))
    for label in (0, 1):
        worst = CrownOracle(g, dtype=dtype).margin_lower_bounds(x - 0.1, x + 0.1, label).min(axis=1)
        assert np.isfinite(worst).all() and (worst <= _sampled_margins(g, x, 0.1, label, rng)).all()


def test_a_cancelling_residual_with_huge_weights_is_not_verified():
    """``s = A x + C x`` with weights ``1e12 + 1/3`` and ``-1e12`` (exactly ``w x``, ``w``
    the stored difference), minus ``w x + 1e-7``: the exact margin is ``-1e-7`` at every
    point, far below the rounding of the 1e12 terms."""
    big = 1e12 + 1 / 3
    w = big - 1e12  # exact (Sterbenz)
    b = Builder((1, 2, 2))
    a = b._add(gn.Conv2d(inputs=(0,), shape=(1, 2, 2), in_shape=(1, 2, 2), weight=np.full((1, 1, 1, 1), big),
                         bias_=np.zeros(1)))
    c = b._add(gn.Conv2d(inputs=(0,), shape=(1, 2, 2), in_shape=(1, 2, 2), weight=np.full((1, 1, 1, 1), -1e12),
                         bias_=np.zeros(1)))
    s = b.add(a, c)
    t = b.scale(0, np.full((1, 1, 1), w), np.full((1, 1, 1), 1e-7))
    d = b.flatten(b.sub(s, t))
    b.dense(d, 2, weight=np.vstack([np.ones((1, 4)), np.zeros((1, 4))]), bias=np.zeros(2))
    g = b.graph("cancel")
    x = np.full((1, 4), 0.7)
    assert g.misclassified(x, 0)[0] and g.exact_margin(x[0], 0) < 0
    for dtype in ("float64", "float32"):
        for eps in (0.0, 1e-9, 0.01):
            answer = CrownOracle(g, dtype=dtype).verify_box(x[0] - eps, x[0] + eps, 0)
            assert not answer.verified and answer.margin <= -4e-7


def test_overflowing_bounds_prove_nothing():
    b = Builder((1, 2, 2))
    h = b.relu(b.conv(0, 2, 1, scale=1e300))
    b.dense(b.flatten(b.relu(b.conv(h, 2, 1, scale=1e300))), 2)
    g = b.graph()
    bounds = CrownOracle(g).margin_lower_bounds(np.zeros((1, 4)), np.ones((1, 4)), 0)
    assert (bounds == -np.inf).all()


# -- no dense convolution -----------------------------------------------------------------------
class _Largest(TorchDispatchMode):
    """Records the largest tensor any torch operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_crown_on_a_cifar_size_convnet_never_builds_a_dense_convolution():
    b = Builder((3, 32, 32), seed=0)
    h = b.relu(b.conv(0, 8, 3, pad=1))
    h = b.relu(b.conv(h, 8, 4, stride=2, pad=1))
    b.dense(b.flatten(h), 10)
    g = b.graph()
    x = np.random.default_rng(0).random((2, g.n_inputs))
    oracle = CrownOracle(g)
    with _Largest() as mode:
        oracle.margin_lower_bounds(x - 2 / 255, x + 2 / 255, 0)
    dense_first = 3 * 32 * 32 * 8 * 32 * 32
    assert mode.largest <= 2**23 and mode.largest < dense_first / 4, mode.largest


# -- the oracle interface -----------------------------------------------------------------------
def test_oracles_that_read_only_chains_refuse_other_graphs_clearly():
    from oracles.registry import make_oracle

    g = residual()
    with pytest.raises(OracleError, match="chain"):
        CrownOracle(g).class_extremes(0, parallelepipedonn.Box(np.zeros(25), np.ones(25)))
    with pytest.raises(OracleError, match="chain"):
        make_oracle("marabou", g)
    for name in ("alpha-crown", "milp", "bab"):  # these read the graph (tests/test_milp_graph.py, test_bab_graph.py)
        assert make_oracle(name, g).network is g


def test_certify_runs_end_to_end_on_a_graph():
    g = small_cnn()
    x = np.random.default_rng(0).random(g.n_inputs)
    cert = parallelepipedonn.certify(g, x, config=CertifyConfig(oracle="crown"))
    assert cert.status.value == "certified" and cert.apothem > 0
    lo, hi = cert.box.lower, cert.box.upper
    pts = lo + (hi - lo) * np.random.default_rng(1).random((300, g.n_inputs))
    assert not g.misclassified(pts, cert.label).any()


# -- windowed intermediate bounds (oracles.graph_windows) ----------------------------------------
def _conv_chain(seed: int) -> Graph:
    """Convolutions of odd sizes, strides, asymmetric paddings, dilations and groups (and
    for odd seeds two of them with nothing in between)."""
    rng = np.random.default_rng(seed)
    b = Builder((2, 11 + seed, 9 + 2 * seed), seed)
    h = b.conv(0, 4, (3, 2), stride=1 + seed % 2, pad=(1, 0, 2, 1), dilation=1 + (seed + 1) % 2)
    h = h if seed % 2 else b.relu(h)  # odd seeds: two convolutions in a row (windows over padding)
    h = b.relu(b.conv(h, 6, 3, stride=2, pad=(0, 1, 1, 0), groups=2))
    h = b.relu(b.conv(h, 4, (2, 3), stride=(1 + seed) % 2 + 1, pad=int(rng.integers(0, 2))))
    b.dense(b.flatten(h), 3)
    return b.graph(f"conv-chain-{seed}")


def _residual_convs(seed: int) -> Graph:
    """A stride-2 stem, then residual blocks whose branches rejoin by Add and by Sub (the
    skip's window is smaller than the convolutions'; odd seeds: a 1x1 convolution on the
    skip, asymmetric padding, two convolutions in a row)."""
    b = Builder((2, 25 + seed, 24), seed)
    stem = b.relu(b.conv(0, 4, 3, stride=2, pad=1))
    r = b.conv(b.relu(b.conv(stem, 4, 3, pad=1)), 4, 3, pad=1)
    skip = b.conv(stem, 4, 1) if seed % 2 else stem
    h = b.relu(b.add(r, skip))
    r = b.conv(b.conv(h, 4, (3, 2), pad=(1, 0, 1, 1)) if seed % 2 else b.relu(b.conv(h, 4, 3, pad=1)), 4, 3, pad=1)
    h = b.relu(b.sub(h, r))
    b.dense(b.flatten(h), 3)
    return b.graph(f"residual-convs-{seed}")


@pytest.mark.parametrize("pull_back", ["window matrices", "convolutions", "whole maps early"])
@pytest.mark.parametrize("make,seed", [(_conv_chain, s) for s in range(4)] + [(_residual_convs, s) for s in range(2)])
def test_windowed_intermediate_bounds_equal_the_full_pass(make, seed, pull_back, monkeypatch):
    """Windows pulled back through a convolution by its exact window matrix (the small
    ones, here) or by the convolution's input gradient (large, sparse ones), or embedded
    in the whole maps at the first node where no other branch is pending (the full pass
    from there): the same bounds."""
    import dataclasses

    import oracles.graph_bounds as gb
    import oracles.graph_windows as gw
    from oracles.graph_bounds import node_bounds

    # both sides of every neuron on both paths (their rows fill chunks of different widths)
    monkeypatch.setattr(gb, "ONE_SIDE_FIRST", False)
    if pull_back == "convolutions":
        monkeypatch.setattr(gw, "WINDOW_MATRIX_ELEMENTS", 0)
    monkeypatch.setattr(gw, "FULL_MAP_SHARE", 0.0 if pull_back == "whole maps early" else 2.0)
    g = make(seed)
    gt = GraphTensors.of(g)
    assert gt.windows, "the windowed pass applies to convolutions and their residual connections"
    if make is _residual_convs:  # the Add's and the Sub's rows are windowed through both branches
        assert {k for k, n in enumerate(g.nodes) if isinstance(n, (gn.Add, gn.Sub))} <= set(gt.windows)
    full = dataclasses.replace(gt, windows={})
    x = np.random.default_rng(seed).random((3, g.n_inputs))
    lo, hi = box_tensors(x - 0.04, x + 0.04)
    a, b = node_bounds(gt, lo, hi), node_bounds(full, lo, hi)
    for k in range(len(g.nodes)):
        for p, q in ((a.lower[k], b.lower[k]), (a.upper[k], b.upper[k])):
            np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-9, atol=1e-9 * float(q.abs().max()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,whole", [("float64", 0.75), ("float32", 0.75), ("float64", 0.0), ("float32", 0.0)])
def test_windowed_bounds_are_below_every_sampled_margin(dtype, whole, device, monkeypatch):
    import oracles.graph_windows as gw

    monkeypatch.setattr(gw, "FULL_MAP_SHARE", whole)  # 0: the whole maps from the first node they can be
    rng = np.random.default_rng(11)
    for g in [_conv_chain(seed) for seed in range(4)] + [_residual_convs(1)]:
        oracle = CrownOracle(g, dtype=dtype, device=device)
        assert oracle.graph_tensors.windows
        x = rng.random((3, g.n_inputs))
        residual = g.name.startswith("residual")  # its forward pass is slower: fewer samples
        for eps in (0.01, 0.1):
            for label in range(1 if residual else g.n_classes):
                worst = oracle.margin_lower_bounds(x - eps, x + eps, label).min(axis=1)
                assert np.isfinite(worst).all()
                assert (worst <= _sampled_margins(g, x, eps, label, rng, k=400 if residual else 2000)).all()
                assert (worst <= _pgd_margins(g, x, eps, label)).all()


def test_a_box_gets_the_bounds_it_gets_alone_whatever_the_batch():
    g = _residual_convs(0)
    x = np.random.default_rng(6).random((4, g.n_inputs))
    lo, hi = np.clip(x - np.array([[0.002], [0.01], [0.03], [0.05]]), 0, 1), np.clip(x + 0.01, 0, 1)
    oracle = CrownOracle(g)
    batch = oracle.margin_lower_bounds(lo, hi, 1)
    alone = np.concatenate([oracle.margin_lower_bounds(lo[i:i + 1], hi[i:i + 1], 1) for i in range(len(x))])
    np.testing.assert_allclose(batch, alone, rtol=1e-12, atol=1e-12)


def test_branches_of_different_strides_take_the_full_pass():
    from oracles.graph_windows import window_plan

    b = Builder((2, 12, 12), 0)
    a = b.conv(b.relu(b.conv(0, 4, 3, stride=3)), 4, 1)  # (4, 4, 4): the input at stride 3
    h = b.add(a, b.conv(0, 4, 6, stride=2))  # (4, 4, 4): the input at stride 2
    b.dense(b.flatten(b.relu(h)), 2)
    g = b.graph()
    assert window_plan(g, h) is None and h not in GraphTensors.of(g).windows
    assert window_plan(g, a) is not None
    x = np.random.default_rng(0).random((2, g.n_inputs))
    assert np.isfinite(CrownOracle(g).margin_lower_bounds(x - 0.01, x + 0.01, 0)).all()


def test_float32_bounds_are_close_to_float64_bounds():
    """Per-product slacks (oracles.graph_rounding): float32 loses little to float64 where
    a slack sized by the widest sum (16384 terms on this map: ~4e-3 of every magnitude)
    lost margins of order 10."""
    b = Builder((3, 32, 32), seed=0)
    h = b.relu(b.conv(0, 16, 3, pad=1))
    h = b.relu(b.conv(h, 8, 4, stride=2, pad=1))
    b.dense(b.relu(b.dense(b.flatten(h), 20)), 10)
    g = b.graph()
    x = np.random.default_rng(0).random((2, g.n_inputs))
    m64 = CrownOracle(g).margin_lower_bounds(x - 1 / 255, x + 1 / 255, 0)
    m32 = CrownOracle(g, dtype="float32").margin_lower_bounds(x - 1 / 255, x + 1 / 255, 0)
    assert np.isfinite(m32).all()
    np.testing.assert_allclose(m32, m64, rtol=0, atol=0.05 * (1 + np.abs(m64).max()))


# -- verify: the screen and the reuse of a superset's node bounds (oracles.crown) ------------------
def _cubes(x: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)


def test_the_screen_falsifies_boxes_with_a_confirmed_misclassified_corner_and_bounds_the_others():
    g = _residual_convs(1)
    x = np.random.default_rng(3).random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    lo, hi = _cubes(x, np.geomspace(1e-4, 0.5, 12))
    plain = CrownOracle(g, screen=False, reuse=False, bisect=False)
    screened = CrownOracle(g, reuse=False, bisect=False)
    a, b = plain.verify(lo, hi, label), screened.verify(lo, hi, label)
    skipped = [i for i, q in enumerate(b) if q.margin is None or q.verdict is Verdict.FALSIFIED]
    assert skipped and skipped[-1] == len(b) - 1, "the largest boxes contain misclassified points"
    kept = [i for i in range(len(b)) if i not in skipped]
    assert [a[i].verdict for i in kept] == [b[i].verdict for i in kept]
    alone = plain.margin_lower_bounds(lo[kept], hi[kept], label).min(axis=1)  # the batch without them
    assert [b[i].margin for i in kept] == list(alone)
    # each skipped box contains a point confirmed misclassified (which CROWN does not verify):
    # its own corner (FALSIFIED, with it) or a smaller skipped box's (UNKNOWN, no bound)
    assert all("misclassifies" in b[i].reason and not a[i].verified for i in skipped)
    falsified = [i for i in skipped if b[i].verdict is Verdict.FALSIFIED]
    assert falsified and falsified[0] == skipped[0]
    assert all(b[i].verdict is Verdict.UNKNOWN and b[i].margin is None for i in skipped if i not in falsified)
    for i in falsified:
        cex = b[i].counterexample
        assert ((lo[i] <= cex) & (cex <= hi[i])).all() and g.misclassified(cex[None], label)[0]


def test_boxes_inside_earlier_ones_start_from_their_node_bounds_soundly():
    g = _residual_convs(0)
    rng = np.random.default_rng(4)
    x = rng.random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    oracle, fresh = CrownOracle(g, screen=False, bisect=False), CrownOracle(g, screen=False, reuse=False, bisect=False)
    outer = oracle.verify(*_cubes(x, np.array([0.02, 0.05])), label)  # remembered
    lo, hi = _cubes(x, np.linspace(0.004, 0.02, 5))
    reused, alone = oracle.verify(lo, hi, label), fresh.verify(lo, hi, label)
    assert all(np.isfinite(a.margin) for a in reused + outer)
    # sound: every sampled point's margin is above the bound
    pts = lo[:, None] + (hi - lo)[:, None] * rng.random((len(lo), 300, g.n_inputs))
    sampled = g.margins(pts.reshape(-1, g.n_inputs), label).reshape(len(lo), -1).min(axis=1)
    assert all(a.margin <= s for a, s in zip(reused, sampled))
    # a box inside no remembered box gets exactly the bounds computed alone
    far = np.clip(x + 0.3, 0, 1)
    assert oracle.verify(far[None] - 1e-3, far[None] + 1e-3, label)[0].margin == \
        fresh.verify(far[None] - 1e-3, far[None] + 1e-3, label)[0].margin
    # and the node bounds of the smallest containing box are those started from
    memory = oracle._memory
    prior = memory.prior(lo, hi)
    assert prior is not None and memory.nodes
    nb_alone = []
    margin_lower_bounds(oracle.graph_tensors, *box_tensors(lo, hi), label, keep=nb_alone)
    for k in memory.nodes:
        assert torch.isfinite(prior[k][0]).all()
        assert (nb_alone[0].lower[k] <= prior[k][1]).all() and (prior[k][0] <= nb_alone[0].upper[k]).all()
    assert [a.verdict for a in alone] != [] and len(reused) == len(alone)


def test_nested_boxes_are_bounded_in_bisection_order_with_the_answers_crown_gives_them():
    g = _residual_convs(1)
    rng = np.random.default_rng(5)
    x = rng.random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    radii = np.geomspace(1e-4, 0.3, 16)
    lo, hi = _cubes(x, radii[rng.permutation(16)])  # in any order
    plain = CrownOracle(g, screen=False, reuse=False, bisect=False)
    bisect = CrownOracle(g, screen=False, reuse=False)
    assert bisect.bisect and bisect.settings()["bisect"]
    a, b = plain.verify(lo, hi, label), bisect.verify(lo, hi, label)
    assert [p.verdict for p in a] == [q.verdict for q in b]  # CROWN is monotone on these cubes
    assert 0 < sum(q.verified for q in b) < len(b)
    bounded = [q for q in b if q.margin is not None and "inside a box" not in q.reason]
    assert len(bounded) <= 5, "a bisection bounds about log2(16) boxes"
    for p, q in zip(a, b):  # an inferred VERIFIED carries a larger box's margin bound: at most the box's own
        if q.verified:
            assert q.margin <= p.margin + 1e-9 * abs(p.margin)
    assert CrownOracle(g, device="cpu", bisect=False).settings()["bisect"] is False


def test_two_nested_boxes_are_bounded_one_at_a_time_the_larger_first():
    """A pair of nested cubes is a chain too: the larger one bounded first; where it is
    verified the smaller is VERIFIED with its margin bound, without a bound of its own;
    where it is not, the smaller starts from its node bounds. The same verdicts as
    bounding both."""
    g = _residual_convs(1)
    rng = np.random.default_rng(5)
    x = rng.random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    plain = CrownOracle(g, screen=False, reuse=False, bisect=False)
    margins = [a.margin for a in plain.verify(*_cubes(x, np.geomspace(1e-4, 0.3, 16)), label)]
    verified = np.geomspace(1e-4, 0.3, 16)[[m > 0 for m in margins]]
    assert 0 < len(verified) < 16
    small, large = verified[0], verified[-1]
    not_verified = np.geomspace(1e-4, 0.3, 16)[len(verified)]
    for radii in ([large, small], [small, not_verified]):
        lo, hi = _cubes(x, np.array(radii))
        bisect = CrownOracle(g, screen=False)
        bounded: list[int] = []
        original = bisect._verify_bounds

        def spy(lower, upper, lab):
            bounded.append(len(lower))
            return original(lower, upper, lab)

        bisect._verify_bounds = spy
        a, b = plain.verify(lo, hi, label), bisect.verify(lo, hi, label)
        assert [p.verdict for p in a] == [q.verdict for q in b]
        assert bounded == ([1] if radii[0] == large else [1, 1])  # one box per bound; the smaller only if needed
        if radii[0] == large:
            assert b[1].verified and "inside a box it verified" in b[1].reason and b[1].margin == b[0].margin


def test_a_bisection_inside_a_bracket_bounded_before_probes_where_the_margins_interpolate_to_zero():
    g = _residual_convs(1)
    rng = np.random.default_rng(5)
    x = rng.random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    oracle = CrownOracle(g, screen=False, reuse=False)
    coarse = np.geomspace(1e-4, 0.3, 8)
    first = oracle.verify(*_cubes(x, coarse), label)
    ok = [q.verified for q in first]
    k = ok.index(False)
    assert k > 0, "a verified cube below an unverified one"
    fine = np.linspace(coarse[k - 1], coarse[k], 18)[1:-1]  # the bracket's inside, as a k-ary round asks
    plain = CrownOracle(g, screen=False, reuse=False, bisect=False).verify(*_cubes(x, fine), label)
    again = oracle.verify(*_cubes(x, fine), label)
    assert [p.verdict for p in plain] == [q.verdict for q in again]  # the same answers
    bounded = [q for q in again if q.margin is not None and "inside a box" not in q.reason]
    assert len(bounded) <= 3, "interpolated probes settle the crossing in fewer bounds than log2(16)"


def test_the_bisections_estimate_of_the_crossing_is_exact_on_a_parabola():
    from oracles.nesting import parabola_root

    def margin(w: float) -> float:  # falls ever faster as the box grows, as CROWN's bounds do
        return 1.0 - 80.0 * w - 1.1e4 * w * w

    root = (-80.0 + np.sqrt(80.0**2 + 4 * 1.1e4)) / (2 * 1.1e4)
    points = [(w, margin(w)) for w in (0.004, 0.008, 0.0)]
    assert parabola_root(points[0], points[1], points[2], 0.0) == pytest.approx(root, rel=1e-12)
    assert parabola_root(points[0], points[1], points[0], 0.123) == 0.123  # two widths the same: the default


def test_a_bisection_above_one_verified_box_extrapolates_from_the_margin_at_the_centre():
    """With only a smaller verified box known on the line (a k-ary round whose larger boxes
    were screened), the margin at the centre stands for a second point: the first probe is
    where the line through the two crosses zero (not the bracket's midpoint), and the
    crossing is settled in a few bounds, with the answers CROWN gives every box."""
    g = _residual_convs(1)
    rng = np.random.default_rng(5)
    x = rng.random(g.n_inputs)
    label = int(g.predict(x[None])[0])
    plain = CrownOracle(g, screen=False, reuse=False, bisect=False)
    coarse = np.geomspace(1e-4, 0.3, 8)
    ok = [q.verified for q in plain.verify(*_cubes(x, coarse), label)]
    k = ok.index(False)
    oracle = CrownOracle(g, screen=False, reuse=False)
    assert oracle.verify(*_cubes(x, coarse[k - 1:k]), label)[0].verified
    fine = np.linspace(coarse[k - 1], (coarse[k] + coarse[k + 1]) / 2, 18)[1:-1]
    probes = []
    bound = oracle._verify_bounds
    oracle._verify_bounds = lambda lo, hi, lab: probes.append(float(hi.sum() - lo.sum())) or bound(lo, hi, lab)
    again = oracle.verify(*_cubes(x, fine), label)
    assert [p.verdict for p in plain.verify(*_cubes(x, fine), label)] == [q.verdict for q in again]
    lo, hi = _cubes(x, fine)
    widths = (hi - lo).sum(axis=1)
    first = int(np.argmin(np.abs(widths - probes[0])))
    assert first != len(fine) // 2, "the first probe is the estimate's, not the bisection's"
    assert len(probes) <= 3, "extrapolated probes settle the crossing in fewer bounds than log2(16)"


@pytest.mark.parametrize("name", GRAPHS)
def test_compact_sub_domain_relaxations_give_the_full_relaxations_bound(name):
    """Branch and bound's sub-domains keep only the box's unstable neurons: the backward
    pass with those compact relaxations (and split terms) gives the coefficients of the
    full-width pass, and a bound as sound (its rounding charged at the box's scale)."""
    from oracles.bounds import relu_relaxation
    from oracles.graph_bounds import NodeBounds, backward, concretize_wide, node_bounds
    from oracles.milp_graph import relu_nodes

    g = GRAPHS[name]()
    gt = GraphTensors.of(g)
    rng = np.random.default_rng(5)
    x = rng.random((1, g.n_inputs))
    lo, hi = box_tensors(x - 0.1, x + 0.1)
    nb = node_bounds(gt, lo, hi)
    n = 6
    spec = torch.tensor(rng.normal(size=(n, 2, g.n_classes)))
    full_relax, compact, full_terms, terms = {}, {}, {}, {}
    for k in relu_nodes(g):
        u = g.nodes[k].inputs[0]
        lb, ub = nb.lower[u].flatten(1).expand(n, -1).clone(), nb.upper[u].flatten(1).expand(n, -1).clone()
        cols = nb.relax[k].upper_intercept[0].ne(0).nonzero()[:, 0]
        assert cols.numel(), "the box leaves some neuron unstable"
        phase = torch.tensor(rng.integers(-1, 2, size=(n, cols.numel())), dtype=torch.float64)
        sub_lb = torch.where(phase > 0, lb[:, cols].clamp(min=0), lb[:, cols])
        sub_ub = torch.where(phase < 0, ub[:, cols].clamp(max=0), ub[:, cols])
        alpha = torch.tensor(rng.random((n, 2, cols.numel())))
        beta = torch.tensor(rng.random((n, 2, cols.numel())))
        lb[:, cols], ub[:, cols] = sub_lb, sub_ub
        full_alpha = torch.zeros(n, 2, lb.shape[1], dtype=torch.float64)
        full_alpha[:, :, cols] = alpha
        full_relax[k] = relu_relaxation(lb, ub, alpha=full_alpha)
        compact[k] = (cols, relu_relaxation(sub_lb, sub_ub, alpha=alpha))
        terms[k] = -beta * phase.unsqueeze(1)
        full_terms[k] = torch.zeros(n, 2, lb.shape[1], dtype=torch.float64)
        full_terms[k][:, :, cols] = terms[k]

    def each(t):
        return t.expand(n, *t.shape[1:])

    wide = NodeBounds([each(a) for a in nb.lower], [each(a) for a in nb.upper], [each(a) for a in nb.scale],
                      {k: each(a) for k, a in nb.terms.items()}, full_relax, each(nb.invalid))
    box = NodeBounds(wide.lower, wide.upper, wide.scale, wide.terms, nb.relax, wide.invalid)
    target = len(g.nodes) - 1
    kept_full, kept = {}, {}
    a = backward(gt, wide, target, spec, split_terms=full_terms, keep=kept_full)
    b = backward(gt, box, target, spec, split_terms=terms, keep=kept, compact=compact)
    np.testing.assert_allclose(b.coef.numpy(), a.coef.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.const.numpy(), a.const.numpy(), rtol=1e-12, atol=1e-14)
    # the same rounding cover but for the split terms' sums, charged on the unstable neurons
    # only (the full pass charges every neuron, where most add an exact zero)
    assert torch.allclose(b.error, a.error, rtol=0.5)
    for k, (cols, _) in compact.items():
        np.testing.assert_array_equal(kept[k].numpy(), kept_full[k].flatten(2)[:, :, cols].numpy())
    va, vb = concretize_wide(a, each(lo), each(hi)), concretize_wide(b, each(lo), each(hi))
    assert torch.allclose(vb, va, rtol=1e-9, atol=1e-7)  # apart from the rounding covers


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_layers_with_few_unstable_neurons_are_pulled_back_on_their_columns_with_the_same_bounds(
        dtype, monkeypatch):
    """A ReLU layer whose unstable neurons are few is pulled back on their columns only (the
    other slopes are exact 0s and 1s): the dense pass's bounds, a little tighter where the
    dense pass charged rounding to exact products."""
    import oracles.graph_backward as gb

    sparse_layers = []
    columns = gb._inexact_columns

    def counted(*args):
        cols = columns(*args)
        sparse_layers.append(cols is not None)
        return cols

    monkeypatch.setattr(gb, "_inexact_columns", counted)
    rng = np.random.default_rng(5)
    for g in [small_cnn(), residual(), _conv_chain(1), _residual_convs(1)]:
        x = rng.random((3, g.n_inputs))
        lo, hi = np.clip(x - 0.01, 0, 1), np.clip(x + 0.01, 0, 1)
        monkeypatch.setattr(gb, "SPARSE_SHARE", 0.25)
        sparse = CrownOracle(g, dtype=dtype).margin_lower_bounds(lo, hi, 0)
        monkeypatch.setattr(gb, "SPARSE_SHARE", -1.0)
        dense = CrownOracle(g, dtype=dtype).margin_lower_bounds(lo, hi, 0)
        assert np.isfinite(sparse).all()
        scale = 1 + np.abs(dense)
        assert (sparse >= dense - 1e-12 * scale).all()
        assert (sparse <= dense + (1e-8 if dtype == "float64" else 1e-3) * scale).all()
    assert any(sparse_layers), "some layer took the columns' pass"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_side_first_bounds_fewer_rows_with_the_same_margins_below_every_sampled_margin(dtype, monkeypatch):
    """CROWN bounds the side a neuron's value at the box's center favours first (the lower
    bound of one positive there: proving it active settles it) and the other side only
    where the neuron is still unstable: fewer rows; the same margins up to the rounding
    charged on a stable neuron's looser other side; below every sampled margin."""
    import oracles.graph_bounds as gb

    rows: dict[bool, int] = {True: 0, False: 0}
    signed = gb._signed_bounds

    def counted(*args):
        rows[gb.ONE_SIDE_FIRST] += args[7].numel()  # the (neuron, sign) rows bounded
        return signed(*args)

    monkeypatch.setattr(gb, "_signed_bounds", counted)
    monkeypatch.setattr(gb, "CHUNK_ELEMENTS", {4: 2**12, 8: 2**12})  # several chunks: one side first applies
    rng = np.random.default_rng(2)
    for g in [small_cnn(), residual(), _conv_chain(0), _residual_convs(1)]:
        x = rng.random((2, g.n_inputs))
        lo, hi = x - 0.02, x + 0.02
        monkeypatch.setattr(gb, "ONE_SIDE_FIRST", False)
        both = CrownOracle(g, dtype=dtype, float32_first=False).margin_lower_bounds(lo, hi, 0)
        monkeypatch.setattr(gb, "ONE_SIDE_FIRST", True)
        first = CrownOracle(g, dtype=dtype, float32_first=False).margin_lower_bounds(lo, hi, 0)
        assert np.isfinite(first).all()
        scale = 1 + np.abs(both)
        np.testing.assert_allclose(first, both, rtol=0, atol=(1e-6 if dtype == "float64" else 1e-2) * scale.max())
        assert (first.min(axis=1) <= _sampled_margins(g, x, 0.02, 0, rng, k=300)).all()
    assert rows[True] < rows[False]


def _float32_first_rows(monkeypatch) -> dict[torch.dtype, int]:
    """Counts the (neuron, sign) rows :func:`_signed_bounds` bounds, per dtype; chunks small
    enough that one side first (and so float32 first sides) applies on the tiny nets."""
    import oracles.graph_bounds as gb

    rows: dict[torch.dtype, int] = {torch.float32: 0, torch.float64: 0}
    signed = gb._signed_bounds

    def counted(*args):
        rows[args[0].dtype] += args[7].numel()
        return signed(*args)

    monkeypatch.setattr(gb, "_signed_bounds", counted)
    monkeypatch.setattr(gb, "CHUNK_ELEMENTS", {4: 2**10, 8: 2**10})
    return rows


def test_float32_first_sides_settle_the_same_neurons_with_the_float64_margins(monkeypatch):
    """With ``float32_first``, the first side of each neuron is bounded in float32 (fewer
    float64 rows) and both sides in float64 where that leaves it unstable: the same
    neurons proven stable, the float64 bounds of the neurons still unstable, so the
    margins are the float64 ones up to a settled neuron's proven side, which holds its
    (looser) float32 bound where it feeds later interval bounds; below every sampled margin."""
    from oracles.graph_bounds import node_bounds

    rows = _float32_first_rows(monkeypatch)
    rng = np.random.default_rng(3)
    f64_rows = {False: 0, True: 0}
    for g in [small_cnn(), residual(), _conv_chain(0), _conv_chain(2), _residual_convs(1)]:
        x = rng.random((2, g.n_inputs))
        lo, hi = box_tensors(x - 0.05, x + 0.05)
        plain, fast = GraphTensors.of(g), GraphTensors.of(g, float32_first=True)
        assert fast.float32_first is not None and fast.float32_first.dtype == torch.float32
        before = rows[torch.float64]
        a = node_bounds(plain, lo, hi)
        middle = rows[torch.float64]
        b = node_bounds(fast, lo, hi)
        f64_rows[False] += middle - before
        f64_rows[True] += rows[torch.float64] - middle
        for k in a.relax:
            assert torch.equal(a.relax[k].exact, b.relax[k].exact), (g.name, k)
        m_plain = margin_lower_bounds(plain, lo, hi, 0).numpy()
        m_fast = margin_lower_bounds(fast, lo, hi, 0).numpy()
        np.testing.assert_allclose(m_fast, m_plain, rtol=0, atol=1e-6 * (1 + np.abs(m_plain).max()))
        assert (m_fast.min(axis=1) <= _sampled_margins(g, x, 0.05, 0, rng, k=300)).all()
    assert rows[torch.float32] > 0 and f64_rows[True] < f64_rows[False]


def test_the_float32_first_sides_run_at_full_precision_within_a_callers_autocast(monkeypatch):
    """The float32 passes of a float64 call run as :func:`~oracles.precision.sound_kernels`
    orders for float32 (a caller's autocast would run its convolutions in bfloat16): the
    same bounds inside a caller's ``torch.autocast`` block as outside."""
    _float32_first_rows(monkeypatch)
    g = _conv_chain(0)
    x = np.random.default_rng(8).random((2, g.n_inputs))
    lo, hi = box_tensors(x - 0.05, x + 0.05)
    gt = GraphTensors.of(g, float32_first=True)
    plain = margin_lower_bounds(gt, lo, hi, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = margin_lower_bounds(gt, lo, hi, 0)
    assert torch.equal(inside, plain)


def test_float32_first_sides_are_the_crown_oracles_default_on_graphs_in_float64():
    g = small_cnn()
    assert CrownOracle(g).settings()["float32_first"] is True
    assert CrownOracle(g).graph_tensors.float32_first is not None
    assert CrownOracle(g, dtype="float32").settings()["float32_first"] is False
    assert CrownOracle(g, float32_first=False).graph_tensors.float32_first is None


def test_rows_are_chunked_by_box_where_a_box_fills_half_a_chunk():
    """A box with half a chunk of rows or more gets chunks of its own (its bounds read as a
    broadcast view, not copied per row); the other boxes' rows share chunks; every row once,
    in order, no chunk larger than asked."""
    from oracles.graph_bounds import _box_chunks

    box = torch.tensor([0] * 100 + [1] * 3 + [2] * 5 + [3] * 70 + [4] * 2)
    chunks = _box_chunks(box, 64)
    assert chunks == [(0, 64), (64, 100), (100, 108), (108, 172), (172, 178), (178, 180)]
    for n, chunk in ((0, 8), (1, 1), (25, 8), (300, 16)):
        b = torch.sort(torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(n))).values
        got = _box_chunks(b, chunk)
        assert [i for s, e in got for i in range(s, e)] == list(range(n))
        assert all(0 < e - s <= chunk for s, e in got)
        for s, e in got:
            if int((b == b[s]).sum()) * 2 >= chunk:
                assert bool((b[s:e] == b[s]).all())


def test_a_crown_call_leaves_cached_tensors_that_a_differentiated_pass_can_use():
    """CROWN's margin bounds run under ``torch.inference_mode``; the tensors they cache on the
    graph's nodes (weights, window kernels and matrices, window masks) are ordinary ones, so
    a later differentiated pass on the same graph (alpha-CROWN, a gradient search) works."""
    from oracles.crown import AlphaCrownOracle

    g = _conv_chain(0)
    x = np.random.default_rng(4).random((2, g.n_inputs))
    crown = CrownOracle(g)
    assert crown.graph_tensors.windows
    first = crown.margin_lower_bounds(x - 0.05, x + 0.05, 0)
    lo = torch.tensor(x - 0.05, requires_grad=True)
    bounds = crown.differentiable_margin_bounds(lo, torch.tensor(x + 0.05), 0)
    bounds.sum().backward()
    assert lo.grad is not None and bool(torch.isfinite(lo.grad).all())
    np.testing.assert_allclose(bounds.detach().numpy(), first, rtol=1e-12, atol=1e-12)
    alpha = AlphaCrownOracle(g, steps=2).margin_lower_bounds(x - 0.05, x + 0.05, 0)
    assert (alpha >= first - 1e-9 * (1 + np.abs(first))).all()
