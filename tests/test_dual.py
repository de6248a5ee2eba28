"""Dual certifications contain their class region, and every certification inside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import parallelepipedonn as ppn
from oracles import AttackOracle, BabOracle, CrownOracle, min_adversarial_distance
from parallelepipedonn.box import Box
from parallelepipedonn.cli import main
from parallelepipedonn.dual import METHODS, dual_box
from parallelepipedonn.errors import ConfigError
from parallelepipedonn.search import make_search
from tests.nets import random_network


def _grid(lo, hi, k=201):
    axes = [np.linspace(a, b, k) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(lo))


@pytest.fixture(scope="module")
def net():
    return random_network(323, [2, 10, 10, 3], scale=3.0)  # all three classes occupy the square


@pytest.mark.parametrize("method", METHODS)
def test_dual_box_contains_every_grid_point_of_the_class(net, method):
    pts = _grid([0, 0], [1, 1])
    pred = net.predict(pts)
    for label in range(3):
        members = pts[pred == label]
        dual = dual_box(net, label, method=method, workers=1)
        assert dual.box is not None and dual.box.contains_points(members).all()
        if method == "milp":  # exact: every bound attained by a point of the class, up to the proof margin
            assert dual.exact_count == 4
            w = dual.witnesses
            assert (net.margins(w, label) >= 0).all()
            assert np.allclose(w.min(axis=0), dual.box.lower, atol=2e-4)
            assert np.allclose(w.max(axis=0), dual.box.upper, atol=2e-4)


def test_relaxed_dual_contains_the_exact_one(net):
    for label in range(3):
        exact = dual_box(net, label, method="milp", workers=1)
        relaxed = dual_box(net, label, method="relaxed")
        assert relaxed.box.contains_box(exact.box)


def test_restricted_dual_contains_the_class_points_of_the_ball(net):
    x = np.array([0.3, 0.55])
    label = int(net.predict(x)[0])
    radius = 0.2
    dual = dual_box(net, label, x=x, radius=radius, workers=1)
    cube = Box.cube(x, radius, Box.unit(2))
    pts = _grid(cube.lower, cube.upper)
    assert dual.region == cube and cube.contains_box(dual.box)
    assert dual.box.contains_points(pts[net.predict(pts) == label]).all()


def test_certified_boxes_lie_inside_the_restricted_dual_of_their_input():
    net = random_network(1200, [6, 12, 12, 3], scale=2.0)
    dom = Box.unit(6)
    for seed in range(3):
        x = np.random.default_rng(seed).random(6)
        label = int(net.predict(x)[0])
        for algorithm in ("apothem-kary", "apothem-max-box", "volume-gradient"):
            cert = ppn.certify(net, x, label, config=ppn.CertifyConfig(algorithm=algorithm, precision=1e-3))
            radius = 2 * max(cert.apothem, 1e-3)
            dual = dual_box(net, label, x=x, radius=radius, workers=1)
            inside = cert.box.intersect(Box.cube(x, radius, dom))  # the part of the box the dual speaks about
            assert dual.box.contains_box(inside), algorithm


def test_the_dual_bound_never_undercuts_the_exact_apothem():
    net = random_network(1201, [4, 10, 10, 3], scale=3.0)
    dom = Box.unit(4)
    for seed in range(3):
        x = np.random.default_rng(seed).random(4)
        label = int(net.predict(x)[0])
        exact = min_adversarial_distance(BabOracle(net), x, label, dom, falsifier=AttackOracle(net))
        for radius in (exact.upper * 0.5, exact.upper * 2, exact.upper * 4):
            bound = dual_box(net, label, x=x, radius=radius, workers=1).apothem_bound(x, dom)
            if bound is not None:
                assert bound >= exact.lower - 1e-9


def test_every_test_image_of_a_class_lies_in_its_dual_box():
    net = ppn.load_onnx(ppn.default_model_path("mnist"))
    data = ppn.load_dataset("mnist", "test")
    images = data.images.reshape(len(data), -1)
    pred = net.predict(images)
    train = ppn.load_dataset("mnist", "train")
    train_images = train.images.reshape(len(train), -1)
    for label in (3, 7):
        candidates = train_images[net.predict(train_images) == label][:200]
        dual = dual_box(net, label, candidates=candidates, workers=1, time_limit=20)
        assert dual.box.contains_points(images[pred == label]).all()
    # restricted to a ball around a test image: the class's test images inside the ball are inside
    x = images[0]
    label = int(pred[0])
    radius = 0.1
    dual = dual_box(net, label, x=x, radius=radius, workers=1, time_limit=20)
    ball = Box.cube(x, radius, Box.unit(x.size))
    within = images[(pred == label) & ball.contains_points(images)]
    assert len(within) >= 1 and dual.box.contains_points(within).all()


def test_a_class_point_within_rounding_of_the_boundary_is_decided_exactly():
    """Class 1 iff ``0.5 - x0 >= 0``: the extreme ``x0 = 0.5`` is a tie, decided in exact
    arithmetic for one point (``complete-bu`` crashed: the point was handed on as a vector
    of values rather than a batch of one)."""
    from parallelepipedonn.network import Affine, Network, ReLU

    net = Network((2,), (Affine(np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0.5, -0.5])), ReLU(),
                         Affine(np.array([[0.0, 1.0], [1.0, 0.0]]), np.zeros(2))), "sliver")
    for method in METHODS:
        box = dual_box(net, 1, method=method, workers=1).box
        assert box.lower[0] == 0.0 and 0.5 <= box.upper[0], method
    assert (net.margins(np.array([[0.5, 0.3], [0.0, 1.0]]), 1) >= 0).all()


def test_exact_faces_and_witnesses_are_class_points_in_exact_arithmetic():
    """``logit0 = 1e-17 relu(x0 + 1) + 1``, ``logit1 = 1``: float64 rounds every point to a
    tie, exactly no point is of class 1. A face is marked exact only where a class point
    attains it, decided exactly: here no method marks one or hands back a witness."""
    from parallelepipedonn.network import Affine, Network, ReLU

    net = Network.from_layers((2,), [Affine(np.array([[1.0, 0.0]]), np.array([1.0])), ReLU(),
                                     Affine(np.array([[1e-17], [0.0]]), np.array([1.0, 1.0]))], "cancel")
    assert (net.margins(np.array([[0.0, 0.0], [1.0, 1.0]]), 1) == 0).all()
    assert not net.class_points(np.array([[0.0, 0.0], [1.0, 1.0]]), 1).any()
    for method in METHODS:
        d = dual_box(net, 1, method=method, workers=1)
        assert not d.exact_lower.any() and not d.exact_upper.any() and not len(d.witnesses), method


def test_restriction_needs_input_and_radius(net):
    with pytest.raises(ConfigError, match="both an input and a radius"):
        dual_box(net, 0, x=np.array([0.5, 0.5]))
    with pytest.raises(ConfigError, match="unknown dual method"):
        dual_box(net, 0, method="nope")


def test_dual_cli_writes_json_and_png(tmp_path, capsys):
    out, png = tmp_path / "d.json", tmp_path / "d.png"
    code = main(["dual", "--dataset", "mnist", "--index", "0", "--radius", "2x", "--method", "relaxed",
                 "--json", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert code == 0 and "dual box of class" in text and "implies" in text
    d = json.loads(out.read_text())
    assert d["method"] == "relaxed" and len(d["lower"]) == len(d["upper"]) == 784 and d["radius"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["dual", "--dataset", "mnist", "--index", "0"]) == 2  # a radius is needed around an input
    assert "radius" in capsys.readouterr().err


def test_search_results_can_be_bounded_by_the_dual(net):
    x = np.array([0.3, 0.55])
    label = int(net.predict(x)[0])
    res = make_search("apothem-kary").run(ppn.Problem(x, label, Box.unit(2)), CrownOracle(net))
    a = res.box.apothem(x, Box.unit(2))
    bound = dual_box(net, label, x=x, radius=4 * a, workers=1).apothem_bound(x, Box.unit(2))
    assert bound is None or bound >= a


def test_certify_with_dual_folds_its_bound_into_the_gap():
    from tests.test_milp import _linear_classifier

    net = _linear_classifier(np.array([1.0, 0.0]), -0.3)  # class 0 where x1 > 0.3
    x = np.array([0.5, 0.5])
    cert = ppn.certify(net, x, 0, config=ppn.CertifyConfig(dual="milp", falsifier=None))
    assert cert.dual is not None and cert.dual["apothem_bound"] == pytest.approx(0.2, abs=2e-4)
    assert cert.apothem_upper_bound == pytest.approx(0.2, abs=2e-4)  # no counterexample search, yet bounded
    assert cert.apothem <= cert.apothem_upper_bound
    assert json.loads(cert.to_json())["dual"]["method"] == "milp"



def test_the_dual_builds_its_attack_and_relaxation_on_the_device_asked(monkeypatch, net):
    seen = {}
    for cls in (AttackOracle, CrownOracle):
        def spy(self, network, *, _cls=cls, _real=cls.__init__, **options):
            seen[_cls.__name__] = options.get("device")
            _real(self, network, **{**options, "device": "cpu"})  # (computed on the CPU)

        monkeypatch.setattr(cls, "__init__", spy)
    d = dual_box(net, 0, method="relaxed", device="meta")
    assert seen == {"AttackOracle": "meta", "CrownOracle": "meta"} and d.box is not None



def test_certify_hands_its_device_to_the_dual(monkeypatch, net):
    import dataclasses
    import importlib

    certify_module = importlib.import_module("parallelepipedonn.certify")  # (the package's `certify` is the function)
    dual_module = importlib.import_module("parallelepipedonn.dual")

    build = certify_module.build_oracles  # (the search's own oracles on the CPU: only the dual's device is read)
    monkeypatch.setattr(certify_module, "build_oracles",
                        lambda network, config: build(network, dataclasses.replace(config, device="cpu")))
    seen = []
    real = dual_module.dual_box

    def spy(*args, device="cpu", **options):
        seen.append(device)
        return real(*args, device="cpu", **options)

    monkeypatch.setattr(dual_module, "dual_box", spy)
    x = np.array([0.3, 0.6])
    cert = ppn.certify(net, x, config=ppn.CertifyConfig(dual="relaxed", device="meta"))
    assert seen == ["meta"] and cert.status.value == "certified"


def test_dual_cli_takes_a_device_and_refuses_cuda_where_there_is_none(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["dual", "--dataset", "mnist", "--label", "3", "--method", "relaxed", "--device", "cuda"]) != 0
    assert "CUDA is not available" in capsys.readouterr().err


def test_recheck_refutes_a_dual_box_whose_stored_metrics_are_not_its_boxs(tmp_path, capsys):
    import json

    from parallelepipedonn.dual import dual_box
    from parallelepipedonn.onnx_export import save_onnx
    from parallelepipedonn.onnx_import import load_onnx
    from tests.nets import random_network
    from tests.test_cli import run

    save_onnx(random_network(1, [2, 8, 8, 3]), tmp_path / "m.onnx")
    net = load_onnx(tmp_path / "m.onnx")
    dual_box(net, 1, method="relaxed", workers=1, model_path=str(tmp_path / "m.onnx")).save(tmp_path / "d.json")
    assert run(capsys, "recheck", str(tmp_path / "d.json"))[0] == 0
    d = json.loads((tmp_path / "d.json").read_text())
    for key, value in (("covers_region", not d["covers_region"]), ("exact_bounds", d["exact_bounds"] + 1),
                       ("min_edge", 0.5), ("log_volume", -3.0)):
        tampered = {**d, key: value}
        (tmp_path / "t.json").write_text(json.dumps(tampered))
        code, out, _ = run(capsys, "recheck", str(tmp_path / "t.json"))
        assert code == 5 and f"its stored {key}" in out, (key, out)


def _interval_net(tmp_path):
    """One input; class 0 exactly where x < 7 (logit 0 - logit 1 = 7 - x), saved in float64."""
    from parallelepipedonn.network import Affine, Network
    from tests.crafted_nets import save_float64_onnx

    save_float64_onnx(Network.from_layers((1,), [Affine(np.array([[-1.0], [0.0]]), np.array([7.0, 0.0]))],
                                          name="interval"), tmp_path / "i.onnx")
    (tmp_path / "x.csv").write_text("5.0\n")
    return tmp_path / "i.onnx", tmp_path / "x.csv"


def test_a_radius_in_apothems_is_that_many_apothems_above_one_too(tmp_path, capsys):
    """On the domain [0, 10] the input 5 has apothem 2 (class 0 up to 7): ``--radius 2x``
    is the ball of radius 4; it was capped at 2 x min(apothem, 1) = 2."""
    from parallelepipedonn.dual import scaled_radius
    from tests.test_cli import run

    model, x = _interval_net(tmp_path)
    code, out, err = run(capsys, "dual", "--model", str(model), "--input", str(x), "--domain", "0", "10",
                         "--radius", "2x", "--method", "milp", "--json", str(tmp_path / "d.json"))
    assert code == 0, err
    d = json.loads((tmp_path / "d.json").read_text())
    assert 3.99 <= d["radius"] < 4.0 and 7.0 <= d["upper"][0] <= 7.0 + 2e-4  # (the proof margin)
    # an infinite apothem (the whole domain certified): the farthest face, whose ball is the domain
    assert scaled_radius(1.0, float("inf"), np.array([2.0]), Box([0.0], [10.0])) == 8.0
    for radius in ("inf", "1e400x"):
        code, _, err = run(capsys, "dual", "--model", str(model), "--input", str(x), "--domain", "0", "10",
                           "--radius", radius)
        assert code == 2 and "finite positive" in err


def test_recheck_refutes_a_false_empty_claim_and_calls_a_malformed_dual_file_malformed(tmp_path, capsys):
    from tests.test_cli import run

    model, x = _interval_net(tmp_path)
    assert run(capsys, "dual", "--model", str(model), "--input", str(x), "--domain", "0", "10", "--radius", "1",
               "--method", "relaxed", "--json", str(tmp_path / "d.json"))[0] == 0
    d = json.loads((tmp_path / "d.json").read_text())
    assert run(capsys, "recheck", str(tmp_path / "d.json"))[0] == 0 and not d["empty"]
    (tmp_path / "t.json").write_text(json.dumps({**d, "empty": True}))  # a false claim: confirmed before
    code, out, _ = run(capsys, "recheck", str(tmp_path / "t.json"))
    assert code == 5 and "its stored empty True is not its box's False" in out, out
    for change, message in (({"lower": [4.0, 4.0], "upper": [6.0, 6.0]}, "box has 2 dimensions"),
                            ({"radius": float("nan")}, "radius nan"),
                            ({"center": [11.0]}, "centre lies outside its domain")):
        (tmp_path / "t.json").write_text(json.dumps({**d, **change}))
        code, out, err = run(capsys, "recheck", str(tmp_path / "t.json"))
        assert code == 2 and message in err, (change, out, err)


def test_milp_class_extremes_count_a_time_out_that_still_proved_a_bound(net, monkeypatch):
    """A coordinate problem stopped at its time limit keeps its proven bound, and is
    counted as a time-out (it was counted only when it had no bound)."""
    from oracles import MilpOracle

    milp = MilpOracle(net)

    def stopped(label, region, tasks, workers, progress, scale=None):
        for index, maximize in tasks:
            yield index, maximize, "maxTimeLimit", (region.upper if maximize else region.lower)[index], None

    monkeypatch.setattr(milp, "_run_extremes", stopped)
    cb = milp.class_extremes(0, Box.unit(2))
    assert cb.timeouts == cb.milps > 0 and milp.stats.timeouts == cb.timeouts
