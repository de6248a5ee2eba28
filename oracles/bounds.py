"""Linear bound propagation over the IR, built from three parts:

* **relaxation** — :func:`relu_relaxation`: linear lower and upper bounds of each ReLU
  given bounds ``l <= z <= u`` of its input (the triangle relaxation's upper line, and a
  lower line ``alpha * z`` with ``alpha`` in [0, 1]);
* **propagation** — :func:`backward`: a linear lower bound of ``A @ z_k`` as a linear
  function of the input, valid on the whole box (CROWN's backward pass);
* **concretisation** — :func:`concretize`: its minimum over the box.

Everything is computed in float64 and batched over boxes (leading dimension ``B``).
Rounding: every bound is moved outward by ``REL_SLACK * magnitude + ABS_SLACK``, where
``magnitude`` is the sum of the absolute values of the terms that were added up. This
exceeds the float64 rounding error of these sums (relative error ~1e-16 per operation,
times the number of terms) by several orders of magnitude on networks of ordinary size,
so a bound reported here holds for the exact real-valued network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from parallelepipedonn.network import Network

REL_SLACK = 1e-9
ABS_SLACK = 1e-12

Tensor = torch.Tensor


@dataclass(frozen=True)
class NetworkTensors:
    """The IR's affine maps as tensors on one device (float64)."""

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    abs_biases: tuple[Tensor, ...]

    @classmethod
    def of(cls, network: Network, device: str | torch.device = "cpu") -> NetworkTensors:
        w = tuple(torch.tensor(a.weight, dtype=torch.float64, device=device) for a in network.affines)
        b = tuple(torch.tensor(a.bias, dtype=torch.float64, device=device) for a in network.affines)
        return cls(w, b, tuple(x.abs() for x in b))

    @property
    def depth(self) -> int:
        return len(self.weights)


@dataclass(frozen=True)
class ReluRelaxation:
    """``alpha * z <= relu(z) <= upper_slope * z + upper_intercept`` for ``l <= z <= u``.

    ``lower_slope`` has shape ``(B, n)`` (shared by all specification rows) or
    ``(B, m, n)`` (one per row, as optimised by alpha-CROWN).
    """

    lower_slope: Tensor
    upper_slope: Tensor
    upper_intercept: Tensor


def relu_relaxation(lower: Tensor, upper: Tensor, alpha: Tensor | None = None) -> ReluRelaxation:
    """Relaxation of ``relu`` on ``[lower, upper]`` (shape ``(B, n)``).

    Stable neurons are exact. For unstable ones (``l < 0 < u``) the upper line is the
    chord ``u / (u - l) * (z - l)``; the lower slope is ``alpha`` (clamped to [0, 1]) if
    given, else CROWN's adaptive choice (1 if ``u >= -l`` else 0).
    """
    active = lower >= 0
    unstable = (lower < 0) & (upper > 0)
    active_f = active.to(lower.dtype)
    denom = torch.where(unstable, upper - lower, torch.ones_like(lower))
    slope = torch.where(unstable, upper / denom, active_f)
    intercept = torch.where(unstable, -slope * lower, torch.zeros_like(lower))
    if alpha is None:
        lower_slope = torch.where(unstable, (upper >= -lower).to(lower.dtype), active_f)
    else:
        if alpha.dim() == 3:
            unstable, active_f = unstable.unsqueeze(1), active_f.unsqueeze(1)
        lower_slope = torch.where(unstable, alpha.clamp(0.0, 1.0), active_f)
    return ReluRelaxation(lower_slope, slope, intercept)


@dataclass(frozen=True)
class LinearBound:
    """``A @ z_k >= coef @ x + const`` on the box; ``const_abs`` is the magnitude of the
    terms summed into ``const`` (for the rounding slack)."""

    coef: Tensor  # (B, m, n_input)
    const: Tensor  # (B, m)
    const_abs: Tensor  # (B, m)


def backward(net: NetworkTensors, spec: Tensor, layer: int, relaxations: Sequence[ReluRelaxation],
             split_terms: Sequence[Tensor | None] | None = None,
             keep_lambdas: list[Tensor] | None = None) -> LinearBound:
    """CROWN's backward pass: a linear lower bound of ``spec @ z_layer`` (``spec`` of shape
    ``(B, m, n_layer)``), where ``z_i`` is the output of the ``i``-th affine map, valid for
    all inputs of the box whose ReLU input bounds gave ``relaxations[i]`` (``i < layer``).

    ``split_terms[i]`` (optional, shape ``(B, m, n_i)``) is added to the coefficients of
    ``z_i``: with ``-beta * s`` (``beta >= 0``, ``s = +1`` for a neuron split active,
    ``-1`` inactive) the bound stays valid on the sub-domain where the splits hold
    (beta-CROWN's Lagrangian terms). ``keep_lambdas`` collects the coefficients of each
    ReLU output ``a_i`` (deepest layer first), for branching heuristics.
    """
    lam = spec
    bsz, m = spec.shape[0], spec.shape[1]
    const = spec.new_zeros(bsz, m)
    const_abs = spec.new_zeros(bsz, m)
    for i in range(layer, 0, -1):
        const = const + lam @ net.biases[i]
        const_abs = const_abs + lam.abs() @ net.abs_biases[i]
        lam_a = lam @ net.weights[i]
        if keep_lambdas is not None:
            keep_lambdas.append(lam_a)
        r = relaxations[i - 1]
        low = r.lower_slope if r.lower_slope.dim() == 3 else r.lower_slope.unsqueeze(1)
        negative = lam_a < 0
        lam = lam_a * torch.where(negative, r.upper_slope.unsqueeze(1), low)
        shift = (lam_a.clamp(max=0) @ r.upper_intercept.unsqueeze(-1)).squeeze(-1)  # <= 0
        const = const + shift
        const_abs = const_abs - shift
        if split_terms is not None and split_terms[i - 1] is not None:
            lam = lam + split_terms[i - 1]
    const = const + lam @ net.biases[0]
    const_abs = const_abs + lam.abs() @ net.abs_biases[0]
    return LinearBound(lam @ net.weights[0], const, const_abs)


def minimizing_corner(bound: LinearBound, lower: Tensor, upper: Tensor, row: Tensor) -> Tensor:
    """The vertex of each box that minimises ``coef[b, row[b]] @ x`` (a counterexample
    candidate), shape ``(B, n)``."""
    coef = bound.coef[torch.arange(bound.coef.shape[0]), row]
    return torch.where(coef > 0, lower, upper)


def concretize(bound: LinearBound, lower: Tensor, upper: Tensor) -> Tensor:
    """Sound lower bound of ``coef @ x + const`` over the box (shape ``(B, m)``), including
    the outward rounding slack."""
    coef = bound.coef
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    scale = torch.maximum(lower.abs(), upper.abs())
    magnitude = coef.abs()
    # min over the box of coef @ x is coef @ center - |coef| @ radius; the rounding of
    # center and radius is covered by the slack, which scales with |coef| @ max(|l|, |u|)
    value = (coef @ center.unsqueeze(-1) - magnitude @ radius.unsqueeze(-1)).squeeze(-1) + bound.const
    magnitude = (magnitude @ scale.unsqueeze(-1)).squeeze(-1) + bound.const_abs
    return value - (REL_SLACK * magnitude + ABS_SLACK)


def _interval_affine(w: Tensor, b: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Exact (up to the rounding slack) bounds of ``w @ x + b`` over a box."""
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    lo = lower @ wp.T + upper @ wn.T + b
    hi = upper @ wp.T + lower @ wn.T + b
    scale = torch.maximum(lower.abs(), upper.abs())
    slack = REL_SLACK * (scale @ w.abs().T + b.abs()) + ABS_SLACK
    return lo - slack, hi + slack


def intermediate_bounds(net: NetworkTensors, lower: Tensor, upper: Tensor,
                        method: str = "crown") -> list[tuple[Tensor, Tensor]]:
    """Bounds ``(l_i, u_i)`` of the input of every ReLU (``i = 0 .. depth-2``).

    The first layer's are exact interval bounds; deeper ones are CROWN bounds intersected
    with interval (IBP) bounds (``method="crown"``), or IBP bounds alone (``"ibp"``).
    """
    bounds = [_interval_affine(net.weights[0], net.biases[0], lower, upper)]
    relaxations = [relu_relaxation(*bounds[0])]
    for k in range(1, net.depth - 1):
        l_prev, u_prev = bounds[-1]
        l_ibp, u_ibp = _interval_affine(net.weights[k], net.biases[k], l_prev.clamp(min=0), u_prev.clamp(min=0))
        l_k, u_k = l_ibp, u_ibp
        # CROWN only for the neurons that interval bounds leave unstable in some box
        idx = ((l_ibp < 0) & (u_ibp > 0)).any(dim=0).nonzero()[:, 0]
        if method == "crown" and idx.numel():
            n, m = net.weights[k].shape[0], idx.numel()
            eye = torch.eye(n, dtype=lower.dtype, device=lower.device)[idx]
            spec = torch.cat([eye, -eye]).expand(lower.shape[0], 2 * m, n)
            vals = concretize(backward(net, spec, k, relaxations), lower, upper)
            l_k, u_k = l_ibp.clone(), u_ibp.clone()
            l_k[:, idx] = torch.maximum(vals[:, :m], l_ibp[:, idx])
            u_k[:, idx] = torch.minimum(-vals[:, m:], u_ibp[:, idx])
        bounds.append((l_k, u_k))
        relaxations.append(relu_relaxation(l_k, u_k))
    return bounds


def gradient_bounds(net: NetworkTensors, bounds: Sequence[tuple[Tensor, Tensor]], row: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds of the input gradient of ``row @ logits`` over every activation pattern the
    ReLU input bounds allow (stable neurons fixed, unstable ones 0 or 1). ``bounds`` are
    ``(1, n_i)`` tensors for one box; returns two ``(n_input,)`` tensors."""
    g_lo = g_hi = row @ net.weights[-1]
    for i in range(net.depth - 2, -1, -1):
        lb, ub = bounds[i][0][0], bounds[i][1][0]
        active, unstable = lb >= 0, (lb < 0) & (ub > 0)
        g_lo = torch.where(active, g_lo, torch.where(unstable, g_lo.clamp(max=0), torch.zeros_like(g_lo)))
        g_hi = torch.where(active, g_hi, torch.where(unstable, g_hi.clamp(min=0), torch.zeros_like(g_hi)))
        w = net.weights[i]
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        g_lo, g_hi = g_lo @ wp + g_hi @ wn, g_hi @ wp + g_lo @ wn
    return g_lo, g_hi


def fix_monotone_inputs(net: NetworkTensors, lower: Tensor, upper: Tensor, row: Tensor,
                        max_rounds: int = 20) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """Shrink the box ``[lower, upper]`` (``(1, n)``) without changing the minimum of
    ``row @ logits`` over it.

    Where the gradient bounds show that the function only increases (decreases) along
    input ``i`` on the whole box — it is continuous and piecewise linear, and every piece
    a segment parallel to axis ``i`` crosses has a slope of that sign — its minimum has
    ``x_i`` at the lower (upper) end, so the coordinate is fixed there. Fixing shrinks the
    box, which can make more neurons stable and more inputs monotone: repeated until
    nothing changes. Returns the new box and its ReLU input bounds.
    """
    lo, hi, bounds, _ = shrink_monotone(net, lower, upper, row, None, max_rounds)
    return lo, hi, bounds


def shrink_monotone(net: NetworkTensors, lower: Tensor, upper: Tensor, row: Tensor, anchor: Tensor | None,
                    max_rounds: int = 20) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]], Tensor]:
    """:func:`fix_monotone_inputs` with an ``anchor`` point of the box: the end of a
    monotone coordinate's range on the side where the function is larger moves to the
    anchor's coordinate (to the other end when ``anchor`` is ``None``). Moving a point of
    the box along such a coordinate towards the smaller side lowers the function and
    does not move it further from the anchor, so every sublevel set's point nearest to
    the anchor (in any norm that is monotone in each coordinate's distance) has a
    counterpart in the shrunk box at no greater distance. Also returns the direction of
    each coordinate found monotone (+1 increasing, -1 decreasing, 0 neither)."""
    lo, hi = lower, upper
    direction = torch.zeros_like(lower[0], dtype=torch.int8)
    bounds = intermediate_bounds(net, lo, hi)
    for _ in range(max_rounds):
        g_lo, g_hi = gradient_bounds(net, bounds, row)
        up_end = hi if anchor is None else torch.minimum(hi, torch.maximum(lo, anchor))
        low_end = lo if anchor is None else torch.maximum(lo, torch.minimum(hi, anchor))
        inc = (g_lo > REL_SLACK) & (hi > lo)[0]  # increasing along i: minimum towards the lower end
        dec = (g_hi < -REL_SLACK) & (hi > lo)[0]
        new_lo, new_hi = torch.where(dec, up_end, lo), torch.where(inc, low_end, hi)
        direction = torch.where(inc, torch.ones_like(direction), torch.where(dec, -torch.ones_like(direction), direction))
        if torch.equal(new_lo, lo) and torch.equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
        bounds = intermediate_bounds(net, lo, hi)
    return lo, hi, bounds, direction


class Adam:
    """A minimal Adam optimiser (gradient *ascent*) on a list of tensors.

    torch.optim.Adam would do, but constructing one imports torch's compiler stack
    (seconds on first use), which dominates a sub-second verification.
    """

    def __init__(self, params: Sequence[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def ascend(self, objective: Tensor) -> None:
        """One step that increases ``objective`` (a scalar)."""
        grads = torch.autograd.grad(objective, self.params, allow_unused=True)
        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, g, m, v in zip(self.params, grads, self.m, self.v):
                if g is None:
                    continue
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = self.lr * (m / (1 - b1 ** self.t)) / ((v / (1 - b2 ** self.t)).sqrt() + self.eps)
                p.add_(step)


def margin_spec(n_classes: int, label: int, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Rows ``e_label - e_j`` for every ``j != label``: shape ``(batch, n_classes-1, n_classes)``."""
    others = [j for j in range(n_classes) if j != label]
    spec = torch.zeros(n_classes - 1, n_classes, dtype=dtype, device=device)
    spec[:, label] = 1.0
    spec[torch.arange(n_classes - 1), others] = -1.0
    return spec.expand(batch, n_classes - 1, n_classes)
