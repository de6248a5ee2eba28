"""Reproduce and surpass the original system's experiments: one command, tables and plots.

    parallelepipedonn bench paper [--quick] [--out DIR] [--parts algorithms,duals,audit,accuracy,scaling]
    python -m benchmarks.paper ...          (the same)

Parts (all by default):

- ``algorithms``: every search algorithm (apothem family, box family, composition,
  volume-based methods, exact optimum) on the original system's 100 reference inputs
  (../shared/reference/parallelepipedonn-2.2; the class in the file name is the label, as
  in the original runs), laid out like the original README's tables with its published
  row beside ours, plus apothem / exact optimum, log-volume and gap.
- ``duals``: exact dual boxes of every class (unrestricted), and per input the original
  ``complete-c-d-bu`` (the smallest cube around the input holding its whole class) and
  ``complete-bu`` problems solved by our complete algorithms.
- ``audit``: every published ``c-bu-d`` cube and ``complete-c-d-bu`` dual cube checked with
  our exact oracle; each unsound one is shown with its closest offending point, confirmed
  by a forward pass.
- ``accuracy``: certified-accuracy curves (fraction of test inputs whose L-infinity ball of
  radius eps is proven robust) of the embedded default nets on the offline test data, per
  oracle, with an attack-based upper bound and the exact value on a subset; and the
  embedded latent Gaussian-mixture classifiers of ``data/`` beside them (``gmm_accuracy``,
  :func:`benchmarks.gmm.part_accuracy`: L-infinity and L2 radii, the mixture diagnostics,
  published MNIST anchors).
- ``scaling``: oracle calls and time against precision, network size and batch size.

Everything goes under ``--out`` (CSV per input, Markdown summaries, PNG figures); the
README's "Results" blocks are generated from the Markdown files (``--readme``).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import REFERENCE_NETS, machine, markdown_table, published_log, write_csv
from benchmarks.options import ALGORITHMS, PARTS, REFERENCE, RESULTS, add_paper_arguments
from oracles import AttackOracle, CrownOracle, make_oracle
from oracles.base import Oracle, Verdict
from oracles.distance import cube
from parallelepipedonn.certify import build_oracles

log = logging.getLogger(__name__)

# Our algorithm -> the original system's algorithm that solves the same problem.
ORIGINAL = {"apothem-bisection": "c-bu-d", "box-bisection": "bu-d-dfs", "box-topdown": "td",
            "topdown-box": "td+bu-d-dfs", "dual complete-cubic": "complete-c-d-bu", "dual complete-bu": "complete-bu"}
DATASET_TITLE = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
EPS_TABLE = (0.01, 0.02, 0.05, 0.1)
# Volume-oriented box searches: seconds to a minute per input, so run on a spread subset
# of the inputs with a per-input time limit (the original's was 60 min).
SLOW = ("box-maximal", "box-bisection", "box-topdown", "topdown-box", "volume-greedy", "dual complete-bu")


@dataclass(frozen=True)
class PaperConfig:
    """What ``bench paper`` runs: ``quick`` shrinks every part to CI size."""

    out: Path = RESULTS / "paper"
    quick: bool = False
    parts: tuple[str, ...] = PARTS
    inputs: int | None = None            # reference inputs per dataset (default: all, quick: 2)
    algorithms: tuple[str, ...] = ALGORITHMS
    precision: float = 1e-4
    workers: int = 2
    reference: Path = REFERENCE
    progress: bool = True

    @property
    def n_inputs(self) -> int | None:
        return self.inputs if self.inputs is not None else (2 if self.quick else None)

    @property
    def slow_inputs(self) -> int:
        """Inputs per dataset for the slow algorithms (``SLOW``)."""
        return 1 if self.quick else 10

    @property
    def slow_time_limit(self) -> float:
        """Per input, for the box searches of ``SLOW``: then the box certified so far."""
        return 5.0 if self.quick else 20.0


def _bar(items: Iterable, cfg: PaperConfig, desc: str, total: int | None = None):
    # disable=None: a bar only on a terminal
    return tqdm(items, desc=desc, total=total, disable=None if cfg.progress else True, leave=False)


def _stats(values: Sequence[float]) -> tuple[float, float, float, float]:
    """min, mean, max, population std (the original's "Std Dev.")."""
    v = [float(x) for x in values]
    if not v:
        return (math.nan,) * 4
    return min(v), statistics.fmean(v), max(v), statistics.pstdev(v)


def _median(values: Iterable[float | None]) -> float:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return statistics.median(v) if v else math.nan


def _f(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{digits}f}"


# ---------------------------------------------------------------- reference data

@dataclass(frozen=True)
class RefInput:
    name: str
    x: np.ndarray
    label: int


def reference_set(cfg: PaperConfig, dataset: str) -> tuple[ppn.Network, list[RefInput]]:
    """The original system's net and inputs of ``dataset`` (unreadable files skipped,
    as the original's tables do); ``cfg.n_inputs`` spread over the classes."""
    net = ppn.load_onnx(cfg.reference / "nets" / REFERENCE_NETS[dataset])
    items = []
    for f in sorted((cfg.reference / "inputs" / dataset).glob("*.csv")):
        try:
            items.append(RefInput(f.stem, ppn.load_input(f, net.input_shape), int(f.stem.split("-")[0])))
        except ppn.InputDataError as exc:
            log.info("skipping %s: %s", f, exc)
    return net, spread(items, cfg.n_inputs)


def spread(items: list, n: int | None) -> list:
    """``n`` of ``items`` evenly spread (all when ``n`` is None or larger)."""
    if n is None or n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


# ---------------------------------------------------------------- part 1: algorithms

def run_algorithms(cfg: PaperConfig, dataset: str, net: ppn.Network, inputs: list[RefInput]) -> list[dict[str, Any]]:
    """One row per (algorithm, input): status, time, metrics, oracle calls, bounds."""
    rows = []
    certs: dict[tuple[str, str], ppn.Certificate] = {}
    for algorithm in cfg.algorithms:
        slow = algorithm in SLOW
        config = ppn.CertifyConfig(algorithm=algorithm, precision=cfg.precision,
                                   search_time_limit=cfg.slow_time_limit if slow else None)
        oracle, falsifier = build_oracles(net, config)
        for item in _bar(spread(inputs, cfg.slow_inputs) if slow else inputs, cfg, f"{dataset}: {algorithm}"):
            start = time.perf_counter()
            cert = ppn.certify(net, item.x, item.label, config=config, oracle=oracle, falsifier=falsifier)
            seconds = time.perf_counter() - start
            certs[algorithm, item.name] = cert
            rows.append({"dataset": dataset, "algorithm": algorithm, "oracle": cert.oracle, "input": item.name,
                         "label": item.label, "predicted": cert.predicted_label, "status": cert.status.value,
                         "seconds": seconds, "apothem": cert.apothem, "min_edge": cert.min_edge or 0.0,
                         "log_volume": cert.log_volume, "oracle_calls": cert.oracle_calls, "rounds": cert.rounds,
                         "apothem_upper_bound": cert.apothem_upper_bound,
                         "timed_out": cert.reason.startswith("time limit")})
    optimum = {r["input"]: (r["apothem"], r["apothem_upper_bound"]) for r in rows if r["algorithm"] == "exact"}
    for r in rows:
        lo_hi = optimum.get(r["input"])
        best = lo_hi[1] if lo_hi and lo_hi[1] is not None else None
        r["exact_optimum"] = best
        r["apothem_over_exact"] = ((r["apothem"] or 0.0) / best if best else
                                   (math.nan if best is None else 1.0))
        ub = r["apothem_upper_bound"]
        r["gap"] = (ub - (r["apothem"] or 0.0)) if ub is not None else math.inf
    _ALGO_CERTS[dataset] = certs
    return rows


_ALGO_CERTS: dict[str, dict[tuple[str, str], ppn.Certificate]] = {}


def algorithms_table(dataset: str, rows: list[dict[str, Any]], dual_rows: list[dict[str, Any]]) -> str:
    """The original README's table layout, our rows with the published row of the same
    problem beside them."""
    header = ["algorithm", "oracle", "time min / avg / max / std (s)", "time-outs", "oracle calls avg",
              "min edge min / avg / max / std", "non-trivial", "apothem / exact: median / min",
              "median log-volume", "median gap"]
    table = []

    def published_row(original: str) -> None:
        pub = published_log(dataset, original)
        if not pub:
            return
        v = list(pub.values())
        t, e = _stats([p["seconds"] for p in v]), _stats([p["min_edge"] for p in v])
        table.append([f"*original `{original}`*", "Marabou", " / ".join(_f(s, 3) for s in t),
                      f"{sum(p['seconds'] >= 3600 for p in v):.0f}",
                      f"{statistics.fmean(p['oracle_calls'] for p in v):.0f}", " / ".join(_f(s, 3) for s in e),
                      f"{sum(p['min_edge'] > 0 for p in v)}/{len(v)}", "—", "—", "—"])

    for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
        rs = [r for r in rows if r["algorithm"] == algorithm]
        t, e = _stats([r["seconds"] for r in rs]), _stats([r["min_edge"] for r in rs])
        ratio = [r["apothem_over_exact"] for r in rs if r["status"] == "certified"]
        finite_ratio = [x for x in ratio if not math.isnan(x)]
        table.append([f"`{algorithm}`", rs[0]["oracle"], " / ".join(_f(s, 3) for s in t),
                      f"{sum(r['timed_out'] for r in rs)}",
                      f"{statistics.fmean(r['oracle_calls'] for r in rs):.0f}", " / ".join(_f(s, 3) for s in e),
                      f"{sum(r['min_edge'] > 0 for r in rs)}/{len(rs)}",
                      f"{_f(_median(finite_ratio))} / {_f(min(finite_ratio) if finite_ratio else math.nan)}",
                      _f(_median(r["log_volume"] for r in rs if r["log_volume"] is not None
                                 and math.isfinite(r["log_volume"])), 4),
                      _f(_median(r["gap"] for r in rs if r["status"] == "certified"))])
        if algorithm in ORIGINAL:
            published_row(ORIGINAL[algorithm])
    for method in dict.fromkeys(r["method"] for r in dual_rows):
        rs = [r for r in dual_rows if r["method"] == method]
        t, e = _stats([r["seconds"] for r in rs]), _stats([r["min_edge"] or 0.0 for r in rs])
        table.append([f"`{method}` (dual)", "milp", " / ".join(_f(s, 3) for s in t),
                      f"{sum(r['timeouts'] for r in rs)}", f"{statistics.fmean(r['queries'] for r in rs):.0f}",
                      " / ".join(_f(s, 3) for s in e), f"{sum((r['min_edge'] or 0) > 0 for r in rs)}/{len(rs)}",
                      "—", _f(_median(r["log_volume"] for r in rs if r["log_volume"] is not None), 4), "—"])
        if method in ORIGINAL:
            published_row(ORIGINAL[method])
    return markdown_table(header, table)


# ---------------------------------------------------------------- part 2: duals

def run_duals(cfg: PaperConfig, dataset: str, net: ppn.Network,
              inputs: list[RefInput]) -> tuple[list[dict[str, Any]], dict[int, ppn.DualBox]]:
    """Per input: our ``complete-cubic`` and ``complete-bu`` dual problems (unrestricted,
    as the original's runs with restriction radius 1 = the whole domain); per class: the
    exact (milp) dual box."""
    rows = []
    classes: dict[int, ppn.DualBox] = {}
    for label in _bar(sorted({i.label for i in inputs}), cfg, f"{dataset}: class duals"):
        cands = [i.x for i in inputs if i.label == label]
        classes[label] = d = ppn.dual_box(net, label, candidates=cands, workers=cfg.workers)
        rows.append(_dual_row(dataset, "dual milp", f"class {label}", label, d))
    methods = ("complete-cubic", "complete-bu")
    for item in _bar(inputs, cfg, f"{dataset}: per-input duals"):
        for method in methods:
            if f"dual {method}" in SLOW and item not in spread(inputs, cfg.slow_inputs):
                continue
            slow = f"dual {method}" in SLOW
            d = ppn.dual_box(net, item.label, x=item.x, radius=1.0, method=method, workers=cfg.workers,
                             total_time_limit=cfg.slow_time_limit if slow else None)
            rows.append(_dual_row(dataset, f"dual {method}", item.name, item.label, d))
    return rows, classes


def _dual_row(dataset: str, method: str, name: str, label: int, d: ppn.DualBox) -> dict[str, Any]:
    return {"dataset": dataset, "method": method, "input": name, "label": label, "seconds": d.seconds,
            "exact": d.exact_count, "bounds": 2 * d.region.n, "whole_region": d.covers_region,
            "min_edge": d.min_edge(), "log_volume": d.log_volume(),
            "queries": int(d.details.get("milps", d.details.get("queries", 0))),
            "timeouts": int(d.details.get("timeouts", 0))}


# ---------------------------------------------------------------- part 3: audit

def audit(cfg: PaperConfig, dataset: str, net: ppn.Network, inputs: list[RefInput],
          exact: dict[str, ppn.Certificate], classes: dict[int, ppn.DualBox]) -> list[dict[str, Any]]:
    """Check the original's published certificates with our exact oracle.

    ``c-bu-d`` claims the cube of radius r (its log's min edge: MNIST images have pixels
    at 0, so the clipped cube's min edge is r) around x is robust: unsound iff the exact
    minimum adversarial distance r* <= r. ``complete-c-d-bu`` claims every input of the
    class lies in the cube of radius R around x: unsound iff some point of the class
    lies outside it (our dual witnesses, each re-checked by a forward pass)."""
    rows = []
    dom = ppn.Box.unit(net.n_inputs)
    milp = make_oracle("milp", net)
    by_name = {i.name: i for i in inputs}
    for name, pub in published_log(dataset, "c-bu-d").items():
        item, cert = by_name.get(name), exact.get(name)
        if item is None or cert is None:
            continue
        r = pub["min_edge"]
        row = {"dataset": dataset, "claim": "c-bu-d cube", "input": name, "label": item.label, "radius": r,
               "exact_lower": cert.apothem if cert.status is ppn.Status.CERTIFIED else 0.0,
               "exact_upper": cert.apothem_upper_bound}
        point = None
        if r <= 0:
            verdict = "trivial"
        elif cert.status is not ppn.Status.CERTIFIED:
            verdict, point = "unsound", item.x            # the input itself is not classified as its label
        elif cert.apothem >= r:
            verdict = "sound"
        else:
            a = milp.verify_box(*cube(item.x, r, dom), item.label)
            verdict = {Verdict.VERIFIED: "sound", Verdict.FALSIFIED: "unsound"}.get(a.verdict, "undecided")
            point = a.counterexample
            if verdict == "unsound" and cert.counterexample is not None \
                    and np.abs(cert.counterexample - item.x).max() <= r:
                point = cert.counterexample              # the closest one (at the exact optimum)
        row["verdict"] = verdict
        if point is not None:
            logits = net.forward(point)[0]
            row.update(point_distance=float(np.abs(point - item.x).max()), point_class=int(np.argmax(logits)),
                       point_margin=float(net.margins(point, item.label)[0]))
            _AUDIT_POINTS[dataset, name] = point
        rows.append(row)
    for name, pub in published_log(dataset, "complete-c-d-bu").items():
        item = by_name.get(name)
        if item is None or item.label not in classes:
            continue
        big_r = pub["min_edge"]
        w = classes[item.label].witnesses
        row = {"dataset": dataset, "claim": "complete-c-d-bu dual cube", "input": name, "label": item.label,
               "radius": big_r}
        if len(w):
            dist = np.abs(w - item.x).max(axis=1)
            k = int(np.argmax(dist))
            in_class = net.predict(w[k:k + 1])[0] == item.label and net.margins(w[k], item.label)[0] > 0
            outside = bool(dist[k] > big_r and in_class)
            row.update(verdict="unsound" if outside else "not refuted", point_distance=float(dist[k]),
                       point_class=int(net.predict(w[k:k + 1])[0]), point_margin=float(net.margins(w[k], item.label)[0]))
        else:
            row["verdict"] = "not refuted"
        rows.append(row)
    return rows


_AUDIT_POINTS: dict[tuple[str, str], np.ndarray] = {}


def audit_markdown(rows: list[dict[str, Any]]) -> str:
    text = ("Audit of the original system's published certificates (`published/*-c-bu-d.log`: the certified cube "
            "radius per input; `*-complete-c-d-bu.log`: the dual cube radius), each checked with our exact oracle. "
            "A cube is unsound when it contains a point not classified as the label (ties included); the closest "
            "such point (distance = the exact minimum adversarial distance) was confirmed by a forward pass (exact "
            "arithmetic near the boundary). Every reference image has a pixel at 0 or 1, so a published min edge is "
            "the radius of the clipped cube. A dual cube is unsound when a point of the class lies outside it (the "
            "exact dual boxes are the whole domain; the original's precision 1/16 stopped at 0.9375).\n\n")
    table = []
    for (dataset, claim) in dict.fromkeys((r["dataset"], r["claim"]) for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset and r["claim"] == claim]
        count = {v: sum(r["verdict"] == v for r in rs) for v in ("sound", "unsound", "trivial", "undecided",
                                                                  "not refuted")}
        bad = [r for r in rs if r["verdict"] == "unsound"]
        table.append([DATASET_TITLE[dataset], claim, len(rs), count["unsound"],
                      count["sound"] + count["not refuted"], count["trivial"], count["undecided"],
                      _f(_median(r["radius"] - r.get("point_distance", math.nan) for r in bad))
                      if claim.startswith("c-bu-d") else
                      _f(_median(r.get("point_distance", math.nan) - r["radius"] for r in bad))])
    text += markdown_table(["dataset", "claim", "checked", "unsound", "sound / not refuted", "trivial (radius 0)",
                            "undecided", "median excess of the claim"], table)
    worst = [r for r in rows if r["verdict"] == "unsound" and r["claim"].startswith("c-bu-d")]
    if worst:
        text += ("\n\nUnsound cubes (claimed radius; the closest misclassified point: its distance, class and the "
                 "label's margin there):\n\n")
        text += markdown_table(["dataset", "input", "claimed radius", "exact optimum r*", "closest point: distance",
                                "its class", "margin"],
                               [[DATASET_TITLE[r["dataset"]], r["input"], _f(r["radius"], 4),
                                 _f(r.get("exact_upper"), 4), _f(r.get("point_distance"), 4), r.get("point_class"),
                                 _f(r.get("point_margin"), 3)] for r in worst])
    return text + "\n"


# ---------------------------------------------------------------- part 4: certified accuracy

def _verify_cubes(oracle: Oracle, xs: np.ndarray, labels: np.ndarray, eps: float, mask: np.ndarray,
                  chunk: int = 512) -> np.ndarray:
    """Verdicts (+1 verified, -1 falsified, 0 unknown) of the eps-cubes around ``xs[mask]``."""
    out = np.zeros(len(xs), np.int8)
    for label in np.unique(labels[mask]):
        idx = np.flatnonzero(mask & (labels == label))
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            answers = oracle.verify(np.clip(xs[part] - eps, 0, 1), np.clip(xs[part] + eps, 0, 1), int(label))
            out[part] = [1 if a.verdict is Verdict.VERIFIED else -1 if a.verdict is Verdict.FALSIFIED else 0
                         for a in answers]
    return out


def accuracy_curves(cfg: PaperConfig) -> list[dict[str, Any]]:
    """Certified accuracy at each eps of a grid for every default net, per oracle.

    ``crown`` on every test input; on the first ``subset`` inputs also ``alpha-crown``
    (asked where crown was unsure; verified = either), the PGD attack (an upper bound:
    the fraction not falsified) and, for the 784-32-10 nets, the exact value (each
    input's exact minimum adversarial distance by ``--algorithm exact``) on the first
    ``exact_n``. Every oracle run on an input set is also reported on each smaller one,
    so that curves compare on the same inputs: a row's ``inputs`` is N for the first N
    test inputs (rows with the same N measure the same inputs)."""
    eps_grid = np.round(np.linspace(0, 0.1, 11 if cfg.quick else 21), 6)
    limit = 100 if cfg.quick else None
    subset = 30 if cfg.quick else 1000
    exact_n = 5 if cfg.quick else 200
    rows = []
    for dataset in ("mnist", "fashion-mnist"):
        if not ppn.datasets.dataset_available(dataset):
            log.warning("no %s test data on this machine: its accuracy curves are skipped", dataset)
            continue
        data = ppn.load_dataset(dataset, "test")
        n = len(data) if limit is None else min(limit, len(data))
        xs = data.images[:n].reshape(n, -1).astype(np.float64)
        ys = data.labels[:n].astype(np.int64)
        for size in ("small", "deep"):
            path = ppn.default_model_path(dataset, size)
            net = ppn.load_onnx(path)
            correct = net.predict(xs) == ys
            crown, alpha, attack = CrownOracle(net), make_oracle("alpha-crown", net), AttackOracle(net, seed=0)
            sub = np.zeros(n, bool)
            sub[:min(subset, n)] = True
            sets = {n, int(sub.sum())}                       # each set: the first m test inputs
            exact_radius = None
            if size == "small":
                exact_radius = _exact_radii(cfg, net, xs[:exact_n], ys[:exact_n], correct[:exact_n],
                                            f"{dataset} {size}: exact")
                sets.add(len(exact_radius))
            for eps in _bar(eps_grid, cfg, f"{dataset} {size}: eps"):
                v_crown = _verify_cubes(crown, xs, ys, eps, correct)
                unsure = sub & correct & (v_crown != 1)
                v_alpha = _verify_cubes(alpha, xs, ys, eps, unsure)
                v_attack = _verify_cubes(attack, xs, ys, eps, unsure & (v_alpha != 1))
                base = {"dataset": dataset, "network": path.name, "eps": float(eps)}
                certified = {"crown": v_crown == 1, "crown+alpha-crown": (v_crown == 1) | (v_alpha == 1),
                             "attack (upper bound)": correct & (v_attack != -1)}
                for m in sorted(sets, reverse=True):
                    for oracle, ok in certified.items():
                        if oracle == "crown" or m <= sub.sum():  # alpha-crown and the attack ran on `sub` only
                            rows.append({**base, "oracle": oracle, "inputs": m, "certified": int(ok[:m].sum())})
                    if exact_radius is not None and m == len(exact_radius):
                        rows.append({**base, "oracle": "exact", "inputs": m,
                                     "certified": int((exact_radius > eps).sum())})
    return rows


def _exact_radii(cfg: PaperConfig, net: ppn.Network, xs: np.ndarray, ys: np.ndarray, correct: np.ndarray,
                 desc: str) -> np.ndarray:
    """Per input: a radius r such that the cube of any radius below r is proven robust and
    the exact optimum is within precision of r (0 where misclassified)."""
    config = ppn.CertifyConfig(algorithm="exact", precision=cfg.precision)
    oracle, falsifier = build_oracles(net, config)
    radii = np.zeros(len(xs))
    for i in _bar(range(len(xs)), cfg, desc):
        if correct[i]:
            cert = ppn.certify(net, xs[i], int(ys[i]), config=config, oracle=oracle, falsifier=falsifier)
            radii[i] = cert.apothem if cert.status is ppn.Status.CERTIFIED else 0.0
    return radii


def accuracy_markdown(rows: list[dict[str, Any]]) -> str:
    text = ("Certified accuracy (fraction of test inputs whose L∞ ball of radius ε, within [0,1], is proven to keep "
            "the true label; misclassified inputs count as not certified) of the embedded default nets. `crown`: "
            "all test inputs available offline (Fashion-MNIST: the 10,000 test images; MNIST: the 1,000 test "
            "images of the offline sample); the other oracles ran on the first inputs only: "
            "`crown+alpha-crown` (sound), `exact` (complete: each input's exact minimum adversarial distance, "
            "784-32-10 nets) and `attack` (an upper bound: not falsified by PGD). `inputs`: N = the first N test "
            "inputs; compare rows with the same N only (they measure the same inputs: every oracle is also "
            "reported on each smaller set, so `exact` compares with the others on its inputs).\n\n")
    header = ["network", "inputs", "oracle"] + [f"ε = {e:g}" for e in EPS_TABLE]
    table = []
    for (net, m, oracle) in dict.fromkeys((r["network"], r["inputs"], r["oracle"]) for r in rows):
        rs = {round(r["eps"], 6): r for r in rows if (r["network"], r["inputs"], r["oracle"]) == (net, m, oracle)}
        table.append([net.removesuffix(".onnx"), m, oracle]
                     + [f"{100 * rs[e]['certified'] / rs[e]['inputs']:.1f}%" if e in rs else "—" for e in EPS_TABLE])
    return text + markdown_table(header, table) + "\n"


# ---------------------------------------------------------------- part 5: scaling

def scaling(cfg: PaperConfig) -> list[dict[str, Any]]:
    """Calls and time against precision (linear / bisection / k-ary), against network
    size (default search on every net) and against batch size and device (CROWN)."""
    rows: list[dict[str, Any]] = []
    n = 3 if cfg.quick else 10
    mnist_net, ref = reference_set(PaperConfig(reference=cfg.reference, inputs=n), "mnist")
    ref = [i for i in ref if mnist_net.predict(i.x)[0] == i.label]
    deltas = {"apothem-linear": (1e-1, 3e-2, 1e-2, 3e-3, 1e-3) if not cfg.quick else (1e-1, 1e-2),
              "apothem-bisection": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if not cfg.quick else (1e-1, 1e-4),
              "apothem-kary": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if not cfg.quick else (1e-1, 1e-4)}
    crown = CrownOracle(mnist_net)
    for algorithm, values in deltas.items():
        for delta in _bar(values, cfg, f"precision: {algorithm}"):
            config = ppn.CertifyConfig(algorithm=algorithm, precision=delta, falsifier=None)
            for item in ref:
                start = time.perf_counter()
                cert = ppn.certify(mnist_net, item.x, item.label, config=config, oracle=crown)
                rows.append({"study": "precision", "algorithm": algorithm, "precision": delta,
                             "network": "reference mnist 784-32-10", "input": item.name,
                             "seconds": time.perf_counter() - start, "oracle_calls": cert.oracle_calls,
                             "rounds": cert.rounds, "apothem": cert.apothem})
    nets = {"reference mnist": cfg.reference / "nets" / REFERENCE_NETS["mnist"]}
    nets.update({f"default {d} {s}": ppn.default_model_path(d, s) for d in ("mnist", "fashion-mnist")
                 for s in ("small", "deep")})
    for label, path in _bar(nets.items(), cfg, "network size"):
        net = ppn.load_onnx(path)
        dataset = "fashion-mnist" if "fashion" in label else "mnist"
        xs = _sample_inputs(cfg, dataset, net, n)
        for oracle_name in ("crown", "alpha-crown"):
            config = ppn.CertifyConfig(oracle=oracle_name, precision=cfg.precision, falsifier=None)
            oracle, _ = build_oracles(net, config)
            for k, (x, y) in enumerate(xs):
                start = time.perf_counter()
                cert = ppn.certify(net, x, y, config=config, oracle=oracle)
                rows.append({"study": "network", "algorithm": cert.algorithm, "oracle": oracle_name,
                             "network": f"{label} {net.describe().split()[0]}", "neurons": _neurons(net),
                             "input": k, "seconds": time.perf_counter() - start,
                             "oracle_calls": cert.oracle_calls, "rounds": cert.rounds, "apothem": cert.apothem})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    batches = (1, 16, 64, 256, 1024) if not cfg.quick else (1, 64)
    for label in ("reference mnist", "default mnist deep"):
        net = ppn.load_onnx(nets[label])
        xs = _sample_inputs(cfg, "mnist", net, 64)
        for device in devices:
            crown = CrownOracle(net, device=device)
            for b in _bar(batches, cfg, f"batch size: {label} {device}"):
                lo = np.stack([np.clip(xs[k % len(xs)][0] - 0.02, 0, 1) for k in range(b)])
                hi = np.stack([np.clip(xs[k % len(xs)][0] + 0.02, 0, 1) for k in range(b)])
                crown.verify(lo, hi, 0)                       # warm-up
                reps = max(1, min(50, 2048 // b))
                start = time.perf_counter()
                for _ in range(reps):
                    crown.verify(lo, hi, 0)
                seconds = (time.perf_counter() - start) / reps
                rows.append({"study": "batch", "network": f"{label} {net.describe().split()[0]}", "device": device,
                             "batch": b, "seconds": seconds, "boxes_per_second": b / seconds})
    return rows


def _neurons(net: ppn.Network) -> int:
    return sum(net.hidden_sizes) + net.n_classes


def _sample_inputs(cfg: PaperConfig, dataset: str, net: ppn.Network, n: int) -> list[tuple[np.ndarray, int]]:
    """The first ``n`` correctly classified inputs: reference inputs (present) or test data."""
    if ppn.datasets.dataset_available(dataset):
        data = ppn.load_dataset(dataset, "test")
        out = []
        for i in range(len(data)):
            x, y = data[i]
            x = x.reshape(-1)
            if net.predict(x)[0] == y:
                out.append((x, y))
            if len(out) == n:
                break
        return out
    _, ref = reference_set(PaperConfig(reference=cfg.reference), dataset)
    return [(i.x, i.label) for i in ref if net.predict(i.x)[0] == i.label][:n]


def scaling_markdown(rows: list[dict[str, Any]]) -> str:
    text = "Oracle calls and time per input against the precision δ (reference MNIST net, crown oracle, medians):\n\n"
    table = []
    for (algorithm, delta) in dict.fromkeys((r["algorithm"], r["precision"]) for r in rows if r["study"] == "precision"):
        rs = [r for r in rows if r["study"] == "precision" and r["algorithm"] == algorithm and r["precision"] == delta]
        table.append([f"`{algorithm}`", f"{delta:g}", f"{_median(r['oracle_calls'] for r in rs):.0f}",
                      f"{_median(r['rounds'] for r in rs):.0f}", f"{_median(r['seconds'] for r in rs) * 1000:.1f}"])
    text += markdown_table(["algorithm", "δ", "oracle calls", "rounds", "ms"], table)
    text += "\n\nThe default search (`apothem-kary`, δ = 1e-4) against network size (medians per input):\n\n"
    table = []
    for (net, oracle) in dict.fromkeys((r["network"], r["oracle"]) for r in rows if r["study"] == "network"):
        rs = [r for r in rows if r["study"] == "network" and r["network"] == net and r["oracle"] == oracle]
        table.append([net, rs[0]["neurons"], oracle, f"{_median(r['seconds'] for r in rs) * 1000:.1f}",
                      f"{_median(r['oracle_calls'] for r in rs):.0f}", f"{_median(r['rounds'] for r in rs):.0f}",
                      _f(_median(r["apothem"] for r in rs), 4)])
    text += markdown_table(["network", "ReLU+output neurons", "oracle", "ms", "oracle calls", "rounds", "apothem"],
                           table)
    text += "\n\nCROWN throughput against batch size (cubes of radius 0.02; boxes per second):\n\n"
    table = []
    for (net, device) in dict.fromkeys((r["network"], r["device"]) for r in rows if r["study"] == "batch"):
        rs = {r["batch"]: r for r in rows if r["study"] == "batch" and r["network"] == net and r["device"] == device}
        table.append([net, device] + [f"{rs[b]['boxes_per_second']:.0f}" for b in sorted(rs)])
    batches = sorted({r["batch"] for r in rows if r["study"] == "batch"})
    text += markdown_table(["network", "device"] + [f"batch {b}" for b in batches], table)
    if not torch.cuda.is_available():
        text += "\n\nNo CUDA device on this machine: the GPU column is absent (`--device cuda` works where one is)."
    return text + "\n"


# ---------------------------------------------------------------- plots

def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_min_edges(rows: list[dict[str, Any]], path: Path) -> None:
    """Min-edge distribution per algorithm (as the original's figures), per dataset."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = _figure(10, 3.2 * len(datasets))
    axes = np.atleast_1d(fig.subplots(len(datasets), 1))
    for ax, dataset in zip(axes, datasets):
        algos = list(dict.fromkeys(r["algorithm"] for r in rows if r["dataset"] == dataset))
        data = [[r["min_edge"] for r in rows if r["dataset"] == dataset and r["algorithm"] == a] for a in algos]
        pub = published_log(dataset, "c-bu-d")
        if pub:
            algos.append("original c-bu-d")
            data.append([p["min_edge"] for p in pub.values()])
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(algos) + 1), algos, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("min edge length")
        ax.set_title(f"{DATASET_TITLE[dataset]}: min edge length per input", fontsize=10)
    fig.savefig(path, dpi=110)


def plot_apothem_vs_exact(rows: list[dict[str, Any]], path: Path) -> None:
    fig = _figure(6, 5)
    ax = fig.subplots()
    markers = "os^vD<>ph*x"
    for k, algorithm in enumerate(dict.fromkeys(r["algorithm"] for r in rows)):
        if algorithm == "exact":
            continue
        rs = [r for r in rows if r["algorithm"] == algorithm and r["exact_optimum"] and r["status"] == "certified"]
        ax.scatter([r["exact_optimum"] for r in rs], [r["apothem"] for r in rs], s=12, marker=markers[k % 11],
                   label=algorithm, alpha=0.7)
    top = max([r["exact_optimum"] for r in rows if r["exact_optimum"]] or [0.2])
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="exact optimum")
    ax.set_xlabel("exact optimum (best possible apothem)")
    ax.set_ylabel("certified apothem")
    ax.legend(fontsize=7)
    ax.set_title("Certified apothem against the exact optimum", fontsize=10)
    fig.savefig(path, dpi=110)


def plot_times(rows: list[dict[str, Any]], path: Path) -> None:
    fig = _figure(10, 4)
    ax = fig.subplots()
    algos = list(dict.fromkeys(r["algorithm"] for r in rows))
    for k, algorithm in enumerate(algos):
        secs = [r["seconds"] for r in rows if r["algorithm"] == algorithm]
        ax.scatter(np.full(len(secs), k) + np.linspace(-0.3, 0.3, len(secs)), secs, s=6)
    for name in ("c-bu-d", "td"):
        secs = [p["seconds"] for p in published_log("mnist", name).values()]
        if secs:
            ax.scatter(np.full(len(secs), len(algos)) + np.linspace(-0.3, 0.3, len(secs)), secs, s=6, c="grey")
            algos.append(f"original {name}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(algos)), algos, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("seconds per input (log)")
    ax.set_title("Time per input per algorithm (original: MNIST, Marabou, δ = 1/16)", fontsize=10)
    fig.savefig(path, dpi=110)


_ACCURACY_STYLE = {"crown": ("tab:blue", "-"), "crown+alpha-crown": ("tab:green", "-"),
                   "attack (upper bound)": ("tab:red", "--"), "exact": ("tab:purple", "-")}


def plot_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    """Certified-accuracy curves per net; each legend entry says on how many inputs (the
    first n) it was measured. A net with an ``exact`` curve gets a second panel comparing
    every oracle on exact's inputs only (the same inputs)."""
    panels = []
    for net in dict.fromkeys(r["network"] for r in rows):
        rs = [r for r in rows if r["network"] == net]
        exact_n = next((r["inputs"] for r in rs if r["oracle"] == "exact"), None)
        if exact_n is None:
            panels.append((net, rs, None))
        else:
            panels.append((net, [r for r in rs if r["inputs"] != exact_n], None))
            panels.append((net, [r for r in rs if r["inputs"] == exact_n], exact_n))
    cols = min(3 if any(p[2] is not None for p in panels) else 2, len(panels))
    fig = _figure(4.6 * cols, 3.7 * math.ceil(len(panels) / cols))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(panels) / cols), cols)).reshape(-1)
    for ax in axes[len(panels):]:
        ax.axis("off")
    for ax, (net, rs, same) in zip(axes, panels):
        sizes = sorted({r["inputs"] for r in rs}, reverse=True)
        for m in sizes:
            for oracle in dict.fromkeys(r["oracle"] for r in rs if r["inputs"] == m):
                curve = sorted((r for r in rs if r["inputs"] == m and r["oracle"] == oracle), key=lambda r: r["eps"])
                colour, style = _ACCURACY_STYLE.get(oracle, (None, "-"))
                if m != sizes[0] and oracle == "crown":  # crown on the smaller set too: dotted, on top
                    colour, style = "tab:cyan", ":"
                ax.plot([r["eps"] for r in curve], [r["certified"] / r["inputs"] for r in curve], style,
                        color=colour, label=f"{oracle} (n={m})", zorder=3 if style == ":" else 2)
        name = net.removesuffix(".onnx")
        title = (f"{name}: the same {same} inputs as exact" if same is not None else
                 f"{name}: first {sizes[0]} test inputs" if len(sizes) == 1 else
                 f"{name} (n: first n test inputs)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ε (L∞)")
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def plot_scaling(rows: list[dict[str, Any]], path: Path) -> None:
    fig = _figure(10, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    for algorithm in dict.fromkeys(r["algorithm"] for r in rows if r["study"] == "precision"):
        rs = [r for r in rows if r["study"] == "precision" and r["algorithm"] == algorithm]
        deltas = sorted({r["precision"] for r in rs})
        ax1.plot(deltas, [_median(r["oracle_calls"] for r in rs if r["precision"] == d) for d in deltas], "o-",
                 label=f"{algorithm}: boxes asked")
        ax1.plot(deltas, [_median(r["rounds"] for r in rs if r["precision"] == d) for d in deltas], "x:",
                 label=f"{algorithm}: rounds")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("precision δ")
    ax1.set_ylabel("median per input")
    ax1.legend(fontsize=6)
    for (net, device) in dict.fromkeys((r["network"], r["device"]) for r in rows if r["study"] == "batch"):
        rs = sorted((r for r in rows if r["study"] == "batch" and r["network"] == net and r["device"] == device),
                    key=lambda r: r["batch"])
        ax2.plot([r["batch"] for r in rs], [r["boxes_per_second"] for r in rs], "o-", label=f"{net} ({device})")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("CROWN boxes / s")
    ax2.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def plot_example_boxes(dataset: str, path: Path) -> None:
    certs = _ALGO_CERTS.get(dataset, {})
    if not certs:
        return
    name = next(n for (_, n) in certs)
    from parallelepipedonn.plotting import plot_comparison

    plot_comparison([c for (a, n), c in certs.items() if n == name], path)


# ---------------------------------------------------------------- driver

def run(cfg: PaperConfig, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the parts of ``cfg``; returns the Markdown files written (name -> path)."""
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    need_reference = {"algorithms", "duals", "audit"} & set(cfg.parts)
    if need_reference and not (cfg.reference / "nets").is_dir():
        raise ppn.ConfigError(f"the original system's reference data is not at {cfg.reference} "
                              "(parts algorithms, duals and audit need it; see --reference)")
    stamp = (f"Machine: {machine()}. Command: `parallelepipedonn bench paper{' --quick' if cfg.quick else ''}`"
             f"{' (quick: a subset)' if cfg.quick else ''}.")
    algo_rows: list[dict[str, Any]] = []
    dual_rows: list[dict[str, Any]] = []
    audit_rows: list[dict[str, Any]] = []
    exact: dict[str, dict[str, ppn.Certificate]] = {}
    started = time.perf_counter()

    def done(part: str, since: float) -> float:
        echo(f"bench paper: {part} done in {time.perf_counter() - since:.0f} s")
        return time.perf_counter()

    mark = started
    for dataset in REFERENCE_NETS if need_reference else ():
        net, inputs = reference_set(cfg, dataset)
        if {"algorithms", "audit"} & set(cfg.parts):
            algos = cfg.algorithms if "algorithms" in cfg.parts else ("exact",)
            rows = run_algorithms(replace(cfg, algorithms=algos), dataset, net, inputs)
            algo_rows += rows if "algorithms" in cfg.parts else []
            exact[dataset] = {n: c for (a, n), c in _ALGO_CERTS[dataset].items() if a == "exact"}
        classes: dict[int, ppn.DualBox] = {}
        if {"duals", "audit"} & set(cfg.parts):
            drows, classes = run_duals(cfg, dataset, net, inputs) if "duals" in cfg.parts else \
                ([], {c: ppn.dual_box(net, c, workers=cfg.workers) for c in sorted({i.label for i in inputs})})
            dual_rows += drows
        if "audit" in cfg.parts:
            audit_rows += audit(cfg, dataset, net, inputs, exact[dataset], classes)
        if "algorithms" in cfg.parts:
            plot_example_boxes(dataset, out / f"boxes_{dataset}.png")
        mark = done(f"{dataset} reference experiments", mark)
    if algo_rows:
        write_csv(out / "algorithms.csv", algo_rows)
        text = ("Every algorithm on the original system's reference nets and inputs (label = the class in the file "
                "name, as in the original runs; an input the net misclassifies gets no box, min edge 0), precision "
                f"δ = {cfg.precision:g}, beside the original's published rows (*italic*: Marabou, δ = 0.1 — "
                "radii in steps of 1/16 — 60 min time-out per input, time-outs counted as proofs). "
                "`apothem / exact`: certified apothem over the exact optimum (the `exact` algorithm's proven upper "
                "bound), certified inputs; `gap`: the result's own proven apothem upper bound minus its apothem. "
                f"The slow volume-oriented searches ({', '.join(f'`{a}`' for a in SLOW)}) ran on {cfg.slow_inputs} "
                f"inputs per dataset (spread over the classes) with a time limit of {cfg.slow_time_limit:g} s per "
                "input; a time-out returns the box certified until then. "
                f"{stamp}\n")
        for dataset in dict.fromkeys(r["dataset"] for r in algo_rows):
            text += f"\n**{DATASET_TITLE[dataset]}** ({len({r['input'] for r in algo_rows if r['dataset'] == dataset})}"
            text += " inputs)\n\n" + algorithms_table(dataset, [r for r in algo_rows if r["dataset"] == dataset],
                                                      [r for r in dual_rows if r["dataset"] == dataset]) + "\n"
        written["summary"] = _write(out / "summary.md", text)
        plot_min_edges(algo_rows, out / "min_edge.png")
        plot_apothem_vs_exact(algo_rows, out / "apothem_vs_exact.png")
        plot_times(algo_rows, out / "time.png")
    if dual_rows:
        write_csv(out / "duals.csv", [{k: r.get(k) for k in dual_rows[0]} for r in dual_rows])
        cls = [r for r in dual_rows if r["method"] == "dual milp"]
        text = (f"Exact dual boxes: {sum(r['whole_region'] for r in cls)} of {len(cls)} classes of the two reference "
                f"nets have the whole domain [0,1]^784 as their exact dual box "
                f"({sum(r['exact'] for r in cls)} of {sum(r['bounds'] for r in cls)} bounds proven exact). {stamp}\n")
        written["duals"] = _write(out / "duals.md", text)
    if audit_rows:
        write_csv(out / "audit.csv", [{k: r.get(k) for k in _columns(audit_rows)} for r in audit_rows])
        written["audit"] = _write(out / "audit.md", audit_markdown(audit_rows) + f"\n{stamp}\n")
    if "accuracy" in cfg.parts:
        rows = accuracy_curves(cfg)
        if rows:
            write_csv(out / "accuracy.csv", rows)
            plot_accuracy(rows, out / "accuracy.png")
            written["accuracy"] = _write(out / "accuracy.md", accuracy_markdown(rows) + f"\n{stamp}\n")
        from benchmarks import gmm

        gmm_rows = [r for ds in ("mnist", "fashion-mnist") if ppn.datasets.dataset_available(ds)
                    for r in gmm.part_accuracy(ds, 100 if cfg.quick else None, 5 if cfg.quick else 200, cfg.progress)]
        if gmm_rows:
            gmm.write_rows(out / "gmm_accuracy.csv", gmm_rows)
            written["gmm_accuracy"] = _write(out / "gmm_accuracy.md", gmm.accuracy_markdown(gmm_rows) + f"\n{stamp}\n")
        mark = done("accuracy", mark)
    if "scaling" in cfg.parts:
        rows = scaling(cfg)
        write_csv(out / "scaling.csv", [{k: r.get(k) for k in _columns(rows)} for r in rows])
        plot_scaling(rows, out / "scaling.png")
        written["scaling"] = _write(out / "scaling.md", scaling_markdown(rows) + f"\n{stamp}\n")
        mark = done("scaling", mark)
    echo(f"bench paper: {', '.join(cfg.parts)} in {time.perf_counter() - started:.0f} s; results in {out}")
    return written


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_from_args(args: argparse.Namespace) -> PaperConfig:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ppn.ConfigError(f"unknown bench part(s) {', '.join(unknown)}; available: {', '.join(PARTS)}")
    algorithms = tuple(a.strip() for a in args.algorithms.split(",") if a.strip())
    if "audit" in parts and "exact" not in algorithms:
        algorithms += ("exact",)
    out = Path(args.out) if args.out else RESULTS / ("paper-quick" if args.quick else "paper")
    return PaperConfig(out=out, quick=args.quick, parts=parts, inputs=args.inputs, algorithms=algorithms,
                       reference=Path(args.reference), progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_paper_arguments(ap)
    args = ap.parse_args(argv)
    run(config_from_args(args))
    if args.readme:
        from benchmarks import readme

        readme.main()


if __name__ == "__main__":
    main()
