"""Tiny networks and ONNX models that the tests build themselves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from parallelepipedonn.network import Affine, Network, ReLU

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "parallelepipedonn-2.2"


def random_network(seed: int, sizes: Sequence[int], input_shape: Sequence[int] | None = None,
                   scale: float = 1.0, bias: float = 0.3) -> Network:
    """A ReLU MLP with layer widths ``sizes`` (input first, classes last), weights
    ``N(0, scale^2 / fan_in)`` and biases ``N(0, bias^2)``."""
    rng = np.random.default_rng(seed)
    layers: list = []
    for i in range(len(sizes) - 1):
        w = rng.normal(0.0, scale / np.sqrt(sizes[i]), (sizes[i + 1], sizes[i]))
        layers.append(Affine(w, rng.normal(0.0, bias, sizes[i + 1])))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Network.from_layers(tuple(input_shape or (sizes[0],)), layers, name=f"random-{seed}")


def tensor(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def make_model(nodes: list[onnx.NodeProto], input_shape: Sequence[int | str], output: str = "y",
               initializers: Sequence[onnx.TensorProto] = (), opset: int = 17,
               input_name: str = "x") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model).graph.output[0]
    if inferred.type.tensor_type.HasField("shape"):  # give the output its inferred shape, as exporters do
        model.graph.output[0].CopyFrom(inferred)
    else:
        model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "unknown"
    onnx.checker.check_model(model)
    return model


def ort_forward(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Outputs of onnxruntime on a float32 batch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def random_conv_network(seed: int, side: int = 5, channels: int = 2, classes: int = 3) -> Network:
    """A small convolutional ReLU classifier (Conv, Relu, Conv, Relu, Flatten, Gemm) on a
    ``1 × side × side`` input, built as ONNX and imported (so the IR is dense)."""
    from parallelepipedonn.onnx_import import network_from_onnx

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (channels, 1, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.4, (channels, channels, 3, 3)).astype(np.float32)
    b1, b2 = rng.normal(0, 0.1, channels).astype(np.float32), rng.normal(0, 0.1, channels).astype(np.float32)
    width = channels * (side - 4) ** 2
    w3 = rng.normal(0, 1 / np.sqrt(width), (classes, width)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]), helper.make_node("Gemm", ["f", "W3", "B3"], ["y"], transB=1)]
    model = make_model(nodes, ["N", 1, side, side], initializers=[
        tensor("W1", w1), tensor("B1", b1), tensor("W2", w2), tensor("B2", b2), tensor("W3", w3),
        tensor("B3", rng.normal(0, 0.1, classes).astype(np.float32))])
    return network_from_onnx(model, f"conv-{seed}")


def saved_classifier(directory: Path, seed: int = 1001) -> SimpleNamespace:
    """A 6-12-12-3 ReLU classifier saved as ``directory/m.onnx`` (``net`` is the network
    as imported from that file), an input ``x`` saved as ``directory/x.npy`` and its
    predicted ``label``."""
    from parallelepipedonn.onnx_export import save_onnx
    from parallelepipedonn.onnx_import import load_onnx

    path = directory / "m.onnx"
    save_onnx(random_network(seed, [6, 12, 12, 3], scale=3.0), path)
    net = load_onnx(path)
    x = np.random.default_rng(1).random(6)
    np.save(directory / "x.npy", x)
    return SimpleNamespace(dir=directory, path=path, net=net, x=x, label=int(net.predict(x)[0]))
