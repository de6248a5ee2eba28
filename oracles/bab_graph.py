"""Branch and bound's bounding on a graph that is not a Dense/ReLU chain
(:mod:`oracles.bab`): the trees of a box (the root is CROWN's over the DAG), each
sub-domain's alpha/beta-CROWN pass through :func:`oracles.graph_bounds.backward`, and
its phases widened to the graph's ReLU nodes for the leaf LP.

The sub-domains keep the box's unstable neurons only (``Trees.columns``: the other
neurons' relaxations are exact and the box's, the ``compact`` relaxations of the
backward pass). Iterate passes run in the ``iterates`` dtype on a copy of the box's
node bounds rounded to it (they choose parameters and prove nothing); a sound pass is
float64 on the box's node bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from parallelepipedonn.graph import Graph

from .bab_domains import Nodes, Trees
from .bounds import ReluRelaxation, margin_spec, relu_relaxation
from .graph_bounds import GraphTensors, NodeBounds, concretize_wide, node_bounds
from .graph_bounds import backward as graph_backward

Tensor = torch.Tensor


def root_bounds(gt: GraphTensors, lo: Tensor, hi: Tensor, label: int,
                n_classes: int, deadline: float = math.inf) -> tuple[NodeBounds, Tensor, Tensor]:
    """The box's node bounds, the margin rows ``(1, n_classes - 1, n_classes)`` and their
    proven CROWN lower bounds (``(n_classes - 1,)``). ``deadline``: as
    :func:`~oracles.graph_bounds.node_bounds`'."""
    with torch.no_grad():
        nb = node_bounds(gt, lo, hi, deadline=deadline)
        spec = margin_spec(n_classes, label, 1, lo.dtype, lo.device)
        root_bound = concretize_wide(graph_backward(gt, nb, len(gt.graph.nodes) - 1, spec), lo, hi)[0]
    return nb, spec, root_bound


def graph_trees(gt: GraphTensors, nb: NodeBounds, spec: Tensor, order: list[int], targets: Tensor, lo: Tensor,
                hi: Tensor, work: torch.dtype) -> Trees:
    """Every tree (the margin rows ``order``, classes ``targets``) on the whole box
    ``[lo, hi]``, with its node bounds; the iterates' copy in ``work``."""
    from .milp_graph import relu_nodes, term_magnitude  # pyomo: not at import

    count = len(order)
    relus = relu_nodes(gt.graph)
    # the sub-domains keep the box's unstable neurons only (the others' relaxations are exact)
    columns = [nb.relax[k].upper_intercept[0].ne(0).nonzero()[:, 0] for k in relus]
    bounds = [(nb.lower[gt.graph.nodes[k].inputs[0]].flatten(1)[:, c].expand(count, -1),
               nb.upper[gt.graph.nodes[k].inputs[0]].flatten(1)[:, c].expand(count, -1))
              for k, c in zip(relus, columns)]
    scale = term_magnitude(gt, nb, spec[:, order])[0].tolist()
    iterate = NodeBounds(*([a.to(work) for a in ts] for ts in (nb.lower, nb.upper, nb.scale)),
                         {k: a.to(work) for k, a in nb.terms.items()},
                         {k: ReluRelaxation(r.lower_slope.to(work), r.upper_slope.to(work),
                                            r.upper_intercept.to(work), r.scale.to(work), r.invalid)
                          for k, r in nb.relax.items()}, nb.invalid)
    return Trees(targets, lo.expand(count, -1), hi.expand(count, -1), bounds, [(a < 0) & (b > 0) for a, b in bounds],
                 scale, [relu_relaxation(lb, ub).lower_slope for lb, ub in bounds], graph_bounds=nb,
                 columns=columns, graph_iterate=iterate)


def graph_pass(gt: GraphTensors, nb0: NodeBounds, trees: Trees, nodes: Nodes, spec: Tensor,
               bounds: list[tuple[Tensor, Tensor]], alphas: Sequence[Tensor],
               betas: Sequence[Tensor]) -> tuple[Tensor, Any, list[Tensor]]:
    """:meth:`oracles.bab.BabOracle._pass` over a graph (per ReLU node) in ``gt``'s dtype,
    on the box's node bounds ``nb0`` (for every sub-domain) with the sub-domains' own
    relaxations and the splits' terms: the lower bounds (``(N, 1)``), the linear bound,
    and each ReLU node's output coefficients (``(N, 1, n_u)``)."""
    from .milp_graph import relu_nodes

    relus = relu_nodes(gt.graph)
    t = nodes.tree
    lo_n, hi_n = trees.lower[t].to(gt.dtype), trees.upper[t].to(gt.dtype)
    bounds = [(lb.to(gt.dtype), ub.to(gt.dtype)) for lb, ub in bounds]
    n = len(nodes)

    def each(a: Tensor) -> Tensor:  # the box's tensor, for every sub-domain (a view)
        return a.expand(n, *a.shape[1:])

    # the sub-domains' relaxations, on the box's unstable neurons (trees.columns)
    sub = {k: relu_relaxation(lb, ub, alpha=a.to(lb.dtype)) for k, (lb, ub), a in zip(relus, bounds, alphas)}
    invalid = each(nb0.invalid)
    for r in sub.values():
        invalid = invalid | r.invalid
    nb = NodeBounds([each(a) for a in nb0.lower], [each(a) for a in nb0.upper], [each(a) for a in nb0.scale],
                    {k: each(a) for k, a in nb0.terms.items()}, nb0.relax, invalid)
    terms = {k: -(b.to(lo_n.dtype).clamp(min=0)) * ph.to(lo_n.dtype).unsqueeze(1)
             for k, b, ph in zip(relus, betas, nodes.phases)}
    kept: dict[int, Tensor] = {}
    bound = graph_backward(gt, nb, len(gt.graph.nodes) - 1, spec, split_terms=terms, keep=kept,
                           compact={k: (c, sub[k]) for k, c in zip(relus, trees.columns)})
    zero = torch.zeros(n, 1, 1, dtype=lo_n.dtype, device=lo_n.device)
    return concretize_wide(bound, lo_n, hi_n), bound, [kept.get(k, zero) for k in relus]


def full_phases(graph: Graph, trees: Trees, phases: list[np.ndarray]) -> list[np.ndarray]:
    """A sub-domain's phases (on the box's unstable neurons) on every neuron of each ReLU
    node (0 elsewhere), as the graph's encoding reads them."""
    from .milp_graph import relu_nodes

    assert trees.columns is not None
    full = [np.zeros(graph.nodes[k].numel, dtype=np.int8) for k in relu_nodes(graph)]
    for f, c, p in zip(full, trees.columns, phases):
        f[c.cpu().numpy()] = p
    return full
