"""The minimum L-infinity distance from ``x`` to a point of the domain not classified
``label`` — the exact best apothem — from any oracle's robustness answers.

Root finding on the radius of the cube ``{x' in D : ||x' - x||_inf <= r}``: a VERIFIED
cube raises the lower end (proven: no counterexample within it); a confirmed
counterexample lowers the upper end to its distance, after it is pulled along the segment
towards ``x`` to the last point that is still misclassified (forward passes only). The
next radius comes from regula falsi (Illinois) on the margins the oracle reports, or
bisection when it reports none. With a complete
oracle the bracket closes to the requested precision; an UNKNOWN answer (time-out)
stops the search with the bracket reached so far.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from parallelepipedonn.box import Box, linf_distance_up

from .base import Distance, FloatArray, Oracle, Verdict

if TYPE_CHECKING:
    from parallelepipedonn.network import Network

log = logging.getLogger(__name__)


def cube(x: FloatArray, radius: float, domain: Box) -> tuple[FloatArray, FloatArray]:
    return np.maximum(domain.lower, x - radius), np.minimum(domain.upper, x + radius)


def pull_counterexample(network: Network, x: FloatArray, cex: FloatArray, label: int,
                        rounds: int = 3, points: int = 64) -> FloatArray:
    """The misclassified point closest to ``x`` on the segment ``[x, cex]`` (to a
    resolution of ``points**-rounds``; confirmed in exact arithmetic near the boundary);
    ``cex`` itself if nothing closer is found."""
    lo_t, hi_t = 0.0, 1.0  # margin(x + t (cex - x)) > 0 at lo_t (x is robust), <= 0 at hi_t
    for _ in range(rounds):
        ts = np.linspace(lo_t, hi_t, points + 1)[1:]
        margins = network.margins(x + ts[:, None] * (cex - x), label)
        bad = np.flatnonzero(margins <= 0)
        if not bad.size:
            break
        first = bad[0]
        lo_t, hi_t = (ts[first - 1] if first > 0 else lo_t), ts[first]
    if hi_t == 1.0:  # nothing closer than cex itself
        return cex
    # a point of the segment, rounded: kept between x and cex coordinate-wise (a point of
    # any box holding both; the rounded segment can step one unit out of the domain)
    best = np.clip(x + hi_t * (cex - x), np.minimum(x, cex), np.maximum(x, cex))
    return best if network.misclassified(best, label)[0] else cex


def confirmed_upper(network: Network, x: FloatArray, label: int, domain: Box,
                    counterexample: FloatArray | None) -> tuple[float, FloatArray | None]:
    """The upper end given by a caller's counterexample, trusted only once confirmed: one
    outside ``domain`` or classified ``label`` is dropped (logged); a kept one is pulled
    towards ``x``, and its distance is the upper end (``inf`` without one)."""
    if counterexample is None:
        return math.inf, None
    cex = np.asarray(counterexample, dtype=np.float64)
    if cex.shape != x.shape or not domain.contains(cex) or not network.misclassified(cex, label)[0]:
        log.warning("ignoring a counterexample that is not a misclassified point of the domain")
        return math.inf, None
    cex = pull_counterexample(network, x, cex, label)
    return linf_distance_up(cex, x), cex


def push_counterexample(network: Network, x: FloatArray, point: FloatArray, label: int,
                        domain: Box) -> FloatArray | None:
    """A confirmed misclassified point near ``point`` — a solver's optimum on the class
    boundary, possibly a hair on the robust side after rounding: ``point`` itself, or
    the first of ``x + (1 + s) (point - x)`` (``s`` from 1e-9 to 1e-2, within
    ``domain``) that a forward pass misclassifies; then pulled towards ``x``. ``None``
    if none is."""
    if network.misclassified(point, label)[0]:
        return pull_counterexample(network, x, point, label, rounds=5)
    s = np.geomspace(1e-9, 1e-2, 29)
    pts = np.clip(x + (1 + s)[:, None] * (point - x), domain.lower, domain.upper)
    for k in np.flatnonzero(network.margins(pts, label) <= 0)[:3]:
        if network.misclassified(pts[k], label)[0]:
            return pull_counterexample(network, x, pts[k], label, rounds=5)
    return None


def seed_upper(falsifier: Oracle, x: FloatArray, label: int, domain: Box, upper: float = math.inf,
               counterexample: FloatArray | None = None, rounds: int = 4) -> tuple[float, FloatArray | None]:
    """Tighten the upper end (a confirmed counterexample's distance) cheaply with the
    falsifier: without a counterexample, ask it about cubes of radius ``rmax 2^-k``
    (one batched call); then ask just inside the best one, while that makes progress."""
    hi, cex = upper, counterexample
    if math.isinf(hi):
        rmax = float(np.max(np.maximum(x - domain.lower, domain.upper - x)))
        radii = rmax * 0.5 ** np.arange(12)
        los, his = np.maximum(domain.lower, x - radii[:, None]), np.minimum(domain.upper, x + radii[:, None])
        for a in falsifier.verify(los, his, label):
            if a.verdict is Verdict.FALSIFIED:
                pulled = pull_counterexample(falsifier.network, x, a.counterexample, label)
                d = linf_distance_up(pulled, x)
                if d < hi:
                    hi, cex = d, pulled
        if math.isinf(hi):
            return hi, cex
    for _ in range(rounds):
        previous = hi
        hi, cex, _ = _refine_upper(falsifier, x, label, domain, 0.0, hi, hi, cex, 1e-4)
        if hi > previous * (1 - 1e-3):
            break
    return hi, cex


def _refine_upper(falsifier: Oracle, x: FloatArray, label: int, domain: Box, lo: float, top: float, hi: float,
                  cex: FloatArray | None, rel_precision: float) -> tuple[float, FloatArray | None, int]:
    """Ask the falsifier, in one batched call, for counterexamples in cubes just inside the
    search's ceiling ``top`` (radii ``top (1 - rho)`` for rho from ``rel_precision`` up to
    1/2). An attack oracle starts from the known counterexample (if any) projected into each
    cube. Returns the upper end ``hi`` (the distance of a confirmed counterexample, rounded
    up; ``inf`` without one) and its counterexample, each improved by a closer one found."""
    rhos = rel_precision * 2.0 ** np.arange(0, 14)
    radii = top * (1 - rhos[rhos < 0.5])
    radii = radii[radii > lo]
    if not radii.size:
        return hi, cex, 0
    los = np.maximum(domain.lower, x - radii[:, None])
    his = np.minimum(domain.upper, x + radii[:, None])
    search = getattr(falsifier, "search", None)
    if search is not None and cex is not None:
        points, _ = search(los, his, label, starts=np.broadcast_to(cex, los.shape))
        candidates = [p for p in np.clip(points, los, his) if falsifier.network.misclassified(p, label)[0]]
    else:
        candidates = [a.counterexample for a in falsifier.verify(los, his, label) if a.verdict is Verdict.FALSIFIED]
    for point in candidates:
        pulled = pull_counterexample(falsifier.network, x, point, label)
        d = linf_distance_up(pulled, x)
        if d < hi:
            hi, cex = d, pulled
    return hi, cex, 1


def min_adversarial_distance(oracle: Oracle, x: FloatArray, label: int, domain: Box, *, lower: float = 0.0,
                             counterexample: FloatArray | None = None,
                             rel_precision: float = 1e-4, abs_precision: float = 1e-7,
                             falsifier: Oracle | None = None, time_limit: float | None = None,
                             progress: Callable[[str], None] | None = None) -> Distance:
    """Bracket the minimum adversarial L-infinity distance of ``x`` (see module docstring).

    ``lower`` must be a radius already proven robust (0 if ``x`` itself is classified
    ``label``); ``counterexample`` a known misclassified point, if any (re-checked).
    With a ``falsifier`` (e.g. the attack oracle), the upper end is first tightened
    cheaply, and the oracle is asked just inside it (one decision when the falsifier was
    right); a counterexample it returns instead becomes the next upper end. Without a
    falsifier, or once guessing stops making progress, plain bisection.

    An oracle that answers the distance query itself (``oracle.supports("distance")``, e.g.
    ``milp``) is asked directly instead; ``rel_precision`` then does not apply (the
    answer is exact up to the solver's gap).

    ``time_limit`` (seconds) bounds the whole query: each decision is given at most the
    time left (:meth:`Oracle.time_limited`), and the bracket reached is returned.
    ``progress`` (optional) is called with the bracket after each decision.
    """
    if oracle.supports("distance"):
        return oracle.min_distance(x, label, domain, lower=lower, counterexample=counterexample,
                                   falsifier=falsifier, time_limit=time_limit, progress=progress)
    start = time.perf_counter()
    net = oracle.network
    x = np.asarray(x, dtype=np.float64)
    if net.misclassified(x, label)[0]:
        return Distance(0.0, 0.0, x.copy(), 0, 0.0, "x itself is not classified robustly")
    lo = float(lower)
    hi, cex = confirmed_upper(net, x, label, domain, counterexample)
    reason = ""
    decisions = 0
    rmax = float(np.max(np.maximum(x - domain.lower, domain.upper - x)))
    if math.isinf(hi):
        with oracle.time_limited(time_limit):
            a = oracle.verify(*[v[None] for v in cube(x, rmax, domain)], label)[0]
        decisions += 1
        if a.verdict is Verdict.VERIFIED:
            return Distance(math.inf, math.inf, None, decisions, time.perf_counter() - start,
                            "the whole domain is robust")
        if a.verdict is Verdict.FALSIFIED:
            cex = pull_counterexample(net, x, a.counterexample, label)
            hi = linf_distance_up(cex, x)
        else:  # no counterexample: the upper end stays inf, the search stays below rmax
            reason = f"no counterexample: {a.verdict.value} on the whole domain ({a.reason})"
    guesses = 8 if falsifier is not None else 0
    # the smallest radius not proven robust, as far as the search knows (<= hi, the distance
    # of a confirmed counterexample, which alone is a proven upper end)
    top = min(hi, rmax)
    # f(r) = min margin over the cube of radius r: continuous and decreasing. Observations:
    # a verified radius gives a proven lower bound of f, a falsified one an upper bound.
    inside: tuple[float, float] | None = None  # (radius, margin bound > 0)
    outside: list[tuple[float, float]] = []  # (radius, margin <= 0), latest last
    undecided = 0
    sides: list[int] = []  # +1 verified, -1 falsified, per decision
    while top - lo > max(rel_precision * top, abs_precision):
        if time_limit is not None and time.perf_counter() - start > time_limit:
            reason = "time limit"
            break
        if guesses > 0 and len(outside) < 2:
            hi, cex, _ = _refine_upper(falsifier, x, label, domain, lo, top, hi, cex, rel_precision)
            top = min(top, hi)
            r = max(top * (1 - 0.75 * rel_precision), (lo + top) / 2)
        elif undecided or sides[-2:] in ([1, 1], [-1, -1]):
            r = (lo + top) / 2  # safeguard: an estimate that keeps landing on one side is biased
        else:
            r = _next_radius(lo, top, inside, outside, rel_precision)
        remaining = None if time_limit is None else time_limit - (time.perf_counter() - start)
        with oracle.time_limited(remaining):
            a = oracle.verify(*[v[None] for v in cube(x, r, domain)], label)[0]
        decisions += 1
        sides.append(1 if a.verdict is Verdict.VERIFIED else -1 if a.verdict is Verdict.FALSIFIED else 0)
        if a.verdict is Verdict.VERIFIED:
            lo = r
            inside = (r, a.margin) if a.margin is not None and math.isfinite(a.margin) and a.margin > 0 else None
        elif a.verdict is Verdict.FALSIFIED:
            outside.append((r, float(net.margins(a.counterexample, label)[0])))
            cex = pull_counterexample(net, x, a.counterexample, label)
            # the cube asked may reach past r (x ± r rounds to nearest): only the point's own
            # distance, rounded up, is a proven upper end
            previous, hi = hi, min(hi, linf_distance_up(cex, x))
            top = min(top, r, hi)
            # keep guessing just inside the best counterexample while that makes progress
            guesses = guesses - 1 if hi < previous * (1 - 10 * rel_precision) else 0
        elif a.timed_out:
            reason = f"time-out at radius {r:.6g}: {a.reason}"
            break
        else:  # undecided (e.g. the margin is within the proof margin of 0): look lower
            top, guesses, undecided = r, 0, undecided + 1
            reason = f"undecided at radius {r:.6g}: {a.reason}"
            if undecided >= 3:  # the bracket is as tight as the oracle's proof margin allows
                break
        if progress is not None:
            progress(f"best apothem in [{lo:.6g}, {hi:.6g}], {decisions} decisions")
    return Distance(lo, hi, cex, decisions, time.perf_counter() - start, reason)


def _next_radius(lo: float, top: float, inside: tuple[float, float] | None, outside: list[tuple[float, float]],
                 rel_precision: float) -> float:
    """Where f(r) crosses 0, estimated from the margins seen (regula falsi across the
    bracket, else the secant through the last two counterexamples), offset by a quarter
    of the precision towards the wider side of the bracket — so that the answer there,
    VERIFIED below or FALSIFIED above, closes it; bisection when there is no estimate or
    it falls outside the bracket."""
    width = top - lo
    estimate = None
    if inside is not None and outside:
        (r0, f0), (r1, f1) = inside, outside[-1]
        if f0 > f1:
            estimate = r0 + (r1 - r0) * f0 / (f0 - f1)
    elif len(outside) >= 2:
        (r0, f0), (r1, f1) = outside[-2], outside[-1]
        if r0 != r1 and f0 != f1:
            estimate = r1 - f1 * (r1 - r0) / (f1 - f0)
    if estimate is None or not lo < estimate < top:
        return (lo + top) / 2
    offset = 0.25 * rel_precision * top
    r = estimate - offset if estimate - lo > top - estimate else estimate + offset
    return min(max(r, lo + 0.01 * width), top - 0.01 * width)
