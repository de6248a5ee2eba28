"""The stored formats are specified by versioned JSON Schemas shipped with the package, and
everything the tool writes — certify, compare and dual with --json — conforms to them."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest

from parallelepipedonn.certificate import FORMAT_VERSION, SCHEMA_FILES, Certificate, json_schema
from tests.nets import saved_classifier
from tests.test_cli import run

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra) validates the formats")

#: Properties added to a format after its first files were written: optional in the schema
#: (older files lack them), always written by this version.
OPTIONAL = {"certificate": {"counterexample_class", "exact", "epsilon", "gmm"}, "dual": set(),
            "verification": {"load_seconds", "dropped_final", "counterexample_exact"}}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SimpleNamespace:
    return saved_classifier(tmp_path_factory.mktemp("schema"))


def conforms(instance: dict, kind: str) -> None:
    """``instance`` is valid, and every property it has is documented by the schema."""
    schema = json_schema(kind)
    jsonschema.Draft202012Validator(schema).validate(instance)
    undocumented = set(instance) - set(schema["properties"])
    assert not undocumented, f"properties missing from the {kind} schema: {sorted(undocumented)}"
    assert set(instance) == set(schema["properties"]), "the tool writes every property"


def certify_json(capsys, small, path, *options: str) -> dict:
    code, _, err = run(capsys, "certify", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                       "--precision", "1e-3", "--json", str(path), *options)
    assert code == 0, err
    return json.loads(path.read_text())


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_the_schemas_are_valid_versioned_and_installed(kind):
    schema = json_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f":v{FORMAT_VERSION}") and schema["properties"]["format_version"]["const"] == 1
    # every property is required, but those added later (older files lack them)
    assert set(schema["required"]) == set(schema["properties"]) - OPTIONAL[kind]
    assert OPTIONAL[kind] <= set(schema["properties"])


@pytest.mark.parametrize("options", [
    ["--algorithm", "apothem-kary"],
    ["--algorithm", "apothem-max-box", "--dual", "milp"],
    ["--algorithm", "box-topdown", "--dual", "relaxed"],
    ["--algorithm", "volume-gradient"],
    ["--algorithm", "exact"],
    ["--falsifier", "none"],
], ids=lambda o: "-".join(a.lstrip("-") for a in o))
def test_certificates_written_by_certify_conform(small, tmp_path, capsys, options):
    d = certify_json(capsys, small, tmp_path / "c.json", *options)
    conforms(d, "certificate")
    assert d["status"] == "certified" and len(d["model_sha256"]) == 64 and d["tool_version"]
    assert d["domain"] == {"lower": 0.0, "upper": 1.0}
    assert (d["dual"] is not None) == ("--dual" in options)


def test_a_not_robust_certificate_and_a_custom_domain_conform(small, tmp_path, capsys):
    d = certify_json(capsys, small, tmp_path / "c.json", "--label", str((small.label + 1) % 3))
    conforms(d, "certificate")
    assert d["status"] == "not-robust" and d["lower"] is None and d["counterexample"] == d["input"]
    d = certify_json(capsys, small, tmp_path / "c.json", "--domain", "-1", "2")
    conforms(d, "certificate")


def test_the_counterexample_class_is_the_networks_prediction_at_the_counterexample(small, tmp_path, capsys):
    d = certify_json(capsys, small, tmp_path / "c.json", "--algorithm", "apothem-kary")
    assert d["counterexample"] is not None
    cex = np.asarray(d["counterexample"])
    assert d["counterexample_class"] == int(small.net.predict(cex)[0]) != d["label"]
    code, out, _ = run(capsys, "certify", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                       "--precision", "1e-3")
    assert code == 0 and f"(counterexample: class {d['counterexample_class']})" in out
    # not robust at the input: the counterexample is the input, of the class the network predicts
    d = certify_json(capsys, small, tmp_path / "n.json", "--label", str((small.label + 1) % 3))
    assert d["counterexample_class"] == d["predicted_label"] == small.label


def test_certificates_written_before_the_counterexample_class_still_validate_and_load(small, tmp_path, capsys):
    d = certify_json(capsys, small, tmp_path / "c.json")
    del d["counterexample_class"]
    validator = jsonschema.Draft202012Validator(json_schema("certificate"))
    validator.validate(d)
    cert = Certificate.from_dict(d)
    assert cert.counterexample is not None and cert.counterexample_class is None
    assert cert.to_dict()["counterexample_class"] is None
    for bad in (-1, "9", 1.5):
        assert not validator.is_valid({**d, "counterexample_class": bad})


def test_the_default_mnist_certificate_with_a_dual_box_conforms(tmp_path, capsys):
    j = tmp_path / "c.json"
    code, _, err = run(capsys, "certify", "--dataset", "mnist", "--index", "0", "--dual", "milp", "--json", str(j))
    assert code == 0, err
    d = json.loads(j.read_text())
    conforms(d, "certificate")
    assert d["true_label"] == d["label"] and d["dual"]["method"] == "milp"


def test_every_entry_written_by_compare_conforms(small, tmp_path, capsys):
    j = tmp_path / "all.json"
    code, _, err = run(capsys, "compare", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                       "--precision", "1e-3", "--algorithms", "apothem-bisection,box-bisection,volume-greedy",
                       "--json", str(j))
    assert code == 0, err
    entries = json.loads(j.read_text())
    assert [e["algorithm"] for e in entries] == ["apothem-bisection", "box-bisection", "volume-greedy"]
    for entry in entries:
        conforms(entry, "certificate")


@pytest.mark.parametrize("options", [
    ["--method", "milp"],
    ["--method", "relaxed"],
    ["--method", "complete-bu", "--radius", "0.2", "--input", "x.npy"],
    ["--method", "milp", "--radius", "0.2", "--input", "x.npy"],
], ids=lambda o: "-".join(a.lstrip("-") for a in o))
def test_dual_boxes_written_by_dual_conform(small, tmp_path, capsys, options):
    j = tmp_path / "d.json"
    options = [str(small.dir / o) if o.endswith(".npy") else o for o in options]
    code, _, err = run(capsys, "dual", "--model", str(small.path), "--label", str(small.label), "--workers", "1",
                       "--json", str(j), *options)
    assert code == 0, err
    d = json.loads(j.read_text())
    conforms(d, "dual")
    assert len(d["model_sha256"]) == 64 and d["domain"] == {"lower": [0.0] * 6, "upper": [1.0] * 6}


def test_an_empty_dual_box_conforms(small, tmp_path, capsys):
    j = tmp_path / "d.json"
    assert run(capsys, "dual", "--model", str(small.path), "--input", str(small.dir / "x.npy"), "--radius", "0.01",
               "--label", str((small.label + 1) % 3), "--json", str(j))[0] == 0
    d = json.loads(j.read_text())
    conforms(d, "dual")
    assert d["empty"] and d["lower"] is None


def test_the_schema_rejects_what_is_not_a_certificate(small, tmp_path, capsys):
    good = certify_json(capsys, small, tmp_path / "c.json")
    validator = jsonschema.Draft202012Validator(json_schema("certificate"))
    bad = []
    for change in ({"status": "verified"}, {"lower": None}, {"model_sha256": "abc"}, {"format_version": 2},
                   {"apothem": -1.0}, {"label": -1}):
        d = copy.deepcopy(good)
        d.update(change)
        bad.append(d)
    missing = copy.deepcopy(good)
    del missing["tool_version"]
    for d in bad + [missing]:
        assert not validator.is_valid(d), d
