"""Pictures of certificates: the certify PNG explains the result (input, closest
counterexample, their difference, which faces of the box bind) for images and for other
inputs, and the compare PNG draws every row on one colour scale."""

from __future__ import annotations

import numpy as np
import pytest

import parallelepipedonn as ppn
from parallelepipedonn.plotting import _faces, image_shape, plot_certificate, plot_comparison
from tests.nets import random_network

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def image_net() -> ppn.Network:
    return random_network(5, [16, 12, 3], input_shape=(4, 4), scale=3.0)


@pytest.fixture(scope="module")
def flat_net() -> ppn.Network:
    return random_network(5, [6, 12, 3], scale=3.0)


def _certify(net, x, algorithm="apothem-kary", label=None) -> ppn.Certificate:
    return ppn.certify(net, x, label, config=ppn.CertifyConfig(algorithm=algorithm, precision=1e-3))


def _titles(fig) -> str:
    return "\n".join(ax.get_title() for ax in fig.axes)


def test_the_certify_png_of_an_image_shows_the_counterexample_its_class_and_the_binding_faces(image_net, tmp_path):
    x = np.random.default_rng(5).random(16)
    cert = _certify(image_net, x)
    assert image_shape(cert.input_shape) == (4, 4)
    assert cert.counterexample is not None and cert.counterexample_class is not None
    fig = plot_certificate(cert, tmp_path / "c.png", network=image_net)
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG
    titles = _titles(fig)
    assert f"closest counterexample: class {cert.counterexample_class}" in titles
    assert "logit margin" in titles and "counterexample − input" in titles and "binding" in titles
    # the difference is drawn on a diverging scale centred at 0
    diff = next(ax for ax in fig.axes if ax.get_title().startswith("counterexample − input")).images[0]
    lo, hi = diff.get_clim()
    assert lo == -hi and hi == pytest.approx(np.abs(cert.counterexample - x).max())
    head = fig._suptitle.get_text()
    assert "CERTIFIED" in head and "apothem" in head and "gap" in head and cert.oracle in head
    assert cert.algorithm in head
    # the apothem-kary box: every face that is not on the domain's edge binds
    faces = _faces(cert)
    inner = ~np.isnan(faces["below"])
    assert faces["tight_below"][inner].all() and not faces["tight_below"][~inner].any()


def test_the_certify_png_of_an_input_that_is_not_an_image_is_drawn_as_profiles(flat_net, tmp_path):
    x = np.random.default_rng(1).random(6)
    assert image_shape((6,)) is None
    for algorithm in ("apothem-kary", "volume-greedy"):
        cert = _certify(flat_net, x, algorithm)
        fig = plot_certificate(cert, tmp_path / f"{algorithm}.png", network=flat_net)
        assert (tmp_path / f"{algorithm}.png").read_bytes()[:8] == PNG
        assert len(fig.axes) == 3 and fig.axes[-1].get_yscale() == "log"  # box, difference, room to each face
        assert all(not ax.images for ax in fig.axes)  # lines and bars, no images


@pytest.mark.parametrize("net_name", ["image_net", "flat_net"])
def test_a_not_robust_certificate_is_drawn_without_a_box(net_name, request, tmp_path):
    net = request.getfixturevalue(net_name)
    x = np.random.default_rng(2).random(net.n_inputs)
    other = (int(net.predict(x)[0]) + 1) % 3
    cert = _certify(net, x, label=other)
    assert cert.status is ppn.Status.NOT_ROBUST and cert.counterexample_class == cert.predicted_label
    fig = plot_certificate(cert, tmp_path / "n.png")  # without the network: no margins
    assert (tmp_path / "n.png").read_bytes()[:8] == PNG
    assert "NOT-ROBUST" in fig._suptitle.get_text()
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert f"class {cert.predicted_label}" in _titles(fig) + "\n".join(legends)


def test_the_compare_png_draws_every_row_on_one_colour_scale(image_net, tmp_path):
    x = np.random.default_rng(5).random(16)
    certs = [_certify(image_net, x, a) for a in ("apothem-kary", "volume-greedy", "box-bisection")]
    fig = plot_comparison(certs, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG
    images = [im for ax in fig.axes for im in ax.images]
    values = {im.get_clim() for im in images if im.get_cmap().name.startswith("gray")}
    widths = {im.get_clim() for im in images if im.get_cmap().name.startswith("magma")}
    assert len(values) == 1 and len(widths) == 1  # one scale for the images, one for the edge widths
    assert widths.pop()[1] == pytest.approx(max(c.box.width.max() for c in certs))
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 2
