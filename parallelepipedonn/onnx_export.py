"""The network IR → a standard ONNX model (Flatten, Gemm, Relu), float32 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelError
from .io_utils import atomic_write_bytes
from .network import Affine, Network

OPSET = 17


def _float32(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` rounded to float32, or :class:`ModelError` where a finite number overflows it
    (the file would hold infinities the network does not)."""
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if not np.isfinite(out).all() and np.isfinite(a).all():
        raise ModelError(f"{what} reach {float(np.abs(a).max()):.3g}, beyond float32's range: the network cannot "
                         "be written as a float32 ONNX model")
    return out


def chain_nodes(net: Network, current: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                prefix: str = "") -> str:
    """Append the nodes of ``net``'s layers (Gemm with float32 weights, Relu) after the
    tensor ``current`` (the flattened input); the name of the last tensor."""
    k = 0
    for layer in net.layers:
        if isinstance(layer, Affine):
            w, b = f"{prefix}W{k}", f"{prefix}B{k}"
            inits.append(numpy_helper.from_array(_float32(layer.weight, f"layer {2 * k}'s weights"), w))
            inits.append(numpy_helper.from_array(_float32(layer.bias, f"layer {2 * k}'s bias"), b))
            out = f"{prefix}gemm{k}"
            nodes.append(helper.make_node("Gemm", [current, w, b], [out], transB=1, name=f"{prefix}dense{k}"))
            current, k = out, k + 1
        else:
            out = f"{prefix}relu{k - 1}"
            nodes.append(helper.make_node("Relu", [current], [out], name=out))
            current = out
    return current


def input_nodes(net: Network, nodes: list[onnx.NodeProto]) -> str:
    """The Flatten of an input of several dimensions (appended to ``nodes``); the name of
    the flattened input."""
    if len(net.input_shape) != 1:
        nodes.append(helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flatten"))
        return "flat"
    return "input"


def finish_model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str,
                 input_shape: tuple[int, ...], n_outputs: int, doc: str = "") -> onnx.ModelProto:
    """The checked model of ``nodes`` whose last node's output is renamed ``logits``."""
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_outputs])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="parallelepipedonn", doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def network_to_onnx(net: Network, doc: str = "") -> onnx.ModelProto:
    """An ONNX model with input ``[N, *input_shape]`` and output ``[N, n_classes]``.

    Weights are rounded to float32; re-importing the model gives the IR of that rounding.
    A :class:`~parallelepipedonn.graph.Graph` (convolutions, residual connections) is
    not written: :class:`ModelError`.
    """
    if not isinstance(net, Network):
        raise ModelError(f"only a chain network is written as ONNX here, not a {type(net).__name__} (the model "
                         "file it was read from is its ONNX form)")
    if net.zero_outputs:  # its constant 0 score would become an output: the file a classifier
        raise ModelError(f"the network has {net.n_outputs} output(s) and a constant 0 score the importer added; "
                         "the model file it was read from is its ONNX form")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    chain_nodes(net, input_nodes(net, nodes), nodes, inits)
    return finish_model(nodes, inits, net.name or "parallelepipedonn", net.input_shape, net.n_classes, doc)


def save_onnx(net: Network, path: str | Path, doc: str = "") -> None:
    """Write the network as ONNX (atomically)."""
    atomic_write_bytes(Path(path), network_to_onnx(net, doc).SerializeToString())
