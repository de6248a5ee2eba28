"""`verify` beside alpha-beta-CROWN on VNN-COMP 2021 benchmarks fetched locally.

    python -m benchmarks.vnncomp [--root DIR] [--abcrown DIR] [--timeout 60]
                                 [--select 'mnistfc=REGEX;acasxu'] [--limit N] [--sample N [--seed S]]
                                 [--readme]

For each selected instance (``<root>/<category>/<category>_instances.csv``, rows
``onnx,vnnlib,timeout``; ``--select``: :func:`parse_select`; VNN-COMP 2021 categories
that are absent under the root are skipped, with a note, and any other name is refused)
both tools run in their
own fresh process, one after the other (the order alternates from one instance to the
next), with the same timeout (``--timeout``, else the row's) and one thread each
(``OMP_NUM_THREADS=1`` and friends). Each process is killed ``--kill-slack`` seconds after
its timeout. Recorded: the answer (first line of the VNN-COMP result file), the
verification's own time, model and property loading included (ours: the result JSON's
``load_seconds + seconds``; alpha-beta-CROWN: the time it prints, from the instance's
start), the whole process's wall time, and the 1-minute load average before the instance.
Every ``sat`` counterexample (both tools write VNN-COMP's format) is checked with
onnxruntime: the point lies in an input box of the property and onnxruntime's outputs
there satisfy an unsafe case, exactly. Answers are compared between the tools and with
the published VNN-COMP 2021 results (``--published``: ``results_csv`` of
github.com/stanleybak/vnncomp2021_results, read locally; skipped when absent).

alpha-beta-CROWN (``--abcrown`` or ``$ABCROWN_DIR``: its ``complete_verifier`` directory;
``--abcrown-python`` or ``$ABCROWN_PYTHON``) runs on the CPU with the competition's config of
the category (``CONFIGS``) and ``--complete_verifier bab`` (branch and bound, no MIP
solver); it is skipped when absent or with ``--no-peer``. Its loader fails on ``Pad`` nodes
in the opset-9 attribute form, so a model whose Pads pad nothing (verivital's avgpool net)
reaches it without them (:func:`peer_model`: the same function; the row's note says so).

Outputs: ``vnncomp.csv`` (one row per instance and tool, written after each instance),
``vnncomp.md`` (the summary, README block ``results:vnncomp``) and
``vnncomp_instances.md`` (every instance); ``--name NAME`` names them ``NAME.csv``,
``NAME.md`` and ``NAME_instances.md`` (another selection beside the default one: README
block ``results:NAME``). ``--report`` rewrites the Markdown from the CSV. Without
alpha-beta-CROWN's rows (``--no-peer``), each category's summary sets ours against the
answers alpha-beta-CROWN published in 2021 (the competition's hardware and timeouts, not
this run's).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, cpu_name, markdown_table
from parallelepipedonn.verify import DEFAULT_VERIFY_ORACLE, FEW_INPUTS, FEW_INPUTS_ORACLE

WORK = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("VNNCOMP_ROOT", WORK / "vnncomp2021" / "benchmarks"))
PUBLISHED = Path(os.environ.get("VNNCOMP_PUBLISHED", WORK / "vnncomp2021_results" / "results_csv"))
ABCROWN = Path(os.environ.get("ABCROWN_DIR", WORK / "abcrown" / "complete_verifier"))
ABCROWN_PYTHON = Path(os.environ.get("ABCROWN_PYTHON", WORK / "abcrown-venv" / "bin" / "python"))

# The competition's alpha-beta-CROWN configs (exp_configs/vnncomp21/) per category; every run
# adds ``--complete_verifier bab`` (branch and bound without a MIP solver).
CONFIGS = {"mnistfc": "mnistfc_small.yaml", "verivital": "verivital.yaml", "cifar10_resnet": "cifar10-resnet.yaml",
           "oval21": "oval21.yaml", "marabou-cifar10": "marabou_cifar10.yaml", "eran": "eran_mlp.yaml",
           "acasxu": "acasxu.yaml", "nn4sys": "nn4sys.yaml", "test": "test.yaml"}
# The default selection: 30 MNIST MLP instances (eps 0.03), 8 CIFAR-10 residual-net instances,
# the whole ACAS Xu category (186 instances: properties 1-4 on the 45 nets, and 5-10) and the
# 60 verivital instances (MNIST convnets with average and max pooling).
DEFAULT_SELECT = {"mnistfc": r"256x[24]\.onnx,prop_([0-9]|1[0-4])_0\.03",
                  "cifar10_resnet": r"resnet_2b\.onnx,.*prop_[0-7]_",
                  "acasxu": r".",
                  "verivital": r"."}
THREAD_ENV = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                               "NUMEXPR_NUM_THREADS", "PARALLELEPIPEDONN_THREADS")}
TOOLS = ("ours", "abcrown")
SOLVED = ("sat", "unsat")
ANSWERS = {"sat": "sat", "violated": "sat", "unsat": "unsat", "holds": "unsat", "unknown": "unknown",
           "timeout": "timeout"}
FIELDS = ["category", "onnx", "vnnlib", "tool", "order", "timeout", "answer", "verify_s", "process_s", "rc",
          "cex", "published", "abcrown_2021", "load1", "note"]


@dataclass(frozen=True)
class Instance:
    """One row of a category's instances file; paths relative to the category directory."""

    category: str
    onnx: str
    vnnlib: str
    timeout: float

    def path(self, root: Path, name: str) -> Path:
        return root / self.category / name

    def present(self, root: Path) -> bool:
        """Are its model and property files in the local copy? (A fetched repository may
        list files it does not hold: the competition's large models.)"""
        return self.path(root, self.onnx).is_file() and self.path(root, self.vnnlib).is_file()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.category, os.path.normpath(self.onnx), os.path.normpath(self.vnnlib))


def read_instances(root: Path, category: str) -> list[Instance]:
    """The instances of ``category`` under ``root`` (none when the category is absent)."""
    files = sorted((root / category).glob("*instances.csv"))
    if not files:
        return []
    with open(files[0], newline="") as f:
        return [Instance(category, r[0].strip(), r[1].strip(), float(r[2])) for r in csv.reader(f) if len(r) >= 3]


def check_categories(root: Path, choices: dict[str, str]) -> list[str]:
    """The selected categories that are absent under ``root`` but VNN-COMP 2021 categories
    (``CONFIGS``: skipped, not every benchmark need be fetched); :class:`ValueError` for a
    name that is neither present nor one of those (a typo, or a piece of a pattern)."""
    absent = [c for c in choices if not sorted((root / c).glob("*instances.csv"))]
    unknown = [c for c in absent if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))}: "
                         f"no {root}/<category>/*instances.csv, and not a VNN-COMP 2021 category "
                         f"({', '.join(sorted(CONFIGS))})")
    return absent


def select(root: Path, choices: dict[str, str], limit: int | None, sample: int | None = None,
           seed: int = 0, absent: list[Instance] | None = None) -> list[Instance]:
    """Per category (in ``choices``' order) the instances whose ``onnx,vnnlib`` matches the
    regular expression (searched) and whose files are in the local copy, the first
    ``limit`` of them, or ``sample`` of them drawn at random (``random.Random(seed)``, an
    unbiased subset; kept in the file's order); VNN-COMP 2021 categories that are absent
    skipped, other unknown names refused (:func:`check_categories`). ``absent`` (optional)
    receives the matching instances whose files are not there."""
    check_categories(root, choices)
    out = []
    for category, pattern in choices.items():
        rows = [i for i in read_instances(root, category) if re.search(pattern, f"{i.onnx},{i.vnnlib}")]
        if absent is not None:
            absent += [i for i in rows if not i.present(root)]
        rows = [i for i in rows if i.present(root)]
        if sample is not None and sample < len(rows):
            keep = set(random.Random(seed).sample(range(len(rows)), sample))
            rows = [r for k, r in enumerate(rows) if k in keep]
        out += rows[:limit] if limit else rows
    return out


_CATEGORY = re.compile(r"[\w.-]+")


def parse_select(text: str) -> dict[str, str]:
    """``cat=REGEX;cat2=REGEX;cat3`` -> ``{category: regex}``: the parts are separated by
    ``;`` only, so that a REGEX (everything after the part's first ``=``) may hold commas
    (``acasxu=1_1_batch_2000\\.onnx,prop_1``: it is searched in ``onnx,vnnlib``); a part
    without ``=`` is a category, or several separated by commas (``cat,cat2``), each taking
    every instance. :class:`ValueError` for a category name that is not one (letters,
    digits, ``_.-``) or a REGEX that is not a regular expression."""
    out = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if "=" in part:
            name, _, pattern = part.partition("=")
            names = [name.strip()]
            old_form = re.search(r",\s*([A-Za-z0-9_.-]+)=", pattern)
            if old_form:  # cat=REGEX,cat2=REGEX: the old separator, which would make cat2 part of the REGEX
                raise ValueError(f"--select {part!r}: separate categories with ';' ({name.strip()}=...;"
                                 f"{old_form.group(1)}=...), not ','")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"--select {part!r}: {pattern!r} is not a regular expression: {exc}") from None
        else:
            names, pattern = [n.strip() for n in part.split(",")], ""
        for name in names:
            if not _CATEGORY.fullmatch(name):
                raise ValueError(f"--select {part!r}: {name!r} is not a category name (CATEGORY=REGEX;CATEGORY...)")
            out[name] = pattern or "."
    return out


# -- running one tool on one instance ---------------------------------------------------------
def _answer(result_file: Path) -> str:
    try:
        first = result_file.read_text().strip().splitlines()[0].strip().lower()
    except (OSError, IndexError):
        return "error"
    return ANSWERS.get(first, "error")


def _run(cmd: list[str], cwd: Path, timeout: float, log: Path) -> tuple[int, float]:
    """Run ``cmd`` in its own process group, one thread; kill the group after ``timeout``
    seconds (return code -9) or when interrupted."""
    env = {**os.environ, **THREAD_ENV}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = -9
        finally:
            if proc.poll() is None or rc == -9:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    return rc, time.perf_counter() - start


def run_ours(inst: Instance, root: Path, timeout: float, work: Path, slack: float, options: list[str]) -> dict:
    """``parallelepipedonn verify`` in a fresh Python process."""
    result, js = work / "ours.txt", work / "ours.json"
    for f in (result, js):
        f.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "parallelepipedonn.cli", "verify", "--model", str(inst.path(root, inst.onnx)),
           "--vnnlib", str(inst.path(root, inst.vnnlib)), "--timeout", f"{timeout:g}", "--result-file", str(result),
           "--json", str(js), *options]
    rc, wall = _run(cmd, Path.cwd(), timeout + slack, work / "ours.log")
    verify_s = None
    if js.is_file():
        import json

        data = json.loads(js.read_text())
        # as alpha-beta-CROWN's printed time: from reading the model and the property to the answer
        verify_s = data.get("seconds") + (data.get("load_seconds") or 0.0) if "seconds" in data else None
    answer = "timeout" if rc == -9 else _answer(result)
    return {"answer": answer, "verify_s": verify_s, "process_s": wall, "rc": rc, "result_file": result}


_ABCROWN_TIME = re.compile(r"^Time: ([0-9.eE+-]+)\s*$", re.MULTILINE)  # single-instance mode: since the instance started


def _zero_pads(node) -> bool:
    """Whether an ONNX ``Pad`` node pads nothing (its ``pads``, an attribute before opset 11,
    all zero) — the identity."""
    import onnx

    pads = [a for a in node.attribute if a.name == "pads"]
    return len(node.input) == 1 and len(pads) == 1 and not any(onnx.helper.get_attribute_value(pads[0]))


def peer_model(onnx_path: Path, work: Path) -> tuple[Path, str]:
    """The model file alpha-beta-CROWN is given, and a note: the instance's own, except that
    ``Pad`` nodes padding nothing (opset-9 attribute form, e.g. verivital's avgpool net, which
    alpha-beta-CROWN's loader fails on: ``BoundPad.forward() missing ... 'pad'``) are removed
    from a copy — the same function."""
    import onnx

    model = onnx.load_from_string(_onnx_bytes(onnx_path))
    identity = [n for n in model.graph.node if n.op_type == "Pad" and _zero_pads(n)]
    if not identity:
        return onnx_path, ""
    for pad in identity:
        model.graph.node.remove(pad)
        for n in model.graph.node:
            for i, name in enumerate(n.input):
                if name == pad.output[0]:
                    n.input[i] = pad.input[0]
        for out in model.graph.output:
            if out.name == pad.output[0]:
                raise ValueError(f"{onnx_path.name}: a Pad writes the graph's output")
    copy = work / f"peer_{onnx_path.name.removesuffix('.gz')}"
    onnx.save(model, copy)
    return copy, f"given the model without its {len(identity)} zero Pad node(s)"


def run_abcrown(inst: Instance, root: Path, timeout: float, work: Path, slack: float, abcrown: Path,
                python: Path) -> dict:
    """alpha-beta-CROWN's ``abcrown.py`` in a fresh process, on the CPU, branch and bound (on
    :func:`peer_model`'s file)."""
    result = work / "abcrown.txt"
    result.unlink(missing_ok=True)
    config = CONFIGS.get(inst.category)
    model, model_note = peer_model(inst.path(root, inst.onnx), work)
    cmd = [str(python), "abcrown.py", *(["--config", f"exp_configs/vnncomp21/{config}"] if config else []),
           "--complete_verifier", "bab", "--onnx_path", str(model.resolve()),
           "--vnnlib_path", str(inst.path(root, inst.vnnlib).resolve()), "--device", "cpu",
           "--timeout", f"{timeout:g}", "--results_file", str(result.resolve()), "--save_adv_example",
           "--cex_path", str((work / "abcrown_cex.txt").resolve())]
    log = work / "abcrown.log"
    rc, wall = _run(cmd, abcrown, timeout + slack, log)
    m = _ABCROWN_TIME.search(log.read_text(errors="replace")) if log.is_file() else None
    answer = "timeout" if rc == -9 else _answer(result)
    return {"answer": answer, "verify_s": float(m.group(1)) if m else None, "process_s": wall, "rc": rc,
            "result_file": result, "note": model_note}


# -- counterexamples ---------------------------------------------------------------------------
_PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([^()\s]+)\s*\)")


def read_counterexample(path: Path) -> tuple[np.ndarray, np.ndarray, list[Fraction]] | None:
    """``(x, y, x_exact)`` of a VNN-COMP ``sat`` result file (``x_exact``: the inputs as
    written, as exact rationals: ``0.3`` is 3/10, not the float64 nearest it), ``None``
    without one."""
    try:
        text = path.read_text()
    except OSError:
        return None
    values: dict[str, dict[int, str]] = {"X": {}, "Y": {}}
    for kind, index, value in _PAIR.findall(text):
        values[kind][int(index)] = value
    if not values["X"]:
        return None
    try:
        xs = [values["X"][i] for i in range(len(values["X"]))]
        x = np.array([float(v) for v in xs], dtype=np.float64)
        y = np.array([float(values["Y"][i]) for i in range(len(values["Y"]))], dtype=np.float64)
        exact = [Fraction(v) for v in xs]
    except (KeyError, ValueError, ZeroDivisionError):  # a gap in the indices, a malformed or infinite number
        return None
    return x, y, exact


def _onnx_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


NEAR = 1e-6  # a point this close to an input box (absolute, per input) is "near" it


def _outside(region, x: Sequence[Fraction]) -> Fraction:
    """How far the exact point ``x`` lies outside the region's exact box (0 inside)."""
    worst = Fraction(0)
    for q, a, b in zip(x, region.lower, region.upper):
        worst = max(worst, a.value - q, q - b.value)
    return worst


def confirm_counterexample(model: Path, vnnlib: Path, x: np.ndarray,
                           exact: Sequence[Fraction] | None = None) -> tuple[str, str]:
    """``("confirmed", note)`` when the point ``x`` as written (``exact``, its decimals as
    rationals; by default the float64 numbers ``x``) lies in an input box of the property, exactly, and onnxruntime's outputs there satisfy one of that box's unsafe
    cases, exactly; ``("near", note)`` when the outputs do so but the point lies outside
    the box by at most ``NEAR`` (e.g. bounds computed in floating point); else ``("refuted", why)``.
    onnxruntime evaluates the model at ``x`` rounded to its input type (float64 or float32;
    the note says when that rounding crosses the box's edge, by less than an ulp)."""
    import onnxruntime as ort

    from parallelepipedonn.vnnlib import read_vnnlib

    prop = read_vnnlib(vnnlib)
    if x.size != prop.n_inputs:
        return "refuted", f"the point has {x.size} values, the property {prop.n_inputs} inputs"
    point = list(exact) if exact is not None else [Fraction(v) for v in x.tolist()]
    distance = {i: _outside(r, point) for i, r in enumerate(prop.regions)}
    regions = [r for i, r in enumerate(prop.regions) if distance[i] <= NEAR]
    if not regions:
        return "refuted", f"the point lies {float(min(distance.values(), default=0)):.3g} outside the input boxes"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only (models that list their initializers as inputs warn per load)
    sess = ort.InferenceSession(_onnx_bytes(model), options, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float64 if "double" in inp.type else np.float32
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    fed = x.astype(dtype)
    if fed.size != int(np.prod(shape)):
        return "refuted", f"the point has {x.size} values, the model's input {shape}"
    y = np.asarray(sess.run(None, {inp.name: fed.reshape(shape)})[0], dtype=np.float64).reshape(-1)
    outputs = [Fraction(float(v)) for v in y]
    for region in sorted(regions, key=lambda r: _outside(r, point)):
        if region.violated_disjunct(outputs) is not None:
            gap = _outside(region, point)
            if gap > 0:
                return "near", f"onnxruntime's outputs are unsafe; the point lies {float(gap):.3g} outside the box"
            crossed = _outside(region, [Fraction(v) for v in fed.astype(np.float64).tolist()]) > 0
            return "confirmed", "confirmed by onnxruntime" + (f" ({fed.dtype}(x) lies just outside the box)"
                                                              if crossed else "")
    return "refuted", "onnxruntime's outputs satisfy no unsafe case"


def _default_oracles() -> str:
    return (f"(default oracle `{DEFAULT_VERIFY_ORACLE}`; for models with at most {FEW_INPUTS} inputs, ACAS Xu's, "
            f"`{FEW_INPUTS_ORACLE}`)")


# -- published VNN-COMP 2021 results -----------------------------------------------------------
def _published_key(category: str, onnx: str, vnnlib: str) -> tuple[str, str, str]:
    prefix = f"benchmarks/{category}/"

    def strip(p: str) -> str:  # (nn4sys's instances name gzipped models, its results the plain ones)
        p = os.path.normpath(p)
        p = os.path.normpath(p[len(prefix):]) if p.startswith(prefix) else p
        return p[:-3] if p.endswith(".gz") else p
    return (category, strip(onnx), strip(vnnlib))


def read_published(directory: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """Instance key -> {tool: answer} (``sat``/``unsat`` only) from the competition's
    per-tool CSVs (``category,onnx,vnnlib,prepare s,result,run s``)."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for f in sorted(directory.glob("*.csv")) if directory.is_dir() else []:
        with open(f, newline="") as fh:
            for r in csv.reader(fh):
                if len(r) >= 5 and ANSWERS.get(r[4].strip().lower()) in SOLVED:
                    out.setdefault(_published_key(*r[:3]), {})[f.stem] = ANSWERS[r[4].strip().lower()]
    return out


def published_verdict(tools: dict[str, str] | None) -> str:
    """The published answer by majority of the tools that answered ``sat`` or ``unsat``
    (the competition's "voting": in 2021 a few tools answered wrongly, e.g. RPM ``sat`` on
    instances nine others proved), ``conflict`` on a tie, ``-`` when none answered."""
    votes = list((tools or {}).values())
    sat, unsat = votes.count("sat"), votes.count("unsat")
    return "-" if not votes else "sat" if sat > unsat else "unsat" if unsat > sat else "conflict"


# -- the benchmark -----------------------------------------------------------------------------
def load1() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _left_out(missing: list[Instance]) -> str:
    """``category: N (model, ...)`` per category of instances whose files are absent."""
    by: dict[str, list[Instance]] = {}
    for i in missing:
        by.setdefault(i.category, []).append(i)
    return "; ".join(f"{c}: {len(v)} ({', '.join(dict.fromkeys(os.path.basename(i.onnx) for i in v))})"
                     for c, v in by.items())


def run(args, instances: list[Instance], echo=print, missing: list[Instance] = ()) -> list[dict]:
    """Both tools on every instance, interleaved; the CSV rewritten after each instance.
    ``missing``: instances left out (their files absent), one row each (answer ``missing``)."""
    peer = None if args.no_peer or not (Path(args.abcrown) / "abcrown.py").is_file() \
        or not Path(args.abcrown_python).is_file() else Path(args.abcrown)
    if peer is None:
        echo(f"alpha-beta-CROWN not run (--no-peer, or absent at {args.abcrown})")
    published = read_published(Path(args.published))
    options = shlex.split(args.ours_options)
    out = Path(args.out)
    rows: list[dict] = [{"category": i.category, "onnx": i.onnx, "vnnlib": i.vnnlib, "tool": "ours", "order": 0,
                         "timeout": args.timeout or i.timeout, "answer": "missing", "verify_s": "", "process_s": 0.0,
                         "rc": "", "cex": "", "published": "-", "abcrown_2021": "-", "load1": "", "note": ""}
                        for i in missing]
    done: dict[tuple[str, str, str], list[dict]] = {}
    if args.resume and (out / f"{args.name}.csv").is_file():  # keep what is done, except sat answers (rechecked)
        for r in read_rows(out / f"{args.name}.csv"):
            done.setdefault((r["category"], r["onnx"], r["vnnlib"]), []).append(r)
        done = {k: v for k, v in done.items() if all(r["answer"] not in ("sat", "missing") for r in v)}
    with tempfile.TemporaryDirectory(prefix="vnncomp-") as tmp:
        work = Path(tmp)
        for n, inst in enumerate(instances):
            timeout = args.timeout or inst.timeout
            if (inst.category, inst.onnx, inst.vnnlib) in done:  # (the published answers read again)
                pub = published.get(_published_key(*inst.key))
                rows += [{**r, "published": published_verdict(pub), "abcrown_2021": (pub or {}).get("a-b-CROWN", "-")}
                         for r in done[inst.category, inst.onnx, inst.vnnlib]]
                continue
            tools = [t for t in TOOLS if t == "ours" or peer is not None]
            if n % 2:
                tools.reverse()
            pub = published.get(_published_key(*inst.key))
            load = load1()
            for order, tool in enumerate(tools):
                if tool == "ours":
                    r = run_ours(inst, Path(args.root), timeout, work, args.kill_slack, options)
                else:
                    r = run_abcrown(inst, Path(args.root), timeout, work, args.kill_slack, peer,
                                    Path(args.abcrown_python))
                cex, note = "", ""
                if r["answer"] == "sat":
                    point = read_counterexample(r["result_file"])
                    if point is None:
                        cex, note = "missing", "sat without a counterexample"
                    else:
                        cex, note = confirm_counterexample(inst.path(Path(args.root), inst.onnx),
                                                           inst.path(Path(args.root), inst.vnnlib), point[0],
                                                           point[2])
                if r["answer"] == "error":
                    note = _last_line(work / f"{tool}.log")
                note = "; ".join(x for x in (r.get("note", ""), note) if x)
                rows.append({"category": inst.category, "onnx": inst.onnx, "vnnlib": inst.vnnlib, "tool": tool,
                             "order": order, "timeout": timeout, "answer": r["answer"],
                             "verify_s": "" if r["verify_s"] is None else round(float(r["verify_s"]), 3),
                             "process_s": round(r["process_s"], 3), "rc": r["rc"], "cex": cex,
                             "published": published_verdict(pub), "abcrown_2021": (pub or {}).get("a-b-CROWN", "-"),
                             "load1": load, "note": note})
                echo(f"[{n + 1}/{len(instances)}] {inst.category} {inst.onnx} {inst.vnnlib} {tool}: "
                     f"{r['answer']} {rows[-1]['verify_s']} s / {r['process_s']:.1f} s {cex}")
            write_rows(out / f"{args.name}.csv", rows)
    write_rows(out / f"{args.name}.csv", rows)
    return rows


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:160] if lines else ""


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the report --------------------------------------------------------------------------------
def _num(v) -> float | None:
    try:
        return None if v in ("", None) else float(v)
    except ValueError:
        return None


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def correct(row: dict) -> bool:
    """Solved and not contradicted: a ``sat`` needs its counterexample confirmed (or near
    the box: see :func:`confirm_counterexample`), and no answer may contradict the
    published verdict."""
    if row["answer"] not in SOLVED or (row["answer"] == "sat" and row["cex"] not in ("confirmed", "near")):
        return False
    return row["published"] in ("-", "conflict", row["answer"])


def summary(rows: list[dict]) -> tuple[str, str]:
    """The summary table and the per-instance table (Markdown); instances left out (answer
    ``missing``) are named, not counted."""
    missing = [Instance(r["category"], r["onnx"], r["vnnlib"], 0.0) for r in rows if r["answer"] == "missing"]
    rows = [r for r in rows if r["answer"] != "missing"]
    by_inst: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_inst.setdefault((r["category"], r["onnx"], r["vnnlib"]), {})[r["tool"]] = r
    tools = [t for t in TOOLS if any(r["tool"] == t for r in rows)]
    table = []
    for category in dict.fromkeys(r["category"] for r in rows):
        insts = {k: v for k, v in by_inst.items() if k[0] == category}
        both = [v for v in insts.values() if all(t in v and correct(v[t]) for t in tools)]
        for tool in tools:
            rs = [v[tool] for v in insts.values() if tool in v]
            par2 = sum(float(r["process_s"]) if correct(r) else 2 * float(r["timeout"]) for r in rs)
            verify = [_num(v[tool]["verify_s"]) for v in both]
            process = [float(v[tool]["process_s"]) for v in both]
            cexs = [r for r in rs if r["answer"] == "sat"]
            counts = {a: sum(r["answer"] == a for r in rs) for a in ("sat", "unsat", "unknown", "timeout", "error")}
            table.append([category, "parallelepipedonn verify" if tool == "ours" else "alpha-beta-CROWN", len(rs),
                          sum(correct(r) for r in rs), counts["sat"], counts["unsat"],
                          counts["unknown"] + counts["timeout"], counts["error"],
                          f"{sum(r['cex'] == 'confirmed' for r in cexs)}/{len(cexs)}"
                          + (f" (+{near} near)" if (near := sum(r["cex"] == "near" for r in cexs)) else ""),
                          f"{par2:.0f}",
                          len(both), _med([v for v in verify if v is not None]), _med(process)])
    header = ["category", "tool", "instances", "solved", "sat", "unsat", "unknown/timeout", "error",
              "sat confirmed by onnxruntime", "PAR-2 s", "both solved", "median verification s",
              "median process s"]
    lines = [markdown_table(header, table), ""]
    if len(tools) == 2:
        for category in dict.fromkeys(r["category"] for r in rows):
            both = [v for k, v in by_inst.items() if k[0] == category and all(t in v and correct(v[t]) for t in TOOLS)]
            ratios = [_num(v["abcrown"]["verify_s"]) / max(_num(v["ours"]["verify_s"]), 1e-3) for v in both
                      if _num(v["abcrown"]["verify_s"]) is not None and _num(v["ours"]["verify_s"]) is not None]
            pratios = [float(v["abcrown"]["process_s"]) / float(v["ours"]["process_s"]) for v in both]
            lines.append(f"- {category}: on the {len(both)} instances both solved, alpha-beta-CROWN's time over ours: "
                         f"median {_med(ratios)}× (verification), {_med(pratios)}× (whole process).")
        both = [v for v in by_inst.values() if all(t in v and correct(v[t]) for t in TOOLS)]
        solved = {t: sum(correct(v[t]) for v in by_inst.values() if t in v) for t in TOOLS}
        med = {t: _med([x for v in both if (x := _num(v[t]["verify_s"])) is not None]) for t in TOOLS}
        pmed = {t: _med([float(v[t]["process_s"]) for v in both]) for t in TOOLS}
        lines.append(f"- All {len(by_inst)} instances: solved {solved['ours']} (ours) and {solved['abcrown']} "
                     f"(alpha-beta-CROWN); on the {len(both)} both solved, median verification {med['ours']} s against "
                     f"{med['abcrown']} s, whole process {pmed['ours']} s against {pmed['abcrown']} s.")
    disagree = [k for k, v in by_inst.items()
                if len({v[t]["answer"] for t in v if v[t]["answer"] in SOLVED}) > 1]
    lines.append(f"- Answers that disagree between the tools: {len(disagree)}"
                 + (" (" + "; ".join(f"{k[1]} {k[2]}" for k in disagree) + ")" if disagree else "") + ".")
    compared = [r for r in rows if r["answer"] in SOLVED and r["published"] in SOLVED]
    against = [r for r in compared if r["answer"] != r["published"]]
    unpublished = sum(r["answer"] in SOLVED and r["published"] not in SOLVED for r in rows)
    lines.append(f"- Against the published VNN-COMP 2021 verdicts: {len(compared)} answers compared, "
                 f"{len(against)} disagree" + (" (" + "; ".join(f"{r['tool']} {r['onnx']} {r['vnnlib']}"
                                                              for r in against) + ")" if against else "")
                 + f"; {unpublished} answers without a published verdict (none published, or tools conflicted).")
    if missing:
        lines.append(f"- Left out, their files absent from the local copy: {_left_out(missing)}.")
    loads = [float(r["load1"]) for r in rows if _num(r["load1"]) is not None]
    if loads:
        lines.append(f"- 1-minute load average before each instance: median {statistics.median(loads):.1f}, "
                     f"min {min(loads):.1f}, max {max(loads):.1f} (on {os.cpu_count()} cores).")
    inst_rows = [[r["category"], r["onnx"], r["vnnlib"], r["tool"], r["order"], r["answer"], r["verify_s"],
                  r["process_s"], r["cex"], r["published"], r["abcrown_2021"], r["load1"], r["note"]] for r in rows]
    per_instance = markdown_table(["category", "onnx", "vnnlib", "tool", "order", "answer", "verification s",
                                   "process s", "counterexample", "published 2021", "a-b-CROWN 2021", "load",
                                   "note"], inst_rows)
    return "\n".join(lines), per_instance


def _against_published(rows: list[dict]) -> list[str]:
    """Per category, for a run without alpha-beta-CROWN's rows: ours beside the verdicts
    published in 2021 and alpha-beta-CROWN's own 2021 answers (the competition's hardware
    and timeouts)."""
    lines = []
    rows = [r for r in rows if r["answer"] != "missing"]
    for category in dict.fromkeys(r["category"] for r in rows):
        rs = [r for r in rows if r["category"] == category and r["tool"] == "ours"]
        verdicts = [r["published"] for r in rs]
        theirs = [r for r in rs if r["abcrown_2021"] in SOLVED]
        only_ours = sum(correct(r) and r["abcrown_2021"] not in SOLVED for r in rs)
        only_theirs = sum(not correct(r) for r in theirs)
        lines.append(f"- {category}: published verdicts {verdicts.count('sat')} sat, {verdicts.count('unsat')} unsat, "
                     f"{len(rs) - verdicts.count('sat') - verdicts.count('unsat')} none of {len(rs)}; "
                     f"alpha-beta-CROWN answered {len(theirs)} in 2021 (GPU, the competition's timeouts), ours "
                     f"{sum(correct(r) for r in rs)} here: {only_ours} only ours, {only_theirs} only theirs.")
    return lines


def report(args, rows: list[dict]) -> str:
    out = Path(args.out)
    table, per_instance = summary(rows)
    timeouts = sorted({float(r["timeout"]) for r in rows})
    peer = any(r["tool"] == "abcrown" for r in rows)
    categories = list(dict.fromkeys(r["category"] for r in rows if r["answer"] != "missing"))
    tools = ("`verify` and alpha-beta-CROWN" if peer else
             "`verify` (alpha-beta-CROWN not run: its published 2021 answers beside ours)")
    head = (f"{tools} on VNN-COMP 2021 instances — `{args.command}` "
            f"({datetime.now(timezone.utc):%Y-%m-%d}, {cpu_name()}, {os.cpu_count()} cores shared with other jobs; "
            f"timeout {', '.join(f'{t:g}' for t in timeouts)} s; one thread per tool, each instance in a fresh "
            f"process{' per tool, interleaved' if peer else ''}). Ours: `parallelepipedonn verify` "
            f"{args.ours_options or _default_oracles()}"
            + ("; alpha-beta-CROWN: "
               "`abcrown.py --config exp_configs/vnncomp21/<category config> --complete_verifier bab --device cpu` "
               "(configs: " + ", ".join(f"{c} `{CONFIGS[c]}`" for c in categories if c in CONFIGS) + ")"
               if peer else "")
            + ". Solved = a `sat` or `unsat` answer not contradicted "
            "(a `sat` needs its counterexample confirmed by onnxruntime: the point as written (its decimals, read exactly) "
            "in the box and "
            "onnxruntime's outputs unsafe, exactly, where onnxruntime evaluates the point rounded to the model's "
            "input type (float32(x) may lie just outside the box: the instance's note says so); *near*: the outputs unsafe but the point outside the box by at "
            f"most {NEAR:g}, e.g. bounds computed in floating point — counted as solved); PAR-2 sums the whole process's wall time "
            "of solved instances and twice the timeout of the others. Verification time: from reading the model and "
            "the property to the answer (ours: the result's `load_seconds + seconds`"
            + ("; alpha-beta-CROWN: the `Time:` it prints, from the instance's start" if peer else "")
            + "). Per instance: "
            f"[`{args.name}_instances.md`](benchmarks/results/{args.name}_instances.md).\n\n")
    text = head + table + "\n" + ("" if peer else "\n".join(_against_published(rows)) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(text)
    (out / f"{args.name}_instances.md").write_text(head + per_instance + "\n")
    return text


def _name(value: str) -> str:
    """``--name``: a file stem of letters, digits, ``_`` and ``-``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise argparse.ArgumentTypeError(f"not a file stem of letters, digits, _ and -: {value!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(ROOT), help="VNN-COMP 2021 benchmarks directory (default: %(default)s)")
    p.add_argument("--select", default=";".join(f"{k}={v}" for k, v in DEFAULT_SELECT.items()),
                   help="CATEGORY=REGEX;... separated by ';' (REGEX searched in 'onnx,vnnlib', commas included; "
                        "a bare CATEGORY takes all; absent VNN-COMP 2021 categories skipped, unknown names refused) "
                        "(default: %(default)s)")
    p.add_argument("--limit", type=int, help="at most N instances per category")
    p.add_argument("--sample", type=int, help="N instances per category drawn at random from the selected ones")
    p.add_argument("--seed", type=int, default=0, help="the seed of --sample (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per instance (0: the instances file's)")
    p.add_argument("--kill-slack", type=float, default=30.0, help="a process is killed this long after its timeout")
    p.add_argument("--abcrown", default=str(ABCROWN), help="alpha-beta-CROWN's complete_verifier directory "
                   "($ABCROWN_DIR; default: %(default)s)")
    p.add_argument("--abcrown-python", default=str(ABCROWN_PYTHON), help="its Python ($ABCROWN_PYTHON)")
    p.add_argument("--no-peer", action="store_true", help="run only parallelepipedonn verify")
    p.add_argument("--ours-options", default="", help="extra options of parallelepipedonn verify (e.g. '--oracle crown+bab')")
    p.add_argument("--published", default=str(PUBLISHED), help="VNN-COMP 2021's results_csv directory "
                   "($VNNCOMP_PUBLISHED; default: %(default)s)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="vnncomp", type=_name,
                   help="the outputs' file stem: OUT/NAME.csv, NAME.md, NAME_instances.md (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="keep the instances OUT/NAME.csv has (but rerun sat "
                   "answers, to check their counterexamples)")
    p.add_argument("--report", action="store_true", help="only rewrite the Markdown from OUT/NAME.csv")
    p.add_argument("--readme", action="store_true", help="also regenerate README.md's result blocks")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.command = " ".join(["python -m benchmarks.vnncomp", *(shlex.quote(a) for a in (argv or sys.argv[1:])
                                                             if a not in ("--readme", "--resume", "--report"))])
    if args.report:
        rows = read_rows(Path(args.out) / f"{args.name}.csv")
    else:
        try:
            choices = parse_select(args.select)
            absent = check_categories(Path(args.root), choices)
        except ValueError as exc:
            raise SystemExit(f"benchmarks.vnncomp: {exc}") from None
        if absent:
            print(f"not under {args.root}, skipped: {', '.join(absent)}", flush=True)
        missing: list[Instance] = []
        instances = select(Path(args.root), choices, args.limit, args.sample, args.seed, missing)
        if missing:
            print(f"left out, their files absent from {args.root}: {_left_out(missing)}", flush=True)
        if not instances:
            raise SystemExit(f"no VNN-COMP instances selected under {args.root}")
        print(f"{len(instances)} instances, timeout {args.timeout or 'per instance'}, load {load1()}", flush=True)
        rows = run(args, instances, echo=lambda s: print(s, flush=True), missing=missing)
    print(report(args, rows))
    if args.readme:
        from benchmarks import readme

        readme.main()


if __name__ == "__main__":
    main()
