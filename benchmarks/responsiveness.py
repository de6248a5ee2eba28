"""Responsiveness in real conditions: start-up, import and default-certification times,
on an idle machine and with competing CPU-bound processes.

    python -m benchmarks.responsiveness [--indices 0,1,2,3,4] [--repeats 5] [--busy 3] [--out benchmarks/results]

Measures, each in a fresh process (as a user meets the tool): ``parallelepipedonn
--version`` and ``--help`` (median of ``--repeats`` runs), ``python -c "import
parallelepipedonn"``, and ``parallelepipedonn certify --dataset mnist --index N`` for each
index: the whole process's wall time and the certify call's own time (the certificate's
``seconds``). Each certification runs with the thread policy (the default, one torch
thread) and with torch's default thread pool (``--threads 0``); everything runs once on
the idle machine and once with ``--busy`` busy loops (``python -c "while True: pass"``)
competing for the cores. Writes ``responsiveness.md`` and ``responsiveness.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from benchmarks.common import cpu_name
from benchmarks.options import RESULTS

#: Thread settings (torch's defaults and the tool's policy as shipped are what is measured) and
#: ``PYTHONDONTWRITEBYTECODE`` (set on some machines: every process then compiles every module
#: it imports, 70 ms more per certify call here; a user's installation keeps its bytecode).
ENV_STRIP = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PARALLELEPIPEDONN_THREADS", "PYTHONDONTWRITEBYTECODE")


def machine() -> str:
    """The machine, without importing torch in this process (its thread count is what varies)."""
    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {metadata.version('torch')}, "
            f"Python {platform.python_version()}")


def command() -> list[str]:
    """The installed ``parallelepipedonn`` script (next to this Python), else ``-m``."""
    script = Path(sys.executable).parent / "parallelepipedonn"
    if script.is_file():
        return [str(script)]
    found = shutil.which("parallelepipedonn")
    return [found] if found else [sys.executable, "-m", "parallelepipedonn.cli"]


def clean_env() -> dict[str, str]:
    """The environment without :data:`ENV_STRIP`."""
    return {k: v for k, v in os.environ.items() if k not in ENV_STRIP}


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(),
                          timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return seconds


@contextmanager
def busy(count: int):
    """``count`` CPU-bound busy loops, killed on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(1.0)  # let them take the cores
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def measure(args, load: str, rows: list[dict], echo) -> None:
    cli = command()
    args.loadavg[load] = os.getloadavg()[0]
    for name, argv in (("--version", [*cli, "--version"]), ("--help", [*cli, "--help"]),
                       ("import", [sys.executable, "-c", "import parallelepipedonn"])):
        for k in range(args.repeats):
            rows.append({"measurement": name, "load": load, "threads": "", "index": "", "run": k,
                         "wall_s": timed(argv), "certify_s": ""})
        echo(f"{load:6s} {name:10s} median {median(rows, name, load):.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in ("policy", "torch"):
            flag = [] if threads == "policy" else ["--threads", "0"]
            for index in args.indices:
                path = Path(tmp) / f"{threads}-{index}.json"
                wall = timed([*cli, *flag, "certify", "--dataset", "mnist", "--index", str(index), "--json",
                              str(path)])
                cert = json.loads(path.read_text())
                rows.append({"measurement": "certify", "load": load, "threads": threads, "index": index, "run": 0,
                             "wall_s": wall, "certify_s": cert["seconds"]})
                echo(f"{load:6s} certify #{index} threads={threads:6s} process {wall:.2f} s, certify call "
                     f"{cert['seconds']:.3f} s ({cert['status']})")


def median(rows: list[dict], measurement: str, load: str, threads: str = "", key: str = "wall_s") -> float:
    return statistics.median(r[key] for r in rows if r["measurement"] == measurement and r["load"] == load
                             and r["threads"] == threads)


def report(args, rows: list[dict]) -> str:
    loaded = f"{args.busy} busy"
    lines = ["| measurement | idle (s) | " + loaded + " (s) | loaded / idle |", "|---|---|---|---|"]

    def line(label: str, measurement: str, threads: str = "", key: str = "wall_s") -> float:
        idle, busy_ = median(rows, measurement, "idle", threads, key), median(rows, measurement, loaded, threads, key)
        lines.append(f"| {label} | {idle:.3f} | {busy_:.3f} | {busy_ / idle:.1f}× |")
        return busy_ / idle

    line(f"`parallelepipedonn --version` (median of {args.repeats})", "--version")
    line(f"`parallelepipedonn --help` (median of {args.repeats})", "--help")
    line(f"`python -c \"import parallelepipedonn\"` (median of {args.repeats})", "import")
    n = len(args.indices)
    ratio = line(f"certify, thread policy (1 thread, the default): certify call, median of {n} inputs", "certify",
                 "policy", "certify_s")
    line("certify, thread policy (1 thread, the default): whole process", "certify", "policy")
    torch_ratio = line("certify, torch's default threads (`--threads 0`): certify call", "certify", "torch",
                       "certify_s")
    line("certify, torch's default threads (`--threads 0`): whole process", "certify", "torch")
    version = median(rows, "--version", "idle")
    indices = ",".join(map(str, args.indices))
    loads = ", ".join(f"{k} {v:.1f}" for k, v in args.loadavg.items())
    return (f"Responsiveness — `python -m benchmarks.responsiveness --indices {indices} --repeats {args.repeats} "
            f"--busy {args.busy}`\n\n"
            f"Machine: {machine()}. Each figure is a fresh process; certify: `parallelepipedonn certify --dataset "
            f"mnist --index N` for N in {indices} (the default network, oracle and search); the certify call's "
            f"time is the certificate's `seconds` (it includes importing the oracles it uses); one certification "
            f"before the measurements writes the bytecode caches (`PYTHONDONTWRITEBYTECODE` unset). "
            f"Loaded: {args.busy} "
            f"competing CPU-bound processes (`python -c \"while True: pass\"`) on the {os.cpu_count()} cores. "
            f"1-minute load average when each phase began: {loads}.\n\n" + "\n".join(lines)
            + "\n\n"
            f"`--version` idle: {version:.3f} s (target: under 1 s). Default certification under load: "
            f"{ratio:.1f}× its idle time with the thread policy (target: within 3×), {torch_ratio:.1f}× with torch's "
            f"default threads.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--indices", default="0,1,2,3,4", help="MNIST test indices to certify (default: 0,1,2,3,4)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of --version, --help and import (default: 5)")
    ap.add_argument("--busy", type=int, default=3, help="competing busy loops when loaded (default: 3)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    args.indices = [int(i) for i in args.indices.split(",") if i.strip()]
    args.loadavg = {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:  # not measured: writes the bytecode caches, as a first run does
        timed([*command(), "certify", "--dataset", "mnist", "--index", "0", "--json", str(Path(tmp) / "c.json")])
    measure(args, "idle", rows, lambda s: print(s, flush=True))
    with busy(args.busy):
        measure(args, f"{args.busy} busy", rows, lambda s: print(s, flush=True))
    text = report(args, rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "responsiveness.md").write_text(text)
    from benchmarks.common import write_csv

    write_csv(out / "responsiveness.csv", rows)


if __name__ == "__main__":
    main()
