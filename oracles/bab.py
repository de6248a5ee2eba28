"""Branch and bound on ReLU phases with optimised linear bounds: a complete verifier.

For one box and each class ``j`` whose margin ``logit_label - logit_j`` CROWN cannot
prove, a tree is grown (all trees share one frontier, bounded in batches):

1. the box is first shrunk without changing the margin's minimum
   (:func:`~oracles.bounds.fix_monotone_inputs`: inputs along which the margin is
   monotone on the whole box are fixed at the minimising end);
2. a sub-domain fixes the phase of some unstable ReLUs (``z >= 0`` or ``z <= 0``); it is
   bounded by alpha/beta-CROWN — lower ReLU slopes ``alpha`` and Lagrange multipliers
   ``beta >= 0`` of its split constraints, optimised by a few Adam steps; every value of
   them gives a sound bound, and the best one is kept;
3. an unproven sub-domain is split on the free unstable ReLU with the largest BaBSR-like
   score; a sub-domain with every ReLU fixed gets many more multiplier steps, and what
   they cannot prove is decided exactly by an LP (pyomo + HiGHS);
4. the vertex minimising each bound, and each LP optimum, is checked by a forward pass as
   a counterexample.

Answers VERIFIED when every sub-domain is proven, FALSIFIED with a confirmed
counterexample, UNKNOWN when the node or time budget runs out (``timed_out``) or when an
LP at a leaf is too close to 0 to decide.

A :class:`~parallelepipedonn.graph.Graph` (convolutions, residual connections) is read as
it is: the sub-domains fix the phases of the neurons of its ReLU nodes, bounded by
alpha/beta-CROWN over the DAG (:func:`oracles.graph_bounds.backward` with the splits'
Lagrangian terms, on the box's node bounds clamped by the phases), the leaves decided by
the LP of :func:`oracles.milp_graph.encode_graph`; the box is not shrunk (step 1 reads
chains only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.graph import Graph
from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import solver_proof_margin, solver_trusted

from .base import Answer, FloatArray, Oracle, Verdict
from .bounds import (
    Adam,
    NetworkTensors,
    backward,
    bounds_valid,
    concretize,
    crown_bound,
    fix_monotone_inputs,
    input_scale,
    intermediate_bounds,
    margin_spec,
    minimizing_corner,
    relu_relaxation,
    sound_kernels,
    term_magnitude,
)
from .crown import resolve_device
from .graph_bounds import GraphTensors, NodeBounds, concretize_wide, node_bounds
from .graph_bounds import backward as graph_backward

Tensor = torch.Tensor


@dataclass
class _Nodes:
    """A batch of sub-domains: per hidden layer, phases in {-1, 0, +1} (``(N, n_i)``), and
    the tree (class) each belongs to (``(N,)``)."""

    phases: list[Tensor]
    tree: Tensor

    def __len__(self) -> int:
        return int(self.tree.shape[0])

    def take(self, idx: Tensor) -> _Nodes:
        return _Nodes([p[idx] for p in self.phases], self.tree[idx])

    @staticmethod
    def cat(parts: Sequence[_Nodes]) -> _Nodes:
        return _Nodes([torch.cat([p.phases[i] for p in parts]) for i in range(len(parts[0].phases))],
                      torch.cat([p.tree for p in parts]))


@dataclass
class _Trees:
    """Per tree (one class ``j`` each): its (shrunk) box and ReLU input bounds, stacked."""

    target: Tensor  # (T,) classes
    lower: Tensor  # (T, n)
    upper: Tensor  # (T, n)
    bounds: list[tuple[Tensor, Tensor]]  # per layer (T, n_i) lower and upper
    unstable: list[Tensor]  # per layer (T, n_i) bool
    scale: list[float]  # per tree, the margin's scale for the LP error model (term_magnitude)
    leaf_lps: dict[int, list] = field(default_factory=dict)  # tree -> [encoding, solver]
    graph_bounds: NodeBounds | None = None  # a graph: the box's node bounds (every tree's box)


class BabOracle(Oracle):
    """Complete verification by branch and bound (see module docstring)."""

    name = "bab"
    sound = True
    complete = True
    batched = False
    queries = frozenset({"verify"})
    reads_graphs = True

    def __init__(self, network: Network | Graph, *, time_limit: float | None = 60.0, max_nodes: int = 200_000,
                 batch_nodes: int = 512, steps: int = 5, lr: float = 0.3, leaf_steps: int = 100,
                 device: str = "cpu") -> None:
        super().__init__(network, time_limit=time_limit)
        if max_nodes < 1 or batch_nodes < 1 or steps < 0 or leaf_steps < 0:
            raise OracleError("max_nodes and batch_nodes must be >= 1, steps and leaf_steps >= 0")
        self.max_nodes, self.batch_nodes, self.steps, self.lr = max_nodes, batch_nodes, steps, lr
        self.leaf_steps = leaf_steps
        self.device = resolve_device(device)
        #: for a graph that is not a Dense/ReLU chain: its CROWN tensors (oracles.graph_bounds)
        self.graph_tensors: GraphTensors | None = None
        if isinstance(self.network, Graph):
            chain = self.network.as_network()
            if chain is None:
                self.graph_tensors = GraphTensors.of(self.network, self.device)
            else:  # the same semantics: the chain code
                self.network = chain
        self.tensors = NetworkTensors.of(self.network, self.device) if self.graph_tensors is None else None
        self.last_nodes = 0
        self._floor = math.inf  # the smallest proven sub-domain bound of the current decision

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "max_nodes": self.max_nodes, "batch_nodes": self.batch_nodes,
                "steps": self.steps, "lr": self.lr, "leaf_steps": self.leaf_steps, "device": str(self.device)}

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        with sound_kernels(self.device):
            return [self.decide(lower[i], upper[i], label) for i in range(len(lower))]

    # -- one box ----------------------------------------------------------------------------
    def _trees(self, lo: Tensor, hi: Tensor, label: int) -> _Trees | None:
        """One tree per class CROWN cannot rule out on the box (``None`` if none)."""
        if self.graph_tensors is not None:
            return self._graph_trees(lo, hi, label)
        net = self.tensors
        root = intermediate_bounds(net, lo, hi)
        spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
        with torch.no_grad():
            root_bound = crown_bound(net, spec, lo, hi, root)[0]
        others = [j for j in range(self.network.n_classes) if j != label]
        order = self._unproven(root_bound)
        if not order:
            return None
        parts = []
        for row in order:
            with torch.no_grad():
                parts.append(fix_monotone_inputs(net, lo, hi, spec[0, row]))
        bounds = [(torch.cat([p[2][i][0] for p in parts]), torch.cat([p[2][i][1] for p in parts]))
                  for i in range(len(root))]
        lower, upper = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        rows = spec[0, order].unsqueeze(1)  # (T, 1, n_classes)
        scale = term_magnitude(net, rows, lower, upper, bounds)[:, 0].tolist()
        return _Trees(torch.tensor([others[r] for r in order], device=lo.device), lower, upper, bounds,
                      [(a < 0) & (b > 0) for a, b in bounds], scale)

    def _unproven(self, root_bound: Tensor) -> list[int]:
        """The rows CROWN's root bound leaves unproven, smallest first; the floor of the
        proven bounds is set."""
        order = [int(r) for r in torch.argsort(root_bound) if float(root_bound[r]) <= 0]
        self._floor = float(root_bound.min()) if not order else min(
            [float(v) for v in root_bound if float(v) > 0], default=math.inf)
        return order

    def _graph_trees(self, lo: Tensor, hi: Tensor, label: int) -> _Trees | None:
        """:meth:`_trees` of a graph: every tree on the whole box, with its node bounds."""
        from .milp_graph import relu_nodes, term_magnitude

        gt = self.graph_tensors
        with torch.no_grad():
            nb = node_bounds(gt, lo, hi)
            spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
            root_bound = concretize_wide(graph_backward(gt, nb, len(gt.graph.nodes) - 1, spec), lo, hi)[0]
        others = [j for j in range(self.network.n_classes) if j != label]
        order = self._unproven(root_bound)
        if not order:
            return None
        count = len(order)
        inputs = [gt.graph.nodes[k].inputs[0] for k in relu_nodes(gt.graph)]
        bounds = [(nb.lower[u].flatten(1).expand(count, -1), nb.upper[u].flatten(1).expand(count, -1))
                  for u in inputs]
        scale = term_magnitude(gt, nb, spec[:, order])[0].tolist()
        return _Trees(torch.tensor([others[r] for r in order], device=lo.device), lo.expand(count, -1),
                      hi.expand(count, -1), bounds, [(a < 0) & (b > 0) for a, b in bounds], scale, graph_bounds=nb)

    def decide(self, lower: FloatArray, upper: FloatArray, label: int) -> Answer:
        """Branch and bound on the box ``[lower, upper]`` (flat arrays)."""
        start = time.perf_counter()
        deadline = math.inf if self.time_limit is None else start + self.time_limit
        dev = self.device
        trees = self._trees(torch.tensor(lower, dtype=torch.float64, device=dev)[None],
                            torch.tensor(upper, dtype=torch.float64, device=dev)[None], label)
        self.last_nodes = explored = 0
        if trees is None:
            return Answer(Verdict.VERIFIED, margin=self._floor, reason="bab: CROWN at the root")
        if not bool(bounds_valid(trees.bounds).all()):
            return Answer(Verdict.UNKNOWN, reason="bab: the ReLU input bounds overflow (not finite numbers)")
        count = len(trees.target)
        queue = [_Nodes([torch.zeros(count, u.shape[1], dtype=torch.int8, device=dev) for u in trees.unstable],
                        torch.arange(count, device=dev))]
        while queue:
            if time.perf_counter() > deadline or explored >= self.max_nodes:
                self.last_nodes = explored
                return Answer(Verdict.UNKNOWN, timed_out=True, reason=f"bab budget exhausted after {explored} "
                              "sub-domains")
            nodes = _Nodes.cat(queue)
            batch = nodes.take(torch.arange(min(len(nodes), self.batch_nodes)))
            queue = [nodes.take(torch.arange(self.batch_nodes, len(nodes)))] if len(nodes) > self.batch_nodes else []
            explored += len(batch)
            self.last_nodes = explored
            value, corner, scores = self._bound(batch, trees, label)
            cex = self._confirm(corner, label)
            if cex is not None:
                return Answer(Verdict.FALSIFIED, counterexample=cex, reason=f"bab vertex after {explored} sub-domains")
            proven = value[value > 0]
            if proven.numel():
                self._floor = min(self._floor, float(proven.min()))
            keep = (value <= 0).nonzero()[:, 0]
            if not keep.numel():
                continue
            batch, scores = batch.take(keep), [s[keep] for s in scores]
            free = [(p == 0) & u[batch.tree] for p, u in zip(batch.phases, trees.unstable)]
            has_free = (torch.stack([f.any(dim=1) for f in free], dim=1).any(dim=1) if free else
                        torch.zeros(len(batch), dtype=torch.bool, device=dev))
            leaves = (~has_free).nonzero()[:, 0]
            if leaves.numel():
                answer = self._decide_leaves(batch.take(leaves), trees, label, deadline)
                if answer is not None:
                    return answer
            branch = has_free.nonzero()[:, 0]
            if branch.numel():
                queue.append(self._split(batch.take(branch), [s[branch] for s in scores],
                                         [f[branch] for f in free]))
        return Answer(Verdict.VERIFIED, margin=self._floor, reason=f"bab: {explored} sub-domains")

    def _bound(self, nodes: _Nodes, trees: _Trees, label: int,
               steps: int | None = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """alpha/beta-CROWN lower bounds of ``logit_label - logit_target`` on each sub-domain
        (shape ``(N,)``), the vertex of its box minimising each bound, and per-layer (per
        ReLU node) branching scores."""
        n = len(nodes)
        t = nodes.tree
        bounds = []
        for (lb, ub), ph in zip(trees.bounds, nodes.phases):
            lb_n, ub_n = lb[t], ub[t]
            bounds.append((torch.where(ph > 0, lb_n.clamp(min=0), lb_n), torch.where(ph < 0, ub_n.clamp(max=0), ub_n)))
        lo_n, hi_n = trees.lower[t], trees.upper[t]
        spec = torch.zeros(n, 1, self.network.n_classes, dtype=lo_n.dtype, device=lo_n.device)
        spec[:, 0, label] = 1.0
        spec[torch.arange(n), 0, trees.target[t]] = -1.0
        bound_of = self._graph_pass(trees, spec, lo_n, hi_n) if trees.graph_bounds is not None else \
            self._chain_pass(spec, lo_n, hi_n)
        base = [relu_relaxation(lb, ub) for lb, ub in bounds]
        alphas = [r.lower_slope.unsqueeze(1).clone().requires_grad_(True) for r in base]
        signs = [ph.to(lo_n.dtype).unsqueeze(1) for ph in nodes.phases]
        betas = [torch.zeros(n, 1, ph.shape[1], dtype=lo_n.dtype, device=lo_n.device, requires_grad=True)
                 for ph in nodes.phases]
        steps = self.steps if steps is None else steps
        opt = Adam(alphas + betas, lr=self.lr)
        best = torch.full((n, 1), -math.inf, dtype=lo_n.dtype, device=lo_n.device)
        keep: list[Tensor] = []
        first = None
        with torch.enable_grad():
            for step in range(steps + 1):
                relax = [relu_relaxation(lb, ub, alpha=a) for (lb, ub), a in zip(bounds, alphas)]
                terms = [-(b.clamp(min=0)) * s for b, s in zip(betas, signs)]
                bound, value, kept = bound_of(relax, terms)
                best = torch.maximum(best, value.detach())
                if step == 0:
                    keep, first = kept, bound
                if step == steps or not (alphas or betas) or bool((best > 0).all()):  # nothing to optimise: no ReLU
                    break
                opt.ascend(value.sum())
                with torch.no_grad():
                    for a in alphas:
                        a.clamp_(0.0, 1.0)
                    for b in betas:
                        b.clamp_(min=0.0)
        rows = torch.zeros(n, dtype=torch.long, device=lo_n.device)
        corner = minimizing_corner(first, lo_n, hi_n, rows).detach()
        # branching score (BaBSR-like): the negative coefficient on each ReLU output times
        # the chord's intercept, i.e. what the relaxation gap can cost the bound
        scores = [lam.detach()[:, 0].clamp(max=0).abs() * r.upper_intercept + 1e-9 * (r.upper_intercept > 0)
                  for lam, r in zip(keep, base)]
        return best[:, 0], corner, scores

    def _chain_pass(self, spec: Tensor, lo_n: Tensor, hi_n: Tensor):
        """The bound of ``spec`` on each sub-domain, given its relaxations and split terms
        (per layer), with the coefficients of each ReLU output (per layer) — a chain."""
        net = self.tensors
        scale_in = input_scale(lo_n, hi_n)

        def bound_of(relax: list, terms: list[Tensor]) -> tuple[Any, Tensor, list[Tensor]]:
            kept: list[Tensor] = []
            bound = backward(net, spec, net.depth - 1, relax, scale_in, terms, kept)
            return bound, concretize(bound, lo_n, hi_n), kept[::-1]

        return bound_of

    def _graph_pass(self, trees: _Trees, spec: Tensor, lo_n: Tensor, hi_n: Tensor):
        """:meth:`_chain_pass` over a graph (per ReLU node): the box's node bounds, for
        every sub-domain; relaxations and the splits' terms through the graph's backward
        pass."""
        from .milp_graph import relu_nodes

        gt, nb0 = self.graph_tensors, trees.graph_bounds
        relus = relu_nodes(gt.graph)
        n = len(lo_n)

        def each(a: Tensor) -> Tensor:  # the box's tensor, for every sub-domain (a view)
            return a.expand(n, *a.shape[1:])

        nb = NodeBounds([each(a) for a in nb0.lower], [each(a) for a in nb0.upper], [each(a) for a in nb0.scale],
                        {k: each(a) for k, a in nb0.terms.items()}, {}, each(nb0.invalid))
        zero = torch.zeros(n, 1, 1, dtype=lo_n.dtype, device=lo_n.device)
        last = len(gt.graph.nodes) - 1

        def bound_of(relax: list, terms: list[Tensor]) -> tuple[Any, Tensor, list[Tensor]]:
            nb.relax = dict(zip(relus, relax))
            kept: dict[int, Tensor] = {}
            bound = graph_backward(gt, nb, last, spec, split_terms=dict(zip(relus, terms)), keep=kept)
            return bound, concretize_wide(bound, lo_n, hi_n), [kept.get(k, zero) for k in relus]

        return bound_of

    @staticmethod
    def _split(nodes: _Nodes, scores: list[Tensor], free: list[Tensor]) -> _Nodes:
        """Two children per node: its free unstable ReLU with the largest score, fixed
        active and inactive."""
        flat = torch.cat([torch.where(f, s, torch.full_like(s, -1.0)) for s, f in zip(scores, free)], dim=1)
        choice = flat.argmax(dim=1)
        offsets = np.cumsum([0] + [p.shape[1] for p in nodes.phases])
        children = []
        for sign in (1, -1):
            phases = [p.clone() for p in nodes.phases]
            for layer, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
                idx = ((choice >= a) & (choice < b)).nonzero()[:, 0]
                phases[layer][idx, choice[idx] - int(a)] = sign
            children.append(_Nodes(phases, nodes.tree))
        return _Nodes.cat(children)

    def _confirm(self, points: Tensor, label: int) -> FloatArray | None:
        pts = points.cpu().numpy()
        margins = self.network.margins(pts, label)
        bad = np.flatnonzero(margins <= 0)
        return pts[bad[0]].copy() if bad.size else None

    def _decide_leaves(self, leaves: _Nodes, trees: _Trees, label: int, deadline: float) -> Answer | None:
        """Every ReLU fixed: the relaxation is exact and only the multipliers of the split
        constraints are left to optimise (batched); the LP decides what they cannot prove.
        ``None`` if every leaf is proven."""
        value, corner, _ = self._bound(leaves, trees, label, steps=self.leaf_steps)
        cex = self._confirm(corner, label)
        if cex is not None:
            return Answer(Verdict.FALSIFIED, counterexample=cex, reason="bab: leaf vertex")
        if bool((value > 0).any()):
            self._floor = min(self._floor, float(value[value > 0].min()))
        for i in (value <= 0).nonzero()[:, 0].tolist():
            answer = self._leaf_lp(leaves.take(torch.tensor([i])), trees, label, deadline)
            if answer.verdict is not Verdict.VERIFIED:
                return answer
        return None

    def _leaf_lp(self, node: _Nodes, trees: _Trees, label: int, deadline: float) -> Answer:
        """The margin is affine on the leaf's polytope: decide by LP (the tree's exact
        encoding with every binary fixed, re-solved per leaf)."""
        from .milp_encoding import encode, make_solver, solve  # pyomo/HiGHS: only when a leaf needs an LP
        from .milp_graph import GraphBoxBounds, encode_graph

        t = int(node.tree[0])
        lower, upper = trees.lower[t].cpu().numpy(), trees.upper[t].cpu().numpy()
        if t not in trees.leaf_lps:
            if trees.graph_bounds is not None:
                box = GraphBoxBounds.of(self.network, trees.graph_bounds)
                enc = encode_graph(self.network, lower, upper, box)
            else:
                bounds = [(lb[t].cpu().numpy(), ub[t].cpu().numpy()) for lb, ub in trees.bounds]
                enc = encode(self.network, lower, upper, bounds)
            trees.leaf_lps[t] = [enc, make_solver(None, scale=trees.scale[t])]
        enc, opt = trees.leaf_lps[t]
        j = int(trees.target[t])
        enc.fix_phases([p[0].cpu().numpy() for p in node.phases])
        remaining = deadline - time.perf_counter()
        opt.config.time_limit = None if math.isinf(remaining) else max(remaining, 0.01)
        res = solve(opt, enc, enc.logits[label] - enc.logits[j])
        # the LP's answer is a proof only beyond the solver error model's margin
        needed = solver_proof_margin(trees.scale[t])
        if solver_trusted(trees.scale[t]) if res.infeasible else (res.bound is not None and res.bound > needed):
            if res.bound is not None and not res.infeasible:
                self._floor = min(self._floor, res.bound - needed)
            return Answer(Verdict.VERIFIED, reason="bab: leaf LP")
        if res.x is not None and res.value is not None and res.value <= 0:
            x = np.clip(res.x, lower, upper)
            if self.network.margins(x, label)[0] <= 0:
                return Answer(Verdict.FALSIFIED, counterexample=x, reason="bab: leaf LP optimum")
        return Answer(Verdict.UNKNOWN, margin=res.bound, timed_out=res.timed_out,
                      reason=f"bab: leaf LP undecided ({res.status}, bound {res.bound})")
