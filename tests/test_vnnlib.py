"""VNN-LIB properties as VNN-COMP writes them: parsed into exact input boxes and unsafe
output constraints; every malformed or unsupported file is one error naming its line."""

from __future__ import annotations

import gzip
import math
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelepipedonn.errors import InputDataError, PropertyError
from parallelepipedonn.vnnlib import (
    MAX_CASES,
    float_down,
    float_up,
    format_counterexample,
    is_finite_decimal,
    parse_vnnlib,
    read_vnnlib,
)


def declarations(n: int, m: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(m))


def box(lower, upper) -> str:
    return "".join(f"(assert (<= X_{i} {hi}))\n(assert (>= X_{i} {lo}))\n" for i, (lo, hi) in enumerate(zip(lower, upper)))


def robustness_text(label: int, lower, upper, m: int = 10) -> str:
    """A property in the form of VNN-COMP's MNIST and CIFAR benchmarks."""
    cases = "\n".join(f"    (and (>= Y_{j} Y_{label}))" for j in range(m) if j != label)
    return (f"; robustness property, label {label}\n\n" + declarations(len(lower), m) + "\n; Input constraints:\n" +
            box(lower, upper) + f"\n; Output constraints:\n(assert (or\n{cases}\n))\n")


def test_a_robustness_property_is_one_box_and_one_case_per_other_class():
    prop = parse_vnnlib(robustness_text(3, ["0.0", "0.25"], ["0.1", "0.5"]), "p.vnnlib")
    assert (prop.n_inputs, prop.n_outputs) == (2, 10) and len(prop.regions) == 1
    region = prop.regions[0]
    assert [b.value for b in region.lower] == [0, Fraction(1, 4)]
    assert [b.value for b in region.upper] == [Fraction(1, 10), Fraction(1, 2)]  # exact, not float64's 0.1
    assert region.upper[0].line == 17 and region.lower[0].line == 18
    assert len(region.disjuncts) == 9 and all(len(d) == 1 for d in region.disjuncts)
    c = region.disjuncts[0][0]  # Y_0 >= Y_3, i.e. Y_3 - Y_0 <= 0
    assert c.coefficients == ((0, -1), (3, 1)) and c.rhs == 0 and not c.strict
    assert prop.describe() == "2 inputs, 10 outputs; 1 input box, 9 unsafe cases"


def test_the_outer_box_contains_the_exact_box_and_the_inner_box_lies_in_it():
    region = parse_vnnlib(robustness_text(0, ["0.1", "-0.3"], ["0.7", "1e-05"]), "p").regions[0]
    lo, hi = region.outer_box()
    inner = region.inner_box()
    assert inner is not None
    for i in range(2):
        exact_lo, exact_hi = region.lower[i].value, region.upper[i].value
        assert Fraction(lo[i]) <= exact_lo <= Fraction(inner[0][i]) <= Fraction(inner[1][i]) <= exact_hi <= Fraction(hi[i])
    assert lo[0] < 0.1 == inner[0][0]  # 0.1 rounds up, so the float 0.1 lies inside; the outer bound is below it
    assert region.contains(inner[0]) and region.contains(inner[1]) and not region.contains(lo)


def test_points_are_in_the_box_exactly():
    region = parse_vnnlib(declarations(1, 2) + "(assert (>= X_0 0))\n(assert (<= X_0 0.1))\n(assert (<= Y_0 Y_1))",
                          "p").regions[0]
    assert region.contains([0.0]) and region.contains([0.09999999999999999])
    assert not region.contains([0.1])  # the float 0.1 is 0.1000000000000000055... > 1/10
    strict = parse_vnnlib(declarations(1, 2) + "(assert (> X_0 0))\n(assert (< X_0 0.5))\n(assert (<= Y_0 Y_1))",
                          "p").regions[0]
    assert not strict.contains([0.0]) and not strict.contains([0.5]) and strict.contains([0.25])
    assert strict.inner_box()[0][0] == 5e-324 and strict.inner_box()[1][0] == math.nextafter(0.5, 0)


def test_acas_xu_style_conjunctions_and_single_output_bounds():
    text = declarations(5, 5) + box(["-0.3"] * 5, ["0.5"] * 5) + (
        "; unsafe if COC is minimal\n(assert (<= Y_0 Y_1))\n(assert (<= Y_0 Y_2))\n(assert (<= Y_0 Y_3))\n"
        "(assert (<= Y_0 Y_4))\n")
    (region,) = parse_vnnlib(text, "prop_3.vnnlib").regions
    assert len(region.disjuncts) == 1 and len(region.disjuncts[0]) == 4
    one = parse_vnnlib(declarations(5, 5) + box(["0"] * 5, ["1"] * 5) + "(assert (>= Y_0 3.991125645861615))", "p")
    (c,), = one.regions[0].disjuncts
    assert c.coefficients == ((0, -1),) and c.rhs == -Fraction("3.991125645861615")
    assert c.holds([Fraction(4), 0, 0, 0, 0]) and not c.holds([Fraction(3), 0, 0, 0, 0])


def test_linear_expressions_and_relations():
    text = declarations(2, 3) + (
        "(assert (<= 0 X_0 1))\n"  # chained
        "(assert (= X_1 0.5))\n"
        "(assert (or (and (>= (+ Y_0 (* -1 Y_2)) 0.0))\n"
        "            (and (< (- Y_0 Y_1) (/ 1 4)) (> (* 2 (- Y_2 0.5)) Y_1))))\n")
    (region,) = parse_vnnlib(text, "p").regions
    assert [b.value for b in region.lower] == [0, Fraction(1, 2)] and [b.value for b in region.upper] == [1, Fraction(1, 2)]
    first, second = region.disjuncts
    assert first[0].coefficients == ((0, -1), (2, 1)) and first[0].rhs == 0  # Y_2 - Y_0 <= 0
    a, b = second
    assert a.coefficients == ((0, 1), (1, -1)) and a.rhs == Fraction(1, 4) and a.strict
    assert b.coefficients == ((1, 1), (2, -2)) and b.rhs == -1 and b.strict  # Y_1 - 2 Y_2 < -1
    y = [Fraction(0), Fraction(0), Fraction(1)]
    assert region.violated_disjunct(y) == 1  # Y_2 - Y_0 = 1 > 0 (not the first); 0 < 1/4 and 0 - 2 < -1
    assert region.violated_disjunct([Fraction(0)] * 3) == 0


def test_input_disjunctions_make_one_region_per_box_and_shared_boxes_merge():
    text = declarations(1, 2) + (
        "(assert (or (and (>= X_0 0) (<= X_0 0.5) (<= Y_0 Y_1))\n"
        "            (and (>= X_0 0.5) (<= X_0 1) (<= Y_0 0))\n"
        "            (and (>= X_0 0) (<= X_0 0.5) (>= Y_0 7))))\n")
    prop = parse_vnnlib(text, "p")
    assert len(prop.regions) == 2
    assert [len(r.disjuncts) for r in prop.regions] == [2, 1]
    assert prop.describe() == "1 inputs, 2 outputs; 2 input boxes, 3 unsafe cases"


def test_comments_declare_fun_and_solver_commands_are_accepted(tmp_path):
    text = ("; a comment (with parentheses\n(set-logic QF_LRA)\n(declare-fun X_0 () Real) ; X\n"
            "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (<= X_0 1)) (assert (>= X_0 0))\n"
            "(assert (<= Y_0 Y_1))\n(check-sat)\n(get-model)\n")
    prop = parse_vnnlib(text, "p")
    assert prop.n_inputs == 1 and len(prop.regions[0].disjuncts) == 1
    gz = tmp_path / "p.vnnlib.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert read_vnnlib(gz).regions[0].disjuncts == prop.regions[0].disjuncts


def test_an_unsatisfiable_property_has_no_region_and_an_output_free_case_is_unsafe_everywhere():
    assert parse_vnnlib(declarations(1, 2) + box(["0"], ["1"]) + "(assert (<= 1 0))", "p").regions == ()
    (region,) = parse_vnnlib(declarations(1, 2) + box(["0"], ["1"]) + "(assert (<= 0 1))", "p").regions
    assert region.disjuncts == ((),)


BAD = [
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real))", 2, "unbalanced ')'"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)", 3, "never closed"),
    ("(declare-const X_0 Real)\nX_0", 2, "outside parentheses"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(minimize X_0)", 3, "unsupported command 'minimize'"),
    ("(declare-const X_0 Real)\n(declare-const X_0 Real)", 2, "declared twice"),
    ("(declare-const X_0 Int)", 1, "only Real"),
    ("(declare-const Z_0 Real)", 1, "VNN-LIB names inputs X_i"),
    ("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)", 2, "X_1 is not"),
    (("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
      "(assert (<= (* Y_0 Y_0) 1))"), 5, "product of variables"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 Y_0))", 3, "mixing inputs and outputs"),
    ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(assert (<= (+ X_0 X_1) 1))",
     4, "several inputs (X_0, X_1)"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (<= Y_1 0))", 4,
     "Y_1 is not declared"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (not (<= Y_0 0)))", 3, "negation"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (max Y_0 0))", 3, "unsupported operator 'max'"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= (exp Y_0) 0))", 3, "unsupported operator"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= Y_0 abc))", 3, "unexpected 'abc'"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= Y_0 (/ 1 0)))", 3, "nonzero constant"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= Y_0))", 3, "at least two"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1) (<= X_0 2))", 3, "exactly one"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (<= Y_0 0))", 1,
     "X_0 has no lower bound"),
    (("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 0.2))\n(assert (>= X_0 0.3))\n"
      "(assert (<= Y_0 0))"), 4, "an empty input box"),
    (("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (< X_0 0.5))\n(assert (>= X_0 0.5))\n"
      "(assert (<= Y_0 0))"), 4, "an empty input box"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1e400))", 3, "beyond float64's range"),
    ("(declare-const Y_0 Real)\n(assert (<= Y_0 0))", None, "no input variable"),
    ("(declare-const X_0 Real)\n(assert (<= X_0 0))", None, "no output variable"),
]


@pytest.mark.parametrize("text, line, message", BAD, ids=[m for _, _, m in BAD])
def test_malformed_or_unsupported_properties_are_one_error_naming_the_line(text, line, message):
    with pytest.raises(PropertyError) as info:
        parse_vnnlib(text, "p.vnnlib")
    err = info.value
    assert isinstance(err, InputDataError) and err.exit_code == 2
    assert err.line == line and err.path == "p.vnnlib"
    assert str(err).startswith(f"p.vnnlib:{line}: " if line is not None else "p.vnnlib: ") and message in str(err)
    assert "\n" not in str(err)


def test_too_many_cases_is_an_error_naming_the_line():
    pairs = "".join(f"(assert (or (<= Y_0 {k}) (<= Y_1 {k})))\n" for k in range(14))  # 2^14 cases
    with pytest.raises(PropertyError, match=f"more than {MAX_CASES:,} cases"):
        parse_vnnlib(declarations(1, 2) + box(["0"], ["1"]) + pairs, "p")


def test_unreadable_files_are_property_errors(tmp_path):
    with pytest.raises(PropertyError, match="cannot read the property file"):
        read_vnnlib(tmp_path / "missing.vnnlib")
    (tmp_path / "bin.vnnlib").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PropertyError, match="not a text file"):
        read_vnnlib(tmp_path / "bin.vnnlib")
    (tmp_path / "bad.vnnlib.gz").write_bytes(b"not gzip")
    with pytest.raises(PropertyError, match="cannot read"):
        read_vnnlib(tmp_path / "bad.vnnlib.gz")


def test_the_model_and_the_domain_are_checked_naming_the_line():
    prop = parse_vnnlib(robustness_text(1, ["0", "-0.5"], ["1", "0.5"], m=3), "p.vnnlib")
    prop.check_model(2, 3)
    with pytest.raises(PropertyError, match=r"^p.vnnlib:4: the property declares 2 inputs .* the model has 784"):
        prop.check_model(784, 3)
    with pytest.raises(PropertyError, match=r"^p.vnnlib:7: the property declares 3 outputs .* the model has 10"):
        prop.check_model(2, 10)
    prop.check_domain(np.full(2, -1.0), np.full(2, 1.0))
    with pytest.raises(PropertyError, match=r"^p.vnnlib:13: X_1 >= -0.5 reaches outside the domain \[0, 1\]"):
        prop.check_domain(np.zeros(2), np.ones(2))


@given(st.fractions(min_value=-1e300, max_value=1e300, max_denominator=10**30))
def test_float_down_and_up_bracket_a_fraction_by_adjacent_floats(q):
    lo, hi = float_down(q), float_up(q)
    assert Fraction(lo) <= q <= Fraction(hi)
    assert lo == hi or math.nextafter(lo, math.inf) == hi
    assert (lo == hi) == (Fraction(lo) == q)


def test_counterexamples_are_written_in_vnncomp_format_and_read_back_exactly():
    x, y = np.array([0.1, 1e-17, -2.0]), np.array([1 / 3, -7.5])
    text = format_counterexample(x, y)
    assert text.startswith("((X_0 0.1)\n (X_1 1e-17)\n (X_2 -2.0)\n (Y_0 0.3333333333333333)\n") and text.endswith(")\n")
    pairs = [line.strip().strip("()").split() for line in text.strip().splitlines()]
    values = {name: float(v) for name, v in pairs}
    assert [values[f"X_{i}"] for i in range(3)] == x.tolist() and [values[f"Y_{j}"] for j in range(2)] == y.tolist()


def test_an_interval_without_float64_numbers_still_has_a_finite_decimal_point():
    """An input pinned to 0.3 (no float64 number is 3/10) has no float64 point, but the
    point 0.3 itself, which a result file writes exactly; a sliver between two adjacent
    float64 numbers has its midpoint; pinned to 1/3, no finite decimal is in it."""
    text = declarations(4, 1) + "(assert (>= X_0 0.3))\n(assert (<= X_0 0.3))\n" \
        "(assert (>= X_1 0.1))\n(assert (<= X_1 0.10000000000000000001))\n" \
        "(assert (> X_2 0.1))\n(assert (< X_2 0.10000000000000000001))\n" \
        "(assert (>= X_3 0))\n(assert (<= X_3 1))\n(assert (<= Y_0 0))"
    region = parse_vnnlib(text, "p").regions[0]
    assert region.inner_box() is None
    assert [v is None for v in region.inner_intervals()] == [True, True, True, False]
    assert region.decimal_value(0) == Fraction(3, 10)
    for i in (1, 2):
        q = region.decimal_value(i)
        assert Fraction(1, 10) < q < Fraction("0.10000000000000000001") and is_finite_decimal(q)
    assert region.contains_exact([Fraction(3, 10), region.decimal_value(1), region.decimal_value(2), Fraction(1)])
    assert region.contains_exact([Fraction(3, 10), Fraction(1, 10), region.decimal_value(2), Fraction(1)])
    assert not region.contains_exact([Fraction(3, 10), Fraction(1, 10), Fraction(1, 10), Fraction(1)])  # (> X_2 0.1)
    assert not region.contains_exact([Fraction(3, 10) + Fraction(1, 10**30), Fraction(1, 10), region.decimal_value(2),
                                      Fraction(1)])
    assert not region.contains([0.3, 0.1, 0.1, 1.0])  # (no float64 point is in it)
    third = parse_vnnlib(declarations(1, 1) + "(assert (>= X_0 (/ 1 3)))\n(assert (<= X_0 (/ 1 3)))\n"
                         "(assert (<= Y_0 0))", "p").regions[0]
    assert third.decimal_value(0) is None


def test_an_exact_counterexample_writes_the_decimals_it_is_and_float64_numbers_as_before():
    x = [Fraction(3, 10), Fraction(0.1), Fraction(-2)]  # 0.3 exactly; the float64 0.1; -2
    text = format_counterexample(x, np.array([0.5, -7.5]))
    assert text == "((X_0 0.3)\n (X_1 0.1)\n (X_2 -2.0)\n (Y_0 0.5)\n (Y_1 -7.5))\n"


def _split_lines(text: str) -> str:
    """The same property with every command broken over two lines (no one-line command left)."""
    return text.replace("(assert (", "(assert\n (").replace("(declare-const ", "(declare-const\n ")


def _shape(prop):
    return [([(b.value, b.strict) for b in r.lower], [(b.value, b.strict) for b in r.upper],
             [[(c.coefficients, c.rhs, c.strict) for c in d] for d in r.disjuncts]) for r in prop.regions]


@pytest.mark.parametrize("bounds", [(["0.0", "0.25", "-1e-3"], ["0.1", "0.5", "+2.5E2"]),
                                    (["0.01", ".5", "0"], ["1", "0.75", "3."])])
def test_one_line_commands_read_as_the_same_property_as_the_general_parser_reads(bounds):
    # the one-line fast path (declarations and bounds of one input) changes nothing but the speed
    text = robustness_text(1, *bounds, m=4) + "(assert (<= X_0 0.09)) ; a tighter bound, commented\n"
    fast, general = parse_vnnlib(text, "p"), parse_vnnlib(_split_lines(text), "p")
    assert _shape(fast) == _shape(general)
    assert fast.regions[0].upper[0].value == Fraction(9, 100) and fast.input_lines == (3, 4, 5)


def test_a_one_line_command_inside_an_open_expression_is_not_read_as_a_command():
    text = declarations(1, 2) + "(assert (or\n(assert (<= X_0 1))\n))\n"
    with pytest.raises(PropertyError, match="p:5: unsupported operator 'assert'"):
        parse_vnnlib(text, "p")
    # an undeclared input in a one-line bound: the general parser's message
    with pytest.raises(PropertyError, match="p:3: X_1 is not declared"):
        parse_vnnlib(declarations(1, 1) + "(assert (<= X_1 1))\n", "p")


def test_a_case_whose_input_bounds_leave_no_point_is_dropped():
    head = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
           "(assert (>= X_0 0.1))\n(assert (<= X_0 0.2))\n"
    prop = parse_vnnlib(head + "(assert (or (<= X_0 -1) (<= Y_0 0.15)))\n", "p.vnnlib")
    assert len(prop.regions) == 1 and len(prop.regions[0].disjuncts) == 1
    for outputs in ("(assert (or (and (<= X_0 -1) (<= Y_0 0)) (and (>= X_0 3) (<= Y_1 0))))",
                    "(assert (<= X_0 0.05))\n(assert (<= Y_0 0.15))"):  # every box empty: more likely a mistake
        with pytest.raises(PropertyError, match="an empty input box"):
            parse_vnnlib(head + outputs + "\n", "p.vnnlib")


def test_a_byte_order_mark_and_n_ary_division():
    text = "\ufeff(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
           "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (<= Y_0 (/ 1 2 5)))\n"
    (region,) = parse_vnnlib(text, "p.vnnlib").regions
    ((constraint,),) = region.disjuncts
    assert constraint.rhs == Fraction(1, 10)


def test_a_bound_just_beyond_the_largest_float64_is_beyond_the_range():
    """It rounds to the largest float64, but no float64 is above it: float_up gave inf (an
    input box reaching infinity), not the range error of larger bounds."""
    from parallelepipedonn.vnnlib import float_down, float_up

    big = Fraction(sys.float_info.max) + 1
    with pytest.raises(OverflowError):
        float_up(big)
    with pytest.raises(OverflowError):
        float_down(-big)
    assert float_down(big) == sys.float_info.max and float_up(-big) == -sys.float_info.max
    with pytest.raises(PropertyError, match="range"):
        parse_vnnlib(declarations(1, 1) + f"(assert (>= X_0 0))\n(assert (<= X_0 {int(big)}))\n(assert (<= Y_0 0))",
                     "p")


@pytest.mark.parametrize("number", ["1e100000000", "-2.5E+100001", "1" + "0" * 4001, "1e-123456789012"])
def test_a_number_far_beyond_float64_is_refused_at_once(number):
    """Numbers are exact rationals, but ``1e100000000`` (13 characters) took minutes and
    the memory to make exact, before ``--timeout`` counted: refused, naming the line; zeros
    with any exponent and exponents up to 10^±100,000 are read exactly."""
    import time

    start = time.perf_counter()
    with pytest.raises(PropertyError, match=":3: the number .* not supported"):
        parse_vnnlib(declarations(1, 1) + f"(assert (<= Y_0 {number}))\n", "p")
    assert time.perf_counter() - start < 1.0
    box = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
    (region,) = parse_vnnlib(declarations(1, 1) + box + "(assert (<= Y_0 0.0e-5000))\n", "p").regions
    ((constraint,),) = region.disjuncts
    assert constraint.rhs == 0
    (region,) = parse_vnnlib(declarations(1, 1) + box + "(assert (<= Y_0 1e-99999))\n", "p").regions
    ((constraint,),) = region.disjuncts
    assert constraint.rhs == Fraction(1, 10**99999)
