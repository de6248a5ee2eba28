"""``bench paper``: the tables (Markdown) and figures (PNG) of the parts' rows.

Each part's rows (:mod:`benchmarks.paper_runs`) as the Markdown the README's "Results"
blocks are made of, laid out like the original README's tables with its published rows
beside ours (:func:`algorithms_table`, :func:`audit_markdown`, :func:`accuracy_markdown`,
:func:`scaling_markdown`), and the figures (``plot_*``, matplotlib imported lazily).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import REFERENCE, markdown_table, published_log
from benchmarks.paper_runs import ALGO_CERTS

# Our algorithm -> the original system's algorithm that solves the same problem.
ORIGINAL = {"apothem-bisection": "c-bu-d", "box-bisection": "bu-d-dfs", "box-topdown": "td",
            "topdown-box": "td+bu-d-dfs", "dual complete-cubic": "complete-c-d-bu", "dual complete-bu": "complete-bu"}
DATASET_TITLE = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
EPS_TABLE = (0.01, 0.02, 0.05, 0.1)


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


# ---------------------------------------------------------------- tables

def algorithms_table(dataset: str, rows: list[dict[str, Any]], dual_rows: list[dict[str, Any]],
                     reference: Path = REFERENCE) -> str:
    """The original README's table layout, our rows with the published row of the same
    problem beside them, over the same inputs as ours (dual rows, per class: over all of
    the original's); the original's time-outs are its own flag (its log's last field)."""
    header = ["algorithm", "oracle", "time min / avg / max / std (s)", "time-outs", "oracle calls avg",
              "min edge min / avg / max / std", "non-trivial", "apothem / exact: median / min",
              "median log-volume", "median gap"]
    table = []

    def published_row(original: str, inputs: set[str] | None) -> None:
        pub = published_log(dataset, original, reference)
        v = [p for name, p in pub.items() if inputs is None or name in inputs]
        if not v:
            return
        t, e = _stats([p["seconds"] for p in v]), _stats([p["min_edge"] for p in v])
        table.append([f"*original `{original}`*", "Marabou", " / ".join(_f(s, 3) for s in t),
                      f"{sum(p['timeouts'] > 0 for p in v)}",
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
            published_row(ORIGINAL[algorithm], {r["input"] for r in rs})
    for method in dict.fromkeys(r["method"] for r in dual_rows):
        rs = [r for r in dual_rows if r["method"] == method]
        t, e = _stats([r["seconds"] for r in rs]), _stats([r["min_edge"] or 0.0 for r in rs])
        table.append([f"`{method}` (dual)", "milp", " / ".join(_f(s, 3) for s in t),
                      f"{sum(r['timeouts'] for r in rs)}", f"{statistics.fmean(r['queries'] for r in rs):.0f}",
                      " / ".join(_f(s, 3) for s in e), f"{sum((r['min_edge'] or 0) > 0 for r in rs)}/{len(rs)}",
                      "—", _f(_median(r["log_volume"] for r in rs if r["log_volume"] is not None), 4), "—"])
        if method in ORIGINAL:
            published_row(ORIGINAL[method], None)
    return markdown_table(header, table)


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

def figure(width: float = 7.0, height: float = 4.0):
    """A matplotlib figure with a constrained layout (matplotlib imported here, lazily)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_min_edges(rows: list[dict[str, Any]], path: Path, reference: Path = REFERENCE) -> None:
    """Min-edge distribution per algorithm (as the original's figures), per dataset; the
    original's ``c-bu-d`` min edges are its claims (Marabou, time-outs counted as proofs),
    which the audit refutes for some inputs: drawn in grey and labelled so."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = figure(10, 3.2 * len(datasets))
    axes = np.atleast_1d(fig.subplots(len(datasets), 1))
    for ax, dataset in zip(axes, datasets):
        algos = list(dict.fromkeys(r["algorithm"] for r in rows if r["dataset"] == dataset))
        data = [[r["min_edge"] for r in rows if r["dataset"] == dataset and r["algorithm"] == a] for a in algos]
        pub = published_log(dataset, "c-bu-d", reference)
        if pub:
            algos.append(f"original c-bu-d: claimed,\nnot all sound (audit; n={len(pub)})")
            data.append([p["min_edge"] for p in pub.values()])
        parts = ax.boxplot(data, showfliers=True, patch_artist=True)
        for k, box in enumerate(parts["boxes"]):
            box.set_facecolor("lightgrey" if pub and k == len(data) - 1 else "white")
        ax.set_xticks(range(1, len(algos) + 1), algos, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("min edge length")
        ax.set_title(f"{DATASET_TITLE[dataset]}: min edge length per input", fontsize=10)
    fig.savefig(path, dpi=110)


def plot_apothem_vs_exact(rows: list[dict[str, Any]], path: Path) -> None:
    fig = figure(6, 5)
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


def plot_times(rows: list[dict[str, Any]], path: Path, reference: Path = REFERENCE) -> None:
    """Time per input per algorithm, one colour per dataset (the original's rows too)."""
    fig = figure(10, 4)
    ax = fig.subplots()
    algos = list(dict.fromkeys(r["algorithm"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    colours = {d: f"C{k}" for k, d in enumerate(datasets)}
    columns: list[tuple[str, dict[str, list[float]]]] = [
        (a, {d: [r["seconds"] for r in rows if r["algorithm"] == a and r["dataset"] == d] for d in datasets})
        for a in algos]
    for name in ("c-bu-d", "td"):
        pub = {d: [p["seconds"] for p in published_log(d, name, reference).values()] for d in datasets}
        if any(pub.values()):
            columns.append((f"original {name}\n(Marabou, δ = 1/16)", pub))
    for k, (_, by_dataset) in enumerate(columns):
        for j, d in enumerate(datasets):
            secs = by_dataset[d]
            centre = k + (j - (len(datasets) - 1) / 2) * 0.35
            ax.scatter(np.full(len(secs), centre) + np.linspace(-0.12, 0.12, len(secs)), secs, s=6,
                       c=colours[d], label=DATASET_TITLE.get(d, d) if k == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(range(len(columns)), [c[0] for c in columns], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("seconds per input (log)")
    ax.legend(fontsize=7)
    ax.set_title("Time per input per algorithm and dataset", fontsize=10)
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
    fig = figure(4.6 * cols, 3.7 * math.ceil(len(panels) / cols))
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
    fig = figure(10, 3.6)
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
    certs = ALGO_CERTS.get(dataset, {})
    if not certs:
        return
    name = next(n for (_, n) in certs)
    from parallelepipedonn.plotting import plot_comparison

    plot_comparison([c for (a, n), c in certs.items() if n == name], path)
