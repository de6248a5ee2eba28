#!/usr/bin/env bash
# The GPU checks of issue 14 in one command, for a session whose task is lent a GPU machine
# (README: "On a GPU"). Here, first: `bash benchmarks/device_wheels.sh <auto_LiRPA checkout>`;
# then, through the device tool: run(command="bash benchmarks/device_check.sh",
# carry=[".whl"], timeout_s=600). Everything it writes lands in $OUT:
#   device.txt     torch, CUDA and the GPU
#   tests.log      the CUDA cases: tests/test_cuda.py and every device-parametrised
#                  specification (soundness by sampling, attack and crafted nets, on the GPU)
#   crown_vs_lirpa.md / .csv / bench.log   the benchmark with --device cuda (written at its end:
#                  300 s of the call; batches 1 and 256,
#                  the CIFAR-size net 1 and 16; ours and auto_LiRPA float32: the bar of issue 14)
# Each step has its own time limit, so that a hang in one leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
py=python3
if ls .whl/*.whl >/dev/null 2>&1; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "the carried wheels did not install" | tee "$out/device.txt"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
    echo "no .whl/: MNIST, pyomo and auto_LiRPA may be missing (benchmarks/device_wheels.sh)"
fi
$py - <<'PY' 2>&1 | tee "$out/device.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
workers=$($py -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
timeout 180 $py -m pytest -q -p no:cacheprovider $workers -k cuda \
    tests/test_cuda.py tests/test_graph_bounds.py tests/test_graph_soundness.py tests/test_crafted_nets.py \
    2>&1 | tee "$out/tests.log"
timeout 300 $py -m benchmarks.crown_vs_lirpa --device cuda --batches 1,256 --cifar-batches 1,16 \
    --tools ours-float64,ours-float32,lirpa-float32 --certify-inputs 5 --out "$out" 2>&1 | tee "$out/bench.log"
