"""A graph whose ReLUs form a chain, expanded into the chain :class:`~parallelepipedonn.network.Network`
that the chain-only oracles read (marabou, lirpa, class extremes, plug-ins that read chains).

Every value of a :class:`~parallelepipedonn.graph.Graph` belongs to a *stage*: the input
is stage 0, a ReLU opens the stage after its input's, any other node belongs to the stage
of its inputs. The graph's ReLUs form a chain when every non-ReLU node reads values of one
stage only (a residual connection ``relu(h + f(relu(g(h))))`` reads two) and each stage
feeds one ReLU (ReLUs side by side are refused too): :class:`~parallelepipedonn.errors.NotAChainError`
otherwise, naming the node. Nodes that do not lead to the output are ignored.

The linear nodes of a stage (Conv2d, AvgPool2d, Pad, Reshape, Transpose, Scale, Dense, and
Add / Sub / Concat of values of that stage) are composed into ONE dense affine map, as the
chain importer (:mod:`parallelepipedonn.onnx_import`) does: the stage applied in float64 to
the rows ``[0; I]`` of its source (row 0 the offset: the biases; row ``1 + k`` the
coefficients of source value ``k``). Every dense array is sized before it is built: one
over ``max_bytes`` (default :data:`parallelepipedonn.onnx_import.MAX_DENSE_BYTES`), or all
the affine maps over :data:`~parallelepipedonn.onnx_import.MAX_MODEL_BYTES`, is a
:class:`~parallelepipedonn.errors.ModelTooLargeError` before anything is allocated.

Semantics (the importer's contract): the chain's semantics is its own float64 matrices in
exact arithmetic. Composing two rounding operations rounds — a convolution after an input
normalisation, a pooling after a convolution, an Add of two convolutions — and the chain
then differs from the graph, by far more than the last bits where weights cancel (``3 (1e16
+ 2) - 3e16`` composes to 8, not 6): a proof about the chain is a proof about the composed
float64 matrices, not about the graph, and the chain oracles refuse such an expansion
(:func:`oracles.chain.chain_network`).
:attr:`ChainExpansion.exact` says when the chain *is* the graph (the same function in
exact arithmetic): when every rounding node of every stage (a linear node that does more
than move values, Add, Sub) only reads unit rows (a zero offset, coefficients in {0, ±1},
and, for a linear node, at most one nonzero per row). Each coefficient it computes is then
one stored weight times ±1 plus zeros (or a sum of two of {0, ±1}), exact in float64, and
value-moving nodes (reshape, transpose, zero padding, concat) round nothing. This is the
case of the usual convolutional chain (conv, relu, conv, relu, flatten, dense, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import graph_nodes as gn
from .errors import ModelTooLargeError, NotAChainError
from .network import Affine, Layer, Network, ReLU

if TYPE_CHECKING:
    from .graph import Graph

Tensor = torch.Tensor
_GIB = 2**30


@dataclass(frozen=True, eq=False)
class ChainExpansion:
    """The chain of a graph (:func:`expand_to_chain`): ``network``; ``exact`` when it has
    the graph's semantics exactly (else the composed float64 matrices differ from the
    graph's composition); the largest dense array built (bytes)."""

    network: Network
    exact: bool
    graph_digest: str
    largest_bytes: int

    def record(self) -> dict[str, Any]:
        """What a certificate records of the expansion (JSON)."""
        return {
            "chain": "expanded from the graph: the linear nodes between consecutive ReLUs composed into one "
                     "dense float64 affine map each",
            "graph_sha256": self.graph_digest,
            "chain_sha256": self.network.digest,
            "affine_maps": len(self.network.affines),
            "exact": self.exact,
            "semantics": ("the chain is the graph (every composed coefficient is exact)" if self.exact else
                          "the composed float64 matrices differ from the graph's composition (rounded; by "
                          "far more than the last bits where weights cancel): no proof is about the graph"),
        }


def _label(graph: Graph, k: int) -> str:
    node = graph.nodes[k]
    return f"node {k} ({node.kind}{' ' + repr(node.name) if node.name else ''})"


def relu_stages(graph: Graph) -> tuple[list[int], list[int]]:
    """The stage of every node (``-1`` for nodes that do not lead to the output) and the
    ReLU nodes in chain order; :class:`NotAChainError` if the ReLUs do not form a chain."""
    live = [False] * len(graph.nodes)
    live[-1] = True
    for k in range(len(graph.nodes) - 1, -1, -1):
        if live[k]:
            for i in graph.nodes[k].inputs:
                live[i] = True
    stage = [-1] * len(graph.nodes)
    relus: list[int] = []
    for k, node in enumerate(graph.nodes):
        if not live[k]:
            continue
        if isinstance(node, gn.Input):
            stage[k] = 0
            continue
        seen = sorted({stage[i] for i in node.inputs})
        if len(seen) != 1:
            raise NotAChainError(
                f"{_label(graph, k)} combines values from before and after a ReLU (a residual connection): "
                "the graph is not a chain of affine maps and ReLUs")
        if isinstance(node, gn.ReLU):
            if seen[0] != len(relus):
                other = relus[seen[0]]
                raise NotAChainError(f"{_label(graph, k)} and {_label(graph, other)} apply ReLUs side by side: "
                                     "the graph is not a chain of affine maps and ReLUs")
            relus.append(k)
            stage[k] = len(relus)
        else:
            stage[k] = seen[0]
    return stage, relus


def _is_unit(rows: Tensor, one_per_row: bool) -> bool:
    """Zero offset row, coefficients in {0, ±1} (and at most one nonzero per row)."""
    if bool((rows[0] != 0).any()):
        return False
    coef = rows[1:].reshape(rows.shape[0] - 1, -1)
    if not bool(((coef == 0) | (coef.abs() == 1)).all()):
        return False
    return not one_per_row or bool(((coef != 0).sum(dim=1) <= 1).all())


def _need(what: str, rows: int, cols: int, max_bytes: int) -> int:
    nbytes = 8 * rows * cols
    if nbytes > max_bytes:
        raise ModelTooLargeError(
            f"{what} would need a dense {rows}x{cols} float64 matrix ({nbytes / _GIB:.3g} GiB), over the limit of "
            f"{max_bytes / _GIB:.3g} GiB (parallelepipedonn.onnx_import.MAX_DENSE_BYTES)")
    return nbytes


def _stage_rows(graph: Graph, stage: list[int], s: int, source: int, target: int,
                max_bytes: int) -> tuple[Tensor, bool, int]:
    """The rows ``(1 + n_source, *shape(target))`` of stage ``s`` (see module docstring),
    whether they are exact, and the largest array built (bytes)."""
    nodes = graph.nodes
    n = nodes[source].numel
    largest = _need(f"the affine map after {_label(graph, source)}", n + 1, n, max_bytes)
    members = [k for k in range(source + 1, target + 1) if stage[k] == s and not isinstance(nodes[k], gn.ReLU)]
    for k in members:
        largest = max(largest, _need(f"expanding {_label(graph, k)} as a function of {n} values", n + 1,
                                     nodes[k].numel, max_bytes))
    inside = set(members)
    left = {k: sum(1 for c in graph.consumers[k] if c in inside) for k in [source, *members]}
    rows = torch.zeros(n + 1, n, dtype=torch.float64)
    rows[1:].fill_diagonal_(1.0)
    values: dict[int, Tensor] = {source: rows.reshape(n + 1, *nodes[source].shape)}
    exact = True
    for k in members:
        node = nodes[k]
        ins = [values[i] for i in node.inputs]
        if isinstance(node, gn.LinearNode):
            if not node.exact:
                exact = exact and _is_unit(ins[0], one_per_row=True)
            v = node.apply(ins[0])
            b = node.bias(torch.float64, "cpu")
            if b is not None:  # the bias goes into the offset row only
                v = torch.cat((v[:1] + b, v[1:]))
        elif isinstance(node, (gn.Add, gn.Sub)):
            exact = exact and _is_unit(ins[0], False) and _is_unit(ins[1], False)
            v = ins[0] + ins[1] if isinstance(node, gn.Add) else ins[0] - ins[1]
        elif isinstance(node, gn.Concat):
            v = torch.cat(ins, dim=node.axis + 1)
        else:  # pragma: no cover - the Graph admits no other node type
            raise NotAChainError(f"{_label(graph, k)}: cannot expand a {node.kind} node into an affine map")
        values[k] = v
        for i in node.inputs:
            left[i] -= 1
            if left[i] == 0 and i != target:
                del values[i]
    return values[target], exact, largest


def expand_to_chain(graph: Graph, max_bytes: int | None = None, max_model_bytes: int | None = None) -> ChainExpansion:
    """The chain :class:`Network` of ``graph`` (see module docstring): one dense affine map
    per stage, a ReLU between consecutive ones. Raises :class:`NotAChainError` for a graph
    whose ReLUs do not form a chain and :class:`ModelTooLargeError` (before allocating)
    when a dense array would exceed ``max_bytes`` or the affine maps ``max_model_bytes``
    (defaults: :mod:`parallelepipedonn.onnx_import`'s ``MAX_DENSE_BYTES`` and ``MAX_MODEL_BYTES``)."""
    from . import onnx_import

    max_bytes = onnx_import.MAX_DENSE_BYTES if max_bytes is None else int(max_bytes)
    max_model_bytes = onnx_import.MAX_MODEL_BYTES if max_model_bytes is None else int(max_model_bytes)
    stage, relus = relu_stages(graph)
    sources = [0, *relus]
    targets = [graph.nodes[r].inputs[0] for r in relus] + [len(graph.nodes) - 1]
    total = sum(8 * (graph.nodes[s].numel + 1) * graph.nodes[t].numel for s, t in zip(sources, targets))
    if total > max_model_bytes:
        raise ModelTooLargeError(f"the chain's dense affine maps would take {total / _GIB:.3g} GiB as float64, over "
                                 f"the limit of {max_model_bytes / _GIB:.3g} GiB "
                                 "(parallelepipedonn.onnx_import.MAX_MODEL_BYTES)")
    layers: list[Layer] = []
    exact, largest = True, 0
    with torch.no_grad():
        for s, (source, target) in enumerate(zip(sources, targets)):
            rows, ok, size = _stage_rows(graph, stage, s, source, target, max_bytes)
            flat = rows.reshape(rows.shape[0], -1).numpy()
            if layers:
                layers.append(ReLU())
            layers.append(Affine(flat[1:].T, flat[0]))
            exact, largest = exact and ok, max(largest, size)
    return ChainExpansion(Network(graph.input_shape, tuple(layers), graph.name), exact, graph.digest, largest)


def is_relu_chain(graph: Graph) -> bool:
    """Whether :func:`expand_to_chain` can expand ``graph`` (its ReLUs form a chain; sizes
    not checked)."""
    try:
        relu_stages(graph)
    except NotAChainError:
        return False
    return True


__all__: Sequence[str] = ["ChainExpansion", "expand_to_chain", "relu_stages", "is_relu_chain"]
