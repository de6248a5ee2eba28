#!/usr/bin/env bash
# VNN-COMP: install_tool.sh v1 — a virtual environment in the checkout, with the tool and
# the dependency versions CI tested (constraints.txt). Needs python3 >= 3.11 and pip access.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_version "${1:-}"
python3 -m venv "$root/.venv"
"$root/.venv/bin/pip" install -q -c "$root/constraints.txt" -e "$root"
"$root/.venv/bin/parallelepipedonn" --version
