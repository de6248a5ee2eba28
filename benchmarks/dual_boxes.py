"""Exact dual boxes on the original system's networks and inputs.

    python -m benchmarks.dual_boxes [--workers 2] [--out DIR] [--certs DIR]

1. The unrestricted exact dual box of every class of both reference nets (the box of
   all inputs of [0,1]^784 the net assigns to the class), by the milp method.
2. For each of the reference inputs: its certified apothem ``a`` (default certify), then
   the exact dual box restricted to the ball of radius ``2a`` around it, and the
   original system's ``complete-c-d-bu`` result for the same input (published logs).

Writes ``dual_classes.csv``, ``dual_inputs.csv`` and ``dual.md`` under ``--out``; with
``--certs DIR``, also every certificate and dual box computed, as JSON (``parallelepipedonn
recheck`` re-verifies them).
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import (
    REFERENCE,
    REFERENCE_NETS,
    RESULTS,
    machine,
    markdown_table,
    output_dirs,
    published_log,
    reference_inputs,
    write_csv,
)
from parallelepipedonn.dual import DualBox, dual_box


def certify_and_dual(net: ppn.Network, model_path: Path, x, label: int,
                     workers: int) -> tuple[ppn.Certificate, DualBox | None]:
    """The default certificate of an input and, if its apothem is positive, the exact dual
    box of its label in the ball of twice that apothem around it."""
    cert = ppn.certify(net, x, label, model_path=str(model_path))
    if cert.status is not ppn.Status.CERTIFIED or not cert.apothem > 0:
        return cert, None
    return cert, dual_box(net, label, x=x, radius=2 * cert.apothem, workers=workers, model_path=str(model_path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--certs", metavar="DIR", help="also write every certificate and dual box (JSON) into DIR")
    args = ap.parse_args()
    out, certs = output_dirs(args)
    class_rows, input_rows = [], []
    for dataset, net_file in REFERENCE_NETS.items():
        model_path = REFERENCE / "nets" / net_file
        net = ppn.load_onnx(model_path)
        inputs = reference_inputs(REFERENCE, dataset, net)
        for label in tqdm(range(net.n_classes), disable=None, desc=f"{dataset}: class duals"):
            candidates = [x for _, x, c in inputs if c == label]
            d = dual_box(net, label, candidates=candidates, workers=args.workers, model_path=str(model_path))
            if certs is not None:
                d.save(certs / f"{dataset}-class-{label}-dual.json")
            class_rows.append({"dataset": dataset, "label": label, "seconds": d.seconds, "exact": d.exact_count,
                               "bounds": 2 * net.n_inputs, "whole_domain": d.covers_region,
                               "empty": d.box is None, "min_edge": d.min_edge(), "log_volume": d.log_volume(),
                               **d.details})
        original = published_log(dataset, "complete-c-d-bu")
        for name, x, label in tqdm(inputs, disable=None, desc=f"{dataset}: restricted duals"):
            cert, d = certify_and_dual(net, model_path, x, label, args.workers)
            row = {"dataset": dataset, "input": name, "label": label, "status": cert.status.value}
            if certs is not None:
                cert.save(certs / f"{dataset}-{name}.json")
            if d is not None:
                if certs is not None:
                    d.save(certs / f"{dataset}-{name}-dual.json")
                radius = d.radius
                bound = d.apothem_bound(x, ppn.Box.unit(x.size))
                row.update(apothem=cert.apothem, radius=radius, seconds=d.seconds, exact=d.exact_count,
                           bounds=2 * net.n_inputs, whole_ball=d.covers_region, min_edge=d.min_edge(),
                           log_volume=d.log_volume(), implied_apothem_bound=bound, **d.details)
            if name in original:
                row.update({f"original_{k}": v for k, v in original[name].items()})
            input_rows.append(row)
    write_csv(out / "dual_classes.csv", class_rows)
    write_csv(out / "dual_inputs.csv", [{k: r.get(k) for k in _columns(input_rows)} for r in input_rows])
    text = (f"Exact dual boxes (milp method) — `python -m benchmarks.dual_boxes`\n\nMachine: {machine()}.\n\n"
            "Unrestricted: the box of every input of [0,1]^784 that the net assigns to the class.\n\n")
    rows = []
    for dataset in REFERENCE_NETS:
        rs = [r for r in class_rows if r["dataset"] == dataset]
        rows.append([dataset, f"{sum(r['whole_domain'] for r in rs)}/{len(rs)}",
                     f"{sum(r['exact'] for r in rs)}/{sum(r['bounds'] for r in rs)}",
                     f"{statistics.median(r['seconds'] for r in rs):.2f}", f"{max(r['seconds'] for r in rs):.2f}",
                     f"{sum(r['milps'] for r in rs)}", f"{min(r['min_edge'] or 0 for r in rs):.4g}"])
    text += markdown_table(["net", "classes whose dual is the whole domain", "exact bounds", "median s", "max s",
                            "MILPs solved", "smallest min edge"], rows)
    text += ("\n\nRestricted to the ball of radius 2 × the certified apothem around each reference input, beside "
             "the original system's complete-c-d-bu (δ = 0.1: 4 bisection steps, resolution 1/16; radius restriction 1, the whole domain; its "
             "seconds are from its published logs, on its own machine, not from this run: a different task and "
             "machine, not a speed comparison):\n\n")
    rows = []
    for dataset in REFERENCE_NETS:
        rs = [r for r in input_rows if r["dataset"] == dataset and "seconds" in r]
        orig = [r for r in input_rows if r["dataset"] == dataset and "original_seconds" in r]
        bounds = [r["implied_apothem_bound"] for r in rs if r["implied_apothem_bound"] is not None]
        finite = [r["log_volume"] for r in rs if r["log_volume"] is not None and math.isfinite(r["log_volume"])]
        rows.append([dataset, "ours: exact (milp), radius 2a", len(rs),
                     f"{statistics.mean(r['seconds'] for r in rs):.2f}", f"{sum(r['exact'] for r in rs)}/"
                     f"{sum(r['bounds'] for r in rs)}", f"{sum(r['whole_ball'] for r in rs)}/{len(rs)}",
                     f"{statistics.mean(r['min_edge'] for r in rs):.4f}",
                     f"{statistics.median(finite):.0f}" if finite else "n/a", len(bounds)])
        if orig:
            rows.append([dataset, "original complete-c-d-bu", len(orig),
                         f"{statistics.mean(r['original_seconds'] for r in orig):.2f}", "n/a", "n/a",
                         f"{statistics.mean(r['original_min_edge'] for r in orig):.4f}", "n/a", "n/a"])
    text += markdown_table(["dataset", "method", "inputs", "mean s", "exact bounds", "dual = whole ball",
                            "mean min edge", "median log-volume", "apothem bounds implied"], rows)
    text += "\n"
    (out / "dual.md").write_text(text)
    print(text)


def _columns(rows: list[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


if __name__ == "__main__":
    main()
