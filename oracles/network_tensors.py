"""The IR's affine maps as tensors for the chain passes (:mod:`oracles.bounds`,
:mod:`oracles.forward`, :mod:`oracles.alpha`, branch and bound): weights and biases in one
dtype on one device, their magnitudes for the rounding bounds, the relative slack of the
widest sums, and compressed copies of mostly-zero matrices; built once per network object,
device and dtype and shared by the oracles that read it."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Affine, Network, affine_tensors
from parallelepipedonn.tolerances import relative_slack, smallest_subnormal

from .precision import subnormal_rounding
from .sparse_weights import SparseWeights

Tensor = torch.Tensor


@dataclass(frozen=True)
class NetworkTensors:
    """The IR's affine maps as tensors on one device, in ``dtype`` (float64 by default;
    float32 weights are the IR's rounded to nearest, an error the slack covers), with
    their absolute values (for rounding bounds) and the relative slack ``rel`` of the
    network's widest sums."""

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    abs_weights: tuple[Tensor, ...]
    abs_biases: tuple[Tensor, ...]
    rel: float
    tiny: float
    #: per layer, compressed copies of a mostly-zero weight matrix (:class:`SparseWeights`),
    #: or None: the products of :func:`~oracles.sparse_weights.times_weight` and
    #: :func:`~oracles.sparse_weights.weight_times` skip its zeros
    sparse: tuple[SparseWeights | None, ...] = ()

    @classmethod
    def of(cls, network: Network, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float64) -> NetworkTensors:
        """Raises :class:`OracleError` for a :class:`~parallelepipedonn.graph.Graph` that is
        not a chain (the chain oracles read only ``Affine (ReLU Affine)*``). Built once per
        network object, device and dtype (a network's arrays are read-only) and shared: the
        stages of a cascade built their own (four times 3 s on tllverifybench's N = 64 net,
        of a 60 s budget)."""
        if not isinstance(network, Network):
            chain = network.as_network()
            if chain is None:
                raise OracleError(f"this oracle reads only chains of affine maps and ReLUs; {network.describe()} "
                                  "is not one (use crown)")
            network = chain
        key = (str(torch.device(device)), dtype)
        known = _TENSORS.get(id(network))
        if known is None or known[0]() is not network:
            ident = id(network)
            known = _TENSORS[ident] = (weakref.ref(network, lambda _: _TENSORS.pop(ident, None)), {})
        if key not in known[1]:
            with torch.inference_mode(False):  # shared: tensors that autograd may save, whoever asks first
                known[1][key] = cls._of(network, device, dtype)
        return known[1][key]

    @classmethod
    def _of(cls, network: Network, device: str | torch.device, dtype: torch.dtype) -> NetworkTensors:
        widest = max(max(a.in_features, a.out_features) for a in network.affines)
        # the longest chain of additions into one result: a product's sum plus the
        # accumulations of the backward pass and of the concretisation (a few per layer)
        n_terms = widest + 4 * len(network.affines) + 8
        rel = relative_slack(n_terms, dtype)
        layers = [_layer(a, device, dtype, rel) for a in network.affines]
        w, b, abs_w, abs_b, sparse = (tuple(t) for t in zip(*layers))
        return cls(w, b, abs_w, abs_b, rel, 4.0 * (widest + 2) * smallest_subnormal(dtype), sparse)

    def to(self, dtype: torch.dtype) -> NetworkTensors:
        """The tensors rounded to ``dtype``, with the rounding cover's constants kept (for an
        optimisation's iterates, which prove nothing); each tensor's copy made once and
        shared, as the tensors themselves are (:func:`_layer`)."""
        return NetworkTensors(*(tuple(_converted(t, dtype) for t in ts) for ts in
                                (self.weights, self.biases, self.abs_weights, self.abs_biases)), self.rel, self.tiny,
                              tuple(None if sp is None else _converted(sp, dtype) for sp in self.sparse))

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.weights[0].device


#: id(network) -> (a weak reference to it, {(device, dtype): its tensors}) (see :meth:`NetworkTensors.of`)
_TENSORS: dict[int, tuple[weakref.ref, dict[tuple[str, torch.dtype], NetworkTensors]]] = {}

_Layer = tuple[Tensor, Tensor, Tensor, Tensor, "SparseWeights | None"]
#: id(affine map) -> (a weak reference to it, {(device, dtype): its tensors}): a layer's tensors
#: shared by the networks that hold the same map object (a property's reductions of one
#: model, one per input region, keep the model's maps but the last: nn4sys's 50-region
#: properties built a 60,000-neuron model's tensors, 1 s, for every region)
_LAYERS: dict[int, tuple[weakref.ref, dict[tuple[str, torch.dtype], _Layer]]] = {}


#: id(tensor or sparse copies) -> (a weak reference to it, {dtype: its copy}) (:func:`_converted`)
_CONVERTED: dict[int, tuple[weakref.ref, dict[torch.dtype, object]]] = {}


def _converted(t, dtype: torch.dtype):
    """``t.to(dtype)`` (a tensor or :class:`SparseWeights`), made once per object and dtype."""
    known = _CONVERTED.get(id(t))
    if known is None or known[0]() is not t:
        ident = id(t)
        known = _CONVERTED[ident] = (weakref.ref(t, lambda _: _CONVERTED.pop(ident, None)), {})
    if dtype not in known[1]:
        with torch.inference_mode(False), torch.no_grad():
            known[1][dtype] = t.to(dtype)
    return known[1][dtype]


def _layer(affine: Affine, device: str | torch.device, dtype: torch.dtype, rel: float) -> _Layer:
    """``(W, b, |W|, |b|, sparse copies)`` of one affine map in ``dtype`` on ``device``.
    A weight below the dtype's normal range (float32: ``|w| < 2^-126``) rounds with an
    absolute error, which the relative slack does not cover: the magnitudes get ``err /
    rel`` more per weight and bias, so that ``rel * (|W| s + |b|)`` covers ``err * (sum s
    + 1)`` as well (0 in float64 and for weights in the normal range); such a map's tensors
    depend on the network's ``rel`` and are not shared."""
    err = subnormal_rounding((affine.weight, affine.bias), dtype)
    key = (str(torch.device(device)), dtype)
    known = _LAYERS.get(id(affine))
    if err == 0 and known is not None and known[0]() is affine and key in known[1]:
        return known[1][key]
    w, b = affine_tensors(affine, dtype, device)
    abs_w, abs_b = w.abs(), b.abs()
    if err > 0:
        return w, b, abs_w + err / rel, abs_b + err / rel, SparseWeights.of(w, abs_w + err / rel)
    layer = (w, b, abs_w, abs_b, SparseWeights.of(w, abs_w))
    if known is None or known[0]() is not affine:
        ident = id(affine)
        known = _LAYERS[ident] = (weakref.ref(affine, lambda _: _LAYERS.pop(ident, None)), {})
    known[1][key] = layer
    return layer


__all__ = ["NetworkTensors"]
