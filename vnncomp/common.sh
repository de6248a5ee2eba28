# Shared by the VNN-COMP scripts (sourced): the tool's command line, in the array PPN.
# $PARALLELEPIPEDONN overrides it (a command, split on spaces); else the virtual environment
# install_tool.sh makes, else `parallelepipedonn` on the PATH, else `python3 -m parallelepipedonn.cli`.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PARALLELEPIPEDONN:-}" ]; then
    read -r -a PPN <<< "$PARALLELEPIPEDONN"
elif [ -x "$root/.venv/bin/parallelepipedonn" ]; then
    PPN=("$root/.venv/bin/parallelepipedonn")
elif command -v parallelepipedonn > /dev/null 2>&1; then
    PPN=(parallelepipedonn)
else
    PPN=(python3 -m parallelepipedonn.cli)
fi

check_version() {
    if [ "$1" != "v1" ]; then
        echo "$(basename "$0"): expected the version string v1, got '$1'" >&2
        exit 1
    fi
}
