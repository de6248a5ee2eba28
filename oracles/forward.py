"""Forward-mode linear bounds of a chain's ReLU inputs, for networks with few inputs
(:func:`~oracles.bounds.intermediate_bounds`' ``method="forward"``).

Each pre-activation ``z_k`` is kept between two linear functions of the input,
``AL x + cL - eL <= z_k(x) <= AU x + cU + eU`` on the box (symbolic intervals, as ReluVal
and Neurify propagate them), pushed through a ReLU by CROWN's relaxation of it (the lower
line ``alpha z`` with ``alpha`` 0 or 1, the chord above) and through the next affine map by
the signs of its weights. Its cost per box is that of the network's products with
``n_input + 2`` columns, where CROWN's backward passes have one row per unstable neuron
through every earlier layer: on tllverifybench's 2-input nets (one box, one thread, with
CROWN's bounds on the layers at most :data:`CROWN_WIDTH` wide) 0.03 s against 0.85 s
(N=40, 3200 wide) and 0.06 against 4.3 s (N=56, 6272 wide). Its bounds of wide layers
are looser than CROWN's, which input splitting makes up by more, far cheaper, sub-boxes.
Every layer's bounds are intersected with interval bounds. The backward passes of the
narrow layers end at the first layer below them wider than :data:`PASS_WIDTH`, on its
forward-mode bounds (:class:`~oracles.enclosure.Enclosure`, whose errors ``eL``, ``eU`` make
them hold in exact arithmetic), instead of crossing the widest layers.

Rounding: ``eL`` and ``eU`` (``>= 0``) carry a proven bound of every rounding so far (from
the first layer on in float32, whose weights are the IR's rounded: ``rel`` times the
layer's terms, with the magnitudes inflated for weights below the normal range). The
coefficients of the next layer are ``W+ BL + W- BU = (W (BL + BU) + |W| (BL - BU)) / 2``
(and the same with the roles swapped for the upper one: two products shared), computed
sums of at most ``n + 2`` terms, so their value at any point of the box is within
``rel`` (:class:`~oracles.bounds.NetworkTensors`' relative slack, ``4 gamma_n`` of the
widest sums) times the terms ``|W| (TL + TU) + |b|``, ``T = |B| s + |d|`` with ``s`` the
bound of ``|x|``; a ReLU's chord multiplies by a rounded slope (within ``rel`` of
``s (|AU| s + |cU| + eU) + t``, charged where the relaxation is not exact); products below
the normal range are charged ``tiny (sum s + 1)`` per step; the minimum over the box
``A c - |A| r + c - e`` is moved down by ``rel`` times its terms, ``tiny (sum s + 1)`` and
``ABS_SLACK``. A non-finite number anywhere poisons the box (``(-inf, inf)``).
"""

from __future__ import annotations

import torch

from parallelepipedonn.tolerances import ABS_SLACK

from .bounds import (
    NetworkTensors,
    ReluRelaxation,
    _intersect,
    _interval_affine,
    _poison,
    center_image,
    input_scale,
    relu_relaxation,
    signed_bounds,
)
from .enclosure import Enclosure

Tensor = torch.Tensor

#: Coefficients ``(width, boxes, n_input)`` per chunk of boxes of :func:`forward_bounds`.
CHUNK_ELEMENTS = 2**22
#: Layers at most this wide get CROWN's bounds (backward passes, one row per neuron and side)
#: for the neurons the forward bounds leave unstable: cheap where the layer is narrow, and
#: far tighter deep in a net. 128 rather than 64 (tllverifybench, 60 s cap, two runs on
#: different days, 64 and 128 at once on the two cores): N=40 instance 2 15.4 -> 10.7 s and
#: 12.8 -> 8.3 s, N=48 instance 2 16.3 -> 11.8 and 13.7 -> 8.6, N=56 instance 0 34.0 -> 29.6
#: and 27.8 -> 23.7, the other 29 within 10% (the category 175 -> 162 s summed); ACAS Xu's
#: layers are 50 wide either way.
CROWN_WIDTH = 128
#: Those passes cross the layers at most this wide below their layer, and end at the first
#: wider one's forward-mode bounds (:class:`~oracles.enclosure.Enclosure`) instead of crossing it:
#: on tllverifybench's nets most of a pass's work is in the widest layers, where the
#: forward-mode bounds lose little (measured, one thread: N = 48 instance 2 proved in 19 s
#: instead of 46 s, with 65,000 bounded neurons against 58,000; 256 wide: 32 s, 185,000;
#: 1,200 wide: 25 s; N = 56 instance 0 and N = 64 instances 0 and 3, past 60 s before, in
#: 34, 22 and 26 s).
PASS_WIDTH = 600


def _times(net: NetworkTensors, k: int, x: Tensor, absolute: bool = False) -> Tensor:
    """``W_k @ x`` (``absolute``: ``|W_k| @ x``, the exact magnitudes of the dtype's weights,
    not the inflated ones of the rounding terms), ``x`` of shape ``(n_in, cols)``."""
    sp = net.sparse[k] if net.sparse else None
    if sp is not None:  # (its abs_w is exactly |W|: it is built only where not inflated)
        return (sp.abs_w if absolute else sp.w) @ x
    w = net.weights[k]
    return (w.abs() if absolute else w) @ x


def _charge_times(net: NetworkTensors, k: int, x: Tensor) -> Tensor:
    """``|W_k| @ x`` with the rounding terms' magnitudes (inflated where float32 weights fall
    below the normal range), ``x`` of shape ``(n_in, cols)``."""
    sp = net.sparse[k] if net.sparse else None
    return sp.abs_w @ x if sp is not None else net.abs_weights[k] @ x


class _Symbolic:
    """The linear bounds of one layer's pre-activations over boxes, neuron-major:
    coefficients ``(n, n_input, B)``, constants and errors ``(n, B)``."""

    def __init__(self, net: NetworkTensors, lower: Tensor, upper: Tensor) -> None:
        self.net = net
        self.center, self.radius = ((upper + lower) / 2).T, ((upper - lower) / 2).T  # (n_input, B)
        self.scale = torch.maximum(lower.abs(), upper.abs()).T
        # products below the normal range: their absolute errors, times |x| (and the constant 1)
        self.tiny = net.tiny * (self.scale.sum(0) + 1)  # (B,)
        w, b = net.weights[0], net.biases[0]
        bsz = lower.shape[0]
        coef = w.unsqueeze(-1).expand(*w.shape, bsz)  # the weights themselves
        const = b.unsqueeze(1).expand(b.shape[0], bsz)
        if w.dtype == torch.float64:  # the IR's own numbers: exact
            err = torch.zeros_like(const)
        else:  # the IR's rounded to the dtype: within rel of the terms (the magnitudes inflated
            # where weights fall below the normal range, whose rounding error is absolute)
            err = net.rel * (_charge_times(net, 0, self.scale) + net.abs_biases[0].unsqueeze(1))
        self.al, self.cl, self.el = coef, const, err
        self.au, self.cu, self.eu = coef, const, err

    def _terms(self, coef: Tensor, const: Tensor) -> Tensor:
        """``|A| s + |c|`` per neuron and box: ``(n, B)``."""
        return (coef.abs() * self.scale).sum(1) + const.abs()

    def enclosure(self) -> Enclosure:
        """These bounds, as the enclosure a backward pass may end at."""
        terms = torch.maximum(self._terms(self.al, self.cl) + self.el, self._terms(self.au, self.cu) + self.eu)
        return Enclosure(self.al, self.cl, self.el, self.au, self.cu, self.eu, terms.T)

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Proven lower and upper bounds of the pre-activations over each box, ``(B, n)``."""
        out = []
        for coef, const, err, sign in ((self.al, self.cl, self.el, -1.0), (self.au, self.cu, self.eu, 1.0)):
            absolute = coef.abs()
            value = (coef * self.center).sum(1) + sign * (absolute * self.radius).sum(1) + const + sign * err
            slack = self.net.rel * ((absolute * self.scale).sum(1) + const.abs() + err) + self.tiny + ABS_SLACK
            out.append((value + sign * slack).T.contiguous())  # (strided operands slow every later op)
        return out[0], out[1]

    def through(self, k: int, r: ReluRelaxation) -> None:
        """Past the ReLU relaxed by ``r`` (of these pre-activations, per box ``(B, n)``) and
        the affine map ``k``: the bounds of ``z_k``."""
        net = self.net
        n, n_in, bsz = self.al.shape
        alpha, slope, icpt, exact = (t.T.contiguous()
                                     for t in (r.lower_slope, r.upper_slope, r.upper_intercept, r.exact))
        # the lower line alpha z: alpha 0 or 1 (CROWN's choice, or a stable neuron's) is exact
        inexact_low = (alpha != 0) & (alpha != 1)
        bl, dl, fl = self.al * alpha.unsqueeze(1), self.cl * alpha, self.el * alpha
        if bool(inexact_low.any()):
            fl = fl + torch.where(inexact_low, net.rel * alpha * (self._terms(self.al, self.cl) + self.el), 0.0)
        bu, du, fu = self.au * slope.unsqueeze(1), self.cu * slope + icpt, self.eu * slope
        charge = net.rel * (slope * (self._terms(self.au, self.cu) + self.eu) + icpt) + self.tiny
        fu = fu + torch.where(exact, 0.0, charge)
        # W+ BL + W- BU and W+ BU + W- BL, from W (BL + BU) and |W| (BL - BU)
        flat = torch.cat([(bl + bu).reshape(n, -1), dl + du, fl - fu], dim=1)
        diff = torch.cat([(bl - bu).reshape(n, -1), dl - du, fl + fu], dim=1)
        signed, magnitude = _times(net, k, flat), _times(net, k, diff, absolute=True)
        split = [n_in * bsz, bsz, bsz]
        w_sum, w_d, w_f = signed.split(split, dim=1)
        a_diff, a_d, a_f = magnitude.split(split, dim=1)
        m = signed.shape[0]
        w_sum, a_diff = w_sum.reshape(m, n_in, bsz), a_diff.reshape(m, n_in, bsz)
        b = net.biases[k].unsqueeze(1)
        # the rounding of these sums, of the halvings and of the products below the normal range
        terms = self._terms(bl, dl) + self._terms(bu, du) + fl + fu
        slack = net.rel * (_charge_times(net, k, terms) + net.abs_biases[k].unsqueeze(1)) + self.tiny
        self.al, self.cl = (w_sum + a_diff) / 2, (w_d + a_d) / 2 + b
        self.au, self.cu = (w_sum - a_diff) / 2, (w_d - a_d) / 2 + b
        # W+ fL + |W-| fU = (|W| (fL + fU) + W (fL - fU)) / 2, and the other way round
        self.el, self.eu = (a_f + w_f) / 2 + slack, (a_f - w_f) / 2 + slack


def forward_bounds(net: NetworkTensors, lower: Tensor, upper: Tensor) \
        -> tuple[list[tuple[Tensor, Tensor]], list[ReluRelaxation]]:
    """Bounds ``(l_i, u_i)`` of the input of every ReLU (``i = 0 .. depth-2``) over each box
    (``(B, n_input)``), and their :func:`~oracles.bounds.relu_relaxation`: the first layer's
    exact interval bounds, deeper ones forward-mode linear bounds intersected with interval
    bounds; a box whose bounds are not finite gets ``(-inf, inf)`` from that layer on. In
    chunks of boxes of :data:`CHUNK_ELEMENTS` coefficients."""
    if net.depth < 2:
        return [], []
    width = max(w.shape[0] for w in net.weights[:-1])
    chunk = max(1, CHUNK_ELEMENTS // (width * lower.shape[1]))
    parts = [_forward_chunk(net, lower[s:s + chunk], upper[s:s + chunk]) for s in range(0, lower.shape[0], chunk)]
    if len(parts) == 1:
        return parts[0]
    bounds = [(torch.cat([p[0][i][0] for p in parts]), torch.cat([p[0][i][1] for p in parts]))
              for i in range(len(parts[0][0]))]
    return bounds, [relu_relaxation(*b) for b in bounds]


def _forward_chunk(net: NetworkTensors, lower: Tensor, upper: Tensor) \
        -> tuple[list[tuple[Tensor, Tensor]], list[ReluRelaxation]]:
    bad = torch.zeros(lower.shape[0], dtype=torch.bool, device=lower.device)
    first, bad = _poison(_interval_affine(net, 0, lower, upper), bad)
    bounds, relaxations = [first], [relu_relaxation(*first)]
    sym = _Symbolic(net, lower, upper)
    terms: list[Tensor | None] = [None] * net.depth  # the backward passes' cache, for these relaxations
    scale_in, image = input_scale(lower, upper), center_image(net, lower, upper)
    enclosures: dict[int, Enclosure] = {}
    for k in range(1, net.depth - 1):
        l_prev, u_prev = bounds[-1]
        l_ibp, u_ibp = _interval_affine(net, k, l_prev.clamp(min=0), u_prev.clamp(min=0))
        sym.through(k, relaxations[-1])
        if net.weights[k].shape[0] <= PASS_WIDTH < net.weights[k - 1].shape[0]:  # where a pass from above may end
            enclosures[k] = sym.enclosure()
        l_fwd, u_fwd = sym.bounds()
        # torch.maximum and minimum propagate NaN: a NaN bound poisons the box
        l_k, u_k = torch.maximum(l_ibp, l_fwd), torch.minimum(u_ibp, u_fwd)
        if l_k.shape[1] <= CROWN_WIDTH:  # CROWN's own bounds of the neurons still unstable
            box, neuron = ((l_k < 0) & (u_k > 0) & ~bad.unsqueeze(1)).nonzero(as_tuple=True)
            if box.numel():
                side = torch.tensor([[1.0, -1.0]], dtype=lower.dtype, device=lower.device).expand(box.numel(), 2)
                to = _pass_end(net, k)
                _intersect(l_k, u_k, box, neuron, side, signed_bounds(
                    net, k, box, neuron, side, relaxations, scale_in, lower, upper, terms, image, to=to,
                    enclosure=enclosures[to] if to else None))
        layer, bad = _poison((l_k, u_k), bad)
        bounds.append(layer)
        relaxations.append(relu_relaxation(*layer))
    return bounds, relaxations


def _pass_end(net: NetworkTensors, k: int) -> int:
    """The layer a backward pass from ``z_k`` ends at: it crosses layers down while they are
    at most :data:`PASS_WIDTH` wide, and ends at ``z_j`` when the next one down (``z_(j-1)``)
    is wider; ``0``: CROWN's whole pass, down to the input (where it reaches it, and where
    the layer just below ``z_k`` is wider: ending at ``z_k`` would give its forward bounds back)."""
    j = k
    while j > 0 and net.weights[j - 1].shape[0] <= PASS_WIDTH:
        j -= 1
    return 0 if j == k else j


__all__ = ["forward_bounds"]
