"""Crafted networks on which floating-point bound propagation goes wrong (issue 12).

Each builder returns a :class:`Crafted` case: a tiny ReLU network, a box in its domain,
a point ``p`` of the box that the network misclassifies *in exact arithmetic* (exact
margin <= 0 for ``label``, checked with :meth:`Network.exact_margin`, which computes on
the float64 weights with rationals and never overflows) and a point ``x`` of the box
that it classifies ``label`` robustly (exact margin > 0), to certify around.

Bug classes:

* ``a`` — **cancellation**: a coefficient of the backward pass is a sum of terms far
  larger than itself (``c1 * A1 + c2 * A2`` with ``A1, A2`` near ``scale``); its float64
  value is off by a rounding error proportional to the terms, not to the result. The
  weights are chosen so that this error goes the wrong way in every evaluation order
  (with or without a fused multiply-add), and the rest of the net so that the error
  decides: the margin itself (``a-margin``), a hidden neuron barely active at ``p``
  that looks dead (``a-neuron``), a coefficient of a *hidden* layer times a bias
  (``a-hidden``), or the sign of the gradient that ``fix_monotone_inputs`` uses to fix
  an input at one end of a wide domain (``a-monotone``).
* ``b`` — **non-finite bounds**: weights near 1e155 .. 1e200 whose products overflow
  (``inf - inf`` is NaN) in the bound computation and often in the float64 forward pass
  itself; or huge weights times inputs far from 0 followed by tiny weights, so that the
  intermediate values overflow but the network's output is moderate.
* ``m`` — **underflow**: tiny weights whose products vanish in float64 but not in the
  network's exact semantics.
* ``s`` — **solver tolerances** (not a reported class): ordinary weights but one large
  output weight, so that an LP/MILP solver's feasibility tolerance on one row moves the
  margin by more than the solver error model allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from parallelepipedonn.box import Box
from parallelepipedonn.network import Affine, Network, ReLU

F = Fraction


@dataclass(frozen=True, eq=False)
class Crafted:
    """One crafted case (see module docstring). ``box`` holds ``p`` and ``x``; ``domain``
    holds ``box``; ``label`` is the class ``x`` is robustly given; ``members`` are more
    points of class ``1`` (exact margin of ``label`` <= 0, i.e. ``logit_1 >= logit_0``)."""

    key: str
    bug: str  # "a", "b" or "m"
    net: Network
    domain: Box
    box: Box
    p: np.ndarray
    x: np.ndarray
    label: int = 0
    note: str = ""
    members: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def p_margin(self) -> Fraction:
        return self.net.exact_margin(self.p, self.label)

    @property
    def x_margin(self) -> Fraction:
        return self.net.exact_margin(self.x, self.label)

    @property
    def distance(self) -> float:
        """``||p - x||_inf``: no proven robust radius around ``x`` can exceed it."""
        return float(np.abs(self.p - self.x).max())

    def __repr__(self) -> str:
        return f"Crafted({self.key})"


def fmt(v: Fraction) -> str:
    """A rational in short scientific notation (even beyond float64's range)."""
    if v == 0 or F(1, 10 ** 300) < abs(v) < 10 ** 300:
        return f"{float(v):.3g}"
    e = math.floor(math.log10(abs(v.numerator)) - math.log10(v.denominator))
    m = v / F(10) ** e
    if abs(m) >= 10:
        m, e = m / 10, e + 1
    return f"{float(m):.3g}e{e:+d}"


def truly_misclassified(net: Network, point, label: int = 0) -> bool:
    """Ground truth: the exact margin of ``point`` is <= 0 (rational arithmetic)."""
    return net.exact_margin(np.asarray(point, dtype=np.float64), label) <= 0


def _check(case: Crafted) -> Crafted:
    assert case.domain.contains_box(case.box), case.key
    assert case.box.contains(case.p) and case.box.contains(case.x), case.key
    assert case.p_margin <= 0, (case.key, float(case.p_margin))
    assert case.x_margin > 0, (case.key, float(case.x_margin))
    for m in case.members:
        assert case.domain.contains(m) and case.net.exact_margin(m, case.label) <= 0, case.key
    return case


def _net(input_shape, layers, name: str) -> Network:
    net = Network.from_layers(input_shape, layers, name=name)
    # the builders write the canonical form themselves: no affine maps merged (rounded)
    assert len(net.layers) == len(layers), name
    return net


# -- cancelling pairs ----------------------------------------------------------------------------
def _product_error(c: float, w: float) -> Fraction:
    """float64 rounding error of ``c * w``: ``fl(c w) - c w``."""
    return F(float(np.float64(c) * np.float64(w))) - F(c) * F(w)


def _dot_errors(c1: float, a1: float, c2: float, a2: float) -> list[Fraction]:
    """The rounding errors of ``c1 a1 + c2 a2`` in float64, in each order a BLAS kernel
    may evaluate it (plain products and sum; either product fused into the sum)."""
    exact = F(c1) * F(a1) + F(c2) * F(a2)
    p1, p2 = float(np.float64(c1) * a1), float(np.float64(c2) * a2)
    plain = F(p1 + p2)
    fused1 = F(float(F(c1) * F(a1) + F(p2)))  # correctly rounded fma(c1, a1, p2)
    fused2 = F(float(F(p1) + F(c2) * F(a2)))
    return [plain - exact, fused1 - exact, fused2 - exact]


@dataclass(frozen=True)
class Pair:
    """Weights ``a1, a2`` (near the scale) of one input in two neurons, and their
    coefficients ``c1, c2`` downstream: ``gamma = c1 a1 + c2 a2`` exactly, while float64
    computes it off by at least ``err`` in the direction ``sign`` (in every order)."""

    c1: float
    c2: float
    a1: float
    a2: float
    gamma: Fraction
    err: Fraction  # > 0: |computed - gamma| >= err, with the sign ``sign``
    sign: int


def cancelling_pair(scale: float, sign: int, gamma_sign: int, ratio: tuple[float, float],
                    c1: float = 0.1, c2: float = -0.3, tries: int = 400) -> Pair:
    """A :class:`Pair` near ``scale`` whose float64 dot product errs in the direction
    ``sign`` (+1: computed above the exact value) by as much as possible, and whose exact
    value ``gamma`` has the sign ``gamma_sign`` and lies within ``ratio`` times the
    error. Deterministic."""
    rng = np.random.default_rng(12)
    best: Pair | None = None
    for i in range(tries):
        a2 = float(np.float64(scale) * (1 + rng.random()))
        centre = float(-F(c2) * F(a2) / F(c1))  # a1 with c1 a1 + c2 a2 nearly 0
        unit = F(c1) * F(math.ulp(centre))  # gamma's step when a1 moves by one ulp
        g0 = F(c1) * F(centre) + F(c2) * F(a2)
        span = int(2 * ratio[1]) + 2  # the error is at most about one unit
        for j in range(-span, span + 1):
            gamma = g0 + j * unit
            if gamma == 0 or (gamma > 0) != (gamma_sign > 0):
                continue
            a1 = centre + j * math.ulp(centre)
            err = min(sign * e for e in _dot_errors(c1, a1, c2, a2))
            if err <= 0 or not ratio[0] * err <= abs(gamma) <= ratio[1] * err:
                continue
            if best is None or err > best.err:
                best = Pair(c1, c2, a1, a2, gamma, err, sign)
        if best is not None and i >= 40:
            break
    assert best is not None, (scale, sign, gamma_sign)
    assert F(c1) * F(best.a1) + F(c2) * F(best.a2) == best.gamma
    return best


CANCELLATION_SCALES = (1e3, 1e6, 1e9, 1e12, 1e15)


@lru_cache(maxsize=None)
def a_margin(scale: float) -> Crafted:
    """One hidden layer, ``x0 in [1, 2]``: ``h_k = a_k x0`` (active), and the margin
    ``c1 h1 + c2 h2 + K = gamma x0 + K``, gamma > 0 a cancelling sum that float64
    overestimates by ``err``; ``K`` puts the exact minimum (at ``x0 = 1``) at ``-err/2``."""
    pr = cancelling_pair(scale, sign=+1, gamma_sign=+1, ratio=(4, 16))
    k = float(-pr.gamma - pr.err / 2)
    while pr.gamma + F(k) > 0:
        k = np.nextafter(k, -np.inf)
    net = _net((1,), [Affine([[pr.a1], [pr.a2]], [0.0, 0.0]), ReLU(),
                      Affine([[pr.c1, pr.c2], [0.0, 0.0]], [k, 0.0])], f"a-margin-{scale:.0e}")
    dom = Box([1.0], [2.0])
    return _check(Crafted(f"a-margin-{scale:.0e}", "a", net, dom, dom, np.array([1.0]), np.array([1.5]),
                          note=f"exact margin at p {float(pr.gamma + F(k)):.3g}, float64 error of the "
                               f"coefficient {float(pr.err):.3g}",
                          members=np.array([[1.0]])))


@lru_cache(maxsize=None)
def a_neuron(scale: float) -> Crafted:
    """Two hidden layers, ``x0 in [1, 2]``: ``h_k = a_k x0`` (active); ``n = c1 h1 + c2 h2
    + bn = gamma x0 + bn`` reaches ``eps = err/2 > 0`` at ``x0 = 2`` only, while float64
    underestimates its upper bound by ``2 err`` (it looks dead); ``logit_1 = M relu(n)``
    with ``M eps = 2`` against ``logit_0 = 1``: the exact margin at ``p = 2`` is about -1."""
    pr = cancelling_pair(scale, sign=-1, gamma_sign=+1, ratio=(4, 16))
    eps = pr.err / 2
    bn = float(eps - 2 * pr.gamma)
    eps = 2 * pr.gamma + F(bn)  # the exact maximum of n after rounding bn
    assert eps > 0
    m = float(2 / eps)
    net = _net((1,), [Affine([[pr.a1], [pr.a2]], [0.0, 0.0]), ReLU(), Affine([[pr.c1, pr.c2]], [bn]), ReLU(),
                      Affine([[0.0], [m]], [1.0, 0.0])], f"a-neuron-{scale:.0e}")
    dom = Box([1.0], [2.0])
    return _check(Crafted(f"a-neuron-{scale:.0e}", "a", net, dom, dom, np.array([2.0]), np.array([1.5]),
                          note=f"n's exact maximum {float(eps):.3g}, float64 error of its coefficient "
                               f"{float(pr.err):.3g}",
                          members=np.array([[2.0]])))


@lru_cache(maxsize=None)
def a_hidden(scale: float, bias: float = 1e3) -> Crafted:
    """Cancellation one layer up, amplified by a bias: ``h = bias (x0 + 1)`` (active),
    ``m_k = a_k h`` (active), margin ``c1 m1 + c2 m2 + K = gamma h + K``: the coefficient
    of ``h`` in the backward pass is the cancelling sum, and its error reaches the bound
    through the first layer's bias as well as its weight."""
    pr = cancelling_pair(scale, sign=+1, gamma_sign=+1, ratio=(4, 16))
    k = float(-pr.gamma * F(bias) - pr.err * F(bias) / 2)
    while pr.gamma * F(bias) + F(k) > 0:
        k = np.nextafter(k, -np.inf)
    net = _net((1,), [Affine([[bias]], [bias]), ReLU(), Affine([[pr.a1], [pr.a2]], [0.0, 0.0]), ReLU(),
                      Affine([[pr.c1, pr.c2], [0.0, 0.0]], [k, 0.0])], f"a-hidden-{scale:.0e}")
    dom = Box([0.0], [1.0])
    return _check(Crafted(f"a-hidden-{scale:.0e}", "a", net, dom, dom, np.array([0.0]), np.array([0.5]),
                          note=f"exact margin at p {float(net.exact_margin(np.array([0.0]), 0)):.3g}",
                          members=np.array([[0.0]])))


def sign_flipping_paths(scale: float, gamma_abs: tuple[float, float] = (3e-9, 2e-8),
                        c: tuple[float, float] = (0.1, -1.1), u: tuple[float, float] = (0.1, 1.9),
                        tries: int = 2000) -> tuple[float, float, Fraction, Fraction]:
    """Weights ``a1, a2`` (``a2`` near ``scale``) of two paths ``x -> a_k x -> u_k (.) ->
    c_k (.)`` whose exact gain ``gamma = c1 u1 a1 + c2 u2 a2`` is negative with
    ``|gamma|`` in ``gamma_abs``, while float64 computes it *positive*, above ``2e-9``, in
    every evaluation order (``fl(c_k u_k)`` is rounded first, as a backward pass or a
    gradient does: ``c1 u1`` rounds up and ``c2 u2`` towards 0, so the two roundings do not
    cancel). Returns ``a1, a2, gamma`` and the smallest computed value."""
    rng = np.random.default_rng(5)
    q = [float(np.float64(c[k]) * np.float64(u[k])) for k in range(2)]
    ex = [F(c[k]) * F(u[k]) for k in range(2)]
    best = None
    for _ in range(tries):
        a2 = float(scale * (1 + rng.random()))
        centre = float(-ex[1] * F(a2) / ex[0])
        for j in range(-3, 4):
            a1 = centre + j * math.ulp(centre)
            gamma = ex[0] * F(a1) + ex[1] * F(a2)
            if not F(-gamma_abs[1]) <= gamma <= F(-gamma_abs[0]):
                continue
            p1, p2 = q[0] * a1, q[1] * a2
            computed = min(F(p1 + p2), F(float(F(q[0]) * F(a1) + F(p2))), F(float(F(p1) + F(q[1]) * F(a2))))
            if computed > F(2e-9) and (best is None or gamma < best[2]):
                best = (a1, a2, gamma, computed)
    assert best is not None, scale
    return best


@lru_cache(maxsize=None)
def a_monotone(scale: float = 1e9, width: float = 1e5) -> Crafted:
    """``fix_monotone_inputs``' gradient test (its threshold ``1e-9`` is absolute): the
    margin is ``f(x0) + gamma x1 + K`` with ``f(x0) = 2 relu(x0 - 1/2) - relu(x0 - 1/4)``
    (non-convex: CROWN and alpha-CROWN cannot prove it, a complete method must) and
    ``gamma`` the gain of two cancelling paths through two hidden layers, tiny and
    negative, that float64 computes positive — the margin *looks* increasing in ``x1`` on
    ``[1, 1 + width]``, so ``x1`` would be fixed at 1, where the minimum is ``2e-4``; at
    ``x1 = 1 + width`` it is ``2e-4 + gamma width < 0``."""
    c, u = (0.1, -1.1), (0.1, 1.9)
    a1, a2, gamma, computed = sign_flipping_paths(scale, c=c, u=u)
    k = float(F(1, 4) - gamma + F(2e-4))
    w0 = [[1.0, 0.0], [1.0, 0.0], [0.0, a1], [0.0, a2]]
    b0 = [-0.5, -0.25, 0.0, 0.0]
    w1 = np.diag([1.0, 1.0, u[0], u[1]])
    w2 = [[2.0, -1.0, c[0], c[1]], [0.0, 0.0, 0.0, 0.0]]
    net = _net((2,), [Affine(w0, b0), ReLU(), Affine(w1, np.zeros(4)), ReLU(), Affine(w2, [k, 0.0])],
               f"a-monotone-{scale:.0e}")
    dom = Box([0.0, 1.0], [1.0, 1.0 + width])
    p = np.array([0.5, 1.0 + width])
    return _check(Crafted(f"a-monotone-{scale:.0e}", "a", net, dom, dom, p, np.array([0.0, 1.0]),
                          note=f"gain along x1 {float(gamma):.3g}, float64 {float(computed):.3g}; exact margin at p "
                               f"{float(net.exact_margin(p, 0)):.3g}, {float(net.exact_margin([0.5, 1.0], 0)):.3g} "
                               "at x1 = 1",
                          members=p[None]))


# -- non-finite bounds -----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def b_nan_neuron(scale: float) -> Crafted:
    """``x in [0, 1]^2``, ``h = (s x0, s x1)``, ``n = s h0 - s h1 - 1`` (``s^2 > 1.8e308``:
    CROWN's coefficients of ``n`` overflow to ``+-inf`` and their sum over the box is
    NaN), ``logit_0 = 1``, ``logit_1 = relu(n)``: at ``p = (1/2, 1/4)`` the exact ``n`` is
    ``s^2 / 4 - 1`` (float64 computes ``inf - inf``); at ``x = (0, 1/2)`` it is negative."""
    s = float(scale)
    net = _net((2,), [Affine([[s, 0.0], [0.0, s]], [0.0, 0.0]), ReLU(), Affine([[s, -s]], [-1.0]), ReLU(),
                      Affine([[0.0], [1.0]], [1.0, 0.0])], f"b-nan-neuron-{scale:.0e}")
    dom = Box.unit(2)
    members = np.array([[0.5, 0.25], [1.0, 0.0], [0.75, 0.5]])
    return _check(Crafted(f"b-nan-neuron-{scale:.0e}", "b", net, dom, dom, np.array([0.5, 0.25]),
                          np.array([0.0, 0.5]), note="n's bounds are NaN", members=members))


@lru_cache(maxsize=None)
def b_nan_margin(scale: float) -> Crafted:
    """One hidden layer: ``h = (s x0, s x1)``, ``logit_0 = s h1 + 1``, ``logit_1 = s h0``:
    the margin's own bound is ``inf - inf`` (NaN), not a hidden neuron's."""
    s = float(scale)
    net = _net((2,), [Affine([[s, 0.0], [0.0, s]], [0.0, 0.0]), ReLU(), Affine([[0.0, s], [s, 0.0]], [1.0, 0.0])],
               f"b-nan-margin-{scale:.0e}")
    dom = Box.unit(2)
    return _check(Crafted(f"b-nan-margin-{scale:.0e}", "b", net, dom, dom, np.array([0.5, 0.25]),
                          np.array([0.0, 0.5]), note="the margin's bound is NaN",
                          members=np.array([[0.5, 0.25], [1.0, 0.0]])))


@lru_cache(maxsize=None)
def b_overflow(big: float = 1e301, tiny: float = 1e-300, offset: float = 1e8) -> Crafted:
    """Inputs in ``[1e8, 1e8 + 1]^2``, ``h = (big x0, big x1)`` (overflows in float64: the
    interval bounds are ``inf - inf``), ``n = tiny h0 - tiny h1 - 5`` (about
    ``10 (x0 - x1) - 5``: moderate), ``logit_0 = 1``, ``logit_1 = relu(n)``: misclassified
    where ``x0 - x1 > 0.6`` (exact margin about -4 at ``p``)."""
    net = _net((2,), [Affine([[big, 0.0], [0.0, big]], [0.0, 0.0]), ReLU(), Affine([[tiny, -tiny]], [-5.0]), ReLU(),
                      Affine([[0.0], [1.0]], [1.0, 0.0])], "b-overflow")
    dom = Box([offset, offset], [offset + 1, offset + 1])
    p, x = np.array([offset + 1, offset]), np.array([offset + 0.25, offset + 0.75])
    return _check(Crafted(f"b-overflow-{big:.0e}x{tiny:.0e}", "b", net, dom, dom, p, x,
                          note="huge times tiny: intermediate values overflow, the output does not",
                          members=np.array([p, [offset + 0.9, offset + 0.1]])))


@lru_cache(maxsize=None)
def b_wide_domain(big: float = 1e303, tiny: float = 1e-303, half: float = 1e6) -> Crafted:
    """Inputs in ``[-1e6, 1e6]^2``: ``h = (big x0, big x1)`` overflows at both ends
    (``[-inf, inf]``, chord slope ``inf / inf``), ``n = tiny h0 - tiny h1 - 1``,
    ``logit_0 = 1``, ``logit_1 = relu(n)``: misclassified where ``x0 - x1 > 2``."""
    net = _net((2,), [Affine([[big, 0.0], [0.0, big]], [0.0, 0.0]), ReLU(), Affine([[tiny, -tiny]], [-1.0]), ReLU(),
                      Affine([[0.0], [1.0]], [1.0, 0.0])], "b-wide-domain")
    dom = Box([-half, -half], [half, half])
    p, x = np.array([half, 0.0]), np.array([0.0, 0.0])
    return _check(Crafted(f"b-wide-domain-{big:.0e}", "b", net, dom, dom, p, x,
                          note="overflow at both ends of a wide domain",
                          members=np.array([p, [10.0, 1.0], [half, half / 2]])))


# -- underflow -------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def m_underflow(tiny: float = 1e-200, big: float = 1e300) -> Crafted:
    """``h = tiny x0``, ``n = tiny h`` (``1e-400 x0``: 0 in float64), ``logit_1 = big
    relu(n)`` (``1e-100 x0``) against ``logit_0 = 1e-101``: misclassified for
    ``x0 > 0.1`` in exact arithmetic, never in float64."""
    net = _net((1,), [Affine([[tiny]], [0.0]), ReLU(), Affine([[tiny]], [0.0]), ReLU(),
                      Affine([[0.0], [big]], [1e-101, 0.0])], "m-underflow")
    dom = Box.unit(1)
    return _check(Crafted("m-underflow-1e-200", "m", net, dom, dom, np.array([1.0]), np.array([0.0]),
                          note="products underflow to 0", members=np.array([[1.0], [0.5]])))


# -- solver tolerances (beyond the reported classes) ----------------------------------------------------
@lru_cache(maxsize=None)
def s_solver_tolerance(eps: float) -> Crafted:
    """Weights of ordinary size but one large output weight: ``n = eps - |x0 - 1/2|``
    (``relu(x0 - 1/2) + relu(1/2 - x0)``), positive only within ``eps`` of ``1/2``;
    ``logit_1 = (2 / eps) relu(n)`` against ``logit_0 = 1``: the exact margin at
    ``p = 1/2`` is -1, and every vertex of ``[0, 1]`` is robust. An LP/MILP solver
    that lets ``a = z`` slip by its feasibility tolerance (~1e-7 .. 1e-6 on the
    unscaled row) gains ``(2 / eps)`` times as much on the margin."""
    m = 2 / eps
    net = _net((1,), [Affine([[1.0], [-1.0]], [-0.5, 0.5]), ReLU(), Affine([[-1.0, -1.0]], [eps]), ReLU(),
                      Affine([[0.0], [m]], [1.0, 0.0])], f"s-solver-{eps:.0e}")
    dom = Box.unit(1)
    return _check(Crafted(f"s-solver-{eps:.0e}", "s", net, dom, dom, np.array([0.5]), np.array([0.0]),
                          note=f"n > 0 only within {eps:g} of 1/2, output weight {m:g}",
                          members=np.array([[0.5], [0.5 + eps / 4]])))


def all_cases() -> list[Crafted]:
    """Every crafted case, in a fixed order."""
    cases = [a_margin(s) for s in CANCELLATION_SCALES] + [a_neuron(s) for s in CANCELLATION_SCALES]
    cases += [a_hidden(1e9), a_hidden(1e12), a_monotone()]
    cases += [b_nan_neuron(s) for s in (1e155, 1e160, 1e200)] + [b_nan_margin(1e160), b_overflow(), b_wide_domain()]
    cases += [m_underflow(), s_solver_tolerance(1e-6), s_solver_tolerance(1e-7)]
    return cases


# -- files ------------------------------------------------------------------------------------------
def save_float64_onnx(net: Network, path: str | Path) -> None:
    """The network as ONNX with float64 (DOUBLE) weights and input — exactly the IR, where
    :func:`parallelepipedonn.onnx_export.save_onnx` would round the weights to float32."""
    nodes, inits, current = [], [], "input"
    k = 0
    for layer in net.layers:
        if isinstance(layer, Affine):
            inits += [numpy_helper.from_array(np.asarray(layer.weight, dtype=np.float64), f"W{k}"),
                      numpy_helper.from_array(np.asarray(layer.bias, dtype=np.float64), f"B{k}")]
            nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"B{k}"], [f"gemm{k}"], transB=1))
            current, k = f"gemm{k}", k + 1
        else:
            nodes.append(helper.make_node("Relu", [current], [f"relu{k}"]))
            current = f"relu{k}"
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(nodes, "crafted",
                              [helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["N", net.n_inputs])],
                              [helper.make_tensor_value_info("logits", TensorProto.DOUBLE, ["N", net.n_classes])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
