#!/usr/bin/env bash
# VNN-COMP: prepare_instance.sh v1 CATEGORY ONNX VNNLIB — read and check the model and the
# property before the timed run (verify --check): exit 0 if the tool can take the instance,
# else the tool's exit code (2: a model or property it cannot read; the message on stderr).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ "$#" -ne 4 ]; then
    echo "usage: $(basename "$0") v1 CATEGORY ONNX VNNLIB" >&2
    exit 1
fi
check_version "$1"
"${PPN[@]}" verify --model "$3" --vnnlib "$4" --check
