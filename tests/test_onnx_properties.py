"""The ONNX importer computes what onnxruntime computes, for random small networks
(hypothesis): Gemm and MatMul layers, convolutions, and input normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from tests.nets import make_model, ort_forward, tensor
from tests.test_onnx_import import assert_same_as_onnxruntime

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to compare outputs")


def normalisation(data: st.DataObject, rng: np.random.Generator, channels: int, x: str = "x"):
    """Optional ``(x - mean) / std * scale`` with scalar or per-channel constants
    (broadcast over ``(N, C, ...)``): nodes, initializers, and the normalised tensor's name."""
    nodes, inits = [], []
    rank = data.draw(st.sampled_from([0, 1]), label="per-channel")  # scalar or one value per channel
    shape = () if rank == 0 else (channels, 1, 1)
    for op, name, low, high in (("Sub", "mean", -0.5, 0.5), ("Div", "std", 0.2, 2.0), ("Mul", "scale", 0.5, 3.0)):
        if data.draw(st.booleans(), label=op):
            inits.append(tensor(name, rng.uniform(low, high, shape).astype(np.float32)))
            nodes.append(helper.make_node(op, [x, name], [f"{name}_out"]))
            x = f"{name}_out"
    return nodes, inits, x


def dense_layers(data: st.DataObject, rng: np.random.Generator, x: str, width: int, classes: int):
    """1-3 affine layers (Gemm with random transB/alpha/beta, or MatMul then Add with the
    constant on either side), ReLU between them, ending in ``y``."""
    depth = data.draw(st.integers(1, 3), label="depth")
    sizes = [width] + [data.draw(st.integers(2, 8), label="hidden") for _ in range(depth - 1)] + [classes]
    nodes, inits = [], []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0, 1 / np.sqrt(a), (b, a)).astype(np.float32)
        bias = rng.normal(0, 0.3, b).astype(np.float32)
        out = "y" if i == depth - 1 else f"h{i}"
        if data.draw(st.booleans(), label="gemm"):
            trans_b = data.draw(st.booleans(), label="transB")
            alpha, beta = data.draw(st.sampled_from([(1.0, 1.0), (0.5, 2.0), (-1.0, 0.25)]), label="alpha, beta")
            inits += [tensor(f"W{i}", w if trans_b else w.T.copy()), tensor(f"B{i}", bias)]
            nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [out + "_pre" if i < depth - 1 else out],
                                          transB=int(trans_b), alpha=alpha, beta=beta))
        else:
            inits += [tensor(f"W{i}", w.T.copy()), tensor(f"B{i}", bias)]
            add_in = [f"B{i}", f"m{i}"] if data.draw(st.booleans(), label="bias first") else [f"m{i}", f"B{i}"]
            nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"m{i}"]),
                      helper.make_node("Add", add_in, [out + "_pre" if i < depth - 1 else out])]
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        x = out
    return nodes, inits


@settings(max_examples=100)
@given(st.data(), st.integers(0, 2**16))
def test_random_dense_networks_with_normalisation_match_onnxruntime(data, seed):
    rng = np.random.default_rng(seed)
    channels, side = data.draw(st.integers(1, 3), label="channels"), data.draw(st.integers(1, 4), label="side")
    norm_nodes, norm_inits, x = normalisation(data, rng, channels)
    flat = [helper.make_node("Flatten", [x], ["flat"])]
    nodes, inits = dense_layers(data, rng, "flat", channels * side * side, data.draw(st.integers(2, 5)))
    model = make_model(norm_nodes + flat + nodes, ["N", channels, side, side], initializers=norm_inits + inits)
    assert_same_as_onnxruntime(model, (8, channels, side, side), seed)


@settings(max_examples=80)
@given(st.data(), st.integers(0, 2**16))
def test_random_convolutional_networks_with_normalisation_match_onnxruntime(data, seed):
    rng = np.random.default_rng(seed)
    channels, side = data.draw(st.integers(1, 2), label="channels"), data.draw(st.integers(4, 7), label="side")
    in_channels = channels
    nodes, inits, x = normalisation(data, rng, channels)
    for i in range(data.draw(st.integers(1, 2), label="conv layers")):
        out_channels = data.draw(st.sampled_from([2, 4]), label="out channels")
        group = data.draw(st.sampled_from([g for g in (1, 2) if channels % g == 0 and out_channels % g == 0]))
        k = data.draw(st.integers(1, 3), label="kernel")
        attrs = dict(strides=[data.draw(st.integers(1, 2), label="stride")] * 2,
                     pads=[data.draw(st.integers(0, 1), label="pad")] * 4)
        w = rng.normal(0, 0.6, (out_channels, channels // group, k, k)).astype(np.float32)
        inits += [tensor(f"K{i}", w), tensor(f"KB{i}", rng.normal(0, 0.1, out_channels).astype(np.float32))]
        nodes += [helper.make_node("Conv", [x, f"K{i}", f"KB{i}"], [f"c{i}"], group=group, **attrs),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, channels = f"r{i}", out_channels
    nodes.append(helper.make_node("Flatten", [x], ["flat"]))
    width = ort_forward(make_model(nodes, ["N", in_channels, side, side], output="flat", initializers=inits),
                        np.zeros((1, in_channels, side, side), np.float32)).shape[1]
    dense, dense_inits = dense_layers(data, rng, "flat", width, data.draw(st.integers(2, 4), label="classes"))
    model = make_model(nodes + dense, ["N", in_channels, side, side], initializers=inits + dense_inits)
    assert_same_as_onnxruntime(model, (8, in_channels, side, side), seed)
