"""Counterexamples of VNN-LIB properties, decided exactly: a point of a region's exact
box (float64 numbers, or exact rationals where an input's interval holds no float64
number: an input pinned to 0.3) whose exact outputs violate one of its disjuncts.

The outputs are computed in exact arithmetic on the model's float64 weights
(:mod:`parallelepipedonn.graph_exact`; rational points through positive homogeneity), so
a confirmed counterexample is one of the model in exact arithmetic, as every proof is.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InputDataError
from .exact_numbers import is_finite_decimal, is_float64
from .network import Network
from .vnnlib import Region

if TYPE_CHECKING:
    from .graph import Graph

FloatArray = NDArray[np.float64]
#: A point: float64 numbers, or exact rationals where some coordinate is no float64 number.
Point = FloatArray | tuple[Fraction, ...]


def as_point(x: ArrayLike | Sequence[Fraction]) -> Point:
    """``x`` as a :data:`Point`: a float64 array, unless some coordinate is a
    :class:`Fraction` that is no float64 number (then the tuple of its exact rationals)."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        x = x.reshape(-1).tolist()
    if isinstance(x, (list, tuple)) and any(isinstance(v, Fraction) for v in x):
        qs = tuple(v if type(v) is Fraction else Fraction(v) for v in x)
        if not all(is_float64(q) for q in qs):
            return qs
        return np.array([float(q) for q in qs], dtype=np.float64)
    return np.asarray(x, dtype=np.float64).reshape(-1)


def exact_outputs(model: Network | Graph, x: ArrayLike | Sequence[Fraction]) -> list[Fraction]:
    """The model's outputs at the point ``x`` in exact arithmetic on its float64 weights
    (integer arithmetic on scaled mantissas, :mod:`parallelepipedonn.graph_exact`): a
    float64 point, or exact rationals (:class:`Fraction` s: a point whose coordinates are
    not all float64 numbers). The model file's outputs only (not the IR's
    :attr:`~parallelepipedonn.classifier.Classifier.zero_outputs`)."""
    from .graph import as_graph
    from .graph_exact import exact_logits, exact_logits_rational

    p = as_point(x)
    if len(p) != model.n_inputs:
        raise InputDataError(f"the point has {len(p)} coordinates, the network {model.n_inputs} inputs")
    if isinstance(p, np.ndarray):
        ints, exp = exact_logits(as_graph(model), p)
        scale = Fraction(2) ** exp
        return [Fraction(int(v)) * scale for v in ints[:model.n_outputs]]
    ints, exp, d = exact_logits_rational(as_graph(model), p)
    scale = Fraction(2) ** exp / d
    return [Fraction(int(v)) * scale for v in ints[:model.n_outputs]]


def snap_to_region(region: Region, point: ArrayLike | Sequence[Fraction] | None) -> Point | None:
    """``point`` if it lies in the region's exact box; else its projection on the box's
    float64 points, an input whose interval holds no float64 number (one pinned to 0.3)
    taking the finite decimal :meth:`Region.decimal_value` of it; ``None`` if there is no
    such point, or ``point`` is not one of ``region``'s size with finite coordinates."""
    if point is None:
        return None
    try:
        p = as_point(point)
    except (TypeError, ValueError, OverflowError):  # a Fraction of NaN, or not numbers
        return None
    if len(p) != region.n_inputs:
        return None
    if isinstance(p, np.ndarray):
        if not np.isfinite(p).all():
            return None
        if region.contains(p):
            return p
    elif region.contains_exact(p) and all(map(is_finite_decimal, p)):  # (a result file writes it exactly)
        return p
    coords: list[float | Fraction] = []
    for i, (v, interval) in enumerate(zip(p, region.inner_intervals())):
        if interval is None:
            q = region.decimal_value(i)
            if q is None:
                return None
            coords.append(q)
        elif isinstance(v, Fraction):
            coords.append(min(max(v, Fraction(interval[0])), Fraction(interval[1])))
        else:
            coords.append(min(max(float(v), interval[0]), interval[1]))
    snapped = as_point(coords)
    if isinstance(snapped, np.ndarray):
        return snapped if region.contains(snapped) else None
    return snapped if region.contains_exact(snapped) and all(map(is_finite_decimal, snapped)) else None


def confirm_counterexample(model: Network | Graph, region: Region,
                           point: ArrayLike | Sequence[Fraction] | None) -> Point | None:
    """``point`` (or, if it lies just outside, its projection :func:`snap_to_region`) when
    it lies in the region's box and its outputs satisfy every constraint of one of its
    disjuncts, both decided exactly; else ``None``. A float64 array where every coordinate
    is a float64 number, else the exact rationals (an input pinned to 0.3)."""
    x = snap_to_region(region, point)
    if x is None:
        return None
    return x if region.violated_disjunct(exact_outputs(model, x)) is not None else None


def region_center(region: Region) -> Point | None:
    """The center of the region's float64 points, per input; where an input's interval
    holds no float64 number, the finite decimal :meth:`Region.decimal_value` of it."""
    coords: list[float | Fraction] = []
    for i, interval in enumerate(region.inner_intervals()):
        if interval is None:
            q = region.decimal_value(i)
            if q is None:
                return None
            coords.append(q)
        else:
            lo, hi = interval
            coords.append(min(max(lo + (hi - lo) / 2, lo), hi))
    return as_point(coords)

__all__ = ["Point", "as_point", "confirm_counterexample", "exact_outputs", "region_center", "snap_to_region"]
