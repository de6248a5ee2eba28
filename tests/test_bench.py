"""`bench paper`: the original experiments rerun, and the audit of the original's certificates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import parallelepipedonn as ppn
from benchmarks import paper, readme
from benchmarks.common import REFERENCE, published_log
from parallelepipedonn.cli import build_parser

needs_reference = pytest.mark.skipif(not (REFERENCE / "nets").is_dir(),
                                     reason=f"the original system's reference data is not at {REFERENCE}")


def test_bench_paper_is_a_cli_subcommand():
    args = build_parser().parse_args(["bench", "paper", "--quick", "--parts", "audit", "--out", "x"])
    cfg = paper.config_from_args(args)
    assert cfg.quick and cfg.parts == ("audit",) and "exact" in cfg.algorithms


def test_unknown_part_is_a_config_error():
    args = build_parser().parse_args(["bench", "paper", "--parts", "nonsense"])
    with pytest.raises(ppn.ConfigError, match="nonsense"):
        paper.config_from_args(args)


@pytest.mark.parametrize("argv, message", [
    (["--parts", ","], "names no part"),
    (["--algorithms", ","], "names no algorithm"),
    (["--algorithms", "apothem-kary,nonsense"], "nonsense"),
    (["--inputs", "0"], "at least 1"),
    (["--out", __file__], "not a directory"),
])
def test_bad_options_are_config_errors_before_any_run(argv, message):
    args = build_parser().parse_args(["bench", "paper", *argv])
    with pytest.raises(ppn.ConfigError, match=message):
        paper.config_from_args(args)


def test_repeated_algorithms_run_once():
    args = build_parser().parse_args(["bench", "paper", "--algorithms", "apothem-kary,apothem-kary,exact"])
    assert paper.config_from_args(args).algorithms == ("apothem-kary", "exact")


def test_the_stamp_names_the_options_that_chose_the_inputs_and_algorithms():
    args = build_parser().parse_args(["bench", "paper", "--inputs", "2", "--algorithms", "exact", "--parts",
                                      "algorithms"])
    assert paper.config_from_args(args).command == \
        "parallelepipedonn bench paper --parts algorithms --inputs 2 --algorithms exact"


@pytest.mark.parametrize("argv", [["--out", "elsewhere", "--readme"], ["--quick", "--readme"]])
def test_readme_is_refused_for_results_it_would_not_read(argv):
    with pytest.raises(ppn.ConfigError, match="--readme"):
        paper.config_from_args(build_parser().parse_args(["bench", "paper", *argv]))


def test_an_unwritable_out_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = paper.PaperConfig(out=blocker / "results", parts=("scaling",))
    with pytest.raises(ppn.OutputPathError):
        paper.run(cfg, echo=lambda _: None)


def _algorithm_row(algorithm: str, name: str) -> dict:
    return {"dataset": "mnist", "algorithm": algorithm, "oracle": "box", "input": name, "seconds": 1.0,
            "min_edge": 0.1, "status": "certified", "apothem_over_exact": 0.5, "log_volume": -1.0, "gap": 0.0,
            "timed_out": False, "oracle_calls": 3}


def test_the_originals_row_is_over_our_inputs_and_counts_its_own_time_outs(tmp_path):
    """Beside a search run on some inputs, the original's row is over those inputs; its
    time-outs are its log's flag (a run may end after 3600 s without one)."""
    from benchmarks.paper_report import algorithms_table

    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "mnist-td.log").write_text(
        "../data/inputs/2-4.csv 10 3605.54 900 0.1 3000.0 11 0\n"   # over the limit, not a time-out
        "../data/inputs/0-4.csv 10 3614.97 900 0.2 3000.0 11 1\n"
        "../data/inputs/5-5.csv 10 100.0 900 0.3 90.0 11 1\n")      # not among our inputs
    rows = [_algorithm_row("box-topdown", n) for n in ("2-4", "0-4")]
    table = algorithms_table("mnist", rows, [], tmp_path)
    original = next(line for line in table.splitlines() if "original `td`" in line).split(" | ")
    assert original[3] == "1" and original[6] == "2/2"
    assert original[2].startswith("3605.540 /")


@needs_reference
def test_the_audit_calls_an_unknown_exact_result_undecided_not_unsound():
    from benchmarks.paper_runs import PaperConfig, audit, reference_set

    cfg = PaperConfig(inputs=1)
    net, inputs = reference_set(cfg, "mnist")
    item = inputs[0]
    cert = ppn.certify(net, item.x, item.label)
    unknown = cert.with_updates(status=ppn.Status.UNKNOWN, box=None, reason="the oracle could not verify")
    row = next(r for r in audit(cfg, "mnist", net, inputs, {item.name: unknown}, {}) if r["claim"] == "c-bu-d cube")
    assert row["verdict"] == "undecided" and "point_distance" not in row


def test_spread_takes_evenly_spaced_items():
    assert paper.spread(list(range(10)), 2) == [0, 5]
    assert paper.spread([1, 2], None) == [1, 2] and paper.spread([1, 2], 5) == [1, 2]


@needs_reference
def test_audit_finds_the_published_unsound_cube_and_confirms_the_point():
    """The original's c-bu-d certified the cube of radius 0.125 around Fashion-MNIST 0-1;
    its exact minimum adversarial distance is below that, so the cube holds a point the
    net does not classify 0 — found, and checked by a forward pass."""
    cfg = paper.PaperConfig(progress=False)
    net, inputs = paper.reference_set(cfg, "fashion-mnist")
    item = next(i for i in inputs if i.name == "0-1")
    assert published_log("fashion-mnist", "c-bu-d")["0-1"]["min_edge"] == pytest.approx(0.125)
    cert = ppn.certify(net, item.x, item.label, config=ppn.CertifyConfig(algorithm="exact"))
    rows = paper.audit(cfg, "fashion-mnist", net, [item], {"0-1": cert}, {})
    (row,) = [r for r in rows if r["claim"] == "c-bu-d cube"]
    assert row["verdict"] == "unsound"
    point = paper.AUDIT_POINTS["fashion-mnist", "0-1"]
    assert np.abs(point - item.x).max() <= 0.125 and ((0 <= point) & (point <= 1)).all()
    assert net.margins(point, 0)[0] <= 0                  # not classified 0 (a tie counts as not robust)


@needs_reference
def test_paper_run_writes_tables_beside_the_published_rows(tmp_path):
    cfg = paper.PaperConfig(out=tmp_path, quick=True, parts=("algorithms", "audit"), inputs=1,
                            algorithms=("apothem-bisection", "exact"), progress=False)
    written = paper.run(cfg, echo=lambda _: None)
    summary = written["summary"].read_text()
    assert "`apothem-bisection`" in summary and "*original `c-bu-d`*" in summary
    assert (tmp_path / "algorithms.csv").is_file() and (tmp_path / "min_edge.png").stat().st_size > 0
    assert "checked" in written["audit"].read_text()
    # the README's blocks are filled from these files, verbatim
    text = "x\n<!-- results:paper/summary -->\nold\n<!-- /results:paper/summary -->\ny\n"
    filled = readme.render(text, _results_root(tmp_path))
    assert summary.strip() in filled and "old" not in filled


def _results_root(out):
    """A results root in which ``paper/summary.md`` is the run's summary."""
    root = out.parent / (out.name + "-root")
    (root / "paper").mkdir(parents=True, exist_ok=True)
    (root / "paper" / "summary.md").write_text((out / "summary.md").read_text())
    return root


# -- the benchmarks are not installed: `bench` loads them from the checkout -------------------------
def test_the_distribution_does_not_install_a_top_level_benchmarks_package():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "benchmarks" not in project["tool"]["setuptools"]["packages"]


def test_bench_loads_the_benchmarks_of_the_checkout_or_says_it_needs_one(tmp_path, monkeypatch):
    from parallelepipedonn.cli import bench

    assert bench.bench_module("options").__file__ == str(paper.__file__).replace("paper.py", "options.py")
    installed = tmp_path / "site-packages" / "parallelepipedonn" / "cli" / "bench.py"  # no checkout around it
    monkeypatch.setattr(bench, "__file__", str(installed))
    with pytest.raises(ppn.ConfigError, match="need a source checkout"):
        bench.bench_module("paper")
    assert build_parser().parse_args(["bench", "paper", "--quick"]).args == ["--quick"]  # cmd_bench says why


def test_crown_vs_lirpa_rows_give_both_dtypes_speed_ups_and_tightness():
    from benchmarks.crown_vs_lirpa import _table_row

    theirs = {"cpu_seconds": 0.3, "peak_mb": 400, "bounds": [[1.0, -2.0]]}
    ours64 = {"cpu_seconds": 0.1, "peak_mb": 300, "bounds": [[1.0, -2.0 - 4e-9]]}
    ours32 = {"cpu_seconds": 0.15, "peak_mb": 300, "bounds": [[0.97, -2.1]]}
    row = _table_row("net", 1, {"ours-float64": ours64, "ours-float32": ours32, "lirpa-float32": theirs})
    assert row[6] == "3.0× / 2.0×"
    assert row[7] == "-1.0e-09; 100% / -4.0e-02; 0%"  # relative to max(1, |theirs|); f32 loses 3% and 5%
    assert row[5] == "—"  # a tool not run (not installed, or left out by --tools)
    gpu = {k: {**r, "seconds": r["cpu_seconds"] / 10, "gpu_peak_mb": 50} for k, r in
           {"ours-float64": ours64, "ours-float32": ours32, "lirpa-float32": theirs}.items()}
    gpu["lirpa-float32"]["seconds"] = 0.06  # on a GPU (--device cuda) the ratios are of wall times
    row = _table_row("net", 1, gpu, "seconds")
    assert row[6] == "6.0× / 4.0×" and row[2] == "10.0 ms (50 GPU)"


def test_crown_vs_lirpa_boxes_of_a_vnncomp_network_are_its_instances_boxes_of_one_class(tmp_path, monkeypatch):
    """The boxes of a VNN-COMP network: the input boxes of its instances (not another
    network's), those whose centre it classifies as the most frequent class, cycled."""
    import benchmarks.crown_vs_lirpa as cvl
    from parallelepipedonn.network import Affine, Network

    cat = tmp_path / "oval21"
    (cat / "vnnlib").mkdir(parents=True)
    rows, centres = [], {"a": (0.9, 0.1), "b": (0.2, 0.7), "c": (0.8, 0.3), "d": (0.1, 0.9)}
    for name, (p, q) in centres.items():
        (cat / "vnnlib" / f"{name}.vnnlib").write_text(
            "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            f"(assert (>= X_0 {p - 0.05}))\n(assert (<= X_0 {p + 0.05}))\n"
            f"(assert (>= X_1 {q - 0.05}))\n(assert (<= X_1 {q + 0.05}))\n(assert (>= Y_1 Y_0))\n")
        rows.append(f"{'nets/cifar_wide_kw.onnx' if name != 'd' else 'nets/other.onnx'},vnnlib/{name}.vnnlib,720")
    (cat / "oval21_instances.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(cvl, "VNNCOMP_ROOT", tmp_path)
    net = Network.from_layers([2], [Affine(np.eye(2), np.zeros(2))])  # class: the larger input
    lower, upper, label = cvl.boxes(net, "oval21-wide", 3)
    assert label == 0  # a and c (class 0) against b (class 1); d is another network's
    np.testing.assert_allclose((lower + upper) / 2, [[0.9, 0.1], [0.8, 0.3], [0.9, 0.1]])
    assert cvl.net_path("oval21-wide", tmp_path) is None  # no ONNX file there: the net is skipped


def test_the_readme_renderer_writes_nothing_for_help(monkeypatch, tmp_path):
    """``python -m benchmarks.readme --help`` rewrote README.md (it ignored its arguments)."""
    target = tmp_path / "README.md"
    target.write_text("<!-- results:x -->\nold\n<!-- /results:x -->\n")
    monkeypatch.setattr(readme, "README", target)
    with pytest.raises(SystemExit):
        readme.main(["--help"])
    assert target.read_text().endswith("old\n<!-- /results:x -->\n")
