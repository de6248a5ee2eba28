"""Axis-aligned boxes and the metrics of certifications.

A :class:`Box` is an immutable pair of flat float64 arrays ``lower <= upper``.
All operations are pure: they return new boxes.

Metrics (see README, "Definitions"):

* apothem of ``B`` around ``x`` within the domain ``D``: the largest ``r`` such that
  ``{x' in D : ||x' - x||_inf <= r}`` is a subset of ``B``; faces of ``B`` that lie on
  ``D``'s boundary do not limit it (``inf`` when ``B`` covers ``D``);
* min edge length: ``min_i (upper_i - lower_i)``;
* log-volume: ``sum_i log(upper_i - lower_i)`` (``-inf`` if an edge has zero length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InputDataError

FloatArray = NDArray[np.float64]


def _frozen(a: ArrayLike) -> FloatArray:
    arr = np.array(a, dtype=np.float64).reshape(-1)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Box:
    """The closed box ``[lower, upper]`` of R^n (flat, float64, read-only)."""

    lower: FloatArray
    upper: FloatArray

    def __post_init__(self) -> None:
        lo, hi = _frozen(self.lower), _frozen(self.upper)
        if lo.shape != hi.shape:
            raise ValueError(f"lower has {lo.size} values, upper {hi.size}")
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError("box bounds contain NaN")
        if (lo > hi).any():
            i = int(np.argmax(lo > hi))
            raise ValueError(f"empty box: lower[{i}]={lo[i]} > upper[{i}]={hi[i]}")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def unit(cls, n: int) -> Box:
        """The default domain ``[0, 1]^n``."""
        return cls(np.zeros(n), np.ones(n))

    @classmethod
    def point(cls, x: ArrayLike) -> Box:
        """The degenerate box ``[x, x]``."""
        return cls(x, x)

    @classmethod
    def cube(cls, x: ArrayLike, radius: float, domain: Box) -> Box:
        """``{x' in domain : ||x' - x||_inf <= radius}`` as a box (``radius >= 0``)."""
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        return cls(np.maximum(domain.lower, xa - radius), np.minimum(domain.upper, xa + radius))

    @classmethod
    def outer_cube(cls, x: ArrayLike, radius: float, domain: Box) -> Box:
        """The smallest float64 box containing ``{x' in domain : ||x' - x||_inf <= radius}``
        in exact arithmetic: :meth:`cube` with ``x - radius`` and ``x + radius`` rounded
        outward instead of to nearest (their rounding errors found exactly, by TwoSum)."""
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        r = np.float64(radius)
        with np.errstate(over="ignore", invalid="ignore"):
            lo, lo_err = _two_sum(xa, -r)
            hi, hi_err = _two_sum(xa, r)
        lo = np.where(lo_err < 0, np.nextafter(lo, -np.inf), lo)
        hi = np.where(hi_err > 0, np.nextafter(hi, np.inf), hi)
        return cls(np.maximum(domain.lower, lo), np.minimum(domain.upper, hi))

    # -- basic properties -------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.lower.size)

    @property
    def width(self) -> FloatArray:
        return self.upper - self.lower

    @property
    def center(self) -> FloatArray:
        return (self.lower + self.upper) / 2

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Box):
            return NotImplemented
        return bool(np.array_equal(self.lower, other.lower) and np.array_equal(self.upper, other.upper))

    def __hash__(self) -> int:
        return hash((self.lower.tobytes(), self.upper.tobytes()))

    def __repr__(self) -> str:
        return f"Box(n={self.n}, min_edge={self.min_edge():.6g})"

    # -- set relations ----------------------------------------------------------------
    def contains(self, point: ArrayLike) -> bool:
        p = np.asarray(point, dtype=np.float64).reshape(-1)
        return bool(p.shape == self.lower.shape and (p >= self.lower).all() and (p <= self.upper).all())

    def contains_points(self, points: ArrayLike) -> NDArray[np.bool_]:
        """Row-wise membership of a ``(k, n)`` array of points."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, self.n)
        return ((p >= self.lower) & (p <= self.upper)).all(axis=1)

    def contains_box(self, other: Box) -> bool:
        return bool((other.lower >= self.lower).all() and (other.upper <= self.upper).all())

    def intersect(self, other: Box) -> Box:
        lo, hi = np.maximum(self.lower, other.lower), np.minimum(self.upper, other.upper)
        if (lo > hi).any():
            raise ValueError("the boxes do not intersect")
        return Box(lo, hi)

    def clip(self, points: ArrayLike) -> FloatArray:
        """Project points (any leading shape, last axis ``n``) onto the box."""
        return np.clip(np.asarray(points, dtype=np.float64), self.lower, self.upper)

    # -- metrics ----------------------------------------------------------------------
    def min_edge(self) -> float:
        return float(self.width.min()) if self.n else 0.0

    def log_volume(self) -> float:
        w = self.width
        if (w <= 0).any():
            return -math.inf
        return float(np.log(w).sum())

    def slack(self, x: ArrayLike, domain: Box) -> FloatArray:
        """Per-coordinate distance from ``x`` to the nearest face of the box that is not on
        the domain's boundary (``inf`` where both faces lie on it), rounded down: the cube
        of that radius around ``x`` lies in the box, in exact arithmetic."""
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        if not self.contains(xa):
            raise ValueError("the point is not inside the box")
        with np.errstate(over="ignore", invalid="ignore"):
            below = _difference_down(xa, self.lower)
            above = _difference_down(self.upper, xa)
        below = np.where(self.lower > domain.lower, below, np.inf)
        above = np.where(self.upper < domain.upper, above, np.inf)
        return np.minimum(below, above)

    def apothem(self, x: ArrayLike, domain: Box) -> float:
        """Apothem of the box around ``x`` within ``domain`` (``inf`` if it covers it)."""
        s = self.slack(x, domain)
        return float(s.min()) if s.size else math.inf

    def samples(self, k: int, rng: np.random.Generator) -> FloatArray:
        """``k`` points drawn uniformly from the box (shape ``(k, n)``)."""
        return self.lower + rng.random((k, self.n)) * self.width

    def vertices_sample(self, k: int, rng: np.random.Generator) -> FloatArray:
        """``k`` random vertices of the box (shape ``(k, n)``)."""
        bits = rng.random((k, self.n)) < 0.5
        return np.where(bits, self.upper, self.lower)


def _two_sum(a: FloatArray, b: FloatArray | np.float64) -> tuple[FloatArray, FloatArray]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``a + b = s + e`` exactly (Knuth's TwoSum)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


def _difference_down(a: FloatArray, b: FloatArray) -> FloatArray:
    """The largest float64 at most ``a - b`` (``a >= b``; ``inf`` where it overflows)."""
    d, err = _two_sum(a, -b)
    return np.where(np.isfinite(d) & (err < 0), np.nextafter(d, -np.inf), d)


def linf_distance_up(a: ArrayLike, b: ArrayLike) -> float:
    """``||a - b||_inf`` rounded up: the smallest float64 at least the exact distance (an
    upper bound of a distance stays one; ``inf`` where a difference overflows)."""
    a64, b64 = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if not a64.size:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        d, err = _two_sum(a64, -b64)
        # |a - b| = |d + err| > |d| where err has d's sign (signs compared: their product can
        # underflow); an error that is not a number is taken as one
        above = (np.sign(err) == np.sign(d)) & (err != 0) | np.isnan(err)
        up = np.where(np.isfinite(d) & above, np.nextafter(np.abs(d), np.inf), np.abs(d))
    return float(up.max())


def check_in_domain(x: FloatArray, domain: Box, what: str = "input") -> None:
    """Raise :class:`InputDataError` unless ``x`` is a finite point of ``domain``."""
    if x.size != domain.n:
        raise InputDataError(f"{what} has {x.size} values, the domain has {domain.n}")
    if not np.isfinite(x).all():
        i = int(np.argmax(~np.isfinite(x)))
        raise InputDataError(f"{what} has a non-finite value ({x[i]}) at position {i}")
    outside = (x < domain.lower) | (x > domain.upper)
    if outside.any():
        i = int(np.argmax(outside))
        raise InputDataError(
            f"{what} value {x[i]:.6g} at position {i} is outside the domain "
            f"[{domain.lower[i]:.6g}, {domain.upper[i]:.6g}]"
        )
