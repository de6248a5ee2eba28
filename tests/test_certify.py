"""The certify API and certificates: statuses, fields, JSON round trip."""

from __future__ import annotations

import hashlib
import json
import math
from fractions import Fraction

import numpy as np
import pytest

import parallelepipedonn as ppn
from parallelepipedonn.certificate import FORMAT_VERSION, Certificate
from parallelepipedonn.certify import CertifyConfig, certify
from parallelepipedonn.errors import ConfigError, InputDataError, LabelError
from parallelepipedonn.network import Affine, Network, ReLU
from parallelepipedonn.search import Status
from tests.nets import random_network
from tests.test_search import assert_robust_everywhere

REQUIRED_FIELDS = {
    "format_version", "tool_version", "model_path", "model_sha256", "label", "input", "domain", "lower", "upper",
    "apothem", "min_edge", "log_volume", "apothem_upper_bound", "oracle", "oracle_settings", "algorithm",
    "oracle_calls", "seconds", "status",
}


@pytest.fixture(scope="module")
def net() -> Network:
    return random_network(21, [6, 16, 16, 4])


def test_certify_defaults_to_the_predicted_label_and_certifies_a_robust_box(net):
    x = np.full(6, 0.3)
    cert = certify(net, x)
    assert cert.status is Status.CERTIFIED
    assert cert.label == cert.predicted_label == int(net.predict(x)[0])
    assert cert.box.contains(x) and cert.apothem > 0
    assert cert.apothem <= (cert.apothem_upper_bound or math.inf)
    assert_robust_everywhere(net, cert.box, cert.label)


def test_a_label_the_network_does_not_predict_is_not_robust_with_the_reason(net):
    x = np.full(6, 0.3)
    other = (int(net.predict(x)[0]) + 1) % 4
    cert = certify(net, x, other)
    assert cert.status is Status.NOT_ROBUST and cert.box is None
    assert f"classifies the input as {cert.predicted_label}, not {other}" in cert.reason
    assert cert.apothem_upper_bound == 0.0 and np.array_equal(cert.counterexample, x)


def test_a_tie_at_the_input_is_not_robust():
    tie = Network.from_layers((2,), [Affine(np.eye(2), np.zeros(2)), ReLU(), Affine(np.ones((2, 2)), np.zeros(2))])
    cert = certify(tie, np.array([0.5, 0.5]), 0)
    assert cert.status is Status.NOT_ROBUST and "tie" in cert.reason


def test_bad_arguments_raise_typed_errors(net):
    with pytest.raises(LabelError):
        certify(net, np.full(6, 0.3), 9)
    with pytest.raises(InputDataError, match="outside the domain"):
        certify(net, np.full(6, 1.3))
    with pytest.raises(InputDataError, match="expects 6"):
        certify(net, np.full(5, 0.3))
    with pytest.raises(ConfigError, match="unknown oracle"):
        certify(net, np.full(6, 0.3), config=CertifyConfig(oracle="nope"))


def test_custom_domain_is_respected(net):
    dom = ppn.Box(np.full(6, 0.2), np.full(6, 0.4))
    cert = certify(net, np.full(6, 0.3), domain=dom)
    assert dom.contains_box(cert.box)


def test_certificate_json_has_every_field_and_round_trips(net, tmp_path):
    cert = certify(net, np.full(6, 0.3), model_path=None)
    path = tmp_path / "c.json"
    cert.save(path)
    d = json.loads(path.read_text())
    assert REQUIRED_FIELDS <= set(d)
    assert d["format_version"] == FORMAT_VERSION and d["status"] == "certified"
    assert len(d["lower"]) == len(d["upper"]) == len(d["input"]) == 6
    back = Certificate.load(path)
    assert back.box == cert.box and back.apothem == cert.apothem and back.status is cert.status
    assert back.to_dict() == d


def test_whole_domain_apothem_is_written_as_inf(tmp_path):
    const = Network.from_layers((2,), [Affine(np.zeros((2, 2)), np.array([1.0, 0.0]))])
    cert = certify(const, np.array([0.1, 0.9]))
    assert cert.apothem == math.inf
    d = json.loads(cert.to_json())
    assert d["apothem"] == "inf" and d["gap"] is None
    assert Certificate.from_dict(d).apothem == math.inf


def test_malformed_certificates_are_rejected(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(InputDataError, match="not valid JSON"):
        Certificate.load(p)
    p.write_text(json.dumps({"format": "parallelepipedonn-certificate", "format_version": 1}))
    with pytest.raises(InputDataError, match="malformed"):
        Certificate.load(p)


def test_model_path_records_its_sha256(tmp_path, net):
    path = tmp_path / "m.onnx"
    ppn.save_onnx(net, path)
    loaded = ppn.load_onnx(path)
    cert = certify(loaded, np.full(6, 0.3), model_path=str(path))
    assert cert.model_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_mnist_network_certifies_test_image_0():
    data = ppn.load_dataset("mnist", "test")
    net = ppn.load_onnx(ppn.default_model_path("mnist"))
    x, y = data[0]
    cert = certify(net, x, true_label=y)
    assert cert.status is Status.CERTIFIED and cert.apothem > 0
    assert_robust_everywhere(net, cert.box, cert.label)


def test_reference_7_1_gets_a_positive_apothem_and_4_1_is_not_robust(reference):
    net = ppn.load_onnx(reference / "nets" / "mnist_nn-32.onnx")
    x7 = ppn.load_input(reference / "inputs" / "mnist" / "7-1.csv", net.input_shape)
    cert = certify(net, x7, 7)
    assert cert.status is Status.CERTIFIED and cert.apothem > 0  # the original's bisection at 0.1 reports 0
    assert_robust_everywhere(net, cert.box, 7)
    x4 = ppn.load_input(reference / "inputs" / "mnist" / "4-1.csv", net.input_shape)
    cert4 = certify(net, x4, 4)
    assert cert4.status is Status.NOT_ROBUST and "not 4" in cert4.reason


# -- counterexamples near a domain bound whose rounding steps out (an adversarial review) -------
def test_a_counterexample_pulled_towards_the_input_stays_in_the_domain():
    """The only misclassified point of ``[0, 0.9]`` is 0.9 (margin ``0.9 - p``); pulled along
    ``x + t (0.9 - x)``, ``t = 1`` rounds to 0.9000000000000001, outside the domain (was the
    stored counterexample: a certificate recheck refutes)."""
    from oracles.distance import pull_counterexample
    from parallelepipedonn.box import Box

    x = np.array([0.06587407694911368])
    net = Network.from_layers((1,), [Affine([[-1.0], [0.0]], [0.9, 0.0])])
    assert x[0] + 1.0 * (0.9 - x[0]) > 0.9
    assert pull_counterexample(net, x, np.array([0.9]), 0).tolist() == [0.9]
    dom = Box(np.zeros(1), np.array([0.9]))
    cert = certify(net, x, 0, domain=dom, config=CertifyConfig(algorithm="exact", oracle="milp", epsilon=0.85))
    assert dom.contains(cert.counterexample) and cert.epsilon["status"] == "not-robust"
    assert cert.apothem_upper_bound >= float(Fraction(0.9) - Fraction(x[0]))


def test_not_robust_at_epsilon_needs_a_counterexample_inside_the_domain():
    """On ``[0, 0.9]^2`` the margin ``(0.9 - p0) + (0.9 - p1)`` is 0 only at the corner, at an
    exact distance above epsilon by 5.6e-17: the ball is robust. The search's pulled point
    ``(0.8999999999999999, 0.9000000000000001)`` (outside the domain, within epsilon) made it
    "not robust"."""
    from parallelepipedonn.box import Box

    x = np.array([0.3701117053014778, 0.39556364581386866])
    eps = 0.5298882946985222
    assert Fraction(eps) < Fraction(0.9) - Fraction(x[0])
    net = Network.from_layers((2,), [Affine([[-1.0, -1.0], [0.0, 0.0]], [0.0, -2 * 0.9])])
    dom = Box(np.zeros(2), np.full(2, 0.9))
    for oracle in ("milp", None):
        cert = certify(net, x, 0, domain=dom, config=CertifyConfig(algorithm="exact", oracle=oracle, epsilon=eps))
        assert cert.epsilon["status"] != "not-robust"
        assert cert.counterexample is None or dom.contains(cert.counterexample)
