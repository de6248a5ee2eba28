"""The exact algorithm is anytime and honest: never below the default search, ``exact``
only when the bracket is closed, and otherwise says so with the bracket it reached —
in the certificate, its JSON and on the terminal."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from oracles import AttackOracle, make_oracle
from parallelepipedonn.box import Box
from parallelepipedonn.certify import CertifyConfig, certify
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


def test_out_of_time_exact_keeps_the_default_searchs_box_and_says_it_is_not_exact():
    cert = certify(NET, X, config=CertifyConfig(algorithm="exact", search_time_limit=1e-9))
    assert cert.status is Status.CERTIFIED and cert.exact is False
    assert cert.apothem >= default_apothem()
    assert cert.reason.startswith("not exact: the best apothem lies in [")
    assert cert.to_dict()["exact"] is False


def test_every_result_of_the_exact_search_is_a_proven_cube():
    problem = Problem(X, int(NET.predict(X)[0]), Box.unit(6))
    result = ExactApothem(precision=1e-3).run(problem, make_oracle("crown+alpha-crown+bab", NET),
                                              AttackOracle(NET, seed=0))
    assert result.exact is True and result.box is not None
    lo, hi = result.box.lower, result.box.upper
    assert not NET.misclassified(np.random.default_rng(2).uniform(lo, hi, (2000, 6)), problem.label).any()


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
