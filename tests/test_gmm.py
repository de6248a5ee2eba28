"""Latent Gaussian-mixture classifiers: the fit, the closed-form radii (checked against brute
force and the exact MILP on tiny mixtures), the proven spectral-norm bounds, the ``gmm``
oracle, the ONNX file with the fit in its metadata, certificates and their recheck, the
diagnostics, and the ``gmm`` commands with their one-line errors."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from oracles import make_oracle
from oracles.base import Verdict
from oracles.gmm import GmmOracle, affine_box_min
from parallelepipedonn.box import Box
from parallelepipedonn.certify import CertifyConfig
from parallelepipedonn.errors import ConfigError, ModelError
from parallelepipedonn.gmm.certify import certify_gmm, closed_form
from parallelepipedonn.gmm.diagnostics import (
    binary_isotropic_prediction,
    kl_estimate,
    predicted_certified_accuracy,
    shared_covariance_kl,
)
from parallelepipedonn.gmm.encoders import EncoderTraining, pca_encoder, penultimate_encoder, train_encoder
from parallelepipedonn.gmm.fit import fit_classifier
from parallelepipedonn.gmm.linear import linear_global_l2, linear_l2_radius, linear_linf_radius, linear_radii
from parallelepipedonn.gmm.lipschitz import div_down, margin_lipschitz, spectral_norm_upper
from parallelepipedonn.gmm.mixture import Mixture, fit_mixture
from parallelepipedonn.gmm.model import build_model, classifier_from_onnx, load_gmm, round_to_float32, save_model
from parallelepipedonn.gmm.radii import global_l2_radius, latent_radii
from parallelepipedonn.network import Affine, Network, ReLU
from parallelepipedonn.recheck import Outcome, recheck
from tests.nets import random_network
from tests.test_cli import run


# -- fixtures: tiny synthetic mixtures ---------------------------------------------------------
def blobs(seed: int, n: int, k: int = 3, dim: int = 6, spread: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in [0, 1]^dim around ``k`` class centres (clipped), labels."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).uniform(0.25, 0.75, (k, dim))
    y = np.arange(n) % k
    return np.clip(centres[y] + rng.normal(0, spread, (n, dim)), 0, 1), y


def fitted(tmp_path, encoder: Network, name: str = "m") -> SimpleNamespace:
    x, y = blobs(0, 300)
    xt, yt = blobs(1, 60)
    result = fit_classifier(encoder, x, y, xt, yt, 3, name=name, diagnostic_samples=2000, info={"encoder": name})
    path = tmp_path / f"{name}.onnx"
    save_model(result.model, path)
    return SimpleNamespace(path=path, classifier=load_gmm(path), x=xt, y=yt, result=result)


@pytest.fixture(scope="module")
def linear(tmp_path_factory) -> SimpleNamespace:
    x, _ = blobs(0, 300)
    return fitted(tmp_path_factory.mktemp("gmm"), pca_encoder(x, 3, (6,)), "pca")


@pytest.fixture(scope="module")
def relu(tmp_path_factory) -> SimpleNamespace:
    return fitted(tmp_path_factory.mktemp("gmm"), penultimate_encoder(random_network(3, [6, 12, 8, 3], bias=0.5)),
                  "penultimate")


# -- the fit -------------------------------------------------------------------------------------
def test_the_fit_recovers_a_mixture_and_its_head_is_the_bayes_rule():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 4.0]])
    cov = np.array([[1.0, 0.3], [0.3, 0.5]])
    true = Mixture(means, cov, np.array([0.5, 0.3, 0.2]), 0.0, (1, 1, 1))
    z, y = true.sample(20000, rng)
    fit = fit_mixture(z, y, 3, shrinkage=0.0)
    assert np.allclose(fit.means, means, atol=0.05) and np.allclose(fit.covariance, cov, atol=0.05)
    assert np.allclose(fit.priors, [0.5, 0.3, 0.2], atol=0.02)
    # the affine scores order the classes as the posterior does
    posterior = np.stack([fit.log_density(z[:500], np.full(500, k)) + np.log(fit.priors[k]) for k in range(3)], 1)
    assert np.array_equal(fit.scores(z[:500]).argmax(1), posterior.argmax(1))
    assert np.allclose(fit.scores(z[:500]) - posterior, (fit.scores(z[:500]) - posterior)[:, :1])


def test_shrinkage_pulls_the_covariance_towards_a_multiple_of_the_identity():
    z, y = np.random.default_rng(1).normal(size=(200, 3)) * [1.0, 2.0, 3.0], np.arange(200) % 2
    raw, shrunk = fit_mixture(z, y, 2, shrinkage=0.0), fit_mixture(z, y, 2, shrinkage=0.3)
    expected = 0.7 * raw.covariance + 0.3 * np.trace(raw.covariance) / 3 * np.eye(3)
    assert np.allclose(shrunk.covariance, expected) and shrunk.shrinkage == 0.3


@pytest.mark.parametrize("make, message", [
    (lambda z, y: fit_mixture(z[:, [0, 0, 1]], y, 2, shrinkage=0.0), "singular.*--shrinkage"),
    (lambda z, y: fit_mixture(z[:5], y[:5], 2), "larger than the training set supports"),
    (lambda z, y: fit_mixture(z, np.zeros_like(y), 2), "class 1 has no training latent"),
    (lambda z, y: fit_mixture(z, y, 2, shrinkage=1.5), r"shrinkage must lie in \[0, 1\]"),
])
def test_bad_fits_are_one_line_errors(make, message):
    z, y = np.random.default_rng(2).normal(size=(50, 4)), np.arange(50) % 2
    with pytest.raises(ConfigError, match=message):
        make(z, y)


def test_a_singular_covariance_is_fitted_with_shrinkage():
    z, y = np.random.default_rng(2).normal(size=(50, 4)), np.arange(50) % 2
    fit = fit_mixture(z[:, [0, 0, 1]], y, 2, shrinkage=0.01)
    assert np.linalg.eigvalsh(fit.covariance)[0] > 0


# -- spectral norms and Lipschitz bounds --------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (5, 5), (12, 40), (40, 12), (3, 200)])
def test_the_spectral_norm_bound_is_above_the_norm_and_tight(shape):
    rng = np.random.default_rng(sum(shape))
    for scale in (1e-150, 1.0, 1e150):
        w = rng.normal(size=shape) * scale
        sigma = np.linalg.norm(w, 2)
        bound = spectral_norm_upper(w)
        assert sigma <= bound <= 1.01 * sigma


def test_the_spectral_norm_bound_is_above_what_power_iteration_finds_from_below():
    w = np.random.default_rng(5).normal(size=(30, 50))
    v = np.ones(50)
    for _ in range(100):
        v = w.T @ (w @ v)
        v /= np.linalg.norm(v)
    assert np.linalg.norm(w @ v) <= spectral_norm_upper(w)
    assert spectral_norm_upper(np.zeros((3, 3))) == 0 and spectral_norm_upper(np.full((2, 2), np.inf)) == math.inf


def test_margin_lipschitz_bounds_every_difference_quotient():
    net = random_network(7, [5, 9, 7, 4])
    rng = np.random.default_rng(0)
    bound = margin_lipschitz(net, 2)
    x, y = rng.uniform(-1, 1, (400, 5)), rng.uniform(-1, 1, (400, 5))
    logits_x, logits_y = net.forward(x), net.forward(y)
    for col, j in enumerate(c for c in range(4) if c != 2):
        diff = np.abs((logits_x[:, 2] - logits_x[:, j]) - (logits_y[:, 2] - logits_y[:, j]))
        assert (diff <= bound[col] * np.linalg.norm(x - y, axis=1) + 1e-12).all()


# -- latent radii ---------------------------------------------------------------------------------
def _sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_latent_radii_are_the_exact_distance_to_the_decision_polyhedron():
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=4)
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
    for _ in range(10):
        z = rng.normal(size=3)
        label = int(np.argmax(w @ z + b))
        r = latent_radii(w, b, z, np.zeros(3), label, cov)
        chol = np.linalg.cholesky(cov)
        shells = {"l2": _sphere(rng, 4000, 3),
                  "mahalanobis": _sphere(rng, 4000, 3) @ chol.T,  # the unit sphere of (z' - z)^T Sigma^-1 (z' - z)
                  "linf": np.array(list(itertools.product([-1.0, 1.0], repeat=3)))}
        for norm, shell in shells.items():
            radius = getattr(r, norm)
            inside = z + radius * (1 - 1e-9) * shell
            assert (np.argmax(inside @ w.T + b, axis=1) == label).all(), norm
        # just beyond the L2 radius, towards the nearest face, another class wins
        j = r.closest_class
        a = w[label] - w[j]
        beyond = z - a / np.linalg.norm(a) * r.l2 * (1 + 1e-6)
        assert np.argmax(w @ beyond + b) != label


def test_the_mahalanobis_norm_bound_covers_the_underflow_of_its_quadratic_form():
    """``a = 2^-140`` (a float32 subnormal head) and ``Sigma = 2^-796 (I + 1 1^T)`` in 100
    dimensions: every term of ``a^T Sigma a`` underflows to 0 or one subnormal spacing, the
    exact form is 2525 spacings (its bound was one spacing: a Mahalanobis radius 50 times
    the true one, certified and rechecked)."""
    from fractions import Fraction

    from parallelepipedonn.gmm.radii import head_rows

    d = 100
    w = np.zeros((2, d))
    w[1] = 2.0 ** -140
    cov = 2.0 ** -796 * (np.eye(d) + np.ones((d, d)))
    rows = head_rows(w, np.zeros(2), 1, cov)
    a = [Fraction(v) for v in rows.a[0]]
    exact = sum(a[i] * Fraction(cov[i, j]) * a[j] for i in range(d) for j in range(d))
    assert exact == 2525 * Fraction(2) ** -1074
    assert Fraction(float(rows.norms[2, 0])) ** 2 >= exact
    # an underflowed a_d S_de is then multiplied by a_e: its error scaled by |a_e| (a charge of
    # 2 (d^2 + 4) spacings was 35 times too small here)
    rng = np.random.default_rng(1)
    for k in (10, *rng.integers(2, 50, 40)):
        b = float(10 ** rng.uniform(3, 8))
        a0 = k * b + float(rng.uniform(-1, 1)) * 10 ** float(rng.uniform(0, 4))
        cov = np.array([[1.0, -k], [-k, k * k + float(k != 10)]]) * 5e-324  # singular for k = 10
        rows = head_rows(np.array([[a0, b], [0.0, 0.0]]), np.zeros(2), 0, cov)
        a = [Fraction(v) for v in rows.a[0]]
        exact = sum(a[i] * Fraction(cov[i, j]) * a[j] for i in range(2) for j in range(2))
        assert Fraction(float(rows.norms[2, 0])) ** 2 >= exact, (k, a0, b)


def test_the_latent_error_bound_shrinks_the_radius():
    w, b = np.eye(2), np.zeros(2)
    z = np.array([1.0, 0.0])
    exact = latent_radii(w, b, z, np.zeros(2), 0)
    fuzzy = latent_radii(w, b, z, np.full(2, 0.1), 0)
    assert exact.l2 == pytest.approx(1 / math.sqrt(2), rel=1e-8) and fuzzy.l2 < exact.l2 - 0.1
    assert latent_radii(w, b, np.array([0.5, 0.5]), np.zeros(2), 0).l2 == 0.0  # a tie: nothing proven


# -- a linear classifier: exact radii in the domain -----------------------------------------------
def _affine_net(seed: int, n: int = 4, k: int = 3) -> Network:
    rng = np.random.default_rng(seed)
    return Network((n,), (Affine(rng.normal(size=(k, n)), rng.normal(0, 0.5, k)),))


def _brute_linf(net: Network, x: np.ndarray, label: int, domain: Box) -> float:
    """The exact in-domain L-infinity radius by bisection on the cube's vertex minimum."""
    w, b = net.layers[0].weight, net.layers[0].bias
    lo, hi = 0.0, 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        box = Box.cube(x, mid, domain)
        worst = min(float(np.min(np.where(w[label] - w[j] > 0, box.lower, box.upper) @ (w[label] - w[j])
                                 + b[label] - b[j])) for j in range(len(b)) if j != label)
        lo, hi = (mid, hi) if worst > 0 else (lo, mid)
    return lo


def _brute_l2(net: Network, x: np.ndarray, label: int, domain: Box, rng) -> float:
    """The in-domain L2 radius by dense sampling of misclassified domain points near x."""
    pts = rng.uniform(domain.lower, domain.upper, (400000, x.size))
    margins = net.margins(pts, label)
    bad = pts[margins <= 0]
    return float(np.linalg.norm(bad - x, axis=1).min()) if len(bad) else math.inf


@pytest.mark.parametrize("seed", range(6))
def test_linear_linf_radius_is_exact_in_the_domain(seed):
    net = _affine_net(seed)
    domain = Box.unit(4)
    x = np.random.default_rng(seed).uniform(0, 1, 4)
    label = int(net.predict(x)[0])
    r = linear_linf_radius(net, x, label, domain)
    brute = _brute_linf(net, x, label, domain)
    if math.isinf(brute) or brute > 1.99:
        assert r.radius >= min(brute, 1.0)
        return
    assert r.radius <= r.estimate <= r.upper and r.radius == pytest.approx(brute, rel=1e-6)
    assert net.misclassified(r.counterexample, label)[0] and domain.contains(r.counterexample)
    box = Box.cube(x, r.radius, domain)
    assert make_oracle("gmm", net).verify_box(box.lower, box.upper, label).verified


@pytest.mark.parametrize("seed", range(4))
def test_linear_l2_radius_is_exact_in_the_domain(seed):
    net = Network((2,), (Affine(np.random.default_rng(seed).normal(size=(3, 2)), np.array([0.1, -0.2, 0.05])),))
    domain = Box.unit(2)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, 2)
    label = int(net.predict(x)[0])
    r = linear_l2_radius(net, x, label, domain)
    brute = _brute_l2(net, x, label, domain, rng)
    if math.isinf(r.estimate):
        assert math.isinf(brute)
        return
    assert r.radius <= r.estimate <= r.upper <= brute + 1e-9
    assert r.radius == pytest.approx(brute, abs=5e-3) and r.upper == pytest.approx(r.radius, rel=1e-6)
    # every sampled domain point inside the proven ball keeps the label
    ball = x + r.radius * _sphere(rng, 20000, 2) * rng.uniform(0, 1, (20000, 1)) ** 0.5
    ball = ball[domain.contains_points(ball)]
    assert not net.misclassified(ball, label).any()


def test_linear_counterexamples_lie_in_the_domain_and_within_their_upper_ends():
    """On the domain [0.2, 1]^2 the step to a face, ``x - fl(x - 0.2)``, rounds past it at
    this ``x``: the counterexample is clipped to the domain (still misclassified exactly),
    and each upper end is at least its counterexample's exact distance (L2: squares
    compared in rational arithmetic)."""
    x0 = 0.8506754
    while not x0 - (x0 - 0.2) < 0.2:
        x0 = float(np.nextafter(x0, 1.0))
    x = np.array([x0, 1.0])
    net = Network((2,), (Affine(np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([0.0, x0 + 1.0 - 1.4])),))
    domain = Box(np.full(2, 0.2), np.full(2, 1.0))
    for r, norm in ((linear_linf_radius(net, x, 0, domain), "linf"), (linear_l2_radius(net, x, 0, domain), "l2")):
        cex = r.counterexample
        assert cex is not None and domain.contains(cex) and net.misclassified(cex[None], 0)[0]
        gaps = [Fraction(float(a)) - Fraction(float(b)) for a, b in zip(cex, x)]
        if norm == "linf":
            assert Fraction(r.upper) >= max(abs(g) for g in gaps)
        else:
            assert Fraction(r.upper) ** 2 >= sum(g * g for g in gaps)
        assert r.radius <= r.upper


def test_spectral_norm_bound_beyond_float64_is_inf_not_an_error():
    assert spectral_norm_upper(np.array([[1.5e308, 1.5e308], [1.0, 0.0]])) == math.inf


@pytest.mark.parametrize("seed", range(4))
def test_the_linear_radii_at_once_are_each_radius_on_its_own(seed):
    net = _affine_net(seed, n=6)
    rng = np.random.default_rng(seed)
    domain = Box(np.zeros(6), np.full(6, 0.8))
    for x in rng.uniform(0, 0.8, (5, 6)):
        for label in range(net.n_classes):  # the predicted label and labels the input does not have
            both = linear_radii(net, x, label, domain)
            assert both.global_l2 == linear_global_l2(net, x, label)
            for mine, alone in ((both.linf, linear_linf_radius(net, x, label, domain)),
                                (both.l2, linear_l2_radius(net, x, label, domain))):
                assert (mine.radius, mine.estimate, mine.upper, mine.closest_class) == \
                    (alone.radius, alone.estimate, alone.upper, alone.closest_class)
                assert (mine.counterexample is None) == (alone.counterexample is None)
                if mine.counterexample is not None:
                    assert np.array_equal(mine.counterexample, alone.counterexample)


def test_the_exact_l2_radius_in_the_domain_is_at_least_the_unconstrained_one():
    net = _affine_net(11, n=6)
    x = np.random.default_rng(0).uniform(0, 1, 6)
    label = int(net.predict(x)[0])
    exact = linear_l2_radius(net, x, label, Box.unit(6)).radius
    unconstrained = global_l2_radius(net, x, label, margin_lipschitz(net, label))
    assert unconstrained <= exact * (1 + 1e-9)


def test_linear_radii_on_an_unbounded_domain_skip_steps_that_leave_the_numbers():
    """Public commands refuse an unbounded domain; the library's radii, asked on one, take
    no counterexample candidate with an infinite or NaN coordinate (the exact check of one
    raised "cannot convert NaN to integer ratio"; found by an adversarial review)."""
    encoder = round_to_float32(Network((2,), (Affine(np.eye(2), np.zeros(2)),), "enc"))
    mixture = Mixture(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.eye(2), np.full(3, 1 / 3), 0.0, (10, 10, 10))
    clf = classifier_from_onnx(build_model(encoder, mixture, {"encoder": "pca"}))
    form = closed_form(clf, np.array([1e200, 0.0]), 0, Box(np.full(2, -np.inf), np.full(2, np.inf)))
    assert form is not None


def test_closed_form_linf_radius_is_the_exact_algorithms_milp_distance():
    pytest.importorskip("highspy")
    net = _affine_net(4, n=5)
    oracle = make_oracle("milp", net)
    domain = Box.unit(5)
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(0, 1, 5)
        label = int(net.predict(x)[0])
        r = linear_linf_radius(net, x, label, domain)
        d = oracle.min_distance(x, label, domain)
        assert d.lower <= r.upper * (1 + 1e-9) and r.radius <= d.upper * (1 + 1e-9)
        assert r.radius == pytest.approx(d.upper, rel=1e-4)


@pytest.mark.parametrize("oracle, algorithm", [
    ("crown", "apothem-kary"), ("alpha-crown", "apothem-kary"), ("milp", "apothem-kary"), ("bab", "apothem-kary"),
    ("cascade", "apothem-kary"), ("gmm", "apothem-kary"), (None, "exact"), ("milp", "exact"),
])
def test_every_oracle_and_the_exact_algorithm_certify_a_linear_classifier(linear, oracle, algorithm):
    """A linear classifier is one affine map without ReLU: every oracle reads it, and bound
    propagation is exact on it."""
    from parallelepipedonn.certify import certify

    c = linear.classifier
    x = linear.x[1]
    label = int(c.network.predict(x)[0])
    closed = linear_linf_radius(c.network, x, label, Box.unit(6))
    cert = certify(c.network, x, config=CertifyConfig(oracle=oracle, algorithm=algorithm, precision=1e-4))
    assert cert.status.value == "certified" and cert.apothem <= closed.upper
    assert cert.apothem >= closed.radius * (1 - 1e-3) - 1e-4


# -- the gmm oracle --------------------------------------------------------------------------------
def test_affine_box_min_is_the_minimum_over_the_vertices():
    rng = np.random.default_rng(8)
    a, c = rng.normal(size=(3, 4)), rng.normal(size=3)
    lo = rng.uniform(-1, 0, (2, 4))
    hi = lo + rng.uniform(0, 1, (2, 4))
    low, high, value = affine_box_min(a, c, lo, hi)
    for b in range(2):
        vertices = np.array(list(itertools.product(*zip(lo[b], hi[b]))))
        exact = (vertices @ a.T + c).min(axis=0)
        assert (low[b] <= exact).all() and (exact <= high[b]).all() and np.allclose(value[b], exact)


def test_the_gmm_oracle_decides_every_box_of_a_linear_classifier():
    net = _affine_net(2)
    oracle = GmmOracle(net)
    assert oracle.complete and oracle.settings()["method"] == "closed-form"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 4))
    r = rng.uniform(0, 0.5, (40, 1))
    for label in range(3):
        answers = oracle.verify(np.clip(x - r, 0, 1), np.clip(x + r, 0, 1), label)
        assert all(a.verdict is not Verdict.UNKNOWN for a in answers)
        for a, xi, ri in zip(answers, x, r):
            box = Box.cube(xi, float(ri[0]), Box.unit(4))
            corners = np.array(list(itertools.product(*zip(box.lower, box.upper))))
            assert a.verified == (not net.misclassified(corners, label).any())


def test_the_gmm_oracle_is_crown_on_a_relu_classifier(relu):
    net = relu.classifier.network
    oracle, crown = make_oracle("gmm", net), make_oracle("crown", net)
    assert not oracle.complete and oracle.settings()["method"] == "crown"
    lo, hi = np.clip(relu.x[:5] - 0.02, 0, 1), np.clip(relu.x[:5] + 0.02, 0, 1)
    label = int(net.predict(relu.x[0])[0])
    assert [a.verdict for a in oracle.verify(lo, hi, label)] == [a.verdict for a in crown.verify(lo, hi, label)]


# -- the ONNX file ---------------------------------------------------------------------------------
def test_the_classifier_file_is_an_ordinary_onnx_classifier_with_its_fit(linear, relu):
    from parallelepipedonn.onnx_import import load_onnx

    for m in (linear, relu):
        c = m.classifier
        assert np.array_equal(load_onnx(m.path).forward(m.x), c.network.forward(m.x))
        z = c.encoder.forward(m.x)
        assert np.allclose(c.network.forward(m.x), z @ c.head_weight.T + c.head_bias, atol=1e-9)
        assert c.info["test_accuracy"] > 0.9 and c.info["diagnostics"]["latent_radii"]
    assert linear.classifier.linear and not relu.classifier.linear
    assert relu.classifier.encoder_kind == "penultimate" and relu.classifier.info["encoder_digest"]


def test_a_tampered_file_is_refused(linear, tmp_path):
    model = onnx.load(str(linear.path))
    head = next(t for t in model.graph.initializer if t.name == "gmm_head_B")
    head.float_data[:] = []
    head.raw_data = (onnx.numpy_helper.to_array(head) + 1).astype(np.float32).tobytes()
    with pytest.raises(ModelError, match="not the Bayes rule"):
        classifier_from_onnx(model)
    plain = onnx.load(str(linear.path))
    del plain.metadata_props[:]
    with pytest.raises(ModelError, match="no mixture metadata"):
        classifier_from_onnx(plain)


# -- certificates ---------------------------------------------------------------------------------
def test_a_linear_certificate_is_exact_and_rechecked(linear, tmp_path):
    c = linear.classifier
    x = linear.x[0]
    cert = certify_gmm(c, x, config=CertifyConfig(oracle="gmm", precision=1e-5), model_path=str(linear.path))
    g = cert.gmm
    assert g["linear"] and g["input_linf"]["radius"] <= g["input_linf"]["upper"] <= g["input_linf"]["radius"] * 1.001
    assert cert.apothem <= g["input_linf"]["upper"] and cert.apothem == pytest.approx(g["input_linf"]["radius"],
                                                                                        rel=1e-3)
    assert g["input_l2"]["radius"] >= g["input_l2_global"] * (1 - 1e-9)
    path = tmp_path / "c.json"
    cert.save(path)
    assert recheck(path, oracle="gmm").outcome is Outcome.CONFIRMED
    d = json.loads(path.read_text())
    d["gmm"]["input_linf"]["radius"] = g["input_linf"]["upper"] * 1.01  # beyond the exact radius
    path.write_text(json.dumps(d))
    result = recheck(path, oracle="gmm")
    assert result.outcome is Outcome.REFUTED and "closed form" in result.reason


@pytest.mark.parametrize("tamper, outcome, reason", [
    # a proven upper bound made smaller: not proven by the recomputation (was confirmed)
    (lambda d: d["gmm"].update(encoder_lipschitz=1e-30), Outcome.UNDECIDED, "Lipschitz bound"),
    # distances whose proof (the counterexample) was removed (were confirmed)
    (lambda d: [d["gmm"][k].update(counterexample=None, upper=1e-300) for k in ("input_linf", "input_l2")],
     Outcome.REFUTED, "without the counterexample"),
    (lambda d: d.update(counterexample=None, counterexample_class=None, apothem_upper_bound=1e-300, gap=0.0),
     Outcome.REFUTED, "without the counterexample"),
    (lambda d: d.update(gap=0.0), Outcome.REFUTED, "the stored gap"),
], ids=["lipschitz", "input-upper", "apothem-upper", "gap"])
def test_claims_of_a_linear_certificate_without_their_proof_are_not_confirmed(linear, tmp_path, tamper, outcome,
                                                                              reason):
    cert = certify_gmm(linear.classifier, linear.x[0], config=CertifyConfig(oracle="gmm", precision=1e-5),
                       model_path=str(linear.path))
    assert cert.counterexample is not None and cert.gap > 0
    path = tmp_path / "c.json"
    cert.save(path)
    d = json.loads(path.read_text())
    tamper(d)
    path.write_text(json.dumps(d))
    result = recheck(path, oracle="gmm")
    assert result.outcome is outcome and reason in result.reason, result.reason


def test_a_relu_certificate_is_below_the_exact_apothem_and_rechecked(relu, tmp_path):
    c = relu.classifier
    for x in relu.x[:3]:
        cert = certify_gmm(c, x, config=CertifyConfig(oracle="gmm", precision=1e-4), model_path=str(relu.path))
        exact = certify_gmm(c, x, config=CertifyConfig(algorithm="exact", oracle="milp", precision=1e-5))
        assert cert.apothem <= exact.apothem_upper_bound + 1e-12
        assert cert.gmm["input_linf"] is None and cert.gmm["input_l2_global"] <= exact.apothem_upper_bound * 3
        form = closed_form(c, x, cert.label, Box.unit(6))
        rng = np.random.default_rng(0)
        ball = x + form.input_l2_global * _sphere(rng, 5000, 6) * rng.uniform(0, 1, (5000, 1))
        assert not c.network.misclassified(ball, cert.label).any()
    path = tmp_path / "r.json"
    cert.save(path)
    assert recheck(path, oracle="crown+alpha-crown+bab").outcome is Outcome.CONFIRMED
    d = json.loads(path.read_text())
    d["gmm"]["latent"]["l2"] = 1e6
    path.write_text(json.dumps(d))
    assert recheck(path, oracle="crown+alpha-crown+bab").outcome is Outcome.UNDECIDED


# -- encoders ---------------------------------------------------------------------------------------
def test_the_trained_encoder_is_reproducible():
    x, y = blobs(0, 120)
    config = EncoderTraining(hidden=(8,), latent_dim=3, epochs=2, batch_size=30, epsilon=0.05)
    a, b = (train_encoder(x, y, 3, (6,), config) for _ in range(2))
    assert a.digest == b.digest and a.n_classes == 3
    with pytest.raises(ConfigError, match="at least the number of classes"):
        train_encoder(x, y, 3, (6,), EncoderTraining(hidden=(8,), latent_dim=2, epochs=1))


def test_pca_and_penultimate_encoders():
    x, _ = blobs(0, 100)
    enc = pca_encoder(x, 2, (6,))
    assert enc.n_classes == 2 and np.allclose(enc.forward(x).mean(axis=0), 0, atol=1e-5)
    with pytest.raises(ConfigError, match="larger than the training set supports"):
        pca_encoder(x, 7, (6,))
    with pytest.raises(ModelError, match="no hidden layer"):
        penultimate_encoder(_affine_net(0))


# -- diagnostics --------------------------------------------------------------------------------------
def test_the_predicted_certified_accuracy_matches_the_binary_isotropic_formula():
    sigma, delta = 0.7, 2.0
    mixture = Mixture(np.array([[0.0, 0.0], [delta, 0.0]]), sigma ** 2 * np.eye(2), np.array([0.5, 0.5]), 0.0, (1, 1))
    w, b = mixture.head
    rhos = np.array([0.0, 0.3, 0.8])
    predicted = predicted_certified_accuracy(mixture, w, b, rhos, samples=40000)
    expected = [binary_isotropic_prediction(delta, sigma, r) for r in rhos]
    assert np.allclose(predicted, expected, atol=0.01)


def test_the_kl_estimate_is_near_zero_on_the_mixture_and_infinite_on_degenerate_latents():
    mixture = Mixture(np.array([[0.0, 0.0], [3.0, 0.0]]), np.eye(2), np.array([0.5, 0.5]), 0.0, (1, 1))
    z, y = mixture.sample(4000, np.random.default_rng(0))
    kl = kl_estimate(z, y, mixture)
    assert abs(kl.value) < 0.05 and kl.pinsker < 0.2
    relu = np.maximum(z, 0.0)
    assert kl_estimate(relu, y, mixture).value == math.inf and "atom" in kl_estimate(relu, y, mixture).reason


# -- the commands ---------------------------------------------------------------------------------
def test_gmm_fit_and_certify_on_mnist(tmp_path, capsys):
    out, j = tmp_path / "g.onnx", tmp_path / "c.json"
    code, text, err = run(capsys, "gmm", "fit", "--dataset", "mnist", "--encoder", "pca", "--latent-dim", "8",
                          "--out", str(out))
    assert code == 0, err
    assert "test accuracy" in text and load_gmm(out).latent_dim == 8
    code, text, err = run(capsys, "gmm", "certify", "--model", str(out), "--dataset", "mnist", "--index", "1",
                          "--json", str(j), "--norm", "l2")
    assert code == 0, err
    assert "input L∞" in text and "L2 (the best proven input radius)" in text
    from tests.test_certificate_schema import conforms

    d = json.loads(j.read_text())
    conforms(d, "certificate")
    assert d["gmm"]["linear"] and d["oracle"] == "gmm"
    code, text, err = run(capsys, "recheck", str(j), "--oracle", "gmm")
    assert code == 0, text + err


@pytest.mark.parametrize("argv, message", [
    (["gmm", "certify", "--model", "DEFAULT_NET", "--dataset", "mnist", "--index", "0"], "no mixture metadata"),
    (["gmm", "fit", "--dataset", "mnist", "--encoder", "pca", "--latent-dim", "900", "--out", "OUT"],
     "larger than the training set supports"),
    (["gmm", "fit", "--dataset", "mnist", "--encoder", "penultimate", "--model", "DEEP_NET", "--shrinkage", "0",
      "--out", "OUT"], "singular"),
    (["gmm", "fit", "--dataset", "mnist", "--encoder", "penultimate", "--model", "RESNET", "--out", "OUT"],
     "needs a ReLU network of dense layers"),
    (["gmm", "fit", "--dataset", "mnist", "--encoder", "pca", "--model", "DEFAULT_NET", "--out", "OUT"],
     "takes none"),
    (["gmm", "fit", "--dataset", "mnist", "--encoder", "pca", "--latent-dim", "1", "--out", "OUT"],
     "latent dimension must be >= 2"),
    (["gmm", "fit", "--dataset", "mnist", "--encoder", "trained", "--epochs", "0", "--out", "OUT"],
     "epochs, batch size, learning rate must be positive"),
])
def test_gmm_bad_input_is_a_one_line_error_exit_2(argv, message, tmp_path, capsys):
    from parallelepipedonn.models import default_model_path

    names = {"DEFAULT_NET": str(default_model_path("mnist")), "DEEP_NET": str(default_model_path("mnist", "deep")),
             "RESNET": str(default_model_path("mnist", "resnet")), "OUT": str(tmp_path / "o.onnx")}
    code, _out, err = run(capsys, *[names.get(a, a) for a in argv])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_norm_bounds_of_heads_whose_squares_underflow_stay_above_the_exact_norms():
    """Rows whose entries are all below 1e-154 have squares that underflow to 0: the L2 norm
    bounds of the head (radii, the one-layer rows, the Lipschitz bound's last layer) are still
    at least the exact norms (rationals), not a smallest subnormal."""
    from fractions import Fraction

    from parallelepipedonn.gmm.lipschitz import margin_lipschitz
    from parallelepipedonn.gmm.radii import head_rows
    from parallelepipedonn.network import Affine, Network

    w = np.full((3, 8), 1e-170)
    w[1] *= -1
    w[2] = 3e-171
    rows = w[0] - w[1:]
    exact = [sum(Fraction(float(x)) ** 2 for x in r) for r in rows]
    l2 = head_rows(w, np.zeros(3), 0).norms[0]
    assert all(Fraction(float(n)) ** 2 >= e for n, e in zip(l2, exact))
    net = Network.from_layers((8,), [Affine(w, np.zeros(3))])
    bound = margin_lipschitz(net, 0)
    assert all(Fraction(float(b)) ** 2 >= e for b, e in zip(np.atleast_1d(bound), exact))


def test_a_quotient_beyond_float64_is_the_largest_float_not_an_infinite_radius():
    """``margin / Lipschitz`` overflowing float64 is a finite exact number: the radius built
    on it is the largest float, a lower bound; ``inf`` only where the bound is 0."""
    q = div_down(np.array([2e299, 1.0, 0.0, 1.0]), np.array([1e-10, 2**-1074, 1.0, 0.0]))
    assert q[0] == q[1] == np.finfo(np.float64).max and q[2] == 0 and q[3] == math.inf
    assert Fraction(float(q[1])) <= Fraction(1) / Fraction(2.0**-1074)
    w = np.array([[0.0, 0.0], [2.0**-1074, 2.0**-1074]])  # rows differing by subnormals: a finite face
    lat = latent_radii(w, np.array([1.0, 0.0]), np.zeros(2), np.zeros(2), 0)
    assert math.isfinite(lat.linf) and math.isfinite(lat.l2)
    # the face's exact point (2^1074, 2^1074): class 1 scores 2, class 0 scores 1
    assert Fraction(lat.linf) < Fraction(2) ** 1074


def test_a_stored_lipschitz_bound_below_the_recomputed_one_is_not_confirmed(relu, tmp_path):
    c = relu.classifier
    cert = certify_gmm(c, relu.x[0], config=CertifyConfig(oracle="gmm", precision=1e-3), model_path=str(relu.path))
    path = tmp_path / "c.json"
    cert.save(path)
    d = json.loads(path.read_text())
    d["gmm"]["encoder_lipschitz"] = float(np.nextafter(c.encoder_lipschitz, 0))  # one unit below the proven bound
    path.write_text(json.dumps(d))
    result = recheck(path, oracle="gmm")
    assert result.outcome is Outcome.UNDECIDED and "Lipschitz bound" in result.reason


def test_the_head_check_holds_at_every_scale_and_a_head_too_big_for_float32_is_refused():
    rng = np.random.default_rng(0)
    enc = round_to_float32(Network((3,), (Affine(rng.normal(size=(2, 3)) * 1e34, np.full(2, 1e35)), ReLU(),
                                          Affine(np.eye(2), np.zeros(2))), "enc"))
    x = rng.uniform(0, 1, (300, 3))
    mix = fit_mixture(enc.forward(x), (x[:, 0] > 0.5).astype(np.int64), 2)
    assert np.abs(mix.head[0]).max() < 1e-30  # latents ~1e35: Bayes-rule weights far below 1e-30
    model = build_model(enc, mix, {"encoder": "test"}, "t")
    classifier_from_onnx(model, "t")
    head = next(t for t in model.graph.initializer if t.name == "gmm_head_W")
    head.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(head), head.name))
    with pytest.raises(ModelError, match="not the Bayes rule"):
        classifier_from_onnx(model, "t")
    tiny = round_to_float32(Network((3,), (Affine(rng.normal(size=(2, 3)) * 1e-40, np.zeros(2)), ReLU(),
                                           Affine(np.eye(2), np.zeros(2))), "enc"))
    with pytest.raises(ConfigError, match="does not fit float32"):
        build_model(tiny, fit_mixture(tiny.forward(x), (x[:, 0] > 0.5).astype(np.int64), 2), {}, "t")


def test_a_stored_singular_covariance_is_a_model_error(linear):
    model = onnx.load(str(linear.path))
    prop = next(p for p in model.metadata_props if p.key == "gmm_mixture")
    d = json.loads(prop.value)
    d["covariance"] = np.diag([1.0] + [0.0] * (len(d["covariance"]) - 1)).tolist()
    prop.value = json.dumps(d)
    with pytest.raises(ModelError, match="covariance in its metadata is singular"):
        classifier_from_onnx(model)


def test_per_class_covariances_give_each_class_its_distance_from_the_shared_covariance():
    z, y = blobs(0, 600, k=2, dim=3)
    z[y == 1] = z[y == 1].mean(axis=0) + 3 * (z[y == 1] - z[y == 1].mean(axis=0))  # class 1 three times wider
    mix = fit_mixture(z, y, 2, per_class=True)
    kl = shared_covariance_kl(mix)
    assert kl is not None and len(kl) == 2 and all(v > 0 for v in kl)
    same = replace(mix, class_covariances=np.stack([mix.covariance, mix.covariance]))
    assert np.allclose(shared_covariance_kl(same), 0, atol=1e-12)
    # an isotropic case in closed form: KL(N(0, a I) || N(0, I)) = d (a - 1 - ln a) / 2
    iso = replace(mix, covariance=np.eye(3), class_covariances=np.stack([2 * np.eye(3), np.eye(3)]))
    assert shared_covariance_kl(iso)[0] == pytest.approx(1.5 * (2 - 1 - math.log(2)), rel=1e-12)
    assert shared_covariance_kl(fit_mixture(z, y, 2)) is None


@pytest.mark.parametrize("key, value, outcome", [
    ("encoder", "pca", Outcome.REFUTED), ("latent_dim", 99, Outcome.REFUTED),
    ("latent_label", 2, Outcome.UNDECIDED), ("closest_class", 0, Outcome.UNDECIDED)])
def test_the_descriptive_fields_of_a_closed_form_are_rechecked(relu, tmp_path, key, value, outcome):
    c = relu.classifier
    cert = certify_gmm(c, relu.x[0], config=CertifyConfig(oracle="gmm", precision=1e-3), model_path=str(relu.path))
    path = tmp_path / "c.json"
    cert.save(path)
    d = json.loads(path.read_text())
    part = d["gmm"]["latent"] if key == "closest_class" else d["gmm"]
    if part[key] == value:
        value = 1
    part[key] = value
    path.write_text(json.dumps(d))
    assert recheck(path, oracle="gmm").outcome is outcome
