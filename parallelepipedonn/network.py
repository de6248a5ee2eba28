"""The network intermediate representation (IR) that every oracle reads.

A :class:`Network` is a feed-forward ReLU classifier written as a strictly alternating
sequence ``Affine (ReLU Affine)*`` over the flattened input (row-major order of
``input_shape``). Weights are float64. The IR *is* the semantics the tool certifies:
every proof and every counterexample refers to it evaluated in exact arithmetic on these
float64 weights — :meth:`Network.forward` computes it in float64, and
:meth:`Network.misclassified` decides exactly (see README, "Floating-point soundness").
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from .classifier import Classifier
from .errors import ModelError
from .tolerances import UNIT_ROUNDOFF_F64, gradual_underflow, smallest_subnormal

FloatArray = NDArray[np.float64]

_UNIT_ROUNDOFF = UNIT_ROUNDOFF_F64
_SUBNORMAL = smallest_subnormal(np.float64)


def _frozen(a: ArrayLike, ndim: int) -> FloatArray:
    arr = np.array(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise ModelError(f"expected a {ndim}-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModelError("network parameters contain NaN or infinite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = weight @ x + bias`` with ``weight`` of shape ``(out, in)``."""

    weight: FloatArray
    bias: FloatArray

    def __post_init__(self) -> None:
        w, b = _frozen(self.weight, 2), _frozen(self.bias, 1)
        if w.shape[0] != b.shape[0]:
            raise ModelError(f"affine map with {w.shape[0]} outputs but {b.shape[0]} biases")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @cached_property
    def abs_weight(self) -> FloatArray:
        """``|weight|`` (read-only; for rounding-error bounds)."""
        a = np.abs(self.weight)
        a.setflags(write=False)
        return a

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def then(self, other: Affine) -> Affine:
        """The composition ``other(self(x))`` as one affine map."""
        return Affine(other.weight @ self.weight, other.weight @ self.bias + other.bias)


@dataclass(frozen=True)
class ReLU:
    """Element-wise ``max(x, 0)``."""


Layer = Affine | ReLU


#: id(affine map) -> (a weak reference to it, {(dtype, device): (weight, bias) tensors}) (:func:`affine_tensors`)
_AFFINE_TENSORS: dict[int, tuple[weakref.ref, dict[tuple[torch.dtype, str], tuple[torch.Tensor, torch.Tensor]]]] = {}


def affine_tensors(affine: Affine, dtype: torch.dtype, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The map's weight and bias as ``dtype`` tensors on ``device`` (rounded to nearest),
    made once per map object and shared (never to be changed in place): the networks that
    hold the same map object — a property's reductions of one model, one per input region,
    keep all of the model's maps but the last — build no copy of it (nn4sys's 50-region
    properties copied a 60,000-neuron model for every region: 1.4 s each)."""
    key = (dtype, str(torch.device(device)))
    known = _AFFINE_TENSORS.get(id(affine))
    if known is None or known[0]() is not affine:
        ident = id(affine)
        known = _AFFINE_TENSORS[ident] = (weakref.ref(affine, lambda _: _AFFINE_TENSORS.pop(ident, None)), {})
    if key not in known[1]:
        with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, whoever asks first
            known[1][key] = (torch.tensor(affine.weight, dtype=dtype, device=device),
                             torch.tensor(affine.bias, dtype=dtype, device=device))
    return known[1][key]


@dataclass(frozen=True, eq=False)
class Network(Classifier):
    """A ReLU classifier ``Affine (ReLU Affine)*`` on inputs of shape ``input_shape``."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    name: str = ""
    #: see :attr:`Classifier.input_bound`
    input_bound: float = math.inf
    #: see :attr:`Classifier.dropped_final`
    dropped_final: str = ""
    #: see :attr:`Classifier.file_sha256`
    file_sha256: str = ""
    #: see :attr:`Classifier.zero_outputs`
    zero_outputs: int = 0

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers or len(layers) % 2 == 0:
            raise ModelError("a network must alternate Affine (ReLU Affine)*")
        width = int(np.prod(shape)) if shape else 1
        for i, layer in enumerate(layers):
            expected = Affine if i % 2 == 0 else ReLU
            if not isinstance(layer, expected):
                raise ModelError(f"layer {i} must be {expected.__name__}, got {type(layer).__name__}")
            if isinstance(layer, Affine):
                if layer.in_features != width:
                    raise ModelError(f"layer {i} expects {layer.in_features} inputs, gets {width}")
                width = layer.out_features
        if width < 2:
            raise ModelError(f"the network has {width} output(s): a classifier needs at least 2"
                             + (" (`verify --vnnlib` answers VNN-LIB properties of it)" if width == 1 else ""))
        last = layers[-1]
        if not (0 <= self.zero_outputs < width and not last.weight[width - self.zero_outputs:].any()
                and not last.bias[width - self.zero_outputs:].any()):
            raise ModelError(f"zero_outputs={self.zero_outputs}: the last scores of the network are not that many "
                             "constant zeros")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_layers(cls, input_shape: Sequence[int], layers: Iterable[Layer], name: str = "",
                    input_bound: float = math.inf, dropped_final: str = "", zero_outputs: int = 0) -> Network:
        """Build a network from any sequence of affine maps and ReLUs, merging consecutive
        affine maps and repeated ReLUs into the canonical alternating form."""
        n = int(np.prod(tuple(input_shape))) if tuple(input_shape) else 1
        out: list[Layer] = []
        for layer in layers:
            if isinstance(layer, Affine):
                if out and isinstance(out[-1], Affine):
                    out[-1] = out[-1].then(layer)
                else:
                    out.append(layer)
            elif isinstance(layer, ReLU):
                if not out:
                    out.append(Affine(np.eye(n), np.zeros(n)))
                if not isinstance(out[-1], ReLU):
                    out.append(layer)
            else:
                raise ModelError(f"unknown layer type {type(layer).__name__}")
        if out and isinstance(out[-1], ReLU):
            width = out[-2].out_features  # type: ignore[union-attr]
            out.append(Affine(np.eye(width), np.zeros(width)))
        return cls(tuple(input_shape), tuple(out), name, input_bound, dropped_final, zero_outputs=zero_outputs)

    # -- structure ----------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return self.affines[0].in_features

    @property
    def n_classes(self) -> int:
        return self.affines[-1].out_features

    @cached_property
    def affines(self) -> tuple[Affine, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Affine))

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(a.out_features for a in self.affines[:-1])

    def describe(self) -> str:
        sizes = [self.n_inputs, *self.hidden_sizes, self.n_classes]
        kind = " ReLU network" if self.hidden_sizes else " affine classifier (no ReLU)"
        return "-".join(str(s) for s in sizes) + kind + self.zero_note()

    @cached_property
    def digest(self) -> str:
        """sha256 of the IR's parameters (shape and float64 weights)."""
        h = hashlib.sha256(repr(self.input_shape).encode())
        for a in self.affines:
            h.update(a.weight.tobytes())
            h.update(a.bias.tobytes())
        return h.hexdigest()

    # -- semantics ----------------------------------------------------------------------
    def forward(self, x: ArrayLike) -> FloatArray:
        """Logits of each point, float64 (shape ``(k, n_classes)``; ``inf``/``nan`` where the
        float64 pass overflows — :meth:`misclassified` then decides in exact arithmetic)."""
        h = self.flatten_inputs(x)
        with np.errstate(over="ignore", invalid="ignore"):
            for layer in self.layers:
                if isinstance(layer, Affine):
                    h = h @ layer.weight.T + layer.bias
                else:
                    h = np.maximum(h, 0.0)
        return h

    @gradual_underflow()  # subnormal results kept, as the error bound assumes
    def forward_errors(self, x: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """:meth:`forward` and, per point and output, a bound of its rounding error: the
        exact output (real arithmetic on the float64 weights and inputs) lies within that
        distance of the float64 one.

        Each affine map's float64 result differs from the exact one on the computed
        activations by at most ``gamma_(m+1) (|W| |a| + |b|)`` (``m`` terms, any summation
        order), plus ``|W| e`` for the error ``e`` already in ``a``, plus ``m + 1``
        subnormal spacings for products that underflow; ReLU does not increase it. These
        sums of non-negative terms, rounded, are at least ``1 - gamma_m`` times the exact
        ones: each layer's error is multiplied by ``1 + 4 gamma`` (which also covers the
        rounding of that product and of the sum). Not a finite number where the pass
        overflows.
        """
        h = self.flatten_inputs(x)
        err = None  # the inputs are exact
        with np.errstate(over="ignore", invalid="ignore"):
            for layer in self.layers:
                if isinstance(layer, Affine):
                    m = layer.in_features + 1
                    gamma = m * _UNIT_ROUNDOFF / (1 - m * _UNIT_ROUNDOFF)
                    w_abs = layer.abs_weight
                    # (m + 1) subnormal spacings: the absolute error of products that underflow
                    new = gamma * (np.abs(h) @ w_abs.T + np.abs(layer.bias)) + (m + 1) * _SUBNORMAL
                    err = (new if err is None else err @ w_abs.T + new) * (1 + 4 * gamma)
                    h = h @ layer.weight.T + layer.bias
                else:
                    h = np.maximum(h, 0.0)
        return h, err

    @gradual_underflow()  # subnormal results kept, as the error bound assumes
    def margin_errors(self, x: ArrayLike, label: int) -> tuple[FloatArray, FloatArray]:
        """:meth:`margins` and, per point, a bound of its rounding error: the exact margin
        (real arithmetic on the float64 weights and inputs) lies within that distance.

        The outputs' error bounds of :meth:`forward_errors`, for the two logits of the
        margin, plus the rounding of the subtraction; the bound is rounded up generously
        (x2). Not a finite number where the pass overflows.
        """
        label = self.check_label(label)
        h, err = self.forward_errors(x)
        diffs = h[:, label, None] - np.delete(h, label, axis=1)
        bound = err[:, label] + np.delete(err, label, axis=1).max(axis=1) + _UNIT_ROUNDOFF * np.abs(diffs).max(axis=1)
        return diffs.min(axis=1), 2 * bound + 1e-300

    def exact_margin(self, x: ArrayLike, label: int) -> Fraction:
        """The margin of one point in exact rational arithmetic on the float64 weights and
        input (slow: for the points whose float64 margin is within its rounding error of 0)."""
        label = self.check_label(label)
        h = [Fraction(float(v)) for v in self.flatten_inputs(x)[0]]
        for layer in self.layers:
            if isinstance(layer, Affine):
                h = [sum((Fraction(float(w)) * v for w, v in zip(row, h) if w != 0 and v != 0), Fraction(float(b)))
                     for row, b in zip(layer.weight, layer.bias)]
            else:
                h = [max(v, Fraction(0)) for v in h]
        return h[label] - max(v for j, v in enumerate(h) if j != label)

    def to_torch(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                 shared: bool = False) -> torch.nn.Sequential:
        """An equivalent torch module on flattened inputs ``(k, n)``. (Its layers get the
        weights as their parameters, with no random initialisation nor copy before: on
        tllverifybench's 8192-wide net those took 2.4 of the 2.8 s.) ``shared``: the
        parameters are :func:`affine_tensors`' (shared with every module and oracle that
        asks for the same map's: for callers that never change them)."""
        modules: list[torch.nn.Module] = []
        for layer in self.layers:
            if isinstance(layer, Affine):
                lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=dtype, device="meta")
                w, b = affine_tensors(layer, dtype, device) if shared else \
                    (torch.tensor(layer.weight, dtype=dtype, device=device),
                     torch.tensor(layer.bias, dtype=dtype, device=device))
                lin.weight = torch.nn.Parameter(w, requires_grad=False)
                lin.bias = torch.nn.Parameter(b, requires_grad=False)
                modules.append(lin)
            else:
                modules.append(torch.nn.ReLU())
        module = torch.nn.Sequential(*modules)
        module.requires_grad_(False)
        return module

    @classmethod
    def from_torch(cls, module: torch.nn.Sequential, input_shape: Sequence[int], name: str = "") -> Network:
        """Read a ``Sequential`` of ``Flatten``, ``Linear`` and ``ReLU`` modules."""
        layers: list[Layer] = []
        for m in module:
            if isinstance(m, torch.nn.Linear):
                w = m.weight.detach().cpu().double().numpy()
                b = m.bias.detach().cpu().double().numpy() if m.bias is not None else np.zeros(w.shape[0])
                layers.append(Affine(w, b))
            elif isinstance(m, torch.nn.ReLU):
                layers.append(ReLU())
            elif not isinstance(m, (torch.nn.Flatten, torch.nn.Identity)):
                raise ModelError(f"cannot convert torch module {type(m).__name__}")
        return cls.from_layers(input_shape, layers, name)
