"""Exact closed-form radii of a linear classifier within the domain, each a proven lower
bound (rounding errors covered) bracketed by a confirmed counterexample.

**Input, a linear classifier** (the IR is one affine map: a linear encoder and the head),
exact within the domain box ``D``:

* L-infinity (:func:`linear_linf_radius`): the minimum of the margin ``m_j + a_j d`` over
  ``{d : ||d||_inf <= t, x + d in D}`` is ``m_j - sum_i |a_ji| min(t, room_ji)``
  (``room``: how far coordinate ``i`` can move against its coefficient's sign), concave
  and piecewise linear in ``t``: Newton's method from below reaches its root's linear
  piece in a few steps (sorting the rooms is the fallback);
* L2 (:func:`linear_l2_radius`): the projection of ``x`` onto ``{margin_j <= 0} ∩ D`` is
  ``d(lambda) = clip(-lambda a_j, lo - x, hi - x)`` (KKT), ``lambda`` again the root of a
  piecewise-linear function.

The float64 roots are estimates; what is reported is *proven*: a radius slightly below
the estimate (for L-infinity first the estimate less twice the nearest row's rounding-error
bound over its slope, usually proven at once; then ``1 - 1e-12`` times the estimate, else
the radius the failed proof's deficit suggests, else that one shrunk by ``1e-10``,
``1e-8``, ... until the proof holds) whose
proof is checked with rounding errors covered — for L-infinity the closed-form minimum over the
cube's box rounded outward (:func:`oracles.gmm.affine_box_min`), for L2 the Lagrangian
dual bound ``min_(d in D-x, ||d|| <= r) a d >= sum_i min_(d_i) (a_i d_i + nu d_i^2 / 2) -
nu r^2 / 2`` at ``nu = 1 / lambda``. Each comes with a confirmed counterexample just
beyond the estimate (misclassified in exact arithmetic where float64 cannot decide), so
the exact radius is bracketed.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from oracles.gmm import affine_box_min, margin_rows

from ..box import Box, linf_distance_up
from ..network import Network
from ..tolerances import ABS_SLACK, gamma, relative_slack, smallest_subnormal
from .lipschitz import div_down, round_up

FloatArray = NDArray[np.float64]

_sum = np.add.reduce  # ndarray.sum without its Python wrapper (the same reduction)
_TINY = smallest_subnormal()
#: The relative shrinks tried, in order, until a radius is proven.
SHRINKS = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2)
#: The relative steps beyond an estimate tried for a counterexample.
PUSHES = (1e-9, 1e-7, 1e-5, 1e-3)


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


@dataclass(frozen=True, eq=False)
class LinearRadii:
    """A linear classifier's input radii around one input: the global L2 radius
    (:func:`linear_global_l2`) and the exact L-infinity and L2 radii in the domain."""

    global_l2: float
    linf: ExactRadius
    l2: ExactRadius


@dataclass(frozen=True, eq=False)
class _Rows:
    """A linear classifier's margins ``a_j x + c_j`` for one label (rows: the other
    classes), with what the radii reuse: ``|a|``, the float64 L1 and L2 norms, the
    proven L2 norms, and the direction that lowers each margin fastest (``-sign(a)``)."""

    a: FloatArray
    c: FloatArray
    others: NDArray[np.int64]
    w: FloatArray
    l1: FloatArray
    l2: FloatArray
    l2_up: FloatArray
    step: FloatArray
    label: int
    parts: tuple[FloatArray, FloatArray, FloatArray]  # max(a, 0), min(a, 0), |a|
    point_error: float  # 2 gamma_(n + 3): the relative rounding bound of a margin at a point
    slack: float  # relative_slack(n + 4): of the L2 dual bound's terms
    squares: tuple[FloatArray, FloatArray]  # |a|^2, and |a| with 1 where it is 0 (a safe divisor)
    moves: tuple[FloatArray, FloatArray]  # 1.0 where step < 0, resp. > 0, else 0.0
    c_abs: FloatArray  # |c|
    square_sums: FloatArray  # the row sums of |a|^2 (the L2 multipliers' first Newton step)
    box_error: float  # relative_slack(n + 1): of a margin's closed-form minimum over a box
    positive: NDArray[np.bool_]  # |a| > 0


_ROWS: weakref.WeakKeyDictionary[Network, dict[int, _Rows]] = weakref.WeakKeyDictionary()


def _rows(net: Network, label: int) -> _Rows:
    """The margin rows of a one-layer network for ``label`` (cached per network)."""
    cache = _ROWS.setdefault(net, {})
    if label not in cache:
        a, c, others = margin_rows(net.layers[0].weight, net.layers[0].bias, label)
        w = np.abs(a)
        l2 = np.sqrt((w * w).sum(axis=1))
        n = a.shape[1]
        # the squares' underflow (up to a smallest subnormal each) added before the root
        l2_up = np.sqrt((w * w).sum(axis=1) + n * _TINY) * (1 + relative_slack(n + 2)) + _TINY
        cache[label] = _Rows(a, c, others, w, w.sum(axis=1), l2, l2_up, -np.sign(a), label,
                             (np.maximum(a, 0.0), np.minimum(a, 0.0), w), 2 * gamma(n + 3), relative_slack(n + 4),
                             (w * w, np.where(w > 0, w, 1.0)), ((a > 0) * 1.0, (a < 0) * 1.0), np.abs(c),
                             (w * w).sum(axis=1), relative_slack(n + 1), w > 0)
    return cache[label]


def l2_distance_up(a: FloatArray, b: FloatArray) -> float:
    """``||a - b||_2`` rounded up: each difference (rounded to nearest) moved up a spacing,
    the sum of squares by its rounding error, the square root a spacing."""
    d = np.nextafter(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)), np.inf)
    return float(np.nextafter(math.sqrt(round_up(float(np.sum(d * d)), d.size + 1)), math.inf))


def _rooms(rows: _Rows, k: NDArray[np.int64] | slice, x: FloatArray, domain: Box) -> FloatArray:
    """How far each coordinate can move in the lowering direction of rows ``k``, within
    the domain."""
    down, up = rows.moves
    return down[k] * (x - domain.lower) + up[k] * (domain.upper - x)


class _Point:
    """What the linear radii of one input share (one label): the float64 margins ``m`` at
    ``x``, proven lower bounds ``m_low`` of the exact ones, the :func:`_rooms` of every
    row, and (when first asked for) the radius each margin's lower bound and proven L2
    norm reach in all of ``R^n``."""

    __slots__ = ("_reach", "domain", "m", "m_low", "rooms", "rows", "x")

    def __init__(self, rows: _Rows, x: FloatArray, domain: Box) -> None:
        self.rows, self.x, self.domain = rows, x, domain
        self.m = rows.a @ x + rows.c
        mag = rows.w @ np.abs(x) + rows.c_abs
        # a dot product of n + 1 terms, on rows and offsets each one rounding off the exact differences
        self.m_low = self.m - rows.point_error * mag - (x.size + 3) * _TINY - 1e-300
        self.rooms = _rooms(rows, slice(None), x, domain)
        self._reach: FloatArray | None = None

    @property
    def reach(self) -> FloatArray:
        """Per row, ``m_low / ||a_j||_2`` (proven norm) rounded down; 0 where ``m_low <= 0``."""
        if self._reach is None:
            self._reach = div_down(np.maximum(self.m_low, 0.0), self.rows.l2_up)
        return self._reach


def _crossings(weights: FloatArray, rooms: FloatArray, targets: FloatArray, iterations: int = 64,
               totals: FloatArray | None = None) -> FloatArray:
    """Per row: the least ``t >= 0`` with ``f(t) = sum_i weights_i min(t, rooms_i) >=
    target`` (``weights, rooms >= 0``); 0 for a target ``<= 0``, ``inf`` if it is never
    reached. Float64: an estimate of the exact root. ``totals``: the rows' sums of
    ``weights``, if the caller has them.

    ``f`` is concave, increasing and piecewise linear: Newton's method from 0 stays below
    the root (a tangent lies above ``f``) and ends in the root's linear piece after
    crossing at most one breakpoint per step, usually within a few steps; rows not done
    after ``iterations`` steps are solved by sorting the breakpoints."""
    if len(targets) == 1:
        total = None if totals is None else float(totals[0])
        return np.array([_crossing(weights[0], rooms[0], float(targets[0]), iterations, total)])
    t = np.where(targets > 0, targets / (weights.sum(axis=1) if totals is None else totals), 0.0)  # from 0
    t = np.where(np.isfinite(t), t, 0.0)
    active = targets > 0
    small = 1e-15 * targets
    for _ in range(iterations):
        if not active.any():
            break
        # every row's step (a finished one keeps its t): row sums as on the active rows alone
        tr = t[:, None]
        gap = targets - _sum(weights * np.minimum(tr, rooms), axis=1)
        slope = _sum(weights * (rooms > tr), axis=1)
        step = np.where(slope > 0, gap / slope, np.inf)
        finished = (gap <= small) | ~(step > 1e-15 * t)
        t = np.where(active & (gap > 0), t + step, t)
        active &= ~finished
    if active.any():
        rows = np.flatnonzero(active)
        t[rows] = _crossings_sorted(weights[rows], rooms[rows], targets[rows])
    return np.where(targets <= 0, 0.0, t)


def _crossing(w: FloatArray, r: FloatArray, target: float, iterations: int, total: float | None = None) -> float:
    """:func:`_crossings` for one row (the same Newton steps, on scalars)."""
    if target <= 0:
        return 0.0
    total = float(w.sum()) if total is None else total
    if not total > 0:
        return math.inf
    t = target / total
    for _ in range(iterations):
        gap = target - float(_sum(w * np.minimum(t, r)))
        if gap <= 1e-15 * target:
            return t
        slope = float(_sum(w[r > t]))
        if not slope > 0:
            return math.inf
        step = gap / slope
        t += step
        if not step > 1e-15 * t:
            return t
    return float(_crossings_sorted(w[None], r[None], np.array([target]))[0])


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


def _nearest_rows(r0: FloatArray, solve) -> FloatArray:
    """Exact radii of the rows that can be the nearest: ``solve(rows)`` gives the exact
    radii of some rows (an index array, or a slice of one row), ``r0`` (a lower bound of
    each, the radius in all of R^n) orders them; a row whose ``r0`` is at least the best
    exact radius found cannot be nearer and keeps ``r0``. The row of the least ``r0`` is
    solved first, then at once every other row whose ``r0`` is below its radius (the
    radii found then cannot admit more rows)."""
    radius = r0.copy()
    first = int(r0.argmin())
    if not r0[first] < math.inf:
        return radius
    best = radius[first] = solve(slice(first, first + 1))[0]
    todo = (r0 < best).nonzero()[0]
    todo = todo[todo != first]
    if todo.size:
        radius[todo] = solve(todo)
    return radius


def _margins_lower(rows: _Rows, x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The float64 margins at ``x`` and proven lower bounds of the exact ones."""
    m = rows.a @ x + rows.c
    mag = rows.w @ np.abs(x) + np.abs(rows.c)
    # a dot product of n + 1 terms, on rows and offsets each one rounding off the exact differences
    return m, m - rows.point_error * mag - (x.size + 3) * _TINY - 1e-300


def linf_proven(rows: _Rows, x: FloatArray, radius: float, domain: Box,
                rooms: FloatArray | None = None) -> tuple[bool, float]:
    """Whether every point of the domain within L-infinity ``radius`` of ``x`` has every
    margin > 0, proven: the closed-form minimum over the cube's box, its corners rounded
    outward, lowered by its rounding error (:func:`oracles.gmm.affine_box_min`). Also a
    smaller radius where the proof should hold (each margin's deficit over its slope
    there, twice). ``rooms``: :func:`_rooms` of every row, if the caller has them."""
    if radius == math.inf:
        lo, hi = domain.lower, domain.upper
    else:
        lo = np.maximum(domain.lower, np.nextafter(x - radius, -np.inf))
        hi = np.minimum(domain.upper, np.nextafter(x + radius, np.inf))
    low = affine_box_min(rows.a, rows.c, lo[None], hi[None], rows.parts)[0][0]
    if (low > 0).all():
        return True, radius
    if radius == math.inf:
        return False, 0.0
    short = np.flatnonzero(~(low > 0))
    room = _rooms(rows, short, x, domain) if rooms is None else rooms[short]
    slope = (rows.w[short] * (room > radius)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(slope > 0, -2 * low[short] / slope, np.inf)
    return False, max(radius - float(need.max()), 0.0)


@dataclass(frozen=True, eq=False)
class _L2Bound:
    """The L2 proof's parts that do not depend on the radius (for radii up to ``radius``):
    per margin row the radius its lower bound and proven norm reach in all of ``R^n``
    (``reach``), and for the rows in ``dual`` (those whose ``reach`` is below ``radius``)
    the Lagrangian dual bound's value before its ball term (``available``, lowered by the
    rounding error of its terms) at ``nu``. Its methods leave floating-point warnings to
    the caller."""

    reach: FloatArray
    dual: NDArray[np.int64]
    available: FloatArray
    nu: FloatArray
    slack: float
    radius: float = math.inf

    def proven(self, radius: float) -> bool:
        """Whether every margin is proven > 0 on the domain's points within ``radius``."""
        if not radius <= self.radius:  # rows outside the dual may need it too
            need = ~(self.reach >= radius)
            in_dual = np.zeros(len(self.reach), bool)
            in_dual[self.dual] = True
            if (need & ~in_dual).any():
                return False
        sel = ~(self.reach[self.dual] >= radius)
        avail, nu = self.available[sel], self.nu[sel]
        if math.isinf(radius):
            return bool((avail > 0).all() and (nu == 0).all())
        return bool((avail - nu * radius * radius / 2 * (1 + self.slack) > 0).all())

    @property
    def suggestion(self) -> float:
        """The largest radius where these bounds should prove every margin."""
        reach = self.reach.copy()
        dual_reach = np.where(self.nu > 0, np.sqrt(np.maximum(self.available, 0.0) * 2 /
                                                   (self.nu * (1 + self.slack))),
                              np.where(self.available > 0, np.inf, 0.0))
        reach[self.dual] = np.maximum(reach[self.dual], np.nan_to_num(dual_reach, nan=0.0))
        return float(reach.min())


_SCALE: list[tuple[Box, FloatArray]] = []


def _scale(domain: Box) -> FloatArray:
    """``max(|lower|, |upper|)`` of the domain (the last domain's kept, by identity; one
    read of the entry, so threads sharing it see a matching pair)."""
    entry = _SCALE[0] if _SCALE else None
    if entry is None or entry[0] is not domain:
        entry = (domain, np.maximum(np.abs(domain.lower), np.abs(domain.upper)))
        _SCALE[:] = [entry]
    return entry[1]


def _l2_bound(point: _Point, radius: float, lambdas: FloatArray) -> _L2Bound:
    """:class:`_L2Bound` for radii up to ``radius``: the dual bound for the rows whose
    norm bound does not reach it (floating-point warnings left to the caller)."""
    rows, x, domain = point.rows, point.x, point.domain
    n = x.size
    m, m_low = point.m, point.m_low
    reach = np.where(m_low > 0, point.reach, 0.0)
    dual = (~(reach >= radius)).nonzero()[0]
    slack = rows.slack
    if not dual.size:
        return _L2Bound(reach, dual, np.zeros(0), np.zeros(0), slack, radius)
    w, room, lam = rows.w[dual], point.rooms[dual], lambdas[dual]
    nu = np.where(np.isfinite(lam), 1.0 / lam, 0.0)
    nuc = nu[:, None]
    if (nu > 0).all():  # the usual case: the guarded forms below, without their guards
        vertex = w / nuc
        inside = -rows.squares[0][dual] / (2 * nuc)
    else:
        positive = nuc > 0
        safe_nu = np.where(positive, nuc, 1.0)
        vertex = np.where(positive, w / safe_nu, np.inf)  # where the unclipped minimum lies
        inside = -rows.squares[0][dual] / (2 * safe_nu)
    clipped = room < vertex * (1 - 1e-12)
    edge_quad = nuc * room * room / 2
    w_room = w * room
    q = np.where(clipped, -w_room + edge_quad, inside)
    q_mag = np.where(clipped, w_room + edge_quad, -inside)
    scale = _scale(domain)
    # what the dual bound has before the ball's term, lowered by the rounding error of its terms
    available = m[dual] + q.sum(axis=1) \
        - slack * (w @ scale + rows.c_abs[dual] + q_mag.sum(axis=1)) - (n + 4) * _TINY - ABS_SLACK
    return _L2Bound(reach, dual, np.where(np.isfinite(available), available, -np.inf), nu, slack, radius)


def l2_proven(rows: _Rows, x: FloatArray, radius: float, domain: Box, lambdas: FloatArray) -> tuple[bool, float]:
    """Whether every point of the domain within L2 ``radius`` of ``x`` has every margin
    > 0, proven: a margin whose lower bound exceeds ``radius`` times its proven norm holds
    on the whole ball; the others by the Lagrangian dual bound ``min_(d in D - x, ||d|| <=
    r) a d >= sum_i min_(d_i) (a_i d_i + nu d_i^2 / 2) - nu r^2 / 2`` at ``nu_j = 1 /
    lambdas[j]`` (``inf``: ``nu = 0``, the bound over the whole domain), rounding errors
    covered. Also the largest radius where the same bounds should prove it."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bound = _l2_bound(_Point(rows, x, domain), radius, lambdas)
        return bound.proven(radius), min(bound.suggestion, radius)


def _prove(estimate: float, check, guess: float | None = None) -> float:
    """A proven radius at most ``estimate``: ``guess`` if given, in ``(0, estimate)`` and
    proven, else ``estimate (1 - 1e-12)``, else the radius ``check`` suggests, else the
    first of that radius times ``1 - s`` (``s`` in :data:`SHRINKS`) that ``check`` proves;
    ``inf`` if ``estimate`` is and ``check(inf)`` holds; 0 if nothing is proven.
    ``check(r)`` returns whether ``r`` is proven and a smaller radius where it should be."""
    if estimate == math.inf:
        return math.inf if check(math.inf)[0] else 0.0
    if guess is not None and 0 < guess < estimate and check(guess)[0]:
        return float(guess)
    first = estimate * (1 - 1e-12)
    ok, suggested = check(first)
    if ok:
        return float(first)
    start = suggested * (1 - 1e-12) if 0 < suggested < first else first
    if start < first and check(start)[0]:
        return float(start)
    for s in SHRINKS:
        r = start * (1 - s)
        if r > 0 and check(r)[0]:
            return float(r)
    return 0.0


def _confirmed(net: Network, rows: _Rows, points: Iterable[FloatArray], domain: Box) -> FloatArray | None:
    """The first of ``points``, each clipped to the domain (a step computed in float64 can
    end a rounding beyond a face), that the linear classifier misclassifies, decided
    exactly: by the margins ``a_j p + c_j`` where they are farther from 0 than their
    rounding error bound (a margin below it: some class wins or ties), else by
    :meth:`~parallelepipedonn.network.Network.misclassified` (exact arithmetic). ``points``
    may be a generator: the later ones are built only if needed."""
    for p in points:
        p = np.clip(p, domain.lower, domain.upper)
        if not np.isfinite(p).all():  # (a step towards an unbounded domain's face: no point)
            continue
        n = p.size
        m = rows.a @ p + rows.c
        err = rows.point_error * (rows.w @ np.abs(p) + rows.c_abs) + (n + 3) * _TINY + 1e-300
        if (m < -err).any():
            return p
        if not (m > err).all() and net.misclassified(p, int(rows.label))[0]:
            return p
    return None


def _linf_guess(rows: _Rows, x: FloatArray, j: int, estimate: float, room: FloatArray) -> float | None:
    """Where :func:`linf_proven` should first succeed (a guess, proven or not by the
    caller): the estimate less twice the nearest row's rounding-error bound over its slope
    there (the deficit a proof at the estimate itself would find), so that one proof
    usually suffices. ``room``: the row's :func:`_rooms`."""
    if not math.isfinite(estimate):
        return None
    hi = np.maximum(np.abs(x - estimate), np.abs(x + estimate))
    w = rows.w[j]
    slope = float(w @ (room > estimate))
    err = rows.box_error * (float(w @ hi) + abs(float(rows.c[j]))) + (x.size + 2) * _TINY + ABS_SLACK
    return estimate - 2 * err / slope if slope > 0 else None


def _linf_radius(net: Network, point: _Point) -> ExactRadius:
    """:func:`linear_linf_radius` of a prepared input (floating-point warnings off)."""
    rows, x, domain, m, rooms = point.rows, point.x, point.domain, point.m, point.rooms
    r0 = np.where(m > 0, m / rows.l1, 0.0)
    ts = _nearest_rows(r0, lambda k: _crossings(rows.w[k], rooms[k], m[k], totals=rows.l1[k]))
    j = int(ts.argmin())
    estimate = float(ts[j])
    room = rooms[j]
    radius = _prove(estimate, lambda r: linf_proven(rows, x, r, domain, rooms),
                    _linf_guess(rows, x, j, estimate, room))
    cex = None
    if math.isfinite(estimate):
        cex = _confirmed(net, rows, (x + rows.step[j] * np.minimum(estimate * (1 + s), room) for s in PUSHES),
                         domain)
    upper = math.inf if cex is None else linf_distance_up(cex, x)
    return ExactRadius(radius, estimate, upper, cex, None if cex is None else int(rows.others[j]))


def linear_linf_radius(net: Network, x: FloatArray, label: int, domain: Box) -> ExactRadius:
    """The exact L-infinity radius of a linear classifier's label around ``x`` in the
    domain (module docstring), proven, with a confirmed counterexample beyond it."""
    rows = _rows(net, label)
    if not rows.others.size:
        return ExactRadius(math.inf, math.inf, math.inf, None, None)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _linf_radius(net, _Point(rows, x, domain))


def l2_multipliers(w: FloatArray, rooms: FloatArray, m: FloatArray,
                   squares: tuple[FloatArray, FloatArray] | None = None,
                   square_sums: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """Per margin row (``w = |a|``, the rooms of its lowering direction, the margin at the
    input): the KKT multiplier ``lambda`` of the projection of the input onto ``{margin
    <= 0} ∩ D`` (``inf`` where the class never wins in the domain, 0 where it already
    does) and the projection's distance (float64 estimates). ``squares``: ``w * w`` and
    ``w`` with 1 where it is 0, and ``square_sums`` the row sums of ``w * w``, if the
    caller has them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _l2_multipliers(w, rooms, m, squares, square_sums)


def _l2_multipliers(w: FloatArray, rooms: FloatArray, m: FloatArray,
                    squares: tuple[FloatArray, FloatArray] | None = None,
                    square_sums: FloatArray | None = None,
                    positive: NDArray[np.bool_] | None = None) -> tuple[FloatArray, FloatArray]:
    """:func:`l2_multipliers` (floating-point warnings left to the caller; ``positive``:
    ``w > 0``, if the caller has it)."""
    w2, safe = squares if squares is not None else (w * w, np.where(w > 0, w, 1.0))
    positive = w > 0 if positive is None else positive
    lam = _crossings(w2, np.where(positive, rooms / safe, 0.0), m, totals=square_sums)
    d = np.minimum(np.where(np.isfinite(lam[:, None]), lam[:, None], 0.0) * w, rooms)
    dist = np.where(np.isfinite(lam), np.sqrt(np.sum(d * d, axis=1)), np.inf)
    return lam, dist


def linear_global_l2(net: Network, x: FloatArray, label: int) -> float:
    """:func:`global_l2_radius` of a linear classifier, from its margin rows: ``min_j``
    margin lower bound over the proven ``||a_j||_2``."""
    rows = _rows(net, label)
    if not rows.others.size:
        return math.inf
    _, m_low = _margins_lower(rows, x)
    return float(div_down(np.maximum(m_low, 0.0), rows.l2_up).min())


def _l2_radius(net: Network, point: _Point) -> ExactRadius:
    """:func:`linear_l2_radius` of a prepared input (floating-point warnings off)."""
    rows, x, m, rooms = point.rows, point.x, point.m, point.rooms
    r0 = np.where(m > 0, m / rows.l2, 0.0)
    lam = np.where(m > 0, r0 / rows.l2, 0.0)  # the multiplier in all of R^n: a valid dual point
    w2, safe = rows.squares

    def solve(k: NDArray[np.int64] | slice) -> FloatArray:
        lam[k], dist = _l2_multipliers(rows.w[k], rooms[k], m[k], (w2[k], safe[k]), rows.square_sums[k],
                                       rows.positive[k])
        return dist

    dist = _nearest_rows(r0, solve)
    j = int(dist.argmin())
    estimate = float(dist[j])
    bound = _l2_bound(point, estimate, lam)  # holds for every radius up to the estimate
    suggestion = bound.suggestion
    radius = _prove(estimate, lambda r: (bound.proven(r), min(suggestion, r)))
    cex = None
    if math.isfinite(estimate):
        room, wj = rooms[j], rows.w[j]
        cex = _confirmed(net, rows, (x + rows.step[j] * np.minimum(lam[j] * (1 + s) * wj, room) for s in PUSHES),
                         point.domain)
    upper = math.inf if cex is None else l2_distance_up(cex, x)
    return ExactRadius(radius, estimate, upper, cex, None if cex is None else int(rows.others[j]))


def linear_l2_radius(net: Network, x: FloatArray, label: int, domain: Box) -> ExactRadius:
    """The exact L2 radius of a linear classifier's label around ``x`` in the domain
    (module docstring), proven by the margins' norms or the Lagrangian dual bound, with a
    confirmed counterexample beyond it."""
    rows = _rows(net, label)
    if not rows.others.size:
        return ExactRadius(math.inf, math.inf, math.inf, None, None)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _l2_radius(net, _Point(rows, x, domain))


def linear_radii(net: Network, x: FloatArray, label: int, domain: Box) -> LinearRadii:
    """:func:`linear_global_l2`, :func:`linear_linf_radius` and :func:`linear_l2_radius`
    at once, the input's margins, their bounds and the rooms computed once (the same
    radii)."""
    rows = _rows(net, label)
    if not rows.others.size:
        none = ExactRadius(math.inf, math.inf, math.inf, None, None)
        return LinearRadii(math.inf, none, none)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        point = _Point(rows, x, domain)
        return LinearRadii(float(point.reach.min()), _linf_radius(net, point), _l2_radius(net, point))
