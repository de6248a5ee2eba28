"""VNN-LIB 1.0 properties, as the VNN-COMP benchmarks write them: read, checked and exact.

A property file declares the network's inputs ``X_0 .. X_(n-1)`` and outputs ``Y_0 ..
Y_(m-1)`` (``(declare-const X_0 Real)``) and asserts constraints over them that together
describe the **unsafe** points: the property *holds* (``unsat``) when no input of the
input region has outputs satisfying the output constraints, and is *violated* (``sat``)
by any such input, a counterexample. Supported:

* atoms ``(<= a b)``, ``(>= a b)``, ``(< a b)``, ``(> a b)``, ``(= a b)`` (also chained,
  ``(<= a b c)``) between linear expressions: numbers, variables, ``(+ ...)``, ``(- ...)``,
  ``(* c e)`` with constant factors, ``(/ e c)``;
* ``(and ...)`` and ``(or ...)`` nested freely, over inputs and outputs alike: the
  conjunction of all ``assert`` commands is put in disjunctive normal form (at most
  :data:`MAX_CASES` cases);
* constraints on inputs must be bounds of one input each (a box; several boxes through
  disjunctions); constraints on outputs are linear inequalities over the outputs; an
  atom mixing inputs and outputs, a linear constraint over several inputs, ``not`` and
  anything else are refused with a :class:`~parallelepipedonn.errors.PropertyError`
  naming the file and the line.

The result, a :class:`VnnlibProperty`, is a list of :class:`Region` s: an input box (its
bounds as exact rationals, with their lines) and the unsafe set over it, a disjunction of
conjunctions of :class:`OutputConstraint` s ``c . y <= d`` (or ``<``). Numbers are kept
as exact fractions of the decimal text; :meth:`Region.outer_box` rounds the box outward
to float64 (for proofs), :meth:`Region.contains` and :meth:`OutputConstraint.holds`
decide exactly (for counterexamples). No numpy array is built here beyond the float
boxes, and no torch.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import PropertyError
from .exact_numbers import (  # noqa: F401  (re-exported: the format's numbers)
    MAX_DECIMAL_PLACES,
    decimal_places,
    decimal_text,
    float_down,
    float_up,
    is_finite_decimal,
)

FloatArray = NDArray[np.float64]

#: The most cases the disjunctive normal form of a property may have.
MAX_CASES = 10_000

#: Integer coefficients up to this magnitude are exact in float64.
_EXACT_INT = 2**53

_TOKEN = re.compile(r"[()]|[^\s()]+")
#: The largest decimal exponent a number of a property may have (float64's range ends near
#: 10^±324; an input pinned to 1e-60000 is read exactly, in milliseconds, where 1e10000000 took 10 s),
#: and the most digits it may be written with (below Python's 4,300-digit limit on int conversion).
MAX_EXPONENT = 100_000
MAX_DIGITS = 4_000
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_VARIABLE = re.compile(r"([XY])_(\d+)")
_IGNORED_COMMANDS = {"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit"}
#: One-line commands most properties are made of — ``(declare-const X_0 Real)`` and
#: ``(assert (<= X_0 0.5))`` — read without the tokenizer (the same s-expressions).
_SIMPLE_LINE = re.compile(r"\s*\(\s*(?:(declare-const)\s+([XY]_\d+)\s+(Real)|(assert)\s*\(\s*(<=|>=)\s+([XY]_\d+)\s+("
                          + _NUMBER.pattern + r")\s*\))\s*\)\s*")


def exact_dot(coefficients: Sequence[tuple[int, Fraction]], values: Sequence[Fraction]) -> Fraction:
    return sum((c * values[j] for j, c in coefficients), Fraction(0))


# -- the parsed property ------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """One side of an input's interval: ``value`` (exact), ``strict`` (``<`` rather than
    ``<=``), and the ``line`` that asserts it."""

    value: Fraction
    strict: bool
    line: int


@dataclass(frozen=True)
class OutputConstraint:
    """``sum_j c_j Y_j <= rhs`` (``< rhs`` when ``strict``): one atom of the unsafe set.
    ``coefficients`` are the nonzero ``(j, c_j)``, by increasing ``j``."""

    coefficients: tuple[tuple[int, Fraction], ...]
    rhs: Fraction
    strict: bool
    line: int

    def holds(self, y: Sequence[Fraction]) -> bool:
        """Whether outputs ``y`` (exact) satisfy the constraint, exactly."""
        value = exact_dot(self.coefficients, y)
        return value < self.rhs if self.strict else value <= self.rhs

    def integer_row(self, n_outputs: int, path: str) -> tuple[list[int], Fraction]:
        """The constraint scaled by a positive number so that its coefficients are coprime
        integers (exact in float64): ``(row, rhs)`` with ``row`` dense over the outputs."""
        scale = math.lcm(*(c.denominator for _, c in self.coefficients))
        ints = [int(c * scale) for _, c in self.coefficients]
        g = math.gcd(*ints)
        row = [0] * n_outputs
        for (j, _), v in zip(self.coefficients, ints):
            row[j] = v // g
        if max(abs(v) for v in row) > _EXACT_INT:
            raise PropertyError(path, self.line, "an output coefficient is too large to be exact in float64 "
                                "once the constraint is scaled to integers")
        rhs = self.rhs * scale / g
        try:
            float_down(rhs), float_up(rhs)
        except OverflowError:
            raise PropertyError(path, self.line, "the constraint's constant is beyond float64's range once the "
                                "constraint is scaled to integers") from None
        return row, rhs

    def describe(self) -> str:
        terms = " ".join(f"{'+' if c > 0 else '-'} {'' if abs(c) == 1 else f'{abs(c)}*'}Y_{j}"
                         for j, c in self.coefficients).lstrip("+ ")
        return f"{terms} {'<' if self.strict else '<='} {self.rhs}"


@dataclass(frozen=True)
class Region:
    """An input box and the unsafe outputs over it: a point ``x`` of the box violates the
    property when, for some disjunct, the outputs at ``x`` satisfy every constraint of it
    (a disjunct without constraints: every point of the box is unsafe)."""

    lower: tuple[Bound, ...]
    upper: tuple[Bound, ...]
    disjuncts: tuple[tuple[OutputConstraint, ...], ...]

    @property
    def n_inputs(self) -> int:
        return len(self.lower)

    def outer_box(self) -> tuple[FloatArray, FloatArray]:
        """The box rounded outward to float64 (it contains the exact box): what proofs use."""
        return (np.array([float_down(b.value) for b in self.lower], dtype=np.float64),
                np.array([float_up(b.value) for b in self.upper], dtype=np.float64))

    def inner_intervals(self) -> list[tuple[float, float] | None]:
        """Per input, the float64 numbers of its exact interval (strict bounds excluded) as
        ``(lo, hi)``, or ``None`` where the interval holds no float64 number (an input
        pinned to 0.3, say)."""
        out: list[tuple[float, float] | None] = []
        for a, b in zip(self.lower, self.upper):
            x = float_up(a.value)
            if a.strict and Fraction(x) == a.value:
                x = math.nextafter(x, math.inf)
            y = float_down(b.value)
            if b.strict and Fraction(y) == b.value:
                y = math.nextafter(y, -math.inf)
            out.append((x, y) if x <= y else None)
        return out

    def inner_box(self) -> tuple[FloatArray, FloatArray] | None:
        """The float64 points of the exact box (strict bounds excluded), as a box; ``None``
        when some input's interval holds no float64 number."""
        intervals = self.inner_intervals()
        if any(v is None for v in intervals):
            return None
        return (np.array([v[0] for v in intervals], dtype=np.float64),  # type: ignore[index]
                np.array([v[1] for v in intervals], dtype=np.float64))  # type: ignore[index]

    def decimal_value(self, i: int) -> Fraction | None:
        """A finite decimal (denominator ``2^a 5^b``) in input ``i``'s exact interval,
        strict bounds excluded, for an interval that may hold no float64 number: the value
        it is pinned to, else the midpoint if a finite decimal, else a dyadic number in it;
        ``None`` when it is pinned to a value that no finite decimal writes (1/3), or none
        of at most :data:`MAX_DECIMAL_PLACES` places does."""
        a, b = self.lower[i], self.upper[i]
        if a.value == b.value:
            return None if a.strict or b.strict or not is_finite_decimal(a.value) else a.value
        mid = (a.value + b.value) / 2
        if is_finite_decimal(mid):
            return mid
        k = math.ceil(1 / (b.value - a.value)).bit_length() + 1  # 2**-k < b - a
        q = Fraction(math.floor(a.value * 2**k) + 1, 2**k)  # in (a, b)
        return q if is_finite_decimal(q) else None

    def contains(self, x: ArrayLike) -> bool:
        """Whether the float64 point ``x`` lies in the exact box (decided exactly)."""
        pts = np.asarray(x, dtype=np.float64).reshape(-1)
        if pts.size != self.n_inputs or not np.isfinite(pts).all():
            return False
        return self.contains_exact([Fraction(v) for v in pts.tolist()])

    def contains_exact(self, x: Sequence[Fraction]) -> bool:
        """Whether the point ``x`` of exact rationals lies in the exact box."""
        if len(x) != self.n_inputs:
            return False
        for q, a, b in zip(x, self.lower, self.upper):
            if (q <= a.value if a.strict else q < a.value) or (q >= b.value if b.strict else q > b.value):
                return False
        return True

    def violated_disjunct(self, y: Sequence[Fraction]) -> int | None:
        """The first disjunct whose constraints the exact outputs ``y`` all satisfy, or ``None``."""
        for i, disjunct in enumerate(self.disjuncts):
            if all(c.holds(y) for c in disjunct):
                return i
        return None


@dataclass(frozen=True)
class VnnlibProperty:
    """A parsed VNN-LIB property: ``n_inputs`` and ``n_outputs`` declared, the lines of the
    declarations, and the :class:`Region` s whose union is the unsafe set (none: the
    assertions are unsatisfiable, the property holds trivially)."""

    path: str
    n_inputs: int
    n_outputs: int
    regions: tuple[Region, ...]
    input_lines: tuple[int, ...]
    output_lines: tuple[int, ...]
    #: the sha256 of the file's bytes it was read from (:func:`read_vnnlib`), or ""
    sha256: str = ""

    def check_model(self, n_inputs: int, n_outputs: int) -> None:
        """:class:`PropertyError` unless the property has the model's numbers of inputs and
        outputs (naming the line of the last declaration) and every output constraint has a
        form exact in float64 (:meth:`OutputConstraint.integer_row`, naming its line)."""
        for kind, declared, lines, actual in (("inputs", self.n_inputs, self.input_lines, n_inputs),
                                              ("outputs", self.n_outputs, self.output_lines, n_outputs)):
            if declared != actual:
                name = "X" if kind == "inputs" else "Y"
                raise PropertyError(self.path, max(lines) if lines else None,
                                    f"the property declares {declared} {kind} ({name}_0 .. {name}_{declared - 1}), "
                                    f"the model has {actual}")
        for region in self.regions:
            for disjunct in region.disjuncts:
                for constraint in disjunct:
                    constraint.integer_row(n_outputs, self.path)

    def check_final(self, op: str) -> None:
        """:class:`PropertyError` (naming its line) for an output constraint that a final
        ``op`` (``"Softmax"`` or ``"LogSoftmax"``) the model's IR dropped changes: the IR
        reads the scores before it, which keep their order but not their values. Kept:
        under LogSoftmax (``log p = z - logsumexp(z)``) a constraint whose coefficients sum
        to 0 (the same on ``z``); under Softmax a comparison of two outputs,
        ``a (Y_i - Y_j)`` against 0."""
        for region in self.regions:
            for disjunct in region.disjuncts:
                for c in disjunct:
                    coefs = [v for _, v in c.coefficients]
                    if op == "LogSoftmax":
                        kept = sum(coefs) == 0
                        need = "coefficients that sum to 0 (e.g. Y_0 - Y_1 <= c)"
                    else:
                        kept = len(coefs) == 2 and coefs[0] == -coefs[1] and c.rhs == 0
                        need = "the comparison of two outputs (e.g. Y_0 - Y_1 <= 0)"
                    if not kept:
                        raise PropertyError(self.path, c.line, f"the model ends in a {op}, which the IR drops (it "
                                            f"keeps the order of the scores, not their values): a constraint on its "
                                            f"outputs must be {need}, not {c.describe()}")

    def check_domain(self, lower: FloatArray, upper: FloatArray) -> None:
        """:class:`PropertyError` (naming the bound's line) unless every input box lies in
        the domain ``[lower, upper]`` (one value per input)."""
        for region in self.regions:
            for i, (a, b) in enumerate(zip(region.lower, region.upper)):
                lo, hi = Fraction(float(lower[i])), Fraction(float(upper[i]))
                if a.value < lo:
                    raise PropertyError(self.path, a.line, f"X_{i} >= {float(a.value)!r} reaches outside the "
                                        f"domain [{float(lo):g}, {float(hi):g}]")
                if b.value > hi:
                    raise PropertyError(self.path, b.line, f"X_{i} <= {float(b.value)!r} reaches outside the "
                                        f"domain [{float(lo):g}, {float(hi):g}]")

    def describe(self) -> str:
        boxes = len(self.regions)
        cases = sum(len(r.disjuncts) for r in self.regions)
        return (f"{self.n_inputs} inputs, {self.n_outputs} outputs; {boxes} input box{'es' if boxes != 1 else ''}, "
                f"{cases} unsafe case{'s' if cases != 1 else ''}")


# -- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tok:
    text: str
    line: int


@dataclass(frozen=True)
class _List:
    items: tuple
    line: int


Sexp = _Tok | _List


@dataclass(frozen=True)
class _InputBound:
    index: int
    is_upper: bool
    bound: Bound


_Atom = _InputBound | OutputConstraint
_Linear = tuple[dict[tuple[str, int], Fraction], Fraction]  # coefficients by variable, constant


def read_vnnlib(path: str | Path) -> VnnlibProperty:
    """Read a VNN-LIB file (``.vnnlib``, or gzip-compressed ``.vnnlib.gz``)."""
    p = Path(path)
    try:
        raw = data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(data)
        text = data.decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PropertyError(str(p), None, f"cannot read the property file: {detail}") from exc
    except UnicodeDecodeError as exc:
        raise PropertyError(str(p), None, f"not a text file: {exc}") from exc
    return dataclasses.replace(parse_vnnlib(text, str(p)), sha256=hashlib.sha256(raw).hexdigest())


def parse_vnnlib(text: str, path: str = "<property>") -> VnnlibProperty:
    """Parse VNN-LIB text (``path`` names it in error messages; a leading UTF-8 byte order
    mark is skipped)."""
    return _Parser(path).run(text.removeprefix("\ufeff"))


class _EmptyBox(Exception):
    """An input box with no point (its :class:`PropertyError` in ``error``)."""

    def __init__(self, error: PropertyError) -> None:
        super().__init__(str(error))
        self.error = error


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.variables: dict[str, tuple[str, int, int]] = {}  # name -> (kind, index, line)

    def error(self, line: int | None, message: str) -> PropertyError:
        return PropertyError(self.path, line, message)

    # -- s-expressions ------------------------------------------------------------------------
    def tokens(self, text: str) -> Iterator[_Tok]:
        for number, line in enumerate(text.splitlines(), start=1):
            code = line.split(";", 1)[0]
            for m in _TOKEN.finditer(code):
                yield _Tok(m.group(0), number)

    def sexps(self, text: str) -> list[Sexp]:
        """The top-level s-expressions of ``text``, in order (one-line declarations and bound
        assertions at the top level read by :data:`_SIMPLE_LINE`, the rest tokenized)."""
        simple: list[_List] = []
        rest: list[str] = []
        depth = 0
        for number, line in enumerate(text.splitlines(), start=1):
            code = line.split(";", 1)[0]
            m = _SIMPLE_LINE.fullmatch(code) if depth == 0 else None
            if m is None:
                rest.append(line)
                depth += code.count("(") - code.count(")")
                continue
            rest.append("")
            if m.group(1):
                simple.append(_List((_Tok(m.group(1), number), _Tok(m.group(2), number), _Tok(m.group(3), number)),
                                    number))
            else:
                atom = _List((_Tok(m.group(5), number), _Tok(m.group(6), number), _Tok(m.group(7), number)), number)
                simple.append(_List((_Tok(m.group(4), number), atom), number))
        parsed = self._sexps("\n".join(rest)) if depth or any(rest) else []
        if not simple:
            return parsed
        return sorted(parsed + simple, key=lambda c: c.line)  # stable: one command per line at most among these

    def _sexps(self, text: str) -> list[Sexp]:
        stack: list[tuple[list, int]] = []
        top: list[Sexp] = []
        for tok in self.tokens(text):
            if tok.text == "(":
                stack.append(([], tok.line))
            elif tok.text == ")":
                if not stack:
                    raise self.error(tok.line, "unbalanced ')'")
                items, line = stack.pop()
                node = _List(tuple(items), line)
                (stack[-1][0] if stack else top).append(node)
            elif stack:
                stack[-1][0].append(tok)
            else:
                raise self.error(tok.line, f"unexpected {tok.text!r} outside parentheses")
        if stack:
            raise self.error(stack[-1][1], "this '(' is never closed")
        return top

    # -- commands ---------------------------------------------------------------------------
    def run(self, text: str) -> VnnlibProperty:
        asserts: list[_List] = []
        for cmd in self.sexps(text):
            assert isinstance(cmd, _List)
            if not cmd.items or not isinstance(cmd.items[0], _Tok):
                raise self.error(cmd.line, "expected a command such as (declare-const X_0 Real) or (assert ...)")
            head = cmd.items[0].text
            if head in ("declare-const", "declare-fun"):
                self.declare(cmd)
            elif head == "assert":
                if len(cmd.items) != 2:
                    raise self.error(cmd.line, "(assert F) takes exactly one formula")
                asserts.append(cmd.items[1])
            elif head not in _IGNORED_COMMANDS:
                raise self.error(cmd.line, f"unsupported command {head!r}")
        n_in, in_lines = self.declared("X")
        n_out, out_lines = self.declared("Y")
        if n_in == 0:
            raise self.error(None, "the property declares no input variable X_0")
        if n_out == 0:
            raise self.error(None, "the property declares no output variable Y_0")
        cases = self.conjunction([self.dnf(a) for a in asserts], asserts[0].line if asserts else 1)
        regions = self.regions(cases, n_in, in_lines)
        return VnnlibProperty(self.path, n_in, n_out, regions, in_lines, out_lines)

    def declare(self, cmd: _List) -> None:
        items = cmd.items
        fun = items[0].text == "declare-fun"
        ok = (len(items) == 3 and not fun) or (len(items) == 4 and fun and isinstance(items[2], _List)
                                                 and not items[2].items)
        if not ok or not isinstance(items[1], _Tok) or not isinstance(items[-1], _Tok):
            raise self.error(cmd.line, "expected (declare-const NAME Real)")
        name, sort = items[1].text, items[-1].text
        if sort != "Real":
            raise self.error(cmd.line, f"variable {name} is of sort {sort}: only Real is supported")
        m = _VARIABLE.fullmatch(name)
        if m is None:
            raise self.error(cmd.line, f"variable {name!r}: VNN-LIB names inputs X_i and outputs Y_i")
        if name in self.variables:
            raise self.error(cmd.line, f"{name} is declared twice (first on line {self.variables[name][2]})")
        self.variables[name] = (m.group(1), int(m.group(2)), cmd.line)

    def declared(self, kind: str) -> tuple[int, tuple[int, ...]]:
        found = sorted((index, line) for k, index, line in self.variables.values() if k == kind)
        for expected, (index, line) in enumerate(found):
            if index != expected:
                raise self.error(line, f"{kind}_{index} is declared but {kind}_{expected} is not: the {kind} "
                                 f"variables must be {kind}_0, {kind}_1, ... without gaps")
        return len(found), tuple(line for _, line in found)

    # -- formulas ---------------------------------------------------------------------------
    def conjunction(self, parts: list[list[tuple[_Atom, ...]]], line: int) -> list[tuple[_Atom, ...]]:
        """The cases of the conjunction of formulas with cases ``parts`` (in linear time in the
        atoms of the parts that have one case)."""
        common: list[_Atom] = []
        cases: list[tuple[_Atom, ...]] = [()]
        for part in parts:
            if len(part) == 1:
                common.extend(part[0])
                continue
            if len(cases) * len(part) > MAX_CASES:
                raise self.error(line, f"the property expands to more than {MAX_CASES:,} cases (disjunctive normal "
                                 "form): not supported")
            cases = [x + y for x in cases for y in part]
        head = tuple(common)
        return [head + c for c in cases]

    def dnf(self, f: Sexp) -> list[tuple[_Atom, ...]]:
        """The cases of formula ``f``: a list (disjunction) of tuples (conjunctions) of atoms."""
        if not isinstance(f, _List) or not f.items or not isinstance(f.items[0], _Tok):
            raise self.error(f.line, f"expected a formula, got {self._show(f)}")
        head, args = f.items[0].text, f.items[1:]
        if head == "and":
            return self.conjunction([self.dnf(a) for a in args], f.line)
        if head == "or":
            out: list[tuple[_Atom, ...]] = []
            for a in args:
                out += self.dnf(a)
                if len(out) > MAX_CASES:
                    raise self.error(f.line, f"the property expands to more than {MAX_CASES:,} cases: not supported")
            return out
        if head in ("<=", ">=") and len(args) == 2 and isinstance(args[0], _Tok) and isinstance(args[1], _Tok) \
                and self.variables.get(args[0].text, ("Y",))[0] == "X" and _NUMBER.fullmatch(args[1].text):
            # (<= X_i c) / (>= X_i c), the bulk of most properties: the atom the general case below makes
            value = self.number(args[1])
            try:
                float_down(value), float_up(value)
            except OverflowError as exc:
                raise self.error(f.line, f"the bound of {args[0].text} is beyond float64's range") from exc
            return [(_InputBound(self.variables[args[0].text][1], head == "<=", Bound(value, False, f.line)),)]
        if head in ("<=", ">=", "<", ">", "="):
            if len(args) < 2:
                raise self.error(f.line, f"({head} ...) needs at least two terms")
            exprs = [self.linear(a) for a in args]
            atoms: list[_Atom] = []
            for lhs, rhs in itertools.pairwise(exprs):
                diff = self.sub(lhs, rhs)
                if head in ("<=", "<"):
                    parts = [(diff, head == "<")]
                elif head in (">=", ">"):
                    parts = [(self.neg(diff), head == ">")]
                else:
                    parts = [(diff, False), (self.neg(diff), False)]
                for expr, strict in parts:
                    atom = self.atom(expr, strict, f.line)
                    if atom is False:
                        return []
                    if atom is not True:
                        atoms.append(atom)
            return [tuple(atoms)]
        if head == "not":
            raise self.error(f.line, "negation (not ...) is not supported: write the constraint the other way round")
        raise self.error(f.line, f"unsupported operator {head!r} in a formula")

    def atom(self, expr: _Linear, strict: bool, line: int) -> _Atom | bool:
        """The atom ``expr <= 0`` (``< 0`` when strict), classified."""
        coef, const = expr
        coef = {v: c for v, c in coef.items() if c != 0}
        if not coef:
            return const < 0 if strict else const <= 0
        xs = sorted((i, c) for (k, i), c in coef.items() if k == "X")
        ys = sorted((i, c) for (k, i), c in coef.items() if k == "Y")
        if xs and ys:
            raise self.error(line, "a constraint mixing inputs and outputs is not supported")
        if len(xs) > 1:
            names = ", ".join(f"X_{i}" for i, _ in xs[:3])
            raise self.error(line, f"a linear constraint over several inputs ({names}) is not a box: not supported")
        if xs:
            (i, a), = xs
            value = -const / a
            try:
                float_down(value), float_up(value)
            except OverflowError as exc:
                raise self.error(line, f"the bound of X_{i} is beyond float64's range") from exc
            return _InputBound(i, a > 0, Bound(value, strict, line))
        return OutputConstraint(tuple(ys), -const, strict, line)

    # -- linear expressions -------------------------------------------------------------------
    @staticmethod
    def _show(f: Sexp) -> str:
        return repr(f.text) if isinstance(f, _Tok) else "(" + " ".join(
            i.text if isinstance(i, _Tok) else "(...)" for i in f.items[:4]) + (" ...)" if len(f.items) > 4 else ")")

    @staticmethod
    def sub(a: _Linear, b: _Linear) -> _Linear:
        coef = dict(a[0])
        for v, c in b[0].items():
            coef[v] = coef.get(v, Fraction(0)) - c
        return coef, a[1] - b[1]

    @staticmethod
    def neg(a: _Linear) -> _Linear:
        return {v: -c for v, c in a[0].items()}, -a[1]

    def number(self, tok: _Tok) -> Fraction:
        """A decimal number's exact value; one whose decimal exponent is beyond
        :data:`MAX_EXPONENT` (``10**exponent`` computed exactly would take minutes or the
        memory: ``1e100000000`` is 13 characters) or written with more than :data:`MAX_DIGITS`
        digits is refused."""
        mantissa, _, exponent = tok.text.lower().partition("e")
        digits = len(mantissa.lstrip("+-").split(".")[0].lstrip("0"))
        if len(mantissa) > MAX_DIGITS or len(exponent) > 12 or (
                exponent and mantissa.strip("+-.0") and abs(int(exponent) + digits) > MAX_EXPONENT):
            raise self.error(tok.line, f"the number {tok.text[:40]}{'...' if len(tok.text) > 40 else ''} is beyond "
                             f"10^±{MAX_EXPONENT:,} or written with more than {MAX_DIGITS:,} digits: not supported")
        return Fraction(tok.text)

    @staticmethod
    def scale(a: _Linear, k: Fraction) -> _Linear:
        return {v: c * k for v, c in a[0].items()}, a[1] * k

    def linear(self, e: Sexp) -> _Linear:
        if isinstance(e, _Tok):
            if _NUMBER.fullmatch(e.text):
                return {}, self.number(e)
            if e.text in self.variables:
                kind, index, _ = self.variables[e.text]
                return {(kind, index): Fraction(1)}, Fraction(0)
            if _VARIABLE.fullmatch(e.text):
                raise self.error(e.line, f"{e.text} is not declared")
            raise self.error(e.line, f"unexpected {e.text!r}: expected a number or a declared variable")
        if not e.items or not isinstance(e.items[0], _Tok):
            raise self.error(e.line, f"expected a term, got {self._show(e)}")
        head, args = e.items[0].text, [self.linear(a) for a in e.items[1:]]
        if not args:
            raise self.error(e.line, f"({head}) without arguments")
        if head == "+":
            out: _Linear = ({}, Fraction(0))
            for a in args:
                out = self.sub(out, self.neg(a))
            return out
        if head == "-":
            if len(args) == 1:
                return self.neg(args[0])
            out = args[0]
            for a in args[1:]:
                out = self.sub(out, a)
            return out
        if head == "*":
            variable = [k for k, a in enumerate(args) if any(c != 0 for c in a[0].values())]
            if len(variable) > 1:
                raise self.error(e.line, "a product of variables is not linear: not supported")
            k = math.prod((a[1] for i, a in enumerate(args) if i not in variable), start=Fraction(1))
            return self.scale(args[variable[0]], k) if variable else ({}, k)
        if head == "/":
            # (/ e c1 c2 ...): e divided by each constant in turn (SMT-LIB's left association)
            if len(args) < 2 or any(a[0] or a[1] == 0 for a in args[1:]):
                raise self.error(e.line, "(/ e c) needs nonzero constant divisors")
            return self.scale(args[0], 1 / math.prod((a[1] for a in args[1:]), start=Fraction(1)))
        raise self.error(e.line, f"unsupported operator {head!r} in a term")

    # -- cases to regions ---------------------------------------------------------------------
    def regions(self, cases: list[tuple[_Atom, ...]], n: int, lines: tuple[int, ...]) -> tuple[Region, ...]:
        grouped: dict[tuple, tuple[tuple[Bound, ...], tuple[Bound, ...], list]] = {}
        boxes: dict[tuple[int, ...], tuple | None] = {}  # the cases' input atoms (by identity) -> box and key
        empty: PropertyError | None = None  # the first case with an empty box
        for case in cases:
            outputs: list[OutputConstraint] = []
            inputs: list[_InputBound] = []
            for atom in case:
                if not isinstance(atom, OutputConstraint):
                    inputs.append(atom)
                elif atom not in outputs:
                    outputs.append(atom)
            ids = tuple(map(id, inputs))
            if ids not in boxes:
                try:
                    boxes[ids] = self._box(inputs, n, lines, len(cases))
                except _EmptyBox as exc:  # a case whose input bounds leave no point: no unsafe point in it
                    boxes[ids], empty = None, empty or exc.error
            if boxes[ids] is None:
                continue
            lows, highs, key = boxes[ids]
            entry = grouped.setdefault(key, (lows, highs, []))  # type: ignore[arg-type]
            disjunct = tuple(outputs)
            if disjunct not in entry[2]:
                entry[2].append(disjunct)
        if empty is not None and not grouped:  # every box empty: more likely a mistake than a property
            raise empty
        return tuple(Region(lo, hi, tuple(ds)) for lo, hi, ds in grouped.values())

    def _box(self, inputs: list[_InputBound], n: int, lines: tuple[int, ...], cases: int) -> tuple:
        """The tightest lower and upper bound of each input among ``inputs``, and a key
        identifying that box (a :class:`PropertyError` for an input without both;
        :class:`_EmptyBox` for an empty box: :meth:`regions` drops the case where other
        cases have points, else raises its error, as every box empty is more likely a
        mistake than a property)."""
        lower: list[Bound | None] = [None] * n
        upper: list[Bound | None] = [None] * n
        for atom in inputs:
            side = upper if atom.is_upper else lower
            old, new = side[atom.index], atom.bound
            if old is None or (new.value < old.value if atom.is_upper else new.value > old.value) or \
                    (new.value == old.value and new.strict and not old.strict):
                side[atom.index] = new
        for i in range(n):
            for side, what in ((lower, "lower"), (upper, "upper")):
                if side[i] is None:
                    raise self.error(lines[i], f"X_{i} has no {what} bound" +
                                     (" in one of the cases of the property" if cases > 1 else ""))
            lo, hi = lower[i], upper[i]
            assert lo is not None and hi is not None
            if lo.value > hi.value or (lo.value == hi.value and (lo.strict or hi.strict)):
                raise _EmptyBox(self.error(max(lo.line, hi.line), f"the bounds of X_{i} leave it no value (line "
                                           f"{lo.line}: >{'' if lo.strict else '='} {float(lo.value)!r}; line "
                                           f"{hi.line}: <{'' if hi.strict else '='} {float(hi.value)!r}): an empty "
                                           "input box"))
        lows, highs = tuple(lower), tuple(upper)
        key = tuple((b.value.numerator, b.value.denominator, b.strict)  # type: ignore[union-attr]
                    for b in lows + highs)
        return lows, highs, key



def format_counterexample(x: ArrayLike | Sequence[Fraction], y: ArrayLike) -> str:
    """A counterexample in VNN-COMP's result format, after the ``sat`` line:
    ``((X_0 v)\\n (X_1 v)\\n ... (Y_0 v) ...)``. ``x``: float64 numbers (each written as its
    shortest repr, which reads back exactly) or exact rationals (:class:`Fraction`), those
    that are no float64 number written as the finite decimal they are
    (:func:`decimal_text`: ``0.3`` is 3/10, the constant of a property that pins an input
    to it)."""
    if isinstance(x, np.ndarray) or not any(isinstance(v, Fraction) for v in x):  # type: ignore[union-attr]
        xs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.asarray(x, dtype=np.float64).reshape(-1))]
    else:
        xs = [f"(X_{i} {_exact_text(Fraction(v))})" for i, v in enumerate(x)]  # type: ignore[union-attr]
    ys = [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(y, dtype=np.float64).reshape(-1))]
    return "(" + "\n ".join(xs + ys) + ")\n"


def _exact_text(q: Fraction) -> str:
    """``q`` as float64's shortest repr where it is that float64 number, else as the
    finite decimal it is."""
    try:
        f = float(q)
    except OverflowError:
        f = math.inf
    return repr(f) if math.isfinite(f) and Fraction(f) == q else decimal_text(q)


__all__ = ["MAX_CASES", "Bound", "OutputConstraint", "Region", "VnnlibProperty", "decimal_text", "float_down",
           "float_up", "format_counterexample", "is_finite_decimal", "parse_vnnlib", "read_vnnlib"]
