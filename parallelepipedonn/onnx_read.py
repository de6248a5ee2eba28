"""Reading and validating ONNX models: what the two importers share.

:class:`OnnxWalker` walks an ONNX graph node by node for the chain importer
(:mod:`parallelepipedonn.onnx_import`) and the graph importer
(:mod:`parallelepipedonn.onnx_graph`): it reads the input's type and shape, type-checks the
graph as onnxruntime does (ONNX's strict shape inference), constant-folds every node that
does not depend on the input with ONNX's reference evaluator (its output sized first
against ``onnx_import.MAX_DENSE_BYTES``; random operators refused), hands the others to the
subclass's handlers (refusing control flow, custom domains and training-mode nodes), and
implements the operators both importers read the same way: the shape-only ones (Flatten,
Reshape, Squeeze, Unsqueeze, Shape, Size, Identity, inference Dropout) and a final Softmax
over the class scores. Also here: parsing and checking a serialized model, and the small
helpers both importers use.

Input-dependent tensors are :class:`Lin` values: affine functions of the current stage's
variables (rows of coefficients; see :mod:`parallelepipedonn.onnx_import`).
"""

from __future__ import annotations

import gzip
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from .errors import ModelError, ModelTooLargeError, UnsupportedOperatorError, ValueRangeError

log = logging.getLogger(__name__)

#: The oldest ``ai.onnx`` opset onnxruntime implements.
MIN_OPSET = 7

_GIB = 2**30
#: The input (and cast) element types the importers read, as numpy types.
INPUT_TYPES = {onnx.TensorProto.FLOAT: np.dtype(np.float32), onnx.TensorProto.DOUBLE: np.dtype(np.float64)}
#: The operators that only reshape a tensor (read by :meth:`OnnxWalker._reshape_like`).
RESHAPING_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
#: BatchNormalization's default ``epsilon``: the attribute is a float32 (onnxruntime adds
#: ``float32(1e-5)``, not the float64 1e-5, which differ where the variance is about -1e-5)
BN_EPSILON = float(np.float32(1e-5))
_FINAL_MONOTONE_OPS = {"Softmax", "LogSoftmax"}
#: The operators that read fresh rows (:attr:`Lin.fresh`) without computing on all of them:
#: reshapes and pass-throughs keep the view; MatMul and Gemm use it where the product is the
#: constant itself and charge the dense rows otherwise. Every other operator is charged the
#: dense rows before it reads them (:meth:`OnnxWalker.dense`).
_READS_FRESH_ROWS = RESHAPING_OPS | {"Identity", "Dropout", "Cast", "CastLike", "Shape", "Size", "MatMul", "Gemm"}
#: Constant nodes folded as of opset 19 (see :meth:`OnnxWalker._eval`).
_FOLD_AT_19 = {"DequantizeLinear", "QuantizeLinear"}
#: Operators whose value onnxruntime draws at random at every run: never folded.
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
#: Initializers of more elements than this reach ONNX's shape inference as graph inputs of
#: their type and shape, without their values (:func:`shapes_model`).
SHAPE_ONLY_ELEMENTS = 4096


def check_bn_shift(label: str, mean: np.ndarray, factor: np.ndarray, info: np.finfo, bias: np.ndarray | None = None
                   ) -> None:
    """:class:`ValueRangeError` unless the products onnxruntime computes for a
    BatchNormalization's shift are in range: ``mean * factor``, and folded into a
    convolution with ``bias``, ``(bias - mean) * factor``."""
    with np.errstate(over="ignore", invalid="ignore"):
        parts = [np.abs(mean * factor)] + ([] if bias is None else [np.abs((bias - mean) * factor)])
    top = max(float(np.max(p, initial=0.0)) for p in parts)
    if not top <= float(info.max):
        raise ValueRangeError(f"node {label!r} (BatchNormalization): its shift's products reach {top:.3g}, beyond "
                              f"{info.dtype}'s range: onnxruntime's values would not be finite")


def _range_error(label: str, op: str, why: str) -> ValueRangeError:
    """A refusal of node ``label`` on its numbers (:class:`ValueRangeError`), worded as the
    importer's other refusals."""
    return ValueRangeError(f"unsupported ONNX node {label!r} (op {op}): {why}")


@dataclass(frozen=True, eq=False)
class Lin:
    """A tensor that is an affine function of the current stage's variables ``z``,
    of element type ``dtype`` (float32 or float64) in the ONNX graph."""

    rows: np.ndarray  # (1 + n_z, *shape) float64
    stage: int
    dtype: np.dtype
    #: The stage's variables themselves, in order (zero offset, identity), and ``rows``
    #: possibly :func:`fresh_rows`' view of ``2 n`` numbers: an operation that computes on
    #: them is charged their dense size first (:meth:`OnnxWalker.dense`).
    fresh: bool = field(default=False, kw_only=True)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])

    def like(self, rows: np.ndarray) -> Lin:
        return Lin(rows, self.stage, self.dtype)


def fresh_rows(n: int, shape: Sequence[int]) -> np.ndarray:
    """The rows of ``n`` fresh variables of ``shape`` (a zero offset row, then the
    identity) as a read-only view of ``2 n`` numbers instead of an ``(n + 1) x n`` array
    (a Relu on 60,100 values, as in VNN-COMP 2021's nn4sys: 27 GiB): entry ``(i, j)`` is
    ``buffer[n + j - i]``, and ``buffer`` is zero but for a one at ``n - 1``."""
    if n == 0:
        empty = np.zeros((1, *shape))
        empty.setflags(write=False)
        return empty
    buffer = np.zeros(2 * n)
    buffer[n - 1] = 1.0
    step = buffer.itemsize
    rows = np.lib.stride_tricks.as_strided(buffer[n:], shape=(n + 1, n), strides=(-step, step), writeable=False)
    return rows.reshape(n + 1, *shape)


def _below(magnitude: np.ndarray, tiny: float) -> bool:
    """Whether some entry of ``magnitude`` (float64, nonnegative, finite) lies strictly
    between 0 and ``tiny``: their bit patterns are ordered as the numbers, so ``0 < m <
    tiny`` is ``bits(m) - 1 < bits(tiny) - 1`` as unsigned integers (0 wraps to the largest)."""
    bits = np.asarray(magnitude, dtype=np.float64).view(np.uint64)
    limit = np.float64(tiny).view(np.uint64) - np.uint64(1)
    return bool(np.any(np.subtract(bits, np.uint64(1), out=np.empty_like(bits)) < limit))


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.output[0] if node.output else 'no output'})"


def gib(nbytes: int) -> str:
    return f"{nbytes / _GIB:.3g} GiB"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def type_name(elem_type: int) -> str:
    """``float16`` for ``TensorProto.FLOAT16``, ..."""
    if elem_type in onnx.TensorProto.DataType.values():
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    return f"type {elem_type}"


def attr_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class OnnxWalker:
    """Walks an ONNX model's nodes in order (see the module docstring). Subclasses give
    :meth:`_handlers`, the operators they read on input-dependent tensors, and their
    ``run``, which seeds :attr:`values` with the input and calls :meth:`_run_node` on
    every node."""

    def __init__(self, model: onnx.ModelProto, name: str) -> None:
        self.model = model
        self.graph = model.graph
        self.name = name
        self.opset = {o.domain: o.version for o in model.opset_import}
        self.onnx_opset = self.opset.get("", self.opset.get("ai.onnx", 0))
        self.values: dict[str, Lin | np.ndarray] = {}
        self.static_shapes: dict[str, tuple[int, ...]] = {}
        #: a bound of the current stage's variables for inputs of magnitude at most 1 (a ReLU
        #: passes the bound of its input on): what the coefficients' values are checked with
        self.stage_scale = 1.0
        #: :meth:`value_bound` per tensor (while it lives): the stage scale it was computed with, the bound
        self._bounds: weakref.WeakKeyDictionary[Lin, tuple[float, np.ndarray]] = weakref.WeakKeyDictionary()
        #: the input magnitude up to which the float32 values checked so far stay in range
        #: (:attr:`~parallelepipedonn.classifier.Classifier.input_bound`)
        self.input_bound = math.inf
        #: the final Softmax or LogSoftmax dropped (:attr:`Classifier.dropped_final`), or ""
        self.dropped_final = ""

    # -- reading the model --------------------------------------------------------------
    def _infer_shapes(self) -> None:
        """Type-check the graph as onnxruntime does, and note every statically known shape."""
        light = shapes_model(self.model).SerializeToString()
        try:
            inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True)
        except Exception:  # InferenceError, ValidationError, ...: again without data propagation
            try:
                inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)
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
        if not vi.type.HasField("tensor_type") or tt.elem_type not in INPUT_TYPES:
            kind = type_name(tt.elem_type) if vi.type.HasField("tensor_type") else "not a tensor"
            raise ModelError(f"input {vi.name!r} is of type {kind}: only float32 and float64 inputs are supported")
        dtype = INPUT_TYPES[tt.elem_type]
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
        from . import onnx_import  # the limit is its public setting, read at each check

        nbytes = 8 * rows * cols
        limit = onnx_import.MAX_DENSE_BYTES
        if nbytes > limit:
            raise ModelTooLargeError(
                f"{what} would need a dense {rows}x{cols} float64 matrix ({gib(nbytes)}), over the importer's "
                f"limit of {gib(limit)} (parallelepipedonn.onnx_import.MAX_DENSE_BYTES)")

    def dense(self, label: str, op: str, v: Lin) -> Lin:
        """``v`` with its rows as a dense array, :meth:`_need` checked first (fresh rows are
        a view until an operation computes on them: :func:`fresh_rows`)."""
        if not v.fresh or v.rows.base is None:
            return v
        n = math.prod(v.shape)
        self._need(f"node {label!r} ({op}) on {n} values", n + 1, n)
        out = Lin(np.ascontiguousarray(v.rows), v.stage, v.dtype, fresh=True)
        self._remember_bound(out, self.value_bound(v))
        return out

    # -- node dispatch ------------------------------------------------------------------
    def _run_node(self, node: onnx.NodeProto, index: int, consumers: dict[str, int]) -> None:
        label = _node_label(node, index)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise UnsupportedOperatorError(label, node.op_type, "operators with sub-graphs (control flow) "
                                           "are not supported")
        args: list[Lin | np.ndarray | None] = []
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
        if not any(isinstance(a, Lin) for a in args):
            outputs: list = self._fold(node, label, args, attrs)
        else:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOperatorError(label, f"{node.domain}.{node.op_type}", "custom domain")
            for a in args:
                if isinstance(a, Lin):
                    self._check_stage(a, label)
            if node.op_type not in _READS_FRESH_ROWS:  # one dense copy per tensor, however often the node reads it
                copies: dict[int, Lin] = {}
                for i, a in enumerate(args):
                    if isinstance(a, Lin) and a.fresh:
                        if id(a) not in copies:
                            copies[id(a)] = self.dense(label, node.op_type, a)
                        args[i] = copies[id(a)]
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
                if isinstance(value, Lin):
                    self._check_range(label, node.op_type, value)
            self._after_node(node, label, args, attrs, outputs)
            if len(outputs) < len([o for o in node.output if o]):
                for extra in node.output[len(outputs):]:
                    if extra and (consumers.get(extra, 0) or extra in {o.name for o in self.graph.output}):
                        raise UnsupportedOperatorError(label, node.op_type, f"its output {extra!r} is not supported")
        for name, value in zip(node.output, outputs):
            if name:
                self.values[name] = value

    def _handlers(self) -> dict[str, Callable[..., Lin | list]]:
        """The subclass's readers of input-dependent tensors, by ONNX operator."""
        raise NotImplementedError

    def _check_stage(self, v: Lin, where: str) -> None:
        """A hook on every input-dependent operand before its node is read (the chain
        importer refuses tensors from before the last Relu)."""

    def _after_node(self, node: onnx.NodeProto, label: str, args: list, attrs: dict, outputs: list) -> None:
        """A hook after each input-dependent node is read (the chain importer bounds the
        underflow errors its folding hides)."""

    def _check_range(self, label: str, op: str, v: Lin) -> None:
        """The tensor's coefficients must be finite numbers of its ONNX type: one out of
        range means onnxruntime's intermediate values overflow to infinity (e.g. ``x * 1e30
        * 1e30 * 1e-40`` in float32), which the IR, folding the products, would not see; a
        nonzero one below the type's smallest subnormal number, that they underflow to 0
        (``x * 1e-30 * 1e-30 * 1e30 * 1e30``: 0 in float32, ``x`` folded; never in float64,
        whose smallest subnormal number is the smallest positive float64 coefficient). One
        pass over the magnitudes per block of rows, which also gives :meth:`value_bound`."""
        if v.fresh:  # the stage's variables: 0 and 1, each value at most stage_scale
            self.check_bound(label, op, self.value_bound(v), v.dtype)
            return
        info = np.finfo(v.dtype)
        p = v.rows.shape[0]
        flat = v.rows.reshape(p, -1)
        sums = np.zeros(flat.shape[1])
        step = max(1, 2**22 // max(1, flat.shape[1]))
        with np.errstate(over="ignore"):
            for lo in range(0, p, step):
                magnitude = np.abs(flat[lo:lo + step])
                top = magnitude.max(initial=0.0)
                if not np.isfinite(top):  # NaN propagates through the maximum
                    raise _range_error(label, op, "its values are NaN or infinite")
                if top > info.max:
                    raise _range_error(label, op, f"its coefficients overflow {v.dtype}: onnxruntime's "
                                       "values would be infinite")
                if info.smallest_subnormal > np.finfo(np.float64).smallest_subnormal and _below(
                        magnitude, info.smallest_subnormal):
                    raise _range_error(label, op, f"its coefficients underflow {v.dtype} (below its "
                                       "smallest subnormal number): onnxruntime's values would be 0")
                sums += magnitude[1 if lo == 0 else 0:].sum(axis=0)
            bound = np.abs(flat[0]) + self.stage_scale * sums
        self._remember_bound(v, bound)
        self.check_bound(label, op, bound, v.dtype)

    def check_bound(self, label: str, op: str, bound: np.ndarray, dtype: np.dtype, what: str = "values") -> None:
        """``bound``: a bound of values node ``label`` computes (of ``dtype``) for inputs of
        magnitude 1, which must stay in the type's range (and in float32 set how far the
        inputs may grow: :attr:`input_bound`)."""
        info = np.finfo(dtype)
        top = float(np.max(bound, initial=0.0))
        if math.isnan(top):  # NaN weights
            raise _range_error(label, op, "its values are NaN or infinite")
        if not top <= float(info.max):
            raise _range_error(label, op, f"its {what} reach {top:.3g} for inputs of magnitude 1, beyond "
                               f"{np.dtype(dtype)}'s range: onnxruntime's would be infinite")
        if np.dtype(dtype) == np.float32 and top > 0:
            self.input_bound = min(self.input_bound, float(info.max) / top)

    def value_bound(self, v: Lin) -> np.ndarray:
        """A bound of ``|v|`` (per value) for inputs of magnitude at most 1: ``|offset| +
        stage_scale * sum |coefficients|`` (float64, read-only; infinite where that
        overflows), remembered per tensor and stage scale (:meth:`_check_range` computed it
        for most)."""
        known = self._bounds.get(v)
        if known is not None and known[0] == self.stage_scale:
            return known[1]
        if v.fresh:  # |0| + stage_scale * 1, as the sum below gives it, without reading n^2 numbers
            return self._remember_bound(v, np.full(math.prod(v.shape), self.stage_scale))
        p = v.rows.shape[0]
        flat = v.rows.reshape(p, -1)
        with np.errstate(over="ignore"):
            bound = np.abs(flat[0]) + self.stage_scale * np.abs(flat[1:]).sum(axis=0)
        return self._remember_bound(v, bound)

    def _remember_bound(self, v: Lin, bound: np.ndarray) -> np.ndarray:
        bound.setflags(write=False)
        self._bounds[v] = (self.stage_scale, bound)
        return bound

    def _fold(self, node: onnx.NodeProto, label: str, args: list, attrs: dict) -> list[np.ndarray]:
        """Evaluate a node that does not depend on the input."""
        if node.op_type in _RANDOM_OPS or (node.op_type == "Dropout" and self._dropout_training(label, args, attrs)):
            raise UnsupportedOperatorError(label, node.op_type, "random values (onnxruntime draws new ones at "
                                           "every run)")
        if node.op_type == "Constant" and "sparse_value" in attrs:
            raise UnsupportedOperatorError(label, node.op_type, "a sparse constant (sparse_value): not supported")
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
        opset = dict(self.opset)
        if node.op_type in _FOLD_AT_19 and node.domain in ("", "ai.onnx"):
            # onnx's reference evaluator implements these from opset 19 only; for the types of
            # the earlier opsets (8-bit and int32 integers) the semantics is the same
            opset[node.domain] = max(opset.get(node.domain, 0), 19)
        opsets = [onnx.helper.make_opsetid(d, v) for d, v in opset.items()]
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        feeds = {nm: a for nm, a in zip(names, args) if nm}
        try:
            return list(ReferenceEvaluator(model).run(None, feeds))
        except Exception as exc:  # the reference evaluator raises many kinds (MemoryError too)
            raise ModelError(f"cannot evaluate constant node {label!r} ({node.op_type}): {_first_line(exc)}") from exc

    # -- operators both importers read alike --------------------------------------------
    @staticmethod
    def _const(c: object) -> np.ndarray:
        return np.asarray(c, dtype=np.float64)

    def _const_ints(self, label: str, op: str, value: object, what: str) -> list[int] | None:
        if value is None:
            return None
        if isinstance(value, Lin):
            raise UnsupportedOperatorError(label, op, f"the {what} depends on the input")
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu" or arr.ndim > 1:
            raise UnsupportedOperatorError(label, op, f"the {what} must be a 1-D integer tensor")
        return [int(a) for a in arr.reshape(-1)]

    def _reshape_like(self, op: str, label: str, args: list, attrs: dict) -> Lin:
        data = args[0]
        if not isinstance(data, Lin):
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
        # (row-major reshapes keep the variables' order: fresh rows stay fresh, as a view)
        return Lin(data.rows.reshape(data.rows.shape[0], *out), data.stage, data.dtype, fresh=data.fresh)

    def _shape(self, label: str, args: list, attrs: dict) -> np.ndarray:
        shape = args[0].shape
        start = int(attrs.get("start", 0))
        end = attrs.get("end")
        return np.array(shape[start:None if end is None else int(end)], dtype=np.int64)

    def _size(self, label: str, args: list, attrs: dict) -> np.ndarray:
        return np.array(math.prod(args[0].shape), dtype=np.int64)

    def _identity(self, label: str, args: list, attrs: dict) -> Lin:
        return args[0]

    def _dropout_training(self, label: str, args: list, attrs: dict) -> bool:
        """Whether a Dropout node drops values (training mode): onnxruntime then draws a
        random mask at every run."""
        if self.onnx_opset < 12:
            return False  # Dropout-7/10: always inference in onnxruntime
        training = args[2] if len(args) > 2 else None
        if training is None:
            return False
        if isinstance(training, Lin):
            raise UnsupportedOperatorError(label, "Dropout", "training_mode depends on the input")
        return bool(np.asarray(training).any())

    def _dropout(self, label: str, args: list, attrs: dict) -> Lin:
        if self._dropout_training(label, args, attrs):
            raise UnsupportedOperatorError(label, "Dropout", "training_mode is true: onnxruntime drops random "
                                           "values at every run")
        if any(isinstance(a, Lin) for a in args[1:]):
            raise UnsupportedOperatorError(label, "Dropout", "the ratio depends on the input")
        return args[0]

    def _final_softmax(self, node: onnx.NodeProto, label: str, args: list, attrs: dict,
                       consumers: dict[str, int]) -> Lin:
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
        self.dropped_final = node.op_type
        return v


def parse_model(data: bytes, name: str) -> onnx.ModelProto:
    """The model serialized in ``data`` (``name`` for the messages), or :class:`ModelError`."""
    if not data:
        raise ModelError(f"model {name!r} is an empty file")
    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError, ...
        raise ModelError(f"model {name!r} is not a valid ONNX model: {_first_line(exc)}") from exc


def shapes_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` for ONNX's type and shape inference: the same, but each initializer of more
    than :data:`SHAPE_ONLY_ELEMENTS` elements is a graph input of its element type and
    shape, without its values (which no shape depends on: shapes are computed from small
    tensors), so that the model inference serializes and parses back is small (a 270 MB
    model of VNN-COMP's tllverifybench: 1.2 s, 0.03 s light). An initializer also declared
    as an input keeps its values unless the declared type and shape are the initializer's
    exactly (inference would reconcile two different ones)."""
    g = model.graph
    declared = {i.name: i for i in g.input}

    def typed(t: onnx.TensorProto) -> onnx.ValueInfoProto:
        return onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))

    def shape_only(t: onnx.TensorProto) -> bool:
        if t.data_location == onnx.TensorProto.EXTERNAL or math.prod(t.dims) <= SHAPE_ONLY_ELEMENTS:
            return False
        return t.name not in declared or declared[t.name].type == typed(t).type
    dropped = {t.name for t in g.initializer if shape_only(t)}
    if not dropped:
        return model
    light = onnx.ModelProto()
    for fd, value in model.ListFields():  # every field but the graph, as it is
        if fd.name != "graph":
            _copy_field(light, fd, value)
    for fd, value in g.ListFields():  # the graph but its dropped initializers
        if fd.name != "initializer":
            _copy_field(light.graph, fd, value)
    light.graph.initializer.extend(t for t in g.initializer if t.name not in dropped)
    light.graph.input.extend(typed(t) for t in g.initializer if t.name in dropped and t.name not in declared)
    return light


def _copy_field(target: object, fd: object, value: object) -> None:
    """Protobuf field ``fd`` of ``target`` set to (a copy of) ``value``."""
    repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED  # type: ignore
    if repeated:
        getattr(target, fd.name).extend(value)  # type: ignore[attr-defined]
    elif fd.type == fd.TYPE_MESSAGE:  # type: ignore[attr-defined]
        getattr(target, fd.name).CopyFrom(value)  # type: ignore[attr-defined]
    else:
        setattr(target, fd.name, value)  # type: ignore[attr-defined]


def check_model(model: onnx.ModelProto, name: str, serialized: bytes | None = None) -> None:
    """ONNX's checker on the model (``serialized``: the same model serialized, if at hand:
    not serialized again), its failure as a :class:`ModelError`."""
    try:
        onnx.checker.check_model(model if serialized is None else serialized)
    except Exception as exc:  # ValidationError, ...
        raise ModelError(f"model {name!r} is not a valid ONNX model: {_first_line(exc)}") from exc


def read_model_file(path: str | Path) -> tuple[bytes, bytes]:
    """``(raw, model)``: a model file's bytes as stored and the serialized model (the
    same, or decompressed for a ``.gz`` file). Raises :class:`ModelError` when unreadable."""
    p = Path(path)
    try:
        raw = data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ModelError(f"cannot read model file {str(p)!r}: {getattr(exc, 'strerror', None) or exc}") from exc
    return raw, data
