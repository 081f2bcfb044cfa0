#!/usr/bin/env bash
# README's test command: build the wheel, install it with the test extras into a fresh venv, and run the suite
# against that installed package from outside the source tree (a file missing from the wheel fails).
#
#   scripts/test_wheel.sh [--newest | --constraints FILE] [--venv DIR] [--python PY] [pytest args, tests/... paths]
#
# Default: the exact versions CI uses (constraints/ci.txt) in .venv-test. --newest: whatever pip resolves today within
# the ranges pyproject.toml declares (run it before widening a range; then refresh constraints/ci.txt from
# `pip freeze`). --constraints constraints/oldest.txt: the declared minimums.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-test"      # not .venv: README's main command installs there
constraints=(-c "$root/constraints/ci.txt")
# pip applies PIP_CONSTRAINT to the isolated build environment up to 26.1, PIP_BUILD_CONSTRAINT from 26.2
export PIP_CONSTRAINT="$root/constraints/ci.txt" PIP_BUILD_CONSTRAINT="$root/constraints/ci.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    --newest) constraints=(); unset PIP_CONSTRAINT PIP_BUILD_CONSTRAINT; shift ;;
    --constraints) file="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; constraints=(-c "$file")
                   export PIP_CONSTRAINT="$file" PIP_BUILD_CONSTRAINT="$file"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --venv) venv="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    *) break ;;
  esac
done
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
rm -rf "$venv"
"${python:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip wheel -q --no-deps -w "$wheels" "$root"
wheel="$(ls "$wheels"/cfn_fast-*.whl)"
"$venv/bin/python" -m pip install -q ${constraints[@]+"${constraints[@]}"} "${wheel}[test]"
"$venv/bin/python" -m pip check
# From an empty folder, so neither the working directory nor the checkout can shadow the installed package;
# "append" puts tests/ (the test helpers) after site-packages on the path. tests/conftest.py refuses to run when
# cfn_fast does not come from this venv's site-packages.
# Test paths given as tests/... (relative to the checkout) select those files; otherwise the whole of tests/.
args=()
selected=""
for arg in "$@"; do
  case "$arg" in
    tests/*) args+=("$root/$arg"); selected=1 ;;
    *) args+=("$arg") ;;
  esac
done
[ -n "$selected" ] || args+=("$root/tests")
empty="$wheels/run"
mkdir "$empty" && cd "$empty"
status=0
"$venv/bin/python" -m pytest -q --import-mode=append -p no:cacheprovider --rootdir "$root" \
  -c "$root/pyproject.toml" "${args[@]}" || status=$?
exit "$status"
