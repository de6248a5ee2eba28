"""`recheck`: a stored certificate is re-verified against its model file, independently of
how it was computed — confirmed (0), refuted (5), undecided (6), another model (3)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import parallelepipedonn as ppn
from oracles import MilpOracle, min_adversarial_distance
from parallelepipedonn.recheck import Outcome, recheck
from tests.crafted_nets import save_float64_onnx
from tests.nets import saved_classifier
from tests.test_cli import run

ALGORITHMS = ("apothem-kary", "apothem-max-box", "box-topdown", "volume-greedy", "volume-gradient")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SimpleNamespace:
    return saved_classifier(tmp_path_factory.mktemp("recheck"))


def certificate(small, out: Path, algorithm: str = "apothem-kary", **changes) -> ppn.Certificate:
    """Certify the small input with ``algorithm``, apply ``changes``, and save it to ``out``."""
    cert = ppn.certify(small.net, small.x, config=ppn.CertifyConfig(algorithm=algorithm, precision=1e-3),
                       model_path=str(small.path))
    assert cert.status is ppn.Status.CERTIFIED
    cert = cert.with_updates(**changes)
    cert.save(out)
    return cert


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_certificates_of_every_kind_of_search_are_confirmed_by_milp(small, tmp_path, algorithm):
    certificate(small, tmp_path / "c.json", algorithm)
    result = recheck(tmp_path / "c.json")
    assert result.outcome is Outcome.CONFIRMED, result.reason
    assert result.oracle == "milp" and "box verified by milp" in result.checks


def test_an_exact_certificate_is_confirmed_by_branch_and_bound_and_never_refuted_by_milp(small, tmp_path):
    # the exact box is within the precision of the decision boundary: its margin can be
    # below milp's proof margin (1e-4), so milp may leave it undecided, but never refutes it
    certificate(small, tmp_path / "c.json", "exact")
    assert recheck(tmp_path / "c.json", oracle="crown+alpha-crown+bab").outcome is Outcome.CONFIRMED
    assert recheck(tmp_path / "c.json").outcome is not Outcome.REFUTED


def test_cli_confirms_a_default_mnist_certificate_with_milp_and_crown(tmp_path, capsys):
    j = tmp_path / "c.json"
    assert run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--json", str(j))[0] == 0
    code, out, err = run(capsys, "recheck", str(j))
    assert code == 0, err
    assert out.startswith("CONFIRMED: milp verified the box") and "box verified by milp" in out
    code, out, _ = run(capsys, "recheck", str(j), "--oracle", "crown", "--time-limit", "30")
    assert code == 0 and out.startswith("CONFIRMED: crown verified the box")


def test_a_box_widened_to_its_own_counterexample_is_refuted_by_a_forward_pass(small, tmp_path, capsys):
    cert = certificate(small, tmp_path / "c.json")
    cex = cert.counterexample
    wide = ppn.Box(np.minimum(cert.box.lower, cex), np.maximum(cert.box.upper, cex))
    cert.with_updates(box=wide).save(tmp_path / "wide.json")
    code, out, _ = run(capsys, "recheck", str(tmp_path / "wide.json"))
    assert code == 5
    assert out.startswith("REFUTED: the certificate's own counterexample lies inside its box")
    assert f"at distance {cert.apothem_upper_bound:.6g} from the input" in out


def test_a_box_widened_just_enough_to_contain_a_counterexample_is_refuted_by_milp(small, tmp_path, capsys):
    cert = certificate(small, tmp_path / "c.json")
    # the closest counterexample, by the exact minimum adversarial distance (milp)
    d = min_adversarial_distance(MilpOracle(small.net), small.x, small.label, cert.domain, lower=cert.apothem,
                                 counterexample=cert.counterexample, rel_precision=1e-6)
    cex = d.counterexample
    assert small.net.margins(cex, small.label)[0] <= 0 and not cert.box.contains(cex)
    wide = ppn.Box(np.minimum(cert.box.lower, cex), np.maximum(cert.box.upper, cex))
    # the certificate no longer carries the counterexample: only the oracle can refute it
    cert.with_updates(box=wide, counterexample=None, apothem_upper_bound=None).save(tmp_path / "wide.json")
    result = recheck(tmp_path / "wide.json")
    assert result.outcome is Outcome.REFUTED and result.reason == "milp found a counterexample inside the box"
    assert wide.contains(result.counterexample) and small.net.margins(result.counterexample, small.label)[0] <= 0
    assert result.distance <= d.upper + 1e-12
    code, out, _ = run(capsys, "recheck", str(tmp_path / "wide.json"))
    assert code == 5 and out.startswith("REFUTED") and f"logit {small.label} = " in out


def test_a_certificate_whose_metrics_were_edited_is_refuted(small, tmp_path, capsys):
    certificate(small, tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    d["apothem"] *= 2
    (tmp_path / "c.json").write_text(json.dumps(d))
    code, out, _ = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 5 and "the stored apothem" in out
    for key in ("apothem", "min_edge"):  # one ulp above the box's: recomputed bit for bit, no tolerance
        edited = json.loads(json.dumps(d))
        edited["apothem"] /= 2
        edited[key] = float(np.nextafter(edited[key], np.inf))
        (tmp_path / "c.json").write_text(json.dumps(edited))
        assert recheck(tmp_path / "c.json").outcome is Outcome.REFUTED, key


def test_a_box_that_misses_the_input_or_leaves_the_domain_is_refuted(small, tmp_path):
    certificate(small, tmp_path / "c.json")
    for key, value, reason in (("lower", small.x[0] + 1e-9, "the box does not contain the input"),
                               ("upper", 1.5, "the box is not inside the domain")):
        d = json.loads((tmp_path / "c.json").read_text())
        d[key][0] = value
        (tmp_path / "edited.json").write_text(json.dumps(d))
        assert recheck(tmp_path / "edited.json").reason == reason


def test_another_model_file_is_refused_with_exit_code_3(small, tmp_path, capsys):
    certificate(small, tmp_path / "c.json")
    model = onnx.load(str(small.path))
    init = model.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.01  # one weight changed
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(tmp_path / "changed.onnx"))
    code, _, err = run(capsys, "recheck", str(tmp_path / "c.json"), "--model", str(tmp_path / "changed.onnx"))
    assert code == 3 and "sha256" in err and "refusing to recheck against another model" in err
    d = json.loads((tmp_path / "c.json").read_text())
    d["model_path"] = str(tmp_path / "changed.onnx")
    (tmp_path / "moved.json").write_text(json.dumps(d))
    assert run(capsys, "recheck", str(tmp_path / "moved.json"))[0] == 3
    # the same bytes under another name are the same model
    shutil.copy(small.path, tmp_path / "copy.onnx")
    assert run(capsys, "recheck", str(tmp_path / "c.json"), "--model", str(tmp_path / "copy.onnx"))[0] == 0


def test_a_relative_model_path_is_found_next_to_the_certificate(small, tmp_path, monkeypatch):
    shutil.copy(small.path, tmp_path / "m.onnx")
    certificate(small, tmp_path / "c.json", model_path="m.onnx")
    monkeypatch.chdir(small.dir.parent)
    assert recheck(tmp_path / "c.json").outcome is Outcome.CONFIRMED


def test_an_undecided_oracle_is_never_a_confirmation(small, tmp_path, capsys):
    certificate(small, tmp_path / "c.json")
    code, out, _ = run(capsys, "recheck", str(tmp_path / "c.json"), "--oracle", "attack")
    assert code == 6 and out.startswith("UNDECIDED: attack could not decide")


def test_a_not_robust_certificate_is_rechecked_by_a_forward_pass(small, tmp_path, capsys):
    other = (small.label + 1) % 3
    cert = ppn.certify(small.net, small.x, other, model_path=str(small.path))
    assert cert.status is ppn.Status.NOT_ROBUST
    cert.save(tmp_path / "n.json")
    code, out, _ = run(capsys, "recheck", str(tmp_path / "n.json"))
    assert code == 0 and "counterexample confirmed" in out
    # a "counterexample" that the network does classify as the label is refuted
    pts = np.random.default_rng(0).random((2000, 6))
    point = pts[small.net.predict(pts) == other][0]
    cert.with_updates(counterexample=point).save(tmp_path / "bad.json")
    code, out, _ = run(capsys, "recheck", str(tmp_path / "bad.json"))
    assert code == 5 and f"the counterexample is classified {other}" in out


def test_a_not_robust_claim_about_a_correctly_classified_input_is_refuted(small, tmp_path, capsys):
    """not-robust says the input itself is not classified its label strictly: a certified
    input's certificate edited to not-robust, keeping its (far) counterexample, was confirmed."""
    cert = certificate(small, tmp_path / "c.json")
    assert cert.status is ppn.Status.CERTIFIED and cert.counterexample is not None
    d = json.loads((tmp_path / "c.json").read_text())
    d.update(status="not-robust", reason="forged", lower=None, upper=None, apothem=None, min_edge=None,
             log_volume=None, gap=None)
    (tmp_path / "forged.json").write_text(json.dumps(d))
    code, out, err = run(capsys, "recheck", str(tmp_path / "forged.json"))
    assert code == 5 and "the input itself is classified" in out, out + err


def test_the_stored_counterexample_class_is_rechecked_and_may_be_absent(small, tmp_path, capsys):
    cert = certificate(small, tmp_path / "c.json")
    assert cert.counterexample is not None and cert.counterexample_class is not None
    code, out, _ = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 0 and f"counterexample confirmed (class {cert.counterexample_class}," in out
    d = json.loads((tmp_path / "c.json").read_text())
    del d["counterexample_class"]  # a certificate written before the class was recorded
    (tmp_path / "old.json").write_text(json.dumps(d))
    assert recheck(tmp_path / "old.json").outcome is Outcome.CONFIRMED
    wrong = next(c for c in range(3) if c not in (cert.label, cert.counterexample_class))
    cert.with_updates(counterexample_class=wrong).save(tmp_path / "bad.json")
    code, out, _ = run(capsys, "recheck", str(tmp_path / "bad.json"))
    assert code == 5 and f"classified {cert.counterexample_class}, not {wrong} as stored" in out


def test_dual_boxes_are_confirmed_by_the_class_region_query(small, tmp_path, capsys):
    for extra in ([], ["--input", str(small.dir / "x.npy"), "--radius", "0.2"]):
        j = tmp_path / "d.json"
        assert run(capsys, "dual", "--model", str(small.path), "--label", str(small.label), "--workers", "1",
                   "--json", str(j), *extra)[0] == 0
        code, out, err = run(capsys, "recheck", str(j))
        assert code == 0, err
        assert out.startswith("CONFIRMED: milp proved it") and "dual box" in out


def test_dual_boxes_need_an_oracle_that_answers_class_region_queries(small, tmp_path, capsys):
    j = tmp_path / "d.json"
    assert run(capsys, "dual", "--model", str(small.path), "--label", str(small.label), "--workers", "1",
               "--json", str(j))[0] == 0
    code, _, err = run(capsys, "recheck", str(j), "--oracle", "crown+bab")
    assert code == 2 and "needs an oracle that answers class_region" in err and "milp" in err
    assert recheck(j, oracle="attack+milp").outcome is Outcome.CONFIRMED  # a cascade routes it to milp


def test_a_dual_box_with_a_face_moved_inwards_is_refuted_by_a_witness(small, tmp_path, capsys):
    j = tmp_path / "d.json"
    assert run(capsys, "dual", "--model", str(small.path), "--label", str(small.label), "--workers", "1",
               "--json", str(j))[0] == 0
    d = json.loads(j.read_text())
    i = int(np.argmax(np.array(d["upper"]) - np.array(d["lower"])))
    assert d["exact_upper"][i]  # the bound is attained by a point of the class
    d["upper"][i] -= 0.05
    j.write_text(json.dumps(d))
    result = recheck(j)
    assert result.outcome is Outcome.REFUTED
    assert result.counterexample[i] > d["upper"][i] and small.net.margins(result.counterexample, small.label)[0] >= 0
    assert run(capsys, "recheck", str(j))[0] == 5


def tie_line(tmp_path):
    """Class 1 is exactly the line x0 = 0.3 (ties count as the class): a net, its file,
    and its milp dual box."""
    net = ppn.Network.from_layers((2,), [ppn.Affine(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([-0.3, 0.3])),
                                         ppn.ReLU(), ppn.Affine(np.array([[0.0, 0.0], [-1e3, -1e3]]), np.zeros(2))],
                                  "tie-line")
    path = tmp_path / "tie.onnx"
    save_float64_onnx(net, path)
    return net, ppn.dual_box(net, 1, method="milp", workers=1, model_path=str(path))


def test_a_face_moved_one_ulp_past_a_class_of_ties_is_never_confirmed(tmp_path):
    """The class region is a line of exact ties; a face moved one float past it cuts the
    line off, by less than HiGHS's error: a maximum excess of -0.0 from the solver is no
    proof (it must be below 0 by the solver error model's margin)."""
    net, d = tie_line(tmp_path)
    assert d.box.lower[0] <= 0.3 <= d.box.upper[0] and net.exact_margin(np.array([0.3, 0.5]), 1) == 0
    assert recheck(_saved(d, tmp_path / "d.json")).outcome is Outcome.CONFIRMED
    for face, value in ((0, np.nextafter(0.3, 1.0)), (1, np.nextafter(0.3, 0.0))):
        lower, upper = d.box.lower.copy(), d.box.upper.copy()
        (lower if face == 0 else upper)[0] = value
        moved = dataclasses.replace(d, box=ppn.Box(lower, upper))
        assert recheck(_saved(moved, tmp_path / f"m{face}.json")).outcome is not Outcome.CONFIRMED


def _saved(d, path):
    d.save(path)
    return path


def test_a_dual_box_without_its_domain_claims_only_its_stored_region(tmp_path, capsys):
    """Without a stored domain the region cannot be checked against the ball or the domain
    it names: what is confirmed is said to be the region as stored; a centre without a
    radius is a usage error (exit 2), not a crash."""
    net, d = tie_line(tmp_path)
    raw = d.to_dict()
    raw["domain"] = None
    j = tmp_path / "nodomain.json"
    j.write_text(json.dumps(raw))
    result = recheck(j)
    assert result.outcome is Outcome.CONFIRMED and "region as stored" in result.claim
    ball = ppn.dual_box(net, 1, x=np.array([0.3, 0.5]), radius=0.2, method="milp", workers=1,
                        model_path=str(tmp_path / "tie.onnx")).to_dict()
    ball["radius"] = None
    j.write_text(json.dumps(ball))
    code, out, err = run(capsys, "recheck", str(j))
    assert code == 2 and "no radius" in err


def test_an_apothem_upper_bound_below_its_counterexample_by_any_amount_is_refuted(tmp_path, capsys):
    """Logits ``[0, x - 0.5]`` at 0.25: the best apothem is exactly 1/4 (the tie at 0.5). A
    bound 9e-13 relative below the counterexample's distance is false; the distance is
    compared exactly, with no tolerance."""
    net = ppn.Network.from_layers((1,), [ppn.Affine(np.array([[0.0], [1.0]]), np.array([0.0, -0.5]))], "lin1")
    save_float64_onnx(net, tmp_path / "lin1.onnx")
    cert = ppn.certify(net, np.array([0.25]), config=ppn.CertifyConfig(oracle="milp"),
                       model_path=str(tmp_path / "lin1.onnx"))
    bound = 0.25 * (1 - 9e-13)
    d = cert.to_dict()
    d.update(counterexample=[0.5], counterexample_class=1, apothem_upper_bound=bound, gap=bound - d["apothem"])
    j = tmp_path / "c.json"
    j.write_text(json.dumps(d))
    assert recheck(j).outcome is Outcome.REFUTED
    d.update(apothem_upper_bound=0.25, gap=0.25 - d["apothem"])  # the exact distance: true
    j.write_text(json.dumps(d))
    assert recheck(j).outcome is Outcome.CONFIRMED


def test_a_dual_bound_below_the_verified_boxs_apothem_is_refuted(small, tmp_path):
    cert = certificate(small, tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    d["dual"] = {"method": "milp", "radius": 1.0, "apothem_bound": cert.apothem / 4, "covers_ball": True,
                 "exact_bounds": 0, "seconds": 0.0}
    (tmp_path / "c.json").write_text(json.dumps(d))
    result = recheck(tmp_path / "c.json")
    assert result.outcome is Outcome.REFUTED and "dual box's apothem bound" in result.reason


@pytest.mark.parametrize("where, value", [("epsilon", math.inf), ("epsilon", math.nan), ("rel_precision", "abc"),
                                          ("rel_precision", math.nan)])
def test_stored_numbers_that_are_not_numbers_are_usage_errors(small, tmp_path, capsys, where, value):
    """Values the schema lets through (NaN, inf, strings where a precision is read) are
    usage errors (exit 2), never a crash or a confirmation."""
    certificate(small, tmp_path / "c.json", algorithm="exact")
    d = json.loads((tmp_path / "c.json").read_text())
    if where == "epsilon":
        d["epsilon"] = {"epsilon": value, "status": "certified"}
    else:
        d["algorithm_settings"]["rel_precision"] = value
    (tmp_path / "c.json").write_text(json.dumps(d, allow_nan=True))
    code, _, err = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 2 and "not a" in err, err


def test_json_nested_beyond_pythons_stack_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    code, _, err = run(capsys, "recheck", str(tmp_path / "deep.json"))
    # (a usage error either way: "not valid JSON" where the nesting exceeds the recursion
    # limit, "neither a ... certificate" where a raised limit lets it parse)
    assert code == 2 and "internal error" not in err, err


def test_unreadable_or_foreign_files_are_usage_errors(tmp_path, capsys):
    code, _, err = run(capsys, "recheck", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read certificate" in err
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    code, _, err = run(capsys, "recheck", str(tmp_path / "other.json"))
    assert code == 2 and "neither a parallelepipedonn certificate, a dual box nor a verification result" in err


def test_unknown_oracles_are_usage_errors(small, tmp_path, capsys):
    certificate(small, tmp_path / "c.json")
    code, _, err = run(capsys, "recheck", str(tmp_path / "c.json"), "--oracle", "nope")
    assert code == 2 and "unknown oracle 'nope'" in err


# -- what the benchmarks write (../shared/reference) ----------------------------------------------
def test_certificates_and_dual_boxes_of_the_benchmarks_are_confirmed_by_milp(reference, tmp_path):
    from benchmarks.common import REFERENCE_NETS, reference_inputs
    from benchmarks.dual_boxes import certify_and_dual
    from benchmarks.search_algorithms import save_certificate

    path = reference / "nets" / REFERENCE_NETS["mnist"]
    net = ppn.load_onnx(path)
    inputs = reference_inputs(reference, "mnist", net)[::20][:2]
    for name, x, label in inputs:
        cert, dual = certify_and_dual(net, path, x, label, workers=1)  # as benchmarks.dual_boxes computes them
        cert.save(tmp_path / f"{name}.json")
        assert recheck(tmp_path / f"{name}.json").outcome is Outcome.CONFIRMED
        if dual is not None:
            dual.save(tmp_path / f"{name}-dual.json")
            assert recheck(tmp_path / f"{name}-dual.json").outcome is Outcome.CONFIRMED
    name, x, label = inputs[0]  # as benchmarks.search_algorithms writes them
    cert = ppn.certify(net, x, label, config=ppn.CertifyConfig(algorithm="apothem-bisection"), model_path=str(path))
    assert recheck(save_certificate(cert, tmp_path, "mnist", name)).outcome is Outcome.CONFIRMED


def test_an_empty_dual_box_is_confirmed_only_where_the_class_is_absent(small, tmp_path, capsys):
    other = (small.label + 1) % 3
    j = tmp_path / "d.json"
    assert run(capsys, "dual", "--model", str(small.path), "--input", str(small.dir / "x.npy"), "--radius", "0.01",
               "--label", str(other), "--json", str(j))[0] == 0
    d = json.loads(j.read_text())
    assert d["empty"] and d["lower"] is None
    code, out, _ = run(capsys, "recheck", str(j))
    assert code == 0 and f"no point of the ball of radius 0.01 around the input is classified {other}" in out
    # the same claim about the whole domain is false: the class has points there
    d.update(radius=1.0, region={"lower": [0.0] * 6, "upper": [1.0] * 6})
    j.write_text(json.dumps(d))
    result = recheck(j)
    assert result.outcome is Outcome.REFUTED and small.net.margins(result.counterexample, other)[0] >= 0


def test_a_compare_list_is_rechecked_item_by_item_and_one_false_claim_refutes_the_file(small, tmp_path, capsys):
    j = tmp_path / "list.json"
    code, _, err = run(capsys, "compare", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                       "--algorithms", "apothem-kary,box-topdown", "--json", str(j))
    assert code == 0, err
    code, out, err = run(capsys, "recheck", str(j))
    assert code == 0, err
    assert f"{j}[0]" in out and f"{j}[1]" in out and "2 results: 2 confirmed, 0 refuted, 0 undecided" in out
    items = json.loads(j.read_text())
    items[1]["upper"] = [1.5] * len(items[1]["upper"])  # a box that leaves the domain
    j.write_text(json.dumps(items))
    code, out, _ = run(capsys, "recheck", str(j))
    assert code == 5 and "REFUTED" in out and "1 confirmed, 1 refuted" in out
    j.write_text("[]")
    assert run(capsys, "recheck", str(j))[0] == 2
    j.write_text(json.dumps([items[0], {"format": "something else"}]))
    code, _, err = run(capsys, "recheck", str(j))
    assert code == 2 and "item 1" in err


# -- witnesses from inside the class (a solver optimum on the class superset's edge) --------------
def _diagonal_model(directory: Path) -> tuple[ppn.Network, Path]:
    """Class 0 where x0 >= x1, class 1 where x1 >= x0 (logits x0 and x1, exactly), saved."""
    from parallelepipedonn.network import Affine, Network, ReLU
    from parallelepipedonn.onnx_export import save_onnx

    net = Network.from_layers((2,), [Affine(np.eye(2), np.zeros(2)), ReLU(), Affine(np.eye(2), np.zeros(2))])
    save_onnx(net, directory / "diag.onnx")
    return ppn.load_onnx(directory / "diag.onnx"), directory / "diag.onnx"


def test_a_face_moved_inwards_is_refuted_even_when_every_solver_optimum_lies_outside_the_class(
        tmp_path, capsys, monkeypatch):
    # The class region {x0 >= x1} of the domain [0, 0.97] x [0, 1] reaches x1 = 0.97; its
    # superset x0 - x1 >= -0.05 (the class rows with the slack made large) reaches x1 = 1,
    # outside the class: the solver's optimum is never a witness, a point inside the class is
    import oracles.milp_regions as regions_module  # where the class-region encoding reads it

    net, path = _diagonal_model(tmp_path)
    domain = ppn.Box(np.zeros(2), np.array([0.97, 1.0]))
    dual = ppn.dual_box(net, 0, domain=domain, workers=1, model_path=str(path))
    assert dual.box.upper[1] == pytest.approx(0.97, abs=1e-3)
    d = dual.to_dict()
    d["upper"][1] = 0.5
    (tmp_path / "d.json").write_text(json.dumps(d))
    monkeypatch.setattr(regions_module, "CLASS_SLACK", 0.05)
    result = recheck(tmp_path / "d.json")
    assert result.outcome is Outcome.REFUTED, result.reason
    w = result.counterexample
    assert domain.contains(w) and w[1] > 0.5 and not net.misclassified(w, 0)[0]  # class 0, strictly
    code, out, _ = run(capsys, "recheck", str(tmp_path / "d.json"))
    assert code == 5 and out.startswith("REFUTED: milp found a point of class 0 outside the box")


def test_an_unconfirmed_witness_never_refutes_a_dual_box(small, tmp_path, monkeypatch):
    from oracles.base import RegionAnswer, RegionVerdict

    j = tmp_path / "d.json"
    ppn.dual_box(small.net, small.label, workers=1, model_path=str(small.path)).save(j)
    pts = np.random.default_rng(0).random((4000, 6))
    other = pts[small.net.margins(pts, small.label) < -0.1][0]  # a point of another class
    bogus = RegionAnswer(RegionVerdict.WITNESS, witness=other, reason="bogus")
    monkeypatch.setattr(MilpOracle, "class_region", lambda self, *a, **k: bogus)
    result = recheck(j)
    assert result.outcome is Outcome.UNDECIDED and "witness is not confirmed" in result.reason


def test_the_whole_domain_dual_box_of_mnist_class_7_with_a_face_moved_inwards_is_refuted(reference, tmp_path,
                                                                                          capsys):
    path = reference / "nets" / "mnist_nn-32.onnx"
    net = ppn.load_onnx(path)
    dual = ppn.dual_box(net, 7, workers=1, model_path=str(path))
    assert dual.covers_region  # the class reaches every face of [0, 1]^784
    d = dual.to_dict()
    d["upper"][300] = 0.5
    (tmp_path / "d.json").write_text(json.dumps(d))
    result = recheck(tmp_path / "d.json")
    assert result.outcome is Outcome.REFUTED, result.reason
    w = result.counterexample
    assert dual.region.contains(w) and w[300] > 0.5
    assert not net.misclassified(w, 7)[0]  # classified 7 (exact arithmetic near ties)
    assert run(capsys, "recheck", str(tmp_path / "d.json"))[0] == 5


# -- files are validated against their JSON Schema first -------------------------------------------
def test_a_certificate_with_a_fractional_label_is_a_usage_error_naming_the_field(small, tmp_path, capsys):
    certificate(small, tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    d["label"] = small.label + 0.5
    (tmp_path / "c.json").write_text(json.dumps(d))
    code, out, err = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 2 and not out
    assert err.count("\n") == 1 and "not a valid certificate" in err and "field 'label'" in err, err
    assert "is not of type 'integer'" in err


@pytest.mark.parametrize("field, value, named", [
    ("upper", "x", "field 'upper'"),
    ("lower", [0.0] * 5 + ["a"], "field 'lower/5'"),
    ("exact_lower", [True] * 5 + [2], "field 'exact_lower/5'"),
    ("method", "guesswork", "field 'method'"),
    ("region", {"lower": [0.0] * 6}, "field 'region'"),
])
def test_a_malformed_dual_box_is_a_usage_error_naming_the_field(small, tmp_path, capsys, field, value, named):
    j = tmp_path / "d.json"
    ppn.dual_box(small.net, small.label, workers=1, model_path=str(small.path)).save(j)
    d = json.loads(j.read_text())
    d[field] = value
    j.write_text(json.dumps(d))
    code, out, err = run(capsys, "recheck", str(j))
    assert code == 2 and not out
    assert err.count("\n") == 1 and "not a valid dual box" in err and named in err, err
    # the same item in a list is named by its position
    certificate(small, tmp_path / "c.json")
    j.write_text(json.dumps([json.loads((tmp_path / "c.json").read_text()), d]))
    code, _, err = run(capsys, "recheck", str(j))
    assert code == 2 and err.count("\n") == 1 and "item 1 of" in err and named in err, err


@pytest.mark.parametrize("field", ["lower", "input"])
def test_a_number_beyond_float64_in_a_certificate_is_a_usage_error(small, tmp_path, capsys, field):
    """JSON integers have no range: one beyond float64's (here 10^400) is a malformed file,
    exit 2 (it was an internal error, exit 1; found by an adversarial review)."""
    certificate(small, tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    d[field][0] = 10**400
    (tmp_path / "c.json").write_text(json.dumps(d))
    code, out, err = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 2 and not out and "internal" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("shape", [[7], [1, 3]])
def test_an_input_shape_that_does_not_hold_the_input_is_a_usage_error(small, tmp_path, capsys, shape):
    """The arrays are in the row-major order of ``input_shape``: one that does not hold the
    input's values is a malformed certificate, exit 2 (it was confirmed; found by an
    adversarial review)."""
    certificate(small, tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    d["input_shape"] = shape
    (tmp_path / "c.json").write_text(json.dumps(d))
    code, out, err = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 2 and not out and "input_shape" in err and err.count("\n") == 1, err


def test_a_newer_format_version_is_refused_as_such(small, tmp_path, capsys):
    certificate(small, tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    d["format_version"] = 2
    (tmp_path / "c.json").write_text(json.dumps(d))
    code, _, err = run(capsys, "recheck", str(tmp_path / "c.json"))
    assert code == 2 and "newer than this tool's" in err


@pytest.mark.parametrize("tamper, outcome, reason", [
    # the upper bound pulled down to the apothem, its counterexample removed, a dual bound
    # that nothing proves added: was confirmed (with a note)
    (lambda d: d.update(counterexample=None, counterexample_class=None, apothem_upper_bound=d["apothem"], gap=0.0,
                        dual={"method": "relaxed", "radius": 1.0, "apothem_bound": d["apothem"], "covers_ball": False,
                              "exact_bounds": 0, "seconds": 0.0}),
     Outcome.UNDECIDED, "rests on the stored dual box's bound"),
    # the counterexample kept, the bound below its distance, a dual section claiming it (and
    # exact claimed by a search that is not the exact one: refuted on that alone)
    (lambda d: d.update(apothem_upper_bound=d["apothem"], gap=0.0,
                        dual={"method": "relaxed", "radius": 1.0, "apothem_bound": d["apothem"], "covers_ball": False,
                              "exact_bounds": 0, "seconds": 0.0}),
     Outcome.UNDECIDED, "rests on the stored dual box's bound"),
    (lambda d: d.update(apothem_upper_bound=d["apothem"], gap=0.0, exact=True,
                        dual={"method": "relaxed", "radius": 1.0, "apothem_bound": d["apothem"], "covers_ball": False,
                              "exact_bounds": 0, "seconds": 0.0}),
     Outcome.REFUTED, "is not the exact search"),
    # exact claimed where the gap is far beyond the precision (was confirmed: exact was never read)
    (lambda d: d.update(exact=True), Outcome.REFUTED, "is the best one (exact)"),
], ids=["dual-only", "dual-below-counterexample", "exact-of-another-search", "exact"])
def test_claims_about_the_best_apothem_are_checked(small, tmp_path, tamper, outcome, reason):
    cert = certificate(small, tmp_path / "c.json", "apothem-kary")
    assert cert.counterexample is not None and cert.gap > 0.01
    d = json.loads((tmp_path / "c.json").read_text())
    d["algorithm_settings"]["rel_precision"] = 1e-3
    tamper(d)
    (tmp_path / "c.json").write_text(json.dumps(d))
    result = recheck(tmp_path / "c.json")
    assert result.outcome is outcome and reason in result.reason, result.reason


def _bounded_model(tmp_path: Path) -> Path:
    """``y = [x * 1e37 * 1e-37, 2 x]`` in float32: in range for inputs up to about 34; beyond,
    onnxruntime's ``y0`` is infinite (class 0) where the IR's is ``x`` (class 1)."""
    from onnx import helper

    from tests.nets import make_model, tensor

    nodes = [helper.make_node("Gemm", ["x", "W"], ["t0"]), helper.make_node("Mul", ["t0", "a"], ["t1"]),
             helper.make_node("Mul", ["t1", "b"], ["y"])]
    model = make_model(nodes, ["N", 1], initializers=[tensor("W", np.array([[1, 1]], np.float32)),
                                                      tensor("a", np.array([1e37, 1], np.float32)),
                                                      tensor("b", np.array([1e-37, 2], np.float32))])
    path = tmp_path / "bounded.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_claims_on_inputs_beyond_the_models_input_bound_are_not_rechecked_nor_made(tmp_path, capsys):
    from parallelepipedonn.errors import ValueRangeError

    path = _bounded_model(tmp_path)
    net = ppn.load_onnx(path)
    assert 30 < net.input_bound < 35
    wide = ppn.Box(np.array([1.0]), np.array([200.0]))
    with pytest.raises(ValueRangeError):
        ppn.dual_box(net, 0, domain=wide, workers=1)
    # as an older version, or the API on a model without the bound, would have stored them
    free = dataclasses.replace(net, input_bound=math.inf)
    cert = ppn.certify(free, np.array([150.0]), domain=wide, model_path=str(path))
    cert.save(tmp_path / "c.json")
    dual = ppn.dual_box(free, 1, domain=wide, workers=1, model_path=str(path))
    dual.save(tmp_path / "d.json")
    for stored in ("c.json", "d.json"):
        code, _, err = run(capsys, "recheck", str(tmp_path / stored))
        assert code == 2 and "proven in range only up to" in err, err


def test_a_stored_verification_of_what_a_dropped_logsoftmax_changes_is_not_rechecked(tmp_path):
    from onnx import helper

    from parallelepipedonn.errors import PropertyError
    from parallelepipedonn.verify import VerifyConfig, verify_property
    from parallelepipedonn.verify_recheck import recheck_verification
    from parallelepipedonn.vnnlib import parse_vnnlib
    from tests.nets import make_model, tensor

    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["z"]), helper.make_node("LogSoftmax", ["z"], ["y"])]
    model = make_model(nodes, ["N", 1], initializers=[tensor("W", np.array([[1, 0]], np.float32)),
                                                      tensor("B", np.array([0, 10], np.float32))])
    net = ppn.onnx_import.model_from_onnx(model)
    prop = parse_vnnlib("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                        "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= Y_0 0.5))\n", "p.vnnlib")
    stored = verify_property(dataclasses.replace(net, dropped_final=""), prop, config=VerifyConfig(oracle="milp"))
    assert stored.answer.value == "sat"  # about the scores: the file's log-probabilities are never >= 0.5
    with pytest.raises(PropertyError, match="ends in a LogSoftmax"):
        recheck_verification(stored, net, prop, config=VerifyConfig(oracle="milp"))


def test_verifications_at_an_input_pinned_to_a_decimal_are_rechecked_exactly():
    """X_0 pinned to 0.3 (no float64 number): a sat result's exact counterexample is
    confirmed, and refuted once moved; a false unsat claim is refuted by the oracle's
    counterexample, taken to X_0 = 3/10 exactly (no float64 point of the box exists)."""
    from fractions import Fraction

    from parallelepipedonn.verify import Answer, Verification, VerifyConfig, verify_property
    from parallelepipedonn.verify_recheck import recheck_verification
    from parallelepipedonn.vnnlib import parse_vnnlib
    from tests.test_verify import PINNED, sum_net

    net, prop = sum_net(), parse_vnnlib(PINNED + "(assert (>= Y_0 0.7))", "p.vnnlib")
    config = VerifyConfig(oracle="milp")
    sat = verify_property(net, prop, config=config)
    assert sat.answer is Answer.SAT and sat.counterexample_exact[0] == Fraction(3, 10)
    back = Verification.from_dict(json.loads(sat.to_json()))
    assert recheck_verification(back, net, prop, config=config).outcome == "confirmed"
    moved = dataclasses.replace(back, counterexample_exact=(Fraction(3, 10), Fraction(1, 10)),
                                counterexample=np.array([0.3, 0.1]), outputs=np.array([0.4, 0.0]))
    check = recheck_verification(moved, net, prop, config=config)
    assert check.outcome == "refuted" and "does not violate" in check.reason
    false_unsat = dataclasses.replace(back, answer=Answer.UNSAT, counterexample=None, counterexample_exact=None,
                                      outputs=None)
    check = recheck_verification(false_unsat, net, prop, config=config)
    assert check.outcome == "refuted" and "confirmed counterexample" in check.reason
