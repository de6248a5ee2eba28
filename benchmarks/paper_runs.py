"""``bench paper``: the experiments (see :mod:`benchmarks.paper`), each part's rows.

The original system's reference nets and inputs (:func:`reference_set`), and one function
per part that runs it and returns its rows (dicts, one per measurement): every search
algorithm (:func:`run_algorithms`), the dual boxes (:func:`run_duals`), the audit of the
original's published certificates (:func:`audit`), certified accuracy
(:func:`accuracy_curves`) and scaling (:func:`scaling`). Tables and figures of these rows
are :mod:`benchmarks.paper_report`'s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import REFERENCE_NETS, published_log
from benchmarks.options import ALGORITHMS, PARTS, REFERENCE, RESULTS
from oracles import AttackOracle, CrownOracle, make_oracle
from oracles.base import Oracle, Verdict
from oracles.distance import cube
from parallelepipedonn.certify import build_oracles

log = logging.getLogger(__name__)

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
    command: str = "parallelepipedonn bench paper"  # what produced the results (their stamp)

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


# ---------------------------------------------------------------- reference data

@dataclass(frozen=True)
class RefInput:
    name: str
    x: np.ndarray
    label: int


def reference_set(cfg: PaperConfig, dataset: str) -> tuple[ppn.Network, list[RefInput]]:
    """The original system's net and inputs of ``dataset`` (unreadable files skipped,
    as the original's tables do); ``cfg.n_inputs`` of them evenly spaced in file-name order."""
    net = ppn.load_onnx(cfg.reference / "nets" / REFERENCE_NETS[dataset])
    items = []
    for f in sorted((cfg.reference / "inputs" / dataset).glob("*.csv")):
        try:
            items.append(RefInput(f.stem, ppn.load_input(f, net.input_shape), int(f.stem.split("-")[0])))
        except ppn.InputDataError as exc:
            log.info("skipping %s: %s", f, exc)
    return net, spread(items, cfg.n_inputs)


def spread(items: list, n: int | None) -> list:
    """``n`` of ``items`` evenly spaced in their order (all when ``n`` is None or larger);
    for the reference inputs, their file-name order: not one per class."""
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
    ALGO_CERTS[dataset] = certs
    return rows


#: The certificates of the last ``run_algorithms`` per dataset: (algorithm, input name) -> certificate.
ALGO_CERTS: dict[str, dict[tuple[str, str], ppn.Certificate]] = {}


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
    for name, pub in published_log(dataset, "c-bu-d", cfg.reference).items():
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
        elif cert.status is ppn.Status.NOT_ROBUST:
            verdict, point = "unsound", item.x            # the input itself is not classified as its label
        elif cert.status is not ppn.Status.CERTIFIED:
            verdict = "undecided"                         # the exact search proved nothing (a time-out)
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
            AUDIT_POINTS[dataset, name] = point
        rows.append(row)
    for name, pub in published_log(dataset, "complete-c-d-bu", cfg.reference).items():
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


#: The audit's confirmed offending points: (dataset, input name) -> point.
AUDIT_POINTS: dict[tuple[str, str], np.ndarray] = {}


# ---------------------------------------------------------------- part 4: certified accuracy

def verify_cubes(oracle: Oracle, xs: np.ndarray, labels: np.ndarray, eps: float, mask: np.ndarray,
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
                v_crown = verify_cubes(crown, xs, ys, eps, correct)
                unsure = sub & correct & (v_crown != 1)
                v_alpha = verify_cubes(alpha, xs, ys, eps, unsure)
                v_attack = verify_cubes(attack, xs, ys, eps, unsure & (v_alpha != 1))
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
