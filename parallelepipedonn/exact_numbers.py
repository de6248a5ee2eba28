"""Exact rationals and float64: the float64 numbers just below and above a rational, and
the finite decimals that write a rational exactly (what a VNN-LIB result file prints)."""

from __future__ import annotations

import math
from fractions import Fraction


def float_down(q: Fraction) -> float:
    """The largest float64 ``<= q`` (:class:`OverflowError` beyond float64's range)."""
    num, den = q.numerator, q.denominator
    f = num / den  # correctly rounded to nearest (OverflowError beyond the range)
    if math.isinf(f):
        raise OverflowError(f"{q} is beyond float64's range")
    fn, fd = f.as_integer_ratio()
    if fn * den <= num * fd:
        return f
    below = math.nextafter(f, -math.inf)
    if math.isinf(below):  # q below -max_float, though it rounds to it: no float64 is <= q
        raise OverflowError(f"{q} is beyond float64's range")
    return below


def float_up(q: Fraction) -> float:
    """The smallest float64 ``>= q`` (:class:`OverflowError` beyond float64's range)."""
    return -float_down(-q) + 0.0  # + 0.0: 0.0 rather than -0.0


#: the most decimal places a counterexample's coordinate is written with (a value pinned to
#: a decimal of more, such as 2^-6200, gets no counterexample: ``unknown``, never ``sat``)
MAX_DECIMAL_PLACES = 1000


def decimal_places(q: Fraction) -> int | None:
    """The decimal places ``q`` is written with exactly, for a denominator ``2^a 5^b``:
    ``max(a, b)``; ``None`` for another rational or beyond :data:`MAX_DECIMAL_PLACES`."""
    d = q.denominator
    twos = (d & -d).bit_length() - 1
    d >>= twos
    fives = 0
    while d % 5 == 0 and fives <= MAX_DECIMAL_PLACES:
        d //= 5
        fives += 1
    places = max(twos, fives)
    return places if d == 1 and places <= MAX_DECIMAL_PLACES else None


def is_finite_decimal(q: Fraction) -> bool:
    """Whether ``q`` is written exactly by a decimal of at most :data:`MAX_DECIMAL_PLACES`
    places (its denominator is ``2^a 5^b``)."""
    return decimal_places(q) is not None


def decimal_text(q: Fraction) -> str:
    """The finite decimal ``q`` (:func:`is_finite_decimal`) written exactly, e.g. ``0.3``,
    ``-12.0625`` (``ValueError`` for another rational)."""
    k = decimal_places(q)
    if k is None or abs(q) >= Fraction(10) ** 400:
        raise ValueError(f"{q} has no finite decimal expansion of at most {MAX_DECIMAL_PLACES} places")
    digits = str(abs(q.numerator) * (10**k // q.denominator)).rjust(k + 1, "0")
    sign = "-" if q < 0 else ""
    return f"{sign}{digits[:len(digits) - k]}.{digits[len(digits) - k:] or '0'}"


def is_float64(q: Fraction) -> bool:
    """Whether ``q`` is a float64 number."""
    try:
        f = float(q)
    except OverflowError:
        return False
    return math.isfinite(f) and Fraction(f) == q


def to_float64(q: Fraction) -> float:
    """``q`` rounded to the nearest float64 (infinite beyond its range)."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


__all__ = ["MAX_DECIMAL_PLACES", "decimal_places", "decimal_text", "float_down", "float_up", "is_finite_decimal",
           "is_float64", "to_float64"]
