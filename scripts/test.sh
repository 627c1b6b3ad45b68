#!/usr/bin/env bash
# The whole test suite (slow tests included), one worker per core. Extra args go to pytest.
# As root with apt-get (CI), it first brings up a local single-node SLURM (scripts/slurm_local.sh)
# for tests/test_slurm.py and stops it afterwards; SPSAMP_SLURM=0 skips that (the SLURM tests then
# skip, saying why). A SLURM that was already running is left running.
set -euo pipefail
VENV=${VENV:-.venv}
started_slurm=0
if [ "${SPSAMP_SLURM:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        && ! bash scripts/slurm_local.sh status >/dev/null 2>&1; then
    if bash scripts/slurm_local.sh start; then
        started_slurm=1
    else
        echo "test.sh: local SLURM did not start; tests/test_slurm.py will skip" >&2
    fi
fi
rc=0
# one pytest worker per core (pytest-xdist), whole files per worker so module fixtures run once;
# each worker keeps spsamp's one-thread default on a small machine. PYTEST_WORKERS=0: no workers.
workers=${PYTEST_WORKERS:-auto}
xdist=()
[ "$workers" != 0 ] && xdist=(-n "$workers" --dist loadfile)
"$VENV/bin/python" -m pytest -ra "${xdist[@]}" "$@" || rc=$?
[ "$started_slurm" = 1 ] && bash scripts/slurm_local.sh stop || true
exit "$rc"
