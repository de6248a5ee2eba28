"""ONNX feed-forward ReLU classifiers → the network IR.

The importer executes the graph *symbolically*: every tensor that depends on the input
is kept as an affine function of the output ``z`` of the last ReLU (or of the input),
stored as an array ``rows`` of shape ``(1 + len(z), *shape)`` — row 0 is the offset,
row ``1 + k`` the coefficients of ``z_k``. Linear ONNX operators (Gemm, MatMul, Add, Sub,
Mul and Div by constants, Conv, BatchNormalization, Flatten, Reshape, Transpose, ...)
act on these rows with their exact ONNX semantics (in float64, batch size 1), so input
normalisation and consecutive linear layers fold into one affine map. Each Relu closes an
affine map of the IR. Sub-graphs that do not depend on the input are constant-folded
with ONNX's reference evaluator. Anything else that depends on the input raises
:class:`UnsupportedOperatorError` naming the node and its op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from .errors import ModelError, UnsupportedOperatorError
from .network import Affine, Layer, Network, ReLU

log = logging.getLogger(__name__)

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
_RESHAPING_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_SHAPE_OPS = {"Shape", "Size"}
_PASS_THROUGH_OPS = {"Identity", "Dropout"}
_FINAL_MONOTONE_OPS = {"Softmax", "LogSoftmax"}


@dataclass(frozen=True, eq=False)
class _Lin:
    """A tensor that is an affine function of the current stage's variables ``z``."""

    rows: np.ndarray  # (1 + n_z, *shape) float64
    stage: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.output[0] if node.output else 'no output'})"


class _Importer:
    def __init__(self, model: onnx.ModelProto, name: str) -> None:
        self.model = model
        self.graph = model.graph
        self.name = name
        self.opset = {o.domain: o.version for o in model.opset_import}
        self.layers: list[Layer] = []
        self.stage = 0
        self.values: dict[str, _Lin | np.ndarray] = {}

    # -- entry point --------------------------------------------------------------------
    def run(self) -> Network:
        g = self.graph
        init_names = {t.name for t in g.initializer}
        for t in g.initializer:
            self.values[t.name] = numpy_helper.to_array(t)
        inputs = [i for i in g.input if i.name not in init_names]
        if len(inputs) != 1:
            raise ModelError(f"the model must have exactly one input, it has {len(inputs)}")
        onnx_shape, ir_shape = self._input_shape(inputs[0])
        n = int(np.prod(ir_shape))
        rows = np.concatenate([np.zeros((1, n)), np.eye(n)]).reshape(n + 1, *onnx_shape)
        self.values[inputs[0].name] = _Lin(rows, 0)
        consumers = self._consumers()
        for index, node in enumerate(g.node):
            self._run_node(node, index, consumers)
        if len(g.output) != 1:
            raise ModelError(f"the model must have exactly one output, it has {len(g.output)}")
        out = self.values.get(g.output[0].name)
        if not isinstance(out, _Lin):
            raise ModelError("the model's output does not depend on its input")
        self._check_stage(out, g.output[0].name)
        shape = out.shape
        if sum(d > 1 for d in shape) > 1:
            raise ModelError(f"the model's output has shape {list(shape)}: not a vector of class scores")
        self._close_affine(out)
        return Network.from_layers(ir_shape, self.layers, self.name)

    def _input_shape(self, vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...], tuple[int, ...]]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type not in _FLOAT_TYPES:
            raise ModelError(f"input {vi.name!r} is not a floating-point tensor")
        if not tt.HasField("shape"):
            raise ModelError(f"input {vi.name!r} has no shape in the model")
        dims: list[int | None] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                                  for d in tt.shape.dim]
        if not dims:
            raise ModelError(f"input {vi.name!r} is a scalar")
        if any(d is None for d in dims[1:]):
            raise ModelError(f"input {vi.name!r} has shape {dims}: only the batch dimension may be symbolic")
        if len(dims) == 1:
            if dims[0] is None:
                raise ModelError(f"input {vi.name!r} has an unknown size")
            return (int(dims[0]),), (int(dims[0]),)
        if dims[0] not in (None, 1):
            raise ModelError(f"input {vi.name!r} has a fixed batch size of {dims[0]}; expected 1 or symbolic")
        rest = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
        return (1, *rest), rest

    def _consumers(self) -> dict[str, int]:
        count: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                count[name] = count.get(name, 0) + 1
        return count

    # -- node dispatch ------------------------------------------------------------------
    def _run_node(self, node: onnx.NodeProto, index: int, consumers: dict[str, int]) -> None:
        label = _node_label(node, index)
        args: list[_Lin | np.ndarray | None] = []
        for name in node.input:
            if name == "":
                args.append(None)
                continue
            if name not in self.values:
                raise ModelError(f"node {label!r} ({node.op_type}) reads undefined tensor {name!r}")
            args.append(self.values[name])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if not any(isinstance(a, _Lin) for a in args):
            outputs = self._eval(node, label, args)
        else:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOperatorError(label, f"{node.domain}.{node.op_type}", "custom domain")
            for a in args:
                if isinstance(a, _Lin):
                    self._check_stage(a, label)
            handler = self._handlers().get(node.op_type)
            if node.op_type in _FINAL_MONOTONE_OPS:
                outputs = [self._final_softmax(node, label, args, attrs, consumers)]
            elif node.op_type in _RESHAPING_OPS:
                outputs = [self._reshape_like(node, label, args)]
            elif node.op_type in _SHAPE_OPS:
                outputs = self._eval(node, label, [self._dummy(a) for a in args])
            elif handler is None:
                raise UnsupportedOperatorError(
                    label, node.op_type, "this operator on an input-dependent tensor is not supported "
                    "(supported: affine operators and Relu)")
            else:
                outputs = [handler(label, args, attrs)]
        for name, value in zip(node.output, outputs):
            if name:
                self.values[name] = value

    def _handlers(self) -> dict[str, Callable[..., _Lin]]:
        return {
            "Relu": self._relu, "Add": self._add, "Sub": self._sub, "Mul": self._mul, "Div": self._div,
            "Neg": self._neg, "MatMul": self._matmul, "Gemm": self._gemm, "Conv": self._conv,
            "BatchNormalization": self._batchnorm, "Transpose": self._transpose,
            **{op: self._identity for op in _PASS_THROUGH_OPS}, "Cast": self._cast,
        }

    def _check_stage(self, v: _Lin, where: str) -> None:
        if v.stage != self.stage:
            raise ModelError(
                f"{where!r}: the graph is not a chain of affine maps and ReLUs "
                "(a tensor from before a Relu is used after it)")

    def _eval(self, node: onnx.NodeProto, label: str, args: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
        node2 = onnx.helper.make_node(node.op_type, names, [f"out{i}" for i in range(len(node.output))],
                                      domain=node.domain)
        node2.attribute.extend(node.attribute)
        undef = onnx.TensorProto.UNDEFINED
        graph = onnx.helper.make_graph(
            [node2], "fold", [onnx.helper.make_tensor_value_info(nm, undef, None) for nm in names if nm],
            [onnx.helper.make_tensor_value_info(o, undef, None) for o in node2.output])
        opsets = [onnx.helper.make_opsetid(d, v) for d, v in self.opset.items()]
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        feeds = {nm: a for nm, a in zip(names, args) if nm}
        try:
            return list(ReferenceEvaluator(model).run(None, feeds))
        except Exception as exc:  # the reference evaluator raises many kinds
            raise ModelError(f"cannot evaluate constant node {label!r} ({node.op_type}): {exc}") from exc

    @staticmethod
    def _dummy(a: object) -> object:
        return np.zeros(a.shape, dtype=np.float32) if isinstance(a, _Lin) else a

    # -- shape-only operators -----------------------------------------------------------
    def _reshape_like(self, node: onnx.NodeProto, label: str, args: list) -> _Lin:
        data = args[0]
        if not isinstance(data, _Lin) or any(isinstance(a, _Lin) for a in args[1:]):
            raise UnsupportedOperatorError(label, node.op_type, "the shape argument depends on the input")
        out_shape = self._eval(node, label, [self._dummy(a) for a in args])[0].shape
        return _Lin(data.rows.reshape(data.rows.shape[0], *out_shape), data.stage)

    def _transpose(self, label: str, args: list, attrs: dict) -> _Lin:
        v = args[0]
        perm = attrs.get("perm", list(range(len(v.shape)))[::-1])
        return _Lin(v.rows.transpose(0, *(int(p) + 1 for p in perm)), v.stage)

    # -- element-wise and linear operators ----------------------------------------------
    @staticmethod
    def _align(rows: np.ndarray, ndim: int) -> np.ndarray:
        """Insert singleton axes after the row axis so trailing shapes have ``ndim`` dims."""
        extra = ndim - (rows.ndim - 1)
        return rows.reshape(rows.shape[0], *([1] * extra), *rows.shape[1:]) if extra > 0 else rows

    def _lin_plus_const(self, v: _Lin, c: np.ndarray, sign: float = 1.0) -> _Lin:
        c = np.asarray(c, dtype=np.float64)
        rows = self._align(v.rows, c.ndim)
        shape = np.broadcast_shapes(rows.shape[1:], c.shape)
        out = np.array(np.broadcast_to(sign * rows, (rows.shape[0], *shape)))
        out[0] += c
        return _Lin(out, v.stage)

    def _lin_plus_lin(self, a: _Lin, b: _Lin, sign: float) -> _Lin:
        ndim = max(len(a.shape), len(b.shape))
        return _Lin(self._align(a.rows, ndim) + sign * self._align(b.rows, ndim), a.stage)

    def _add(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            return self._lin_plus_lin(a, b, 1.0)
        return self._lin_plus_const(a, b) if isinstance(a, _Lin) else self._lin_plus_const(b, a)

    def _sub(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            return self._lin_plus_lin(a, b, -1.0)
        if isinstance(a, _Lin):
            return self._lin_plus_const(a, -np.asarray(b, dtype=np.float64))
        return self._lin_plus_const(b, a, sign=-1.0)

    def _scale(self, v: _Lin, c: np.ndarray) -> _Lin:
        c = np.asarray(c, dtype=np.float64)
        return _Lin(self._align(v.rows, c.ndim) * c, v.stage)

    def _mul(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "Mul", "product of two input-dependent tensors is not affine")
        return self._scale(a, b) if isinstance(a, _Lin) else self._scale(b, a)

    def _div(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if not isinstance(a, _Lin) or isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "Div", "only division of an input-dependent tensor by a constant")
        b = np.asarray(b, dtype=np.float64)
        if (b == 0).any():
            raise ModelError(f"node {label!r} (Div) divides by zero")
        return self._scale(a, 1.0 / b)

    def _neg(self, label: str, args: list, attrs: dict) -> _Lin:
        return _Lin(-args[0].rows, args[0].stage)

    def _identity(self, label: str, args: list, attrs: dict) -> _Lin:
        return args[0]

    def _cast(self, label: str, args: list, attrs: dict) -> _Lin:
        if attrs.get("to") not in _FLOAT_TYPES:
            raise UnsupportedOperatorError(label, "Cast", "cast of an input-dependent tensor to a non-float type")
        return args[0]

    def _matmul(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "MatMul", "product of two input-dependent tensors is not affine")
        if isinstance(a, _Lin):
            return _Lin(np.matmul(a.rows, np.asarray(b, dtype=np.float64)), a.stage)
        c = np.asarray(a, dtype=np.float64)
        if len(b.shape) == 1:
            if c.ndim != 2:
                raise UnsupportedOperatorError(label, "MatMul", f"constant of shape {c.shape} times a vector")
            return _Lin(b.rows @ c.T, b.stage)
        return _Lin(np.matmul(c, b.rows), b.stage)

    def _gemm(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if isinstance(a, _Lin) == isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "Gemm", "product of two input-dependent tensors is not affine")
        if isinstance(c, _Lin):
            raise UnsupportedOperatorError(label, "Gemm", "input-dependent C operand")

        def t(x: np.ndarray, flag: str) -> np.ndarray:
            return np.swapaxes(x, -1, -2) if attrs.get(flag, 0) else x

        if isinstance(a, _Lin):
            if len(a.shape) != 2:
                raise UnsupportedOperatorError(label, "Gemm", f"A has shape {list(a.shape)}, expected 2-D")
            rows, stage = np.matmul(t(a.rows, "transA"), t(np.asarray(b, np.float64), "transB")), a.stage
        else:
            if len(b.shape) != 2:
                raise UnsupportedOperatorError(label, "Gemm", f"B has shape {list(b.shape)}, expected 2-D")
            rows, stage = np.matmul(t(np.asarray(a, np.float64), "transA"), t(b.rows, "transB")), b.stage
        rows = alpha * rows
        if c is not None:
            rows[0] = rows[0] + beta * np.asarray(c, dtype=np.float64)
        return _Lin(rows, stage)

    def _conv(self, label: str, args: list, attrs: dict) -> _Lin:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        if isinstance(w, _Lin) or isinstance(bias, _Lin):
            raise UnsupportedOperatorError(label, "Conv", "input-dependent weights")
        w = np.asarray(w, dtype=np.float64)
        spatial = w.ndim - 2
        if spatial not in (1, 2) or len(x.shape) != spatial + 2 or x.shape[0] != 1:
            raise UnsupportedOperatorError(label, "Conv", f"input shape {list(x.shape)}, weight {list(w.shape)}: "
                                           "only 1-D and 2-D convolutions with batch 1")
        size = x.shape[2:]
        strides = list(attrs.get("strides", [1] * spatial))
        dil = list(attrs.get("dilations", [1] * spatial))
        kernel = list(attrs.get("kernel_shape", w.shape[2:]))
        pads = list(attrs.get("pads", [0] * (2 * spatial)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * (2 * spatial)
            for i in range(spatial):
                out = -(-size[i] // strides[i])
                total = max((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - size[i], 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + spatial] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "VALID":
            pads = [0] * (2 * spatial)
        p = x.rows.shape[0]
        inp = torch.from_numpy(np.ascontiguousarray(x.rows.reshape(p, *x.shape[1:])))
        torch_pads: list[int] = []
        for i in reversed(range(spatial)):
            torch_pads += [int(pads[i]), int(pads[i + spatial])]
        inp = torch.nn.functional.pad(inp, torch_pads)
        conv = torch.nn.functional.conv1d if spatial == 1 else torch.nn.functional.conv2d
        with torch.no_grad():
            out = conv(inp, torch.from_numpy(w), stride=strides, dilation=dil, groups=int(attrs.get("group", 1)))
        rows = out.numpy().reshape(p, 1, *out.shape[1:]).copy()
        if bias is not None:
            rows[0] += np.asarray(bias, dtype=np.float64).reshape(1, -1, *([1] * spatial))
        return _Lin(rows, x.stage)

    def _batchnorm(self, label: str, args: list, attrs: dict) -> _Lin:
        x = args[0]
        if any(isinstance(a, _Lin) for a in args[1:]) or attrs.get("training_mode", 0):
            raise UnsupportedOperatorError(label, "BatchNormalization", "only inference mode with constant statistics")
        scale, bias, mean, var = (np.asarray(a, dtype=np.float64) for a in args[1:5])
        a = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        bshape = (1, -1, *([1] * (len(x.shape) - 2)))
        return self._lin_plus_const(self._scale(x, a.reshape(bshape)), (bias - mean * a).reshape(bshape))

    def _relu(self, label: str, args: list, attrs: dict) -> _Lin:
        v = args[0]
        n = self._close_affine(v)
        self.layers.append(ReLU())
        self.stage += 1
        rows = np.concatenate([np.zeros((1, n)), np.eye(n)]).reshape(n + 1, *v.shape)
        return _Lin(rows, self.stage)

    def _close_affine(self, v: _Lin) -> int:
        p = v.rows.shape[0]
        flat = v.rows.reshape(p, -1)
        self.layers.append(Affine(flat[1:].T.copy(), flat[0].copy()))
        return int(flat.shape[1])

    def _final_softmax(self, node: onnx.NodeProto, label: str, args: list, attrs: dict,
                       consumers: dict[str, int]) -> _Lin:
        outputs = {o.name for o in self.graph.output}
        v = args[0]
        class_axis = len(v.shape) - 1
        axis = int(attrs.get("axis", -1))
        if node.output[0] not in outputs or consumers.get(node.output[0], 0) or \
                axis % max(len(v.shape), 1) != class_axis:
            raise UnsupportedOperatorError(label, node.op_type, "only as the last node, over the class axis")
        log.info("dropping final %s %r: it preserves the order of the class scores", node.op_type, label)
        return v


def load_onnx(path: str | Path, name: str | None = None) -> Network:
    """Read an ONNX feed-forward ReLU classifier into the IR.

    Raises :class:`ModelError` (or its subclass :class:`UnsupportedOperatorError`) for
    unreadable, malformed or unsupported models.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {str(p)!r}: {exc.strerror or exc}") from exc
    return network_from_onnx_bytes(data, name or p.name)


def network_from_onnx_bytes(data: bytes, name: str = "") -> Network:
    """Like :func:`load_onnx`, from the serialized model."""
    if not data:
        raise ModelError(f"model {name!r} is an empty file")
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model {name!r} is not a valid ONNX model: {first}") from exc
    return network_from_onnx(model, name)


def network_from_onnx(model: onnx.ModelProto, name: str = "") -> Network:
    """Convert a loaded ONNX model into the IR."""
    return _Importer(model, name or model.graph.name).run()
