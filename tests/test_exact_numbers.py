"""Exact rationals and float64: the finite decimals a result file writes."""

from __future__ import annotations

from fractions import Fraction

import pytest

from parallelepipedonn.exact_numbers import MAX_DECIMAL_PLACES, decimal_text, is_finite_decimal


@pytest.mark.parametrize("q, text", [(Fraction(3, 10), "0.3"), (Fraction(-1, 8), "-0.125"), (Fraction(7), "7.0"),
                                     (Fraction(1, 1250), "0.0008"), (Fraction(-121, 16), "-7.5625")])
def test_a_finite_decimal_is_written_exactly(q, text):
    assert is_finite_decimal(q) and decimal_text(q) == text and Fraction(text) == q
    assert not is_finite_decimal(Fraction(1, 3)) and not is_finite_decimal(Fraction(1, 30))
    with pytest.raises(ValueError):
        decimal_text(Fraction(2, 3))


def test_a_decimal_of_more_places_than_the_limit_is_not_written():
    assert decimal_text(Fraction(1, 10**MAX_DECIMAL_PLACES)).endswith("01")
    for q in (Fraction(1, 10**(MAX_DECIMAL_PLACES + 1)), Fraction(1, 2**6200), Fraction(1, 5**4000)):
        assert not is_finite_decimal(q)
        with pytest.raises(ValueError):
            decimal_text(q)
