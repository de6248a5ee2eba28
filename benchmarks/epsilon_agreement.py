"""Do ``verify --input --epsilon`` and ``certify --epsilon`` agree with the exact best
apothem on the original system's reference inputs?

    python -m benchmarks.epsilon_agreement [--dataset mnist] [--margin 0.001] [--timeout 60]

The exact best apothem of each input is read from ``exact_apothem_<dataset>.csv`` (written
by ``python -m benchmarks.exact_apothem``: the ``milp`` route's proven bracket
``[lower, upper]``; an input without it gets the bracket computed here by ``milp``'s
distance query). Robust at ε holds iff ε is below the exact apothem, so each input is
asked twice, by both commands' library functions (:func:`parallelepipedonn.verify.verify_epsilon`,
:func:`parallelepipedonn.certify.certify` with ``epsilon``):

* ε = (1 − margin)·lower: expected ``unsat`` / ``certified``;
* ε = (1 + margin)·upper: expected ``sat`` / ``not-robust``.

An answer that differs from the expected one is counted as a disagreement when it is the
opposite verdict (that would be a soundness bug) and as undecided otherwise (unknown,
timeout). Writes ``epsilon_agreement_<dataset>.csv`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from tqdm import tqdm

import parallelepipedonn as ppn
from benchmarks.common import REFERENCE, REFERENCE_NETS, RESULTS, machine, markdown_table, reference_inputs, write_csv
from parallelepipedonn.certify import CertifyConfig, certify
from parallelepipedonn.verify import Answer, VerifyConfig, verify_epsilon

EXPECTED = {True: ("unsat", "certified"), False: ("sat", "not-robust")}


def exact_brackets(out: Path, dataset: str) -> dict[str, tuple[float, float]]:
    """``input -> (lower, upper)``: the milp route's proven bracket of the exact apothem."""
    path = out / f"exact_apothem_{dataset}.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["input"]: (float(r["milp_lower"]), float(r["milp_upper"]))
                for r in csv.DictReader(f) if r["status"] == "certified" and r.get("milp_lower")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist", choices=list(REFERENCE_NETS))
    ap.add_argument("--margin", type=float, default=0.001, help="relative distance of the two radii from the bracket")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per question")
    ap.add_argument("--limit", type=int, default=None, help="only the first N inputs")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if not (REFERENCE / "nets").is_dir():
        raise SystemExit(f"reference data not found at {REFERENCE}")
    out = Path(args.out)
    net = ppn.load_onnx(REFERENCE / "nets" / REFERENCE_NETS[args.dataset])
    brackets = exact_brackets(out, args.dataset)
    rows = []
    for name, x, label in tqdm(reference_inputs(REFERENCE, args.dataset, net)[:args.limit], disable=None,
                               desc="inputs"):
        if int(net.predict(x)[0]) != label:
            continue  # misclassified: no certification exists
        if name not in brackets:
            exact = certify(net, x, label, config=CertifyConfig(algorithm="exact", oracle="milp"))
            brackets[name] = (exact.apothem or 0.0, exact.apothem_upper_bound)
        lower, upper = brackets[name]
        for robust, eps in ((True, (1 - args.margin) * lower), (False, (1 + args.margin) * upper)):
            row = {"input": name, "label": label, "exact_lower": lower, "exact_upper": upper, "epsilon": eps,
                   "expected": "robust" if robust else "not robust"}
            t = time.perf_counter()
            v = verify_epsilon(net, x, eps, label=label, config=VerifyConfig(), timeout=args.timeout)
            row["verify"], row["verify_seconds"] = v.answer.value, time.perf_counter() - t
            t = time.perf_counter()
            c = certify(net, x, label, config=CertifyConfig(epsilon=eps, search_time_limit=args.timeout))
            row["certify"], row["certify_seconds"] = c.epsilon["status"], time.perf_counter() - t
            if v.answer is Answer.SAT:  # confirmed exactly by verify; checked again here
                assert net.misclassified(v.counterexample, label)[0]
            rows.append(row)
    write_csv(out / f"epsilon_agreement_{args.dataset}.csv", rows)
    text = summary_text(args, rows)
    (out / f"epsilon_agreement_{args.dataset}.md").write_text(text)
    print(text)


def summary_text(args: argparse.Namespace, rows: list[dict]) -> str:
    body = []
    for robust in (True, False):
        part = [r for r in rows if (r["expected"] == "robust") is robust]
        if not part:
            continue
        want_v, want_c = EXPECTED[robust]
        opposite_v, opposite_c = EXPECTED[not robust]
        for cmd, want, opposite in (("verify", want_v, opposite_v), ("certify", want_c, opposite_c)):
            secs = [r[f"{cmd}_seconds"] for r in part]
            body.append([f"`{cmd} --epsilon`", "(1 − m)·lower" if robust else "(1 + m)·upper", want, len(part),
                         sum(r[cmd] == want for r in part), sum(r[cmd] == opposite for r in part),
                         sum(r[cmd] not in (want, opposite) for r in part), f"{statistics.median(secs):.2f}",
                         f"{max(secs):.2f}"])
    table = markdown_table(["command", "ε", "expected", "inputs", "agree", "opposite verdict", "undecided",
                            "median s", "max s"], body)
    return (f"Robust at ε against the exact best apothem, reference {args.dataset} inputs, margin m = "
            f"{args.margin:g}, time limit {args.timeout:g} s per question — "
            f"`python -m benchmarks.epsilon_agreement --dataset {args.dataset}`\n\nMachine: {machine()}. "
            f"The exact bracket [lower, upper] is the `milp` route's of `benchmarks.exact_apothem`.\n\n{table}\n")


if __name__ == "__main__":
    main()
