"""ONNX models → the DAG IR (:class:`~parallelepipedonn.graph.Graph`), convolutions kept.

The importer walks the ONNX graph once: every tensor that depends on the input becomes a
node of the IR (per-sample shapes: the ONNX batch axis, of size 1, is dropped), every other
tensor is constant-folded with ONNX's reference evaluator (the walking, folding and checks
are :class:`~parallelepipedonn.onnx_read.OnnxWalker`'s, shared with the chain importer). Supported on
input-dependent tensors: Conv (2-D), Gemm and MatMul by a constant on a vector, Add / Sub
of two tensors or of a constant, Mul / Div by a constant, Neg, BatchNormalization (folded
into the Conv or Gemm before it when nothing else reads that one's output, else a
per-channel affine node), Relu, Flatten / Reshape / Squeeze / Unsqueeze, Transpose, Pad
(constant 0), AveragePool and GlobalAveragePool, Concat, Identity, inference Dropout,
widening Cast, and a final Softmax over the class scores. MaxPool and GlobalMaxPool (2-D,
no padding) are lowered exactly to grouped convolutions, ReLU and Add:
``max(a, b) = b + relu(a - b)`` over balanced trees, one window axis after the other.
Anything else raises :class:`UnsupportedOperatorError`.

Constants are rounded once to float64 where the IR stores a product of ONNX constants
(``alpha * B`` of Gemm, ``1 / b`` of Div, a folded BatchNormalization): the graph's weights
are the IR, whose exact semantics is what is certified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch

from . import graph_nodes as gn
from . import onnx_import
from .errors import ModelError, ModelTooLargeError, UnsupportedOperatorError, ValueRangeError
from .graph import Graph
from .onnx_read import BN_EPSILON, RESHAPING_OPS, Lin, OnnxWalker, attr_str, check_bn_shift, gib

#: Operators whose presence sends a model to the graph importer (``load_onnx``).
GRAPH_OPS = frozenset({"Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool", "Pad", "MaxPool",
                       "GlobalMaxPool"})


@dataclass(frozen=True, eq=False)
class _Sym(Lin):
    """An input-dependent tensor: the output of IR node ``node``, of ONNX shape ``full``."""

    node: int = 0
    full: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.full


def check_value_range(nodes: Sequence[gn.Node], dtypes: list[np.dtype],
                      unfolded: dict[int, np.ndarray] | None = None) -> float:
    """:class:`ValueRangeError` for a graph whose values leave its ONNX float types' range where
    onnxruntime computes them (the IR computes exactly, so that the two would differ by far
    more than rounding):

    * overflow: a node whose values, for inputs of magnitude at most 1 (a ReLU passes the
      bound on in float32; in float64 it restarts at 1, as the chain importer's stages: the
      IR's exact semantics decide where float64 itself overflows), may exceed the type's
      largest number: ``x * 1e30 * 1e30 * 1e-30 * 1e-30`` is
      ``x`` in the IR and infinite in float32; so may what onnxruntime computes on the way
      and the IR does not: an average pooling's window sum, and the product before a factor
      the IR folded into the node's weights (``unfolded[k]``: Gemm's ``alpha``, a folded
      BatchNormalization's per-channel factor; the node's values divided by it);
    * underflow: rounding nodes whose results, rounded to 0 below the type's normal range
      (an error of at most half the smallest subnormal number each), the rest of the graph
      amplifies by more than the type's unit roundoff: ``x * 1e-30 * 1e-30 * 1e30 * 1e30``
      is 0 in float32. The amplification is the sum over outputs of ``|W|`` products back to
      the node (a ReLU passes it on).

    Sums of absolute values in float64, an upper bound up to its own rounding (immaterial
    at these thresholds).

    Returns the input magnitude up to which the float32 nodes' values stay in range (each
    bound grows at most linearly with the inputs' magnitude beyond 1: the largest number
    over the largest bound; ``inf`` without float32 nodes): the graph's ``input_bound``."""
    headroom = math.inf
    with torch.no_grad():
        scale: list[torch.Tensor] = []
        for node in nodes:
            ins = [scale[i] for i in node.inputs]
            if isinstance(node, gn.Input):
                s = torch.ones(1, *node.shape, dtype=torch.float64)
            elif isinstance(node, gn.ReLU):  # passes the bound on in float32, restarts at 1 in float64 (as chains)
                s = ins[0] if dtypes[len(scale)] == np.float32 else torch.ones(1, *node.shape, dtype=torch.float64)
            elif isinstance(node, gn.LinearNode):
                s = node.apply_abs(ins[0])
                ab = node.abs_bias(torch.float64, "cpu")
                s = s if ab is None else s + ab
            elif isinstance(node, gn.Add | gn.Sub):
                s = ins[0] + ins[1]
            else:
                s = torch.cat(ins, dim=node.axis + 1)  # type: ignore[attr-defined]
            top = float(s.max())
            k = len(scale)
            if isinstance(node, gn.AvgPool2d):  # onnxruntime sums the window, then divides
                top = max(top, float(ins[0].max()) * math.prod(node.kernel))
            factor = (unfolded or {}).get(k)
            if factor is not None:
                # (a zero factor, e.g. a pruned batchnorm channel, leaves nothing to divide back: skipped)
                divisor = np.where(factor == 0, np.inf, np.abs(factor))
                pre = s / torch.tensor(divisor, dtype=torch.float64).reshape(1, *np.shape(factor))
                top = max(top, float(pre.max()))
            info = np.finfo(dtypes[k])
            if not top <= float(info.max):
                raise ValueRangeError(f"node {node.name or len(scale)!r} ({node.kind}): its values reach {top:.3g} on "
                                      f"inputs of magnitude 1, beyond {info.dtype}'s range: onnxruntime's would be "
                                      "infinite")
            if dtypes[k] == np.float32 and top > 0:
                headroom = min(headroom, float(info.max) / top)
            scale.append(s)
        gain: list[torch.Tensor | None] = [None] * len(nodes)
        gain[-1] = torch.ones(1, *nodes[-1].shape, dtype=torch.float64)
        shapes = [n.shape for n in nodes]
        for k in range(len(nodes) - 1, 0, -1):
            g, node = gain[k], nodes[k]
            if g is None:
                continue
            if isinstance(node, gn.LinearNode | gn.Add | gn.Sub) and not getattr(node, "exact", False):
                info = np.finfo(dtypes[k])
                lost = float(g.sum()) * float(info.smallest_subnormal) / 2
                if not lost <= float(info.eps) / 2:
                    raise ValueRangeError(f"node {node.name or k!r} ({node.kind}): the graph amplifies the underflow "
                                          f"of its {info.dtype} values (rounded to 0 below {info.dtype}'s range) into "
                                          f"the scores by up to {lost:.3g}: onnxruntime's scores would differ from the "
                                          "IR's")
            if isinstance(node, gn.LinearNode):
                parts = [node.apply_abs_t(g)]
            elif isinstance(node, gn.Concat):
                parts = list(torch.split(g, node.sizes([shapes[i] for i in node.inputs]), dim=node.axis + 1))
            else:
                parts = [g] * len(node.inputs)
            for i, part in zip(node.inputs, parts):
                gain[i] = part if gain[i] is None else gain[i] + part
    return headroom


class GraphImporter(OnnxWalker):
    """ONNX → :class:`Graph` (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, name: str, pad_outputs: bool = False) -> None:
        super().__init__(model, name)
        #: a single output followed by a constant zero score (:attr:`Classifier.zero_outputs`)
        self.pad_outputs = pad_outputs
        self.nodes: list[gn.Node] = []
        self.dtypes: list[np.dtype] = []  # the ONNX float type each node's values have in onnxruntime
        #: per node, a factor folded into its weights that onnxruntime applies after the product
        self.unfolded: dict[int, np.ndarray] = {}
        self.producer_readers: dict[str, int] = {}

    # -- entry point --------------------------------------------------------------------
    def run(self) -> Graph:  # type: ignore[override]
        g = self.graph
        if self.onnx_opset < 7:
            raise ModelError(f"the model uses ai.onnx opset {self.onnx_opset}: not supported")
        init_names = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in init_names]
        if len(inputs) != 1 or len(g.output) != 1:
            raise ModelError("the model must have exactly one input and one output")
        onnx_shape, ir_shape, dtype = self._input_shape(inputs[0])
        if len(onnx_shape) == len(ir_shape):
            raise ModelError(f"input {inputs[0].name!r} has no batch axis: not supported by the graph importer")
        self._infer_shapes()
        for t in g.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise ModelError(f"initializer {t.name!r} keeps its data in an external file: not supported")
            self.values[t.name] = onnx.numpy_helper.to_array(t)
        self.nodes.append(gn.Input(inputs=(), shape=ir_shape, name=inputs[0].name))
        self.dtypes.append(dtype)
        self.values[inputs[0].name] = _Sym(None, 0, dtype, 0, onnx_shape)  # type: ignore[arg-type]
        consumers = self._consumers()
        self.producer_readers = consumers
        for index, node in enumerate(g.node):
            self._run_node(node, index, consumers)
        out = self.values.get(g.output[0].name)
        if not isinstance(out, _Sym):
            raise ModelError("the model's output does not depend on its input")
        out = self._keep_read(out)
        shape = out.full[1:]
        single = self.pad_outputs and math.prod(shape) == 1
        if sum(d > 1 for d in shape) > 1 or (math.prod(shape) < 2 and not single):
            raise ModelError(f"the model's output has shape {list(out.full)}: not a vector of class scores"
                             + (" (`verify --vnnlib` answers VNN-LIB properties of it)" if math.prod(shape) == 1
                                else ""))
        if len(shape) != 1:
            out = self._append(gn.Reshape(inputs=(out.node,), shape=(math.prod(shape),), in_shape=shape), out.dtype)
        if single:  # one more score, a constant 0: exact (:attr:`Classifier.zero_outputs`)
            self._append(gn.Dense(inputs=(len(self.nodes) - 1,), shape=(2,), in_shape=(1,),
                                  weight=np.array([[1.0], [0.0]]), bias_=np.zeros(2), name="zero output"), out.dtype)
        total = sum(p.nbytes for n in self.nodes for p in n.params())
        limit = onnx_import.MAX_MODEL_BYTES  # the setting, read when it applies (as the chain importer does)
        if total > limit:
            raise ModelTooLargeError(f"the network's weights take {gib(total)} as float64, over the importer's "
                                     f"limit of {gib(limit)} (parallelepipedonn.onnx_import.MAX_MODEL_BYTES)")
        bound = check_value_range(self.nodes, self.dtypes, self.unfolded)
        return Graph(ir_shape, tuple(self.nodes), self.name, input_bound=bound, dropped_final=self.dropped_final,
                     zero_outputs=int(single))

    # -- helpers ------------------------------------------------------------------------
    def _keep_read(self, out: _Sym) -> _Sym:
        """The IR's nodes cut to those the output reads, ``out`` renumbered: a graph's last
        node is its output, so that a node computed after the ONNX output (read by no
        output, or an extra tensor) would otherwise be what the IR computes and certifies
        (a dead ``Neg`` after the scores negated them) — and a dead branch costs bounds."""
        read, stack = {0}, [out.node]
        while stack:
            k = stack.pop()
            if k not in read:
                read.add(k)
                stack.extend(self.nodes[k].inputs)
        if len(read) == len(self.nodes):  # (then the output, read by no node, is the last)
            return out
        order = sorted(read)
        new = {k: i for i, k in enumerate(order)}
        self.nodes = [replace(self.nodes[k], inputs=tuple(new[i] for i in self.nodes[k].inputs))
                      for k in order]
        self.dtypes = [self.dtypes[k] for k in order]
        self.unfolded = {new[k]: v for k, v in self.unfolded.items() if k in new}
        return replace(out, node=new[out.node])

    def _check_range(self, label: str, op: str, v: Lin) -> None:
        """The weights are checked finite by the nodes themselves."""

    def _append(self, node: gn.Node, dtype: np.dtype) -> _Sym:
        self.nodes.append(node)
        self.dtypes.append(np.dtype(dtype))
        return _Sym(None, 0, dtype, len(self.nodes) - 1, (1, *node.shape))  # type: ignore[arg-type]

    @staticmethod
    def _per_sample(label: str, op: str, v: _Sym) -> tuple[int, ...]:
        if not v.full or v.full[0] != 1:
            raise UnsupportedOperatorError(label, op, f"a tensor of shape {list(v.full)}: the batch axis must stay "
                                           "first, of size 1")
        return v.full[1:]

    def _broadcast_const(self, label: str, op: str, v: _Sym, c: object) -> np.ndarray:
        """A constant operand as a per-sample array of ``v``'s shape (refused if it would
        broadcast ``v`` to a larger shape)."""
        c = self._const(c)
        if np.broadcast_shapes(v.full, c.shape) != v.full:
            raise UnsupportedOperatorError(label, op, f"constant of shape {list(c.shape)} broadcasts the "
                                           f"input-dependent tensor of shape {list(v.full)}")
        return np.array(np.broadcast_to(c, v.full)[0])

    def _scale(self, label: str, op: str, v: _Sym, scale: object, shift: object = 0.0) -> _Sym:  # type: ignore[override]
        s = self._per_sample(label, op, v)
        sc, sh = self._broadcast_const(label, op, v, scale), self._broadcast_const(label, op, v, shift)
        return self._append(gn.Scale(inputs=(v.node,), shape=s, in_shape=s, scale=sc, shift=sh, name=label), v.dtype)

    def _handlers(self) -> dict[str, Callable[..., Lin | list]]:
        return {
            "Relu": self._g_relu, "Add": self._g_add, "Sub": self._g_sub, "Mul": self._g_mul, "Div": self._g_div,
            "Neg": lambda label, args, attrs: self._scale(label, "Neg", args[0], -1.0),
            "MatMul": self._g_matmul, "Gemm": self._g_gemm, "Conv": self._g_conv,
            "ConvTranspose": self._g_conv_transpose,
            "BatchNormalization": self._g_batchnorm, "Transpose": self._g_transpose,
            "Identity": self._identity, "Dropout": self._dropout, "Cast": self._g_cast, "CastLike": self._g_cast,
            "Shape": self._shape, "Size": self._size, "Pad": self._g_pad, "AveragePool": self._g_avgpool,
            "GlobalAveragePool": self._g_avgpool, "Concat": self._g_concat,
            "MaxPool": self._g_maxpool, "GlobalMaxPool": self._g_maxpool,
            **{op: (lambda op: lambda label, args, attrs: self._g_reshape(op, label, args, attrs))(op)
               for op in RESHAPING_OPS},
        }

    # -- operators ------------------------------------------------------------------------
    def _g_maxpool(self, label: str, args: list, attrs: dict) -> _Sym:
        """MaxPool / GlobalMaxPool lowered to convolutions and ReLUs, exactly:
        ``max(a, b) = b + relu(a - b)``, reduced over each window by balanced trees, one
        per spatial axis (see :meth:`_separable_max`). ONNX pads MaxPool with -inf, which a
        zero-padded selection would get wrong: padding is refused."""
        v = args[0]
        op = "MaxPool" if "kernel_shape" in attrs else "GlobalMaxPool"
        if len(v.full) != 4:
            raise UnsupportedOperatorError(label, op, f"input of shape {list(v.full)}: only 2-D pooling")
        s = self._per_sample(label, op, v)
        kernel, strides, dil = list(s[1:]), [1, 1], [1, 1]
        if op == "MaxPool":
            kernel = [int(k) for k in attrs["kernel_shape"]]
            strides = [int(q) for q in attrs.get("strides", [1, 1])]
            dil = [int(d) for d in attrs.get("dilations", [1, 1])]
            auto_pad = attr_str(attrs.get("auto_pad", "NOTSET"))
            if auto_pad not in ("NOTSET", "VALID"):
                raise UnsupportedOperatorError(label, op, f"auto_pad {auto_pad}: padding (with -inf) is not supported")
            if auto_pad == "NOTSET" and any(int(p) for p in attrs.get("pads", [])):
                raise UnsupportedOperatorError(label, op, f"pads {list(attrs['pads'])}: padding (with -inf) is not "
                                               "supported")
            if len(kernel) != 2 or len(strides) != 2 or len(dil) != 2 or min(kernel + strides + dil) < 1:
                raise UnsupportedOperatorError(label, op, f"kernel {kernel}, strides {strides}, dilations {dil}")
            if int(attrs.get("ceil_mode", 0)) and any(
                    (s[1 + i] - dil[i] * (kernel[i] - 1) - 1) % strides[i] for i in range(2)):
                raise UnsupportedOperatorError(label, op, "ceil_mode 1 with a partial last window is not supported")
        out = tuple(gn.conv_output_size(s[1 + i], kernel[i], strides[i], dil[i], 0) for i in range(2))
        if min(out) < 1:
            raise UnsupportedOperatorError(label, op, f"kernel {kernel} larger than the input {list(s[1:])}")
        try:
            return self._separable_max(label, v, kernel, strides, dil, out)
        except ModelError as exc:
            raise UnsupportedOperatorError(label, op, str(exc)) from exc

    def _separable_max(self, label: str, v: _Sym, kernel: list[int], strides: list[int], dil: list[int],
                       out: tuple[int, ...]) -> _Sym:
        """The window maximum as the maximum along one axis of the maxima along the other
        (exact for any windows: a window is a product of a row range and a column range),
        each by :meth:`_max_tree`; in the order that costs fewer ReLU neurons.
        A window of one element along an axis with stride 1 costs nothing there."""
        size = v.full[2:]
        stages = [(a, kernel[a], strides[a], dil[a]) for a in range(2) if kernel[a] > 1 or strides[a] > 1]
        if not stages:
            return v
        # ReLU neurons per channel of the two orders (one fewer than the window, per output)
        first_h = (kernel[0] - 1) * out[0] * size[1] + (kernel[1] - 1) * out[0] * out[1]
        first_w = (kernel[1] - 1) * size[0] * out[1] + (kernel[0] - 1) * out[0] * out[1]
        if len(stages) == 2 and first_w < first_h:
            stages.reverse()
        x, shape = v, list(size)
        for n, (a, k, st, d) in enumerate(stages):
            ks, ss, ds = [1, 1], [1, 1], [1, 1]
            ks[a], ss[a], ds[a], shape[a] = k, st, d, out[a]
            x = self._max_tree(label if n == len(stages) - 1 else f"{label}/axis{a + 2}", x, ks, ss, ds,
                               (shape[0], shape[1]))
        return x

    def _max_tree(self, label: str, v: _Sym, kernel: list[int], strides: list[int], dil: list[int],
                  out: tuple[int, int]) -> _Sym:
        """The maximum over each window of ``v``, a balanced tree of pairwise maxima: level 1
        takes the ``n = kh*kw`` window entries in pairs ``(a, b)`` as channels ``c*n1 + p``
        of two depthwise convolutions (one-hot kernels, the pool's strides): ``a - b`` and
        ``b``; then ``b + relu(a - b)``. Each later level pairs the ``n_l`` channels of a
        group the same way with 1x1 grouped convolutions. An odd one out passes through
        (its difference channel is 0). All weights are 0 and +-1: the IR is ``max`` exactly."""
        c = v.full[1]
        slots = [(0, i, j) for i in range(kernel[0]) for j in range(kernel[1])]
        shape, geometry = v.full[1:], {"stride": tuple(strides), "dilation": tuple(dil)}
        x, level = v, 1
        while True:
            n, m = len(slots), (len(slots) + 1) // 2
            cig, kh, kw = (1, *kernel) if level == 1 else (n, 1, 1)
            diff, base = np.zeros((c * m, cig, kh, kw)), np.zeros((c * m, cig, kh, kw))
            for p in range(m):
                rows = np.arange(c) * m + p
                base[(rows, *slots[min(2 * p + 1, n - 1)])] = 1.0
                if 2 * p + 1 < n:
                    diff[(rows, *slots[2 * p])] = 1.0
                    diff[(rows, *slots[2 * p + 1])] = -1.0
            conv = dict(in_shape=shape, shape=(c * m, *out), bias_=np.zeros(c * m), pads=(0, 0, 0, 0), groups=c,
                        **geometry)
            b = self._append(gn.Conv2d(inputs=(x.node,), weight=base, name=f"{label}/max{level}_b", **conv), v.dtype)
            if n == 1:
                return b
            d = self._append(gn.Conv2d(inputs=(x.node,), weight=diff, name=f"{label}/max{level}_d", **conv), v.dtype)
            r = self._append(gn.ReLU(inputs=(d.node,), shape=conv["shape"], name=f"{label}/max{level}_r"), v.dtype)
            x = self._append(gn.Add(inputs=(b.node, r.node), shape=conv["shape"],
                                    name=label if m == 1 else f"{label}/max{level}"), v.dtype)
            if m == 1:
                return x
            slots = [(q, 0, 0) for q in range(m)]
            shape, geometry, level = conv["shape"], {"stride": (1, 1), "dilation": (1, 1)}, level + 1

    def _g_relu(self, label: str, args: list, attrs: dict) -> _Sym:
        v = args[0]
        s = self._per_sample(label, "Relu", v)
        return self._append(gn.ReLU(inputs=(v.node,), shape=s, name=label), v.dtype)

    def _g_add(self, label: str, args: list, attrs: dict, op: str = "Add") -> _Sym:
        a, b = args
        if isinstance(a, _Sym) and isinstance(b, _Sym):
            if a.full != b.full:
                raise UnsupportedOperatorError(label, op, f"operands of shapes {list(a.full)} and {list(b.full)}: "
                                               "broadcasting between input-dependent tensors is not supported")
            kind = gn.Add if op == "Add" else gn.Sub
            return self._append(kind(inputs=(a.node, b.node), shape=self._per_sample(label, op, a), name=label),
                                a.dtype)
        if isinstance(a, _Sym):
            c = self._const(b)
            return self._scale(label, op, a, 1.0, c if op == "Add" else -c)
        return self._scale(label, op, b, 1.0 if op == "Add" else -1.0, self._const(a))

    def _g_sub(self, label: str, args: list, attrs: dict) -> _Sym:
        return self._g_add(label, args, attrs, "Sub")

    def _g_mul(self, label: str, args: list, attrs: dict) -> _Sym:
        a, b = args
        if isinstance(a, _Sym) and isinstance(b, _Sym):
            raise UnsupportedOperatorError(label, "Mul", "product of two input-dependent tensors is not affine")
        return self._scale(label, "Mul", a, b) if isinstance(a, _Sym) else self._scale(label, "Mul", b, a)

    def _g_div(self, label: str, args: list, attrs: dict) -> _Sym:
        a, b = args
        if not isinstance(a, _Sym) or isinstance(b, _Sym):
            raise UnsupportedOperatorError(label, "Div", "only division of an input-dependent tensor by a constant")
        b = self._const(b)
        if (b == 0).any():
            raise ModelError(f"node {label!r} (Div) divides by zero")
        return self._scale(label, "Div", a, 1.0 / b)

    def _dense(self, label: str, op: str, v: _Sym, weight: np.ndarray, bias: np.ndarray) -> _Sym:
        if len(v.full) != 2 or v.full[0] != 1:
            raise UnsupportedOperatorError(label, op, f"input of shape {list(v.full)}: only a batch of vectors")
        return self._append(gn.Dense(inputs=(v.node,), shape=(weight.shape[0],), in_shape=(weight.shape[1],),
                                     weight=weight, bias_=bias, name=label), v.dtype)

    def _g_matmul(self, label: str, args: list, attrs: dict) -> _Sym:
        a, b = args
        if not isinstance(a, _Sym) or isinstance(b, _Sym) or np.ndim(b) != 2:
            raise UnsupportedOperatorError(label, "MatMul", "only an input-dependent vector times a constant matrix")
        w = self._const(b).T
        if a.full[-1] != w.shape[1]:
            raise UnsupportedOperatorError(label, "MatMul", f"shapes {list(a.full)} and {list(np.shape(b))}")
        return self._dense(label, "MatMul", a, w, np.zeros(w.shape[0]))

    def _g_gemm(self, label: str, args: list, attrs: dict) -> _Sym:
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        if not isinstance(a, _Sym) or isinstance(b, _Sym) or isinstance(c, _Sym) or int(attrs.get("transA", 0)):
            raise UnsupportedOperatorError(label, "Gemm", "only an input-dependent A (not transposed) and constant "
                                           "B and C")
        w = self._const(b)
        w = w if int(attrs.get("transB", 0)) else w.T
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if w.ndim != 2 or a.full[-1] != w.shape[1]:
            raise UnsupportedOperatorError(label, "Gemm", f"A {list(a.full)} and B {list(np.shape(b))} do not match")
        bias = np.zeros(w.shape[0]) if c is None else beta * self._const(c)
        if bias.size not in (1, w.shape[0]) or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
            raise UnsupportedOperatorError(label, "Gemm", f"C of shape {list(bias.shape)}")
        out = self._dense(label, "Gemm", a, alpha * w if alpha != 1.0 else w,
                          np.broadcast_to(bias.reshape(-1), (w.shape[0],)))
        if alpha not in (0.0, 1.0):
            self.unfolded[out.node] = np.full(w.shape[0], alpha)
        return out

    def _g_conv(self, label: str, args: list, attrs: dict) -> _Sym:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        if not isinstance(x, _Sym) or isinstance(w, _Sym) or isinstance(bias, _Sym):
            raise UnsupportedOperatorError(label, "Conv", "input-dependent weights")
        w = self._const(w)
        if w.ndim != 4 or len(x.full) != 4 or x.full[0] != 1:
            raise UnsupportedOperatorError(label, "Conv", f"input {list(x.full)}, weight {list(w.shape)}: the graph "
                                           "importer reads 2-D convolutions")
        size, kernel = x.full[2:], list(w.shape[2:])
        if list(attrs.get("kernel_shape", kernel)) != kernel:
            raise UnsupportedOperatorError(label, "Conv", "kernel_shape differs from the weight's")
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        dil = [int(d) for d in attrs.get("dilations", [1, 1])]
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        auto_pad = attr_str(attrs.get("auto_pad", "NOTSET"))
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if any(d != 1 for d in dil):
                raise UnsupportedOperatorError(label, "Conv", f"dilations with auto_pad {auto_pad}")
            for i in range(2):  # as onnxruntime's ComputePadAndOutputShape
                out = -(-size[i] // strides[i])
                total = max((out - 1) * strides[i] + kernel[i] - size[i], 0)
                head = (total + 1) // 2 if auto_pad == "SAME_LOWER" else total // 2
                pads[i], pads[i + 2] = head, total - head
        elif auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad != "NOTSET":
            raise UnsupportedOperatorError(label, "Conv", f"unknown auto_pad {auto_pad!r}")
        b = np.zeros(w.shape[0]) if bias is None else self._const(bias)
        if b.shape != (w.shape[0],):
            raise UnsupportedOperatorError(label, "Conv", f"bias of shape {list(b.shape)}")
        in_shape = x.full[1:]
        out = (w.shape[0], *(gn.conv_output_size(size[i], kernel[i], strides[i], dil[i], pads[i] + pads[i + 2])
                             for i in range(2)))
        try:
            node = gn.Conv2d(inputs=(x.node,), shape=out, in_shape=in_shape, weight=w, bias_=b, stride=tuple(strides),
                             pads=(pads[0], pads[1], pads[2], pads[3]), dilation=tuple(dil),
                             groups=int(attrs.get("group", 1)), name=label)
        except ModelError as exc:
            raise UnsupportedOperatorError(label, "Conv", str(exc)) from exc
        return self._append(node, x.dtype)

    def _g_conv_transpose(self, label: str, args: list, attrs: dict) -> _Sym:
        """ONNX ConvTranspose, 2-D, with explicit pads (or ``VALID``) and output padding;
        ``output_shape`` and the ``SAME`` paddings are refused."""
        op = "ConvTranspose"
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        if not isinstance(x, _Sym) or isinstance(w, _Sym) or isinstance(bias, _Sym):
            raise UnsupportedOperatorError(label, op, "input-dependent weights")
        w = self._const(w)
        if w.ndim != 4 or len(x.full) != 4 or x.full[0] != 1:
            raise UnsupportedOperatorError(label, op, f"input {list(x.full)}, weight {list(w.shape)}: the graph "
                                           "importer reads 2-D transposed convolutions")
        kernel = list(w.shape[2:])
        if list(attrs.get("kernel_shape", kernel)) != kernel:
            raise UnsupportedOperatorError(label, op, "kernel_shape differs from the weight's")
        if "output_shape" in attrs:
            raise UnsupportedOperatorError(label, op, "output_shape (pads computed from it) is not supported: "
                                           "give pads")
        auto_pad = attr_str(attrs.get("auto_pad", "NOTSET"))
        if auto_pad not in ("NOTSET", "VALID"):
            raise UnsupportedOperatorError(label, op, f"auto_pad {auto_pad} is not supported: give pads")
        strides = [int(v) for v in attrs.get("strides", [1, 1])]
        dil = [int(v) for v in attrs.get("dilations", [1, 1])]
        pads = [0, 0, 0, 0] if auto_pad == "VALID" else [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
        out_pad = [int(v) for v in attrs.get("output_padding", [0, 0])]
        if len(strides) != 2 or len(dil) != 2 or len(pads) != 4 or len(out_pad) != 2:
            raise UnsupportedOperatorError(label, op, "strides, dilations, pads or output_padding of the wrong length")
        group = int(attrs.get("group", 1))
        c_out = w.shape[1] * group
        b = np.zeros(c_out) if bias is None else self._const(bias)
        if b.shape != (c_out,):
            raise UnsupportedOperatorError(label, op, f"bias of shape {list(b.shape)}")
        size = x.full[2:]
        out = (c_out, *((size[i] - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1 + out_pad[i] - pads[i] - pads[i + 2]
                        for i in range(2)))
        try:
            node = gn.ConvTranspose2d(inputs=(x.node,), shape=out, in_shape=x.full[1:], weight=w, bias_=b,
                                      stride=tuple(strides), pads=(pads[0], pads[1], pads[2], pads[3]),
                                      dilation=tuple(dil), output_padding=tuple(out_pad), groups=group, name=label)
        except ModelError as exc:
            raise UnsupportedOperatorError(label, op, str(exc)) from exc
        return self._append(node, x.dtype)

    def _g_batchnorm(self, label: str, args: list, attrs: dict) -> _Sym:
        x = args[0]
        if not isinstance(x, _Sym) or any(isinstance(a, _Sym) for a in args[1:]) or len(args) != 5:
            raise UnsupportedOperatorError(label, "BatchNormalization", "input-dependent statistics")
        if attrs.get("training_mode", 0) or not attrs.get("spatial", 1) or len(x.full) < 2:
            raise UnsupportedOperatorError(label, "BatchNormalization", "only inference mode, per channel")
        c = x.full[1]
        scale, bias, mean, var = (self._const(a) for a in args[1:5])
        if any(a.shape != (c,) for a in (scale, bias, mean, var)):
            raise UnsupportedOperatorError(label, "BatchNormalization", "statistics of the wrong shapes")
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
        shift = bias - mean * a
        prev = self.nodes[x.node]
        outputs = {o.name for o in self.graph.output}
        aliases = [n for n, val in self.values.items() if isinstance(val, _Sym) and val.node == x.node]
        readers = sum(self.producer_readers.get(n, 0) + (n in outputs) for n in aliases)
        if isinstance(prev, (gn.Conv2d, gn.Dense)) and readers == 1 and x.node == len(self.nodes) - 1:
            if prev.bias_ is not None:  # onnxruntime's fusion into the convolution: (bias - mean) * factor
                check_bn_shift(label, mean, a, info, np.asarray(prev.bias_, dtype=np.float64).reshape(-1))
            wshape = (-1, *([1] * (prev.weight.ndim - 1)))
            folded = {"weight": prev.weight * a.reshape(wshape), "bias_": prev.bias_ * a + shift}
            fields = {k: v for k, v in vars(prev).items() if k not in ("_cache", "weight", "bias_", "inv_count")}
            self.nodes[-1] = type(prev)(**fields, **folded)
            per_channel = (-1, *([1] * (len(prev.shape) - 1)))
            before = self.unfolded.get(x.node)
            self.unfolded[x.node] = a.reshape(per_channel) * (1.0 if before is None else before.reshape(per_channel))
            return x
        bshape = (-1, *([1] * (len(x.full) - 2)))
        return self._scale(label, "BatchNormalization", x, a.reshape(1, *bshape), shift.reshape(1, *bshape))

    def _g_reshape(self, op: str, label: str, args: list, attrs: dict) -> _Sym:
        v = args[0]
        if not isinstance(v, _Sym):
            raise UnsupportedOperatorError(label, op, "the shape argument depends on the input")
        probe = Lin(np.empty((1, *v.full)), 0, v.dtype)
        out = self._reshape_like(op, label, [probe, *args[1:]], attrs).shape
        if not out or out[0] != 1:
            raise UnsupportedOperatorError(label, op, f"shape {list(v.full)} to {list(out)}: the batch axis must stay "
                                           "first")
        s = self._per_sample(label, op, v)
        if tuple(out[1:]) == s:
            return v
        return self._append(gn.Reshape(inputs=(v.node,), shape=tuple(out[1:]), in_shape=s, name=label), v.dtype)

    def _g_transpose(self, label: str, args: list, attrs: dict) -> _Sym:
        v = args[0]
        r = len(v.full)
        perm = [int(p) for p in attrs.get("perm", list(range(r))[::-1])]
        if sorted(perm) != list(range(r)) or perm[0] != 0:
            raise UnsupportedOperatorError(label, "Transpose", f"perm {perm}: the batch axis must stay first")
        s = self._per_sample(label, "Transpose", v)
        p = tuple(q - 1 for q in perm[1:])
        return self._append(gn.Transpose(inputs=(v.node,), shape=tuple(s[q] for q in p), in_shape=s, perm=p,
                                         name=label), v.dtype)

    def _g_cast(self, label: str, args: list, attrs: dict) -> _Sym:
        v = args[0]
        to = int(attrs.get("to", 0)) if len(args) == 1 else \
            {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}.get(
                np.asarray(args[1]).dtype, 0)
        target = {onnx.TensorProto.FLOAT: np.dtype(np.float32), onnx.TensorProto.DOUBLE: np.dtype(np.float64)}.get(to)
        if target is None or target.itemsize < v.dtype.itemsize:
            raise UnsupportedOperatorError(label, "Cast", "only widening casts between float32 and float64")
        return _Sym(None, 0, target, v.node, v.full)  # type: ignore[arg-type]

    def _g_pad(self, label: str, args: list, attrs: dict) -> _Sym:
        v = args[0]
        mode = attr_str(attrs.get("mode", "constant"))
        pads = self._const_ints(label, "Pad", args[1], "pads") if len(args) > 1 and args[1] is not None \
            else [int(p) for p in attrs.get("pads", [])]
        value = float(np.asarray(args[2]).reshape(-1)[0]) if len(args) > 2 and args[2] is not None and \
            np.size(args[2]) else float(attrs.get("value", 0.0))
        r = len(v.full)
        if mode != "constant" or value != 0.0 or (len(args) > 3 and args[3] is not None):
            raise UnsupportedOperatorError(label, "Pad", "only constant padding with 0 on all axes")
        if pads is None or len(pads) != 2 * r or min(pads) < 0 or pads[0] or pads[r]:
            raise UnsupportedOperatorError(label, "Pad", f"pads {pads}: non-negative, none on the batch axis")
        s = self._per_sample(label, "Pad", v)
        per = tuple(pads[1:r]) + tuple(pads[r + 1:])
        out = tuple(s[i] + per[i] + per[i + r - 1] for i in range(r - 1))
        return self._append(gn.Pad(inputs=(v.node,), shape=out, in_shape=s, pads=per, name=label), v.dtype)

    def _g_avgpool(self, label: str, args: list, attrs: dict) -> _Sym:
        v = args[0]
        if len(v.full) != 4:
            raise UnsupportedOperatorError(label, "AveragePool", f"input of shape {list(v.full)}: only 2-D pooling")
        s = self._per_sample(label, "AveragePool", v)
        if "kernel_shape" not in attrs:  # GlobalAveragePool
            kernel, strides, pads, include = list(s[1:]), [1, 1], [0, 0, 0, 0], False
        else:
            kernel = [int(k) for k in attrs["kernel_shape"]]
            strides = [int(q) for q in attrs.get("strides", [1, 1])]
            pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
            include = bool(attrs.get("count_include_pad", 0))
            if int(attrs.get("ceil_mode", 0)) or any(int(d) != 1 for d in attrs.get("dilations", [1, 1])) or \
                    attr_str(attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
                raise UnsupportedOperatorError(label, "AveragePool", "ceil_mode, dilations and auto_pad SAME are not "
                                               "supported")
            if attr_str(attrs.get("auto_pad", "NOTSET")) == "VALID":
                pads = [0, 0, 0, 0]
        out = (s[0], *(gn.conv_output_size(s[1 + i], kernel[i], strides[i], 1, pads[i] + pads[i + 2]) for i in range(2)))
        try:
            node = gn.AvgPool2d(inputs=(v.node,), shape=out, in_shape=s, kernel=tuple(kernel), stride=tuple(strides),
                                pads=tuple(pads), count_include_pad=include, name=label)
        except ModelError as exc:
            raise UnsupportedOperatorError(label, "AveragePool", str(exc)) from exc
        return self._append(node, v.dtype)

    def _g_concat(self, label: str, args: list, attrs: dict) -> _Sym:
        if not all(isinstance(a, _Sym) for a in args):
            raise UnsupportedOperatorError(label, "Concat", "only of input-dependent tensors")
        r = len(args[0].full)
        axis = int(attrs.get("axis", 0))
        axis = axis + r if axis < 0 else axis
        if not 1 <= axis < r:
            raise UnsupportedOperatorError(label, "Concat", f"axis {axis}: not along the batch axis")
        shapes = [self._per_sample(label, "Concat", a) for a in args]
        out = list(shapes[0])
        out[axis - 1] = sum(q[axis - 1] for q in shapes)
        try:
            return self._append(gn.Concat(inputs=tuple(a.node for a in args), shape=tuple(out), axis=axis - 1,
                                          name=label), args[0].dtype)
        except ModelError as exc:
            raise UnsupportedOperatorError(label, "Concat", str(exc)) from exc


def wants_graph(model: onnx.ModelProto) -> bool:
    """Whether ``load_onnx`` should read the model as a graph first (it has convolutions
    or pooling)."""
    return any(n.op_type in GRAPH_OPS for n in model.graph.node)


def graph_from_onnx(model: onnx.ModelProto, name: str = "", pad_outputs: bool = False) -> Graph:
    """Convert a loaded (and checked) ONNX model into the DAG IR (``pad_outputs``: as for
    :func:`~parallelepipedonn.onnx_import.load_onnx`)."""
    return GraphImporter(model, name or model.graph.name, pad_outputs).run()
