"""Linear bound propagation over the IR, built from three parts:

* **relaxation** — :func:`relu_relaxation`: linear lower and upper bounds of each ReLU
  given bounds ``l <= z <= u`` of its input (the triangle relaxation's upper line, and a
  lower line ``alpha * z`` with ``alpha`` in [0, 1]);
* **propagation** — :func:`backward`: a linear lower bound of ``A @ z_k`` as a linear
  function of the input, valid on the whole box (CROWN's backward pass);
* **concretisation** — :func:`concretize`: its minimum over the box.

Everything is batched over boxes (leading dimension ``B``), in float64 by default or in
float32 (:class:`NetworkTensors`' ``dtype``).

Rounding (the error model of :mod:`parallelepipedonn.tolerances`): the backward pass is
an exact chain of inequalities between the *computed* coefficients ``Lambda_i`` of
consecutive layers, each off by the rounding error of one product ``Lambda_i W_i`` (and
of the products with the ReLU slopes), which is at most ``gamma_n |Lambda_i| |W_i| |a|``.
So the pass carries, per row, the magnitude ``sum_i |Lambda_i| (|W_i| s_(i-1) + |b_i|)``,
``s_(i-1)`` a proven bound of ``|z_(i-1)|`` (from the intermediate bounds; 0 for dead
neurons, ``max(|l|, |u|)`` of the box for the input), and every bound is moved outward by
:func:`~parallelepipedonn.tolerances.relative_slack` times that magnitude, plus the
underflow term and :data:`~parallelepipedonn.tolerances.ABS_SLACK`. The magnitude is that
of the terms, not of the result: a coefficient out of a cancelling sum (huge weights
whose combination is small) keeps the rounding error of its terms. The chord of an
unstable ReLU has its intercept rounded up so that it lies above the ReLU in exact
arithmetic. Non-finite numbers (overflow, ``inf - inf``) in any intermediate bound make
the box's bounds ``-inf``; nothing non-finite is ever reported as a bound.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.tolerances import ABS_SLACK, smallest_normal, smallest_subnormal, unit_roundoff

from .enclosure import Enclosure, through_enclosure
from .network_tensors import NetworkTensors
from .rows import batched_mv, per_box_rows, rows_dot
from .sparse_weights import times_weight, weight_times

Tensor = torch.Tensor


class BoundsTimedOut(OracleError):
    """The deadline passed while bounds were being computed (a pass given one looks at it
    between layers and between chunks of rows): nothing is proven; the oracle answers
    UNKNOWN, timed out."""


def check_deadline(deadline: float) -> None:
    """Raise :class:`BoundsTimedOut` if ``deadline`` (:func:`time.perf_counter`) has passed."""
    if deadline != math.inf and time.perf_counter() > deadline:
        raise BoundsTimedOut("the time limit was reached while the bounds were computed")


def nonfinite_rows(*tensors: Tensor, dim: int | None = None) -> Tensor:
    """Per box (the leading axis; with ``dim``, per entry of the other axes): does any of
    ``tensors`` hold a non-finite number there? ``x - x`` is an exact zero for a finite
    ``x`` and NaN for an infinite or NaN one; a sum of exact zeros is zero and a sum with
    a NaN term is NaN: one subtraction and one sum per tensor (``isfinite`` is several
    passes)."""
    total = None
    for t in tensors:
        z = (t - t).sum(dim=dim) if dim is not None else (t - t).flatten(1).sum(dim=1)
        total = z if total is None else total + z
    assert total is not None
    return torch.isnan(total)


def input_scale(lower: Tensor, upper: Tensor) -> Tensor:
    """A bound of ``|x|`` on the box: ``max(|lower|, |upper|)``."""
    return torch.maximum(lower.abs(), upper.abs())


@dataclass(frozen=True)
class ReluRelaxation:
    """``alpha * z <= relu(z) <= upper_slope * z + upper_intercept`` for ``l <= z <= u``
    (in exact arithmetic on these float numbers).

    ``lower_slope`` has shape ``(B, n)`` (shared by all specification rows) or
    ``(B, m, n)`` (one per row, as optimised by alpha-CROWN). ``scale`` (``(B, n)``)
    bounds ``|z|`` where the ReLU is not dead (0 where it is): the magnitude that the
    rounding bound of the products with this layer's coefficients needs. ``invalid``
    (``(B,)``) marks boxes whose bounds are not finite numbers: they prove nothing.
    """

    lower_slope: Tensor
    upper_slope: Tensor
    upper_intercept: Tensor
    scale: Tensor
    invalid: Tensor

    @functools.cached_property
    def exact(self) -> Tensor:
        """``(B, n)``: the neurons relaxed to ``relu(z) = s z`` with one slope ``s`` exactly 0
        or 1 for every row and no intercept (every stable neuron): their products round nothing."""
        lo, up = self.lower_slope, self.upper_slope
        same = (lo == up.unsqueeze(1)).all(dim=1) if lo.dim() == 3 else lo == up
        return same & (self.upper_intercept == 0) & ((up == 0) | (up == 1))

    @functools.cached_property
    def charged(self) -> Tensor:
        """``scale`` where a product with the neuron's slope rounds (0 where :attr:`exact`):
        the magnitude the products' rounding is charged on."""
        return torch.where(self.exact, torch.zeros_like(self.scale), self.scale)


def relu_relaxation(lower: Tensor, upper: Tensor, alpha: Tensor | None = None) -> ReluRelaxation:
    """Relaxation of ``relu`` on ``[lower, upper]`` (shape ``(B, n)``).

    Stable neurons are exact. For unstable ones (``l < 0 < u``) the upper line is the
    chord ``u / (u - l) * (z - l)``, its intercept rounded up (where that slope would
    fall below the normal range, the flat line ``u``); the lower slope is
    ``alpha`` (clamped to [0, 1]) if given, else CROWN's adaptive choice (1 if
    ``u >= -l`` else 0).
    """
    dt = lower.dtype
    zero = _scalar(0.0, dt, lower.device)  # 0-dim: a comparison or a where without a Python scalar's wrapping
    unstable = (lower < zero) & (upper > zero)
    width = upper - lower
    # non-finite bounds, or a width that overflows: a NaN in ``width - width``
    invalid = torch.isnan((width - width).sum(-1))
    active_f = (lower >= zero).to(dt)
    # (a stable neuron's width may be 0: not divided by, so that no NaN reaches a gradient)
    slope = torch.where(unstable, upper / torch.where(unstable, width, _scalar(1.0, dt, lower.device)), active_f)
    # s l + t >= 0 and s u + t >= u in exact arithmetic: the rounding of s and t is
    # at most a few units of roundoff of |s l| + |u| (where unstable, both terms are >= 0:
    # s >= 0, -l > 0, u > 0; elsewhere t is not used), plus, where t falls below the
    # normal range, the product's absolute error (less than one smallest subnormal, with
    # the relative errors, each far below it there)
    minus = -lower
    t = slope * minus
    # below the normal range the product's rounding is absolute (up to half the smallest
    # subnormal) and the relative nudge underflows: one smallest subnormal more there
    normal = _scalar(smallest_normal(dt), dt, lower.device)
    nudge = torch.where(t < normal, _scalar(smallest_subnormal(dt), dt, lower.device), zero)
    t = t + 8 * unit_roundoff(dt) * (t + upper) + nudge
    # a chord slope below the normal range (u tiny against -l) carries an absolute error that
    # times (u - l) no relative slack covers: the flat line relu(z) <= u instead (exact)
    flat = slope < normal
    intercept = torch.where(unstable, torch.where(flat, upper, t), zero)
    slope = torch.where(flat, zero, slope)  # (a stable neuron's is 0 or 1: a flat one is 0 already)
    scale = torch.where(upper <= zero, zero, torch.maximum(upper, minus))
    if alpha is None:
        lower_slope = torch.where(unstable, (upper >= minus).to(dt), active_f)
    else:
        if alpha.dim() == 3:
            unstable, active_f = unstable.unsqueeze(1), active_f.unsqueeze(1)
        lower_slope = torch.where(unstable, alpha.clamp(0.0, 1.0), active_f)
    return ReluRelaxation(lower_slope, slope, intercept, scale, invalid)


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` as a 0-dim tensor (built once, outside any inference mode, so that autograd
    may save it; never written to)."""
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype, device=device)


@dataclass(frozen=True)
class LinearBound:
    """``A @ z_k >= coef @ x + const`` on the box, in exact arithmetic, once ``error`` is
    subtracted: ``error`` (``(B, m)``) bounds the rounding error of the backward pass
    that computed ``coef`` and ``const`` and of the concretisation of the bound over the
    box (see the module docstring). ``invalid`` (``(B,)``) marks boxes whose
    intermediate bounds were not finite: their bound proves nothing. ``center_value``
    (optional, ``(B, m)``): ``coef @ center`` of the box's center, computed by the pass
    (:func:`backward`'s ``center``), which :func:`concretize` then reads instead."""

    coef: Tensor  # (B, m, n_input)
    const: Tensor  # (B, m)
    error: Tensor  # (B, m)
    invalid: Tensor  # (B,)
    center_value: Tensor | None = None  # (B, m)


def backward(net: NetworkTensors, spec: Tensor | None, layer: int, relaxations: Sequence[ReluRelaxation],
             scale_in: Tensor, split_terms: Sequence[Tensor | None] | None = None,
             keep_lambdas: list[Tensor] | None = None, rows: Tensor | None = None,
             unit: tuple[Tensor, Tensor] | None = None, terms: list[Tensor | None] | None = None,
             center: Tensor | None = None, center_image: Tensor | None = None, to: int = 0,
             enclosure: Enclosure | None = None) -> LinearBound:
    """CROWN's backward pass: a linear lower bound of ``spec @ z_layer`` (``spec`` of shape
    ``(B, m, n_layer)``), where ``z_i`` is the output of the ``i``-th affine map, valid for
    all inputs of the box whose ReLU input bounds gave ``relaxations[i]`` (``i < layer``)
    and whose input scale (:func:`input_scale`) is ``scale_in``.

    ``split_terms[i]`` (optional, shape ``(B, m, n_i)``) is added to the coefficients of
    ``z_i``: with ``-beta * s`` (``beta >= 0``, ``s = +1`` for a neuron split active,
    ``-1`` inactive) the bound stays valid on the sub-domain where the splits hold
    (beta-CROWN's Lagrangian terms). ``keep_lambdas`` collects the coefficients of each
    ReLU output ``a_i`` (deepest layer first), for branching heuristics.

    ``rows`` (optional, ``(B',)``): the box of each entry of ``spec`` (``(B', m, n_layer)``),
    the relaxations and ``scale_in`` being per box (``B``): the same bounds as with each
    entry's box's tensors repeated, without building them. ``unit`` (optional, with ``spec``
    None): ``(neuron, signs)``, ``(B',)`` and ``(B', m)``, every sign 1 or -1 (the rows'
    terms are charged as those of a unit vector), one row per box or ``rows`` given:
    ``spec``'s rows are ``signs[r, s] e_neuron[r]``, given by their neuron (their first
    products, with ``W_layer``, ``b_layer`` and the layer's terms, pick entries: exact).
    ``terms`` (optional, one entry per layer): a cache of each layer's per-box terms
    ``|W_i| s_(i-1) + |b_i|`` for these relaxations and ``scale_in``, read where an
    entry is set and filled where it is None (the passes of one box's bounds share them).
    ``center`` (optional, per box ``(B, n_input)``): the boxes' centers, as :func:`concretize`
    computes them; the bound then carries ``coef @ center`` computed as ``lam @ (W_0 center)``
    (``center_value``): the same sums reassociated, a chain of as many roundings of terms
    no larger than ``|lam| |W_0| |center|``, which the input layer's charged magnitude
    ``|lam| (|W_0| s + |b_0|)`` covers as it covers ``coef @ center``, plus the underflow of
    the products ``W_0 c`` times ``|lam|`` (``tiny`` times ``|lam|``'s sum, added to the
    error); one pass over the rows' input coefficients fewer, and no center per row.
    ``center_image`` (optional): ``W_0 c`` per box (:func:`center_image`), when the caller
    has it (the center then need not be given).

    ``to`` (``0 < to < layer``, with ``enclosure``: an :class:`Enclosure` of ``z_to`` on the
    boxes): the pass ends at ``z_to`` and each coefficient there takes the side of the
    enclosure that bounds its product from below
    (:func:`~oracles.enclosure.through_enclosure`); the layers below ``z_to`` are not
    crossed. Looser than the whole pass where the enclosure is looser than CROWN's own
    bound of ``z_to``, and far cheaper where those layers are wide.
    """
    assert (to == 0) == (enclosure is None) and (to == 0 or 0 < to < layer), "an enclosure ends a pass above the input"
    like = spec if spec is not None else unit[1]  # type: ignore[index]
    bsz, m = like.shape[0], like.shape[1]
    lam = spec
    const = like.new_zeros(bsz, m)
    magnitude = like.new_zeros(bsz, m)
    underflow: Tensor | None = None  # per box (gathered per row once, at the end), as invalid
    invalid: Tensor | None = None

    single = scale_in.shape[0] == 1  # one box: every entry's

    def per_row(t: Tensor) -> Tensor:
        return per_box_rows(t, rows, single)

    def layer_terms(i: int, s: Tensor) -> Tensor:
        """``|W_i| s + |b_i|`` per box (``s`` the bound of ``|z_(i-1)|``), cached in ``terms``."""
        if terms is not None and terms[i] is not None:
            return terms[i]  # type: ignore[return-value]
        t = weight_times(net, i, s, absolute=True) + net.abs_biases[i]
        if terms is not None:
            terms[i] = t
        return t

    for i in range(layer, to, -1):
        r = relaxations[i - 1]
        invalid = r.invalid if invalid is None else invalid | r.invalid
        underflow = (r.scale.sum(dim=-1, keepdim=True) if underflow is None else
                     underflow + r.scale.sum(dim=-1, keepdim=True)) + 1
        if rows is not None:
            r = ReluRelaxation(per_row(r.lower_slope), per_row(r.upper_slope), per_row(r.upper_intercept), r.scale,
                               r.invalid)
        if lam is None:  # the unit rows: their products pick entries (exact)
            neuron, signs = unit  # type: ignore[misc]
            at = (rows if rows is not None else torch.arange(bsz, device=like.device), neuron)
            magnitude = layer_terms(i, r.scale)[at].unsqueeze(1).expand(bsz, m)
            const = signs * net.biases[i][neuron].unsqueeze(1)
            lam_a = net.weights[i][neuron].unsqueeze(1) * signs.unsqueeze(-1)
        else:
            # |z_i| <= |W_i| s_(i-1) + |b_i|: the terms of every product with lam
            magnitude = magnitude + batched_mv(lam.abs(), per_row(layer_terms(i, r.scale)))
            const = const + lam @ net.biases[i]
            lam_a = times_weight(net, i, lam)
        if keep_lambdas is not None:
            keep_lambdas.append(lam_a)
        low = r.lower_slope if r.lower_slope.dim() == 3 else r.lower_slope.unsqueeze(1)
        neg = lam_a.clamp(max=0)
        # each coefficient times its slope (upper where negative): one of the two products is
        # an exact zero, so the sum is that product, rounded once (a where is slower)
        lam = neg * r.upper_slope.unsqueeze(1) + lam_a.clamp(min=0) * low
        shift = batched_mv(neg, r.upper_intercept)  # <= 0
        const = const + shift
        magnitude = magnitude - shift
        if split_terms is not None and split_terms[i - 1] is not None:
            lam = lam + split_terms[i - 1]
            magnitude = magnitude + batched_mv(lam.abs(), per_row(r.scale))
    if enclosure is not None:
        ended = through_enclosure(net, enclosure, lam, const, magnitude, per_row(underflow).expand(bsz, 1),
                                  per_row(scale_in.sum(-1, keepdim=True)), rows)
        return LinearBound(*ended, per_row(invalid).expand(bsz))
    z_terms = per_row(layer_terms(0, scale_in))
    lam_abs = lam.abs()
    magnitude = magnitude + batched_mv(lam_abs, z_terms)
    underflow = per_row((scale_in.sum(dim=-1, keepdim=True) if underflow is None else
                         underflow + scale_in.sum(dim=-1, keepdim=True)) + 1).expand(bsz, 1)
    invalid = torch.zeros(bsz, dtype=torch.bool, device=like.device) if invalid is None else \
        per_row(invalid).expand(bsz)
    const = const + lam @ net.biases[0]
    error = net.rel * magnitude + net.tiny * underflow + ABS_SLACK
    center_value = None
    if center is not None or center_image is not None:
        center_value = batched_mv(lam, per_row(weight_times(net, 0, center) if center_image is None else center_image))
        # a product W_0 c below the normal range is off by up to half the smallest subnormal,
        # an error lam then scales: at most tiny times |lam|'s sum (no relative slack covers it)
        error = error + net.tiny * lam_abs.sum(-1)
    return LinearBound(times_weight(net, 0, lam), const, error, invalid, center_value)


def minimizing_corner(bound: LinearBound, lower: Tensor, upper: Tensor, row: Tensor) -> Tensor:
    """The vertex of each box that minimises ``coef[b, row[b]] @ x`` (a counterexample
    candidate), shape ``(B, n)``."""
    coef = bound.coef[torch.arange(bound.coef.shape[0]), row]
    return torch.where(coef > 0, lower, upper)


def proven(value: Tensor, invalid: Tensor) -> Tensor:
    """``value`` where it is a finite number of a valid box, ``-inf`` elsewhere."""
    ok = torch.isfinite(value) & ~invalid.unsqueeze(-1)
    return torch.where(ok, value, torch.full_like(value, -torch.inf))


def concretize(bound: LinearBound, lower: Tensor, upper: Tensor, rows: Tensor | None = None,
               consume: bool = False, radius: Tensor | None = None) -> Tensor:
    """Sound lower bound of ``coef @ x + const`` over the box (shape ``(B, m)``), moved
    outward by ``bound.error`` (which covers the rounding of this minimum too: the terms
    ``|coef| max(|l|, |u|)`` are part of the backward pass's magnitude); ``-inf`` where
    anything is not finite. ``rows``: as in :func:`backward` (the boxes per entry).
    ``consume``: ``bound.coef`` is not read again by the caller, so ``|coef|`` overwrites it
    (no temporary of its size; the same numbers; not where autograd records it). ``radius``
    (optional): ``(upper - lower) / 2``, when the caller has it."""
    coef = bound.coef
    value = bound.center_value
    if value is None:
        value = rows_dot(coef, (upper + lower) / 2, rows)
    absolute = coef.abs_() if consume and not coef.requires_grad else coef.abs()
    radius = (upper - lower) / 2 if radius is None else radius
    value = value - rows_dot(absolute, radius, rows) + bound.const
    return proven(value - bound.error, bound.invalid)


def _interval_affine(net: NetworkTensors, k: int, lower: Tensor, upper: Tensor,
                     terms_out: list[Tensor | None] | None = None,
                     mid_out: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Bounds of ``W_k @ x + b_k`` over a box, moved outward by their rounding error:
    ``((u + l) W^T -+ (u - l) |W|^T) / 2 + b`` (two products; in exact arithmetic the same
    numbers as ``l W+ + u W-`` and ``u W+ + l W-``; no halving before the products, so no
    absolute error of a halved subnormal), whose rounding is within ``rel`` times the
    terms ``|W_k| max(|l|, |u|) + |b_k|`` (``|u + l|``, ``|u - l| <= 2 max(|l|, |u|)``)
    plus the underflow term. ``terms_out`` (optional): its entry ``k`` receives those terms
    (:func:`backward`'s at layer ``k`` with that input scale); ``mid_out`` (optional) receives
    ``(u + l) W^T``. The two products with ``|W|`` are one (the rows of both stacked)."""
    mid = weight_times(net, k, upper + lower)
    if mid_out is not None:
        mid_out.append(mid)
    scale = input_scale(lower, upper)
    # |W| inflated in float32 (subnormal weights): looser, sound
    rad, terms = weight_times(net, k, torch.cat([upper - lower, scale]), absolute=True).split(lower.shape[0])
    terms = terms + net.abs_biases[k]
    if terms_out is not None:
        terms_out[k] = terms
    slack = net.rel * terms + net.tiny * (scale.sum(-1, keepdim=True) + 1) + ABS_SLACK
    return (mid - rad) / 2 + net.biases[k] - slack, (mid + rad) / 2 + net.biases[k] + slack


def center_image(net: NetworkTensors, lower: Tensor, upper: Tensor) -> Tensor:
    """``W_0 c`` of the boxes' centers ``c`` (as :func:`concretize` computes them): what
    :func:`backward`'s ``center_image`` and :func:`intermediate_bounds`' ``image`` take."""
    return weight_times(net, 0, (upper + lower) / 2)


def _poison(bounds: tuple[Tensor, Tensor], bad: Tensor) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """Mark the boxes with a non-finite bound (or already ``bad``): their bounds become
    ``(-inf, inf)``, which no relaxation accepts."""
    lo, hi = bounds
    bad = bad | nonfinite_rows(lo, hi, dim=-1)
    if bool(bad.any()):
        lo = torch.where(bad.unsqueeze(-1), torch.full_like(lo, -torch.inf), lo)
        hi = torch.where(bad.unsqueeze(-1), torch.full_like(hi, torch.inf), hi)
    return (lo, hi), bad


def intermediate_bounds(net: NetworkTensors, lower: Tensor, upper: Tensor, method: str = "crown",
                        relaxations_out: list[ReluRelaxation] | None = None,
                        terms: list[Tensor | None] | None = None,
                        image: Tensor | None = None,
                        image_out: list[Tensor] | None = None,
                        deadline: float = math.inf) -> list[tuple[Tensor, Tensor]]:
    """Bounds ``(l_i, u_i)`` of the input of every ReLU (``i = 0 .. depth-2``).

    The first layer's are exact interval bounds; deeper ones are interval (IBP) bounds,
    intersected with CROWN bounds (``method="crown"``) for the neurons they leave unstable
    in that box (each box's bounds are those it gets alone), or IBP bounds alone (``"ibp"``),
    or forward-mode linear bounds for networks with few inputs (``"forward"``,
    :mod:`oracles.forward`: intersected with interval bounds too; ``terms`` is then left to
    the final pass to fill).
    When a layer has more than :data:`ONE_SIDE_MIN` such neurons, CROWN bounds one side of
    each first: the lower bound of a neuron positive at its box's center (proving it active
    settles it), the upper bound of the others (proving it dead settles it), and the other
    side only for the neurons still unstable; a neuron proven stable keeps its interval bound
    on the other side (sound; its relaxation, exact, does not read it).
    A box whose bounds overflow gets ``(-inf, inf)`` from that layer on (see
    :func:`bounds_valid`). ``relaxations_out`` (optional) receives their
    :func:`relu_relaxation` (computed on the way). ``terms`` (optional, ``depth`` entries,
    None at first): the cache of :func:`backward`'s terms for these relaxations, filled on
    the way (a final pass given it reuses them). ``image`` (optional): ``W_0 c`` of the
    boxes' centers (:func:`center_image`), computed when not given as half the first
    layer's product ``(u + l) W_0^T`` (the same numbers above the normal range, where
    halving is exact; below it, within the half a smallest subnormal per product that
    :func:`backward` charges for ``center_image``); ``image_out`` (optional) receives it.
    ``deadline`` (optional, :func:`time.perf_counter`): looked at before each chunk of rows
    of CROWN's bounds, :class:`BoundsTimedOut` once it has passed (CROWN's bounds of a
    chain of 8192-wide layers take seconds per layer).
    Empty for a network without ReLU (one affine map).
    """
    if net.depth < 2:
        return []
    if method == "forward":
        from .forward import forward_bounds

        bounds, relaxations = forward_bounds(net, lower, upper)
        if image_out is not None:
            image_out.append(center_image(net, lower, upper) if image is None else image)
        if relaxations_out is not None:
            relaxations_out.extend(relaxations)
        return bounds
    terms = [None] * net.depth if terms is None else terms
    bad = torch.zeros(lower.shape[0], dtype=torch.bool, device=lower.device)
    mid: list[Tensor] = []
    first, bad = _poison(_interval_affine(net, 0, lower, upper, terms, mid), bad)
    if image is None:
        image = mid[0] / 2
    if image_out is not None:
        image_out.append(image)
    bounds = [first]
    relaxations = [relu_relaxation(*bounds[0])]
    scale_in = input_scale(lower, upper)
    at_center = image + net.biases[0]  # the pre-activations at the centers (which side first)
    for k in range(1, net.depth - 1):
        l_prev, u_prev = bounds[-1]
        l_ibp, u_ibp = _interval_affine(net, k, l_prev.clamp(min=0), u_prev.clamp(min=0))
        at_center = weight_times(net, k, at_center.clamp(min=0)) + net.biases[k]
        l_k, u_k = l_ibp, u_ibp
        # CROWN only for the neurons that interval bounds leave unstable, each box its own
        box, neuron = ((l_ibp < 0) & (u_ibp > 0)).nonzero(as_tuple=True)
        if method == "crown" and box.numel():
            l_k, u_k = l_ibp.clone(), u_ibp.clone()
            up_first = at_center[box, neuron] < 0  # the side that can settle the neuron
            if box.numel() > ONE_SIDE_MIN:
                side = torch.where(up_first, -1.0, 1.0).to(lower.dtype).unsqueeze(1)
                _intersect(l_k, u_k, box, neuron, side,
                           signed_bounds(net, k, box, neuron, side, relaxations, scale_in, lower, upper, terms, image,
                                         deadline))
                still = (l_k[box, neuron] < 0) & (u_k[box, neuron] > 0)
                if bool(still.any()):
                    b, i, sg = box[still], neuron[still], -side[still]
                    _intersect(l_k, u_k, b, i, sg,
                               signed_bounds(net, k, b, i, sg, relaxations, scale_in, lower, upper, terms, image,
                                             deadline))
            else:
                side = torch.tensor([[1.0, -1.0]], dtype=lower.dtype, device=lower.device).expand(box.numel(), 2)
                _intersect(l_k, u_k, box, neuron, side,
                           signed_bounds(net, k, box, neuron, side, relaxations, scale_in, lower, upper, terms, image,
                                         deadline))
            settle(l_k, u_k, l_ibp, u_ibp, box, neuron)
        layer_bounds, bad = _poison((l_k, u_k), bad)
        bounds.append(layer_bounds)
        relaxations.append(relu_relaxation(*layer_bounds))
    if relaxations_out is not None:
        relaxations_out.extend(relaxations)
    return bounds


#: Unstable neurons of a layer above which :func:`intermediate_bounds` bounds one side first.
ONE_SIDE_MIN = 64


def _intersect(l_k: Tensor, u_k: Tensor, box: Tensor, neuron: Tensor, side: Tensor, vals: Tensor) -> None:
    """Tighten ``l_k``/``u_k`` in place with :func:`signed_bounds`' ``vals`` (a lower bound of
    ``side * z``: of ``z`` where ``side`` is 1, of ``-z`` where it is -1)."""
    low = torch.where(side > 0, vals, -torch.inf).amax(1)
    high = torch.where(side < 0, -vals, torch.inf).amin(1)
    l_k[box, neuron] = torch.maximum(low, l_k[box, neuron])
    u_k[box, neuron] = torch.minimum(high, u_k[box, neuron])


def settle(lo: Tensor, hi: Tensor, lo_before: Tensor, hi_before: Tensor, box: Tensor, neuron: Tensor) -> None:
    """Where a neuron's tightened bounds prove it stable, its other side back to its bound
    ``before`` (in place): the result then does not depend on whether one side was bounded
    first or both at once (sound either way; a stable neuron's relaxation does not read it)."""
    lo_new, hi_new = lo[box, neuron], hi[box, neuron]
    lo[box, neuron] = torch.where(hi_new <= 0, lo_before[box, neuron], lo_new)
    hi[box, neuron] = torch.where(lo_new >= 0, hi_before[box, neuron], hi_new)


#: Coefficients ``(rows, 2, width)`` per chunk of :func:`signed_bounds`, ``width`` the widest
#: of the input and the layers its rows pass (not the input alone: on tllverifybench's
#: 2-input N = 64 net, 8192 wide, a layer's 4086 rows were one chunk of 2.2 s, past which a
#: deadline went unseen; in chunks of 128 rows CROWN's intermediate bounds of its root took
#: 6.2 s instead of 9.8 s, the same bounds).
ROW_CHUNK_ELEMENTS = 2**21


def signed_bounds(net: NetworkTensors, k: int, box: Tensor, neuron: Tensor, side: Tensor,
                  relaxations: Sequence[ReluRelaxation], scale_in: Tensor, lower: Tensor, upper: Tensor,
                  terms: list[Tensor | None] | None = None, image: Tensor | None = None,
                  deadline: float = math.inf, to: int = 0, enclosure: Enclosure | None = None) -> Tensor:
    """CROWN's lower bound of ``side[r, s] * z_k[box[r], neuron[r]]`` (``side`` of shape
    ``(rows, S)``, entries 1 or -1): :func:`backward` of the rows ``side[r, s] e_i`` with the
    box's relaxations, each row group bounded as a box of its own (so the bounds are those
    of the box alone, whatever the other boxes of the batch), in chunks of
    :data:`ROW_CHUNK_ELEMENTS`. ``terms``: :func:`backward`'s cache; ``image``: ``W_0 c`` of
    the boxes' centers (:func:`backward`'s ``center_image``); ``deadline``: looked at
    before each chunk (:func:`check_deadline`). Shape ``(rows, S)``."""
    center = (upper + lower) / 2 if image is None else None  # as concretize computes it
    radius = (upper - lower) / 2
    width = max([lower.shape[1], *(w.shape[0] for w in net.weights[to:k])])
    chunk = max(1, ROW_CHUNK_ELEMENTS // (side.shape[1] * width))
    out = []
    for start in range(0, box.numel(), chunk):
        check_deadline(deadline)
        b, i, sg = box[start:start + chunk], neuron[start:start + chunk], side[start:start + chunk]
        out.append(concretize(backward(net, None, k, relaxations, scale_in, rows=b, unit=(i, sg), terms=terms,
                                       center=center if not to else None, center_image=image if not to else None,
                                       to=to, enclosure=enclosure), lower, upper, rows=b, consume=True,
                              radius=radius))
    return out[0] if len(out) == 1 else torch.cat(out)


def neuron_bounds(net: NetworkTensors, k: int, box: Tensor, neuron: Tensor, relaxations: Sequence[ReluRelaxation],
                  scale_in: Tensor, lower: Tensor, upper: Tensor,
                  terms: list[Tensor | None] | None = None) -> tuple[Tensor, Tensor]:
    """CROWN's lower and upper bounds of ``z_k[box[r], neuron[r]]`` for each row ``r``
    (:func:`signed_bounds` of both sides). ``terms``: :func:`backward`'s cache."""
    side = torch.tensor([[1.0, -1.0]], dtype=lower.dtype, device=lower.device).expand(box.numel(), 2)
    vals = signed_bounds(net, k, box, neuron, side, relaxations, scale_in, lower, upper, terms)
    return vals[:, 0], -vals[:, 1]


def bounds_valid(bounds: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """Per box (``(B,)``): are all its ReLU input bounds finite numbers?"""
    ok = torch.ones(bounds[0][0].shape[0], dtype=torch.bool, device=bounds[0][0].device) if bounds else None
    for lo, hi in bounds:
        ok = ok & (torch.isfinite(lo) & torch.isfinite(hi)).all(dim=-1)
    return ok if ok is not None else torch.ones(0, dtype=torch.bool)


def crown_bound(net: NetworkTensors, spec: Tensor, lower: Tensor, upper: Tensor,
                bounds: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """CROWN's sound lower bound of ``spec @ logits`` over each box, given its ReLU input
    bounds: shape ``(B, m)``."""
    relaxations = [relu_relaxation(lo, hi) for lo, hi in bounds]
    return concretize(backward(net, spec, net.depth - 1, relaxations, input_scale(lower, upper),
                               center=(upper + lower) / 2), lower, upper)


def term_magnitude(net: NetworkTensors, spec: Tensor, lower: Tensor, upper: Tensor,
                   bounds: Sequence[tuple[Tensor, Tensor]], layer: int | None = None,
                   through_dead: bool = False) -> Tensor:
    """The scale of ``spec @ logits`` over each box for the solvers' error model
    (:func:`~parallelepipedonn.tolerances.solver_proof_margin`): ``sum_i S_i (|W_i|
    s_(i-1) + |b_i|)``, where ``S_i = |spec| |W_L| D |W_(L-1)| ... D`` bounds how much a
    change of the ``i``-th layer's pre-activations can move the specification (``D``
    zeroes the neurons dead on the box) and ``|W_i| s_(i-1) + |b_i|`` bounds the terms of
    those pre-activations. Shape ``(B, m)``; ``inf`` where bounds are not finite.
    ``layer``: ``spec`` applies to that layer's pre-activations instead of the logits.
    Times the relative slack, it also bounds the rounding error of any linear bound
    propagation of ``spec`` whose ReLU slopes lie in [0, 1] and are 0 on the neurons dead
    on the box. ``through_dead``: ``D`` keeps those neurons too (``S_i`` then bounds the
    coefficients of a propagation whose slopes are anywhere in [0, 1], one that takes a
    neuron dead here as unstable: another tool's, from looser intermediate bounds)."""
    relax = [relu_relaxation(lo, hi) for lo, hi in bounds]
    sens = spec.abs()
    total = spec.new_zeros(spec.shape[:2])
    for i in range(net.depth - 1 if layer is None else layer, -1, -1):
        s_prev = relax[i - 1].scale if i > 0 else input_scale(lower, upper)
        total = total + batched_mv(sens, s_prev @ net.abs_weights[i].T + net.abs_biases[i])
        if i > 0:
            sens = sens @ net.abs_weights[i]
            if not through_dead:
                sens = sens * (s_prev > 0).unsqueeze(1)
    ok = torch.isfinite(total)
    for r in relax[:(net.depth - 1 if layer is None else layer)]:
        ok = ok & ~r.invalid.unsqueeze(-1)
    return torch.where(ok, total, torch.full_like(total, torch.inf))


def margin_spec(n_classes: int, label: int, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Rows ``e_label - e_j`` for every ``j != label``: shape ``(batch, n_classes-1, n_classes)``
    (a new tensor, expanded over the batch)."""
    return _margin_rows(n_classes, label, dtype, torch.device(device)).clone().expand(batch, n_classes - 1, n_classes)


@functools.lru_cache(maxsize=64)
def _margin_rows(n_classes: int, label: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`margin_spec`'s rows, built once per class count, label, dtype and device
    (never handed out: :func:`margin_spec` copies them)."""
    rows = torch.zeros(n_classes - 1, n_classes, dtype=dtype, device=device)
    rows[:, label] = 1.0
    rows[torch.arange(n_classes - 1), [j for j in range(n_classes) if j != label]] = -1.0
    return rows
