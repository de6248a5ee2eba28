"""verify: a VNN-LIB property (or robustness at a radius) answered unsat, sat, unknown or
timeout — unsat only when proven, sat only with a counterexample confirmed exactly on the
model against the property's own constants; the answers agree with the exact best
apothem; bad property files are one-line errors naming the line, with nothing written."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import helper

from parallelepipedonn.certify import CertifyConfig, certify
from parallelepipedonn.errors import InputDataError
from parallelepipedonn.network import Affine, Network, ReLU
from parallelepipedonn.property_net import _rows as integer_rows
from parallelepipedonn.property_net import composed_chain, reduce_region, shifted_chain
from parallelepipedonn.store import ResultStore
from parallelepipedonn.verify import (
    Answer,
    Verification,
    VerifyConfig,
    exact_outputs,
    verify_epsilon,
    verify_property,
)
from parallelepipedonn.vnnlib import parse_vnnlib
from tests.graph_nets import residual
from tests.nets import make_model, ort_forward, random_network, saved_classifier, tensor
from tests.test_cli import run

ROOT = Path(__file__).resolve().parents[1]
COMPLETE = "crown+alpha-crown+bab"


def property_text(lower, upper, outputs: str, m: int) -> str:
    n = len(lower)
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + [f"(declare-const Y_{j} Real)" for j in range(m)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    return "\n".join(lines) + "\n" + outputs + "\n"


def robustness(label: int, m: int) -> str:
    return "(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(m) if j != label) + "))"


def ball(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SimpleNamespace:
    """A 6-12-12-3 classifier (m.onnx), an input x.npy, and properties around it."""
    s = saved_classifier(tmp_path_factory.mktemp("verify"))
    m = s.net.n_classes
    for name, eps in (("near", 0.001), ("far", 0.5)):
        (s.dir / f"{name}.vnnlib").write_text(property_text(*ball(s.x, eps), robustness(s.label, m), m))
    return s


def property_value(region, y: list[Fraction]) -> Fraction:
    """min over disjuncts of max over constraints of (c . y - d): > 0 iff the outputs are safe."""
    return min(max(sum((c * y[j] for j, c in con.coefficients), Fraction(0)) - con.rhs for con in d)
               for d in region.disjuncts)


# -- the reductions ---------------------------------------------------------------------------------
#: Unsafe sets, with thresholds ``{q[j]}``, ``{q1[j]}``, ``{q0[j]}``: quantiles 0.5, 0.25, 0.1 of ``Y_j``
#: on the box (``{s}``: 0.1 of ``Y_2 + Y_1 / 2``), so that the box has safe and unsafe points; and
#: the form each reduces to for a chain.
OUTPUTS = {
    "robustness": ("(assert (or (and (>= Y_1 Y_0)) (and (>= Y_2 Y_0))))", "robustness"),
    "targeted": ("(assert (or (and (>= Y_1 Y_0)) (and (<= Y_2 {q1[2]}))))", "composed"),
    "conjunction": ("(assert (<= Y_0 {q[0]}))\n(assert (>= (+ Y_1 0.1) {q1[1]}))", "shifted"),
    "mixed": (("(assert (or (and (>= Y_1 Y_0) (<= Y_1 {q0[1]})) (and (<= (+ Y_2 (* 0.5 Y_1)) {s}))\n"
               "            (and (>= Y_0 {q1[0]}) (>= Y_0 Y_2) (< (* 0.3 Y_0) (* 0.3 {q[0]})))))"), "shifted"),
}


@pytest.mark.parametrize("model_kind", ["chain", "residual graph"])
@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_a_reduction_never_calls_an_unsafe_point_safe(case, model_kind):
    """The reduction's margin is > 0 only where the property's exact value is > 0, and
    every point whose outputs are unsafe is misclassified by the reduction (exactly)."""
    model = random_network(3, [4, 8, 8, 3]) if model_kind == "chain" else residual(1, side=2, channels=2)
    n = model.n_inputs
    lo, hi = np.full(n, 0.1), np.full(n, 0.6)
    rng = np.random.default_rng(0)
    points = np.vstack([lo + rng.random((150, n)) * (hi - lo), lo, hi, np.where(rng.random((20, n)) < 0.5, lo, hi)])
    ys = model.forward(points)
    quantiles = {"q": [float(v) for v in np.quantile(ys, 0.5, axis=0)],
                 "q1": [float(v) for v in np.quantile(ys, 0.25, axis=0)],
                 "q0": [float(v) for v in np.quantile(ys, 0.1, axis=0)],
                 "s": float(np.quantile(ys[:, 2] + ys[:, 1] / 2, 0.1))}
    outputs, form = OUTPUTS[case]
    (region,) = parse_vnnlib(property_text(lo, hi, outputs.format(**quantiles), 3), "p").regions
    red = reduce_region(model, region, "crown")
    assert red.form == (form if model_kind == "chain" or form == "robustness" else "graph")
    margins = red.network.margins(points, red.label)
    unsafe_seen = 0
    for x, margin in zip(points, margins):
        value = property_value(region, exact_outputs(model, x))
        if margin > 0:
            assert value > 0
        if value <= 0:
            unsafe_seen += 1
            assert red.network.misclassified(x, red.label)[0]
    assert 0 < unsafe_seen < len(points) or case == "robustness"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_composed_and_shifted_forms_get_the_same_answers_from_a_complete_oracle(seed):
    from oracles import make_oracle

    net = random_network(seed, [3, 10, 10, 4])
    x = np.random.default_rng(seed).random(3)
    for eps in (0.02, 0.1, 0.3):
        lo, hi = ball(x, eps)
        text = property_text(lo, hi, "(assert (or (and (>= Y_1 Y_0)) (and (<= (- Y_3 Y_2) -0.2))))", 4)
        (region,) = parse_vnnlib(text, "p").regions
        groups = integer_rows(region, 4, "p")
        lo, hi = region.outer_box()
        verdicts = set()
        for reduction in (composed_chain(net, [g[0] for g in groups]), shifted_chain(net, groups, lo, hi)):
            verdicts.add(make_oracle("milp", reduction).verify_box(lo, hi, 0).verdict.value)
        assert len(verdicts) == 1, (seed, eps, verdicts)


def identity_net() -> Network:
    """Y_0 = X_0 exactly (as relu(x) - relu(-x)), Y_1 = 0."""
    return Network((1,), (Affine(np.array([[1.0], [-1.0]]), np.zeros(2)), ReLU(),
                          Affine(np.array([[1.0, -1.0], [0.0, 0.0]]), np.zeros(2))))


@pytest.mark.parametrize("outputs", [
    "(assert (<= Y_0 0.1))",  # unsafe only at the real number 1/10, which no float64 is
    "(assert (< Y_0 0.1))",  # no unsafe point at all, but one at distance 0 of the box
    "(assert (<= (* 0.1 Y_0) 0.01))",
    "(assert (<= Y_0 0.1))\n(assert (<= Y_1 0))",  # the shifted form
    "(assert (or (and (<= Y_0 0.1)) (and (>= Y_0 0.3))))",
])
@pytest.mark.parametrize("oracle", ["crown", "milp", COMPLETE, "attack+crown"])
def test_a_property_on_the_edge_of_float64_is_neither_proven_nor_refuted(outputs, oracle):
    prop = parse_vnnlib("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                        "(assert (>= X_0 0.1))\n(assert (<= X_0 0.2))\n" + outputs, "edge.vnnlib")
    result = verify_property(identity_net(), prop, config=VerifyConfig(oracle=oracle))
    assert result.answer is Answer.UNKNOWN, result.reason


def test_ties_count_for_non_strict_constraints_and_not_for_strict_ones():
    net = identity_net()
    text = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
           "(assert (>= X_0 0.25))\n(assert (<= X_0 0.5))\n"
    tie = verify_property(net, parse_vnnlib(text + "(assert (<= Y_0 0.25))", "p"), config=VerifyConfig(oracle="milp"))
    assert tie.answer is Answer.SAT and tie.counterexample.tolist() == [0.25]  # Y_0 = 0.25 <= 0.25
    strict = verify_property(net, parse_vnnlib(text + "(assert (< Y_0 0.25))", "p"), config=VerifyConfig(oracle="milp"))
    assert strict.answer is Answer.UNKNOWN  # no unsafe point, but none is 1e-4 away either


def test_trivial_properties():
    net = identity_net()
    head = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (>= X_0 0))\n" \
           "(assert (<= X_0 1))\n"
    holds = verify_property(net, parse_vnnlib(head + "(assert (<= 1 0))", "p"))
    assert holds.answer is Answer.UNSAT and "no unsafe point" in holds.reason
    violated = verify_property(net, parse_vnnlib(head + "(assert (<= 0 1))", "p"))
    assert violated.answer is Answer.SAT and violated.counterexample.tolist() == [0.5]


# -- answers ---------------------------------------------------------------------------------------------
def test_unsat_near_the_input_and_sat_far_from_it_with_an_exactly_confirmed_counterexample(small):
    from parallelepipedonn.vnnlib import read_vnnlib

    near = verify_property(small.net, read_vnnlib(small.dir / "near.vnnlib"))
    assert near.answer is Answer.UNSAT and near.status.value == "certified" and near.counterexample is None
    assert near.vnncomp_result() == "unsat\n"
    prop = read_vnnlib(small.dir / "far.vnnlib")
    far = verify_property(small.net, prop)
    assert far.answer is Answer.SAT and far.status.value == "not-robust"
    cex = far.counterexample
    (region,) = prop.regions
    assert region.contains(cex) and region.violated_disjunct(exact_outputs(small.net, cex)) is not None
    assert far.outputs.tolist() == small.net.forward(cex)[0].tolist()
    lines = far.vnncomp_result().splitlines()
    assert lines[0] == "sat" and lines[1] == f"((X_0 {float(cex[0])!r})" and lines[-1].endswith("))")
    assert len(lines) == 1 + small.net.n_inputs + small.net.n_classes


def test_the_time_running_out_is_timeout_never_a_proof():
    import parallelepipedonn as ppn

    net = ppn.load_onnx(ppn.default_model_path("mnist", "deep"))
    x, _ = ppn.load_dataset("mnist", "test")[0]
    # a radius just below the exact best apothem (0.0868): far too hard for 0.05 s of branch and bound
    r = verify_epsilon(net, x, 0.0865, config=VerifyConfig(oracle="bab", oracle_options={"time_limit": 0.05}))
    assert r.answer is Answer.TIMEOUT and r.status.value == "unknown" and r.regions[0]["timed_out"]
    text = property_text(*ball(x.reshape(-1), 0.0865), robustness(int(net.predict(x)[0]), 10), 10)
    r = verify_property(net, parse_vnnlib(text, "p"), timeout=1e-6)
    assert r.answer is Answer.TIMEOUT and r.regions[0]["verdict"] == "not asked"


def test_a_timeout_lifts_the_stages_own_default_limits_but_not_the_users():
    # verify --timeout 240 must not stop at bab's default 60 s: the call's deadline bounds it
    net = random_network(0, [4, 8, 3])
    limits = {s.name: s.time_limit for s in VerifyConfig().within(240.0).build(net).stages}
    assert limits["bab"] is None and limits["attack"] is None
    assert {s.name: s.time_limit for s in VerifyConfig().within(None).build(net).stages}["bab"] == 60.0
    mine = VerifyConfig(oracle_options={"bab.time_limit": 5.0}).within(240.0)
    assert {s.name: s.time_limit for s in mine.build(net).stages}["bab"] == 5.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robustness_at_epsilon_agrees_with_the_exact_best_apothem(seed):
    """verify --epsilon and certify --epsilon: robust at epsilon iff epsilon is below the
    exact best apothem (bracketed by --algorithm exact to 1e-4)."""
    net = random_network(seed, [5, 12, 12, 3], scale=2.0)
    x = np.random.default_rng(seed + 10).random(5)
    exact = certify(net, x, config=CertifyConfig(algorithm="exact", precision=1e-4))
    low, high = exact.apothem, exact.apothem_upper_bound  # proven bracket (exact to 1e-4, or close)
    assert high <= 1.01 * low, exact.reason
    for eps, robust in ((0.97 * low, True), (1.03 * high, False)):
        v = verify_epsilon(net, x, eps, config=VerifyConfig(oracle=COMPLETE))
        assert v.answer is (Answer.UNSAT if robust else Answer.SAT), (eps, low, high, v.reason)
        c = certify(net, x, config=CertifyConfig(epsilon=eps, precision=1e-2))
        assert c.epsilon["status"] == ("certified" if robust else "not-robust"), c.epsilon
        if not robust:
            assert np.max(np.abs(v.counterexample - x)) <= eps and net.misclassified(v.counterexample, exact.label)[0]


@pytest.mark.parametrize("name", ["7-1", "2-2"])
def test_reference_inputs_agree_with_the_exact_best_apothem(reference, name, tmp_path, capsys):
    import parallelepipedonn as ppn

    model = reference / "nets" / "mnist_nn-32.onnx"
    net = ppn.load_onnx(model)
    x = ppn.load_input(reference / "inputs" / "mnist" / f"{name}.csv", net.input_shape)
    exact = certify(net, x, config=CertifyConfig(algorithm="exact"))
    assert exact.exact
    for eps, robust in ((0.98 * exact.apothem, True), (1.02 * exact.apothem_upper_bound, False)):
        code, out, err = run(capsys, "verify", "--model", str(model), "--input",
                             str(reference / "inputs" / "mnist" / f"{name}.csv"), "--epsilon", repr(eps))
        assert code == 0 and out.splitlines()[0] == ("unsat" if robust else "sat"), out + err
        c = certify(net, x, config=CertifyConfig(epsilon=eps))
        assert c.epsilon["status"] == ("certified" if robust else "not-robust")


def test_a_residual_graph_is_verified_on_the_property_graph_by_every_oracle_that_reads_graphs():
    g = residual(0)
    x = np.full(g.n_inputs, 0.35)
    label = int(g.predict(x)[0])
    text = property_text(*ball(x, 0.002), "(assert (or (and (>= Y_1 Y_0) (<= Y_2 5)) (and (<= Y_2 -30))))", 3)
    assert label == 0
    result = verify_property(g, parse_vnnlib(text, "p"), config=VerifyConfig(oracle="attack+crown"))
    assert result.answer is Answer.UNSAT and result.regions[0]["form"] == "graph"
    for oracle in ("crown+bab", "milp"):  # complete oracles read residual graphs as they are
        result = verify_property(g, parse_vnnlib(text, "p"), config=VerifyConfig(oracle=oracle))
        assert result.answer is Answer.UNSAT and result.regions[0]["form"] == "graph", oracle


# -- the command line ------------------------------------------------------------------------------------
def test_verify_writes_json_and_the_vnncomp_result_and_recheck_confirms_them(small, tmp_path, capsys):
    from tests.test_certificate_schema import conforms

    m, d = str(small.path), small.dir
    for name, answer in (("near", "unsat"), ("far", "sat")):
        j, r = tmp_path / f"{name}.json", tmp_path / f"{name}.txt"
        code, out, err = run(capsys, "verify", "--model", m, "--vnnlib", str(d / f"{name}.vnnlib"), "--json", str(j),
                             "--result-file", str(r), "--timeout", "60")
        assert code == 0, err
        assert out.splitlines()[0] == answer and r.read_text().splitlines()[0] == answer
        stored = json.loads(j.read_text())
        conforms(stored, "verification")
        assert stored["result"] == answer and stored["property"]["sha256"] and stored["model_sha256"]
        code, out, err = run(capsys, "recheck", str(j))
        assert code == 0 and out.startswith("CONFIRMED"), out + err
    stored = json.loads((tmp_path / "far.json").read_text())
    stored["counterexample"] = small.x.tolist()  # the input is no counterexample
    (tmp_path / "edited.json").write_text(json.dumps(stored))
    code, out, _ = run(capsys, "recheck", str(tmp_path / "edited.json"))
    assert code == 5 and out.startswith("REFUTED")
    changed = tmp_path / "changed.vnnlib"
    shutil.copy(d / "near.vnnlib", changed)
    code, _, err = run(capsys, "verify", "--model", m, "--vnnlib", str(changed), "--json", str(tmp_path / "c.json"))
    changed.write_text(changed.read_text() + "; edited\n")
    code, _, err = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 3 and "property file" in err


@pytest.mark.parametrize("edit", ["epsilon inf", "epsilon nan", "domain inverted", "domain too long"])
def test_a_stored_epsilon_or_domain_that_is_no_ball_is_a_usage_error(small, tmp_path, capsys, edit):
    j = tmp_path / "e.json"
    assert run(capsys, "verify", "--model", str(small.path), "--input", str(small.dir / "x.npy"), "--epsilon", "0.01",
               "--json", str(j))[0] == 0
    stored = json.loads(j.read_text())
    p, n = stored["property"], len(stored["property"]["input"])
    if edit.startswith("epsilon"):
        p["epsilon"] = math.inf if edit.endswith("inf") else math.nan
    elif edit == "domain inverted":
        p["domain"] = {"lower": [1.0] * n, "upper": [0.0] * n}
    else:
        p["domain"] = {"lower": [0.0] * (n + 1), "upper": [1.0] * (n + 1)}
    j.write_text(json.dumps(stored, allow_nan=True))
    code, out, err = run(capsys, "recheck", str(j))
    assert code in (2, 5) and "internal error" not in err, err


@pytest.mark.parametrize("edit", ["outputs", "inputs", "regions", "domain", "predicted_label"])
def test_every_stored_claim_of_a_verification_is_rechecked(small, tmp_path, capsys, edit):
    """Not only the answer: the outputs at the counterexample, the property's counts, the
    domain its boxes lie in, the predicted label; a false one is refuted (exit 5)."""
    j = tmp_path / "v.json"
    args = (["--input", str(small.dir / "x.npy"), "--epsilon", "0.01"] if edit == "predicted_label"
            else ["--vnnlib", str(small.dir / "far.vnnlib")])
    assert run(capsys, "verify", "--model", str(small.path), *args, "--json", str(j))[0] == 0
    assert run(capsys, "recheck", str(j))[0] == 0
    stored = json.loads(j.read_text())
    p = stored["property"]
    if edit == "outputs":
        stored["outputs"] = [9.0] * len(stored["outputs"])
    elif edit in ("inputs", "regions"):
        p[edit] += 1
    elif edit == "domain":
        p["domain"] = {"lower": 0.4, "upper": 0.5}
    else:
        p["predicted_label"] = (p["predicted_label"] + 1) % 3
    j.write_text(json.dumps(stored))
    code, out, err = run(capsys, "recheck", str(j))
    assert code == 5 and out.startswith("REFUTED"), out + err


def bad_property(small, kind: str) -> tuple[str, int]:
    """A property file that is wrong for the small model, and the line to blame."""
    lines = (small.dir / "near.vnnlib").read_text().splitlines()
    if kind == "malformed":
        lines[20] = lines[20].rstrip(")")
        return "\n".join(lines), 21
    if kind == "inputs":
        return "\n".join(lines[:5] + lines[6:]), 19  # X_5 not declared: its first use
    if kind == "outputs":
        return "\n".join(lines[:9] + ["(declare-const Y_3 Real)"] + lines[9:]), 10
    if kind == "domain":
        lines[9] = "(assert (>= X_0 -0.25))"
        return "\n".join(lines), 10
    if kind == "constant":  # an output constraint's constant beyond float64 (was an OverflowError, exit 1)
        return "\n".join(lines + ["(assert (<= (+ Y_0 Y_1) 1e400))"]), len(lines) + 1
    lines[10] = "(assert (<= X_0 -0.5))"  # empty: below X_0's lower bound (line 10)
    return "\n".join(lines), 11


@pytest.mark.parametrize("kind", ["malformed", "inputs", "outputs", "domain", "empty", "constant"])
def test_a_bad_property_is_one_line_naming_the_line_exit_2_and_nothing_written(small, tmp_path, capsys, kind):
    text, line = bad_property(small, kind)
    p = tmp_path / "bad.vnnlib"
    p.write_text(text + "\n")
    outputs = [tmp_path / "r.json", tmp_path / "r.txt"]
    code, out, err = run(capsys, "verify", "--model", str(small.path), "--vnnlib", str(p), "--domain", "0", "1",
                         "--json", str(outputs[0]), "--result-file", str(outputs[1]))
    assert code == 2 and out == ""
    assert err.startswith(f"parallelepipedonn: error: {p}:{line}: ") and err.count("\n") == 1, err
    assert not any(o.exists() for o in outputs)
    csv = tmp_path / "instances.csv"
    csv.write_text(f"{small.path},{p},10\n")
    code, _, err = run(capsys, "verify", "--instances", str(csv), "--check", "--domain", "0", "1")
    assert code == 2 and f"{p}:{line}: " in err


@pytest.mark.parametrize("argv, message", [
    (["--vnnlib", "p.vnnlib"], "--vnnlib needs --model"),
    (["--model", "m.onnx"], "give one property"),
    (["--model", "m.onnx", "--vnnlib", "p.vnnlib", "--epsilon", "0.1"], "give one of --vnnlib, --epsilon"),
    (["--model", "m.onnx", "--vnnlib", "p.vnnlib", "--label", "1"], "--label does not go with --vnnlib"),
    (["--instances", "i.csv"], "--instances needs --store"),
    (["--instances", "i.csv", "--store", "r.db", "--timeout", "5"], "--timeout does not go with --instances"),
    (["--model", "m.onnx", "--vnnlib", "p.vnnlib", "--store", "r.db"], "--store is for --instances"),
    (["--model", "m.onnx", "--vnnlib", "p.vnnlib", "--timeout", "0"], "must be a positive number"),
    (["--model", "m.onnx", "--vnnlib", "p.vnnlib", "--result-file", "p.vnnlib"], "would overwrite an input file"),
    (["--model", "m.onnx", "--vnnlib", "p.vnnlib", "--result-file", "m.onnx"], "would overwrite an input file"),
    (["--model", "m.onnx", "--input", "x.npy", "--epsilon", "0.1", "--json", "x.npy"], "would overwrite an input"),
])
def test_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "verify", *argv)
    assert code == 2 and message in err and out == ""


def test_verify_and_certify_at_epsilon_on_the_command_line(small, tmp_path, capsys):
    from tests.test_certificate_schema import conforms

    j = tmp_path / "e.json"
    code, out, err = run(capsys, "verify", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                         "--epsilon", "0.01", "--json", str(j))
    assert code == 0 and out.splitlines()[0] == "unsat", err
    stored = json.loads(j.read_text())
    conforms(stored, "verification")
    assert stored["property"]["kind"] == "epsilon" and stored["property"]["label"] == small.label
    assert run(capsys, "recheck", str(j))[0] == 0
    c = tmp_path / "c.json"
    code, out, err = run(capsys, "certify", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                         "--epsilon", "0.6", "--json", str(c))
    assert code == 0 and "  epsilon     0.6: NOT robust" in out, out + err
    cert = json.loads(c.read_text())
    conforms(cert, "certificate")
    assert cert["epsilon"]["status"] == "not-robust" and cert["apothem_upper_bound"] <= 0.6
    assert run(capsys, "recheck", str(c))[0] == 0
    cert["epsilon"]["epsilon"] = cert["apothem_upper_bound"] / 2  # the counterexample is not that close
    c.write_text(json.dumps(cert))
    assert run(capsys, "recheck", str(c))[0] == 5


def test_a_decimal_epsilon_is_read_as_a_ball_that_holds_the_decimal_ball(tmp_path, capsys):
    """``--epsilon 0.3`` is the smallest float64 >= 3/10 (float("0.3") is below it): the
    point 5e-17 lies at exact distance <= 3/10 from x = 0.3 + 2^-54 and is misclassified
    (logit_0 = 1e17 x, logit_1 = 5.2); both commands called the ball robust before."""
    from fractions import Fraction

    from parallelepipedonn.cli.args import radius
    from parallelepipedonn.onnx_export import save_onnx

    assert radius("0.3") == math.nextafter(0.3, 1) and radius("0.5") == 0.5 and radius("1e-3") >= Fraction(1, 1000)
    net = Network((1,), (Affine(np.array([[1e17], [0.0]]), np.array([0.0, 5.2])),))
    x, q = np.array([math.nextafter(0.3, 1.0)]), np.array([5e-17])
    assert abs(Fraction(x[0]) - Fraction(q[0])) <= Fraction(3, 10) and net.exact_margin(q, 0) < 0
    save_onnx(net, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    args = ["--model", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"), "--epsilon", "0.3", "--label", "0"]
    code, out, err = run(capsys, "verify", *args)
    assert out.splitlines()[0] == "sat", out + err
    code, out, err = run(capsys, "certify", *args)
    assert "epsilon     0.3: NOT robust" in out, out + err


def test_instances_go_into_the_store_and_a_second_run_resumes(small, tmp_path, capsys, monkeypatch):
    d = tmp_path / "bench"
    (d / "onnx").mkdir(parents=True)
    (d / "vnnlib").mkdir()
    shutil.copy(small.path, d / "onnx" / "m.onnx")
    for name in ("near", "far"):
        shutil.copy(small.dir / f"{name}.vnnlib", d / "vnnlib" / f"{name}.vnnlib")
    (d / "vnnlib" / "broken.vnnlib").write_text("(declare-const X_0 Real\n")
    (d / "instances.csv").write_text("onnx/m.onnx,vnnlib/near.vnnlib,60\nonnx/m.onnx,vnnlib/far.vnnlib,60\n"
                                     "onnx/m.onnx,vnnlib/broken.vnnlib,60\n")
    db = tmp_path / "r.db"
    code, out, err = run(capsys, "verify", "--instances", str(d / "instances.csv"), "--store", str(db))
    assert code == 2 and "3 instance(s): 0 already in" in out and "1 unsat, 1 sat, 1 error" in out, out + err
    with ResultStore(db, read_only=True) as store:
        rows = {Path(r.input_id.split("::")[1]).stem: r for r in store.rows()}
    assert rows["near"].status == "certified" and rows["near"].reason.startswith("unsat: ")
    assert rows["far"].status == "not-robust" and rows["broken"].status == "error"
    assert Verification.from_dict(json.loads(rows["far"].certificate)).answer is Answer.SAT
    assert rows["far"].to_result().answer is Answer.SAT and rows["near"].to_result().answer is Answer.UNSAT
    with pytest.raises(InputDataError, match="holds a verification result"):
        rows["far"].to_certificate()
    stored = tmp_path / "elsewhere" / "far.json"  # a stored result names its files by resolved paths
    stored.parent.mkdir()
    stored.write_text(rows["far"].certificate)
    monkeypatch.chdir(stored.parent)
    assert run(capsys, "recheck", "far.json")[0] == 0
    (d / "vnnlib" / "broken.vnnlib").write_text((small.dir / "near.vnnlib").read_text())
    code, out, err = run(capsys, "verify", "--instances", str(d / "instances.csv"), "--store", str(db))
    assert code == 0 and "2 already in" in out and "1 run now" in out and "2 unsat, 1 sat" in out, out + err
    code, out, _ = run(capsys, "store", "summary", str(db))
    assert code == 0 and "verify / crown+attack+alpha-crown+bab" in out and "2 certified, 1 not-robust" in out
    assert "label each property's" in out and "label predicted" not in out, out  # not the certify default
    # the store is rechecked row by row (its configuration's model is "per-instance": every row
    # was refuted for naming its own model)
    code, out, _ = run(capsys, "recheck", str(db))
    assert code == 0 and "3 confirmed" in out and "refuted" not in out.replace("0 refuted", ""), out


def normalised_model(tmp_path: Path) -> tuple[Path, Network]:
    """An ONNX classifier on a (1, 1, 2, 3) input with a Sub/Div normalisation, as gzip."""

    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"]), helper.make_node("Gemm", ["f", "W1", "B1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "W2", "B2"], ["y"], transB=1)]
    model = make_model(nodes, [1, 1, 2, 3], initializers=[
        tensor("mean", np.float32(0.5)), tensor("std", np.float32(0.25)),
        tensor("W1", rng.normal(0, 0.5, (8, 6)).astype(np.float32)), tensor("B1", rng.normal(0, 0.1, 8).astype(np.float32)),
        tensor("W2", rng.normal(0, 0.5, (3, 8)).astype(np.float32)), tensor("B2", np.zeros(3, np.float32))])
    path = tmp_path / "net.onnx.gz"
    path.write_bytes(gzip.compress(model.SerializeToString()))
    return path, model


def test_a_vnncomp_style_onnx_and_vnnlib_gz_and_the_counterexample_holds_in_onnxruntime(tmp_path, capsys):
    path, model = normalised_model(tmp_path)
    x = np.full(6, 0.5)
    net = __import__("parallelepipedonn.verify", fromlist=["load_model_file"]).load_model_file(path)
    assert net.input_shape == (1, 2, 3)
    label = int(net.predict(x)[0])
    p = tmp_path / "p.vnnlib.gz"
    p.write_bytes(gzip.compress(property_text(*ball(x, 0.5), robustness(label, 3), 3).encode()))
    r = tmp_path / "out.txt"
    code, out, err = run(capsys, "verify", "--model", str(path), "--vnnlib", str(p), "--result-file", str(r))
    assert code == 0 and out.splitlines()[0] == "sat", out + err
    values = dict(line.strip().strip("()").split() for line in r.read_text().splitlines()[1:])
    cex = np.array([float(values[f"X_{i}"]) for i in range(6)])
    y = ort_forward(model, cex.reshape(1, 1, 2, 3))[0]
    assert np.allclose(y, [float(values[f"Y_{j}"]) for j in range(3)], atol=1e-5)
    assert max(y[j] for j in range(3) if j != label) >= y[label] - 1e-5


def test_the_vnncomp_scripts(small, tmp_path):
    env = {**os.environ, "PARALLELEPIPEDONN": f"{sys.executable} -m parallelepipedonn.cli",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = tmp_path / "result.txt"
    proc = subprocess.run([str(ROOT / "vnncomp" / "run_instance.sh"), "v1", "test", str(small.path),
                           str(small.dir / "far.vnnlib"), str(result), "30"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = result.read_text().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ") and len(lines) == 1 + 6 + 3
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n")
    proc = subprocess.run([str(ROOT / "vnncomp" / "prepare_instance.sh"), "v1", "test", str(small.path), str(bad)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2 and "bad.vnnlib" in proc.stderr
    proc = subprocess.run([str(ROOT / "vnncomp" / "run_instance.sh"), "v2", "test", str(small.path), str(bad),
                           str(result), "30"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 1 and "v1" in proc.stderr


def test_run_instance_creates_the_results_directory_and_never_overwrites_its_inputs(small, tmp_path):
    """A results file in a directory that does not exist yet: created. A results file that
    is the property or the model (or a link to it): refused before anything is removed
    (exit 1, the input intact); one that cannot be created: exit 1."""
    env = {**os.environ, "PARALLELEPIPEDONN": f"{sys.executable} -m parallelepipedonn.cli",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def run_instance(onnx: Path, vnnlib: Path, results: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "vnncomp" / "run_instance.sh"), "v1", "test", str(onnx), str(vnnlib),
                               str(results), "30"], capture_output=True, text=True, env=env, timeout=300, check=False)

    result = tmp_path / "new" / "dir" / "result.txt"
    proc = run_instance(small.path, small.dir / "far.vnnlib", result)
    assert proc.returncode == 0 and result.read_text().splitlines()[0] == "sat", proc.stderr
    model, prop = tmp_path / "m.onnx", tmp_path / "p.vnnlib"
    shutil.copy(small.path, model)
    shutil.copy(small.dir / "far.vnnlib", prop)
    (tmp_path / "link.txt").symlink_to(prop)
    for target in (prop, model, tmp_path / "link.txt"):
        proc = run_instance(model, prop, target)
        assert proc.returncode == 1 and "refusing" in proc.stderr, proc.stderr
        assert prop.read_bytes() == (small.dir / "far.vnnlib").read_bytes()
        assert model.read_bytes() == small.path.read_bytes()
    proc = run_instance(model, prop, prop / "under_a_file" / "result.txt")
    assert proc.returncode == 1 and "cannot create" in proc.stderr, proc.stderr


def test_the_default_oracle_reads_a_residual_model_as_it_is(capsys):
    for oracle in ((), ("--oracle", "crown+bab")):
        code, out, err = run(capsys, "verify", "--dataset", "mnist", "--index", "0", "--default-net", "resnet",
                             "--epsilon", "0.002", *oracle)
        assert code == 0 and out.splitlines()[0] == "unsat", out + err
        assert "used instead" not in out


def _final_op_model(op: str):
    """Scores ``[X_0, 0]`` (as relu(x) - relu(-x)), then a final ``op`` over the two."""
    w0, w1 = np.array([[1.0], [-1.0]], np.float32), np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W0"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W1"], ["z"], transB=1), helper.make_node(op, ["z"], ["y"], axis=-1)]
    return make_model(nodes, ["N", 1], initializers=[tensor("W0", w0), tensor("W1", w1)])


@pytest.mark.parametrize("op, changed, kept", [
    ("Softmax", ["(assert (>= Y_0 0.5))", "(assert (<= Y_0 0.3))", "(assert (<= (- Y_0 Y_1) 0.1))"],
     "(assert (<= Y_0 Y_1))"),
    ("LogSoftmax", ["(assert (<= Y_0 0))", "(assert (>= Y_0 -0.5))"], "(assert (<= (- Y_0 Y_1) 0.05))"),
])
def test_a_property_on_what_a_dropped_final_softmax_changes_is_refused(op, changed, kept):
    """The IR drops a final Softmax / LogSoftmax (it keeps the scores' order): a property
    on the probabilities' values would be answered about the scores (onnxruntime's
    ``Y_0`` lies in [0.52, 0.55] on the box, the scores' in [0.1, 0.2]). Refused; a
    comparison the op keeps is answered, and a counterexample's outputs in the result file
    are the file's (the op applied)."""
    from parallelepipedonn.errors import PropertyError
    from parallelepipedonn.onnx_import import model_from_onnx

    model = _final_op_model(op)
    net = model_from_onnx(model)
    assert net.dropped_final == op
    head = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
           "(assert (>= X_0 0.1))\n(assert (<= X_0 0.2))\n"
    for outputs in changed:
        with pytest.raises(PropertyError, match=f"ends in a {op}"):
            verify_property(net, parse_vnnlib(head + outputs, "p.vnnlib"), config=VerifyConfig(oracle=COMPLETE))
    result = verify_property(net, parse_vnnlib(head + kept, "p.vnnlib"), config=VerifyConfig(oracle=COMPLETE))
    assert result.answer is Answer.UNSAT
    sat = verify_property(net, parse_vnnlib(head + "(assert (>= Y_0 Y_1))", "p.vnnlib"),
                          config=VerifyConfig(oracle=COMPLETE))
    assert sat.answer is Answer.SAT and Verification.from_dict(sat.to_dict()).dropped_final == op
    written = [float(line.split()[-1].rstrip(")")) for line in sat.vnncomp_result().splitlines() if "(Y_" in line]
    expected = ort_forward(model, sat.counterexample.reshape(1, 1))[0]
    np.testing.assert_allclose(written, expected, rtol=1e-6, atol=1e-7)


def test_outputs_beyond_float64_are_stored_as_inf_and_rechecked():
    """``Y_0 = 1e200 * 1e200 * relu(X_0)`` is 1e400 exactly at ``X_0 = 1``: infinite in the
    float64 pass, which the JSON stores as "inf" (not a crash) and a recheck confirms."""
    from parallelepipedonn.verify_recheck import recheck_verification

    net = Network((1,), (Affine(np.array([[1e200]]), np.zeros(1)), ReLU(),
                         Affine(np.array([[1e200], [0.0]]), np.array([0.0, 1.0]))))
    result = verify_epsilon(net, [1.0], 0.5, label=1, config=VerifyConfig(oracle=COMPLETE))
    assert result.answer is Answer.SAT and np.isinf(result.outputs).any()
    stored = json.loads(result.to_json())
    assert "inf" in stored["outputs"]
    back = Verification.from_dict(stored)
    check = recheck_verification(back, net, None, config=VerifyConfig(oracle=COMPLETE))
    assert check.outcome == "confirmed", check.reason
    stored["outputs"] = ["-inf" if v == "inf" else v for v in stored["outputs"]]
    tampered = recheck_verification(Verification.from_dict(stored), net, None, config=VerifyConfig(oracle=COMPLETE))
    assert tampered.outcome == "refuted"


@pytest.mark.parametrize("text", ["time_limit=inf", "milp.time_limit=nan", "time_limit=-5", "time_limit=0",
                                  "steps=inf"])
def test_oracle_options_are_finite_and_time_limits_positive(text):
    from oracles.registry import parse_oracle_options
    from parallelepipedonn.errors import ConfigError

    with pytest.raises(ConfigError, match="finite number|positive number"):
        parse_oracle_options([text])
    assert parse_oracle_options(["bab.time_limit=2.5"]) == {"bab.time_limit": 2.5}


# -- inputs pinned to decimals that no float64 number is --------------------------------------------
def fraction_forward(graph, x: list[Fraction]) -> list[Fraction]:
    """A reference evaluation in Fraction arithmetic: every linear node as its dense matrix,
    read off in float64 from one-hot inputs (one product per entry: exact), plus its bias."""
    import torch

    from parallelepipedonn import graph_nodes as gn

    exact = np.vectorize(lambda t: Fraction(float(t)), otypes=[object])
    values: list[np.ndarray] = []
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if isinstance(node, gn.Input):
            v = np.array(x, dtype=object).reshape(node.shape)
        elif isinstance(node, gn.LinearNode):
            n = math.prod(node.in_shape)
            w = node.apply(torch.eye(n, dtype=torch.float64).reshape(n, *node.in_shape)).reshape(n, -1).numpy().T
            v = exact(w).dot(ins[0].reshape(-1)).reshape(node.shape)
            if node.bias_array() is not None:
                v = v + exact(np.broadcast_to(node.bias_array(), node.shape))
        elif isinstance(node, gn.ReLU):
            v = np.vectorize(lambda t: max(t, Fraction(0)), otypes=[object])(ins[0])
        elif isinstance(node, gn.Add):
            v = ins[0] + ins[1]
        elif isinstance(node, gn.Sub):
            v = ins[0] - ins[1]
        else:
            v = np.concatenate(ins, axis=node.axis)
        values.append(v)
    return list(values[-1].reshape(-1))


def test_the_exact_outputs_at_a_point_of_exact_rationals_are_those_of_rational_arithmetic():
    """Every node type (normalisation, convolutions, pooling, padding, concatenation,
    residual sums) at a point with decimal and other rational coordinates (0.3, 1/3, 2/7:
    no float64 number), and the float64 path unchanged at a float64 point."""
    from parallelepipedonn.graph import as_graph
    from tests.graph_nets import mixed

    g = mixed(seed=3)
    rng = np.random.default_rng(0)
    denominators = [10, 3, 7, 1000, 2**60 * 5, 1, 4]
    x = [Fraction(int(rng.integers(-50, 50)), denominators[i % len(denominators)]) for i in range(g.n_inputs)]
    assert exact_outputs(g, x) == fraction_forward(g, x)
    net = random_network(4, [6, 12, 12, 3])
    y = [Fraction(k, 30) for k in range(-3, 3)]
    assert exact_outputs(net, y) == fraction_forward(as_graph(net), y)
    floats = rng.uniform(-1, 1, 6)
    assert exact_outputs(net, [Fraction(v) for v in floats]) == exact_outputs(net, floats) == \
        fraction_forward(as_graph(net), [Fraction(v) for v in floats])


def sum_net() -> Network:
    """Y_0 = X_0 + X_1 exactly (as relu(s) - relu(-s)), Y_1 = 0."""
    return Network((2,), (Affine(np.array([[1.0, 1.0], [-1.0, -1.0]]), np.zeros(2)), ReLU(),
                          Affine(np.array([[1.0, -1.0], [0.0, 0.0]]), np.zeros(2))))


PINNED = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
          "(assert (>= X_0 0.3))\n(assert (<= X_0 0.3))\n(assert (>= X_1 0))\n(assert (<= X_1 0.5))\n")


@pytest.mark.parametrize("oracle", [None, "milp", "crown+attack"])
def test_an_input_pinned_to_a_decimal_that_no_float64_is_gets_an_exact_counterexample(oracle):
    """X_0 pinned to 0.3 (no float64 point lies in the box): the counterexample takes X_0 =
    3/10 exactly, confirmed in exact arithmetic, written as 0.3, and stored exactly."""
    config = None if oracle is None else VerifyConfig(oracle=oracle)
    result = verify_property(sum_net(), parse_vnnlib(PINNED + "(assert (>= Y_0 0.7))", "p"), config=config)
    assert result.answer is Answer.SAT, result.reason
    x = result.counterexample_exact
    assert x is not None and x[0] == Fraction(3, 10) and 0 <= x[1] <= Fraction(1, 2) and x[0] + x[1] >= Fraction(7, 10)
    assert result.counterexample.tolist() == [0.3, float(x[1])]  # the nearest float64 numbers (for display)
    assert result.outputs.tolist() == [float(x[0] + x[1]), 0.0]  # the exact outputs, rounded
    lines = result.vnncomp_result().splitlines()
    assert lines[:2] == ["sat", "((X_0 0.3)"]  # the decimal 3/10; X_1 a float64 number, its shortest repr
    assert Fraction(float(lines[2].strip(" ()").split()[1])) == x[1]
    back = Verification.from_dict(json.loads(result.to_json()))
    assert back.counterexample_exact == x and back.vnncomp_result() == result.vnncomp_result()


def test_a_pinned_input_is_confirmed_at_its_exact_value_only():
    """Y_0 = X_0 with X_0 pinned to 0.3: Y_0 >= 0.3 and Y_0 <= 0.3 hold there (ties count),
    Y_0 > 0.3 does not, although it does at the float64 number just above 0.3 — never sat.
    An output-free property is violated at the pinned point."""
    head = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
           "(assert (>= X_0 0.3))\n(assert (<= X_0 0.3))\n"
    for outputs in ("(assert (>= Y_0 0.3))", "(assert (<= Y_0 0.3))", "(assert (<= 0 1))"):
        for oracle in ("milp", COMPLETE):
            result = verify_property(identity_net(), parse_vnnlib(head + outputs, "p"),
                                     config=VerifyConfig(oracle=oracle))
            assert result.answer is Answer.SAT and result.counterexample_exact == (Fraction(3, 10),), (outputs, oracle)
            assert result.vnncomp_result().splitlines()[1] == "((X_0 0.3)"
    for oracle in ("milp", COMPLETE, "attack+crown"):
        result = verify_property(identity_net(), parse_vnnlib(head + "(assert (> Y_0 0.3))", "p"),
                                 config=VerifyConfig(oracle=oracle))
        assert result.answer is not Answer.SAT, oracle


def test_a_counterexample_of_exact_decimals_is_written_by_the_command_line_and_rechecked(tmp_path, capsys):
    """The result file writes X_0 0.3; the JSON keeps the exact point (and conforms to the
    schema); recheck confirms it, and refutes it edited."""
    from tests.crafted_nets import save_float64_onnx
    from tests.test_certificate_schema import conforms

    model, prop = tmp_path / "sum.onnx", tmp_path / "pinned.vnnlib"
    save_float64_onnx(sum_net(), model)
    prop.write_text(PINNED + "(assert (>= Y_0 0.7))\n")
    j, r = tmp_path / "r.json", tmp_path / "r.txt"
    code, out, err = run(capsys, "verify", "--model", str(model), "--vnnlib", str(prop), "--json", str(j),
                         "--result-file", str(r), "--oracle", "milp")
    assert code == 0 and out.splitlines()[0] == "sat", out + err
    assert r.read_text().splitlines()[:2] == ["sat", "((X_0 0.3)"]
    stored = json.loads(j.read_text())
    conforms(stored, "verification")
    assert stored["counterexample_exact"][0] == "0.3" and stored["counterexample"][0] == 0.3
    code, out, err = run(capsys, "recheck", str(j))
    assert code == 0 and out.startswith("CONFIRMED"), out + err
    for edit in ("outside", "safe", "floats", "outputs"):
        d = json.loads(j.read_text())
        if edit == "outside":  # consistent, but not the pinned value
            d["counterexample_exact"][0], d["counterexample"][0] = "0.31", 0.31
        elif edit == "safe":  # in the box, but Y_0 = 0.3 < 0.7
            d["counterexample"][1], d["counterexample_exact"][1] = 0.0, None
        elif edit == "floats":
            d["counterexample"][0] = 0.25
        else:
            d["outputs"][0] = d["outputs"][0] + 1
        (tmp_path / "e.json").write_text(json.dumps(d))
        code, out, err = run(capsys, "recheck", str(tmp_path / "e.json"))
        assert code == 5 and out.startswith("REFUTED"), (edit, out + err)
    d = json.loads(j.read_text())
    d["counterexample_exact"][0] = "3/10"
    (tmp_path / "e.json").write_text(json.dumps(d))
    code, out, err = run(capsys, "recheck", str(tmp_path / "e.json"))
    assert code == 2 and "counterexample_exact" in err, out + err
    for edit in ("length", "infinite", "huge"):  # malformed, not internal errors
        d = json.loads(j.read_text())
        if edit == "length":
            d["counterexample"].append(0.0)
            d["counterexample_exact"].append(None)
        elif edit == "infinite":
            d["counterexample"][1], d["counterexample_exact"][1] = math.inf, None
        else:
            d["counterexample_exact"][0] = "0." + "0" * 5000 + "3"
        (tmp_path / "e.json").write_text(json.dumps(d))
        code, out, err = run(capsys, "recheck", str(tmp_path / "e.json"))
        assert code == 2 and "internal" not in err, (edit, out + err)


@pytest.mark.parametrize("pinned", ["(/ 1 " + str(2**6200) + ")", "1e-5000", "1e-60000"])
def test_an_input_pinned_to_a_decimal_of_too_many_places_is_unknown_quickly_not_an_error(pinned, tmp_path, capsys):
    """X_0 pinned to 2^-6200 (6,200 decimal places): writing the counterexample raised (Python's
    4,300-digit limit), 1e-60000 took two minutes; past MAX_DECIMAL_PLACES it gets none."""
    import time

    prop = parse_vnnlib(PINNED.replace("0.3", pinned) + "(assert (>= Y_0 0.2))", "p")
    start = time.perf_counter()
    result = verify_property(sum_net(), prop, config=VerifyConfig(oracle="milp"), timeout=30)
    assert result.answer is Answer.UNKNOWN and time.perf_counter() - start < 20


# -- the time-out counts from the command's start; --check checks what verify refuses -------------------
def test_the_time_out_counts_from_the_start_so_time_spent_loading_leaves_less_or_none():
    prop = parse_vnnlib(PINNED + "(assert (>= Y_0 0.7))", "p")
    import time

    late = verify_property(sum_net(), prop, config=VerifyConfig(oracle="milp"), timeout=5,
                           started=time.perf_counter() - 6)
    assert late.answer is Answer.TIMEOUT and late.regions[0]["verdict"] == "not asked" and late.timeout == 5
    x = np.array([0.5, 0.5])
    late = verify_epsilon(sum_net(), x, 0.1, label=0, config=VerifyConfig(oracle="milp"), timeout=5,
                          started=time.perf_counter() - 6)
    assert late.answer is Answer.TIMEOUT
    on_time = verify_property(sum_net(), prop, config=VerifyConfig(oracle="milp"), timeout=5,
                              started=time.perf_counter() - 1)
    assert on_time.answer is Answer.SAT


def test_a_region_is_not_asked_when_building_its_oracle_would_pass_the_deadline(monkeypatch):
    """Each region builds its reduction and oracle before it is asked: where the time left is
    less than the last region's build took, or the build itself took the rest, the region
    is not asked (time out), not asked with nothing left and answered late. (nn4sys's 50
    regions on a 60,000-neuron model: a build took 1.3 s, and the answer came 1.2 s after
    the time-out.) The clock here advances 4 s per build and not otherwise."""
    import parallelepipedonn.verify as verify_module

    regions = "".join(f"(and (>= X_0 {a}) (<= X_0 {a + 0.1}) (>= X_1 0) (<= X_1 0.1) (>= Y_0 5))" for a in (0, 0.2, 0.4))
    text = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            f"(assert (or {regions}))\n")
    prop = parse_vnnlib(text, "p")
    assert len(prop.regions) == 3
    now = [0.0]
    monkeypatch.setattr(verify_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    build = VerifyConfig.build

    def slow(self, network):
        now[0] += 4.0
        return build(self, network)

    monkeypatch.setattr(VerifyConfig, "build", slow)
    for timeout, asked in ((20, 3), (10, 2), (3, 0)):  # (10: 2 s left after two builds; 3: the first build passes it)
        now[0] = 0.0
        r = verify_property(sum_net(), prop, config=VerifyConfig(oracle="crown"), timeout=timeout, started=0.0)
        verdicts = [reg["verdict"] for reg in r.regions]
        assert verdicts.count("verified") == asked and verdicts.count("not asked") == 3 - asked, (timeout, verdicts)
        assert r.answer is (Answer.UNSAT if asked == 3 else Answer.TIMEOUT)
    now[0] = 0.0
    r = verify_epsilon(sum_net(), np.array([0.5, 0.5]), 0.1, label=0, config=VerifyConfig(oracle="crown"), timeout=3,
                       started=0.0)
    assert r.answer is Answer.TIMEOUT and r.regions[0]["verdict"] == "not asked"


def test_verify_counts_reading_the_model_and_the_property_in_its_timeout(small, tmp_path, capsys, monkeypatch):
    import time

    from parallelepipedonn import vnnlib

    read = vnnlib.read_vnnlib

    def slow(path):  # a property that takes longer to read than the whole time-out
        time.sleep(1.5)
        return read(path)

    monkeypatch.setattr(vnnlib, "read_vnnlib", slow)
    r = tmp_path / "r.txt"
    code, out, err = run(capsys, "verify", "--model", str(small.path), "--vnnlib", str(small.dir / "far.vnnlib"),
                         "--timeout", "1", "--result-file", str(r))
    assert code == 0 and out.splitlines()[0] == "timeout" and r.read_text() == "timeout\n", out + err


def test_check_refuses_what_verify_refuses(tmp_path, capsys):
    """--check (prepare_instance.sh) runs verify's own checks: a threshold on one output of
    a model whose final Softmax the IR drops is refused there, as verify refuses it."""
    import onnx

    model = tmp_path / "softmax.onnx"
    onnx.save(_final_op_model("Softmax"), model)
    head = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
           "(assert (>= X_0 0.1))\n(assert (<= X_0 0.2))\n"
    prop, ok = tmp_path / "threshold.vnnlib", tmp_path / "order.vnnlib"
    prop.write_text(head + "(assert (>= Y_0 0.5))\n")
    ok.write_text(head + "(assert (<= Y_0 Y_1))\n")
    for check in (["--check"], []):
        code, out, err = run(capsys, "verify", "--model", str(model), "--vnnlib", str(prop), *check)
        assert code == 2 and "ends in a Softmax" in err and "threshold.vnnlib:6" in err, (check, out + err)
    code, out, err = run(capsys, "verify", "--model", str(model), "--vnnlib", str(ok), "--check")
    assert code == 0 and out.startswith("ok:"), out + err
    csv = tmp_path / "instances.csv"
    csv.write_text("softmax.onnx,threshold.vnnlib,10\n")
    code, out, err = run(capsys, "verify", "--instances", str(csv), "--check")
    assert code == 2 and "ends in a Softmax" in err, out + err


# -- single-output (regression) networks: VNN-LIB properties of their output -----------------------------
def _regression_mlp(seed: int, hidden: int = 6) -> tuple:
    """``y = relu(x A + a) B + c`` on one input (float32 weights), as ONNX, and the weights as exact rationals."""
    rng = np.random.default_rng(seed)
    a_w, a_b = rng.normal(0, 1, (1, hidden)).astype(np.float32), rng.normal(0, 0.5, hidden).astype(np.float32)
    b_w, b_b = rng.normal(0, 1, (hidden, 1)).astype(np.float32), rng.normal(0, 0.5, 1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["h0"]), helper.make_node("Add", ["h0", "a"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "B"], ["y0"]),
             helper.make_node("Add", ["y0", "c"], ["y"])]
    model = make_model(nodes, ["N", 1], initializers=[tensor("A", a_w), tensor("a", a_b), tensor("B", b_w),
                                                      tensor("c", b_b)])
    exact = [[Fraction(float(v)) for v in t.ravel()] for t in (a_w, a_b, b_w, b_b)]
    return model, exact


def _exact_regression(exact, x: Fraction) -> Fraction:
    a_w, a_b, b_w, b_b = exact
    return sum((w2 * max(Fraction(0), w1 * x + b1) for w1, b1, w2 in zip(a_w, a_b, b_w)), b_b[0])


def _exact_extremes(exact, lo: Fraction, hi: Fraction) -> tuple[Fraction, Fraction]:
    """The exact minimum and maximum over ``[lo, hi]``: at the ends or where a ReLU bends."""
    a_w, a_b = exact[0], exact[1]
    points = [lo, hi] + [-b / w for w, b in zip(a_w, a_b) if w != 0 and lo < -b / w < hi]
    values = [_exact_regression(exact, p) for p in points]
    return min(values), max(values)


def _regression_property(lo: float, hi: float, output: str) -> str:
    return (f"(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 {lo!r}))\n(assert (<= X_0 {hi!r}))\n"
            f"{output}\n")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_single_output_network_answers_thresholds_of_its_output_as_exact_arithmetic_does(seed, tmp_path, capsys):
    """A one-input regression MLP's exact extremes over the box (at its ends and the ReLUs'
    bends, in rational arithmetic): a threshold just beyond the maximum (minimum) is unsat,
    one just inside sat, with a counterexample whose exact output crosses it; the result
    file and the JSON list the model's one output, and recheck confirms both answers."""
    import onnx

    model, exact = _regression_mlp(seed)
    path = tmp_path / "reg.onnx"
    onnx.save(model, path)
    lo, hi = -2.0, 1.5
    low, high = _exact_extremes(exact, Fraction(lo), Fraction(hi))
    delta = 1e-3 * (1 + float(high - low))
    cases = {"above": (f"(assert (>= Y_0 {float(high) + delta!r}))", "unsat"),
             "below_max": (f"(assert (>= Y_0 {float(high) - delta!r}))", "sat"),
             "under": (f"(assert (<= Y_0 {float(low) - delta!r}))", "unsat"),
             "over_min": (f"(assert (<= Y_0 {float(low) + delta!r}))", "sat")}
    for name, (output, answer) in cases.items():
        prop = tmp_path / f"{name}.vnnlib"
        prop.write_text(_regression_property(lo, hi, output))
        j, r = tmp_path / f"{name}.json", tmp_path / f"{name}.txt"
        code, out, err = run(capsys, "verify", "--model", str(path), "--vnnlib", str(prop), "--timeout", "60",
                             "--json", str(j), "--result-file", str(r))
        assert code == 0 and out.splitlines()[0] == answer, (name, out + err)
        d = json.loads(j.read_text())
        if answer == "sat":
            x = Fraction(d["counterexample"][0])
            y = _exact_regression(exact, x)
            threshold = Fraction(float(output.split()[-1].rstrip(")")))
            assert Fraction(lo) <= x <= Fraction(hi) and (y >= threshold if ">=" in output else y <= threshold)
            assert len(d["outputs"]) == 1 and "Y_0" in r.read_text() and "Y_1" not in r.read_text()
        code, out, err = run(capsys, "recheck", str(j))
        assert code == 0 and "CONFIRMED" in out.upper(), (name, out + err)


def test_a_single_output_network_is_read_with_a_zero_score_and_refused_as_a_classifier(tmp_path, capsys):
    """Read for VNN-LIB (`load_model_file`), a single-output model gets a constant 0 score
    after its output (onnxruntime's output at random points, the 0 exactly); as a classifier
    (certify, dual boxes, robustness at epsilon) it is refused with a pointer to `verify --vnnlib`."""
    import onnx

    from parallelepipedonn.dual import dual_box
    from parallelepipedonn.errors import ModelError
    from parallelepipedonn.onnx_import import load_onnx
    from parallelepipedonn.verify import load_model_file

    model, _ = _regression_mlp(3)
    conv = make_model([helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1]),
                       helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
                       helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)], ["N", 1, 4, 4],
                      initializers=[tensor("K", np.random.default_rng(0).normal(0, 1, (2, 1, 3, 3)).astype(np.float32)),
                                    tensor("W", np.random.default_rng(1).normal(0, 1, (1, 32)).astype(np.float32))])
    rng = np.random.default_rng(5)
    for name, m, shape in (("mlp", model, (1,)), ("conv", conv, (1, 4, 4))):
        path = tmp_path / f"{name}.onnx"
        onnx.save(m, path)
        with pytest.raises(ModelError, match="verify --vnnlib"):
            load_onnx(path)
        ir = load_model_file(path)
        assert (ir.n_classes, ir.n_outputs, ir.zero_outputs) == (2, 1, 1), name
        x = rng.uniform(-1, 1, (20, *shape))
        scores = ir.forward(x.reshape(20, -1))
        assert (scores[:, 1] == 0).all()
        np.testing.assert_allclose(scores[:, 0], ort_forward(m, x).ravel(), rtol=1e-5, atol=1e-5)
        assert [float(v) for v in exact_outputs(ir, x[0].ravel())] == pytest.approx([scores[0, 0]], rel=1e-12)
        with pytest.raises(ModelError, match="verify --vnnlib"):
            certify(ir, np.clip(x[0].ravel(), 0, 1))
        with pytest.raises(ModelError, match="verify --vnnlib"):
            dual_box(ir, 0, method="relaxed")
        with pytest.raises(ModelError, match="verify --vnnlib"):
            verify_epsilon(ir, np.clip(x[0].ravel(), 0, 1), 0.1)
        code, out, err = run(capsys, "info", "--model", str(path))
        assert code == 0 and "no classifier" in out, out + err
        if name == "mlp":  # neither written back as a two-class file nor certified in a batch
            from parallelepipedonn.batch import BatchInput, certify_batch
            from parallelepipedonn.onnx_export import network_to_onnx

            with pytest.raises(ModelError, match="constant 0 score"):
                network_to_onnx(ir)
            with pytest.raises(ModelError, match="verify --vnnlib"):
                certify_batch(ir, [BatchInput("a", values=np.full(1, 0.5))], tmp_path / "s.db")
            assert not (tmp_path / "s.db").exists()
        np.save(tmp_path / f"{name}.npy", np.full(shape, 0.5))
        for command in (["certify"], ["verify", "--epsilon", "0.1"]):
            code, out, err = run(capsys, *command, "--model", str(path), "--input", str(tmp_path / f"{name}.npy"))
            assert code == 2 and "verify --vnnlib" in err, (command, out + err)


def test_zero_outputs_must_be_constant_zero_scores():
    with pytest.raises(Exception, match="zero_outputs"):
        Network((1,), (Affine(np.array([[1.0], [1.0]]), np.zeros(2)),), zero_outputs=1)
    net = Network((1,), (Affine(np.array([[1.0], [0.0]]), np.zeros(2)),), zero_outputs=1)
    from parallelepipedonn.graph import Graph

    g = Graph.from_network(net)
    assert g.zero_outputs == 1 and g.as_network().zero_outputs == 1 and net.n_outputs == 1


def test_instances_are_read_from_their_gzip_copies_where_the_csv_names_the_plain_files(small, tmp_path):
    """VNN-COMP's repositories since 2022 ship ``.onnx.gz`` and ``.vnnlib.gz`` and list the plain names."""
    from parallelepipedonn.instances import read_instances

    (tmp_path / "m.onnx.gz").write_bytes(gzip.compress(small.path.read_bytes()))
    (tmp_path / "p.vnnlib.gz").write_bytes(gzip.compress((small.dir / "near.vnnlib").read_bytes()))
    (tmp_path / "instances.csv").write_text("m.onnx,p.vnnlib,10\n")
    [inst] = read_instances(tmp_path / "instances.csv")
    assert inst.onnx.name == "m.onnx.gz" and inst.vnnlib.name == "p.vnnlib.gz"
