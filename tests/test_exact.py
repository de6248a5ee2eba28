"""The exact algorithm is anytime and honest: never below the default search, ``exact``
only when the bracket is closed, and otherwise says so with the bracket it reached —
in the certificate, its JSON and on the terminal."""

from __future__ import annotations

import io
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from oracles import AttackOracle, make_oracle
from oracles.distance import min_adversarial_distance
from parallelepipedonn.box import Box
from parallelepipedonn.certify import CertifyConfig, certify
from parallelepipedonn.network import Affine, Network, ReLU
from parallelepipedonn.progress import Progress
from parallelepipedonn.search import Problem, Status
from parallelepipedonn.search.exact import ExactApothem
from tests.nets import random_network, saved_classifier
from tests.test_cli import run

NET = random_network(1001, [6, 12, 12, 3], scale=3.0)
X = np.random.default_rng(1).random(6)


def default_apothem() -> float:
    cert = certify(NET, X, config=CertifyConfig(precision=1e-4))
    assert cert.status is Status.CERTIFIED
    return cert.apothem


def test_exact_closes_the_bracket_and_is_never_below_the_default_search():
    cert = certify(NET, X, config=CertifyConfig(algorithm="exact"))
    assert cert.status is Status.CERTIFIED and cert.exact is True
    assert cert.apothem >= default_apothem()
    assert cert.apothem_upper_bound - cert.apothem <= 1e-4 * cert.apothem_upper_bound


def test_out_of_time_exact_keeps_what_it_proved_and_says_it_is_not_exact():
    """The time limit stops the default search that seeds the bracket too (it took 17 s of a
    2 s limit on a residual CIFAR net): with time for it, never worse than it."""
    cert = certify(NET, X, config=CertifyConfig(algorithm="exact", search_time_limit=1e-9))
    assert cert.status is Status.CERTIFIED and cert.exact is False and cert.seconds < 1
    assert cert.reason.startswith("not exact: the best apothem lies in [")
    assert cert.to_dict()["exact"] is False
    assert certify(NET, X, config=CertifyConfig(algorithm="exact", search_time_limit=10)).apothem >= default_apothem()


def test_every_result_of_the_exact_search_is_a_proven_cube():
    problem = Problem(X, int(NET.predict(X)[0]), Box.unit(6))
    result = ExactApothem(precision=1e-3).run(problem, make_oracle("crown+alpha-crown+bab", NET),
                                              AttackOracle(NET, seed=0))
    assert result.exact is True and result.box is not None
    lo, hi = result.box.lower, result.box.upper
    assert not NET.misclassified(np.random.default_rng(2).uniform(lo, hi, (2000, 6)), problem.label).any()


def test_no_counterexample_no_upper_end_even_when_the_whole_domain_is_unknown():
    """The upper end of the best apothem is the distance of a confirmed counterexample, or
    inf: never the radius of a cube the oracle could not decide. Here the margin is 2^-50
    at x = 1, its exact minimum over [0, 1] (below every proof margin: the whole domain is
    UNKNOWN), so the best apothem is inf; a finite upper end, or ``exact``, would be false."""
    delta = 2.0 ** -20
    w = (1 - 2.0 ** -50) / delta  # exact in float64
    net = Network.from_layers((1,), [Affine(np.array([[1.0]]), np.array([-(1 - delta)])), ReLU(),
                                     Affine(np.array([[-w], [0.0]]), np.array([1.0, 0.0]))])
    assert Fraction(1) - Fraction(w) * Fraction(delta) == Fraction(1, 2 ** 50)  # the margin at x = 1, exactly
    x = np.array([0.5])
    d = min_adversarial_distance(make_oracle("crown+alpha-crown+bab", net), x, 0, Box.unit(1))
    assert d.counterexample is None and math.isinf(d.upper) and d.lower < 0.5
    assert "no counterexample" in d.reason
    cert = certify(net, x, label=0, config=CertifyConfig(algorithm="exact"))
    assert cert.status is Status.CERTIFIED and cert.exact is False and cert.counterexample is None
    assert cert.apothem_upper_bound is None or math.isinf(cert.apothem_upper_bound)
    assert ", inf]" in cert.reason


def test_the_upper_end_is_at_least_the_exact_distance_of_its_counterexample():
    """A cube of radius r, rounded to nearest, can reach past r: the upper end is the
    counterexample's own distance rounded up, never the radius asked (this net and input
    had it one ulp below the counterexample's exact distance)."""
    w0 = [[0.011141667637941386, -3.655447853868126], [23.82543117453245, -19.667547621156462],
          [33.12695130385979, -4.918829293911885]]
    w1 = [[0.010769887778306507, -0.19972727394998524, -0.3231241564694295],
          [0.25940264449670253, 0.03694960499224982, -12.22840849751641],
          [0.002014738631425586, 0.20870913954738707, -3.848063444576026],
          [-0.003414173522998418, 0.09880980551768143, 0.01702851565180273]]
    w2 = [[249.79672612771608, -0.014767898816676568, -0.009302949975752374, -0.003965036063585284],
          [0.31293064444330154, 0.025088031883426988, 1.2297713320464847, -0.21429161886015882]]
    b0, b1, b2 = ([-0.8351678115546435, 0.6983251006685409, 0.07900478681743771],
                  [0.7368431602438037, -0.06085602956003409, 0.1766285859064408, 0.522785835419877],
                  [-0.6193255120474475, -0.14999400617456707])
    net = Network.from_layers((2,), [Affine(np.array(w0), np.array(b0)), ReLU(), Affine(np.array(w1), np.array(b1)),
                                     ReLU(), Affine(np.array(w2), np.array(b2))])
    x, label = np.array([0.6715486846920385, 0.49706326393249967]), 1
    cert = certify(net, x, label=label, config=CertifyConfig(algorithm="exact", oracle="crown+alpha-crown+bab",
                                                             precision=1e-6))
    cex = np.asarray(cert.counterexample)
    assert net.misclassified(cex[None], label)[0]
    distance = max(abs(Fraction(float(a)) - Fraction(float(b))) for a, b in zip(cex, x))
    assert Fraction(cert.apothem_upper_bound) >= distance > Fraction(cert.apothem)


def test_the_exact_flag_is_a_json_boolean_on_every_path():
    """On a steep net (slope 2^33) milp's distance is a numpy number: the flag must still be
    a Python bool, so that the certificate's JSON can be written."""
    s = 2.0 ** 33
    net = Network.from_layers((1,), [Affine(np.array([[0.0], [s]]), np.array([0.0, -s * 0.5]))], "steep")
    cert = certify(net, np.array([0.25]), config=CertifyConfig(algorithm="exact", oracle="milp"))
    assert type(cert.exact) is bool
    json.dumps(cert.to_dict())


def test_other_algorithms_leave_exact_unset():
    assert certify(NET, X).exact is None


def test_cli_prints_not_exact_with_the_bracket(tmp_path, capsys):
    small = saved_classifier(tmp_path)
    path = tmp_path / "c.json"
    code, out, err = run(capsys, "certify", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                         "--algorithm", "exact", "--time-limit", "0.000001", "--json", str(path))
    assert code == 0, err
    cert = json.loads(path.read_text())
    if cert["exact"] is False:  # the floor can close the bracket on its own on a tiny net
        assert "exact       NO: the best apothem lies in [" in out
    else:
        assert "exact       yes" in out


def test_single_certify_takes_a_time_limit(tmp_path, capsys):
    small = saved_classifier(tmp_path)
    code, out, err = run(capsys, "certify", "--model", str(small.path), "--input", str(small.dir / "x.npy"),
                         "--algorithm", "box-linear", "--precision", "1e-7", "--time-limit", "0.5")
    assert code == 0, err
    assert out.startswith("CERTIFIED")


@pytest.mark.parametrize("tty", [False, True])
def test_progress_is_silent_off_a_terminal_and_before_its_delay(tty):
    stream = io.StringIO()
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    with Progress("certify", stream=stream, delay=0.0, min_interval=0.0) as progress:
        progress("16 boxes")
    assert ("certify: 16 boxes" in stream.getvalue()) is tty
    quiet = io.StringIO()
    quiet.isatty = lambda: True  # type: ignore[method-assign]
    with Progress("certify", stream=quiet, delay=60.0) as progress:
        progress("16 boxes")
    assert quiet.getvalue() == ""


class _Built(Exception):
    """Raised by a spied constructor: the device it was given is all the test needs."""


def test_the_exact_searchs_crown_floor_runs_on_the_oracles_device(monkeypatch):
    from oracles.crown import CrownOracle

    seen = []

    def spy(self, network, **options):
        seen.append(options.get("device"))
        raise _Built

    oracle = make_oracle("crown+alpha-crown+bab", NET)
    oracle.device = "meta"  # any device but the CPU: only its name is read before the spy stops
    monkeypatch.setattr(CrownOracle, "__init__", spy)
    with pytest.raises(_Built):
        ExactApothem().run(Problem(X, int(NET.predict(X)[0]), Box.unit(6)), oracle)
    assert seen == ["meta"]


def test_every_oracle_reports_the_device_it_runs_on():
    """A cascade reports its stages' device (any but the CPU; milp has no device option), gmm
    its own (which its CROWN uses, and the exact search's floor then too)."""
    from oracles.gmm import GmmOracle

    got = [str(make_oracle(name, NET, device="meta").device) for name in ("crown+alpha-crown", "milp+crown")]
    linear = random_network(3, [6, 3])
    assert got + [str(make_oracle("milp", NET).device)] == ["meta", "meta", "cpu"]
    assert [str(GmmOracle(net, device="meta").device) for net in (NET, linear)] == ["meta", "meta"]
