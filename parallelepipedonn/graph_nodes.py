"""The typed nodes of the DAG IR (:mod:`parallelepipedonn.graph`).

Every node is a frozen dataclass with the per-sample ``shape`` of its output and the
indices of its ``inputs`` (earlier nodes of the graph). Weights are frozen float64 numpy
arrays; the IR's semantics is the graph evaluated in exact arithmetic on them.

A :class:`LinearNode` ``y = W x (+ bias)`` applies ``W`` (without the bias), its
transpose ``W^T`` and its absolute value ``|W|`` to batches ``(N, *shape)`` in torch, in
any floating dtype, never building ``W`` densely for convolutions and pooling (those use
``conv2d`` / ``conv_transpose2d``). ``fan_in`` is the largest number of products summed
into one output, ``fan_out`` the largest number of outputs one input feeds (the number of
terms of one sum of ``W^T y``); ``exact`` marks the nodes that only move values (reshape,
transpose, zero padding), which round nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ModelError

Tensor = torch.Tensor
FloatArray = np.ndarray


def frozen_array(a: Any, ndim: int | None = None, what: str = "weights") -> FloatArray:
    """A read-only float64 copy of ``a``, checked finite (and of ``ndim`` dimensions)."""
    arr = np.array(a, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ModelError(f"{what}: expected a {ndim}-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModelError(f"{what} contain NaN or infinite values")
    arr.setflags(write=False)
    return arr


#: float32 input gradients of strided convolutions onto at most this many channels run
#: torch's own kernel on a CPU, not oneDNN's (measured on one thread, ms per call, oneDNN
#: against torch's, float64 beside: 660 rows of 8x11x11 onto 3x23x23 (3x3 kernel, stride 2)
#: 10.6 against 6.7 (7.4); 61 rows of 16x16x16 onto 3x32x32 (4x4, stride 2) 3.8 against 1.7
#: (2.4); oneDNN is faster onto 16 channels, 64 rows of 32x16x16 onto 16x32x32 (stride 2)
#: 7.3 against 10.5 (16.9), and without a stride, 64 rows of 16x32x32 onto 3x32x32 3.5
#: against 3.9 (4.0)).
FEW_CHANNELS = 4


def conv2d_input(size: tuple[int, ...], weight: Tensor, y: Tensor, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1, groups: int = 1) -> Tensor:
    """``torch.nn.grad.conv2d_input`` (the same kernel, the same sums), with the kernel chosen
    for speed: of a strided convolution onto :data:`FEW_CHANNELS` channels or fewer, in
    float32 on a CPU, torch's own rather than oneDNN's (any order of the same float32 sums:
    the rounding slack covers it). The input that the gradient's kernel asks for only for
    its shape is an uninitialised contiguous tensor, never read: ``torch.nn.grad``'s
    broadcast placeholder is copied into a contiguous one of the input's size on every
    call (measured on one thread: 5-15% of the call; the same numbers)."""
    def pair(v: int | tuple[int, int]) -> tuple[int, int]:
        return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))

    args = (pair(stride), pair(padding), pair(dilation), False, [0], groups, (True, False, False))

    def grad() -> Tensor:
        shape_only = torch.empty(size, dtype=y.dtype, device=y.device)
        return torch.ops.aten.convolution_backward(y, shape_only, weight, None, *args)[0]

    strided = max(pair(stride)) > 1
    if y.dtype == torch.float32 and y.device.type == "cpu" and size[1] <= FEW_CHANNELS and strided:
        mk = torch.backends.mkldnn  # oneDNN off; its other settings (precision) as they are
        with mk.flags(enabled=False, deterministic=mk.deterministic, allow_tf32=mk.allow_tf32,
                      fp32_precision=mk.fp32_precision):
            return grad()
    return grad()


def _freeze_weights(node: Node, ndim: int) -> tuple[FloatArray, FloatArray]:
    """The node's ``weight`` (``ndim``-D) and ``bias_`` (1-D) as read-only checked float64
    copies, set on the (frozen) node."""
    w, b = frozen_array(node.weight, ndim), frozen_array(node.bias_, 1, "biases")  # type: ignore[attr-defined]
    object.__setattr__(node, "weight", w)
    object.__setattr__(node, "bias_", b)
    return w, b


@dataclass(frozen=True, eq=False, kw_only=True)
class Node:
    """A node: its output's per-sample ``shape`` and the indices of its ``inputs``."""

    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    name: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    kind: ClassVar[str] = "node"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(int(i) for i in self.inputs))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def tensor(self, key: str, value: FloatArray | Callable[[], FloatArray], dtype: torch.dtype,
               device: torch.device | str) -> Tensor:
        """``value`` as a cached tensor of ``dtype`` on ``device`` (a callable ``value``: what
        it returns, computed the first time only)."""
        return self.cached((key, dtype, str(device)),
                           lambda: torch.tensor(value() if callable(value) else value, dtype=dtype, device=device))

    def cached(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        """``make()``, computed once per ``key`` and kept with the node: an ordinary tensor
        without autograd history, even when first asked for in ``torch.inference_mode``
        (so that every later pass, differentiated or not, can use it)."""
        if key not in self._cache:
            with torch.inference_mode(False), torch.no_grad():
                self._cache[key] = make()
        return self._cache[key]

    def params(self) -> tuple[FloatArray, ...]:
        """The node's float64 parameters (for the digest)."""
        return ()


@dataclass(frozen=True, eq=False, kw_only=True)
class Input(Node):
    kind: ClassVar[str] = "input"


@dataclass(frozen=True, eq=False, kw_only=True)
class ReLU(Node):
    kind: ClassVar[str] = "relu"


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Node):
    """``a + b`` of two tensors of the same shape."""

    kind: ClassVar[str] = "add"


@dataclass(frozen=True, eq=False, kw_only=True)
class Sub(Node):
    """``a - b`` of two tensors of the same shape."""

    kind: ClassVar[str] = "sub"


@dataclass(frozen=True, eq=False, kw_only=True)
class Concat(Node):
    """Concatenation of the inputs along per-sample ``axis``."""

    axis: int
    kind: ClassVar[str] = "concat"

    def sizes(self, shapes: list[tuple[int, ...]]) -> list[int]:
        return [s[self.axis] for s in shapes]


@dataclass(frozen=True, eq=False, kw_only=True)
class LinearNode(Node):
    """``y = W x + bias`` of one input of shape ``in_shape``."""

    in_shape: tuple[int, ...]
    exact: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "in_shape", tuple(int(d) for d in self.in_shape))

    # -- subclasses implement (batches: (N, *in_shape) -> (N, *shape) and back) ----------
    def apply(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_t(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_abs(self, x: Tensor) -> Tensor:
        return self.apply(x)

    def apply_abs_t(self, y: Tensor) -> Tensor:
        return self.apply_t(y)

    def rows_t(self, sel: Tensor, dtype: torch.dtype) -> Tensor:
        """``W^T e_i`` for the flat output indices ``sel`` (``(B, m)``): the rows of ``W``
        that produce those outputs, shape ``(B, m, *in_shape)`` (by default ``W^T`` applied
        to one-hot vectors)."""
        b, m = sel.shape
        onehot = torch.zeros(b * m, self.numel, dtype=dtype, device=sel.device)
        onehot[torch.arange(b * m, device=sel.device), sel.reshape(-1)] = 1.0
        return self.apply_t(onehot.reshape(b * m, *self.shape)).reshape(b, m, *self.in_shape)

    def bias_array(self) -> FloatArray | None:
        """The bias, broadcastable to ``(N, *shape)`` after a leading batch axis, or None."""
        return None

    def bias(self, dtype: torch.dtype, device: torch.device | str) -> Tensor | None:
        b = self.bias_array()
        return None if b is None else self.tensor("bias", b, dtype, device)

    def abs_bias(self, dtype: torch.dtype, device: torch.device | str) -> Tensor | None:
        b = self.bias_array()
        return None if b is None else self.tensor("abs_bias", lambda: np.abs(b), dtype, device)

    @property
    def fan_in(self) -> int:
        return 1

    @property
    def fan_out(self) -> int:
        return 1


@dataclass(frozen=True, eq=False, kw_only=True)
class Reshape(LinearNode):
    """Row-major reshape (ONNX Reshape / Flatten / Squeeze / Unsqueeze)."""

    kind: ClassVar[str] = "reshape"
    exact: ClassVar[bool] = True

    def apply(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def apply_t(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], *self.in_shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class Transpose(LinearNode):
    """Permutation ``perm`` of the per-sample axes."""

    perm: tuple[int, ...]
    kind: ClassVar[str] = "transpose"
    exact: ClassVar[bool] = True

    def apply(self, x: Tensor) -> Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))

    def apply_t(self, y: Tensor) -> Tensor:
        inv = np.argsort(self.perm)
        return y.permute(0, *(int(p) + 1 for p in inv))


@dataclass(frozen=True, eq=False, kw_only=True)
class Pad(LinearNode):
    """Zero padding: ``pads`` = (begin of each per-sample axis..., end of each...), >= 0."""

    pads: tuple[int, ...]
    kind: ClassVar[str] = "pad"
    exact: ClassVar[bool] = True

    def _torch_pads(self) -> list[int]:
        r = len(self.in_shape)
        out: list[int] = []
        for i in reversed(range(r)):
            out += [self.pads[i], self.pads[i + r]]
        return out

    def apply(self, x: Tensor) -> Tensor:
        return F.pad(x, self._torch_pads())

    def apply_t(self, y: Tensor) -> Tensor:
        r = len(self.in_shape)
        idx = [slice(None)] + [slice(self.pads[i], self.pads[i] + self.in_shape[i]) for i in range(r)]
        return y[tuple(idx)]


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(LinearNode):
    """``y = weight @ x + bias`` on a flat vector (``weight`` of shape ``(out, in)``)."""

    weight: FloatArray
    bias_: FloatArray
    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        super().__post_init__()
        w, b = frozen_array(self.weight, 2), frozen_array(self.bias_, 1, "biases")
        if w.shape[0] != b.shape[0] or self.in_shape != (w.shape[1],) or self.shape != (w.shape[0],):
            raise ModelError(f"dense node {self.name!r}: weight {w.shape}, bias {b.shape}, input {self.in_shape}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias_", b)

    def _w(self, x: Tensor) -> Tensor:
        return self.tensor("w", self.weight, x.dtype, x.device)

    def _wa(self, x: Tensor) -> Tensor:
        return self.tensor("wa", lambda: np.abs(self.weight), x.dtype, x.device)

    def apply(self, x: Tensor) -> Tensor:
        return x @ self._w(x).T

    def apply_t(self, y: Tensor) -> Tensor:
        return y @ self._w(y)

    def apply_abs(self, x: Tensor) -> Tensor:
        return x @ self._wa(x).T

    def apply_abs_t(self, y: Tensor) -> Tensor:
        return y @ self._wa(y)

    def rows_t(self, sel: Tensor, dtype: torch.dtype) -> Tensor:
        return self.tensor("w", self.weight, dtype, sel.device)[sel]

    def bias_array(self) -> FloatArray:
        return self.bias_

    def params(self) -> tuple[FloatArray, ...]:
        return self.weight, self.bias_

    @property
    def fan_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def fan_out(self) -> int:
        return int(self.weight.shape[0])


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_total: int) -> int:
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True, eq=False, kw_only=True)
class _Window2d(LinearNode):
    """Shared geometry of 2-D windowed operators: ``pads`` = (top, left, bottom, right)."""

    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    def _check_geometry(self, channels_out: int) -> None:
        for f in ("kernel", "stride", "pads", "dilation"):
            object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))
        if len(self.in_shape) != 3:
            raise ModelError(f"{self.kind} node {self.name!r}: input of shape {self.in_shape}, expected (C, H, W)")
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.pads) < 0 or min(self.kernel) < 1:
            raise ModelError(f"{self.kind} node {self.name!r}: invalid strides, dilations, pads or kernel")
        _, h, w = self.in_shape
        out = (channels_out,
               conv_output_size(h, self.kernel[0], self.stride[0], self.dilation[0], self.pads[0] + self.pads[2]),
               conv_output_size(w, self.kernel[1], self.stride[1], self.dilation[1], self.pads[1] + self.pads[3]))
        if min(out) < 1 or tuple(self.shape) != out:
            raise ModelError(f"{self.kind} node {self.name!r}: output shape {self.shape}, expected {out}")

    @property
    def padded(self) -> tuple[int, int]:
        _, h, w = self.in_shape
        return h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3]

    def _pad(self, x: Tensor) -> Tensor:
        t, l, b, r = self.pads
        return F.pad(x, [l, r, t, b]) if any(self.pads) else x

    def _crop(self, x: Tensor) -> Tensor:
        t, l, _, _ = self.pads
        _, h, w = self.in_shape
        return x[..., t:t + h, l:l + w]

    def _conv(self, x: Tensor, weight: Tensor, groups: int) -> Tensor:
        t, l, b, r = self.pads
        if (t, l) == (b, r):  # symmetric padding in the kernel: the same sums, no padded copy
            return F.conv2d(x, weight, stride=self.stride, padding=(t, l), dilation=self.dilation, groups=groups)
        return F.conv2d(self._pad(x), weight, stride=self.stride, dilation=self.dilation, groups=groups)

    def _conv_t(self, y: Tensor, weight: Tensor, groups: int) -> Tensor:
        # the convolution's input gradient: conv_transpose2d's sums, computed batched (on CPU
        # in float64, conv_transpose2d loops over the batch: 3x slower); symmetric padding is
        # left to the kernel (which drops the padded positions' sums instead of computing and
        # cropping them)
        t, l, b, r = self.pads
        if (t, l) == (b, r):
            return conv2d_input((y.shape[0], weight.shape[1] * groups, *self.in_shape[1:]), weight, y,
                                stride=self.stride, padding=(t, l), dilation=self.dilation,
                                groups=groups)
        full = conv2d_input((y.shape[0], weight.shape[1] * groups, *self.padded), weight, y,
                            stride=self.stride, dilation=self.dilation, groups=groups)
        return self._crop(full)

    @property
    def fan_out(self) -> int:
        """Outputs one input feeds. Per axis, input ``j`` is tap ``t`` of output ``i`` where
        ``s i + d t = j + pad``: the taps ``t`` in ``[0, k)`` with ``d t`` congruent to
        ``j + pad`` modulo ``s``, one residue class modulo ``s / gcd(s, d)``, so at most
        ``ceil(k / (s / gcd(s, d)))`` of them (``ceil(k / s)`` without dilation; all ``k``
        when ``s`` divides ``d``)."""
        per_axis = (-(-self.kernel[i] // (self.stride[i] // math.gcd(self.stride[i], self.dilation[i])))
                    for i in range(2))
        return math.prod(per_axis) * self._out_per_in_channel

    @property
    def _out_per_in_channel(self) -> int:
        return 1


class _ChannelBias:
    """A convolution's ``weight`` and its bias per output channel ``bias_``."""

    weight: FloatArray
    bias_: FloatArray

    def bias_array(self) -> FloatArray:
        return self.bias_.reshape(-1, 1, 1)

    def params(self) -> tuple[FloatArray, ...]:
        return self.weight, self.bias_


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv2d(_ChannelBias, _Window2d):
    """2-D convolution (cross-correlation, as ONNX Conv) with ``weight`` of shape
    ``(C_out, C_in / groups, kh, kw)`` and ``bias_`` of shape ``(C_out,)``."""

    weight: FloatArray
    bias_: FloatArray
    groups: int = 1
    kind: ClassVar[str] = "conv2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        w, b = _freeze_weights(self, 4)
        object.__setattr__(self, "kernel", tuple(w.shape[2:]))
        c_in = self.in_shape[0] if self.in_shape else -1
        g = int(self.groups)
        if g < 1 or c_in % g or w.shape[0] % g or w.shape[1] * g != c_in or b.shape != (w.shape[0],):
            raise ModelError(f"conv node {self.name!r}: weight {w.shape}, bias {b.shape}, groups {g}, "
                             f"input {self.in_shape}")
        self._check_geometry(w.shape[0])

    def apply(self, x: Tensor) -> Tensor:
        return self._conv(x, self.tensor("w", self.weight, x.dtype, x.device), self.groups)

    def apply_t(self, y: Tensor) -> Tensor:
        return self._conv_t(y, self.tensor("w", self.weight, y.dtype, y.device), self.groups)

    def apply_abs(self, x: Tensor) -> Tensor:
        return self._conv(x, self.tensor("wa", lambda: np.abs(self.weight), x.dtype, x.device), self.groups)

    def apply_abs_t(self, y: Tensor) -> Tensor:
        return self._conv_t(y, self.tensor("wa", lambda: np.abs(self.weight), y.dtype, y.device), self.groups)

    def rows_t(self, sel: Tensor, dtype: torch.dtype) -> Tensor:
        """The kernels of the outputs ``sel`` placed at their windows (a scatter: no
        arithmetic, nothing of the size of the whole convolution)."""
        dev = sel.device
        c_out, _, ho, wo = (self.weight.shape[0], None, *self.shape[1:])
        c_in = self.in_shape[0]
        cig = c_in // self.groups
        kh, kw = self.kernel
        co, pos = sel // (ho * wo), sel % (ho * wo)
        i, j = pos // wo, pos % wo
        ci = (co // (c_out // self.groups)).unsqueeze(-1) * cig + torch.arange(cig, device=dev)  # (B, m, cig)
        rr = (i * self.stride[0]).unsqueeze(-1) + torch.arange(kh, device=dev) * self.dilation[0]  # (B, m, kh)
        cc = (j * self.stride[1]).unsqueeze(-1) + torch.arange(kw, device=dev) * self.dilation[1]  # (B, m, kw)
        b, m = sel.shape
        out = torch.zeros(b, m, c_in, *self.padded, dtype=dtype, device=dev)
        bi = torch.arange(b, device=dev).view(b, 1, 1, 1, 1)
        mi = torch.arange(m, device=dev).view(1, m, 1, 1, 1)
        w = self.tensor("w", self.weight, dtype, dev)[co]  # (B, m, cig, kh, kw)
        out[bi, mi, ci[..., :, None, None], rr[..., None, :, None], cc[..., None, None, :]] = w
        return self._crop(out)

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    @property
    def _out_per_in_channel(self) -> int:
        return int(self.weight.shape[0] // self.groups)


@dataclass(frozen=True, eq=False, kw_only=True)
class ConvTranspose2d(_ChannelBias, LinearNode):
    """2-D transposed convolution (ONNX ConvTranspose) with ``weight`` of shape ``(C_in,
    C_out / groups, kh, kw)`` and ``bias_`` of shape ``(C_out,)``: input ``(ci, i, j)`` adds
    ``x W[ci, co, a, b]`` to position ``(s0 i + d0 a, s1 j + d1 b)`` of a canvas of
    ``(H - 1) s + d (k - 1) + 1 + output_padding`` per axis, of which the output is the part
    ``pads`` (top, left, bottom, right) leave (ONNX's output shape). The transpose is the
    convolution of the canvas with the same weight (never a dense matrix)."""

    weight: FloatArray
    bias_: FloatArray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    output_padding: tuple[int, int] = (0, 0)
    groups: int = 1
    kind: ClassVar[str] = "convtranspose2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        w, b = _freeze_weights(self, 4)
        for f in ("stride", "pads", "dilation", "output_padding"):
            object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))
        g = int(self.groups)
        if len(self.in_shape) != 3 or g < 1 or w.shape[0] != self.in_shape[0] or w.shape[0] % g \
                or b.shape != (w.shape[1] * g,):
            raise ModelError(f"transposed convolution node {self.name!r}: weight {w.shape}, bias {b.shape}, "
                             f"groups {g}, input {self.in_shape}")
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.pads) < 0 or min(self.output_padding) < 0 \
                or any(p >= s for p, s in zip(self.output_padding, self.stride)):
            # (onnxruntime refuses an output padding not below the stride, even below the dilation)
            raise ModelError(f"transposed convolution node {self.name!r}: invalid strides, dilations, pads or "
                             "output padding (it must be below the stride)")
        t, l, bo, r = self.pads
        out = (w.shape[1] * g, self.canvas[0] - t - bo, self.canvas[1] - l - r)
        if min(out) < 1 or tuple(self.shape) != out:
            raise ModelError(f"transposed convolution node {self.name!r}: output shape {self.shape}, expected {out}")

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def canvas(self) -> tuple[int, int]:
        """The uncropped output's size: ``(H - 1) s + d (k - 1) + 1 + output_padding``."""
        return tuple((self.in_shape[1 + a] - 1) * self.stride[a] + self.dilation[a] * (self.kernel[a] - 1) + 1
                     + self.output_padding[a] for a in range(2))  # type: ignore[return-value]

    def _fwd(self, x: Tensor, weight: Tensor) -> Tensor:
        # the transposed convolution is the input gradient of the convolution with this weight,
        # computed batched (conv_transpose2d loops over the batch in float64 on a CPU); the
        # canvas rows of output_padding receive nothing (zeros)
        full = conv2d_input((x.shape[0], self.shape[0], *self.canvas), weight, x, stride=self.stride,
                            dilation=self.dilation, groups=self.groups)
        t, l, _, _ = self.pads
        return full[..., t:t + self.shape[1], l:l + self.shape[2]]

    def _back(self, y: Tensor, weight: Tensor) -> Tensor:
        t, l, b, r = self.pads
        canvas = F.pad(y, [l, r, t, b]) if any(self.pads) else y
        return F.conv2d(canvas, weight, stride=self.stride, dilation=self.dilation, groups=self.groups)

    def _w(self, x: Tensor, absolute: bool = False) -> Tensor:
        return self.tensor("wa", lambda: np.abs(self.weight), x.dtype, x.device) if absolute else \
            self.tensor("w", self.weight, x.dtype, x.device)

    def apply(self, x: Tensor) -> Tensor:
        return self._fwd(x, self._w(x))

    def apply_t(self, y: Tensor) -> Tensor:
        return self._back(y, self._w(y))

    def apply_abs(self, x: Tensor) -> Tensor:
        return self._fwd(x, self._w(x, True))

    def apply_abs_t(self, y: Tensor) -> Tensor:
        return self._back(y, self._w(y, True))

    @property
    def fan_in(self) -> int:
        """At most every tap of every input channel of the group (fewer with a stride)."""
        return int(np.prod(self.weight.shape[2:])) * (int(self.weight.shape[0]) // self.groups)

    @property
    def fan_out(self) -> int:
        return int(np.prod(self.weight.shape[1:]))


@dataclass(frozen=True, eq=False, kw_only=True)
class AvgPool2d(_Window2d):
    """Average pooling: the sum of each window times ``inv_count`` (float64 ``1 / n`` of
    the window's ``n`` counted values: all of them with ``count_include_pad``, else only
    those inside the input — ONNX's default). Global pooling is a window of the whole
    input."""

    count_include_pad: bool = False
    inv_count: FloatArray = field(init=False, repr=False)
    kind: ClassVar[str] = "avgpool2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_geometry(self.in_shape[0] if len(self.in_shape) == 3 else -1)
        ones = torch.ones(1, 1, *self.in_shape[1:], dtype=torch.float64)
        if self.count_include_pad:
            ones = F.pad(ones, [self.pads[1], self.pads[3], self.pads[0], self.pads[2]], value=1.0)
            counts = F.conv2d(ones, torch.ones(1, 1, *self.kernel, dtype=torch.float64), stride=self.stride,
                              dilation=self.dilation)
        else:
            counts = self._conv(ones, torch.ones(1, 1, *self.kernel, dtype=torch.float64), 1)
        inv = 1.0 / counts[0, 0].numpy()
        object.__setattr__(self, "inv_count", frozen_array(inv, 2, "pooling weights"))

    def _ones(self, x: Tensor, channels: int) -> Tensor:
        return self.tensor(f"ones{channels}", lambda: np.ones((channels, 1, *self.kernel)), x.dtype, x.device)

    def _inv(self, x: Tensor) -> Tensor:
        return self.tensor("inv", self.inv_count, x.dtype, x.device)

    @staticmethod
    def _batched(x: Tensor) -> bool:
        """Whether to pool every channel with one single-channel convolution, the channels
        moved into the batch: in float64 on a CPU, where a grouped (depthwise) convolution
        is a loop over channels; elsewhere (oneDNN's float32 depthwise kernels, CUDA) the
        grouped one is the fast one (float32, 512 inputs, with its gradient: 7x)."""
        return x.dtype == torch.float64 and x.device.type == "cpu"

    def apply(self, x: Tensor) -> Tensor:
        c, h, w = self.in_shape
        if not self._batched(x):
            return self._conv(x, self._ones(x, c), c) * self._inv(x)
        sums = self._conv(x.reshape(-1, 1, h, w), self._ones(x, 1), 1)
        return sums.reshape(*x.shape[:-3], c, *self.shape[1:]) * self._inv(x)

    def apply_t(self, y: Tensor) -> Tensor:
        c, h, w = self.in_shape
        if not self._batched(y):
            return self._conv_t(y * self._inv(y), self._ones(y, c), c)
        back = self._conv_t((y * self._inv(y)).reshape(-1, 1, *self.shape[1:]), self._ones(y, 1), 1)
        return back.reshape(*y.shape[:-3], c, h, w)

    def params(self) -> tuple[FloatArray, ...]:
        return (self.inv_count,)

    @property
    def fan_in(self) -> int:
        return math.prod(self.kernel) + 1  # the window's sum, then one product


@dataclass(frozen=True, eq=False, kw_only=True)
class Scale(LinearNode):
    """Element-wise ``y = scale * x + shift`` (``scale`` and ``shift`` broadcastable to
    ``shape``): input normalisation, a BatchNormalization that could not be folded, Mul /
    Div / Add / Sub by constants."""

    scale: FloatArray
    shift: FloatArray
    kind: ClassVar[str] = "scale"

    def __post_init__(self) -> None:
        super().__post_init__()
        r = len(self.shape)
        s, b = frozen_array(self.scale), frozen_array(self.shift, what="shifts")
        if s.ndim > r or b.ndim > r or np.broadcast_shapes(self.shape, s.shape, b.shape) != self.shape \
                or self.in_shape != self.shape:
            raise ModelError(f"scale node {self.name!r}: scale {s.shape} and shift {b.shape} for shape {self.shape}")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "shift", b)

    def _s(self, x: Tensor, key: str = "s") -> Tensor:
        return self.tensor(key, self.scale if key == "s" else lambda: np.abs(self.scale), x.dtype, x.device)

    def apply(self, x: Tensor) -> Tensor:
        return x * self._s(x)

    def apply_t(self, y: Tensor) -> Tensor:
        return y * self._s(y)

    def apply_abs(self, x: Tensor) -> Tensor:
        return x * self._s(x, "sa")

    def apply_abs_t(self, y: Tensor) -> Tensor:
        return y * self._s(y, "sa")

    def bias_array(self) -> FloatArray:
        return self.shift

    def params(self) -> tuple[FloatArray, ...]:
        return self.scale, self.shift

    @property
    def fan_in(self) -> int:
        return 1
