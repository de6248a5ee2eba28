"""The DAG IR: its float64 forward is the network's, its linear nodes apply W, W^T and
|W| consistently (convolutions never as dense matrices), its rounding-error bound holds,
its exact evaluation decides ties, and chains convert both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.errors import LabelError, ModelError
from parallelepipedonn.graph import Graph
from tests.graph_nets import Builder, mixed, residual, small_cnn, transposed
from tests.nets import random_network

GRAPHS = {"small_cnn": small_cnn, "residual": residual, "mixed": mixed, "transposed": transposed}


def _odd_convs() -> list[gn.LinearNode]:
    b = Builder((4, 7, 9), seed=3)
    b.conv(0, 6, (3, 2), stride=2, pad=(1, 0, 2, 1))
    b.conv(0, 4, 3, stride=3, pad=2, dilation=2, groups=2)
    b.conv(0, 8, (1, 5), stride=(1), pad=(0, 2, 0, 3), groups=4)
    b.conv(0, 2, 4, stride=2, pad=1)
    b.avgpool(0, 3, 2, pad=1)
    b.avgpool(0, 2, 3, pad=1, include_pad=True)
    b.avgpool(0, 3, 2)
    b.pad(0, (1, 0, 2, 0, 3, 1))
    b.transpose(0, (2, 0, 1))
    return [n for n in b.nodes[1:]]


def _linear_nodes() -> list[gn.LinearNode]:
    nodes = _odd_convs()
    for make in GRAPHS.values():
        nodes += [n for n in make().nodes if isinstance(n, gn.LinearNode)]
    return nodes


def _dense(node: gn.LinearNode, absolute: bool = False) -> torch.Tensor:
    """The node's matrix, built column by column (tests only: tiny nodes)."""
    n = int(np.prod(node.in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *node.in_shape)
    cols = (node.apply_abs if absolute else node.apply)(eye)
    return cols.reshape(n, -1).T


# -- forward --------------------------------------------------------------------------------
def test_the_small_cnn_computes_what_torch_computes():
    g = small_cnn()
    conv, pool, d1, d2 = (g.nodes[i] for i in (1, 3, 5, 7))
    x = torch.tensor(np.random.default_rng(0).random((6, 2, 7, 7)))
    h = F.relu(F.conv2d(x, torch.tensor(conv.weight), torch.tensor(conv.bias_), stride=2, padding=1))
    h = F.avg_pool2d(h, 2, 1).flatten(1)
    h = F.relu(h @ torch.tensor(d1.weight).T + torch.tensor(d1.bias_))
    ref = h @ torch.tensor(d2.weight).T + torch.tensor(d2.bias_)
    np.testing.assert_allclose(g.forward(x.numpy()), ref.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g.to_torch(torch.float32)(x.reshape(6, -1)).numpy(), ref.numpy(), atol=1e-5)


def test_average_pooling_counts_only_the_input_by_default_as_onnx():
    b = Builder((1, 3, 3))
    b.avgpool(0, 2, 2, pad=1)
    node = b.nodes[1]
    x = torch.arange(9.0, dtype=torch.float64).reshape(1, 1, 3, 3)
    expected = F.avg_pool2d(x, 2, 2, padding=1, count_include_pad=False)
    np.testing.assert_allclose(node.apply(x).numpy(), expected.numpy(), rtol=1e-15)
    b2 = Builder((1, 3, 3))
    b2.avgpool(0, 2, 2, pad=1, include_pad=True)
    np.testing.assert_allclose(b2.nodes[1].apply(x).numpy(),
                               F.avg_pool2d(x, 2, 2, padding=1, count_include_pad=True).numpy(), rtol=1e-15)


# -- linear nodes ---------------------------------------------------------------------------
@pytest.mark.parametrize("i", range(len(_linear_nodes())))
def test_every_linear_node_transpose_is_the_adjoint(i):
    node = _linear_nodes()[i]
    rng = np.random.default_rng(i)
    x = torch.tensor(rng.normal(size=(3, *node.in_shape)))
    y = torch.tensor(rng.normal(size=(3, *node.shape)))
    lhs = (node.apply(x) * y).flatten(1).sum(1)
    rhs = (x * node.apply_t(y)).flatten(1).sum(1)
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), rtol=1e-12, atol=1e-12)
    lhs_abs = (node.apply_abs(x) * y).flatten(1).sum(1)
    np.testing.assert_allclose(lhs_abs.numpy(), (x * node.apply_abs_t(y)).flatten(1).sum(1).numpy(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("i", range(len(_odd_convs())))
def test_the_absolute_apply_is_the_absolute_matrix_and_rows_are_its_rows(i):
    node = _odd_convs()[i]
    w, w_abs = _dense(node), _dense(node, absolute=True)
    np.testing.assert_allclose(w_abs.numpy(), np.abs(w.numpy()), rtol=1e-15)
    sel = torch.tensor([[0, node.numel - 1, node.numel // 2], [1, 2, 3]])
    rows = node.rows_t(sel, torch.float64).reshape(2, 3, -1)
    np.testing.assert_array_equal(rows.numpy(), w.numpy()[sel.numpy()])


def test_fan_in_and_fan_out_bound_the_terms_of_each_sum():
    for node in _odd_convs():
        nnz = (_dense(node) != 0).numpy()
        assert nnz.sum(axis=1).max() <= node.fan_in
        assert nnz.sum(axis=0).max() <= node.fan_out


@pytest.mark.parametrize("kernel, stride, dilation", [(3, 2, 2), (4, 2, 4), (3, 3, 3), (2, 4, 2), (4, 2, 1),
                                                      (3, 4, 6), (5, 3, 2), (2, 2, 3)])
def test_fan_out_counts_every_tap_that_reads_one_input_when_stride_and_dilation_share_a_factor(kernel, stride,
                                                                                               dilation):
    """Where the stride and the dilation share a factor, one input is read by more taps
    than ``ceil(k / s)`` per axis (all ``k`` when ``s`` divides ``d``): the float32 slack of
    the transposed convolution's sums is sized by this count (it once ignored dilation, and
    float32 bounds came out above the exact margin)."""
    b = Builder((2, 30, 30), seed=1)
    size = (dilation * (kernel - 1) + 1 + stride)  # at least two windows per axis
    b.conv(0, 2, kernel, stride=stride, dilation=dilation)
    node = b.nodes[1]
    pool = gn.AvgPool2d(inputs=(0,), shape=node.shape, in_shape=(2, 30, 30), kernel=(kernel, kernel),
                        stride=(stride, stride), dilation=(dilation, dilation))
    assert node.shape[1] >= 2 and 30 >= size
    for n in (node, pool):
        taps = (_dense(n) != 0).numpy().sum(axis=0).max()
        assert taps <= n.fan_out
        assert taps == n.fan_out  # maps large enough: the count is reached (so it is the count, not a loose bound)


@pytest.mark.parametrize("big_tap", [0, -1])
def test_the_float32_transposed_convolution_rounds_within_the_slack_of_its_fan_out(big_tap):
    """``W^T y`` in float32 is off by at most ``relative_slack(fan_out)`` times ``|W|^T |y|``
    (the bound the backward pass charges), on a sum built to round at every term: one tap
    of 1 and 63 of just over half its unit roundoff, which round up one by one when the 1
    comes first. Kernel, stride and dilation 8: all 64 taps of the kernel read one input."""
    from parallelepipedonn.tolerances import relative_slack

    k, ho = 8, 8
    h = (ho - 1) * k + k * (k - 1) + 1
    w = np.full((1, 1, k, k), 2.0**-24 * (1 + 2.0**-10))
    w.reshape(-1)[big_tap] = 1.0
    node = gn.Conv2d(inputs=(0,), shape=(1, ho, ho), in_shape=(1, h, h), weight=w, bias_=np.zeros(1),
                     stride=(k, k), dilation=(k, k))
    y = torch.ones(1, 1, ho, ho)
    got = node.apply_t(y).double()
    exact = node.apply_t(y.double())  # sums of 64 products of float32 numbers: exact in float64 here
    allowed = relative_slack(node.fan_out, torch.float32) * node.apply_abs_t(y.double().abs())
    assert (got - exact).abs().max() > 0  # the sums did round
    assert ((got - exact).abs() <= allowed).all()  # 63 units of roundoff with the 1 first: above fan-out 1's 36
    assert node.fan_out == k * k


def test_a_convolution_applies_no_dense_matrix():
    """Conv2d's four applies are convolutions: no tensor of in x out elements, and the
    only weights it keeps are its kernels."""
    b = Builder((3, 32, 32))
    b.conv(0, 16, 3, pad=1)
    node = b.nodes[1]
    biggest = []
    for apply in (node.apply, node.apply_abs):
        biggest.append(apply(torch.ones(1, 3, 32, 32, dtype=torch.float64)).numel())
    for apply in (node.apply_t, node.apply_abs_t):
        biggest.append(apply(torch.ones(1, 16, 32, 32, dtype=torch.float64)).numel())
    assert max(biggest) == 16 * 32 * 32
    assert all(v.numel() <= 16 * 3 * 9 for v in node._cache.values() if isinstance(v, torch.Tensor))


# -- the graph -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRAPHS)
def test_the_rounding_error_bound_contains_the_exact_margin(name):
    g = GRAPHS[name]()
    x = np.random.default_rng(1).random((6, g.n_inputs))
    for label in range(g.n_classes):
        margin, err = g.margin_errors(x, label)
        exact = np.array([float(g.exact_margin(p, label)) for p in x])
        assert (np.abs(exact - margin) <= err).all()
        assert (err < 1e-10).all()
        np.testing.assert_array_equal(g.misclassified(x, label), exact <= 0)


def test_a_tie_is_decided_in_exact_arithmetic():
    b = Builder((1, 3, 3), seed=2)
    h = b.flatten(b.relu(b.conv(0, 2, 2)))
    (n,) = b.shape(h)
    row = np.random.default_rng(0).normal(size=n)
    b.dense(h, 2, weight=np.stack([row, row]), bias=np.array([0.1, 0.1]))
    g = b.graph()
    x = np.random.default_rng(1).random((3, 9))
    assert (g.exact_margin(x[0], 0) == 0) and g.misclassified(x, 0).all() and g.misclassified(x, 1).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_exact_arithmetic_refuses_a_point_that_is_not_finite(value):
    """As a chain's exact margin does (rationals of a NaN or inf do not exist): the graph's
    integer arithmetic read NaN and inf as invented integers (an exact margin of -1024)."""
    g = GRAPHS[next(iter(GRAPHS))]()
    x = np.full(g.n_inputs, 0.5)
    x[0] = value
    with pytest.raises(ValueError, match="not a finite number"):
        g.exact_margin(x, 0)


def test_chains_convert_both_ways_with_the_same_semantics():
    net = random_network(0, [12, 7, 5, 3], input_shape=(3, 4))
    g = Graph.from_network(net)
    x = np.random.default_rng(0).random((10, 12))
    np.testing.assert_allclose(g.forward(x), net.forward(x), rtol=1e-13, atol=1e-13)
    back = g.as_network()
    assert back is not None and back.digest == net.digest and g.is_chain
    assert g.exact_margin(x[0], 1) == net.exact_margin(x[0], 1)
    for make in GRAPHS.values():
        assert make().as_network() is None


def test_the_graph_answers_the_network_interface_and_refuses_bad_input():
    g = small_cnn()
    assert (g.input_shape, g.n_inputs, g.n_classes) == ((2, 7, 7), 98, 3)
    assert "conv2d" in g.describe() and len(g.digest) == 64 and g.digest != small_cnn(seed=1).digest
    assert g.digest == small_cnn().digest
    x = np.random.default_rng(0).random((4, 2, 7, 7))
    assert g.forward(x).shape == (4, 3) and g.predict(x).shape == (4,)
    with pytest.raises(LabelError):
        g.margins(x, 3)
    with pytest.raises(ModelError, match="topological"):
        Graph((2,), (gn.Input(inputs=(), shape=(2,)), gn.ReLU(inputs=(2,), shape=(2,)),
                     gn.ReLU(inputs=(1,), shape=(2,))))
    with pytest.raises(ModelError, match="expects input shape"):
        Graph((3,), (gn.Input(inputs=(), shape=(3,)),
                     gn.Dense(inputs=(0,), shape=(2,), in_shape=(2,), weight=np.ones((2, 2)), bias_=np.zeros(2))))
    with pytest.raises(ModelError, match="NaN"):
        gn.Dense(inputs=(0,), shape=(2,), in_shape=(2,), weight=np.full((2, 2), np.nan), bias_=np.zeros(2))


def test_input_gradients_are_torchs_bit_for_bit():
    """``conv2d_input`` (which hands the kernel an uninitialised placeholder for the input it
    reads only for its shape) gives torch.nn.grad's numbers bit for bit, with groups,
    dilation, strides, asymmetric padding, numpy integers and both dtypes; outside the
    few-channel float32 strided case, where it picks torch's own kernel on purpose (below)."""
    import random

    import torch

    from parallelepipedonn.graph_nodes import FEW_CHANNELS, conv2d_input

    rnd, g = random.Random(0), torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(60):
        groups = rnd.choice([1, 2])
        c_in, c_out = groups * rnd.randint(1, 4), groups * rnd.randint(1, 3)
        k, s, d, p = ([rnd.randint(1, hi) for _ in range(2)] for hi in (3, 3, 2, 2))
        size = (rnd.choice([1, 4]), c_in, rnd.randint(k[0] * d[0], 10), rnd.randint(k[1] * d[1], 10))
        dtype = rnd.choice([torch.float32, torch.float64])
        if dtype == torch.float32 and c_in <= FEW_CHANNELS and max(s) > 1:
            continue
        w = torch.randn(c_out, c_in // groups, *k, generator=g, dtype=dtype)
        out = torch.nn.functional.conv2d(torch.zeros(size, dtype=dtype), w, stride=s, padding=p, dilation=d,
                                         groups=groups)
        y = torch.randn(out.shape, generator=g, dtype=dtype)
        got = conv2d_input(size, w, y, stride=(np.int64(s[0]), s[1]), padding=p, dilation=d, groups=groups)
        ref = torch.nn.grad.conv2d_input(size, w, y, stride=tuple(s), padding=tuple(p), dilation=tuple(d),
                                         groups=groups)
        assert torch.equal(got, ref)
        checked += 1
    assert checked >= 30


def test_float32_input_gradients_onto_few_channels_are_the_convolutions_sums():
    """A strided convolution's input gradient onto 3 channels in float32 runs torch's own
    kernel (faster there than oneDNN's): the same sums as the float64 reference, up to
    float32 rounding, and oneDNN's settings are left as they were."""
    import torch

    from parallelepipedonn.graph_nodes import conv2d_input

    g = torch.Generator().manual_seed(0)
    w, y = torch.randn(8, 3, 3, 3, generator=g), torch.randn(5, 8, 11, 11, generator=g)
    before = torch.backends.mkldnn.enabled, torch.backends.mkldnn.fp32_precision
    got = conv2d_input((5, 3, 23, 23), w, y, stride=(2, 2))
    ref = torch.nn.grad.conv2d_input((5, 3, 23, 23), w.double(), y.double(), stride=(2, 2))
    assert (torch.backends.mkldnn.enabled, torch.backends.mkldnn.fp32_precision) == before
    bound = 8 * 9 * 2 ** -23 * torch.nn.grad.conv2d_input((5, 3, 23, 23), w.double().abs(), y.double().abs(),
                                                          stride=(2, 2))
    assert got.dtype == torch.float32 and ((got.double() - ref).abs() <= bound).all()
