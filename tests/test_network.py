"""The network IR: canonical form, shape checks, float64 semantics, torch module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parallelepipedonn.errors import LabelError, ModelError
from parallelepipedonn.network import Affine, Network, ReLU
from tests.nets import random_network


def test_from_layers_merges_consecutive_affine_maps_and_relus(rng):
    a1 = Affine(rng.normal(size=(4, 3)), rng.normal(size=4))
    a2 = Affine(rng.normal(size=(5, 4)), rng.normal(size=5))
    a3 = Affine(rng.normal(size=(2, 5)), rng.normal(size=2))
    net = Network.from_layers((3,), [a1, a2, ReLU(), ReLU(), a3])
    assert [type(layer).__name__ for layer in net.layers] == ["Affine", "ReLU", "Affine"]
    x = rng.random((7, 3))
    expected = np.maximum((x @ a1.weight.T + a1.bias) @ a2.weight.T + a2.bias, 0) @ a3.weight.T + a3.bias
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-12)


def test_leading_or_trailing_relu_gets_an_identity_map(rng):
    a = Affine(rng.normal(size=(2, 3)), rng.normal(size=2))
    net = Network.from_layers((3,), [ReLU(), a, ReLU()])
    x = rng.normal(size=(5, 3))
    np.testing.assert_allclose(net.forward(x), np.maximum(np.maximum(x, 0) @ a.weight.T + a.bias, 0))


def test_shape_mismatch_is_rejected(rng):
    with pytest.raises(ModelError, match="layer 2 expects 5 inputs, gets 4"):
        Network((3,), (Affine(rng.normal(size=(4, 3)), np.zeros(4)), ReLU(), Affine(np.ones((2, 4 + 1)), np.zeros(2))))


def test_a_single_output_is_not_a_classifier():
    with pytest.raises(ModelError, match="at least 2"):
        Network((3,), (Affine(np.ones((1, 3)), np.zeros(1)),))


def test_parameters_must_be_finite():
    with pytest.raises(ModelError, match="NaN"):
        Affine(np.array([[np.nan, 1.0]]), np.zeros(1))


def test_weights_are_read_only(rng):
    a = Affine(rng.normal(size=(2, 3)), np.zeros(2))
    with pytest.raises(ValueError):
        a.weight[0, 0] = 1.0


def test_forward_accepts_flat_or_shaped_points():
    net = random_network(0, [12, 5, 3], input_shape=(3, 4))
    x = np.random.default_rng(0).random((2, 3, 4))
    np.testing.assert_array_equal(net.forward(x), net.forward(x.reshape(2, 12)))
    np.testing.assert_array_equal(net.forward(x[0]), net.forward(x[0].reshape(1, 12)))


def test_margins_are_label_logit_minus_best_other():
    net = random_network(1, [4, 6, 3])
    x = np.random.default_rng(1).random((10, 4))
    logits = net.forward(x)
    for c in range(3):
        others = np.delete(logits, c, axis=1).max(axis=1)
        np.testing.assert_allclose(net.margins(x, c), logits[:, c] - others)
    with pytest.raises(LabelError):
        net.margins(x, 3)


def test_torch_module_matches_float64_forward():
    net = random_network(2, [8, 16, 16, 4])
    x = np.random.default_rng(2).random((20, 8))
    out = net.to_torch()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(out, net.forward(x), rtol=1e-12, atol=1e-12)
    back = Network.from_torch(net.to_torch(), net.input_shape)
    np.testing.assert_array_equal(back.forward(x), net.forward(x))


def test_digest_identifies_the_parameters():
    assert random_network(3, [4, 5, 2]).digest == random_network(3, [4, 5, 2]).digest
    assert random_network(3, [4, 5, 2]).digest != random_network(4, [4, 5, 2]).digest


def test_a_network_without_hidden_layers_is_described_as_affine_not_relu():
    linear = Network.from_layers((4,), [Affine(np.ones((3, 4)), np.zeros(3))])
    assert linear.describe() == "4-3 affine classifier (no ReLU)"
    assert random_network(0, [4, 5, 3]).describe() == "4-5-3 ReLU network"
