"""benchmarks.vnncomp: instances read from a VNN-COMP layout (absent categories skipped),
each verified by a fresh `parallelepipedonn verify` process, a `sat` counterexample
confirmed by onnxruntime, answers set against the published ones, and the tables written."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from benchmarks import vnncomp
from tests.nets import saved_classifier
from tests.test_verify import property_text, robustness


def _layout(tmp_path):
    """A category ``toy``: a 6-12-12-3 classifier, one property that holds (a tiny ball
    around ``x``) and one that does not (the whole unit box: other classes occur)."""
    cat = tmp_path / "root" / "toy"
    (cat / "specs").mkdir(parents=True)
    c = saved_classifier(cat)
    (cat / "specs" / "holds.vnnlib").write_text(property_text(c.x - 1e-4, c.x + 1e-4, robustness(c.label, 3), 3))
    (cat / "specs" / "fails.vnnlib").write_text(property_text(np.zeros(6), np.ones(6), robustness(c.label, 3), 3))
    with open(cat / "toy_instances.csv", "w", newline="") as f:
        csv.writer(f).writerows([["m.onnx", "./specs/holds.vnnlib", "30"], ["m.onnx", "./specs/fails.vnnlib", "30"]])
    return c


def test_selection_filters_by_pattern_and_skips_absent_categories(tmp_path):
    _layout(tmp_path)
    root = tmp_path / "root"
    assert vnncomp.parse_select("toy=holds;acasxu") == {"toy": "holds", "acasxu": "."}
    assert vnncomp.parse_select("toy,acasxu") == {"toy": ".", "acasxu": "."}
    (inst,) = vnncomp.select(root, {"toy": r"holds", "acasxu": "."}, None)  # a VNN-COMP category not fetched
    assert (inst.category, inst.onnx, inst.vnnlib, inst.timeout) == ("toy", "m.onnx", "./specs/holds.vnnlib", 30.0)
    assert len(vnncomp.select(root, {"toy": "."}, 1)) == 1
    # a seeded random sample, in the file's order
    picks = [vnncomp.select(root, {"toy": "."}, None, sample=1, seed=s)[0].vnnlib for s in range(8)]
    assert set(picks) == {"./specs/holds.vnnlib", "./specs/fails.vnnlib"}
    assert picks == [vnncomp.select(root, {"toy": "."}, None, sample=1, seed=s)[0].vnnlib for s in range(8)]
    assert [i.vnnlib for i in vnncomp.select(root, {"toy": "."}, None, sample=5)] == \
        ["./specs/holds.vnnlib", "./specs/fails.vnnlib"]


def test_a_pattern_may_hold_commas_and_an_unknown_category_is_refused(tmp_path):
    """Parts are separated by ';' only: a pattern is searched in 'onnx,vnnlib', so a comma
    in it is the pattern's; a name neither under the root nor a VNN-COMP 2021 category (a
    typo, or a piece of a pattern) is refused, not skipped."""
    _layout(tmp_path)
    root = tmp_path / "root"
    assert vnncomp.parse_select(r"acasxu=1_1_batch_2000\.onnx,prop_1") == {"acasxu": r"1_1_batch_2000\.onnx,prop_1"}
    choices = vnncomp.parse_select(r"toy=m\.onnx,\./specs/fails;mnistfc")
    assert choices == {"toy": r"m\.onnx,\./specs/fails", "mnistfc": "."}
    assert [i.vnnlib for i in vnncomp.select(root, choices, None)] == ["./specs/fails.vnnlib"]
    assert vnncomp.check_categories(root, choices) == ["mnistfc"]
    with pytest.raises(ValueError, match="unknown category 'prop_1'"):
        vnncomp.select(root, {"toy": ".", "prop_1": "."}, None)
    with pytest.raises(ValueError, match="separate categories with ';'"):  # the old form: not read as one REGEX
        vnncomp.parse_select("mnistfc=256x2,acasxu=prop_1")
    for bad in ("toy=holds;to y", "toy=(unclosed"):
        with pytest.raises(ValueError):
            vnncomp.parse_select(bad)
    with pytest.raises(SystemExit, match="unknown category 'typo'"):
        vnncomp.main(["--root", str(root), "--select", "toy;typo", "--no-peer", "--out", str(tmp_path / "out")])


def test_a_named_run_without_the_peer_is_set_against_the_published_answers(tmp_path):
    """``--name`` keeps another selection's files beside the default ones; without
    alpha-beta-CROWN's rows the summary says so and sets ours against its published 2021
    answers: solved only by ours, only by it."""
    out = tmp_path / "out"
    base = {"category": "toy", "onnx": "m.onnx", "tool": "ours", "order": 0, "timeout": 30, "verify_s": 1.0,
            "process_s": 3.0, "rc": 0, "load1": 0.5, "note": ""}
    rows = [{**base, "vnnlib": "a.vnnlib", "answer": "unsat", "cex": "", "published": "unsat", "abcrown_2021": "unsat"},
            {**base, "vnnlib": "b.vnnlib", "answer": "sat", "cex": "confirmed", "published": "-", "abcrown_2021": "-"},
            {**base, "vnnlib": "c.vnnlib", "answer": "timeout", "cex": "", "published": "unsat",
             "abcrown_2021": "unsat"},
            {**base, "onnx": "nets/big.onnx", "vnnlib": "d.vnnlib", "answer": "missing", "cex": "", "published": "-",
             "abcrown_2021": "-"}]
    vnncomp.write_rows(out / "more.csv", rows)
    vnncomp.main(["--report", "--name", "more", "--out", str(out)])
    text = (out / "more.md").read_text()
    assert text.startswith("`verify` (alpha-beta-CROWN not run: its published 2021 answers beside ours)")
    assert "(benchmarks/results/more_instances.md)" in text and "c.vnnlib" in (out / "more_instances.md").read_text()
    assert "| toy | parallelepipedonn verify | 3 | 2 | 1 | 1 | 1 | 0 | 1/1 |" in text
    assert ("- toy: published verdicts 0 sat, 2 unsat, 1 none of 3; alpha-beta-CROWN answered 2 in 2021 (GPU, the "
            "competition's timeouts), ours 2 here: 1 only ours, 1 only theirs.") in text
    assert "- Left out, their files absent from the local copy: toy: 1 (big.onnx)." in text
    assert not (out / "vnncomp.md").exists()
    with pytest.raises(SystemExit):
        vnncomp.main(["--report", "--name", "../x", "--out", str(out)])


def test_instances_whose_files_are_absent_are_left_out_and_gzipped_names_match_the_results(tmp_path):
    """A fetched repository may list models it does not hold: those instances are left out
    (and named), not run as errors, and a sample is drawn from the others; nn4sys names its
    models ``.onnx.gz``, the published results the plain ``.onnx``."""
    _layout(tmp_path)
    root = tmp_path / "root"
    with open(root / "toy" / "toy_instances.csv", "a", newline="") as f:
        csv.writer(f).writerow(["big.onnx.gz", "./specs/holds.vnnlib", "30"])
    missing: list = []
    picked = vnncomp.select(root, {"toy": "."}, None, sample=2, absent=missing)
    assert [i.onnx for i in picked] == ["m.onnx", "m.onnx"] and [i.onnx for i in missing] == ["big.onnx.gz"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="no VNN-COMP instances selected"):
        vnncomp.main(["--root", str(root), "--select", "toy=big", "--no-peer", "--out", str(out),
                      "--published", str(tmp_path / "none")])
    key = vnncomp.Instance("nn4sys", "nets/normal_1000.onnx.gz", "specs/normal_1000_1.vnnlib", 120).key
    assert vnncomp._published_key(*key) == vnncomp._published_key(
        "nn4sys", "./benchmarks/nn4sys/nets/normal_1000.onnx", "./benchmarks/nn4sys/specs/normal_1000_1.vnnlib")


def test_published_verdict_is_the_majority_and_a_tie_a_conflict(tmp_path):
    rows = [["toy", "./benchmarks/toy/m.onnx", "./benchmarks/toy/specs/holds.vnnlib", "0", "holds", "1"],
            ["toy", "./benchmarks/toy/m.onnx", "./benchmarks/toy/specs/fails.vnnlib", "0", "violated", "1"]]
    for tool, answers in (("a", ("holds", "violated")), ("b", ("UNSAT", "unknown")), ("c", ("unsat", "holds"))):
        with open(tmp_path / f"{tool}.csv", "w", newline="") as f:
            csv.writer(f).writerows([r[:4] + [a] + r[5:] for r, a in zip(rows, answers)])
    pub = vnncomp.read_published(tmp_path)
    holds = vnncomp.Instance("toy", "m.onnx", "./specs/holds.vnnlib", 30).key
    fails = vnncomp.Instance("toy", "m.onnx", "specs/fails.vnnlib", 30).key
    assert vnncomp.published_verdict(pub[holds]) == "unsat"
    assert vnncomp.published_verdict(pub[fails]) == "conflict" and pub[fails] == {"a": "sat", "c": "unsat"}
    assert vnncomp.published_verdict(None) == "-"
    assert vnncomp.published_verdict({"a": "sat", "b": "unsat", "c": "unsat"}) == "unsat"     # the majority


def test_benchmark_runs_verify_confirms_the_counterexample_and_writes_tables(tmp_path):
    c = _layout(tmp_path)
    out = tmp_path / "out"
    vnncomp.main(["--root", str(tmp_path / "root"), "--select", "toy", "--no-peer", "--timeout", "20",
                  "--published", str(tmp_path / "none"), "--out", str(out)])
    rows = vnncomp.read_rows(out / "vnncomp.csv")
    assert [(r["vnnlib"], r["tool"], r["answer"]) for r in rows] == [
        ("./specs/holds.vnnlib", "ours", "unsat"), ("./specs/fails.vnnlib", "ours", "sat")]
    assert rows[1]["cex"] == "confirmed" and float(rows[0]["verify_s"]) <= float(rows[0]["process_s"])
    summary = (out / "vnncomp.md").read_text()
    assert "| toy | parallelepipedonn verify | 2 | 2 | 1 | 1 | 0 | 0 | 1/1 |" in summary
    assert "holds.vnnlib" in (out / "vnncomp_instances.md").read_text()
    # --resume keeps what is done (here: everything selected; no process is started)
    vnncomp.main(["--root", str(tmp_path / "root"), "--select", "toy=holds", "--no-peer", "--resume",
                  "--published", str(tmp_path / "none"), "--out", str(out)])
    assert vnncomp.read_rows(out / "vnncomp.csv") == rows[:1]
    # the counterexample check is a real one: a point outside the box, or a safe point, is refused
    spec = c.dir / "specs" / "fails.vnnlib"
    x = vnncomp.read_counterexample(out.parent / "none.txt")
    assert x is None
    assert vnncomp.confirm_counterexample(c.path, spec, np.full(6, 2.0)) == (
        "refuted", "the point lies 1 outside the input boxes")
    assert vnncomp.confirm_counterexample(c.path, c.dir / "specs" / "holds.vnnlib", c.x)[0] == "refuted"


def test_the_peer_gets_the_same_function_without_opset_9_pads_that_pad_nothing(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 2, 2)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Pad", ["r"], ["p"], pads=[0] * 8, mode="constant"),
             helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), path)
    copy, note = vnncomp.peer_model(path, tmp_path)
    assert copy != path and "1 zero Pad" in note
    assert [n.op_type for n in onnx.load(copy).graph.node] == ["Conv", "Relu", "AveragePool", "Flatten"]
    x = np.random.default_rng(1).uniform(size=(1, 1, 5, 5)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0] for p in (path, copy)]
    assert np.array_equal(*run)
    # a model without such Pads is given as it is
    assert vnncomp.peer_model(copy, tmp_path) == (copy, "")


def test_a_counterexample_is_read_as_written_so_a_pinned_decimal_input_is_in_its_box(tmp_path):
    """An input pinned to 0.3 (3/10, which no float64 is): a result file's ``0.3`` is that
    point exactly, so the counterexample is confirmed (onnxruntime evaluates it at the
    float64 nearest, which the note says), not graded "near" as its float64 would be."""
    from fractions import Fraction

    c = _layout(tmp_path)
    x = np.full(6, 0.3)
    other = (int(np.argmax(c.net.forward(x[None])[0])) + 1) % 3   # a label the net does not give at x
    spec = tmp_path / "pinned.vnnlib"
    spec.write_text(property_text(x, x, robustness(other, 3), 3))
    result = tmp_path / "result.txt"
    result.write_text("sat\n(" + "\n".join(f"(X_{i} 0.3)" for i in range(6)) + "\n(Y_0 1)\n(Y_1 2)\n(Y_2 3))\n")
    point, y, exact = vnncomp.read_counterexample(result)
    assert exact == [Fraction(3, 10)] * 6 and point.tolist() == [0.3] * 6 and y.tolist() == [1.0, 2.0, 3.0]
    assert vnncomp.confirm_counterexample(c.path, spec, point, exact) == (
        "confirmed", "confirmed by onnxruntime (float32(x) lies just outside the box)")  # a float32 model
    assert vnncomp.confirm_counterexample(c.path, spec, point)[0] == "near"
    result.write_text("sat\n((X_0 0.3)\n(X_2 0.3)\n(Y_0 1))\n")            # a gap in the indices: no point
    assert vnncomp.read_counterexample(result) is None


def test_published_comparison_runs_a_2023_layout_and_sets_answers_against_the_tools(tmp_path):
    """benchmarks.vnncomp_published on a category laid out as VNN-COMP 2023 ships it
    (``instances.csv`` naming plain files, ``.gz`` on disk) and a results folder of two
    tools: each answer against the tools' majority, the `sat` point confirmed by onnxruntime."""
    import gzip

    from benchmarks import vnncomp_published as vp

    cat = tmp_path / "bench" / "toy"
    c = _layout(tmp_path)  # (the 2021 layout's files, gzipped into a 2023 one below)
    (cat / "onnx").mkdir(parents=True)
    (cat / "vnnlib").mkdir()
    (cat / "onnx" / "m.onnx.gz").write_bytes(gzip.compress(c.path.read_bytes()))
    for name in ("holds", "fails"):
        (cat / "vnnlib" / f"{name}.vnnlib.gz").write_bytes(gzip.compress((c.dir / "specs" / f"{name}.vnnlib")
                                                                         .read_bytes()))
    (cat / "instances.csv").write_text("onnx/m.onnx,vnnlib/holds.vnnlib,30\nonnx/m.onnx,vnnlib/fails.vnnlib,30\n"
                                       "onnx/absent.onnx,vnnlib/holds.vnnlib,30\n")  # (a model not fetched)
    for tool, answers in (("a", ("unsat", "sat")), ("b", ("unsat", "unknown"))):
        d = tmp_path / "results" / tool / "2023_toy"
        d.mkdir(parents=True)
        d.joinpath("results.csv").write_text("".join(
            f"toy,vnncomp2023_benchmarks/benchmarks/toy/onnx/m.onnx,./benchmarks/toy/vnnlib/{n}.vnnlib,1.0,{a},2.0\n"
            for n, a in zip(("holds", "fails"), answers)))
    assert vp.read_published(tmp_path / "results", "2023", "toy") == {
        ("onnx/m.onnx", "vnnlib/holds.vnnlib"): {"a": "unsat", "b": "unsat"},
        ("onnx/m.onnx", "vnnlib/fails.vnnlib"): {"a": "sat"}}
    out = tmp_path / "out"
    vp.main(["--benchmarks", str(tmp_path / "bench"), "--results", str(tmp_path / "results"), "--category", "toy",
             "--timeout-cap", "20", "--out", str(out)])
    every = list(csv.DictReader(open(out / "vnncomp_published.csv")))
    rows = {r["vnnlib"]: r for r in every if r["onnx"] == "onnx/m.onnx"}
    assert [(r["onnx"], r["answer"], r["published"]) for r in every if r["onnx"] != "onnx/m.onnx"] == [
        ("onnx/absent.onnx", "missing", "-")]
    assert rows["vnnlib/holds.vnnlib"]["answer"] == "unsat" and rows["vnnlib/holds.vnnlib"]["agrees"] == "true"
    fails = rows["vnnlib/fails.vnnlib"]
    assert fails["answer"] == "sat" and fails["agrees"] == "true" and fails["onnxruntime"] == "confirmed"
    report = (out / "vnncomp_published.md").read_text()
    assert "| toy | 2 | 1 / 1 / 0 / 0 / 0 | 2 | 0 | 0 | 1 of 1 |" in report
    assert "Left out (their files absent from the local copy of the benchmarks): toy onnx/absent.onnx" in report
