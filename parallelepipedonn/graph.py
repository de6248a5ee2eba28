"""The DAG intermediate representation: typed nodes over shaped tensors.

A :class:`Graph` is a directed acyclic graph of the nodes of
:mod:`parallelepipedonn.graph_nodes` (stored in topological order, node 0 the input,
the last node the class scores): convolutions stay convolutions, residual connections
(Add / Sub / Concat) are kept. As for the chain :class:`~parallelepipedonn.network.Network`,
the graph *is* the certified semantics: the network evaluated in exact arithmetic on the
stored float64 weights. :meth:`Graph.forward` computes it in float64;
:meth:`Graph.misclassified` decides exactly (float64 where the rounding-error bound
decides, exact integer arithmetic otherwise). The graph exposes the interface the
searches use on a ``Network`` (``input_shape``, ``n_inputs``, ``forward``, ``margins``,
``misclassified``, ...); :meth:`Graph.as_network` gives back the chain ``Network`` when
the graph is one (Dense and ReLU nodes), and :meth:`Graph.to_chain` expands a graph whose
ReLUs form a chain (convolutions, pooling, ... composed into dense affine maps, see
:mod:`parallelepipedonn.graph_chain`) for the oracles that only read chains.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from . import graph_nodes as gn
from .classifier import Classifier
from .errors import ModelError
from .graph_chain import ChainExpansion
from .network import Affine, Network
from .network import ReLU as ChainReLU
from .tolerances import UNIT_ROUNDOFF_F64, gamma, gradual_underflow, smallest_subnormal

FloatArray = NDArray[np.float64]
Tensor = torch.Tensor

_SUBNORMAL = smallest_subnormal(np.float64)


def evaluate(graph: Graph, x: Tensor, keep: bool = False) -> list[Tensor] | Tensor:
    """The graph on a batch ``x`` (``(N, *input_shape)`` or ``(N, n)``), in ``x``'s dtype:
    the class scores ``(N, n_classes)``, or every node's value with ``keep``."""
    values: list[Tensor] = []
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if isinstance(node, gn.Input):
            v = x.reshape(x.shape[0], *node.shape)
        elif isinstance(node, gn.LinearNode):
            v = node.apply(ins[0])
            b = node.bias(v.dtype, v.device)
            if b is not None:
                v = v + b
        elif isinstance(node, gn.ReLU):
            v = torch.relu(ins[0])
        elif isinstance(node, gn.Add):
            v = ins[0] + ins[1]
        elif isinstance(node, gn.Sub):
            v = ins[0] - ins[1]
        elif isinstance(node, gn.Concat):
            v = torch.cat(ins, dim=node.axis + 1)
        else:  # pragma: no cover - every node type is handled above
            raise ModelError(f"unknown node type {type(node).__name__}")
        values.append(v)
    return values if keep else values[-1]


class _TorchGraph(torch.nn.Module):
    """The graph as a torch module on flattened inputs ``(k, n)``, in one dtype."""

    def __init__(self, graph: Graph, dtype: torch.dtype, device: str | torch.device) -> None:
        super().__init__()
        self.graph, self.dtype, self.device = graph, dtype, torch.device(device)

    def forward(self, x: Tensor) -> Tensor:
        return evaluate(self.graph, x.to(self.dtype))  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Graph(Classifier):
    """A ReLU classifier as a DAG of typed nodes (see module docstring)."""

    input_shape: tuple[int, ...]
    nodes: tuple[gn.Node, ...]
    name: str = ""
    #: see :attr:`Classifier.input_bound`
    input_bound: float = math.inf
    #: see :attr:`Classifier.dropped_final`
    dropped_final: str = ""
    #: see :attr:`Classifier.file_sha256`
    file_sha256: str = ""
    #: see :attr:`Classifier.zero_outputs` (the last node is then a Dense node whose last
    #: ``zero_outputs`` rows and biases are zeros)
    zero_outputs: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        if not nodes or not isinstance(nodes[0], gn.Input) or nodes[0].shape != self.input_shape:
            raise ModelError("a graph starts with its Input node, of the input's shape")
        for k, node in enumerate(nodes):
            if any(not 0 <= i < k for i in node.inputs):
                raise ModelError(f"node {k} ({node.kind}) reads a node that is not before it: not in topological order")
            shapes = [nodes[i].shape for i in node.inputs]
            self._check_node(k, node, shapes)
        out = nodes[-1].shape
        if len(out) != 1 or out[0] < 2:
            raise ModelError(f"the graph's output has shape {list(out)}: not a vector of >= 2 class scores")
        if self.zero_outputs:
            last, z = nodes[-1], self.zero_outputs
            if not (isinstance(last, gn.Dense) and 0 < z < out[0] and not last.weight[-z:].any()
                    and not last.bias_[-z:].any()):
                raise ModelError(f"zero_outputs={z}: the graph does not end in a Dense node whose last {z} scores "
                                 "are constant zeros")

    @staticmethod
    def _check_node(k: int, node: gn.Node, shapes: list[tuple[int, ...]]) -> None:
        arity = {gn.Input: 0, gn.Add: 2, gn.Sub: 2}.get(type(node), None)
        if isinstance(node, (gn.LinearNode, gn.ReLU)):
            arity = 1
        if arity is not None and len(shapes) != arity:
            raise ModelError(f"node {k} ({node.kind}) has {len(shapes)} inputs, expected {arity}")
        if isinstance(node, gn.Input) and k != 0:
            raise ModelError(f"node {k} is a second Input")
        if isinstance(node, gn.LinearNode) and shapes[0] != node.in_shape:
            raise ModelError(f"node {k} ({node.kind}) expects input shape {node.in_shape}, gets {shapes[0]}")
        if isinstance(node, gn.Reshape) and node.numel != int(np.prod(node.in_shape)):
            raise ModelError(f"node {k} reshapes {node.in_shape} to {node.shape}")
        if isinstance(node, gn.Transpose) and (sorted(node.perm) != list(range(len(node.in_shape)))
                                              or node.shape != tuple(node.in_shape[p] for p in node.perm)):
            raise ModelError(f"node {k}: transpose {node.perm} of {node.in_shape} to {node.shape}")
        if isinstance(node, gn.Pad):
            r = len(node.in_shape)
            want = tuple(node.in_shape[i] + node.pads[i] + node.pads[i + r] for i in range(r))
            if len(node.pads) != 2 * r or min(node.pads) < 0 or want != node.shape:
                raise ModelError(f"node {k}: pads {node.pads} of {node.in_shape} to {node.shape}")
        if isinstance(node, (gn.ReLU, gn.Add, gn.Sub)) and any(s != node.shape for s in shapes):
            raise ModelError(f"node {k} ({node.kind}) of shape {node.shape} on inputs of shapes {shapes}")
        if isinstance(node, gn.Concat):
            ax = node.axis
            if not shapes or any(len(s) != len(node.shape) for s in shapes) or not 0 <= ax < len(node.shape) or \
                    any(s[:ax] + s[ax + 1:] != node.shape[:ax] + node.shape[ax + 1:] for s in shapes) or \
                    sum(s[ax] for s in shapes) != node.shape[ax]:
                raise ModelError(f"node {k}: concat along {ax} of {shapes} to {node.shape}")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_network(cls, net: Network) -> Graph:
        """The chain ``net`` as a graph: Input, a Reshape to the flat vector if the input
        is not flat, then Dense and ReLU nodes (the same float64 weights)."""
        n = net.n_inputs
        nodes: list[gn.Node] = [gn.Input(inputs=(), shape=net.input_shape, name="input")]
        if net.input_shape != (n,):
            nodes.append(gn.Reshape(inputs=(0,), shape=(n,), in_shape=net.input_shape, name="flatten"))
        for i, layer in enumerate(net.layers):
            last = len(nodes) - 1
            if isinstance(layer, Affine):
                nodes.append(gn.Dense(inputs=(last,), shape=(layer.out_features,), in_shape=(layer.in_features,),
                                      weight=layer.weight, bias_=layer.bias, name=f"dense{i // 2}"))
            else:
                nodes.append(gn.ReLU(inputs=(last,), shape=nodes[last].shape, name=f"relu{i // 2}"))
        return cls(net.input_shape, tuple(nodes), net.name, zero_outputs=net.zero_outputs)

    def as_network(self) -> Network | None:
        """The chain :class:`Network` with the same semantics when the graph is a chain
        of Dense and ReLU nodes (Reshapes allowed), else ``None``."""
        layers: list = []
        for k, node in enumerate(self.nodes[1:], start=1):
            if node.inputs != (k - 1,):
                return None
            if isinstance(node, gn.Dense):
                layers.append(Affine(node.weight, node.bias_))
            elif isinstance(node, gn.ReLU):
                if not layers:
                    return None
                layers.append(ChainReLU())
            elif not isinstance(node, gn.Reshape):
                return None
        if not layers or not isinstance(layers[0], Affine) or not isinstance(layers[-1], Affine):
            return None
        if any(isinstance(a, Affine) and isinstance(b, Affine) for a, b in zip(layers, layers[1:])):
            return None  # merging would round: not the same semantics
        return Network(self.input_shape, tuple(layers), self.name, zero_outputs=self.zero_outputs)

    @cached_property
    def is_chain(self) -> bool:
        return self.as_network() is not None

    def chain_expansion(self, max_bytes: int | None = None) -> ChainExpansion:
        """The graph expanded into a chain :class:`Network` when its ReLUs form one (see
        :mod:`parallelepipedonn.graph_chain`: one dense float64 affine map per stage, and
        whether that chain has exactly the graph's semantics); :class:`NotAChainError`
        for residual graphs, :class:`ModelTooLargeError` over ``max_bytes`` (default
        ``onnx_import.MAX_DENSE_BYTES``) per dense array. Cached per ``max_bytes``."""
        from .graph_chain import expand_to_chain

        if max_bytes not in self._chains:
            chain = self.as_network()  # already a chain: the same weights, nothing composed
            self._chains[max_bytes] = (expand_to_chain(self, max_bytes) if chain is None else
                                       ChainExpansion(chain, True, self.digest, 0))
        return self._chains[max_bytes]

    def to_chain(self, max_bytes: int | None = None) -> Network:
        """The chain :class:`Network` of :meth:`chain_expansion`."""
        return self.chain_expansion(max_bytes).network

    @cached_property
    def _chains(self) -> dict[int | None, ChainExpansion]:
        return {}

    # -- structure ----------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 1

    @property
    def n_classes(self) -> int:
        return self.nodes[-1].shape[0]

    @cached_property
    def consumers(self) -> tuple[tuple[int, ...], ...]:
        """For each node, the nodes that read it."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for k, node in enumerate(self.nodes):
            for i in node.inputs:
                out[i].append(k)
        return tuple(tuple(c) for c in out)

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for node in self.nodes[1:]:
            counts[node.kind] = counts.get(node.kind, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in counts.items())
        shape = "x".join(str(d) for d in self.input_shape)
        return f"{shape} -> {self.n_classes} ReLU graph ({parts}){self.zero_note()}"

    @cached_property
    def digest(self) -> str:
        """sha256 of the IR: input shape, every node's type, wiring, shape, attributes and
        float64 parameters."""
        h = hashlib.sha256(repr(self.input_shape).encode())
        for node in self.nodes:
            attrs = {k: v for k, v in vars(node).items()
                     if k not in ("_cache", "name") and not isinstance(v, np.ndarray)}
            h.update(repr((node.kind, sorted(attrs.items()))).encode())
            for p in node.params():
                h.update(repr(p.shape).encode())
                h.update(np.ascontiguousarray(p).tobytes())
        return h.hexdigest()

    # -- semantics ----------------------------------------------------------------------
    def forward(self, x: ArrayLike) -> FloatArray:
        """Logits of each point, float64 (shape ``(k, n_classes)``; ``inf``/``nan`` where
        the float64 pass overflows — :meth:`misclassified` then decides exactly)."""
        h = torch.tensor(self.flatten_inputs(x))
        with torch.no_grad():
            return evaluate(self, h).numpy()  # type: ignore[union-attr]

    @gradual_underflow()  # subnormal results kept, as the error bound assumes
    def margin_errors(self, x: ArrayLike, label: int) -> tuple[FloatArray, FloatArray]:
        """:meth:`margins` and, per point, a bound of its rounding error: the exact margin
        (real arithmetic on the float64 weights and inputs) lies within that distance.

        Per node, as :meth:`Network.margin_errors`: a linear node with fan-in ``m`` adds
        ``gamma_(m+1) (|W| |a| + |b|)`` plus ``m + 1`` subnormal spacings to ``|W| e``
        (``e`` the error already in its input ``a``); Add / Sub add their inputs' errors
        and ``gamma_1 (|a| + |b|)``; ReLU, reshapes, transposes, padding and Concat move
        errors without adding any. Rounded up generously (x2); not finite where the pass
        overflows."""
        label = self.check_label(label)
        x64 = torch.tensor(self.flatten_inputs(x))
        vals: list[Tensor] = []
        errs: list[Tensor] = []
        with torch.no_grad():
            for node in self.nodes:
                ins, ein = [vals[i] for i in node.inputs], [errs[i] for i in node.inputs]
                if isinstance(node, gn.Input):
                    v = x64.reshape(x64.shape[0], *node.shape)
                    e = torch.zeros_like(v)
                elif isinstance(node, gn.LinearNode):
                    v = node.apply(ins[0])
                    b = node.bias(v.dtype, v.device)
                    v = v if b is None else v + b
                    e = node.apply_abs(ein[0])
                    if not node.exact:
                        terms = node.apply_abs(ins[0].abs())
                        ab = node.abs_bias(v.dtype, v.device)
                        terms = terms if ab is None else terms + ab
                        e = e + gamma(node.fan_in + 1) * terms + (node.fan_in + 1) * _SUBNORMAL
                elif isinstance(node, gn.ReLU):
                    v, e = ins[0].clamp(min=0), ein[0]
                elif isinstance(node, (gn.Add, gn.Sub)):
                    v = ins[0] + ins[1] if isinstance(node, gn.Add) else ins[0] - ins[1]
                    e = ein[0] + ein[1] + gamma(1) * (ins[0].abs() + ins[1].abs())
                else:
                    v = torch.cat(ins, dim=node.axis + 1)  # type: ignore[attr-defined]
                    e = torch.cat(ein, dim=node.axis + 1)  # type: ignore[attr-defined]
                vals.append(v)
                errs.append(e)
        h, err = vals[-1].numpy(), errs[-1].numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            diffs = h[:, label, None] - np.delete(h, label, axis=1)
            bound = err[:, label] + np.delete(err, label, axis=1).max(axis=1) \
                + UNIT_ROUNDOFF_F64 * np.abs(diffs).max(axis=1)
        return diffs.min(axis=1), 2 * bound + 1e-300

    def exact_margin(self, x: ArrayLike, label: int) -> Fraction:
        """The margin of one point in exact arithmetic on the float64 weights and input
        (integer arithmetic on scaled mantissas, see :mod:`parallelepipedonn.graph_exact`:
        exact, but seconds on a CIFAR-size convnet)."""
        from .graph_exact import exact_logits

        label = self.check_label(label)
        ints, exp = exact_logits(self, self.flatten_inputs(x)[0])
        best = max(int(v) for j, v in enumerate(ints) if j != label)
        return Fraction(int(ints[label]) - best) * Fraction(2) ** exp

    def to_torch(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.nn.Module:
        """An equivalent torch module on flattened inputs ``(k, n)``, computing in ``dtype``."""
        module = _TorchGraph(self, dtype, device)
        module.requires_grad_(False)
        return module


def chain_of(network: Network | Graph) -> Network | None:
    """The chain :class:`Network` behind ``network`` (itself, or a chain graph's), or None."""
    if isinstance(network, Network):
        return network
    return network.as_network()


def as_graph(network: Network | Graph) -> Graph:
    """``network`` as a :class:`Graph`."""
    return network if isinstance(network, Graph) else Graph.from_network(network)


__all__: Sequence[str] = ["Graph", "as_graph", "chain_of", "evaluate"]
