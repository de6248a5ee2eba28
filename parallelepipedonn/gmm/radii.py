"""Closed-form certified radii, each a proven lower bound (rounding errors covered).

**Latent** (the mixture head ``s(z) = W z + b`` alone, around the exact latent ``z`` of the
input, known up to a proven error bound): with ``g_j(z) = (w_c - w_j)^T z + (b_c - b_j)``
and ``a_j = w_c - w_j``, the exact radius of the polyhedral decision region around ``z``
is ``min_j g_j(z) / ||a_j||_*`` — ``||.||_2`` for L2, ``||.||_1`` for L-infinity (the dual
norms), ``sqrt(a_j^T Sigma a_j)`` for the Mahalanobis distance of ``Sigma``
(``= ||Sigma^(-1/2) (mu_c - mu_j)||_2`` when ``a_j = Sigma^-1 (mu_c - mu_j)``).
:func:`latent_radii` returns it with the margins lowered and the norms raised by their
rounding errors, and the quotient rounded down.

**Input, any ReLU chain** (:func:`global_l2_radius`): the margin at the input, lowered by
its rounding error, divided by a proven upper bound of the margin's L2 Lipschitz constant
(:func:`~parallelepipedonn.gmm.lipschitz.margin_lipschitz`): every point of the L2 ball
(in all of R^n) keeps the label.

**Input, a linear classifier** (the IR is one affine map: a linear encoder and the head),
exact within the domain box ``D``:

* L-infinity (:func:`linear_linf_radius`): the minimum of the margin ``m_j + a_j d`` over
  ``{d : ||d||_inf <= t, x + d in D}`` is ``m_j - sum_i |a_ji| min(t, room_ji)``
  (``room``: how far coordinate ``i`` can move against its coefficient's sign), piecewise
  linear in ``t``: its root is found exactly after sorting the rooms;
* L2 (:func:`linear_l2_radius`): the projection of ``x`` onto ``{margin_j <= 0} ∩ D`` is
  ``d(lambda) = clip(-lambda a_j, lo - x, hi - x)`` (KKT), ``lambda`` again the root of a
  piecewise-linear function.

The float64 roots are estimates; what is reported is *proven*: a radius slightly below
the estimate (relative ``1e-10``, else ``1e-8``, ... until the proof holds) whose proof
is checked with rounding errors covered — for L-infinity the closed-form minimum over the
cube's box rounded outward (:func:`oracles.gmm.affine_box_min`), for L2 the Lagrangian
dual bound ``min_(d in D-x, ||d|| <= r) a d >= sum_i min_(d_i) (a_i d_i + nu d_i^2 / 2) -
nu r^2 / 2`` at ``nu = 1 / lambda``. Each comes with a confirmed counterexample just
beyond the estimate (misclassified in exact arithmetic where float64 cannot decide), so
the exact radius is bracketed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from oracles.gmm import affine_box_min, margin_rows

from ..box import Box
from ..network import Network
from ..tolerances import ABS_SLACK, UNIT_ROUNDOFF_F64, relative_slack, smallest_subnormal
from .lipschitz import div_down

FloatArray = NDArray[np.float64]

_U = UNIT_ROUNDOFF_F64
_TINY = smallest_subnormal()
#: The relative shrinks tried, in order, until a radius is proven.
SHRINKS = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2)
#: The relative steps beyond an estimate tried for a counterexample.
PUSHES = (1e-9, 1e-7, 1e-5, 1e-3)


# -- latent ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentRadii:
    """Proven radii of the head's decision region around the exact latent point, in the
    L2, Mahalanobis and L-infinity distances, and the class of the nearest L2 face."""

    l2: float
    mahalanobis: float
    linf: float
    closest_class: int | None


def head_margin_lower(weight: FloatArray, bias: FloatArray, z: FloatArray, z_err: FloatArray,
                      label: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Proven lower bounds of ``g_j`` at the exact latent (within ``z_err`` of ``z``), the
    rows ``a_j`` (float64) and the classes ``j != label``."""
    a, c, others = margin_rows(weight, bias, label)
    d = z.size
    with np.errstate(over="ignore", invalid="ignore"):
        value = a @ z + c
        pair = np.abs(weight[label]) + np.abs(weight[others])
        magnitude = pair @ (np.abs(z) + z_err) + np.abs(bias[label]) + np.abs(bias[others])
        lower = value - relative_slack(d + 2) * magnitude - (pair @ z_err) * (1 + relative_slack(d)) \
            - (d + 3) * _TINY - ABS_SLACK
    return np.where(np.isfinite(lower), lower, -np.inf), a, others


def dual_norms_upper(a: FloatArray, covariance: FloatArray | None = None) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per row of ``a`` (each entry one rounding off the exact difference of two weights):
    proven upper bounds of ``||a||_2``, ``||a||_1`` and ``sqrt(a^T Sigma a)`` (``nan``
    without ``Sigma``)."""
    d = a.shape[1]
    grow = 1 + relative_slack(d + 2)
    l2 = np.sqrt(np.sum(a * a, axis=1)) * grow + _TINY
    l1 = np.sum(np.abs(a), axis=1) * grow + _TINY
    if covariance is None:
        return l2, l1, np.full(len(a), np.nan)
    quad = np.einsum("jd,de,je->j", a, covariance, a)
    mag = np.einsum("jd,de,je->j", np.abs(a), np.abs(covariance), np.abs(a))
    quad_up = np.maximum(quad, 0.0) + relative_slack(d * d + 4) * mag + _TINY
    return l2, l1, np.sqrt(quad_up) * (1 + 4 * _U) + _TINY


def latent_radii(weight: FloatArray, bias: FloatArray, z: FloatArray, z_err: FloatArray, label: int,
                 covariance: FloatArray | None = None) -> LatentRadii:
    """The proven latent radii (module docstring); 0 where a margin is not proven > 0,
    ``inf`` when no other class has a face (``a_j = 0`` with ``g_j > 0``)."""
    lower, a, others = head_margin_lower(weight, bias, z, z_err, label)
    if not others.size:
        return LatentRadii(math.inf, math.inf, math.inf, None)
    positive = np.maximum(lower, 0.0)
    l2n, l1n, mahn = dual_norms_upper(a, covariance)
    r2, r1 = div_down(positive, l2n), div_down(positive, l1n)
    rm = div_down(positive, mahn) if covariance is not None else np.full(len(a), np.nan)
    return LatentRadii(float(r2.min()), float(rm.min()), float(r1.min()), int(others[int(np.argmin(r2))]))


# -- input, any chain -------------------------------------------------------------------------
def margin_lower(net: Network, x: FloatArray, label: int) -> FloatArray:
    """Proven lower bounds of ``logit_label - logit_j`` (``j != label``, increasing) at
    ``x`` in exact arithmetic: the float64 margins minus their rounding error bounds (as
    :meth:`Network.margin_errors` bounds them, per class)."""
    h, err = net.forward_errors(x)
    others = [j for j in range(net.n_classes) if j != label]
    with np.errstate(over="ignore", invalid="ignore"):
        m = h[0, label] - h[0, others]
        lower = m - 2 * (err[0, label] + err[0, others] + _U * np.abs(m)) - 1e-300
    return np.where(np.isfinite(lower), lower, -np.inf)


def global_l2_radius(net: Network, x: FloatArray, label: int, lipschitz: FloatArray) -> float:
    """A proven L2 radius around ``x`` (in all of R^n): ``min_j`` margin lower bound over
    ``lipschitz[j]``, the margins' proven Lipschitz bounds (``margin_lipschitz``)."""
    lower = margin_lower(net, x, label)
    if not lower.size:
        return math.inf
    return float(div_down(np.maximum(lower, 0.0), lipschitz).min())


# -- input, a linear classifier: exact in the domain --------------------------------------------
@dataclass(frozen=True, eq=False)
class ExactRadius:
    """A linear classifier's radius in one norm: ``radius`` is proven (every point of the
    domain within it keeps the label), ``estimate`` the float64 closed form of the exact
    radius, ``upper`` the distance of ``counterexample`` (a confirmed misclassified point
    of the domain; ``inf`` and ``None`` if none exists or none was confirmed), and
    ``closest_class`` the class that wins there."""

    radius: float
    estimate: float
    upper: float
    counterexample: FloatArray | None
    closest_class: int | None


def _rooms(a: FloatArray, x: FloatArray, domain: Box) -> FloatArray:
    """How far each coordinate can move against the sign of its coefficient (per row)."""
    down, up = x - domain.lower, domain.upper - x
    return np.where(a > 0, down, np.where(a < 0, up, 0.0))


def _crossings(weights: FloatArray, rooms: FloatArray, targets: FloatArray, iterations: int = 64) -> FloatArray:
    """Per row: the least ``t >= 0`` with ``f(t) = sum_i weights_i min(t, rooms_i) >=
    target`` (``weights, rooms >= 0``); 0 for a target ``<= 0``, ``inf`` if it is never
    reached. Float64: an estimate of the exact root.

    ``f`` is concave, increasing and piecewise linear: Newton's method from 0 stays below
    the root (a tangent lies above ``f``) and ends in the root's linear piece after
    crossing at most one breakpoint per step, usually within a few steps; rows not done
    after ``iterations`` steps are solved by sorting the breakpoints."""
    t = np.zeros(len(targets))
    active = targets > 0
    for _ in range(iterations):
        if not active.any():
            break
        rows = np.flatnonzero(active)
        tr, w, r = t[rows, None], weights[rows], rooms[rows]
        drop = (w * np.minimum(tr, r)).sum(axis=1)
        slope = (w * (r > tr)).sum(axis=1)
        gap = targets[rows] - drop
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(slope > 0, gap / slope, np.inf)
        finished = (gap <= 1e-15 * targets[rows]) | ~(step > 1e-15 * tr[:, 0])
        t[rows] = np.where(gap > 0, t[rows] + step, t[rows])
        active[rows[finished]] = False
    if active.any():
        rows = np.flatnonzero(active)
        t[rows] = _crossings_sorted(weights[rows], rooms[rows], targets[rows])
    return np.where(targets <= 0, 0.0, t)


def _crossings_sorted(weights: FloatArray, rooms: FloatArray, targets: FloatArray) -> FloatArray:
    """:func:`_crossings` by sorting each row's breakpoints (``O(n log n)``)."""
    rooms = np.where(weights > 0, rooms, 0.0)
    order = np.argsort(rooms, axis=1, kind="stable")
    r = np.take_along_axis(rooms, order, axis=1)
    w = np.take_along_axis(weights, order, axis=1)
    at_least = np.cumsum(w[:, ::-1], axis=1)[:, ::-1]  # sum_(i >= k) w_i
    value = np.cumsum(w * r, axis=1) - w * r + r * at_least  # f(r_k)
    rows = np.arange(len(r))
    reach = value[:, -1] >= targets
    k = np.argmax(value >= targets[:, None], axis=1)
    prev_t = np.where(k > 0, r[rows, k - 1], 0.0)
    prev_v = np.where(k > 0, value[rows, k - 1], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = prev_t + (targets - prev_v) / at_least[rows, k]
    t = np.where(reach, np.maximum(t, 0.0), np.inf)
    return np.where(targets <= 0, 0.0, t)


def linf_proven(a: FloatArray, c: FloatArray, x: FloatArray, radius: float, domain: Box) -> bool:
    """Whether every point of the domain within L-infinity ``radius`` of ``x`` has every
    margin ``a_j x + c_j`` > 0, proven: the closed-form minimum over the cube's box, its
    corners rounded outward, lowered by its rounding error."""
    if radius == math.inf:
        lo, hi = domain.lower, domain.upper
    else:
        lo = np.maximum(domain.lower, np.nextafter(x - radius, -np.inf))
        hi = np.minimum(domain.upper, np.nextafter(x + radius, np.inf))
    low, _, _ = affine_box_min(a, c, lo[None], hi[None])
    return bool(low.min() > 0)


def l2_proven(a: FloatArray, c: FloatArray, x: FloatArray, radius: float, domain: Box,
              lambdas: FloatArray) -> bool:
    """Whether every point of the domain within L2 ``radius`` of ``x`` has every margin
    > 0, proven by the Lagrangian dual bound at ``nu_j = 1 / lambdas[j]`` (``lambdas[j] =
    inf``: ``nu = 0``, the bound over the whole domain), rounding errors covered."""
    n = a.shape[1]
    w = np.abs(a)
    room = _rooms(a, x, domain)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nu = np.where(np.isfinite(lambdas), 1.0 / lambdas, 0.0)[:, None]
        vertex = np.where(nu > 0, w / np.where(nu > 0, nu, 1.0), np.inf)  # where the unclipped minimum lies
        clipped = room < vertex * (1 - 1e-12)
        at_edge = -w * room + nu * room * room / 2
        inside = -(w * w) / (2 * np.where(nu > 0, nu, 1.0))
        q = np.where(clipped, at_edge, inside)
        q_mag = np.where(clipped, w * room + nu * room * room / 2, -inside)
        ball = nu[:, 0] * radius * radius / 2 if math.isfinite(radius) else np.where(nu[:, 0] > 0, np.inf, 0.0)
        scale = np.maximum(np.abs(domain.lower), np.abs(domain.upper))
        magnitude = w @ scale + np.abs(c) + q_mag.sum(axis=1) + ball
        bound = (a @ x + c) + q.sum(axis=1) - ball
        proven = bound - relative_slack(n + 4) * magnitude - (n + 4) * _TINY - ABS_SLACK
    return bool(np.isfinite(proven).all() and (proven > 0).all())


def _prove(estimate: float, check) -> float:
    """The largest of ``estimate * (1 - s)`` (``s`` in :data:`SHRINKS`) that ``check``
    proves, ``inf`` if ``estimate`` is and ``check(inf)`` holds, else 0."""
    if estimate == math.inf:
        if check(math.inf):
            return math.inf
        return 0.0
    for s in SHRINKS:
        r = estimate * (1 - s)
        if r > 0 and check(r):
            return float(r)
    return 0.0


def _confirmed(net: Network, label: int, points: list[FloatArray]) -> FloatArray | None:
    """The first of ``points`` the classifier misclassifies (exact decision), if any."""
    for p in points:
        if net.misclassified(p, label)[0]:
            return p
    return None


def _exact_rows(a: FloatArray, c: FloatArray, x: FloatArray, domain: Box, norm: str
                ) -> tuple[FloatArray, FloatArray]:
    """Per margin row, float64 estimates: the exact radius in the domain (``norm`` ``linf``
    or ``l2``), and for L2 the KKT multiplier ``lambda`` of each row (the dual variable
    :func:`l2_proven` uses)."""
    m = a @ x + c
    if norm == "linf":
        return _crossings(np.abs(a), _rooms(a, x, domain), m), np.full(len(a), np.nan)
    lam, dist = l2_multipliers(a, x, m, domain)
    return dist, lam


def linear_linf_radius(net: Network, x: FloatArray, label: int, domain: Box) -> ExactRadius:
    """The exact L-infinity radius of a linear classifier's label around ``x`` in the
    domain (module docstring), proven, with a confirmed counterexample beyond it."""
    weight, bias = net.layers[0].weight, net.layers[0].bias
    a, c, others = margin_rows(weight, bias, label)
    if not others.size:
        return ExactRadius(math.inf, math.inf, math.inf, None, None)
    ts, _ = _exact_rows(a, c, x, domain, "linf")
    j = int(np.argmin(ts))
    estimate = float(ts[j])
    radius = _prove(estimate, lambda r: linf_proven(a, c, x, r, domain))
    cex = None
    if math.isfinite(estimate):
        room = _rooms(a[j], x, domain)
        step = -np.sign(a[j])
        cex = _confirmed(net, label, [x + step * np.minimum(estimate * (1 + s), room) for s in PUSHES])
    upper = math.inf if cex is None else float(np.abs(cex - x).max())
    return ExactRadius(radius, estimate, upper, cex, None if cex is None else int(others[j]))


def l2_multipliers(a: FloatArray, x: FloatArray, m: FloatArray, domain: Box) -> tuple[FloatArray, FloatArray]:
    """Per margin row: the KKT multiplier ``lambda`` of the projection of ``x`` onto
    ``{margin <= 0} ∩ D`` (``inf`` where the class never wins in the domain, 0 where it
    already does) and the projection's distance (float64 estimates)."""
    w = np.abs(a)
    room = _rooms(a, x, domain)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = _crossings(w * w, np.where(w > 0, room / np.where(w > 0, w, 1.0), 0.0), m)
        d = np.minimum(np.where(np.isfinite(lam[:, None]), lam[:, None], 0.0) * w, room)
    dist = np.where(np.isfinite(lam), np.sqrt(np.sum(d * d, axis=1)), np.inf)
    return lam, dist


def linear_l2_radius(net: Network, x: FloatArray, label: int, domain: Box) -> ExactRadius:
    """The exact L2 radius of a linear classifier's label around ``x`` in the domain
    (module docstring), proven by the Lagrangian dual bound, with a confirmed
    counterexample beyond it."""
    weight, bias = net.layers[0].weight, net.layers[0].bias
    a, c, others = margin_rows(weight, bias, label)
    if not others.size:
        return ExactRadius(math.inf, math.inf, math.inf, None, None)
    dist, lam = _exact_rows(a, c, x, domain, "l2")
    j = int(np.argmin(dist))
    estimate = float(dist[j])
    radius = _prove(estimate, lambda r: l2_proven(a, c, x, r, domain, lam))
    cex = None
    if math.isfinite(estimate):
        w, room, step = np.abs(a[j]), _rooms(a[j], x, domain), -np.sign(a[j])
        cex = _confirmed(net, label, [x + step * np.minimum(lam[j] * (1 + s) * w, room) for s in PUSHES])
    upper = math.inf if cex is None else float(np.sqrt(np.sum((cex - x) ** 2)))
    return ExactRadius(radius, estimate, upper, cex, None if cex is None else int(others[j]))
