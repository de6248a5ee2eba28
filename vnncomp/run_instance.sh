#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT — verify the
# property and write RESULTS_FILE in the competition's format: its first line sat, unsat,
# unknown, timeout or error, and for sat the counterexample ((X_0 v) ... (Y_0 v) ...).
# TIMEOUT (seconds) is the verification's budget; the process is killed TIMEOUT +
# $PARALLELEPIPEDONN_KILL_SLACK seconds (default 30) after it starts, and the result is
# then timeout. $PARALLELEPIPEDONN_VERIFY_OPTIONS adds options (e.g. --oracle crown+bab).
# RESULTS_FILE's directory is created if missing; exit 1 (nothing removed) if RESULTS_FILE
# is the ONNX or VNNLIB file, or if it cannot be written.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ "$#" -ne 6 ]; then
    echo "usage: $(basename "$0") v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
    exit 1
fi
check_version "$1"
category=$2 onnx=$3 vnnlib=$4 results=$5 budget=$6
kill_after=$(awk -v t="$budget" -v s="${PARALLELEPIPEDONN_KILL_SLACK:-30}" 'BEGIN { printf "%d", t + s + 1 }')
# RESULTS_FILE must not be an input: it is removed before the run (checked before removing anything)
for input in "$onnx" "$vnnlib"; do
    if [ -e "$results" ] && [ -e "$input" ] && [ "$results" -ef "$input" ]; then
        echo "$(basename "$0"): the results file $results is the input $input: refusing to overwrite it" >&2
        exit 1
    fi
done
dir=$(dirname -- "$results")
if ! mkdir -p -- "$dir" || [ ! -d "$dir" ]; then
    echo "$(basename "$0"): cannot create the directory $dir of the results file" >&2
    exit 1
fi
rm -f -- "$results"
read -r -a extra <<< "${PARALLELEPIPEDONN_VERIFY_OPTIONS:-}"
echo "$(basename "$0"): category $category: $onnx $vnnlib (timeout $budget s)" >&2
timeout -s KILL "$kill_after" "${PPN[@]}" verify --model "$onnx" --vnnlib "$vnnlib" --timeout "$budget" \
    --result-file "$results" ${extra[@]+"${extra[@]}"}
rc=$?
if [ ! -s "$results" ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo timeout > "$results"
    else
        echo error > "$results"
    fi
fi
if [ ! -s "$results" ]; then
    echo "$(basename "$0"): could not write the results file $results" >&2
    exit 1
fi
exit 0
