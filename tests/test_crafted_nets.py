"""Issue 12's soundness bar: no oracle, search or recheck verifies a box that holds a point
misclassified in exact arithmetic — on networks crafted so that float64 bound propagation
goes wrong (see :mod:`tests.crafted_nets`):

* ``a-*`` — cancellation: coefficients of the backward pass that are sums of terms far
  larger than themselves (cancelling weights near 1e3 .. 1e15), whose rounding error is
  proportional to the terms, not to the (small) result: the margin's own coefficient, a
  hidden neuron that looks dead, a hidden layer's coefficient times a bias, the sign of
  the gradient ``fix_monotone_inputs`` relies on;
* ``b-*`` — non-finite bounds: weights 1e155 .. 1e303 whose products overflow (``inf -
  inf`` is NaN), huge times tiny weights on inputs far from 0 (``[1e8, 1e8 + 1]``,
  ``[-1e6, 1e6]``): the float64 forward pass overflows too, the exact one does not;
* ``m-*`` — underflow: products that vanish in float64 but not exactly;
* ``s-*`` — solver tolerances (beyond the reported classes): ordinary weights and one
  output weight of 2e6 .. 2e7, so that a solver's feasibility tolerance on one row
  moves the margin by more than the solver error model assumes.

Ground truth is :meth:`Network.exact_margin` (rationals on the float64 weights; it never
overflows). Every case has a point ``p`` of its box with exact margin <= 0 and an input
``x`` with exact margin > 0. FALSIFIED (with a counterexample that *is* misclassified
exactly) and UNKNOWN are fine answers; VERIFIED is not.
"""

from __future__ import annotations

import numpy as np
import pytest

import parallelepipedonn as ppn
from oracles import AttackOracle, Verdict, lirpa_available, make_oracle, marabou_available, min_adversarial_distance
from oracles.registry import accepts_option, oracle_entries
from parallelepipedonn.box import Box
from parallelepipedonn.certificate import Certificate
from parallelepipedonn.cli import main
from parallelepipedonn.dual import METHODS, dual_box
from parallelepipedonn.errors import ParallelepipedoNNError
from parallelepipedonn.io_utils import sha256_file
from parallelepipedonn.recheck import Outcome, recheck
from parallelepipedonn.search import SEARCHES, Status
from tests.crafted_nets import Crafted, all_cases, fmt, save_float64_onnx, truly_misclassified
from tests.devices import DEVICES

CASES = all_cases()
BY_KEY = {c.key: c for c in CASES}
KEYS = list(BY_KEY)

#: A case or two of each kind, for the slower specifications (searches, distances, duals,
#: rechecks); every oracle is asked about every case.
KINDS = ["a-margin-1e+06", "a-margin-1e+12", "a-neuron-1e+03", "a-neuron-1e+12", "a-hidden-1e+12",
         "a-monotone-1e+09", "b-nan-neuron-1e+160", "b-nan-margin-1e+160", "b-overflow-1e+301x1e-300",
         "b-wide-domain-1e+303", "m-underflow-1e-200", "s-solver-1e-06"]

#: The searches' cases: ``KINDS`` but the second a-margin scale, and underflow (no search
#: certified anything on it, even before issue 12's fixes) — to keep the file short.
SEARCH_KINDS = [k for k in KINDS if k not in ("a-margin-1e+06", "m-underflow-1e-200")]

#: Seconds per oracle query (``time_limit`` of the oracles that take one).
LIMIT = 5.0

OPTIONAL = {"lirpa": lirpa_available, "marabou": marabou_available}
CASCADES = ["crown+alpha-crown+bab", "attack+crown+milp", "crown+alpha-crown+milp"]
#: float32 bound propagation, where an oracle offers it (``dtype``)
FLOAT32 = [f"{name}@float32" for name in sorted(oracle_entries()) if accepts_option(name, "dtype")]
#: on a GPU (where torch sees one: tests/devices.py), every oracle that takes a device, in
#: float64 and, where it offers it, float32
ON_GPU = [f"{name}@{where}" for name in sorted(oracle_entries()) if accepts_option(name, "device")
          for where in ("cuda", "cuda-float32") if where == "cuda" or accepts_option(name, "dtype")
          ] if "cuda" in DEVICES else []
ORACLES = sorted(oracle_entries()) + CASCADES + FLOAT32 + ON_GPU


def build_oracle(spec: str, net):
    """The oracle ``spec`` names (after ``@``: ``float32`` for ``dtype="float32"``, ``cuda``
    for ``device="cuda"``, joined by ``-``), with the per-query time limit; skips an optional
    backend that is not installed."""
    name, _, how = spec.partition("@")
    for part in name.split("+"):
        if part in OPTIONAL and not OPTIONAL[part]():
            pytest.skip(f"{part} is not installed")
    options: dict = {"time_limit": LIMIT} if accepts_option(name, "time_limit") else {}
    for word in how.split("-") if how else ():
        options["device" if word == "cuda" else "dtype"] = word
    return make_oracle(name, net, **options)


def query_boxes(case: Crafted) -> tuple[np.ndarray, np.ndarray]:
    """The boxes every oracle is asked about: the case's box, a small cube around ``p``
    (within the domain) and the point ``p`` itself — each holds ``p``."""
    small = Box.cube(case.p, 1e-3 * float(case.domain.width.max()), case.domain)
    boxes = [case.box, small, Box.point(case.p)]
    return np.array([b.lower for b in boxes]), np.array([b.upper for b in boxes])


def claim(case: Crafted) -> str:
    return f"p = {case.p.tolist()} has exact margin {fmt(case.p_margin)} ({case.note})"


def assert_real_counterexample(case: Crafted, lo, hi, cex) -> None:
    assert cex is not None and Box(lo, hi).contains(cex), f"{case.key}: counterexample outside the box"
    assert truly_misclassified(case.net, cex, case.label), \
        f"{case.key}: counterexample {cex.tolist()} is classified {case.label} in exact arithmetic"


# -- the crafted cases themselves ----------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_each_case_has_a_misclassified_point_in_its_box_and_a_robust_input(key):
    case = BY_KEY[key]
    assert case.box.contains(case.p) and case.box.contains(case.x) and case.domain.contains_box(case.box)
    assert case.net.exact_margin(case.p, case.label) <= 0
    assert case.net.exact_margin(case.x, case.label) > 0
    # tiny, so that exact arithmetic is fast
    assert case.net.n_inputs <= 4 and len(case.net.hidden_sizes) <= 3 and max(case.net.hidden_sizes) <= 6


@pytest.mark.parametrize("key", KEYS)
def test_misclassified_agrees_with_exact_arithmetic_on_the_crafted_points(key):
    # the oracles confirm counterexamples, and recheck checks stored ones, with
    # Network.misclassified: it must agree with exact arithmetic where float64 overflows
    # (NaN margins) or underflows, not only near the boundary
    case = BY_KEY[key]
    pts = np.concatenate([case.p[None], case.x[None], case.members.reshape(-1, case.net.n_inputs)])
    got = case.net.misclassified(pts, case.label).tolist()
    want = [truly_misclassified(case.net, q, case.label) for q in pts]
    assert got == want, f"{key}: misclassified {got}, exact {want} at {pts.tolist()}"


# -- 1. oracles ------------------------------------------------------------------------------------
#: every oracle on every case; the compositions (whose stages are asked on every case
#: anyway) on ``KINDS``
ORACLE_QUERIES = [(key, spec) for spec in ORACLES for key in (KINDS if "+" in spec else KEYS)]


@pytest.mark.parametrize(("key", "spec"), ORACLE_QUERIES, ids=[f"{k}-{s}" for k, s in ORACLE_QUERIES])
def test_no_oracle_verifies_a_box_holding_a_point_misclassified_in_exact_arithmetic(key, spec):
    case = BY_KEY[key]
    try:
        oracle = build_oracle(spec, case.net)
    except ParallelepipedoNNError:
        return  # refusing the network (e.g. weights beyond float32's range) proves nothing
    lower, upper = query_boxes(case)
    answers = oracle.verify(lower, upper, case.label)
    for lo, hi, a in zip(lower, upper, answers):
        assert a.verdict is not Verdict.VERIFIED, \
            f"{spec} VERIFIED [{lo.tolist()}, {hi.tolist()}] (margin bound {a.margin}), but {claim(case)}"
        if a.verdict is Verdict.FALSIFIED:
            assert_real_counterexample(case, lo, hi, a.counterexample)


# -- 2. searches -----------------------------------------------------------------------------------
def sample(box: Box, count: int, seed: int) -> np.ndarray:
    """The box's corners (up to 16), centre and ``count`` uniform points."""
    n = box.n
    rng = np.random.default_rng(seed)
    corners = np.array([[box.upper[i] if (k >> i) & 1 else box.lower[i] for i in range(n)]
                        for k in range(min(2 ** n, 16))])
    uniform = box.lower + rng.random((count, n)) * (box.upper - box.lower)
    return np.concatenate([corners, ((box.lower + box.upper) / 2)[None], uniform])


@pytest.mark.parametrize("algorithm", list(SEARCHES))
@pytest.mark.parametrize("key", SEARCH_KINDS)
def test_no_search_certifies_a_box_holding_a_point_misclassified_in_exact_arithmetic(key, algorithm):
    case = BY_KEY[key]
    config = ppn.CertifyConfig(algorithm=algorithm, precision=1e-3 * float(case.domain.width.max()),
                               oracle_options={"time_limit": LIMIT}, search_time_limit=1.5)
    try:
        cert = ppn.certify(case.net, case.x, label=case.label, domain=case.domain, config=config)
    except ParallelepipedoNNError:
        return  # a clean error certifies nothing
    if cert.status is not Status.CERTIFIED:
        return
    box = cert.box
    assert not box.contains(case.p), \
        f"{algorithm} ({cert.oracle}) certified [{box.lower.tolist()}, {box.upper.tolist()}], but {claim(case)}"
    bad = [q.tolist() for q in sample(box, 48, 0) if truly_misclassified(case.net, q, case.label)]
    assert not bad, f"{algorithm} certified [{box.lower.tolist()}, {box.upper.tolist()}] holding {bad[:3]}, " \
        "misclassified in exact arithmetic"
    a = AttackOracle(case.net, restarts=8).verify_box(box.lower, box.upper, case.label)
    assert not (a.falsified and truly_misclassified(case.net, a.counterexample, case.label)), \
        f"{algorithm} certified a box holding the misclassified point {a.counterexample.tolist()}"


# -- 3. distance queries ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["milp", "bab"])  # the cascades ask milp's query, or bab's verdicts
@pytest.mark.parametrize("key", KINDS)
def test_no_distance_query_proves_a_radius_reaching_a_misclassified_point(key, name):
    case = BY_KEY[key]
    oracle = build_oracle(name, case.net)
    d = min_adversarial_distance(oracle, case.x, case.label, case.domain, falsifier=AttackOracle(case.net),
                                 time_limit=LIMIT)
    assert d.lower <= case.distance, \
        f"{name} proved no misclassified point within {d.lower} of x = {case.x.tolist()}, but {claim(case)} " \
        f"at distance {case.distance}"
    if d.counterexample is not None:
        assert truly_misclassified(case.net, d.counterexample, case.label), f"{name}: bad counterexample"


def test_the_milp_distance_query_itself_stays_below_every_misclassified_point():
    for key in KINDS:
        case = BY_KEY[key]
        oracle = build_oracle("milp", case.net)
        d = oracle.min_distance(case.x, case.label, case.domain, time_limit=2 * LIMIT)
        assert d.lower <= case.distance, f"milp min_distance proves {d.lower} > {case.distance} on {key}"


# -- 4. dual boxes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", KINDS)
def test_dual_boxes_contain_every_point_of_their_class(key, method):
    case = BY_KEY[key]
    # class 1 holds p and the members (logit_1 >= logit_0 exactly), class 0 holds x
    for label, points in ((1, np.concatenate([case.p[None], case.members])), (0, case.x[None])):
        try:
            dual = dual_box(case.net, label, domain=case.domain, method=method, workers=1, time_limit=LIMIT)
        except ParallelepipedoNNError:
            continue
        inside = [] if dual.box is None else dual.box.contains_points(points).tolist()
        assert dual.box is not None and all(inside), \
            f"{method} dual box of class {label}: " + \
            ("proven empty" if dual.box is None else f"[{dual.box.lower.tolist()}, {dual.box.upper.tolist()}]") + \
            f" misses {points.tolist()} (exact margins of class 0: " + \
            f"{[fmt(case.net.exact_margin(q, 0)) for q in points]})"


# -- 5. recheck ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict:
    """Per case, a certificate (JSON, next to its float64 ONNX model) that claims the
    case's box certified around ``x`` — a false claim."""
    out = {}
    for key in KINDS:
        case = BY_KEY[key]
        d = tmp_path_factory.mktemp(key.replace("+", ""))
        model = d / "m.onnx"
        save_float64_onnx(case.net, model)
        cert = Certificate(status=Status.CERTIFIED, label=case.label,
                           predicted_label=int(case.net.predict(case.x)[0]), input=case.x,
                           input_shape=case.net.input_shape, domain=case.domain, box=case.box,
                           apothem_upper_bound=None, oracle="crown", oracle_settings={}, algorithm="apothem-kary",
                           algorithm_settings={}, oracle_calls=1, rounds=1, seconds=0.0, model_path=str(model),
                           model_sha256=sha256_file(model),
                           network=case.net.describe())
        cert.save(d / "c.json")
        out[key] = d / "c.json"
    return out


RECHECK_ORACLES = sorted(oracle_entries()) + CASCADES[:2]


@pytest.mark.parametrize("name", RECHECK_ORACLES)
@pytest.mark.parametrize("key", KINDS)
def test_recheck_never_confirms_a_box_holding_a_point_misclassified_in_exact_arithmetic(key, name, certificates):
    case = BY_KEY[key]
    for part in name.split("+"):
        if part in OPTIONAL and not OPTIONAL[part]():
            pytest.skip(f"{part} is not installed")
    from parallelepipedonn.onnx_import import load_onnx

    path = certificates[key]
    assert load_onnx(path.parent / "m.onnx").digest == case.net.digest  # the file is the crafted IR, exactly
    result = recheck(path, oracle=name, time_limit=LIMIT)
    assert result.outcome is not Outcome.CONFIRMED, f"recheck --oracle {name} confirmed the box: {result.reason}; " \
                                                    f"but {claim(case)}"
    if result.counterexample is not None and result.outcome is Outcome.REFUTED:
        assert truly_misclassified(case.net, result.counterexample, case.label) or \
            not case.box.contains(result.counterexample)


@pytest.mark.parametrize("key", KINDS)
def test_cli_recheck_exits_refuted_or_undecided(key, certificates, capsys):
    code = main(["recheck", str(certificates[key]), "--time-limit", str(LIMIT)])
    out = capsys.readouterr().out
    assert code in (5, 6), f"recheck exit {code}: {out.strip()}"


# -- 6. graph CROWN's float32 first sides ------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_graph_crown_with_float32_first_sides_proves_no_box_holding_a_misclassified_point(key, monkeypatch):
    """The crafted cases as graphs through :mod:`oracles.graph_bounds` with each neuron's
    first side bounded in float32 (chunks of one row, so that one side first applies on
    these tiny nets): no margin bound above 0 on a box holding ``p``, no NaN."""
    import torch

    import oracles.graph_bounds as gb
    from oracles.graph_bounds import GraphTensors, margin_lower_bounds
    from oracles.precision import box_tensors
    from parallelepipedonn.graph import Graph

    rows = {torch.float32: 0, torch.float64: 0}
    signed = gb._signed_bounds

    def counted(*args):
        rows[args[0].dtype] += args[7].numel()
        return signed(*args)

    monkeypatch.setattr(gb, "_signed_bounds", counted)
    monkeypatch.setattr(gb, "CHUNK_ELEMENTS", {4: 1, 8: 1})
    case = BY_KEY[key]
    gt = GraphTensors.of(Graph.from_network(case.net), float32_first=True)
    lower, upper = query_boxes(case)
    lo, hi = box_tensors(lower, upper)
    with torch.inference_mode():
        bounds = margin_lower_bounds(gt, lo, hi, case.label)
    assert not bool(bounds.isnan().any())
    worst = bounds.min(dim=1).values
    assert not bool((worst > 0).any()), f"margin bounds {worst.tolist()}, but {claim(case)}"
    if rows[torch.float64]:  # neurons were tightened: their first sides in float32
        assert rows[torch.float32]


# -- 7. float32 sums that round at every term (a convolution whose stride divides its dilation) ----
def _rounding_convnet(with_relu_neuron: bool):
    """Kernel, stride and dilation 16 on a (1, 737, 737) input: all 256 taps read one
    input, so a float32 coefficient of the transposed convolution is a sum of 256 terms —
    one tap of 1 and 255 of just over half its unit roundoff, which round up one by one
    (about 255 units of roundoff). Fan-out 1 (ceil(k / s)), as once counted, charged it as
    one term. Then a ReLU, the 1024 outputs summed: the class-0 score (bias 0: the margin
    bound must stay below the exact margin); ``with_relu_neuron``: the sum, 1e-3 below 0
    at the box's lower corner, is a neuron ``z`` whose float32 first side must not settle
    it, and the margin ``z - relu(z) + 5e-4`` is -5e-4 there."""
    from parallelepipedonn import graph_nodes as gn
    from parallelepipedonn.graph import Graph

    k, ho = 16, 32
    h = (ho - 1) * k + k * (k - 1) + 1
    delta = 2.0**-24 * (1 + 2.0**-10)
    w = np.full((1, 1, k, k), delta)
    w[0, 0, 0, 0] = 1.0
    n = ho * ho
    nodes = [gn.Input(inputs=(), shape=(1, h, h)),
             gn.Conv2d(inputs=(0,), shape=(1, ho, ho), in_shape=(1, h, h), weight=w, bias_=np.zeros(1),
                       stride=(k, k), dilation=(k, k)),
             gn.ReLU(inputs=(1,), shape=(1, ho, ho)),
             gn.Reshape(inputs=(2,), shape=(n,), in_shape=(1, ho, ho))]
    if not with_relu_neuron:
        nodes.append(gn.Dense(inputs=(3,), shape=(2,), in_shape=(n,), weight=np.stack([np.ones(n), np.zeros(n)]),
                              bias_=np.zeros(2)))
    else:
        total = n * (1.0 + (k * k - 1) * delta)  # the sum at the lower corner (ones), exact in float64
        nodes += [gn.Dense(inputs=(3,), shape=(1,), in_shape=(n,), weight=np.ones((1, n)),
                           bias_=np.array([-(total + 1e-3)])),
                  gn.ReLU(inputs=(4,), shape=(1,)),
                  gn.Concat(inputs=(4, 5), shape=(2,), axis=0),
                  gn.Dense(inputs=(6,), shape=(2,), in_shape=(2,), weight=np.array([[1.0, -1.0], [0.0, 0.0]]),
                           bias_=np.array([5e-4, 0.0]))]
    return Graph((1, h, h), tuple(nodes), "rounding-convnet")


@pytest.mark.parametrize("with_relu_neuron, dtype", [(False, "float32"), (False, "float64"), (True, "float64")])
def test_graph_crown_charges_every_tap_that_reads_an_input(with_relu_neuron, dtype):
    """The margin bound at most the exact margin at the box's lower corner (exact
    arithmetic), and no VERIFIED where that margin is negative; float64 runs its first
    sides in float32 (the default)."""
    from fractions import Fraction

    from oracles.crown import CrownOracle
    from parallelepipedonn.graph_exact import exact_logits

    g = _rounding_convnet(with_relu_neuron)
    lo = np.ones((1, g.n_inputs))
    hi = lo + (1e-5 if with_relu_neuron else 1e-9)
    ints, e = exact_logits(g, lo[0])
    exact = Fraction(int(ints[0]) - int(ints[1])) * Fraction(2) ** e
    oracle = CrownOracle(g, dtype=dtype)
    bound = oracle.margin_lower_bounds(lo, hi, 0)[0, 0]
    assert Fraction(float(bound)) <= exact, f"margin bound {bound!r} above the exact margin {float(exact)!r}"
    if exact < 0:
        assert oracle.verify(lo, hi, 0)[0].verdict is not Verdict.VERIFIED


# -- 8. products below float32's normal range (subnormal bounds, underflowing slopes) ---------------
def _subnormal_relu_net():
    """x in [-2, 4] smallest float32 subnormals: 512 neurons ``z = -2^120 relu(x) + 3.8
    2^-29`` (``relu(x)``'s upper line has a subnormal intercept, ``fl(2/3) * 2`` smallest
    subnormals, which rounded down to 1), and the class-0 margin ``z_0 - relu(z_0) + x +
    1e-10``: -2.7e-10 at the box's upper end, where ``z_0 < 0``. The intercept rounded down
    let float32 first sides settle ``z`` active and the default oracle verify the box."""
    from parallelepipedonn import graph_nodes as gn
    from parallelepipedonn.graph import Graph

    sub, n = 2.0**-149, 512
    w = np.zeros((2, 2 * n + 1))
    w[0, 0], w[0, n], w[0, 2 * n] = 1.0, -1.0, 1.0
    nodes = [gn.Input(inputs=(), shape=(1, 1, 1)), gn.Reshape(inputs=(0,), shape=(1,), in_shape=(1, 1, 1)),
             gn.ReLU(inputs=(1,), shape=(1,)),
             gn.Dense(inputs=(2,), shape=(n,), in_shape=(1,), weight=np.full((n, 1), -2.0**120),
                      bias_=np.full(n, 3.8 * sub * 2.0**120)),
             gn.ReLU(inputs=(3,), shape=(n,)), gn.Concat(inputs=(3, 4, 1), shape=(2 * n + 1,), axis=0),
             gn.Dense(inputs=(5,), shape=(2,), in_shape=(2 * n + 1,), weight=w, bias_=np.array([1e-10, 0.0]))]
    return Graph((1, 1, 1), tuple(nodes), "subnormal-relu"), np.array([[-2 * sub]]), np.array([[4 * sub]])


def _underflowing_slope_net():
    """x in [0, 1]: ``z = 2^115 x - (2^115 - 2^105)`` (``-l`` about 2^115), ``r = relu(z)``,
    ``a = r + r`` (an Add: no linear node reads ``r``'s scale), the margin ``w a + 1e-9 x +
    c`` with ``w = -3.587e-43``: the product ``2 w`` times ``r``'s chord slope lands below
    float32's normal range, off by half a subnormal, which ``|z|`` (2^115) scales to 1e-11
    against an exact margin of -1.4e-11 at x = 0."""
    from parallelepipedonn import graph_nodes as gn
    from parallelepipedonn.graph import Graph

    nodes = [gn.Input(inputs=(), shape=(1,)),
             gn.Dense(inputs=(0,), shape=(1,), in_shape=(1,), weight=np.array([[2.0**115]]),
                      bias_=np.array([-(2.0**115 - 2.0**105)])),
             gn.ReLU(inputs=(1,), shape=(1,)), gn.Add(inputs=(2, 2), shape=(1,)),
             gn.Concat(inputs=(3, 0), shape=(2,), axis=0),
             gn.Dense(inputs=(4,), shape=(2,), in_shape=(2,), weight=np.array([[-3.587e-43, 1e-9], [0.0, 0.0]]),
                      bias_=np.array([-1.45e-11, 0.0]))]
    return Graph((1,), tuple(nodes), "underflowing-slope"), np.array([[0.0]]), np.array([[1.0]])


@pytest.mark.parametrize("make, dtype", [(_subnormal_relu_net, "float64"), (_subnormal_relu_net, "float32"),
                                         (_underflowing_slope_net, "float32")],
                         ids=["subnormal-relu-f64", "subnormal-relu-f32", "underflowing-slope-f32"])
def test_graph_crown_covers_products_below_the_normal_range(make, dtype):
    """The margin bound at most the exact margin at the box's ends (exact arithmetic), and
    no VERIFIED where it is negative (float64: with float32 first sides, the default)."""
    from fractions import Fraction

    from oracles.crown import CrownOracle
    from parallelepipedonn.graph_exact import exact_logits

    g, lo, hi = make()
    exact = []
    for x in (lo[0], hi[0]):
        ints, e = exact_logits(g, x)
        exact.append(Fraction(int(ints[0]) - int(ints[1])) * Fraction(2) ** e)
    oracle = CrownOracle(g, dtype=dtype)
    bound = oracle.margin_lower_bounds(lo, hi, 0)[0, 0]
    assert Fraction(float(bound)) <= min(exact), f"margin bound {bound!r} above the exact {float(min(exact))!r}"
    assert oracle.verify(lo, hi, 0)[0].verdict is not Verdict.VERIFIED
