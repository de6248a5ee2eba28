"""The GPU path: on CUDA, bound propagation gives the CPU's bounds (up to the order of
summation) in float64 and float32, without an error; the device keeps the subnormal
numbers the error model assumes; torch's TF32 settings change no bound; the attack and
the certification searches run there. Skipped where torch sees no GPU (CI has none):
``benchmarks/device_check.sh`` runs this module, and the CUDA cases of the
device-parametrised specifications (``tests/devices.py``), on a GPU machine."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import parallelepipedonn as ppn
from oracles import AttackOracle, Verdict
from oracles.crown import CrownOracle
from parallelepipedonn.certify import CertifyConfig
from tests.graph_nets import Builder, mixed, residual, small_cnn
from tests.nets import random_network
from tests.test_float_soundness import _underflow_net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cifar_like():
    """Two convolutions (the second of stride 2: windowed intermediate bounds), a dense layer."""
    b = Builder((3, 16, 16), seed=0)
    h = b.relu(b.conv(0, 8, 3, pad=1))
    h = b.relu(b.conv(h, 8, 4, stride=2, pad=1))
    b.dense(b.relu(b.dense(b.flatten(h), 20)), 10)
    return b.graph("cifar-like")


NETS = {"chain": lambda: random_network(0, [12, 30, 20, 4]), "small_cnn": small_cnn, "residual": residual,
        "mixed": mixed, "cifar_like": _cifar_like}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", NETS)
def test_cuda_bounds_are_the_cpu_bounds_up_to_summation_order(name, dtype):
    net = NETS[name]()
    x = np.random.default_rng(0).random((6, net.n_inputs))
    label = int(net.predict(x[:1])[0])
    lo, hi = np.clip(x - 0.01, 0, 1), np.clip(x + 0.01, 0, 1)
    cpu = CrownOracle(net, dtype=dtype).margin_lower_bounds(lo, hi, label)
    gpu = CrownOracle(net, dtype=dtype, device="cuda")
    got = gpu.margin_lower_bounds(lo, hi, label)
    assert np.isfinite(got).all() and gpu.device.type == "cuda"
    tol = 1e-9 if dtype == "float64" else 1e-3
    np.testing.assert_allclose(got, cpu, rtol=tol, atol=tol * (1 + np.abs(cpu).max()))
    gpu.verify(lo, hi, label)
    assert gpu.stats.errors == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_gpu_keeps_subnormal_numbers_in_products_sums_and_convolutions(dtype):
    """The error model charges an underflowing product one subnormal spacing: a device that
    flushed subnormal results to zero (an error up to the smallest normal number) would
    break it. ``2^-e1 * 2^-e2`` is subnormal and exact in each dtype."""
    e1, e2 = (500, 560) if dtype == torch.float64 else (70, 70)
    want = 2.0 ** -(e1 + e2)
    a = torch.full((4, 4), 2.0**-e1, dtype=dtype, device="cuda")
    b = torch.full((4, 4), 2.0**-e2, dtype=dtype, device="cuda")
    torch.backends.cudnn.enabled, saved = False, torch.backends.cudnn.enabled
    try:
        conv = torch.nn.functional.conv2d(a.view(1, 1, 4, 4), b[:1, :1].view(1, 1, 1, 1))
    finally:
        torch.backends.cudnn.enabled = saved
    assert (a * b == want).all()
    assert ((a[:, :1] @ b[:1, :]) == want).all()  # one-term products (cuBLAS)
    assert (conv == want).all()
    assert ((a * 0.5) == 2.0 ** -(e1 + 1)).all() and (torch.full((2,), want, dtype=dtype, device="cuda") * 1.0 == want).all()


@pytest.mark.parametrize("graph", [False, True], ids=["chain", "graph"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_bounds_stay_below_the_exact_margin_where_a_product_underflows(dtype, graph):
    net, lo, hi, exact = _underflow_net(dtype, graph)
    oracle = CrownOracle(net, dtype=dtype, device="cuda")
    assert Fraction(float(oracle.margin_lower_bounds(lo[None], hi[None], 0)[0, 0])) <= exact
    assert oracle.verify_box(lo, hi, 0).verdict is not Verdict.VERIFIED


@pytest.mark.parametrize("name", ["chain", "cifar_like"])
def test_tf32_settings_change_no_cuda_bound(name):
    net = NETS[name]()
    x = np.random.default_rng(1).random((4, net.n_inputs))
    lo, hi = np.clip(x - 0.01, 0, 1), np.clip(x + 0.01, 0, 1)
    oracle = CrownOracle(net, dtype="float32", device="cuda")
    reference = oracle.margin_lower_bounds(lo, hi, 0)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        np.testing.assert_array_equal(oracle.margin_lower_bounds(lo, hi, 0), reference)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("name", ["chain", "small_cnn"])
def test_the_attack_on_cuda_finds_counterexamples_that_are_confirmed(name):
    net = NETS[name]()
    x = np.random.default_rng(2).random((8, net.n_inputs))
    label = int(net.predict(x[:1])[0])
    oracle = AttackOracle(net, device="cuda")
    answers = oracle.verify(np.clip(x - 0.5, 0, 1), np.clip(x + 0.5, 0, 1), label)
    assert oracle.stats.errors == 0 and any(a.falsified for a in answers)
    assert all(net.misclassified(a.counterexample, label)[0] for a in answers if a.falsified)


@pytest.mark.parametrize("algorithm", ["apothem-kary", "volume-gradient"])
def test_a_certification_on_cuda_is_the_cpu_one(algorithm):
    g = small_cnn()
    x = np.random.default_rng(0).random(g.n_inputs)
    certs = [ppn.certify(g, x, config=CertifyConfig(oracle="crown", algorithm=algorithm, device=device))
             for device in ("cpu", "cuda")]
    assert certs[1].status.value == "certified" and certs[1].apothem > 0
    if algorithm == "apothem-kary":  # (the volume search's Adam steps may part by rounding)
        assert abs(certs[1].apothem - certs[0].apothem) <= 1e-6 * certs[0].apothem
    lo, hi = certs[1].box.lower, certs[1].box.upper
    pts = lo + (hi - lo) * np.random.default_rng(1).random((500, g.n_inputs))
    assert not g.misclassified(pts, certs[1].label).any()


def test_the_exact_search_and_the_relaxed_dual_run_on_cuda():
    """``--device cuda`` reaches the exact search's CROWN floor and the dual's attack and
    bound propagation (they ran on the CPU whatever the device, before)."""
    from parallelepipedonn.dual import dual_box

    net = random_network(1001, [6, 12, 12, 3], scale=3.0)
    x = np.random.default_rng(1).random(6)
    certs = [ppn.certify(net, x, config=CertifyConfig(algorithm="exact", device=device)) for device in ("cpu", "cuda")]
    assert certs[1].status.value == "certified" and certs[1].exact is True
    assert abs(certs[1].apothem - certs[0].apothem) <= 1e-3 * certs[0].apothem
    label = certs[1].label
    duals = [dual_box(net, label, x=x, radius=0.5, method="relaxed", device=device) for device in ("cpu", "cuda")]
    np.testing.assert_allclose(duals[1].box.lower, duals[0].box.lower, atol=1e-9)
    np.testing.assert_allclose(duals[1].box.upper, duals[0].box.upper, atol=1e-9)
    pts = duals[1].region.lower + (duals[1].region.upper - duals[1].region.lower) * \
        np.random.default_rng(2).random((4000, 6))
    inside = pts[net.predict(pts) == label]
    assert duals[1].box.contains_points(inside).all()
