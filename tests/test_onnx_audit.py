"""Audit of every ONNX operator the importer handles, against onnxruntime.

Each case is a small random graph around one operator (seeded, so the audit is
reproducible). The importer must either give an IR whose float64 forward pass equals
onnxruntime's output at random points (up to float32 rounding), or refuse the model with
a one-line :class:`ModelError` naming the node and its op. A model onnxruntime refuses
must be refused too, and the configurations listed as supported must be imported.
onnxruntime runs on one point at a time (a batch of one): the IR is a function of one
point. Where onnxruntime has no kernel for a valid model (float64 Conv), ONNX's reference
evaluator stands in. A failure prints the graph (``onnx.printer``); the probe
``[check(GENERATORS[op](seed), seed) for seed in range(1000)]`` runs more cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from parallelepipedonn.errors import ModelError
from parallelepipedonn.onnx_import import network_from_onnx

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to compare outputs")

N_POINTS = 5
NP_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}
ONNX_TYPES = {v: k for k, v in NP_TYPES.items()}
#: The float type of the graph being built (float32, or float64 for the float64 audit).
FLOAT: list[type] = [np.float32]


@dataclass
class Case:
    """A graph from the input ``x`` (shape ``in_shape``) to ``y``, the node under audit
    (named ``op``), and whether the importer must accept it (``None``: either way)."""

    nodes: list[onnx.NodeProto]
    in_shape: tuple[int, ...]
    inits: list[onnx.TensorProto] = field(default_factory=list)
    supported: bool | None = True
    opset: int = 17
    in_type: int = field(default_factory=lambda: ONNX_TYPES[FLOAT[0]])
    compare: str = "values"  # or "argmax": a final Softmax that the IR drops
    op: str = "op"

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "audit", [helper.make_tensor_value_info("x", self.in_type, list(self.in_shape))],
            [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        try:
            out = onnx.shape_inference.infer_shapes(model).graph.output[0]
            if out.type.tensor_type.elem_type != TensorProto.UNDEFINED:
                model.graph.output[0].CopyFrom(out)
        except Exception:  # noqa: BLE001 - an invalid model: onnxruntime and the importer must refuse it
            pass
        out_type = model.graph.output[0].type.tensor_type
        if out_type.elem_type == TensorProto.UNDEFINED:
            out_type.elem_type = self.in_type
        if not out_type.HasField("shape"):
            out_type.shape.dim.add().dim_param = "unknown"
        return model


def _ort_outputs(model: onnx.ModelProto, xs: np.ndarray) -> tuple[list[np.ndarray] | Exception, bool]:
    """onnxruntime's outputs, one point at a time, or its error; and whether they come from
    onnxruntime: where it lacks a kernel for a valid model (float64 Conv), ONNX's
    reference evaluator stands in."""
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return [sess.run(None, {"x": x})[0] for x in xs], True
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several kinds
        if "NOT_IMPLEMENTED" not in str(exc):
            return exc, True
    try:
        ref = ReferenceEvaluator(model)
        return [ref.run(None, {"x": x})[0] for x in xs], False
    except Exception as exc:  # noqa: BLE001
        return exc, False


def check(case: Case, seed: int = 0) -> str:
    """Run one case; return what happened ("ok", "refused", "both refuse"), or fail."""
    model = case.model()
    rng = np.random.default_rng(seed)
    dtype = NP_TYPES[case.in_type]
    xs = rng.uniform(-1, 1, (N_POINTS, *case.in_shape)).astype(dtype)
    expected, from_ort = _ort_outputs(model, xs)
    if not from_ort and case.supported:
        case.supported = None  # the reference evaluator accepts what onnxruntime rejects (SAME with dilations)
    desc = onnx.printer.to_text(model.graph)
    try:
        net = network_from_onnx(model)
    except ModelError as exc:
        msg = str(exc)
        assert "\n" not in msg, msg
        if not isinstance(expected, Exception) and expected[0].size < 2:
            return "one output"  # not a classifier, whatever else is wrong
        if isinstance(expected, Exception):
            return "both refuse"
        assert case.supported is not True, f"refused a supported case: {msg}\n{desc}"
        assert repr(case.op) in msg, f"the error does not name the node: {msg}"
        return "refused"
    assert not isinstance(expected, Exception), f"imported a model onnxruntime refuses ({expected})\n{desc}"
    assert case.supported is not False, f"imported a case that must be refused\n{desc}"
    got = net.forward(xs.reshape(N_POINTS, -1).astype(np.float64))
    want = np.stack([np.asarray(e, dtype=np.float64).reshape(-1) for e in expected])
    if case.compare == "argmax":
        assert np.ptp(want, axis=1).max() > 0, f"onnxruntime outputs a tie everywhere\n{desc}"
        np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1), err_msg=desc)
    else:
        assert got.shape == want.shape, f"{got.shape} != {want.shape}\n{desc}"
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())),
                                   err_msg=desc)
    return "ok"


# -- building blocks ----------------------------------------------------------------------------
def t(name: str, a: np.ndarray | Sequence, dtype: type | None = None) -> onnx.TensorProto:
    """A constant of type ``dtype`` (default: the graph's float type)."""
    return numpy_helper.from_array(np.asarray(a, dtype=dtype or FLOAT[0]), name)


def to_vector(src: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``src`` → ``y``, flattened to a vector (the IR's output is a vector of scores)."""
    return [helper.make_node("Reshape", [src, "audit_minus1"], ["y"])], [t("audit_minus1", [-1], np.int64)]


def mixed(rng: np.random.Generator, shape: Sequence[int], src: str = "x", out: str = "a") -> tuple[list, list]:
    """``src`` → ``out``: a random affine map that mixes the entries (a Gemm on the
    flattened tensor), so the rows the op under audit sees are neither identity nor diagonal."""
    n = math.prod(shape)
    w = rng.normal(0, 1, (n, n))
    b = rng.normal(0, 0.5, n)
    nodes = [helper.make_node("Reshape", [src, "mix_s1"], ["mix_f"]),
             helper.make_node("Gemm", ["mix_f", "mix_w", "mix_b"], ["mix_g"]),
             helper.make_node("Reshape", ["mix_g", "mix_s2"], [out])]
    return nodes, [t("mix_s1", [1, n], np.int64), t("mix_w", w), t("mix_b", b), t("mix_s2", list(shape), np.int64)]


def unary_case(rng, shape: Sequence[int], node: onnx.NodeProto, inits=(), **kw) -> Case:
    """x → (mixed) ``a`` of ``shape`` → node ``a → b`` → vector ``y``."""
    n = math.prod(shape)
    m_nodes, m_inits = mixed(rng, shape)
    v_nodes, v_inits = to_vector("b")
    return Case(m_nodes + [node] + v_nodes, (1, n), m_inits + list(inits) + v_inits, **kw)


def rand_shape(rng, rank: int, low: int = 1, high: int = 4) -> list[int]:
    return [int(d) for d in rng.integers(low, high + 1, rank)]


# -- generators: seed → Case ----------------------------------------------------------------------
def gemm_case(rng) -> Case:
    m, k, n = (int(v) for v in rng.integers(1, 5, 3))
    trans_a, trans_b = (int(v) for v in rng.integers(0, 2, 2))
    alpha, beta = (float(v) for v in rng.choice([1.0, 0.5, -2.0, 0.0], 2))
    a_shape = [k, m] if trans_a else [m, k]
    b_shape = [n, k] if trans_b else [k, n]
    c_shape = [[], [n], [1, n], [m, 1], [m, n], [1], None][rng.integers(7)]
    lin = ["A", "B", "C"][rng.choice(3, p=[0.45, 0.45, 0.1])]
    nodes, inits = [], []
    names = {}
    for role, shape in (("A", a_shape), ("B", b_shape), ("C", c_shape)):
        if shape is None:
            names[role] = ""
        elif role == lin:
            m_nodes, m_inits = mixed(rng, shape, out=f"lin{role}")
            nodes += m_nodes
            inits += m_inits
            names[role] = f"lin{role}"
        else:
            inits.append(t(role, rng.normal(0, 1, shape)))
            names[role] = role
    if lin == "C" and c_shape is None:
        return gemm_case(rng)
    x_size = math.prod({"A": a_shape, "B": b_shape, "C": c_shape or [1]}[lin])
    ins = [names["A"], names["B"]] + ([names["C"]] if names["C"] else [])
    nodes.append(helper.make_node("Gemm", ins, ["b"], name="op", transA=trans_a, transB=trans_b, alpha=alpha,
                                  beta=beta))
    v_nodes, v_inits = to_vector("b")
    return Case(nodes + v_nodes, (1, x_size), inits + v_inits, supported=m * n >= 2 or None)


def matmul_case(rng) -> Case:
    m, k, n = (int(v) for v in rng.integers(1, 4, 3))
    batch_a = rand_shape(rng, int(rng.integers(0, 3)), 1, 3)
    batch_b = [d if rng.random() < 0.5 else 1 for d in batch_a[-int(rng.integers(0, len(batch_a) + 1)):]] \
        if batch_a else rand_shape(rng, int(rng.integers(0, 2)), 1, 3)
    if rng.random() < 0.5:
        batch_a, batch_b = batch_b, batch_a
    a_shape = [k] if rng.random() < 0.25 else [*batch_a, m, k]
    b_shape = [k] if rng.random() < 0.25 else [*batch_b, k, n]
    lin_a = bool(rng.random() < 0.5)
    lin_shape, const_shape = (a_shape, b_shape) if lin_a else (b_shape, a_shape)
    m_nodes, m_inits = mixed(rng, lin_shape)
    const = t("W", rng.normal(0, 1, const_shape))
    ins = ["a", "W"] if lin_a else ["W", "a"]
    v_nodes, v_inits = to_vector("b")
    out_size = math.prod(np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape)
    return Case(m_nodes + [helper.make_node("MatMul", ins, ["b"], name="op")] + v_nodes,
                (1, math.prod(lin_shape)), m_inits + [const] + v_inits, supported=out_size >= 2 or None)


def conv_case(rng) -> Case:
    spatial = int(rng.choice([1, 2, 2, 3]))
    group = int(rng.choice([1, 1, 2]))
    c_in, c_out = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
    size = rand_shape(rng, spatial, 3, 6)
    kernel = rand_shape(rng, spatial, 1, 3)
    attrs: dict = {}
    if rng.random() < 0.5:
        attrs["strides"] = rand_shape(rng, spatial, 1, 3)
    if rng.random() < 0.4:
        attrs["dilations"] = rand_shape(rng, spatial, 1, 2)
    if rng.random() < 0.5:
        attrs["kernel_shape"] = kernel
    pad_mode = rng.choice(["none", "pads", "SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"])
    if pad_mode == "pads":
        attrs["pads"] = rand_shape(rng, 2 * spatial, 0, 2)
    elif pad_mode != "none":
        attrs["auto_pad"] = str(pad_mode)
    w = rng.normal(0, 1, (c_out, c_in // group, *kernel))
    inits = [t("W", w)]
    ins = ["a", "W"]
    if rng.random() < 0.6:
        inits.append(t("Bc", rng.normal(0, 1, c_out)))
        ins.append("Bc")
    node = helper.make_node("Conv", ins, ["b"], name="op", group=group, **attrs)
    return unary_case(rng, [1, c_in, *size], node, inits, supported=None if spatial == 3 else True)


def batchnorm_case(rng) -> Case:
    rank = int(rng.integers(2, 5))
    shape = [1, *rand_shape(rng, rank - 1, 1, 3)]
    c = shape[1]
    opset = int(rng.choice([9, 14, 15, 17]))
    attrs = {"epsilon": float(rng.choice([1e-5, 1e-3, 0.5]))}
    training = rng.random() < 0.2  # opset 14+: training_mode; before: the statistics are outputs
    if training and opset >= 14:
        attrs["training_mode"] = 1
    params = [t("s", rng.uniform(0.5, 2, c)), t("bb", rng.normal(0, 1, c)), t("mu", rng.normal(0, 1, c)),
              t("var", rng.uniform(0.1, 2, c))]
    outs = ["b", "running_mean", "running_var", "saved_mean", "saved_var"][:3 if opset >= 14 else 5] if training \
        else ["b"]
    node = helper.make_node("BatchNormalization", ["a", "s", "bb", "mu", "var"], outs, name="op", **attrs)
    return unary_case(rng, shape, node, params, opset=opset, supported=None if training else True)


def transpose_case(rng) -> Case:
    shape = rand_shape(rng, int(rng.integers(1, 5)), 1, 3)
    attrs = {} if rng.random() < 0.3 else {"perm": [int(p) for p in rng.permutation(len(shape))]}
    return unary_case(rng, shape, helper.make_node("Transpose", ["a"], ["b"], name="op", **attrs))


def flatten_case(rng) -> Case:
    shape = rand_shape(rng, int(rng.integers(1, 5)), 1, 3)
    axis = int(rng.integers(-len(shape), len(shape) + 1))
    # Flatten's 2-D output → a vector through another Flatten-free Reshape (to_vector)
    return unary_case(rng, shape, helper.make_node("Flatten", ["a"], ["b"], name="op", axis=axis))


def reshape_case(rng) -> Case:
    shape = rand_shape(rng, int(rng.integers(1, 4)), 1, 3)
    target = list(rng.permutation(shape + [1] * int(rng.integers(0, 2))))
    target = [int(d) for d in target]
    # some entries copied (0) or inferred (-1)
    for i in range(len(target)):
        if i < len(shape) and target[i] == shape[i] and rng.random() < 0.4:
            target[i] = 0
    if rng.random() < 0.5:
        target[int(rng.integers(len(target)))] = -1
    opset = int(rng.choice([13, 14, 17]))
    attrs = {"allowzero": int(rng.integers(0, 2))} if opset >= 14 else {}
    return unary_case(rng, shape, helper.make_node("Reshape", ["a", "tshape"], ["b"], name="op", **attrs),
                      [t("tshape", target, np.int64)], opset=opset, supported=None)


def squeeze_case(rng) -> Case:
    shape = rand_shape(rng, int(rng.integers(1, 4)), 1, 3)
    opset = int(rng.choice([11, 13, 17]))
    if rng.random() < 0.5:
        op, axes = "Unsqueeze", sorted({int(a) for a in rng.integers(-len(shape) - 1, len(shape) + 1, 2)})
    else:
        ones = [i for i, d in enumerate(shape) if d == 1]
        op, axes = "Squeeze", [i - len(shape) if rng.random() < 0.5 else i for i in ones]
    if opset >= 13:
        node = helper.make_node(op, ["a", "axes"] if axes else ["a"], ["b"], name="op")
        inits = [t("axes", axes, np.int64)] if axes else []
    else:
        node = helper.make_node(op, ["a"], ["b"], name="op", **({"axes": axes} if axes else {}))
        inits = []
    return unary_case(rng, shape, node, inits, opset=opset, supported=None)


def binary_case(rng) -> Case:
    op = str(rng.choice(["Add", "Sub", "Mul", "Div"]))
    shape = rand_shape(rng, int(rng.integers(1, 4)), 1, 3)
    c_rank = int(rng.integers(0, len(shape) + 2))
    c_shape = [d if rng.random() < 0.6 else 1 for d in ([*shape][::-1] + [2, 3])[:c_rank]][::-1]
    if rng.random() < 0.3 and c_shape:  # broadcast the input up, too
        i = int(rng.integers(len(c_shape)))
        j = i - (len(c_shape) - len(shape))
        if 0 <= j < len(shape) and shape[j] == 1:
            c_shape[i] = 2
    kind = rng.choice(["const-right", "const-left", "lin-lin"], p=[0.4, 0.4, 0.2])
    m_nodes, m_inits = mixed(rng, shape)
    if kind == "lin-lin":  # Lin op Lin: only a sum or difference is affine
        consts = [t("k", rng.normal(0, 1, c_shape))]
        other_nodes = [helper.make_node("Mul", ["a", "k"], ["a2"])]
        node = helper.make_node(op, ["a2", "a"] if rng.random() < 0.5 else ["a", "a2"], ["b"], name="op")
        supported = op in ("Add", "Sub")
    else:
        vals = rng.normal(0, 1, c_shape)
        if op == "Div":
            vals = np.where(np.abs(vals) < 0.2, 0.5, vals)
        consts = [t("k", vals)]
        ins = ["a", "k"] if kind == "const-right" else ["k", "a"]
        node = helper.make_node(op, ins, ["b"], name="op")
        other_nodes = []
        supported = not (op == "Div" and kind == "const-left")
    v_nodes, v_inits = to_vector("b")
    return Case(m_nodes + other_nodes + [node] + v_nodes, (1, math.prod(shape)), m_inits + consts + v_inits,
                supported=supported)


def elementwise_case(rng) -> Case:
    shape = rand_shape(rng, int(rng.integers(1, 4)), 1, 3)
    op = str(rng.choice(["Neg", "Relu", "Identity", "Dropout"]))
    opset = int(rng.choice([11, 13, 17]))
    return unary_case(rng, shape, helper.make_node(op, ["a"], ["b"], name="op"), opset=opset)


def cast_case(rng) -> Case:
    """Cast / CastLike of an input-dependent tensor, then maybe back to the graph's type."""
    shape = rand_shape(rng, 2, 1, 3)
    ft = FLOAT[0]
    to = int(rng.choice([TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                         TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.UINT8]))
    m_nodes, m_inits = mixed(rng, shape)
    inits = list(m_inits)
    if rng.random() < 0.3:
        like = helper.tensor_dtype_to_np_dtype(to)
        inits.append(numpy_helper.from_array(np.zeros(1, like), "like"))
        node = helper.make_node("CastLike", ["a", "like"], ["b"], name="op")
    else:
        node = helper.make_node("Cast", ["a"], ["b"], name="op", to=to)
    nodes, last = [node], "b"
    target = NP_TYPES.get(to)
    if target is not None and rng.random() < 0.5:  # compute in the new type
        inits.append(t("k2", rng.normal(0, 1, shape), target))
        nodes.append(helper.make_node("Mul", ["b", "k2"], ["b2"]))
        last = "b2"
    back = rng.random() < 0.4
    if back:
        nodes.append(helper.make_node("Cast", [last], ["b3"], name="back", to=ONNX_TYPES[ft]))
        last = "b3"
    v_nodes, v_inits = to_vector(last)
    exact = target is not None and np.dtype(target).itemsize >= np.dtype(ft).itemsize
    exact_back = not back or target is None or np.dtype(target).itemsize <= np.dtype(ft).itemsize
    return Case(m_nodes + nodes + v_nodes, (1, math.prod(shape)), inits + v_inits, supported=exact and exact_back,
                op="op" if not exact else "back")


def softmax_case(rng) -> Case:
    """A final Softmax / LogSoftmax over some axis of the class scores: dropped only when
    it normalises all the scores together."""
    n = int(rng.integers(1, 5))
    shape = [[1, n], [n], [1, n, 1], [n, 1], [1, 1, n], [1, 1]][rng.integers(6)]
    op = str(rng.choice(["Softmax", "LogSoftmax"]))
    opset = int(rng.choice([11, 13, 17]))
    r = len(shape)
    attrs = {} if rng.random() < 0.3 else {"axis": int(rng.integers(-r, r))}
    axis = attrs.get("axis", -1 if opset >= 13 else 1)
    if not -r <= axis < r:
        return softmax_case(rng)
    axis %= r
    group = math.prod(shape[axis:]) if opset < 13 else shape[axis]
    m_nodes, m_inits = mixed(rng, shape)
    nodes = m_nodes + [helper.make_node(op, ["a"], ["y"], name="op", **attrs)]
    return Case(nodes, (1, math.prod(shape)), m_inits, opset=opset, compare="argmax",
                supported=group == n and n >= 2 or (None if n < 2 else False))


def shape_case(rng) -> Case:
    """Shape (with start/end) and Size of an input-dependent tensor feed a Reshape."""
    shape = [1, *rand_shape(rng, int(rng.integers(1, 3)), 2, 3)]
    opset = int(rng.choice([13, 15, 17]))
    m_nodes, m_inits = mixed(rng, shape)
    attrs = {}
    if opset >= 15 and rng.random() < 0.5:
        attrs = {"start": int(rng.integers(-len(shape), 1)), "end": int(rng.integers(1, len(shape) + 1))}
    nodes = [helper.make_node("Shape", ["a"], ["shp"], name="op", **attrs),
             helper.make_node("Size", ["a"], ["size"], name="size"),
             helper.make_node("Unsqueeze", ["size", "zero"], ["size1"]),
             helper.make_node("ReduceProd", ["shp"], ["prod"], keepdims=1),
             helper.make_node("Div", ["size1", "prod"], ["rest"]),
             helper.make_node("Concat", ["shp", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["a", "target"], ["b"])]
    v_nodes, v_inits = to_vector("b")
    return Case(m_nodes + nodes + v_nodes, (1, math.prod(shape)), m_inits + [t("zero", [0], np.int64)] + v_inits,
                opset=opset)


def dropout_case(rng) -> Case:
    """Dropout with a ratio and training_mode (opset 12+), or a random constant."""
    shape = [1, int(rng.integers(2, 5))]
    m_nodes, m_inits = mixed(rng, shape)
    kind = rng.choice(["inference", "training", "random-constant", "mask"])
    inits = list(m_inits)
    if kind == "random-constant":
        node = helper.make_node("RandomUniform", [], ["noise"], name="op", shape=shape,
                                dtype=ONNX_TYPES[FLOAT[0]])
        nodes = [node, helper.make_node("Add", ["a", "noise"], ["b"])]
    else:
        inits += [t("ratio", 0.5), numpy_helper.from_array(np.array(kind == "training"), "training")]
        outs = ["b", "mask"] if kind == "mask" else ["b"]
        nodes = [helper.make_node("Dropout", ["a", "ratio", "training"], outs, name="op")]
        if kind == "mask":
            nodes += [helper.make_node("Cast", ["mask"], ["maskf"], to=ONNX_TYPES[FLOAT[0]]),
                      helper.make_node("Add", ["b", "maskf"], ["b2"])]
            nodes[-1].output[0] = "b2"
    v_nodes, v_inits = to_vector("b2" if kind == "mask" else "b")
    return Case(m_nodes + nodes + v_nodes, (1, math.prod(shape)), inits + v_inits,
                supported=True if kind == "inference" else None if kind == "mask" else False)


def _gen(case: Callable[[np.random.Generator], Case], ft: type = np.float32) -> Callable[[int], Case]:
    def make(seed: int) -> Case:
        FLOAT[0] = ft
        try:
            return case(np.random.default_rng(seed))
        finally:
            FLOAT[0] = np.float32
    return make


GENERATORS: dict[str, Callable[[int], Case]] = {
    name: _gen(fn) for name, fn in [
        ("Gemm", gemm_case), ("MatMul", matmul_case), ("Conv", conv_case), ("BatchNormalization", batchnorm_case),
        ("Transpose", transpose_case), ("Flatten", flatten_case), ("Reshape", reshape_case),
        ("Squeeze/Unsqueeze", squeeze_case), ("Add/Sub/Mul/Div", binary_case),
        ("Neg/Relu/Identity/Dropout", elementwise_case), ("Cast/CastLike", cast_case),
        ("Softmax/LogSoftmax", softmax_case), ("Shape/Size", shape_case), ("Dropout/random", dropout_case)]}
GENERATORS.update({f"{name} float64": _gen(fn, np.float64) for name, fn in [
    ("Gemm", gemm_case), ("MatMul", matmul_case), ("Conv", conv_case), ("Add/Sub/Mul/Div", binary_case),
    ("Cast/CastLike", cast_case)]})
SEEDS = 60


@pytest.mark.parametrize("op", list(GENERATORS))
def test_random_graphs_around_each_operator_match_onnxruntime_or_are_refused(op):
    outcomes = [check(GENERATORS[op](seed), seed) for seed in range(SEEDS)]
    assert outcomes.count("ok") >= SEEDS // 10, outcomes  # the audit does exercise the import
