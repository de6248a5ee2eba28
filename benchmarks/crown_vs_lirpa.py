"""CROWN beside auto_LiRPA's CROWN on the same boxes: time per call, peak memory and the
tightness of the margin bounds, at batch 1, 16 and 256; and the apothem certification
time and peak memory per input.

    python -m benchmarks.crown_vs_lirpa [--batches 1,16,256] [--cifar-batches 1,16]
                                        [--nets mlp-deep,cnn,resnet,cifar-cnn,oval21-wide,resnet-2b]
                                        [--rounds 1]
                                        [--device cpu|cuda]

Networks: the embedded deep MLP (784-100-100-10) and, when present in ``data/``, the
MNIST CNN and residual net (``parallelepipedonn train --arch cnn|resnet``); a CIFAR-size
convnet (3x32x32, conv 16 3x3, conv 32 4x4 stride 2, dense 100, dense 10) with seeded
random weights, exported to ONNX in a temporary directory; and, where a local copy of
VNN-COMP 2021's benchmarks is found (``$VNNCOMP_ROOT``, default ``../vnncomp2021/benchmarks``,
as for :mod:`benchmarks.vnncomp`), two trained CIFAR-10 networks of the competition:
oval21's ``cifar_wide_kw`` (conv 16 4x4 stride 2, conv 32 4x4 stride 2, dense 100, dense 10)
and cifar10_resnet's ``resnet_2b`` (a residual net: six 3x3 and 1x1 convolutions, two
residual additions, dense 100, dense 10). Boxes: L-infinity cubes of radius ``eps``
(clipped to [0, 1]) around inputs the network classifies as one class c (MNIST test
images; seeded random points for the CIFAR-size net); for the VNN-COMP networks the input
boxes of their instances whose centre they classify as the most frequent class c, cycled
(their inputs are normalised images, outside [0, 1], so they have no certification rows);
the bound computed is the lower bound of ``logit_c - logit_j`` for every ``j != c``.

Every configuration runs in a fresh process (one torch thread), so that its peak
resident memory (``ru_maxrss``) is its own; "base" is that process's peak after loading
torch, the network and the boxes, before the first bound. Time: median of ``--repeats``
calls after one warm-up call, as CPU time (the process's, one thread: the figure a
shared machine's load disturbs least; the wall time is in the CSV); with ``--rounds R``
the tools of each configuration run R times, interleaved, and each keeps its median.
Both tools run under ``torch.inference_mode`` (ours sets it itself; auto_LiRPA's call is
wrapped in it). Every process runs with glibc's ``malloc`` thresholds fixed
(:data:`STEADY_MALLOC`): with the defaults, the threshold above which ``malloc`` maps fresh
pages adapts to the sizes freed, so that a tool's large temporaries are mapped, faulted in
and unmapped on every call in some processes and reused in others (auto_LiRPA's float32
call on the CIFAR-size net at batch 1 took about 80 ms in some processes and 100-160 ms in
others on the same machine); ``--default-malloc`` leaves them to glibc.
The speed-ups are ratios of CPU times. Tightness, of our float64 and of our float32 bounds:
the median over boxes and classes of ours minus auto_LiRPA's float32 one, relative to
``max(1, |theirs|)`` (positive: ours tighter), and the share of bounds where ours is at
least theirs minus 1e-6 relative (ours are moved outward by a bound of their rounding
error: ``4 gamma_n`` of the magnitude of their terms for sums of ``n`` terms, in float64
at least 1e-12 of it, in float32 about ``4 n u``, which on nets whose sums cancel is far
from nothing; auto_LiRPA's are not moved).

``--device cuda``: both tools' bounds and the certification on the GPU (ours with cuDNN
off, :func:`oracles.precision.sound_kernels`); times are then wall times (each call
ends by copying its bounds to the host, which waits for the GPU), memory the GPU's peak
allocation (``torch.cuda.max_memory_allocated``, MB) beside the process's resident peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine, markdown_table, write_csv

DATA = Path(__file__).resolve().parents[1] / "data"
NETS = {"mlp-deep": ("mnist-784-100-100-10.onnx", 0.01), "cnn": ("mnist-cnn.onnx", 0.01),
        "resnet": ("mnist-resnet.onnx", 0.01), "cifar-cnn": ("", 1 / 255),
        "oval21-wide": ("", None), "resnet-2b": ("", None)}
#: A local copy of VNN-COMP 2021's benchmarks (github.com/stanleybak/vnncomp2021, read in
#: place, never committed; as for :mod:`benchmarks.vnncomp`).
VNNCOMP_ROOT = Path(os.environ.get("VNNCOMP_ROOT", Path(__file__).resolve().parents[2] / "vnncomp2021" / "benchmarks"))
#: Its CIFAR-10 networks measured when present: category and ONNX file. Boxes: the input
#: boxes of the category's instances of that network.
VNNCOMP_NETS = {"oval21-wide": ("oval21", "nets/cifar_wide_kw.onnx"),
                "resnet-2b": ("cifar10_resnet", "onnx/resnet_2b.onnx")}
#: The nets measured at ``--cifar-batches``.
CIFAR_NETS = ("cifar-cnn", *VNNCOMP_NETS)
TOOLS = ("ours-float64", "ours-float32", "lirpa-float32", "lirpa-float64")
#: glibc's mmap and trim thresholds, fixed (64 MiB, 256 MiB): the same allocator behaviour
#: in every process (see the module docstring).
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**26), "MALLOC_TRIM_THRESHOLD_": str(2**28)}


def cifar_convnet(path: Path) -> Path:
    """The CIFAR-size convnet with seeded random weights (He initialisation), as ONNX."""
    import torch

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16 * 16, 100), nn.ReLU(), nn.Linear(100, 10))
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def net_path(name: str, tmp: Path) -> Path | None:
    if name == "cifar-cnn":
        return cifar_convnet(tmp / "cifar-cnn.onnx")
    if name in VNNCOMP_NETS:
        category, onnx = VNNCOMP_NETS[name]
        path = VNNCOMP_ROOT / category / onnx
    else:
        path = DATA / NETS[name][0]
    return path if path.is_file() else None


def vnncomp_boxes(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The input boxes (rounded outward) of the VNN-COMP instances of network ``name``."""
    import csv

    from parallelepipedonn.vnnlib import read_vnnlib

    category, onnx = VNNCOMP_NETS[name]
    with open(VNNCOMP_ROOT / category / f"{category}_instances.csv", newline="") as f:
        props = [row[1].strip() for row in csv.reader(f) if row and row[0].strip() == onnx]
    pairs = [read_vnnlib(VNNCOMP_ROOT / category / p).regions[0].outer_box() for p in props]
    return np.stack([lo for lo, _ in pairs]), np.stack([hi for _, hi in pairs])


def boxes(net, name: str, count: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``count`` cubes around points the network classifies as its most frequent class (a
    VNN-COMP network: its instances' input boxes whose centre it classifies so, cycled)."""
    if name in VNNCOMP_NETS:
        lower, upper = vnncomp_boxes(name)
        pred = net.predict((lower + upper) / 2)
        label = int(np.bincount(pred).argmax())
        chosen = np.flatnonzero(pred == label)[np.arange(count) % int((pred == label).sum())]
        return lower[chosen], upper[chosen], label
    if name == "cifar-cnn":
        points = np.random.default_rng(0).random((max(400, 8 * count), net.n_inputs))
    else:
        from parallelepipedonn.datasets import load_dataset

        points = load_dataset("mnist", "test").images.reshape(-1, net.n_inputs).astype(np.float64)
    pred = net.predict(points)
    label = int(np.bincount(pred).argmax())
    chosen = points[pred == label]
    chosen = chosen[np.arange(count) % len(chosen)]
    eps = NETS[name][1]
    return np.clip(chosen - eps, 0, 1), np.clip(chosen + eps, 0, 1), label


def plain_module(graph, dtype):
    """The graph as a torch module of standard functional ops on flattened inputs (what
    auto_LiRPA traces): convolutions with their own symmetric padding, pooling, linear
    maps, ReLU, Add/Sub, Concat, reshapes and transposes, with the graph's float64
    weights rounded to ``dtype`` (as parameters: auto_LiRPA reads its dtype from them)."""
    import torch
    import torch.nn.functional as F

    from parallelepipedonn import graph_nodes as gn

    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for k, node in enumerate(graph.nodes):
                for attr in ("weight", "bias_", "scale", "shift"):
                    if isinstance(getattr(node, attr, None), np.ndarray):
                        value = torch.tensor(getattr(node, attr), dtype=dtype)
                        self.register_parameter(f"{attr.strip('_')}{k}", torch.nn.Parameter(value, requires_grad=False))

        def forward(self, x):
            vals = []
            for k, node in enumerate(graph.nodes):
                ins = [vals[i] for i in node.inputs]
                if isinstance(node, gn.Input):
                    v = x.reshape(x.shape[0], *node.shape)
                elif isinstance(node, gn.Reshape):
                    v = ins[0].reshape(ins[0].shape[0], *node.shape)
                elif isinstance(node, gn.Transpose):
                    v = ins[0].permute(0, *(p + 1 for p in node.perm))
                elif isinstance(node, gn.Dense):
                    v = F.linear(ins[0], getattr(self, f"weight{k}"), getattr(self, f"bias{k}"))
                elif isinstance(node, (gn.Conv2d, gn.AvgPool2d)):
                    t, left, b, r = node.pads
                    h = ins[0] if (t, left) == (b, r) else F.pad(ins[0], [left, r, t, b])
                    pad = (t, left) if (t, left) == (b, r) else 0
                    if isinstance(node, gn.Conv2d):
                        v = F.conv2d(h, getattr(self, f"weight{k}"), getattr(self, f"bias{k}"), stride=node.stride,
                                     padding=pad, dilation=node.dilation, groups=node.groups)
                    else:
                        v = F.avg_pool2d(h, node.kernel, node.stride, padding=pad,
                                         count_include_pad=node.count_include_pad)
                elif isinstance(node, gn.Scale):
                    v = ins[0] * getattr(self, f"scale{k}") + getattr(self, f"shift{k}")
                elif isinstance(node, gn.ReLU):
                    v = F.relu(ins[0])
                elif isinstance(node, gn.Add):
                    v = ins[0] + ins[1]
                elif isinstance(node, gn.Sub):
                    v = ins[0] - ins[1]
                elif isinstance(node, gn.Concat):
                    v = torch.cat(ins, dim=node.axis + 1)
                else:
                    raise TypeError(f"no plain torch op for {node.kind}")
                vals.append(v)
            return vals[-1]

    return Plain().eval()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gpu_reset(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(device: str) -> dict:
    """The GPU's peak allocation since :func:`_gpu_reset` (MB), on a GPU."""
    if device == "cpu":
        return {}
    import torch

    return {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20, "gpu": torch.cuda.get_device_name()}


def child(name: str, path: str, tool: str, batch: int, repeats: int, device: str = "cpu") -> dict:
    """One configuration, in this (fresh) process: seconds per call, memory, bounds."""
    import torch

    import parallelepipedonn as ppn

    torch.set_num_threads(1)
    net = ppn.load_onnx(path)
    lower, upper, label = boxes(net, name, batch)
    dtype = tool.rsplit("-", 1)[1]
    if tool.startswith("ours"):
        from oracles import CrownOracle

        oracle = CrownOracle(net, dtype=dtype, chunk_size=max(256, batch), device=device)

        def call() -> np.ndarray:
            return oracle.margin_lower_bounds(lower, upper, label)
    else:
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

        tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        module = net.to_torch(dtype=tdtype) if isinstance(net, ppn.Network) else plain_module(net, tdtype)
        module = module.to(device)
        shape = (batch, net.n_inputs)
        bounded = BoundedModule(module, torch.zeros(shape, dtype=tdtype, device=device), verbose=0, device=device)
        others = [j for j in range(net.n_classes) if j != label]
        spec = torch.zeros(batch, len(others), net.n_classes, dtype=tdtype)
        spec[:, :, label] = 1.0
        spec[:, torch.arange(len(others)), others] = -1.0
        spec = spec.to(device)
        lo = torch.tensor(lower, dtype=tdtype, device=device)
        hi = torch.tensor(upper, dtype=tdtype, device=device)

        def call() -> np.ndarray:
            x = BoundedTensor((lo + hi) / 2, PerturbationLpNorm(x_L=lo, x_U=hi))
            with torch.inference_mode():  # as our CROWN runs: no autograd bookkeeping
                lb, _ = bounded.compute_bounds(x=(x,), C=spec, method="CROWN", bound_upper=False)
            return lb.double().cpu().numpy()
    base = peak_mb()
    _gpu_reset(device)
    bounds = call()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu), "base_mb": base,
            "peak_mb": peak_mb(), "load": os.getloadavg()[0], **_gpu_peak(device),
            "bounds": np.asarray(bounds, dtype=np.float64).tolist()}


def certify_child(name: str, path: str, count: int, device: str = "cpu") -> dict:
    """Apothem certification (the default search, ``crown``, with the default falsifier)
    of ``count`` inputs, each with fresh oracles: wall and CPU time per input, and the
    CPU time of the crown oracle's calls and of the falsifier's."""
    import torch

    import parallelepipedonn as ppn
    from oracles.base import Oracle

    torch.set_num_threads(1)
    net = ppn.load_onnx(path)
    lower, upper, _ = boxes(net, name, count)
    base = peak_mb()
    _gpu_reset(device)
    config = ppn.CertifyConfig(oracle="crown", device=device)
    spent: dict[str, float] = {}
    verify = Oracle.verify

    def timed(self: Oracle, *args: object, **kwargs: object) -> object:  # every oracle's calls, CPU-timed
        start = time.process_time()
        try:
            return verify(self, *args, **kwargs)
        finally:
            spent[self.name] = spent.get(self.name, 0.0) + time.process_time() - start

    Oracle.verify = timed  # type: ignore[method-assign]
    rows = []
    try:
        for lo, hi in zip(lower, upper):
            x = (lo + hi) / 2
            spent.clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            cert = ppn.certify(net, x, config=config)
            rows.append((time.perf_counter() - start, time.process_time() - start_cpu, spent.get("crown", 0.0),
                         spent.get(config.falsifier or "", 0.0), cert.apothem or 0.0))
    finally:
        Oracle.verify = verify  # type: ignore[method-assign]
    wall, cpu, crown, falsifier, apothem = (statistics.median(c) for c in zip(*rows))
    return {"seconds": wall, "cpu_seconds": cpu, "max_seconds": max(r[0] for r in rows),
            "max_cpu_seconds": max(r[1] for r in rows), "crown_cpu_seconds": crown, "falsifier_cpu_seconds": falsifier,
            "base_mb": base, "peak_mb": peak_mb(), "load": os.getloadavg()[0], "apothem": apothem, **_gpu_peak(device)}


def run_child(args: list[str], steady_malloc: bool = True) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(STEADY_MALLOC if steady_malloc else {})}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.crown_vs_lirpa", "--child", *args], capture_output=True,
                          text=True, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,16,256", help='batches of the bound rows ("": none, only the '
                    "certification rows)")
    ap.add_argument("--cifar-batches", default="1,16", help='batches of the CIFAR-10 nets (default: 1,16; "": '
                    "none; at 256 each tool's call takes minutes)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="run the tools of each configuration this many times, "
                    "interleaved, and keep each tool's median (a shared machine's load changes under a long run)")
    ap.add_argument("--certify-inputs", type=int, default=5, help="inputs certified per net (0: none)")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc thresholds adaptive "
                    "(default: fixed in every process, see STEADY_MALLOC)")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"which of {', '.join(TOOLS)} to run (default: all)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both tools compute (default: "
                    "cpu; cuda: times are wall times, memory the GPU's peak allocation)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        result = certify_child(rest[0], rest[1], int(rest[2]), rest[3]) if kind == "certify" else \
            child(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]), rest[5])
        print(json.dumps(result))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no CUDA device here")
    key = "cpu_seconds" if args.device == "cpu" else "seconds"
    from oracles import lirpa_available

    asked = [t for t in args.tools.split(",") if t]
    if unknown := sorted(set(asked) - set(TOOLS)):
        ap.error(f"--tools: unknown {', '.join(unknown)} (known: {', '.join(TOOLS)})")
    tools = [t for t in TOOLS if t in asked and (t.startswith("ours") or lirpa_available())]
    rows, table = [], []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            path = net_path(name, Path(tmp))
            if path is None:
                where = f"not under {VNNCOMP_ROOT}" if name in VNNCOMP_NETS else "train it with parallelepipedonn train"
                print(f"{name}: no network file ({where}), skipped", file=sys.stderr)
                continue
            batches = args.cifar_batches if name in CIFAR_NETS else args.batches
            for batch in (int(b) for b in batches.split(",") if b.strip()):
                runs: dict[str, list[dict]] = {t: [] for t in tools}
                for _ in range(args.rounds):
                    for t in tools:
                        r = run_child(["bound", name, str(path), t, str(batch), str(args.repeats), args.device],
                                      not args.default_malloc)
                        runs[t].append(r)
                        print(f"{name} batch {batch} {t}: " + (r.get("error") or (
                            f"{r['cpu_seconds'] * 1e3:.2f} ms CPU, {r['seconds'] * 1e3:.2f} ms wall, peak "
                            f"{_fmt_mem(r)} MB, load {r['load']:.1f}")), file=sys.stderr)
                got = {t: _median_run(r) for t, r in runs.items()}
                rows += [{"net": name, "batch": batch, "tool": t, **{k: v for k, v in r.items() if k != "bounds"}}
                         for t, r in got.items()]
                table.append(_table_row(name, batch, got, key))
            if args.certify_inputs < 1:  # no certification rows
                continue
            if name in VNNCOMP_NETS:  # normalised inputs: the domain is not [0, 1]^n
                print(f"{name}: no certification rows (its inputs are normalised images, outside [0, 1])",
                      file=sys.stderr)
                continue
            cert = run_child(["certify", name, str(path), str(args.certify_inputs), args.device],
                             not args.default_malloc)
            rows.append({"net": name, "batch": "certify", "tool": "ours-float64",
                         **{k: v for k, v in cert.items() if k != "bounds"}})
            detail = "" if "error" in cert else (
                f"crown {_fmt_s(cert, 'crown_cpu_seconds')}, falsifier {_fmt_s(cert, 'falsifier_cpu_seconds')} (CPU "
                f"time); wall {_fmt_s(cert, 'seconds')}; slowest input {_fmt_s(cert, 'max_' + key)}")
            table.append([name, "certify (per input)", f"{_fmt_s(cert, key)} ({_fmt_mem(cert)})", detail, "", "", "",
                          ""])
    out = Path(args.out)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(out / "crown_vs_lirpa.csv", [{k: r.get(k, "") for k in keys} for r in rows])
    header = ["net", "batch", "ours f64", "ours f32 (peak MB)", "auto_LiRPA f32", "auto_LiRPA f64",
              "speed-up vs auto_LiRPA f32: ours f64 / f32",
              "tightness vs auto_LiRPA f32: ours f64 / f32, relative (median; share ≥ −1e-6)"]
    load_end = os.getloadavg()
    rounds = f", the tools interleaved in {args.rounds} rounds (median)" if args.rounds > 1 else ""
    if args.device == "cpu":
        what = (f"CROWN margin bounds: CPU time per call (median of {args.repeats}{rounds}; one thread, so on an idle "
                f"machine about the wall time, which the CSV has too) and peak resident memory of the process (MB, "
                f"including torch). Certify: CPU time per input (median of {args.certify_inputs}), its crown and "
                f"falsifier calls, wall time. Machine: {machine()}")
    else:
        gpu = next((r["gpu"] for r in rows if "gpu" in r), "the GPU")
        what = (f"CROWN margin bounds on {gpu} (`--device cuda`): wall time per call (median of {args.repeats}"
                f"{rounds}; each call ends by copying its bounds to the host) and the GPU's peak allocation (MB). "
                f"Certify: wall time per input (median of {args.certify_inputs}), the CPU time of its crown and "
                f"falsifier calls. Host: {machine()}")
    text = (f"{what}; one torch thread per process; glibc malloc thresholds "
            f"{'adaptive (glibc default)' if args.default_malloc else 'fixed (STEADY_MALLOC)'}; 1-minute load average "
            f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end. "
            f"Command: `python -m benchmarks.crown_vs_lirpa{_command_options(args)}`.\n\n"
            + markdown_table(header, table) + "\n")
    (out / "crown_vs_lirpa.md").write_text(text)
    print(text)


def _median_run(runs: list[dict]) -> dict:
    """One tool's runs of a configuration: the median times, the largest peak memory, the
    first run's bounds (an error if any run failed)."""
    for r in runs:
        if "error" in r:
            return r
    out = dict(runs[0])
    for key in ("seconds", "cpu_seconds", "load"):
        out[key] = statistics.median(r[key] for r in runs)
    out["peak_mb"] = max(r["peak_mb"] for r in runs)
    return out


def _command_options(args: argparse.Namespace) -> str:
    defaults = {"batches": "1,16,256", "cifar_batches": "1,16", "nets": ",".join(NETS), "repeats": 5, "rounds": 1,
                "certify_inputs": 5, "tools": ",".join(TOOLS), "device": "cpu"}
    return "".join(f" --{k.replace('_', '-')} {shlex.quote(str(getattr(args, k)))}" for k, v in defaults.items()
                   if getattr(args, k) != v) + (" --default-malloc" if args.default_malloc else "")


def _fmt_s(r: dict, key: str = "cpu_seconds") -> str:
    if "error" in r:
        return f"error: {r['error'][:60]}"
    return f"{r[key] * 1e3:.1f} ms" if r[key] < 1 else f"{r[key]:.2f} s"


def _fmt_mem(r: dict) -> str:
    """The process's resident peak, or on a GPU its peak allocation (MB)."""
    if "error" in r:
        return ""
    return f"{r['gpu_peak_mb']:.0f} GPU" if "gpu_peak_mb" in r else f"{r['peak_mb']:.0f}"


def _tightness(ours: dict, theirs: np.ndarray) -> str:
    """Median over boxes and classes of ``(ours - theirs) / max(1, |theirs|)`` and the share
    of bounds at least theirs minus 1e-6 of that scale."""
    if "bounds" not in ours:
        return "—"
    diff = (np.asarray(ours["bounds"]) - theirs) / np.maximum(1.0, np.abs(theirs))
    return f"{np.median(diff):+.1e}; {np.mean(diff >= -1e-6):.0%}"


def _table_row(name: str, batch: int, got: dict[str, dict], key: str = "cpu_seconds") -> list[object]:
    """One bound row; times (and speed-ups) by ``key``: ``cpu_seconds``, or ``seconds`` (wall) on a GPU."""
    ours64, ours32 = got.get("ours-float64", {"error": "not run"}), got.get("ours-float32", {"error": "not run"})
    l32, l64 = got.get("lirpa-float32", {"error": "not run"}), got.get("lirpa-float64", {"error": "not run"})
    speed = tight = ""
    if key in l32:
        speed = " / ".join(f"{l32[key] / r[key]:.1f}×" if key in r else "—" for r in (ours64, ours32))
    if "bounds" in l32:
        theirs = np.asarray(l32["bounds"])
        tight = " / ".join(_tightness(r, theirs) for r in (ours64, ours32))
    cells = ("—" if r.get("error") == "not run" else f"{_fmt_s(r, key)} ({_fmt_mem(r)})" for r in (ours64, ours32, l32, l64))
    return [name, batch, *cells, speed, tight]


if __name__ == "__main__":
    main()
