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
Reading and checking the model, the walk over its nodes, constant folding and the
shape-only operators are :mod:`parallelepipedonn.onnx_read`'s (shared with the graph
importer); this module builds the chain: the affine maps (Gemm, MatMul and Conv expanded
to dense matrices) and the ReLU stages, and chooses between the chain and the graph IR.

The semantics is that of onnxruntime on a batch of one point. Every dense array the
import builds is sized first: one over :data:`MAX_DENSE_BYTES` (e.g. the identity matrix
a Relu on a very wide layer needs, or a large convolution expanded to a dense matrix) is
a :class:`ModelError` before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from .errors import ModelError, ModelTooLargeError, UnsupportedOperatorError, ValueRangeError
from .network import Affine, Layer, Network, ReLU
from .onnx_read import (
    BN_EPSILON,
    INPUT_TYPES,
    MIN_OPSET,
    RESHAPING_OPS,
    Lin,
    OnnxWalker,
    attr_str,
    check_bn_shift,
    check_model,
    fresh_rows,
    gib,
    parse_model,
    read_model_file,
    type_name,
)

if TYPE_CHECKING:
    from .graph import Graph

#: The largest dense float64 array the importer builds (bytes): one affine map of the IR,
#: a convolution expanded to a dense matrix, the identity after a Relu where an operator
#: computes on all of it (a product with it, and reshapes, read it as a view), ...
MAX_DENSE_BYTES = 2 * 2**30
#: The largest total size of the IR's weights (bytes).
MAX_MODEL_BYTES = 4 * 2**30
#: Rows times a constant matrix (consecutive linear layers folded) are one matrix product,
#: not one product per row, from this many multiply-adds on (tllverifybench's widest net,
#: 6272 x 1568 then 1568 x 3136 layers, loads in 10 s instead of 20). It sums in another order: below
#: it, the per-row products keep the IR of the models read before (bit for bit: the
#: bundled GMM encoders' folded PCA maps, whose last bits the one product changes).
ONE_PRODUCT_WORK = 2**30


class _Importer(OnnxWalker):
    """ONNX → chain :class:`Network` (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, name: str, pad_outputs: bool = False) -> None:
        super().__init__(model, name)
        #: a single output followed by a constant zero score (:attr:`Classifier.zero_outputs`)
        self.pad_outputs = pad_outputs
        self.layers: list[Layer] = []
        self.stage = 0
        self.model_bytes = 0
        #: a bound of how far any float32 value onnxruntime computes so far can be from the
        #: IR's through underflows to 0 (each rounding below float32's normal range errs by up
        #: to half its smallest subnormal, which later nodes amplify: :meth:`_after_node`)
        self.underflow = 0.0
        self.lost = 0.0  # the underflow bound carried into the scores (set by run)
        #: MatMul outputs and the bounds of their partial sums (by ``id``; the object kept, so
        #: that the id stays its own), for an Add of a constant onnxruntime fuses into them
        self.product_sums: dict[int, tuple[Lin, np.ndarray]] = {}

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
        self.values[inputs[0].name] = Lin(_identity_rows(n, onnx_shape), 0, dtype, fresh=True)
        consumers = self._consumers()
        for index, node in enumerate(g.node):
            self._run_node(node, index, consumers)
        out = self.values.get(g.output[0].name)
        if not isinstance(out, Lin):
            raise ModelError("the model's output does not depend on its input")
        out = self.dense(g.output[0].name, "output", out)
        self._check_stage(out, g.output[0].name)
        shape = out.shape
        if sum(d > 1 for d in shape) > 1:
            raise ModelError(f"the model's output has shape {list(shape)}: not a vector of class scores")
        self._close_affine(out)
        self.lost = self.underflow * max(math.prod(shape), 1)
        zero = 0
        if self.pad_outputs and math.prod(shape) == 1:  # one more score, a constant 0: exact
            last = self.layers[-1]
            assert isinstance(last, Affine)
            self.layers[-1], zero = Affine(np.vstack([last.weight, np.zeros_like(last.weight)]),
                                           np.append(last.bias, 0.0)), 1
        return Network.from_layers(ir_shape, self.layers, self.name, self.input_bound, self.dropped_final,
                                   zero_outputs=zero)

    def check_underflow(self) -> None:
        """:class:`ValueRangeError` unless the underflow bound of the model read
        (:meth:`_after_node`: gains multiplied over the whole chain, so coarser than the
        graph importer's node-by-node check) keeps the scores within float32's unit
        roundoff of the IR's."""
        if not self.lost <= float(np.finfo(np.float32).eps) / 2:
            raise ValueRangeError(f"the model may amplify the underflow of its float32 values (rounded to 0 below "
                                  f"float32's range) into its scores by up to {self.lost:.3g}: onnxruntime's scores "
                                  "would differ from the IR's")

    def _after_node(self, node: onnx.NodeProto, label: str, args: list, attrs: dict, outputs: list) -> None:
        """Carry the underflow bound (:attr:`underflow`) through a float32 node: every error
        so far times the node's gain (an L-infinity bound of how much it amplifies an
        error in an input-dependent operand: at least 1, so that applying it to every value,
        downstream of the node or not, over-estimates), plus what the node's own roundings
        below the normal range add (half the smallest subnormal per term of its sums)."""
        rounds32 = any(isinstance(o, Lin) and o.dtype == np.float32 for o in outputs)
        if not rounds32 and self.underflow == 0:
            return
        gain, terms = self._gain(node.op_type, args, attrs)
        # a float64 node after a Cast rounds nothing of float32's, but amplifies what came before
        own = terms * float(np.finfo(np.float32).smallest_subnormal) / 2 if rounds32 else 0.0
        with np.errstate(over="ignore"):
            self.underflow = max(gain, 1.0) * self.underflow + own

    def _gain(self, op: str, args: list, attrs: dict) -> tuple[float, int]:
        """``(gain, terms)`` of a node: the L-infinity gain from its input-dependent operands
        to its output, and the most terms one of its output values sums."""
        lins = [a for a in args if isinstance(a, Lin)]
        consts = [np.abs(self._const(a)) for a in args if a is not None and not isinstance(a, Lin)]
        with np.errstate(over="ignore", divide="ignore"):
            if op in ("MatMul", "Gemm") and consts:
                w = consts[0]
                if op == "Gemm":
                    flag = int(attrs.get("transB" if isinstance(args[0], Lin) else "transA", 0))
                    w = w.T if flag and w.ndim == 2 else w
                if isinstance(args[0], Lin):  # x W: the columns' sums
                    gain = float(w.sum(axis=-2).max(initial=0.0)) if w.ndim > 1 else float(w.sum())
                    terms = w.shape[-2] if w.ndim > 1 else w.size
                else:  # W x: the rows' sums
                    gain = float(w.sum(axis=-1).max(initial=0.0))
                    terms = w.shape[-1]
                if op == "Gemm":
                    gain = abs(float(attrs.get("alpha", 1.0))) * gain + abs(float(attrs.get("beta", 1.0)))
                return gain, terms + 2
            if op == "Conv" and consts:
                w = consts[0]
                return float(w.reshape(w.shape[0], -1).sum(axis=1).max(initial=0.0)), int(np.prod(w.shape[1:])) + 1
            if op in ("Mul", "Div") and consts:
                c = consts[0] if op == "Mul" else 1 / consts[0]
                return float(np.max(c, initial=0.0)), 1
            if op == "BatchNormalization" and len(args) >= 5:  # (the handler checked var + eps > 0)
                scale, var = self._const(args[1]), self._const(args[4])
                a = np.abs(scale) / np.sqrt(var + float(attrs.get("epsilon", BN_EPSILON)))
                return float(np.max(a, initial=0.0)), 2
        return float(len(lins)), 1  # Add, Sub, Neg, shape operators: each operand's error at most once

    def _need_rows(self, label: str, op: str, v: Lin, shape: Sequence[int]) -> None:
        self._need(f"node {label!r} ({op})", math.prod(shape), v.rows.shape[0])

    # -- node dispatch ------------------------------------------------------------------
    def _handlers(self) -> dict[str, Callable[..., Lin | list]]:
        return {
            "Relu": self._relu, "Add": self._add, "Sub": self._sub, "Mul": self._mul, "Div": self._div,
            "Neg": self._neg, "MatMul": self._matmul, "Gemm": self._gemm, "Conv": self._conv,
            "BatchNormalization": self._batchnorm, "Transpose": self._transpose, "Identity": self._identity,
            "Dropout": self._dropout, "Cast": self._cast, "CastLike": self._cast_like,
            "Shape": self._shape, "Size": self._size,
            **{op: functools.partial(self._reshape_like, op) for op in RESHAPING_OPS},
        }

    def _check_stage(self, v: Lin, where: str) -> None:
        if v.stage != self.stage:
            raise ModelError(
                f"{where!r}: the graph is not a chain of affine maps and ReLUs "
                "(a tensor from before a Relu is used after it)")

    # -- shape-only operators -----------------------------------------------------------
    def _transpose(self, label: str, args: list, attrs: dict) -> Lin:
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

    def _lin_plus_const(self, label: str, op: str, v: Lin, c: np.ndarray, sign: float = 1.0) -> Lin:
        c = self._const(c)
        if id(v) in self.product_sums and self.product_sums[id(v)][0] is v:
            # onnxruntime fuses a MatMul and the Add of a constant into a Gemm that starts its sums from it
            self.check_bound(label, op, np.abs(c) + self.product_sums[id(v)][1], v.dtype, "partial sums (with the "
                             "added constant, as onnxruntime's fused Gemm)")
        shape = np.broadcast_shapes(v.shape, c.shape)
        self._need_rows(label, op, v, shape)
        rows = self._align(v.rows, c.ndim)
        out = np.array(np.broadcast_to(sign * rows if sign != 1.0 else rows, (rows.shape[0], *shape)))
        out[0] += c
        return v.like(out)

    def _lin_plus_lin(self, label: str, op: str, a: Lin, b: Lin, sign: float) -> Lin:
        shape = np.broadcast_shapes(a.shape, b.shape)
        self._need_rows(label, op, a, shape)
        ndim = len(shape)
        return a.like(self._align(a.rows, ndim) + sign * self._align(b.rows, ndim))

    def _add(self, label: str, args: list, attrs: dict) -> Lin:
        a, b = args
        if isinstance(a, Lin) and isinstance(b, Lin):
            return self._lin_plus_lin(label, "Add", a, b, 1.0)
        return self._lin_plus_const(label, "Add", a, b) if isinstance(a, Lin) else \
            self._lin_plus_const(label, "Add", b, a)

    def _sub(self, label: str, args: list, attrs: dict) -> Lin:
        a, b = args
        if isinstance(a, Lin) and isinstance(b, Lin):
            return self._lin_plus_lin(label, "Sub", a, b, -1.0)
        if isinstance(a, Lin):
            return self._lin_plus_const(label, "Sub", a, -self._const(b))
        return self._lin_plus_const(label, "Sub", b, a, sign=-1.0)

    def _scale(self, label: str, op: str, v: Lin, c: object) -> Lin:
        c = self._const(c)
        self._need_rows(label, op, v, np.broadcast_shapes(v.shape, c.shape))
        return v.like(self._align(v.rows, c.ndim) * c)

    def _mul(self, label: str, args: list, attrs: dict) -> Lin:
        a, b = args
        if isinstance(a, Lin) and isinstance(b, Lin):
            raise UnsupportedOperatorError(label, "Mul", "product of two input-dependent tensors is not affine")
        return self._scale(label, "Mul", a, b) if isinstance(a, Lin) else self._scale(label, "Mul", b, a)

    def _div(self, label: str, args: list, attrs: dict) -> Lin:
        a, b = args
        if not isinstance(a, Lin) or isinstance(b, Lin):
            raise UnsupportedOperatorError(label, "Div", "only division of an input-dependent tensor by a constant")
        b = self._const(b)
        if (b == 0).any():
            raise ModelError(f"node {label!r} (Div) divides by zero")
        # x / b, not x * (1 / b): exact division of each coefficient, as onnxruntime divides
        self._need_rows(label, "Div", a, np.broadcast_shapes(a.shape, b.shape))
        return a.like(self._align(a.rows, b.ndim) / b)

    def _neg(self, label: str, args: list, attrs: dict) -> Lin:
        return args[0].like(-args[0].rows)

    def _cast_to(self, label: str, op: str, v: Lin, target: np.dtype | None, name: str) -> Lin:
        if target is None:
            raise UnsupportedOperatorError(label, op, f"cast to {name}: the IR computes in float64 and cannot "
                                           "express its rounding (only casts to float32 or float64)")
        if target.itemsize < v.dtype.itemsize:
            raise UnsupportedOperatorError(label, op, f"cast of a {v.dtype} tensor to {target}: a rounding the IR "
                                           "cannot express")
        return Lin(v.rows, v.stage, target, fresh=v.fresh)  # widening (or no-op): exact

    def _cast(self, label: str, args: list, attrs: dict) -> Lin:
        to = int(attrs.get("to", 0))
        return self._cast_to(label, "Cast", args[0], INPUT_TYPES.get(to), type_name(to))

    def _cast_like(self, label: str, args: list, attrs: dict) -> Lin:
        v, like = args[0], args[1]
        if not isinstance(v, Lin):
            raise UnsupportedOperatorError(label, "CastLike", "only the cast tensor may depend on the input")
        dtype = like.dtype if isinstance(like, Lin) else np.asarray(like).dtype
        target = dtype if dtype in INPUT_TYPES.values() else None
        return self._cast_to(label, "CastLike", v, target, str(dtype))

    def _matmul(self, label: str, args: list, attrs: dict) -> Lin:
        """ONNX MatMul (numpy semantics) with one constant operand: linear in the other,
        so every row of the input-dependent operand is multiplied the same way."""
        a, b = args
        if isinstance(a, Lin) and isinstance(b, Lin):
            raise UnsupportedOperatorError(label, "MatMul", "product of two input-dependent tensors is not affine")
        lin, const_ = (a, self._const(b)) if isinstance(a, Lin) else (b, self._const(a))
        a_shape = a.shape if isinstance(a, Lin) else const_.shape
        b_shape = b.shape if isinstance(b, Lin) else const_.shape
        if not a_shape or not b_shape:
            raise UnsupportedOperatorError(label, "MatMul", "scalar operand")
        out_shape = _matmul_shape(a_shape, b_shape)
        self._need_rows(label, "MatMul", lin, out_shape)
        identity_left = isinstance(a, Lin) and len(a_shape) == 2 and a_shape[0] == 1 and len(b_shape) <= 2 \
            and _identity_product(lin.rows, const_, lin.fresh)
        # A z for fresh variables z (1-D): column i of A is the product with the i-th one
        identity_right = isinstance(b, Lin) and lin.fresh and len(b_shape) == 1 and len(a_shape) == 2 \
            and bool(np.isfinite(const_).all())
        if not (identity_left or identity_right):
            lin = self.dense(label, "MatMul", lin)
        # promote 1-D operands to matrices as ONNX does, then give both the same rank
        a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
        b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
        nd = max(len(a2), len(b2))
        p = lin.rows.shape[0]
        bound = self.value_bound(lin)  # |values| of the input-dependent operand, for its partial sums
        if isinstance(a, Lin):
            left = lin.rows.reshape(p, *([1] * (nd - len(a2))), *a2)
            right = const_.reshape(1, *([1] * (nd - len(b2))), *b2)
            sums = np.matmul(bound.reshape(left.shape[1:]), np.abs(right[0]))
        else:
            left = const_.reshape(1, *([1] * (nd - len(a2))), *a2)
            right = lin.rows.reshape(p, *([1] * (nd - len(b2))), *b2)
            sums = np.matmul(np.abs(left[0]), bound.reshape(right.shape[1:]))
        self.check_bound(label, "MatMul", sums, lin.dtype, "partial sums")
        if identity_left:
            out = np.concatenate([np.zeros((1, b2[-1])), const_.reshape(b2) + 0.0])  # [0; I] B
        elif identity_right:
            # (A [0, I])^T, row-major as the per-row products were (the next product's sums, in the same order)
            out = np.ascontiguousarray(np.concatenate([np.zeros((1, a_shape[0])), const_.T + 0.0]))
        elif isinstance(a, Lin) and len(b_shape) <= 2 and lin.rows.size * const_.size // a2[-1] >= ONE_PRODUCT_WORK:
            out = lin.rows.reshape(-1, a2[-1]) @ const_.reshape(a2[-1], -1)  # one product, not one per row
        else:
            out = np.matmul(left, right)
        result = lin.like(out.reshape(p, *out_shape))
        self.product_sums[id(result)] = (result, sums.reshape(out_shape))
        return result

    def _gemm(self, label: str, args: list, attrs: dict) -> Lin:
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
        if isinstance(a, Lin) and isinstance(b, Lin):
            raise UnsupportedOperatorError(label, "Gemm", "product of two input-dependent tensors is not affine")
        a_shape = a.shape if isinstance(a, Lin) else np.shape(a)
        b_shape = b.shape if isinstance(b, Lin) else np.shape(b)
        if len(a_shape) != 2 or len(b_shape) != 2:
            raise UnsupportedOperatorError(label, "Gemm", f"A {list(a_shape)} and B {list(b_shape)} must be 2-D")
        m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
        k2, n = (b_shape[1], b_shape[0]) if trans_b else b_shape
        if k != k2:
            raise UnsupportedOperatorError(label, "Gemm", f"A {list(a_shape)} and B {list(b_shape)} do not match")
        c_shape = c.shape if isinstance(c, Lin) else np.shape(c) if c is not None else ()
        if len(c_shape) > 2 or any(cd not in (1, d) for cd, d in zip(c_shape[::-1], (n, m))):
            raise UnsupportedOperatorError(label, "Gemm", f"C of shape {list(c_shape)} does not broadcast to "
                                           f"{[m, n]}")

        def t(x: np.ndarray, flag: int) -> np.ndarray:
            return np.swapaxes(x, -1, -2) if flag else x

        product: Lin | np.ndarray
        if isinstance(a, Lin) or isinstance(b, Lin):
            lin = a if isinstance(a, Lin) else b
            self._need_rows(label, "Gemm", lin, (m, n))
            identity = isinstance(a, Lin) and not trans_a and m == 1 \
                and _identity_product(a.rows, t(self._const(b), trans_b), a.fresh)
            if not identity:
                lin = self.dense(label, "Gemm", lin)
                a, b = (lin, b) if isinstance(a, Lin) else (a, lin)
            bound = self.value_bound(lin).reshape(lin.shape)  # for the partial sums of A B
            if isinstance(a, Lin):
                right = t(self._const(b), trans_b)
                sums = np.matmul(t(bound, trans_a), np.abs(right))
                if identity:
                    rows = np.concatenate([np.zeros((1, 1, n)), right[:, None, :] + 0.0])  # [0; I] B
                elif not trans_a and a.rows.size * n >= ONE_PRODUCT_WORK:  # one product, not one per row
                    rows = (a.rows.reshape(-1, k) @ right).reshape(-1, m, n)
                else:
                    rows = np.matmul(t(a.rows, trans_a), right)
            else:
                rows = np.matmul(t(self._const(a), trans_a), t(b.rows, trans_b))
                sums = np.matmul(t(np.abs(self._const(a)), trans_a), t(bound, trans_b))
            self.check_bound(label, "Gemm", sums, lin.dtype, "partial sums of A B")
            if c is not None:  # onnxruntime may start its sums from beta C
                c_bound = self.value_bound(c).reshape(c.shape) if isinstance(c, Lin) else np.abs(self._const(c))
                self.check_bound(label, "Gemm", abs(alpha) * sums + abs(beta) * c_bound, lin.dtype,
                                 "partial sums of alpha A B + beta C")
            if alpha != 1.0:  # onnxruntime multiplies by alpha after the product: that must be finite too
                self._check_range(label, "Gemm", lin.like(rows))
            product = lin.like(alpha * rows)
        else:
            product = alpha * np.matmul(t(self._const(a), trans_a), t(self._const(b), trans_b))
        if c is None:
            assert isinstance(product, Lin)
            return product
        if isinstance(c, Lin):
            self._need_rows(label, "Gemm", c, (m, n))
            scaled_c = c.like(beta * np.array(np.broadcast_to(self._align(c.rows, 2), (c.rows.shape[0], m, n))))
            if isinstance(product, Lin):
                return self._lin_plus_lin(label, "Gemm", product, scaled_c, 1.0)
            return self._lin_plus_const(label, "Gemm", scaled_c, product)
        assert isinstance(product, Lin)
        return self._lin_plus_const(label, "Gemm", product, beta * self._const(c))

    def _conv(self, label: str, args: list, attrs: dict) -> Lin:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        if not isinstance(x, Lin) or isinstance(w, Lin) or isinstance(bias, Lin):
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
        auto_pad = attr_str(attrs.get("auto_pad", "NOTSET"))
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
            # the partial sums: |W| applied to a bound of the input's values
            bound = torch.from_numpy(np.array(self.value_bound(x)).reshape(x.shape))
            sums = conv(torch.nn.functional.pad(bound, torch_pads), weight.abs().double(), stride=strides,
                        dilation=dil, groups=group).numpy()
        self.check_bound(label, "Conv", sums, x.dtype, "partial sums")
        if bias is not None:
            rows[0] += self._const(bias).reshape(1, -1, *([1] * spatial))
        return x.like(rows)

    def _batchnorm(self, label: str, args: list, attrs: dict) -> Lin:
        x = args[0]
        if not isinstance(x, Lin) or any(isinstance(a, Lin) for a in args[1:]):
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
        denom = var + float(attrs.get("epsilon", BN_EPSILON))
        if (denom <= 0).any():
            raise ModelError(f"node {label!r} (BatchNormalization): variance + epsilon is not positive")
        a = scale / np.sqrt(denom)
        info = np.finfo(x.dtype)
        if not np.abs(a).max() <= info.max:  # onnxruntime's factor: infinite
            raise ValueRangeError(f"node {label!r} (BatchNormalization): scale / sqrt(variance + epsilon) reaches "
                                  f"{np.abs(a).max():.3g}, beyond {info.dtype}'s range: onnxruntime's values would "
                                  "not be finite")
        check_bn_shift(label, mean, a, info)
        bshape = (1, -1, *([1] * (len(x.shape) - 2)))
        scaled = self._scale(label, "BatchNormalization", x, a.reshape(bshape))
        return self._lin_plus_const(label, "BatchNormalization", scaled, (bias - mean * a).reshape(bshape))

    def _relu(self, label: str, args: list, attrs: dict) -> Lin:
        v = args[0]
        n = math.prod(v.shape)
        self._close_affine(v)
        self.layers.append(ReLU())
        self.stage += 1
        # float32: a ReLU passes the bound on (onnxruntime's float32 values overflow across layers);
        # float64 keeps each stage's own bound, as before: the IR's exact semantics decide where
        # float64 itself overflows (the crafted overflow nets of tests/crafted_nets.py)
        self.stage_scale = float(self.value_bound(v).max()) if v.rows.size and v.dtype == np.float32 else 1.0
        # (a view: its consumer is charged the dense rows if it computes on all of them)
        return Lin(fresh_rows(n, v.shape), self.stage, v.dtype, fresh=True)

    def _close_affine(self, v: Lin) -> None:
        p = v.rows.shape[0]
        flat = v.rows.reshape(p, -1)
        self.model_bytes += flat.nbytes
        if self.model_bytes > MAX_MODEL_BYTES:
            raise ModelTooLargeError(f"the network's weights would take {gib(self.model_bytes)} as float64, over the "
                             f"importer's limit of {gib(MAX_MODEL_BYTES)} (parallelepipedonn.onnx_import."
                             "MAX_MODEL_BYTES)")
        self.layers.append(Affine(flat[1:].T, flat[0]))  # Affine copies


def _identity_product(rows: np.ndarray, const: np.ndarray, fresh: bool = False) -> bool:
    """Whether ``rows`` (``(1 + n, 1, n)``: one row vector per variable) are a stage's
    fresh variables (zero offset, identity) and ``const`` finite: their product with it is
    then ``const`` itself below a zero row, exactly (each entry one product by 1, the
    other terms exact zeros; ``+ 0.0`` gives a zero the sign a sum from +0 gives it) — the
    importer skips the ``n``-fold product (45 s for a 6272 x 3136 layer of VNN-COMP's
    tllverifybench). ``fresh``: the rows are known to be (:attr:`Lin.fresh`), not counted."""
    p = rows.shape[0]
    flat = rows.reshape(p, -1)
    if flat.shape != (p, p - 1) or not np.isfinite(const).all():
        return False
    if fresh:  # (:attr:`Lin.fresh`: the identity by construction, possibly a view of 2 n numbers)
        return True
    if flat[0].any():
        return False
    body = flat[1:]
    return bool(np.count_nonzero(body) == p - 1 and (np.diagonal(body) == 1.0).all())


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


def load_onnx(path: str | Path, name: str | None = None, *, pad_outputs: bool = False) -> Network | Graph:
    """Read an ONNX feed-forward ReLU classifier into the IR: a chain :class:`Network`
    when the model is one (convolution-free, no residual connections), else a
    :class:`~parallelepipedonn.graph.Graph` (see :func:`model_from_onnx`).
    ``pad_outputs``: a model with a single output (a regression network) is read too, its
    IR followed by a constant zero score (:attr:`~parallelepipedonn.classifier.Classifier.zero_outputs`),
    for VNN-LIB properties of its output; without it, refused.

    A gzip-compressed model (``.onnx.gz``, as VNN-COMP's benchmarks ship them) is read
    decompressed; ``file_sha256`` is the file's, as stored. Raises :class:`ModelError` (or
    its subclass :class:`UnsupportedOperatorError`) for unreadable, malformed,
    unsupported or too large models.
    """
    p = Path(path)
    label = name or (p.name[:-3] if p.suffix == ".gz" else p.name)
    raw, data = read_model_file(p)
    ir = model_from_onnx(parse_model(data, label), label, pad_outputs=pad_outputs, serialized=data)
    return dataclasses.replace(ir, file_sha256=hashlib.sha256(raw).hexdigest())





def network_from_onnx_bytes(data: bytes, name: str = "") -> Network:
    """Like :func:`network_from_onnx`, from the serialized model."""
    return network_from_onnx(parse_model(data, name), name)


def model_from_onnx(model: onnx.ModelProto, name: str = "", pad_outputs: bool = False, *,
                    serialized: bytes | None = None) -> Network | Graph:
    """The IR of a loaded ONNX model: models with convolutions or pooling are read as a
    :class:`~parallelepipedonn.graph.Graph` (convolutions kept as convolutions; if the
    graph importer refuses one that the chain importer reads, e.g. a 1-D convolution, the
    chain); others as a chain :class:`Network`, or as a graph where the chain importer
    finds a residual connection or an operator it does not read (e.g. Concat).
    ``pad_outputs``: as for :func:`load_onnx`. ``serialized``: the model's serialized
    bytes, if at hand (ONNX's checker reads them, instead of the model serialized again)."""
    from .onnx_graph import graph_from_onnx, wants_graph

    name = name or model.graph.name
    check_model(model, name, serialized)
    if wants_graph(model):
        try:
            return graph_from_onnx(model, name, pad_outputs)
        except ValueRangeError:  # a refusal on the numbers, which no other importer may overrule
            raise
        except ModelError as graph_error:
            importer = _Importer(model, name, pad_outputs)
            try:
                chain = importer.run()
                importer.check_underflow()  # (no node-by-node check of the graph importer's)
            except ValueRangeError:  # the chain importer read the structure and refused the numbers
                raise
            except ModelError:
                raise graph_error from None
            return chain
    importer = _Importer(model, name, pad_outputs)
    try:
        chain = importer.run()
    except UnsupportedOperatorError as exc:  # an operator only the graph importer reads (e.g. Concat)
        try:
            return graph_from_onnx(model, name, pad_outputs)
        except ValueRangeError:  # it read the structure and refused the numbers
            raise
        except ModelError:
            raise exc from None
    except ModelError as exc:
        if "is not a chain" not in str(exc):
            raise
        return graph_from_onnx(model, name, pad_outputs)
    return _checked_as_graph(chain, importer, model, name)


def _checked_as_graph(chain: Network, importer: _Importer, model: onnx.ModelProto, name: str) -> Network:
    """A float32 model the chain importer read, once its underflow is bounded: by the
    chain importer's own bound (:meth:`_Importer._after_node`, whose gains multiply over
    the whole chain: enough for ordinary models, which are then not read twice), else by
    the graph importer's node-by-node check where it reads the model (its
    :class:`ValueRangeError` stands; the smaller of the two input bounds is kept), else the
    chain importer's refusal stands."""
    from .onnx_graph import graph_from_onnx

    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        return chain
    try:
        importer.check_underflow()
        return chain
    except ValueRangeError as coarse:
        refusal = coarse
    try:
        graph = graph_from_onnx(model, name, importer.pad_outputs)
    except ValueRangeError:
        raise
    except ModelError:  # a structure only the chain importer reads (e.g. a 1-D convolution): its own bound
        raise refusal from None
    if graph.input_bound >= chain.input_bound:
        return chain
    return dataclasses.replace(chain, input_bound=graph.input_bound)




def network_from_onnx(model: onnx.ModelProto, name: str = "") -> Network:
    """Convert a loaded ONNX model into the IR (checked with ONNX's checker and strict
    type and shape inference first)."""
    name = name or model.graph.name
    check_model(model, name)
    importer = _Importer(model, name)
    network = importer.run()
    importer.check_underflow()
    return network
