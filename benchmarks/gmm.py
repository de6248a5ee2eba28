"""Latent Gaussian-mixture classifiers (``parallelepipedonn gmm``): exactness of the closed
forms, soundness of every certificate, time per certificate, and certified accuracy beside
the default networks.

    python -m benchmarks.gmm [--quick] [--parts exact,sound,timing,accuracy] [--out DIR]

* ``exact``: on the PCA (linear) classifier, the closed-form L-infinity radius against the
  exact algorithm's (``milp`` oracle's distance query, ``--algorithm exact``) and the
  closed-form L2 radius against HiGHS's quadratic program (the projection onto each
  class's half-space within [0, 1]^n), on ``--check`` test inputs: relative differences.
* ``sound``: on the other encoders, every certificate (the default search's box with the
  ``gmm`` oracle; the closed-form input L2 ball) against the exact apothem (``milp``), the
  counterexamples' L2 distances, uniform sampling, and PGD attacks (L-infinity in the box,
  L2 in the ball) inside each: no misclassified point may be found.
* ``timing``: the closed-form part of ``gmm certify`` per input (after the per-model
  precomputation of the Lipschitz bounds), and the whole certificate.
* ``accuracy``: clean accuracy and certified accuracy at L-infinity radii (0.01, 0.02,
  0.05, 0.1, 0.3: the ``gmm`` oracle's verdict on the cube; the default nets by CROWN, and
  by the exact algorithm on the first ``--exact`` inputs, and their upper bound, what PGD
  does not falsify, on those inputs) and at L2 radii (0.25 ... 2.0
  and 1.58: the closed forms; the default nets by the same global Lipschitz bound), the
  mixture's predicted against the measured latent certified accuracy, the KL estimate.

Writes ``gmm.md`` (the README block) and per-part CSV files under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import RESULTS, machine, markdown_table, write_csv
from benchmarks.paper_runs import verify_cubes
from oracles import AttackOracle, make_oracle
from oracles.base import Verdict
from parallelepipedonn.gmm.certify import certify_gmm, closed_form
from parallelepipedonn.gmm.lipschitz import margin_lipschitz
from parallelepipedonn.gmm.model import GmmClassifier, load_gmm
from parallelepipedonn.gmm.radii import global_l2_radius
from parallelepipedonn.models import DEFAULT_GMM_MODELS

#: The classifiers measured: the checkout's own ``data/`` (``gmm fit`` wrote them there).
MODELS = Path(__file__).resolve().parents[1] / "data"


def default_gmm_path(dataset: str, encoder: str) -> Path:
    path = MODELS / DEFAULT_GMM_MODELS[dataset][encoder]
    if not path.is_file():
        raise ppn.ConfigError(f"{path} is missing: write it with parallelepipedonn gmm fit")
    return path

PARTS = ("exact", "sound", "timing", "accuracy")
ENCODERS = ("pca", "penultimate", "trained")
LINF = (0.01, 0.02, 0.05, 0.1, 0.3)
L2 = (0.25, 0.5, 1.0, 1.58, 2.0)
#: Published MNIST results, not rerun here (test set: MNIST's own 10,000 images).
PUBLISHED = [
    ("GloRo nets (Leino et al. 2021)", "L2", 1.58, "62.8%", "deterministic"),
    ("randomized smoothing (Cohen et al. 2019, σ = 0.5)", "L2", 1.58, "61.8%", "probabilistic"),
    ("CROWN-IBP (Zhang et al. 2020)", "L∞", 0.3, "about 93%", "deterministic"),
]


def _quiet_highs():
    """HiGHS prints a banner per instance: keep it off the progress output."""
    return contextlib.redirect_stdout(io.StringIO())


def _data(dataset: str, n: int | None):
    data = ppn.load_dataset(dataset, "test")
    m = len(data) if n is None else min(n, len(data))
    return data.images[:m].reshape(m, -1).astype(np.float64), data.labels[:m].astype(np.int64)


def _models(dataset: str) -> dict[str, GmmClassifier]:
    out = {}
    for enc in ENCODERS:
        try:
            out[enc] = load_gmm(default_gmm_path(dataset, enc))
        except ppn.ConfigError:
            continue
    return out


# ------------------------------------------------------------------------ exact (linear)
def qp_l2_distance(a: np.ndarray, c: float, x: np.ndarray) -> float:
    """HiGHS: ``min ||x' - x||_2`` subject to ``a x' + c <= 0``, ``x'`` in [0, 1]^n (inf if
    infeasible)."""
    import highspy

    n = x.size
    with _quiet_highs():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    for opt in ("primal_feasibility_tolerance", "dual_feasibility_tolerance"):
        h.setOptionValue(opt, 1e-10)
    h.addVars(n, np.zeros(n), np.ones(n))
    h.changeColsCost(n, np.arange(n, dtype=np.int32), -x)
    h.addRow(-highspy.kHighsInf, -c, n, np.arange(n, dtype=np.int32), a)
    h.passHessian(n, n, highspy.HessianFormat.kTriangular, np.arange(n + 1, dtype=np.int32),
                  np.arange(n, dtype=np.int32), np.ones(n))
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return math.inf
    if status != highspy.HighsModelStatus.kOptimal:
        return math.nan
    return float(np.linalg.norm(np.array(h.getSolution().col_value) - x))


def part_exact(dataset: str, n: int, bar: bool) -> list[dict[str, Any]]:
    c = load_gmm(default_gmm_path(dataset, "pca"))
    net = c.network
    xs, ys = _data(dataset, n)
    dom = ppn.Box.unit(net.n_inputs)
    config = ppn.CertifyConfig(algorithm="exact", oracle="milp", precision=1e-6, falsifier="attack")
    from parallelepipedonn.certify import build_oracles

    oracle, falsifier = build_oracles(net, config)
    rows = []
    w, b = net.layers[0].weight, net.layers[0].bias
    for i in tqdm(range(len(xs)), desc=f"{dataset} pca: exact", disable=not bar):
        x = xs[i]
        label = int(net.predict(x)[0])
        form = closed_form(c, x, label, dom)
        start = time.perf_counter()
        with _quiet_highs():
            cert = ppn.certify(net, x, label, config=config, oracle=oracle, falsifier=falsifier)
        milp_s = time.perf_counter() - start
        milp_lo, milp_hi = cert.apothem, cert.apothem_upper_bound
        start = time.perf_counter()
        qp = min(qp_l2_distance(w[label] - w[j], b[label] - b[j], x) for j in range(len(b)) if j != label)
        qp_s = time.perf_counter() - start
        linf, l2 = form.input_linf, form.input_l2
        rows.append({"dataset": dataset, "input": i, "label": label, "true_label": int(ys[i]),
                     "linf_closed_form": linf.radius, "linf_upper": linf.upper, "linf_milp_lower": milp_lo,
                     "linf_milp_upper": milp_hi, "linf_milp_exact": cert.exact,
                     "linf_rel_diff": abs(linf.radius - milp_hi) / milp_hi if milp_hi else 0.0,
                     "l2_closed_form": l2.radius, "l2_upper": l2.upper, "l2_qp": qp,
                     "l2_rel_diff": abs(l2.radius - qp) / qp if qp and math.isfinite(qp) else 0.0,
                     "closed_form_ms": 1e3 * form.seconds, "milp_s": milp_s, "qp_s": qp_s})
    return rows


def exact_markdown(rows: list[dict[str, Any]]) -> str:
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == ds]
        linf, l2 = [r["linf_rel_diff"] for r in rs], [r["l2_rel_diff"] for r in rs]
        out.append([ds, len(rs), f"{max(linf):.1e}", f"{statistics.median(linf):.1e}",
                    sum(v <= 1e-4 for v in linf), f"{max(l2):.1e}", f"{statistics.median(l2):.1e}",
                    sum(v <= 1e-4 for v in l2), f"{statistics.median(r['milp_s'] for r in rs):.2f}",
                    f"{statistics.median(r['closed_form_ms'] for r in rs):.2f}"])
        within = sum(r["linf_milp_lower"] <= r["linf_closed_form"] <= r["linf_milp_upper"] for r in rs)
        out[-1][5:5] = [f"{within}/{len(rs)}"]
    return ("Closed form against the exact algorithms on the PCA classifier (linear): L∞ against `--algorithm exact "
            "--oracle milp` (precision 1e-6, relative; its proven lower bound and confirmed counterexample's distance "
            "bracket the exact radius), L2 against HiGHS's quadratic program (the projection onto "
            "each class's half-space within [0,1]^784). Relative difference of the proven closed-form radius and the "
            "exact one (for L∞, milp's upper end).\n\n" + markdown_table(
                ["dataset", "inputs", "L∞ max rel. diff", "L∞ median", "L∞ within 1e-4", "L∞ inside milp's bracket",
                 "L2 max rel. diff",
                 "L2 median", "L2 within 1e-4", "milp median s", "closed form median ms"], out) + "\n")


# ------------------------------------------------------------------------ sound (non-linear)
def _ball_samples(rng: np.random.Generator, x: np.ndarray, r: float, k: int) -> np.ndarray:
    v = rng.normal(size=(k, x.size))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.clip(x + r * v * rng.uniform(0, 1, (k, 1)) ** (1 / x.size), 0, 1)  # clipping moves points inwards


def l2_pgd(net: ppn.Network, x: np.ndarray, label: int, radius: float, steps: int = 50, restarts: int = 5,
           seed: int = 0) -> np.ndarray:
    """Points of the L2 ball of ``radius`` around ``x`` within [0, 1]^n that PGD finds with
    the smallest margin (one per restart; unconfirmed)."""
    module = net.to_torch()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.tensor(x)[None].repeat(restarts, 1)
    d = torch.randn(restarts, x.size, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True) * radius * 0.5
    for k in range(steps):
        d.requires_grad_(True)
        logits = module((x0 + d).clamp(0, 1))
        others = torch.cat([logits[:, :label], logits[:, label + 1:]], dim=1).max(dim=1).values
        margin = (logits[:, label] - others).sum()
        grad, = torch.autograd.grad(margin, d)
        with torch.no_grad():
            step = radius * 0.5 * (1 - k / steps) + radius * 0.02
            d = d - step * grad / grad.norm(dim=1, keepdim=True).clamp(min=1e-12)
            d = (x0 + d).clamp(0, 1) - x0
            norm = d.norm(dim=1, keepdim=True)
            d = d * torch.clamp(radius / norm.clamp(min=1e-300), max=1.0)
    return (x0 + d).clamp(0, 1).detach().numpy()


def part_sound(dataset: str, n: int, bar: bool) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    xs, _ys = _data(dataset, n)
    for enc, c in _models(dataset).items():
        if c.linear:
            continue
        net = c.network
        exact_cfg = ppn.CertifyConfig(algorithm="exact", oracle="milp", precision=1e-4)
        from parallelepipedonn.certify import build_oracles

        exact_oracle, exact_falsifier = build_oracles(net, exact_cfg)
        attack = AttackOracle(net, steps=100, restarts=20, seed=1)
        for i in tqdm(range(len(xs)), desc=f"{dataset} {enc}: soundness", disable=not bar):
            x = xs[i]
            cert = certify_gmm(c, x)
            if cert.box is None:
                continue
            label = cert.label
            with _quiet_highs():
                exact = ppn.certify(net, x, label, config=exact_cfg, oracle=exact_oracle, falsifier=exact_falsifier)
            r2 = float(cert.gmm["input_l2_global"])
            cexs = [p for p in (exact.counterexample, cert.counterexample) if p is not None]
            cex_l2 = min((float(np.linalg.norm(p - x)) for p in cexs), default=math.inf)
            box = cert.box
            inside = np.concatenate([rng.uniform(box.lower, box.upper, (2000, x.size)),
                                     np.where(rng.random((500, x.size)) < 0.5, box.lower, box.upper)])
            ball = _ball_samples(rng, x, r2, 2000) if r2 > 0 else x[None]
            pgd_box = attack.verify_box(box.lower, box.upper, label)
            pgd_ball = l2_pgd(net, x, label, r2) if r2 > 0 else x[None]
            rows.append({"dataset": dataset, "encoder": enc, "input": i, "label": label,
                         "box_apothem": cert.apothem, "exact_lower": exact.apothem,
                         "exact_upper": exact.apothem_upper_bound, "exact": exact.exact,
                         "box_le_exact": cert.apothem <= (exact.apothem_upper_bound or math.inf) * (1 + 1e-12),
                         "l2_global": r2, "closest_cex_l2": cex_l2, "l2_le_cex": r2 <= cex_l2,
                         "box_samples_misclassified": int(net.misclassified(inside, label).sum()),
                         "ball_samples_misclassified": int(net.misclassified(ball, label).sum()),
                         "box_pgd_falsified": pgd_box.verdict is Verdict.FALSIFIED,
                         "ball_pgd_misclassified": int(net.misclassified(pgd_ball, label).sum()),
                         "ball_pgd_min_margin": float(net.margins(pgd_ball, label).min())})
    return rows


def sound_markdown(rows: list[dict[str, Any]]) -> str:
    table = []
    for key in dict.fromkeys((r["dataset"], r["encoder"]) for r in rows):
        rs = [r for r in rows if (r["dataset"], r["encoder"]) == key]
        table.append([*key, len(rs), f"{sum(r['box_le_exact'] for r in rs)}/{len(rs)}",
                      f"{statistics.median(r['box_apothem'] / r['exact_upper'] for r in rs if r['exact_upper']):.3f}",
                      f"{sum(r['l2_le_cex'] for r in rs)}/{len(rs)}",
                      sum(r["box_samples_misclassified"] for r in rs), sum(r["box_pgd_falsified"] for r in rs),
                      sum(r["ball_samples_misclassified"] for r in rs), sum(r["ball_pgd_misclassified"] for r in rs)])
    return ("Soundness on the non-linear encoders: every certificate of `gmm certify` (the box of the default search "
            "with the `gmm` oracle; the closed-form input L2 ball) against the exact apothem (`milp`) and the "
            "confirmed counterexamples' L2 distances; 2,500 samples (uniform and vertices) and PGD (100 steps, 20 "
            "restarts) in each box, 2,000 samples and L2 PGD (50 steps, 5 restarts) in each ball.\n\n" + markdown_table(
                ["dataset", "encoder", "inputs", "box apothem <= exact", "median box / exact",
                 "L2 ball <= nearest counterexample", "misclassified box samples", "PGD counterexamples in boxes",
                 "misclassified ball samples", "L2 PGD points misclassified"], table) + "\n")


# ------------------------------------------------------------------------ timing
def part_timing(dataset: str, n: int, bar: bool) -> list[dict[str, Any]]:
    rows = []
    xs, _ = _data(dataset, n)
    for enc, c in _models(dataset).items():
        dom = ppn.Box.unit(c.network.n_inputs)
        start = time.perf_counter()
        for label in range(c.network.n_classes):
            c.margin_lipschitz(label)
        prepare = time.perf_counter() - start
        labels = c.network.predict(xs)
        closed_form(c, xs[0], int(labels[0]), dom)  # warm
        times, cpu = [], []
        for i in tqdm(range(len(xs)), desc=f"{dataset} {enc}: timing", disable=not bar):
            start, start_cpu = time.perf_counter(), time.thread_time()
            closed_form(c, xs[i], int(labels[i]), dom)
            times.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
        whole = []
        for i in range(min(20, len(xs))):
            start = time.perf_counter()
            certify_gmm(c, xs[i])
            whole.append(time.perf_counter() - start)
        rows.append({"dataset": dataset, "encoder": enc, "inputs": len(xs), "linear": c.linear,
                     "prepare_ms": 1e3 * prepare, "closed_form_median_ms": 1e3 * statistics.median(times),
                     "closed_form_mean_ms": 1e3 * statistics.fmean(times), "closed_form_max_ms": 1e3 * max(times),
                     "closed_form_cpu_median_ms": 1e3 * statistics.median(cpu),
                     "closed_form_cpu_mean_ms": 1e3 * statistics.fmean(cpu),
                     "certificate_median_s": statistics.median(whole)})
    return rows


def timing_markdown(rows: list[dict[str, Any]]) -> str:
    table = [[r["dataset"], r["encoder"], r["inputs"], f"{r['closed_form_median_ms']:.3f}",
              f"{r['closed_form_mean_ms']:.3f}", f"{r['closed_form_max_ms']:.2f}",
              f"{r['closed_form_cpu_median_ms']:.3f}", f"{r['closed_form_cpu_mean_ms']:.3f}", f"{r['prepare_ms']:.0f}",
              f"{r['certificate_median_s']:.3f}"] for r in rows]
    return ("Time of `gmm certify`: the closed-form part per input (every radius, proven: latent, global L2, and for "
            "the linear PCA classifier the exact L∞ and L2 radii with their proofs and counterexamples), after the "
            "per-model precomputation of the margins' Lipschitz bounds (every label), and the whole certificate "
            "(with the default search's box; median of 20). Wall-clock times depend on the machine's load; the "
            "thread's CPU time (`time.thread_time`) does much less.\n\n" + markdown_table(
                ["dataset", "encoder", "inputs", "closed form median ms", "mean ms", "max ms", "CPU median ms",
                 "CPU mean ms", "per-model ms",
                 "whole certificate median s"], table) + "\n")


# ------------------------------------------------------------------------ accuracy
def _exact_radii(net, xs, ys, correct, bar: bool, desc: str) -> np.ndarray:
    config = ppn.CertifyConfig(algorithm="exact", oracle="milp", precision=1e-4)
    from parallelepipedonn.certify import build_oracles

    oracle, falsifier = build_oracles(net, config)
    radii = np.zeros(len(xs))
    for i in tqdm(range(len(xs)), desc=desc, disable=not bar):
        if correct[i]:
            with _quiet_highs():
                cert = ppn.certify(net, xs[i], int(ys[i]), config=config, oracle=oracle, falsifier=falsifier)
            radii[i] = cert.apothem if cert.status is ppn.Status.CERTIFIED else 0.0
    return radii


def part_accuracy(dataset: str, n: int | None, exact_n: int, bar: bool) -> list[dict[str, Any]]:
    xs, ys = _data(dataset, n)
    dom = ppn.Box.unit(xs.shape[1])
    rows = []
    nets: dict[str, tuple[ppn.Network, GmmClassifier | None]] = {
        f"gmm {enc}": (c.network, c) for enc, c in _models(dataset).items()}
    for size in ("small", "deep"):
        path = ppn.default_model_path(dataset, size)
        nets[path.stem] = (ppn.load_onnx(path), None)
    for name, (net, c) in nets.items():
        start = time.perf_counter()
        correct = net.predict(xs) == ys
        oracle = make_oracle("gmm" if c is not None else "crown", net)
        base = {"dataset": dataset, "model": name, "inputs": len(xs), "clean": float(correct.mean())}
        method = "gmm oracle" if c is not None else "crown"
        if c is not None and c.linear:
            method = "gmm oracle (exact closed form)"
        m = min(exact_n, len(xs))
        sub = {**base, "inputs": m, "clean": float(correct[:m].mean()), "norm": "linf"}
        for eps in LINF:
            ok = verify_cubes(oracle, xs, ys, eps, correct) == 1
            rows.append({**base, "norm": "linf", "eps": eps, "method": method, "certified": float(ok.mean())})
            if exact_n and m < len(xs):  # the same verdicts on the inputs of the exact algorithm's rows
                rows.append({**sub, "eps": eps, "method": f"{method}, first {m}", "certified": float(ok[:m].mean())})
        # L2: the closed forms (the exact in-domain radius for a linear classifier, else the global bound)
        l2 = np.zeros(len(xs))
        lips = {label: margin_lipschitz(net, label) for label in range(net.n_classes)}
        for i in np.flatnonzero(correct):
            if c is not None and c.linear:
                l2[i] = closed_form(c, xs[i], int(ys[i]), dom).input_l2.radius
            else:
                l2[i] = global_l2_radius(net, xs[i], int(ys[i]), lips[int(ys[i])])
        l2_method = "exact closed form" if c is not None and c.linear else "global Lipschitz bound"
        for eps in L2:
            rows.append({**base, "norm": "l2", "eps": eps, "method": l2_method, "certified": float((l2 >= eps).mean())})
        per_input = (time.perf_counter() - start) / len(xs)
        if exact_n and c is None and name.endswith("784-32-10"):
            radii = _exact_radii(net, xs[:m], ys[:m], correct[:m], bar, f"{dataset} {name}: exact")
            for eps in LINF:
                rows.append({**sub, "eps": eps, "method": "exact (milp)", "certified": float((radii >= eps).mean())})
        if exact_n and c is None:
            # an upper bound of what any method certifies (the exact algorithm included): the
            # inputs whose cube the attack does not falsify (confirmed counterexamples)
            attack = AttackOracle(net, steps=100, restarts=10, seed=0)
            for eps in LINF:
                falsified = verify_cubes(attack, xs[:m], ys[:m], eps, correct[:m]) == -1
                rows.append({**sub, "eps": eps, "method": "attack (upper bound)",
                             "certified": float((correct[:m] & ~falsified).mean())})
        for r in rows:
            if r["model"] == name and "seconds_per_input" not in r:
                r["seconds_per_input"] = per_input
        if c is not None:
            d = c.info.get("diagnostics", {})
            rows.append({**base, "norm": "latent-l2", "eps": float("nan"), "method": "diagnostics",
                         "certified": float("nan"), "kl": d.get("kl_estimate"),
                         "predicted": d.get("predicted_certified_accuracy"),
                         "measured": d.get("measured_certified_accuracy"), "radii": d.get("latent_radii"),
                         "pinsker": d.get("pinsker_lower_bound")})
    return rows


def accuracy_markdown(rows: list[dict[str, Any]]) -> str:
    text = ("Clean and certified accuracy (the fraction of test inputs proven to keep their true label within the "
            "radius, inside [0,1]^784; misclassified inputs count as not certified). L∞: the cube's verdict by the "
            "`gmm` oracle (exact closed form for the linear PCA classifier, CROWN otherwise) or CROWN for the "
            "default nets (`, first N`: the same verdicts on the first N inputs); `exact (milp)`: each input's exact "
            "minimum adversarial distance on the first inputs (the default 784-32-10 net); "
            "`attack (upper bound)`: the inputs whose cube PGD (100 steps, 10 restarts) does not falsify with a "
            "confirmed counterexample, an upper bound of what any method, the exact one included, certifies. L2: "
            "the closed forms (exact within the domain for PCA; the global Lipschitz bound otherwise, the same "
            "bound for the default nets).\n\n")
    header = ["dataset", "model", "inputs", "clean", "L∞ method"] + [f"L∞ {e:g}" for e in LINF] + \
        ["L2 method"] + [f"L2 {e:g}" for e in L2]
    table = []
    keys = dict.fromkeys((r["dataset"], r["model"]) for r in rows if r["norm"] != "latent-l2")
    for ds, model in keys:
        rs = [r for r in rows if r["dataset"] == ds and r["model"] == model]
        linf_methods = dict.fromkeys(r["method"] for r in rs if r["norm"] == "linf")
        l2 = {r["eps"]: r for r in rs if r["norm"] == "l2"}
        for k, method in enumerate(linf_methods):
            lin = {r["eps"]: r for r in rs if r["norm"] == "linf" and r["method"] == method}
            first = next(iter(lin.values()))
            row = [ds, model, first["inputs"], f"{100 * first['clean']:.1f}%", method]
            row += [f"{100 * lin[e]['certified']:.1f}%" if e in lin else "—" for e in LINF]
            if k == 0:
                row += [next(iter(l2.values()))["method"]] + [f"{100 * l2[e]['certified']:.1f}%" for e in L2]
            else:
                row += [""] + ["" for _ in L2]
            table.append(row)
    text += markdown_table(header, table) + "\n"
    diag = [r for r in rows if r["norm"] == "latent-l2"]
    if diag:
        text += ("\nThe fitted mixture's predicted certified accuracy (sampling the mixture) against the measured one "
                 "(the test latents), at latent L2 radii of 0, 0.5 and 1 times the latents' spread "
                 "(√(tr Σ / d)); the KL estimate of the test latents against the mixture and the Pinsker bound "
                 "it would imply — estimates, not proofs (infinite for latents with atoms, such as ReLU "
                 "outputs).\n\n")
        dt = []
        for r in diag:
            pred, meas, radii = r["predicted"] or [], r["measured"] or [], r["radii"] or []
            pick = [0, 2, 3] if len(pred) >= 4 else list(range(len(pred)))
            kl = r["kl"]
            finite = isinstance(kl, (int, float)) and math.isfinite(kl)
            pinsker = f"{math.sqrt(max(kl, 0) / 2):.2f}" if finite else "—"
            dt.append([r["dataset"], r["model"]] + [f"{100 * pred[i]:.1f}% / {100 * meas[i]:.1f}% (ρ={radii[i]:.2g})"
                                                    for i in pick]
                      + [kl if isinstance(kl, str) else f"{kl:.2f}", pinsker])
        text += markdown_table(["dataset", "model", "ρ = 0: predicted / measured", "ρ = 0.5σ", "ρ = σ",
                                "KL estimate (nats)", "√(KL/2)"], dt) + "\n"
    text += "\nPublished MNIST results (not rerun here; MNIST's own test set of 10,000 images, full training set):\n\n"
    text += markdown_table(["method", "norm", "radius", "certified accuracy", "certificate"],
                           [[m, n, r, a, k] for m, n, r, a, k in PUBLISHED]) + "\n"
    return text


def plot_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    """Certified-accuracy curves: one panel per dataset and norm, one line per model and
    method (L∞: the oracle's verdicts, dashed the exact ones; L2: the closed forms)."""
    from benchmarks.paper_report import figure

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"].replace("fashion-mnist", "*").replace("mnist", "*") for r in rows))
    colour = {m: f"C{k}" for k, m in enumerate(models)}
    fig = figure(11, 3.6 * len(datasets))
    axes = np.atleast_2d(fig.subplots(len(datasets), 2))
    for row, ds in zip(axes, datasets):
        for ax, norm, grid in ((row[0], "linf", LINF), (row[1], "l2", L2)):
            rs = [r for r in rows if r["dataset"] == ds and r["norm"] == norm]
            for model, method in dict.fromkeys((r["model"], r["method"]) for r in rs):
                pts = sorted((r["eps"], r["certified"]) for r in rs if (r["model"], r["method"]) == (model, method))
                first = next(r for r in rs if (r["model"], r["method"]) == (model, method))
                xs, ys = [0.0] + [p[0] for p in pts], [first["clean"]] + [p[1] for p in pts]
                ax.plot(xs, ys, "--" if "exact (milp)" in method else ":" if "attack" in method else "-", marker="o", ms=3,
                        color=colour[model.replace("fashion-mnist", "*").replace("mnist", "*")],
                        label=f"{model} ({method}, {first['inputs']} inputs)")
            ax.set_xticks([0.0, *grid[2:]] if norm == "linf" else [0.0, *grid])
            ax.set_xlabel("L∞ radius ε" if norm == "linf" else "L2 radius ε")
            ax.set_ylabel("certified accuracy")
            ax.set_ylim(0, 1)
            ax.set_title(f"{ds}: {'L∞' if norm == 'linf' else 'L2'}", fontsize=10)
            ax.legend(fontsize=6)
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--datasets", default="mnist,fashion-mnist")
    ap.add_argument("--check", type=int, default=100, help="inputs of the exactness check (default 100)")
    ap.add_argument("--sound", type=int, default=30, help="inputs per encoder of the soundness check (default 30)")
    ap.add_argument("--timing", type=int, default=200, help="inputs of the timing (default 200)")
    ap.add_argument("--accuracy", type=int, default=1000, help="test inputs of the accuracy part (default 1000)")
    ap.add_argument("--exact", type=int, default=200, help="inputs certified exactly (milp) in the accuracy part")
    ap.add_argument("--quick", action="store_true", help="a few inputs per part")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="rewrite the parts' Markdown from their CSV files under --out (keeping each one's last "
                         "line, the machine and command), without measuring")
    args = ap.parse_args(argv)
    ppn.configure_threads()
    if args.quick:
        args.check, args.sound, args.timing, args.accuracy, args.exact = 5, 3, 20, 100, 5
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    datasets = [d for d in args.datasets.split(",") if ppn.datasets.dataset_available(d)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = not args.no_progress
    runs = {"exact": (lambda ds: part_exact(ds, args.check, bar), exact_markdown),
            "sound": (lambda ds: part_sound(ds, args.sound, bar), sound_markdown),
            "timing": (lambda ds: part_timing(ds, args.timing, bar), timing_markdown),
            "accuracy": (lambda ds: part_accuracy(ds, args.accuracy, args.exact, bar), accuracy_markdown)}
    for part in parts if not args.render else ():
        load, started = os.getloadavg()[0], time.perf_counter()
        run_part, markdown = runs[part]
        rows = [r for ds in datasets for r in run_part(ds)]
        write_rows(out / f"gmm_{part}.csv", rows)
        if part == "accuracy" and rows:
            plot_accuracy(rows, out / "gmm_accuracy.png")
        sizes = {"exact": f"--check {args.check}", "sound": f"--sound {args.sound}",
                 "timing": f"--timing {args.timing}", "accuracy": f"--accuracy {args.accuracy} --exact {args.exact}"}
        command = (f"python -m benchmarks.gmm --parts {part} --datasets {','.join(datasets)} "
                   + ("--quick" if args.quick else sizes[part]))
        stamp = (f"Machine: {machine()}; 1-minute load average {load:.1f} when the part began, "
                 f"{os.getloadavg()[0]:.1f} when it ended; {time.perf_counter() - started:.0f} s. "
                 f"Command: `{command}`.")
        (out / f"gmm_{part}.md").write_text(markdown(rows) + "\n" + stamp + "\n")
    for part in parts if args.render else ():
        md, csv_path = out / f"gmm_{part}.md", out / f"gmm_{part}.csv"
        if csv_path.is_file():
            stamp = md.read_text().rstrip("\n").rsplit("\n", 1)[-1] if md.is_file() else ""
            (out / f"gmm_{part}.md").write_text(runs[part][1](read_rows(csv_path)) + "\n" + stamp + "\n")
    blocks = [(out / f"gmm_{p}.md").read_text() for p in PARTS if (out / f"gmm_{p}.md").is_file()]
    (out / "gmm.md").write_text("\n".join(blocks))
    print((out / "gmm.md").read_text())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows :func:`write_rows` wrote (numbers, booleans and lists parsed back)."""
    import csv
    import json

    def value(text: str) -> Any:
        if text in ("True", "False"):
            return text == "True"
        if text.startswith("["):
            return json.loads(text.replace("inf", "Infinity").replace("nan", "NaN"))
        try:
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            return text if text else None

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """A CSV of rows whose keys differ (the union of their keys, blanks where missing)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(path, [{k: r.get(k, "") for k in keys} for r in rows])


if __name__ == "__main__":
    main()
