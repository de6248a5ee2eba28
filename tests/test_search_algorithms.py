"""The whole family of search algorithms on small nets: every box is robust, the apothem
searches agree with each other and with the exact optimum, the composed box is
apothem-optimal and inclusion-maximal."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from oracles import AttackOracle, CrownOracle, MilpOracle, Verdict, make_oracle, min_adversarial_distance
from parallelepipedonn.box import Box
from parallelepipedonn.certify import CertifyConfig, certify
from parallelepipedonn.errors import ConfigError
from parallelepipedonn.search import SEARCHES, Problem, Status, default_oracle, make_search
from tests.nets import random_network
from tests.test_search import assert_robust_everywhere

NETS = [(random_network(1000 + s, [6, 12, 12, 3], scale=3.0), s) for s in range(3)]


def _problem(net, seed):
    x = np.random.default_rng(seed).random(net.n_inputs)
    return Problem(x, int(net.predict(x)[0]), Box.unit(net.n_inputs))


@pytest.mark.parametrize("algorithm", sorted(SEARCHES))
@pytest.mark.parametrize("net, seed", NETS, ids=lambda v: "" if not isinstance(v, int) else f"net{v}")
def test_every_algorithm_returns_a_robust_box(algorithm, net, seed):
    problem = _problem(net, seed)
    search = make_search(algorithm, precision=1e-3)
    oracle = make_oracle(default_oracle(algorithm), net)
    result = search.run(problem, oracle, AttackOracle(net, seed=seed))
    assert result.status is Status.CERTIFIED, result.reason
    box = result.box
    assert box.contains(problem.x) and problem.domain.contains_box(box)
    assert_robust_everywhere(net, box, problem.label, seed)
    assert result.oracle_calls >= result.rounds >= 1
    apothem = box.apothem(problem.x, problem.domain)
    assert apothem <= result.apothem_upper_bound + 1e-12
    if math.isfinite(result.apothem_upper_bound):
        assert net.margins(result.counterexample, problem.label)[0] <= 0


@pytest.mark.parametrize("net, seed", NETS, ids=lambda v: "" if not isinstance(v, int) else f"net{v}")
def test_linear_dichotomic_and_kary_apothems_agree_within_the_precision(net, seed):
    problem = _problem(net, seed)
    delta = 1e-3
    radii = {}
    for name in ("apothem-linear", "apothem-bisection", "apothem-kary"):
        result = make_search(name, precision=delta).run(problem, CrownOracle(net))
        radii[name] = result.box.apothem(problem.x, problem.domain)
    assert max(radii.values()) - min(radii.values()) <= delta + 1e-12, radii
    calls = {n: make_search(n, precision=delta).run(problem, CrownOracle(net)) for n in ("apothem-linear",
                                                                                            "apothem-kary")}
    assert calls["apothem-kary"].rounds < calls["apothem-linear"].rounds  # batching saves rounds


@pytest.mark.parametrize("net, seed", NETS, ids=lambda v: "" if not isinstance(v, int) else f"net{v}")
def test_apothem_max_box_keeps_the_apothem_and_is_inclusion_maximal(net, seed):
    problem = _problem(net, seed)
    delta = 1e-3
    oracle = CrownOracle(net)
    cube = make_search("apothem-kary", precision=delta).run(problem, oracle)
    result = make_search("apothem-max-box", precision=delta).run(problem, oracle)
    box = result.box
    r = cube.box.apothem(problem.x, problem.domain)
    assert box.contains_box(cube.box)
    assert box.apothem(problem.x, problem.domain) == pytest.approx(r, abs=1e-12)
    # every face that is not on the domain's boundary, pushed delta further, is refuted or unknown
    dom = problem.domain
    for i in range(box.n):
        for side in (0, 1):
            lo, hi = box.lower.copy(), box.upper.copy()
            if side == 0 and lo[i] > dom.lower[i]:
                lo[i] = max(lo[i] - delta, dom.lower[i])
            elif side == 1 and hi[i] < dom.upper[i]:
                hi[i] = min(hi[i] + delta, dom.upper[i])
            else:
                continue
            assert oracle.verify_box(lo, hi, problem.label).verdict is not Verdict.VERIFIED, (i, side)


@pytest.mark.parametrize("net, seed", NETS, ids=lambda v: "" if not isinstance(v, int) else f"net{v}")
def test_exact_matches_the_milp_optimum(net, seed):
    problem = _problem(net, seed)
    exact = make_search("exact", precision=1e-4).run(problem, make_oracle("crown+alpha-crown+bab", net),
                                                     AttackOracle(net))
    milp = min_adversarial_distance(MilpOracle(net), problem.x, problem.label, problem.domain, rel_precision=1e-4,
                                    falsifier=AttackOracle(net))
    got = exact.box.apothem(problem.x, problem.domain)
    if math.isinf(milp.upper):
        assert math.isinf(got)
        return
    assert got <= milp.upper and milp.lower <= exact.apothem_upper_bound
    assert got >= (1 - 1e-3) * milp.upper  # the certified apothem is the optimum, to the precision
    assert_robust_everywhere(net, exact.box, problem.label)


def test_exact_refuses_an_incomplete_oracle():
    net, seed = NETS[0]
    with pytest.raises(ConfigError, match="complete oracle"):
        make_search("exact").run(_problem(net, seed), CrownOracle(net))


def test_volume_methods_give_thin_boxes_and_apothem_first_gives_thick_ones():
    """The paper's claim in miniature: the apothem-optimal maximal box's min edge is at
    least twice the volume-oriented boxes'."""
    net = random_network(1100, [8, 16, 16, 3], scale=1.5)
    ratios = []
    for seed in range(4):
        problem = _problem(net, seed)
        edges = {}
        for name in ("apothem-max-box", "volume-greedy", "box-bisection"):
            res = make_search(name, precision=1e-3).run(problem, CrownOracle(net))
            edges[name] = res.box.min_edge()
        ratios.append(edges["apothem-max-box"] / max(edges["volume-greedy"], edges["box-bisection"], 1e-12))
    assert np.median(ratios) >= 2


def test_compositions_and_unknown_names():
    search = make_search("apothem-kary+box-maximal")
    assert search.name == "apothem-kary+box-maximal"
    assert make_search("apothem-max-box").name == "apothem-max-box"
    with pytest.raises(ConfigError, match="malformed"):
        make_search("apothem-kary+")
    with pytest.raises(ConfigError, match="unknown algorithm"):
        make_search("apothem-nope")


@pytest.mark.parametrize("later", ["apothem-kary", "apothem-topdown", "box-topdown", "volume-gradient", "exact",
                                   "apothem-max-box", "topdown-box"])
def test_a_later_part_of_a_composition_must_grow_the_box_it_is_given(later):
    """``apothem-kary+volume-gradient`` ran both and kept the second's box, which ignored
    the first's (0.0028 where apothem-kary alone proved 0.0809 on MNIST #0)."""
    with pytest.raises(ConfigError, match="starts afresh.*box-bisection, box-linear, box-maximal, volume-greedy"):
        make_search(f"apothem-kary+{later}")
    for growing in ("box-bisection", "box-linear", "box-maximal", "volume-greedy"):
        assert make_search(f"{later}+{growing}").name == f"{later}+{growing}"


def test_each_later_part_contains_the_box_before_it_and_exact_first_keeps_its_claim():
    net, seed = NETS[1]
    problem = _problem(net, seed)
    first = make_search("apothem-kary", precision=1e-3).run(problem, CrownOracle(net))
    for name in ("apothem-kary+box-maximal", "apothem-kary+volume-greedy", "apothem-kary+box-linear"):
        res = make_search(name, precision=1e-3).run(problem, CrownOracle(net))
        assert res.box.contains_box(first.box), name
    assert default_oracle("exact+box-maximal") == "crown+alpha-crown+bab"
    cert = certify(net, problem.x, config=CertifyConfig(algorithm="exact+box-maximal", precision=1e-2))
    alone = certify(net, problem.x, config=CertifyConfig(algorithm="exact", precision=1e-2))
    assert cert.exact is True and alone.exact is True and cert.oracle == "crown+alpha-crown+bab"
    assert cert.apothem >= alone.apothem * (1 - 1e-2) and cert.log_volume >= alone.log_volume


def test_volume_gradient_stops_at_the_deadline_with_a_verified_box():
    import time

    net = random_network(1100, [8, 16, 16, 3], scale=1.5)
    problem = _problem(net, 0)
    start = time.perf_counter()
    res = make_search("volume-gradient").run(replace(problem, deadline=start + 0.01), CrownOracle(net))
    assert time.perf_counter() - start < 1.0 and res.reason.startswith("time limit reached")
    if res.box is not None:
        assert_robust_everywhere(net, res.box, problem.label, 0)


def test_certify_uses_each_algorithms_default_oracle():
    net, seed = NETS[1]
    problem = _problem(net, seed)
    cert = certify(net, problem.x, config=CertifyConfig(algorithm="exact"))
    assert cert.oracle == "crown+alpha-crown+bab" and cert.status is Status.CERTIFIED
    cert = certify(net, problem.x, config=CertifyConfig(algorithm="apothem-max-box"))
    assert cert.oracle == "crown" and cert.min_edge >= cert.apothem


@pytest.mark.parametrize("algorithm", [a for a in SEARCHES if a != "apothem-linear"])  # linear: precision-many steps
def test_a_precision_below_the_spacing_of_floats_ends_the_search(algorithm):
    """x = 0.3 + 2^-54 and a face at 5.6e-17 from 0: brackets of radii near 0.3 cannot be
    split below their float spacing (5.6e-17); a precision of 1e-18 looped forever in
    apothem-bisection and box-bisection (the midpoint equals an end), now the search
    stops there with what it verified."""
    from parallelepipedonn.network import Affine, Network

    net = Network((1,), (Affine(np.array([[1e17], [0.0]]), np.array([0.0, 1.0])),))
    x = np.array([math.nextafter(0.3, 1.0)])
    cert = certify(net, x, 0, config=CertifyConfig(algorithm=algorithm, precision=1e-18, search_time_limit=60))
    assert cert.status is Status.CERTIFIED
    assert_robust_everywhere(net, cert.box, 0)


def test_a_scaled_volume_box_stays_in_a_domain_whose_bounds_are_not_dyadic():
    """``x + 1 (lo - x)`` can round below ``lo``: with the domain [0.1, 1] the whole box
    (t = 1) stuck out of the domain by one unit in the last place."""
    from parallelepipedonn.network import Affine, Network, ReLU

    rng, sizes, layers = np.random.default_rng(1), [2, 8, 8, 3], []
    for i in range(3):
        w, b = rng.normal(0, 1 / np.sqrt(sizes[i]), (sizes[i], sizes[i + 1])), rng.normal(0, 0.3, sizes[i + 1])
        layers += [Affine(w.T, b)] + ([ReLU()] if i < 2 else [])
    net = Network((2,), tuple(layers))
    domain = Box(np.full(2, 0.1), np.ones(2))
    cert = certify(net, np.array([0.6732655185893088, 0.8319432152802452]), domain=domain,
                   config=CertifyConfig(algorithm="volume-gradient"))
    assert cert.status is Status.CERTIFIED and domain.contains_box(cert.box)


@pytest.mark.parametrize("precision", [1.0, 2.0])
def test_the_exact_search_refuses_a_relative_precision_of_one_or_more(precision):
    with pytest.raises(ConfigError, match="relative"):
        make_search("exact", precision=precision)


def test_the_apothem_searches_stop_at_the_deadline_with_a_proven_cube():
    import time

    net = random_network(0, [4, 16, 3])
    x = np.full(4, 0.5)
    label = int(net.predict(x[None])[0])
    for name in ("apothem-linear", "apothem-bisection", "apothem-kary", "apothem-topdown"):
        problem = Problem(x, label, Box.unit(4), deadline=time.perf_counter() + 0.3)
        start = time.perf_counter()
        result = make_search(name, precision=1e-300).run(problem, CrownOracle(net))
        assert time.perf_counter() - start < 5, name
        if result.box is not None:
            assert result.status is Status.CERTIFIED and result.box.contains(x)
            assert_robust_everywhere(net, result.box, label)


def test_recheck_refutes_an_exact_claim_of_another_algorithm_or_of_a_precision_of_one(tmp_path, capsys):
    """A forged certificate: ``exact: true`` with ``rel_precision`` 1 (which calls any
    apothem the best; the exact search refuses it), or on an algorithm that is not exact."""
    import json

    from parallelepipedonn.onnx_export import save_onnx
    from tests.test_cli import run

    net, seed = NETS[1]
    save_onnx(net, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", _problem(net, seed).x)
    assert run(capsys, "certify", "--model", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"),
               "--json", str(tmp_path / "c.json"))[0] == 0
    d = json.loads((tmp_path / "c.json").read_text())
    for forged in ({"exact": True, "algorithm_settings": {"first": {"rel_precision": 1.0}}},
                   {"exact": True, "algorithm_settings": {"rel_precision": 0.5}}):
        (tmp_path / "f.json").write_text(json.dumps({**d, **forged}))
        code, out, _ = run(capsys, "recheck", str(tmp_path / "f.json"))
        assert code == 5 and "exact" in out, out
