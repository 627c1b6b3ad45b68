#!/usr/bin/env bash
# The whole test suite (slow tests included). Extra args go to pytest.
set -euo pipefail
VENV=${VENV:-.venv}
exec "$VENV/bin/python" -m pytest -ra "$@"
