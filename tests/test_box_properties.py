"""Properties of boxes and of the metrics of certifications, for random boxes (hypothesis)."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelepipedonn.box import Box
from parallelepipedonn.certificate import Certificate
from parallelepipedonn.search.base import Status

UNIT = st.floats(0, 1, allow_nan=False)
MANY = settings(max_examples=150)  # each example takes microseconds


@st.composite
def boxes(draw, n: int | None = None, within: Box | None = None) -> Box:
    """A box of the unit cube (or of ``within``), with faces often on its boundary and
    edges sometimes of zero width."""
    n = n if n is not None else (within.n if within is not None else draw(st.integers(1, 6)))
    dom = within if within is not None else Box.unit(n)
    a = np.array(draw(st.lists(UNIT, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(UNIT, min_size=n, max_size=n)))
    lo = dom.lower + np.minimum(a, b) * dom.width
    hi = np.minimum(dom.lower + np.maximum(a, b) * dom.width, dom.upper)
    on_lower = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    on_upper = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return Box(np.where(on_lower, dom.lower, lo), np.where(on_upper, dom.upper, hi))


@st.composite
def box_and_point(draw) -> tuple[Box, np.ndarray, Box]:
    """A domain (the unit cube or a random sub-box of a larger one), a box in it and a
    point of the box."""
    n = draw(st.integers(1, 6))
    dom = draw(st.sampled_from([Box.unit(n), Box(np.full(n, -2.0), np.full(n, 3.0))]))
    box = draw(boxes(within=dom))
    t = np.array(draw(st.lists(UNIT, min_size=n, max_size=n)))
    x = np.clip(box.lower + t * box.width, box.lower, box.upper)
    return box, x, dom


@MANY
@given(boxes())
def test_min_edge_and_log_volume_are_those_of_the_widths(box):
    w = box.upper - box.lower
    assert box.min_edge() == w.min() >= 0
    if box.min_edge() == 0:
        assert box.log_volume() == -math.inf
    else:
        assert math.isclose(box.log_volume(), float(np.log(w).sum()), rel_tol=1e-12, abs_tol=1e-12)
        assert box.log_volume() <= box.n * math.log(w.max()) + 1e-12


@MANY
@given(box_and_point())
def test_slack_and_apothem(case):
    box, x, dom = case
    s = box.slack(x, dom)
    assert (s >= 0).all()
    both_on_boundary = (box.lower <= dom.lower) & (box.upper >= dom.upper)
    assert (np.isinf(s) == both_on_boundary).all()  # infinite exactly where no face limits
    a = box.apothem(x, dom)
    assert a == s.min()
    assert (a == math.inf) == (box == dom)
    interior = (box.lower > dom.lower) & (box.upper < dom.upper)
    if interior.any():  # a coordinate with both faces inside the domain: x is at most mid-way
        assert a <= box.width[interior].min() / 2 + 1e-15
    one_face = (box.lower > dom.lower) | (box.upper < dom.upper)
    if one_face.any():
        assert a <= box.width[one_face].min() + 1e-15


@MANY
@given(box_and_point(), st.data())
def test_the_metrics_are_monotone_under_inclusion(case, data):
    box, x, dom = case
    outer = data.draw(boxes(within=dom))
    outer = Box(np.minimum(outer.lower, box.lower), np.maximum(outer.upper, box.upper))
    assert outer.contains_box(box) and outer.contains(x)
    assert box.apothem(x, dom) <= outer.apothem(x, dom)
    assert box.min_edge() <= outer.min_edge()
    assert box.log_volume() <= outer.log_volume()


@MANY
@given(box_and_point(), st.floats(0, 5), st.floats(0, 5))
def test_cubes_grow_with_their_radius_and_start_as_the_point(case, r1, r2):
    _, x, dom = case
    small, large = sorted((r1, r2))
    assert Box.cube(x, large, dom).contains_box(Box.cube(x, small, dom))
    assert Box.cube(x, 0.0, dom) == Box.point(x)
    assert dom.contains_box(Box.cube(x, large, dom))


@MANY
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(boxes(n=n), boxes(n=n), boxes(n=n))))
def test_intersection_is_idempotent_commutative_associative_and_the_largest_common_box(abc):
    a, b, c = abc
    assert a.intersect(a) == a
    assert a.intersect(Box.unit(a.n)) == a
    try:
        ab = a.intersect(b)
    except ValueError:  # disjoint: some coordinate's intervals do not meet
        assert ((a.upper < b.lower) | (b.upper < a.lower)).any()
        return
    assert ab == b.intersect(a)
    assert a.contains_box(ab) and b.contains_box(ab)
    rng = np.random.default_rng(0)
    pts = np.concatenate([a.samples(50, rng), b.samples(50, rng), ab.samples(20, rng)])
    assert (ab.contains_points(pts) == (a.contains_points(pts) & b.contains_points(pts))).all()
    try:
        left = ab.intersect(c)
    except ValueError:
        return
    assert left == a.intersect(b.intersect(c))


@MANY
@given(boxes(), st.data())
def test_clip_projects_onto_the_box_and_is_idempotent(box, data):
    p = np.array(data.draw(st.lists(st.floats(-3, 3), min_size=box.n, max_size=box.n)))
    q = box.clip(p)
    assert box.contains(q) and (box.clip(q) == q).all()
    assert box.contains(p) == bool((q == p).all())
    assert (np.abs(q - p) <= np.abs(box.center - p) + 1e-12).all()  # no farther than any point of the box


@MANY
@given(boxes())
def test_boxes_are_values(box):
    same = Box(box.lower.copy(), box.upper.copy())
    assert same == box and hash(same) == hash(box)
    assert Box.point(box.lower).contains_box(Box.point(box.lower)) and box.contains_box(Box.point(box.center))


@settings(max_examples=30)
@given(box_and_point())
def test_stored_metrics_survive_the_json_round_trip(case):
    box, x, dom = case
    cert = Certificate(status=Status.CERTIFIED, label=0, predicted_label=0, input=x, input_shape=(x.size,),
                       domain=dom, box=box, apothem_upper_bound=None, oracle="crown", oracle_settings={},
                       algorithm="apothem-kary", algorithm_settings={}, oracle_calls=1, rounds=1, seconds=0.0)
    back = Certificate.from_dict(json.loads(cert.to_json()))
    assert back.box == box and back.domain == dom and (back.input == x).all()
    assert back.apothem == cert.apothem and back.min_edge == cert.min_edge and back.log_volume == cert.log_volume
