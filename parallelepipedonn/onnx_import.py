"""ONNX feed-forward ReLU classifiers → the network IR.

The importer executes the graph *symbolically*: every tensor that depends on the input
is kept as an affine function of the output ``z`` of the last ReLU (or of the input),
stored as an array ``rows`` of shape ``(1 + len(z), *shape)`` — row 0 is the offset,
row ``1 + k`` the coefficients of ``z_k``. Linear ONNX operators (Gemm, MatMul, Add, Sub,
Mul and Div by constants, Conv, BatchNormalization, Flatten, Reshape, Transpose, ...)
act on these rows with their exact ONNX semantics (in float64, batch size 1), so input
normalisation and consecutive linear layers fold into one affine map. Each Relu closes an
affine map of the IR. Sub-graphs that do not depend on the input are constant-folded
with ONNX's reference evaluator. Anything else that depends on the input — or a use of a
supported operator whose semantics the IR cannot express exactly (a Cast that rounds, a
Softmax that is not over the class scores, a configuration onnxruntime rejects) — raises
:class:`UnsupportedOperatorError` or :class:`ModelError` naming the node and its op.

The semantics is that of onnxruntime on a batch of one point. Every dense array the
import builds is sized first: one over :data:`MAX_DENSE_BYTES` (e.g. the identity matrix
a Relu on a very wide layer needs, or a large convolution expanded to a dense matrix) is
a :class:`ModelError` before anything is allocated.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from .errors import ModelError, ModelTooLargeError, UnsupportedOperatorError
from .network import Affine, Layer, Network, ReLU

if TYPE_CHECKING:
    from .graph import Graph

log = logging.getLogger(__name__)

#: The largest dense float64 array the importer builds (bytes): one affine map of the IR,
#: a convolution expanded to a dense matrix, the identity after a Relu, ...
MAX_DENSE_BYTES = 2 * 2**30
#: The largest total size of the IR's weights (bytes).
MAX_MODEL_BYTES = 4 * 2**30
#: The oldest ``ai.onnx`` opset onnxruntime implements.
MIN_OPSET = 7

_GIB = 2**30
_INPUT_TYPES = {onnx.TensorProto.FLOAT: np.dtype(np.float32), onnx.TensorProto.DOUBLE: np.dtype(np.float64)}
_RESHAPING_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_FINAL_MONOTONE_OPS = {"Softmax", "LogSoftmax"}
#: Operators whose value onnxruntime draws at random at every run: never folded.
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}

@dataclass(frozen=True, eq=False)
class _Lin:
    """A tensor that is an affine function of the current stage's variables ``z``,
    of element type ``dtype`` (float32 or float64) in the ONNX graph."""

    rows: np.ndarray  # (1 + n_z, *shape) float64
    stage: int
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])

    def like(self, rows: np.ndarray) -> _Lin:
        return _Lin(rows, self.stage, self.dtype)


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.output[0] if node.output else 'no output'})"


def _gib(nbytes: int) -> str:
    return f"{nbytes / _GIB:.3g} GiB"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _type_name(elem_type: int) -> str:
    """``float16`` for ``TensorProto.FLOAT16``, ..."""
    if elem_type in onnx.TensorProto.DataType.values():
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    return f"type {elem_type}"


def _attr_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Importer:
    def __init__(self, model: onnx.ModelProto, name: str) -> None:
        self.model = model
        self.graph = model.graph
        self.name = name
        self.opset = {o.domain: o.version for o in model.opset_import}
        self.onnx_opset = self.opset.get("", self.opset.get("ai.onnx", 0))
        self.layers: list[Layer] = []
        self.stage = 0
        self.values: dict[str, _Lin | np.ndarray] = {}
        self.static_shapes: dict[str, tuple[int, ...]] = {}
        self.model_bytes = 0

    # -- entry point --------------------------------------------------------------------
    def run(self) -> Network:
        g = self.graph
        if self.onnx_opset < MIN_OPSET:
            raise ModelError(f"the model uses ai.onnx opset {self.onnx_opset}; onnxruntime (and this importer) "
                             f"support opset {MIN_OPSET} and later")
        init_names = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in init_names]
        if len(inputs) != 1:
            raise ModelError(f"the model must have exactly one input, it has {len(inputs)}")
        if len(g.output) != 1:
            raise ModelError(f"the model must have exactly one output, it has {len(g.output)}")
        onnx_shape, ir_shape, dtype = self._input_shape(inputs[0])
        n = math.prod(ir_shape)
        self._need(f"input {inputs[0].name!r} of shape {list(onnx_shape)}", n + 1, n)
        self._infer_shapes()
        for t in g.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise ModelError(f"initializer {t.name!r} keeps its data in an external file: not supported")
            self.values[t.name] = numpy_helper.to_array(t)
        self.values[inputs[0].name] = _Lin(_identity_rows(n, onnx_shape), 0, dtype)
        consumers = self._consumers()
        for index, node in enumerate(g.node):
            self._run_node(node, index, consumers)
        out = self.values.get(g.output[0].name)
        if not isinstance(out, _Lin):
            raise ModelError("the model's output does not depend on its input")
        self._check_stage(out, g.output[0].name)
        shape = out.shape
        if sum(d > 1 for d in shape) > 1:
            raise ModelError(f"the model's output has shape {list(shape)}: not a vector of class scores")
        self._close_affine(out)
        return Network.from_layers(ir_shape, self.layers, self.name)

    def _infer_shapes(self) -> None:
        """Type-check the graph as onnxruntime does, and note every statically known shape."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, check_type=True, strict_mode=True,
                                                         data_prop=True)
        except Exception:  # InferenceError, ValidationError, ...: again without data propagation
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, check_type=True, strict_mode=True)
            except Exception as exc:
                raise ModelError(f"model {self.name!r} is not a valid ONNX model: type and shape inference "
                                 f"fails: {_first_line(exc)}") from exc
        g = inferred.graph
        for vi in [*g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tt.HasField("shape") and \
                    all(d.HasField("dim_value") for d in tt.shape.dim):
                self.static_shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)

    def _input_shape(self, vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type not in _INPUT_TYPES:
            kind = _type_name(tt.elem_type) if vi.type.HasField("tensor_type") else "not a tensor"
            raise ModelError(f"input {vi.name!r} is of type {kind}: only float32 and float64 inputs are supported")
        dtype = _INPUT_TYPES[tt.elem_type]
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
            return (int(dims[0]),), (int(dims[0]),), dtype
        if dims[0] not in (None, 1):
            raise ModelError(f"input {vi.name!r} has a fixed batch size of {dims[0]}; expected 1 or symbolic")
        rest = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
        return (1, *rest), rest, dtype

    def _consumers(self) -> dict[str, int]:
        count: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                count[name] = count.get(name, 0) + 1
        return count

    # -- memory guard -------------------------------------------------------------------
    @staticmethod
    def _need(what: str, rows: int, cols: int) -> None:
        """Refuse before allocating a dense ``rows x cols`` float64 array over the limit."""
        nbytes = 8 * rows * cols
        if nbytes > MAX_DENSE_BYTES:
            raise ModelTooLargeError(
                f"{what} would need a dense {rows}x{cols} float64 matrix ({_gib(nbytes)}), over the importer's "
                f"limit of {_gib(MAX_DENSE_BYTES)} (parallelepipedonn.onnx_import.MAX_DENSE_BYTES)")

    def _need_rows(self, label: str, op: str, v: _Lin, shape: Sequence[int]) -> None:
        self._need(f"node {label!r} ({op})", math.prod(shape), v.rows.shape[0])

    # -- node dispatch ------------------------------------------------------------------
    def _run_node(self, node: onnx.NodeProto, index: int, consumers: dict[str, int]) -> None:
        label = _node_label(node, index)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise UnsupportedOperatorError(label, node.op_type, "operators with sub-graphs (control flow) "
                                           "are not supported")
        args: list[_Lin | np.ndarray | None] = []
        for name in node.input:
            if name == "":
                args.append(None)
                continue
            if name not in self.values:
                raise ModelError(f"node {label!r} ({node.op_type}) reads undefined tensor {name!r}")
            args.append(self.values[name])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and len([o for o in node.output if o]) > 1:
            # onnxruntime then normalises with the batch's own statistics (training mode)
            raise UnsupportedOperatorError(label, node.op_type, "the running statistics are outputs: training mode")
        if not any(isinstance(a, _Lin) for a in args):
            outputs: list = self._fold(node, label, args, attrs)
        else:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOperatorError(label, f"{node.domain}.{node.op_type}", "custom domain")
            for a in args:
                if isinstance(a, _Lin):
                    self._check_stage(a, label)
            handler = self._handlers().get(node.op_type)
            try:
                if node.op_type in _FINAL_MONOTONE_OPS:
                    outputs = [self._final_softmax(node, label, args, attrs, consumers)]
                elif handler is None:
                    raise UnsupportedOperatorError(
                        label, node.op_type, "this operator on an input-dependent tensor is not supported "
                        "(supported: affine operators and Relu)")
                else:
                    outputs = handler(label, args, attrs)
                    outputs = outputs if isinstance(outputs, list) else [outputs]
            except (ValueError, RuntimeError, IndexError) as exc:  # numpy / torch shape errors
                raise UnsupportedOperatorError(label, node.op_type, f"cannot import: {_first_line(exc)}") from exc
            for value in outputs:
                if isinstance(value, _Lin):
                    self._check_range(label, node.op_type, value)
            if len(outputs) < len([o for o in node.output if o]):
                for extra in node.output[len(outputs):]:
                    if extra and (consumers.get(extra, 0) or extra in {o.name for o in self.graph.output}):
                        raise UnsupportedOperatorError(label, node.op_type, f"its output {extra!r} is not supported")
        for name, value in zip(node.output, outputs):
            if name:
                self.values[name] = value

    def _handlers(self) -> dict[str, Callable[..., _Lin | list]]:
        return {
            "Relu": self._relu, "Add": self._add, "Sub": self._sub, "Mul": self._mul, "Div": self._div,
            "Neg": self._neg, "MatMul": self._matmul, "Gemm": self._gemm, "Conv": self._conv,
            "BatchNormalization": self._batchnorm, "Transpose": self._transpose, "Identity": self._identity,
            "Dropout": self._dropout, "Cast": self._cast, "CastLike": self._cast_like,
            "Shape": self._shape, "Size": self._size,
            **{op: functools.partial(self._reshape_like, op) for op in _RESHAPING_OPS},
        }

    def _check_stage(self, v: _Lin, where: str) -> None:
        if v.stage != self.stage:
            raise ModelError(
                f"{where!r}: the graph is not a chain of affine maps and ReLUs "
                "(a tensor from before a Relu is used after it)")

    def _check_range(self, label: str, op: str, v: _Lin) -> None:
        """The tensor's coefficients must be finite numbers of its ONNX type: one out of
        range means onnxruntime's intermediate values overflow to infinity (e.g. ``x * 1e30
        * 1e30 * 1e-40`` in float32), which the IR, folding the products, would not see."""
        info = np.finfo(v.dtype)
        flat = v.rows.ravel(order="K")  # a view where the layout allows
        step = 2**22
        for lo in range(0, flat.size, step):
            block = flat[lo:lo + step]
            if not np.isfinite(block).all():
                raise UnsupportedOperatorError(label, op, "its values are NaN or infinite")
            if block.max() > info.max or block.min() < -info.max:
                raise UnsupportedOperatorError(label, op, f"its coefficients overflow {v.dtype}: onnxruntime's "
                                               "values would be infinite")

    def _fold(self, node: onnx.NodeProto, label: str, args: list, attrs: dict) -> list[np.ndarray]:
        """Evaluate a node that does not depend on the input."""
        if node.op_type in _RANDOM_OPS or (node.op_type == "Dropout" and self._dropout_training(label, args, attrs)):
            raise UnsupportedOperatorError(label, node.op_type, "random values (onnxruntime draws new ones at "
                                           "every run)")
        for name in node.output:
            shape = self.static_shapes.get(name)
            if name and shape is not None:
                self._need(f"constant {name!r} of node {label!r} ({node.op_type}) of shape {list(shape)}",
                           math.prod(shape), 1)
        return self._eval(node, label, args)

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
        except Exception as exc:  # the reference evaluator raises many kinds (MemoryError too)
            raise ModelError(f"cannot evaluate constant node {label!r} ({node.op_type}): {_first_line(exc)}") from exc

    # -- shape-only operators -----------------------------------------------------------
    def _const_ints(self, label: str, op: str, value: object, what: str) -> list[int] | None:
        if value is None:
            return None
        if isinstance(value, _Lin):
            raise UnsupportedOperatorError(label, op, f"the {what} depends on the input")
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu" or arr.ndim > 1:
            raise UnsupportedOperatorError(label, op, f"the {what} must be a 1-D integer tensor")
        return [int(a) for a in arr.reshape(-1)]

    def _reshape_like(self, op: str, label: str, args: list, attrs: dict) -> _Lin:
        data = args[0]
        if not isinstance(data, _Lin):
            raise UnsupportedOperatorError(label, op, "the shape argument depends on the input")
        shape = list(data.shape)
        r = len(shape)

        def bad(why: str) -> UnsupportedOperatorError:
            return UnsupportedOperatorError(label, op, f"{why} (input shape {shape})")

        if op == "Flatten":
            axis = int(attrs.get("axis", 1))
            if not -r <= axis <= r:
                raise bad(f"axis {axis} out of range")
            axis = axis + r if axis < 0 else axis
            out = [math.prod(shape[:axis]), math.prod(shape[axis:])]
        elif op == "Reshape":
            target = self._const_ints(label, op, args[1] if len(args) > 1 else None, "shape")
            if target is None:
                raise bad("no shape")
            allowzero = int(attrs.get("allowzero", 0))
            out = []
            for i, d in enumerate(target):
                if d == 0 and not allowzero:
                    if i >= r:
                        raise bad(f"shape {target}: a 0 entry past the input's rank")
                    d = shape[i]
                out.append(d)
            if out.count(-1) > 1 or any(d < -1 for d in out) or (allowzero and -1 in out and 0 in target):
                raise bad(f"invalid shape {target}")
            if -1 in out:
                known = math.prod(d for d in out if d != -1)
                if known == 0 or math.prod(shape) % known:
                    raise bad(f"shape {target} does not fit")
                out[out.index(-1)] = math.prod(shape) // known
            if math.prod(out) != math.prod(shape):
                raise bad(f"shape {target} does not fit")
        elif op == "Squeeze":
            axes = self._const_ints(label, op, args[1] if len(args) > 1 else None, "axes") \
                if self.onnx_opset >= 13 else attrs.get("axes")
            if axes is None:
                out = [d for d in shape if d != 1]
            else:
                norm = [int(a) + r if int(a) < 0 else int(a) for a in axes]
                if any(not 0 <= a < r for a in norm) or len(set(norm)) != len(norm):
                    raise bad(f"axes {list(axes)} out of range or repeated")
                if any(shape[a] != 1 for a in norm):
                    raise bad(f"axes {list(axes)}: only dimensions of size 1 can be squeezed")
                out = [d for i, d in enumerate(shape) if i not in norm]
        else:  # Unsqueeze
            axes = self._const_ints(label, op, args[1] if len(args) > 1 else None, "axes") \
                if self.onnx_opset >= 13 else attrs.get("axes")
            if not axes:
                raise bad("no axes")
            rank = r + len(axes)
            norm = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
            if any(not 0 <= a < rank for a in norm) or len(set(norm)) != len(norm):
                raise bad(f"axes {list(axes)} out of range or repeated")
            rest = iter(shape)
            out = [1 if i in norm else next(rest) for i in range(rank)]
        return data.like(data.rows.reshape(data.rows.shape[0], *out))

    def _shape(self, label: str, args: list, attrs: dict) -> np.ndarray:
        shape = args[0].shape
        start = int(attrs.get("start", 0))
        end = attrs.get("end")
        return np.array(shape[start:None if end is None else int(end)], dtype=np.int64)

    def _size(self, label: str, args: list, attrs: dict) -> np.ndarray:
        return np.array(math.prod(args[0].shape), dtype=np.int64)

    def _transpose(self, label: str, args: list, attrs: dict) -> _Lin:
        v = args[0]
        r = len(v.shape)
        perm = [int(p) for p in attrs.get("perm", list(range(r))[::-1])]
        if sorted(perm) != list(range(r)):
            raise UnsupportedOperatorError(label, "Transpose", f"perm {perm} is not a permutation of the {r} axes")
        return v.like(v.rows.transpose(0, *(p + 1 for p in perm)))

    # -- element-wise and linear operators ----------------------------------------------
    @staticmethod
    def _align(rows: np.ndarray, ndim: int) -> np.ndarray:
        """Insert singleton axes after the row axis so trailing shapes have ``ndim`` dims."""
        extra = ndim - (rows.ndim - 1)
        return rows.reshape(rows.shape[0], *([1] * extra), *rows.shape[1:]) if extra > 0 else rows

    @staticmethod
    def _const(c: object) -> np.ndarray:
        return np.asarray(c, dtype=np.float64)

    def _lin_plus_const(self, label: str, op: str, v: _Lin, c: np.ndarray, sign: float = 1.0) -> _Lin:
        c = self._const(c)
        shape = np.broadcast_shapes(v.shape, c.shape)
        self._need_rows(label, op, v, shape)
        rows = self._align(v.rows, c.ndim)
        out = np.array(np.broadcast_to(sign * rows if sign != 1.0 else rows, (rows.shape[0], *shape)))
        out[0] += c
        return v.like(out)

    def _lin_plus_lin(self, label: str, op: str, a: _Lin, b: _Lin, sign: float) -> _Lin:
        shape = np.broadcast_shapes(a.shape, b.shape)
        self._need_rows(label, op, a, shape)
        ndim = len(shape)
        return a.like(self._align(a.rows, ndim) + sign * self._align(b.rows, ndim))

    def _add(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            return self._lin_plus_lin(label, "Add", a, b, 1.0)
        return self._lin_plus_const(label, "Add", a, b) if isinstance(a, _Lin) else \
            self._lin_plus_const(label, "Add", b, a)

    def _sub(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            return self._lin_plus_lin(label, "Sub", a, b, -1.0)
        if isinstance(a, _Lin):
            return self._lin_plus_const(label, "Sub", a, -self._const(b))
        return self._lin_plus_const(label, "Sub", b, a, sign=-1.0)

    def _scale(self, label: str, op: str, v: _Lin, c: object) -> _Lin:
        c = self._const(c)
        self._need_rows(label, op, v, np.broadcast_shapes(v.shape, c.shape))
        return v.like(self._align(v.rows, c.ndim) * c)

    def _mul(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "Mul", "product of two input-dependent tensors is not affine")
        return self._scale(label, "Mul", a, b) if isinstance(a, _Lin) else self._scale(label, "Mul", b, a)

    def _div(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args
        if not isinstance(a, _Lin) or isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "Div", "only division of an input-dependent tensor by a constant")
        b = self._const(b)
        if (b == 0).any():
            raise ModelError(f"node {label!r} (Div) divides by zero")
        # x / b, not x * (1 / b): exact division of each coefficient, as onnxruntime divides
        self._need_rows(label, "Div", a, np.broadcast_shapes(a.shape, b.shape))
        return a.like(self._align(a.rows, b.ndim) / b)

    def _neg(self, label: str, args: list, attrs: dict) -> _Lin:
        return args[0].like(-args[0].rows)

    def _identity(self, label: str, args: list, attrs: dict) -> _Lin:
        return args[0]

    def _dropout_training(self, label: str, args: list, attrs: dict) -> bool:
        """Whether a Dropout node drops values (training mode): onnxruntime then draws a
        random mask at every run."""
        if self.onnx_opset < 12:
            return False  # Dropout-7/10: always inference in onnxruntime
        training = args[2] if len(args) > 2 else None
        if training is None:
            return False
        if isinstance(training, _Lin):
            raise UnsupportedOperatorError(label, "Dropout", "training_mode depends on the input")
        return bool(np.asarray(training).any())

    def _dropout(self, label: str, args: list, attrs: dict) -> _Lin:
        if self._dropout_training(label, args, attrs):
            raise UnsupportedOperatorError(label, "Dropout", "training_mode is true: onnxruntime drops random "
                                           "values at every run")
        if any(isinstance(a, _Lin) for a in args[1:]):
            raise UnsupportedOperatorError(label, "Dropout", "the ratio depends on the input")
        return args[0]

    def _cast_to(self, label: str, op: str, v: _Lin, target: np.dtype | None, name: str) -> _Lin:
        if target is None:
            raise UnsupportedOperatorError(label, op, f"cast to {name}: the IR computes in float64 and cannot "
                                           "express its rounding (only casts to float32 or float64)")
        if target.itemsize < v.dtype.itemsize:
            raise UnsupportedOperatorError(label, op, f"cast of a {v.dtype} tensor to {target}: a rounding the IR "
                                           "cannot express")
        return _Lin(v.rows, v.stage, target)  # widening (or no-op): exact

    def _cast(self, label: str, args: list, attrs: dict) -> _Lin:
        to = int(attrs.get("to", 0))
        return self._cast_to(label, "Cast", args[0], _INPUT_TYPES.get(to), _type_name(to))

    def _cast_like(self, label: str, args: list, attrs: dict) -> _Lin:
        v, like = args[0], args[1]
        if not isinstance(v, _Lin):
            raise UnsupportedOperatorError(label, "CastLike", "only the cast tensor may depend on the input")
        dtype = like.dtype if isinstance(like, _Lin) else np.asarray(like).dtype
        target = dtype if dtype in _INPUT_TYPES.values() else None
        return self._cast_to(label, "CastLike", v, target, str(dtype))

    def _matmul(self, label: str, args: list, attrs: dict) -> _Lin:
        """ONNX MatMul (numpy semantics) with one constant operand: linear in the other,
        so every row of the input-dependent operand is multiplied the same way."""
        a, b = args
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "MatMul", "product of two input-dependent tensors is not affine")
        lin, const_ = (a, self._const(b)) if isinstance(a, _Lin) else (b, self._const(a))
        a_shape = a.shape if isinstance(a, _Lin) else const_.shape
        b_shape = b.shape if isinstance(b, _Lin) else const_.shape
        if not a_shape or not b_shape:
            raise UnsupportedOperatorError(label, "MatMul", "scalar operand")
        out_shape = _matmul_shape(a_shape, b_shape)
        self._need_rows(label, "MatMul", lin, out_shape)
        # promote 1-D operands to matrices as ONNX does, then give both the same rank
        a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
        b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
        nd = max(len(a2), len(b2))
        p = lin.rows.shape[0]
        if isinstance(a, _Lin):
            left = lin.rows.reshape(p, *([1] * (nd - len(a2))), *a2)
            right = const_.reshape(1, *([1] * (nd - len(b2))), *b2)
        else:
            left = const_.reshape(1, *([1] * (nd - len(a2))), *a2)
            right = lin.rows.reshape(p, *([1] * (nd - len(b2))), *b2)
        out = np.matmul(left, right)
        return lin.like(out.reshape(p, *out_shape))

    def _gemm(self, label: str, args: list, attrs: dict) -> _Lin:
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            raise UnsupportedOperatorError(label, "Gemm", "product of two input-dependent tensors is not affine")
        a_shape = a.shape if isinstance(a, _Lin) else np.shape(a)
        b_shape = b.shape if isinstance(b, _Lin) else np.shape(b)
        if len(a_shape) != 2 or len(b_shape) != 2:
            raise UnsupportedOperatorError(label, "Gemm", f"A {list(a_shape)} and B {list(b_shape)} must be 2-D")
        m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
        k2, n = (b_shape[1], b_shape[0]) if trans_b else b_shape
        if k != k2:
            raise UnsupportedOperatorError(label, "Gemm", f"A {list(a_shape)} and B {list(b_shape)} do not match")
        c_shape = c.shape if isinstance(c, _Lin) else np.shape(c) if c is not None else ()
        if len(c_shape) > 2 or any(cd not in (1, d) for cd, d in zip(c_shape[::-1], (n, m))):
            raise UnsupportedOperatorError(label, "Gemm", f"C of shape {list(c_shape)} does not broadcast to "
                                           f"{[m, n]}")

        def t(x: np.ndarray, flag: int) -> np.ndarray:
            return np.swapaxes(x, -1, -2) if flag else x

        product: _Lin | np.ndarray
        if isinstance(a, _Lin) or isinstance(b, _Lin):
            lin = a if isinstance(a, _Lin) else b
            self._need_rows(label, "Gemm", lin, (m, n))
            if isinstance(a, _Lin):
                rows = np.matmul(t(a.rows, trans_a), t(self._const(b), trans_b))
            else:
                rows = np.matmul(t(self._const(a), trans_a), t(b.rows, trans_b))
            product = lin.like(alpha * rows)
        else:
            product = alpha * np.matmul(t(self._const(a), trans_a), t(self._const(b), trans_b))
        if c is None:
            assert isinstance(product, _Lin)
            return product
        if isinstance(c, _Lin):
            self._need_rows(label, "Gemm", c, (m, n))
            scaled_c = c.like(beta * np.array(np.broadcast_to(self._align(c.rows, 2), (c.rows.shape[0], m, n))))
            if isinstance(product, _Lin):
                return self._lin_plus_lin(label, "Gemm", product, scaled_c, 1.0)
            return self._lin_plus_const(label, "Gemm", scaled_c, product)
        assert isinstance(product, _Lin)
        return self._lin_plus_const(label, "Gemm", product, beta * self._const(c))

    def _conv(self, label: str, args: list, attrs: dict) -> _Lin:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        if not isinstance(x, _Lin) or isinstance(w, _Lin) or isinstance(bias, _Lin):
            raise UnsupportedOperatorError(label, "Conv", "input-dependent weights")
        w = self._const(w)
        spatial = w.ndim - 2
        if spatial not in (1, 2) or len(x.shape) != spatial + 2 or x.shape[0] != 1:
            raise UnsupportedOperatorError(label, "Conv", f"input shape {list(x.shape)}, weight {list(w.shape)}: "
                                           "only 1-D and 2-D convolutions with batch 1")

        def bad(why: str) -> UnsupportedOperatorError:
            return UnsupportedOperatorError(label, "Conv", f"{why} (input {list(x.shape)}, weight {list(w.shape)})")

        group = int(attrs.get("group", 1))
        c_in, size = x.shape[1], x.shape[2:]
        c_out, kernel = w.shape[0], list(w.shape[2:])
        if group < 1 or c_in % group or c_out % group or w.shape[1] * group != c_in:
            raise bad(f"group {group} does not fit the channels")
        if list(attrs.get("kernel_shape", kernel)) != kernel:
            raise bad(f"kernel_shape {list(attrs['kernel_shape'])} differs from the weight's")
        strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
        dil = [int(d) for d in attrs.get("dilations", [1] * spatial)]
        pads = [int(p) for p in attrs.get("pads", [0] * (2 * spatial))]
        if len(strides) != spatial or len(dil) != spatial or len(pads) != 2 * spatial:
            raise bad("strides, dilations or pads of the wrong length")
        if min(strides) < 1 or min(dil) < 1 or min(pads) < 0:
            raise bad("strides and dilations must be positive, pads non-negative")
        auto_pad = _attr_str(attrs.get("auto_pad", "NOTSET"))
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if any(d != 1 for d in dil):
                raise bad(f"dilations with auto_pad {auto_pad} (onnxruntime rejects them)")
            for i in range(spatial):  # as onnxruntime's ComputePadAndOutputShape
                out = -(-size[i] // strides[i])
                total = max((out - 1) * strides[i] + kernel[i] - size[i], 0)
                head = (total + 1) // 2 if auto_pad == "SAME_LOWER" else total // 2
                pads[i], pads[i + spatial] = head, total - head
        elif auto_pad == "VALID":
            pads = [0] * (2 * spatial)
        elif auto_pad != "NOTSET":
            raise bad(f"unknown auto_pad {auto_pad!r}")
        padded = [size[i] + pads[i] + pads[i + spatial] for i in range(spatial)]
        out_size = [(padded[i] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)]
        if min(out_size) < 1:
            raise bad("the kernel is larger than the padded input")
        if bias is not None and np.shape(bias) != (c_out,):
            raise bad(f"bias of shape {list(np.shape(bias))}")
        p = x.rows.shape[0]
        self._need(f"node {label!r} (Conv)", c_in * math.prod(padded), p)
        self._need(f"node {label!r} (Conv)", c_out * math.prod(out_size), p)
        torch_pads: list[int] = []
        for i in reversed(range(spatial)):
            torch_pads += [pads[i], pads[i + spatial]]
        conv = torch.nn.functional.conv1d if spatial == 1 else torch.nn.functional.conv2d
        rows = np.empty((p, 1, c_out, *out_size))
        weight = torch.from_numpy(np.array(w))
        # a chunk of rows at a time: the unfolded patches stay small
        chunk = max(1, (64 * 2**20) // (8 * c_in * math.prod(kernel) * math.prod(out_size) + 1))
        with torch.no_grad():
            for lo in range(0, p, chunk):
                inp = torch.from_numpy(np.ascontiguousarray(x.rows[lo:lo + chunk, 0]))
                inp = torch.nn.functional.pad(inp, torch_pads)
                rows[lo:lo + chunk, 0] = conv(inp, weight, stride=strides, dilation=dil, groups=group).numpy()
        if bias is not None:
            rows[0] += self._const(bias).reshape(1, -1, *([1] * spatial))
        return x.like(rows)

    def _batchnorm(self, label: str, args: list, attrs: dict) -> _Lin:
        x = args[0]
        if not isinstance(x, _Lin) or any(isinstance(a, _Lin) for a in args[1:]):
            raise UnsupportedOperatorError(label, "BatchNormalization", "input-dependent statistics")
        if attrs.get("training_mode", 0) or not attrs.get("spatial", 1):
            raise UnsupportedOperatorError(label, "BatchNormalization", "only inference mode with per-channel "
                                           "statistics (training_mode 0, spatial 1)")
        if len(args) != 5 or len(x.shape) < 2:
            raise UnsupportedOperatorError(label, "BatchNormalization", f"input of shape {list(x.shape)}")
        c = x.shape[1]
        scale, bias, mean, var = (self._const(a) for a in args[1:5])
        if any(a.shape != (c,) for a in (scale, bias, mean, var)):
            raise UnsupportedOperatorError(label, "BatchNormalization", f"statistics of shapes "
                                           f"{[list(a.shape) for a in (scale, bias, mean, var)]}, expected [{c}]")
        denom = var + float(attrs.get("epsilon", 1e-5))
        if (denom <= 0).any():
            raise ModelError(f"node {label!r} (BatchNormalization): variance + epsilon is not positive")
        a = scale / np.sqrt(denom)
        bshape = (1, -1, *([1] * (len(x.shape) - 2)))
        scaled = self._scale(label, "BatchNormalization", x, a.reshape(bshape))
        return self._lin_plus_const(label, "BatchNormalization", scaled, (bias - mean * a).reshape(bshape))

    def _relu(self, label: str, args: list, attrs: dict) -> _Lin:
        v = args[0]
        n = math.prod(v.shape)
        self._need(f"node {label!r} (Relu) on {n} values", n + 1, n)
        self._close_affine(v)
        self.layers.append(ReLU())
        self.stage += 1
        return _Lin(_identity_rows(n, v.shape), self.stage, v.dtype)

    def _close_affine(self, v: _Lin) -> None:
        p = v.rows.shape[0]
        flat = v.rows.reshape(p, -1)
        self.model_bytes += flat.nbytes
        if self.model_bytes > MAX_MODEL_BYTES:
            raise ModelTooLargeError(f"the network's weights would take {_gib(self.model_bytes)} as float64, over the "
                             f"importer's limit of {_gib(MAX_MODEL_BYTES)} (parallelepipedonn.onnx_import."
                             "MAX_MODEL_BYTES)")
        self.layers.append(Affine(flat[1:].T, flat[0]))  # Affine copies

    def _final_softmax(self, node: onnx.NodeProto, label: str, args: list, attrs: dict,
                       consumers: dict[str, int]) -> _Lin:
        """A final Softmax or LogSoftmax keeps the order of the class scores — if it
        normalises all of them together. It is dropped then, refused otherwise."""
        outputs = {o.name for o in self.graph.output}
        v = args[0]
        if node.output[0] not in outputs or consumers.get(node.output[0], 0):
            raise UnsupportedOperatorError(label, node.op_type, "only as the last node, over the class scores")
        shape, r = list(v.shape), len(v.shape)
        n = math.prod(shape)
        axis = int(attrs.get("axis", -1 if self.onnx_opset >= 13 else 1))
        if r == 0 or not -r <= axis < r:
            raise UnsupportedOperatorError(label, node.op_type, f"axis {axis} out of range for shape {shape}")
        axis %= r
        # opset < 13: over the flattened dimensions [axis:], one softmax per index of [:axis]
        group = math.prod(shape[axis:]) if self.onnx_opset < 13 else shape[axis]
        if group != n or n < 2:
            raise UnsupportedOperatorError(
                label, node.op_type, f"over axis {axis} of shape {shape} it normalises groups of {group} of the "
                f"{n} scores separately (a group of 1 is a constant 1): not order-preserving for the class scores")
        log.info("dropping final %s %r: it preserves the order of the class scores", node.op_type, label)
        return v


def _identity_rows(n: int, shape: Sequence[int]) -> np.ndarray:
    """Rows of the tensor ``z`` itself (of ``shape``, ``n`` values): zero offset, identity."""
    rows = np.zeros((n + 1, n))
    np.fill_diagonal(rows[1:], 1.0)
    return rows.reshape(n + 1, *shape)


def _matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """The shape of ONNX ``MatMul(A, B)`` (numpy's rules), or ValueError."""
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ValueError(f"MatMul of shapes {list(a)} and {list(b)}: inner dimensions differ")
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return tuple(int(d) for d in out)


def load_onnx(path: str | Path, name: str | None = None) -> Network | Graph:
    """Read an ONNX feed-forward ReLU classifier into the IR: a chain :class:`Network`
    when the model is one (convolution-free, no residual connections), else a
    :class:`~parallelepipedonn.graph.Graph` (see :func:`model_from_onnx`).

    Raises :class:`ModelError` (or its subclass :class:`UnsupportedOperatorError`) for
    unreadable, malformed, unsupported or too large models.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {str(p)!r}: {exc.strerror or exc}") from exc
    return model_from_onnx(_parse(data, name or p.name), name or p.name)


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"model {name!r} is an empty file")
    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError, ...
        raise ModelError(f"model {name!r} is not a valid ONNX model: {_first_line(exc)}") from exc


def network_from_onnx_bytes(data: bytes, name: str = "") -> Network:
    """Like :func:`network_from_onnx`, from the serialized model."""
    return network_from_onnx(_parse(data, name), name)


def model_from_onnx(model: onnx.ModelProto, name: str = "") -> Network | Graph:
    """The IR of a loaded ONNX model: models with convolutions or pooling are read as a
    :class:`~parallelepipedonn.graph.Graph` (convolutions kept as convolutions; if the
    graph importer refuses one that the chain importer reads, e.g. a 1-D convolution, the
    chain); others as a chain :class:`Network`, or as a graph where the chain importer
    finds a residual connection."""
    from .onnx_graph import graph_from_onnx, wants_graph

    name = name or model.graph.name
    _check(model, name)
    if wants_graph(model):
        try:
            return graph_from_onnx(model, name)
        except ModelError as graph_error:
            try:
                return _Importer(model, name).run()
            except ModelError:
                raise graph_error from None
    try:
        return _Importer(model, name).run()
    except ModelError as exc:
        if "is not a chain" not in str(exc):
            raise
        return graph_from_onnx(model, name)


def _check(model: onnx.ModelProto, name: str) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, ...
        raise ModelError(f"model {name!r} is not a valid ONNX model: {_first_line(exc)}") from exc


def network_from_onnx(model: onnx.ModelProto, name: str = "") -> Network:
    """Convert a loaded ONNX model into the IR (checked with ONNX's checker and strict
    type and shape inference first)."""
    name = name or model.graph.name
    _check(model, name)
    return _Importer(model, name).run()
