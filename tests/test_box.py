"""Boxes and the metrics of certifications (apothem, min edge, log-volume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelepipedonn.box import Box, check_in_domain
from parallelepipedonn.errors import InputDataError

UNIT3 = Box.unit(3)


def test_box_is_an_immutable_value():
    b = Box([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError):
        b.lower[0] = 0.0
    with pytest.raises(AttributeError):
        b.lower = np.zeros(2)  # type: ignore[misc]
    assert b == Box(np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    assert hash(b) == hash(Box([0.1, 0.2], [0.3, 0.4]))


def test_empty_or_nan_boxes_are_rejected():
    with pytest.raises(ValueError, match="empty box"):
        Box([0.5], [0.4])
    with pytest.raises(ValueError, match="NaN"):
        Box([np.nan], [0.4])


def test_apothem_ignores_faces_on_the_domain_boundary():
    x = np.array([0.0, 0.5, 1.0])
    b = Box([0.0, 0.3, 0.9], [0.2, 0.6, 1.0])
    # coordinate 0: lower face on D's boundary, upper slack 0.2; coordinate 1: slacks
    # 0.2 and 0.1; coordinate 2: upper face on the boundary, lower slack 0.1.
    assert b.apothem(x, UNIT3) == pytest.approx(0.1)
    assert b.slack(x, UNIT3) == pytest.approx([0.2, 0.1, 0.1])


def test_apothem_of_the_whole_domain_is_infinite():
    assert UNIT3.apothem([0.2, 0.3, 0.4], UNIT3) == math.inf


def test_apothem_of_a_point_box_is_zero_inside_the_domain():
    x = [0.2, 0.3, 0.4]
    assert Box.point(x).apothem(x, UNIT3) == 0.0


def test_apothem_requires_the_point_inside_the_box():
    with pytest.raises(ValueError):
        Box([0.1] * 3, [0.2] * 3).apothem([0.5] * 3, UNIT3)


def test_min_edge_and_log_volume():
    b = Box([0.0, 0.0], [0.5, 0.25])
    assert b.min_edge() == 0.25
    assert b.log_volume() == pytest.approx(math.log(0.5) + math.log(0.25))
    assert Box([0.0, 0.1], [0.5, 0.1]).log_volume() == -math.inf


@given(st.lists(st.floats(0, 1), min_size=1, max_size=6), st.floats(0, 2))
def test_cube_is_the_ball_within_the_domain(xs, r):
    x = np.array(xs)
    dom = Box.unit(len(xs))
    cube = Box.cube(x, r, dom)
    assert dom.contains_box(cube) and cube.contains(x)
    # its apothem is r, unless it covers the domain (inf); rounding of x +/- r aside
    a = cube.apothem(x, dom)
    assert a == math.inf or a == pytest.approx(r, abs=1e-12)
    # and every point of the domain within distance r is inside
    rng = np.random.default_rng(0)
    pts = np.clip(x + rng.uniform(-r, r, (50, len(xs))), 0, 1)
    assert cube.contains_points(pts).all()


@given(st.integers(1, 5), st.integers(0, 10_000))
def test_apothem_is_the_largest_radius_whose_ball_fits(n, seed):
    rng = np.random.default_rng(seed)
    dom = Box.unit(n)
    lo, hi = np.sort(rng.random((2, n)), axis=0)
    lo = np.where(rng.random(n) < 0.3, 0.0, lo)
    hi = np.where(rng.random(n) < 0.3, 1.0, hi)
    x = lo + rng.random(n) * (hi - lo)
    b = Box(lo, hi)
    a = b.apothem(x, dom)
    if math.isinf(a):
        assert b == dom
        return
    assert b.contains_box(Box.cube(x, a, dom))
    assert not b.contains_box(Box.cube(x, a + 1e-9, dom))


def test_intersection_and_containment():
    a, b = Box([0, 0], [2, 2]), Box([1, 1], [3, 3])
    assert a.intersect(b) == Box([1, 1], [2, 2])
    assert a.contains_box(a.intersect(b))
    with pytest.raises(ValueError):
        a.intersect(Box([5, 5], [6, 6]))


def test_samples_and_vertices_lie_in_the_box(rng):
    b = Box([0.1, 0.2, 0.3], [0.2, 0.4, 0.9])
    assert b.contains_points(b.samples(100, rng)).all()
    v = b.vertices_sample(100, rng)
    assert b.contains_points(v).all()
    assert np.isin(v, np.concatenate([b.lower, b.upper])).all()


@pytest.mark.parametrize("x, message", [
    (np.array([0.5, np.nan, 0.5]), "non-finite"),
    (np.array([0.5, 1.5, 0.5]), "outside the domain"),
    (np.array([0.5, 0.5]), "has 2 values"),
])
def test_check_in_domain_rejects_bad_points(x, message):
    with pytest.raises(InputDataError, match=message):
        check_in_domain(x, UNIT3)


def test_the_apothem_is_rounded_down_so_that_its_cube_lies_in_the_box():
    """``1 - 2^-60`` rounds to 1 in float64: the slack of ``x = 1`` to the face ``2^-60`` was
    reported as 1, more than the exact distance (a certified accuracy at ``epsilon = 1``
    would have counted it)."""
    from fractions import Fraction

    box = Box(np.array([2.0 ** -60]), np.array([2.0]))  # the upper face on the domain's boundary
    domain = Box(np.array([-1.0]), np.array([2.0]))
    a = box.apothem(np.array([1.0]), domain)
    assert Fraction(a) <= 1 - Fraction(2) ** -60 and a == np.nextafter(1.0, 0.0)
    assert Box.outer_cube(np.array([1.0]), a, domain).lower[0] >= 2.0 ** -60


@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=1, max_size=4),
       st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=1, max_size=4))
def test_the_distance_rounded_up_is_at_least_the_exact_one_and_within_a_unit(a, b):
    from fractions import Fraction

    from parallelepipedonn.box import linf_distance_up

    n = min(len(a), len(b))
    a, b = np.array(a[:n]), np.array(b[:n])
    exact = max(abs(Fraction(p) - Fraction(q)) for p, q in zip(a, b))
    d = linf_distance_up(a, b)
    assert Fraction(d) >= exact and (d == 0 or Fraction(np.nextafter(d, 0)) < exact)


def test_the_distance_rounded_up_where_the_rounding_error_times_the_difference_underflows():
    from fractions import Fraction

    from parallelepipedonn.box import linf_distance_up

    a, b = np.array([1e-160 + 1e-176]), np.array([-3e-177])  # d ~ 1e-160, error ~ 1e-177: product 0
    d = linf_distance_up(a, b)
    assert Fraction(d) >= Fraction(float(a[0])) - Fraction(float(b[0]))
