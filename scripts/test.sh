#!/usr/bin/env bash
# The whole test suite (slow tests included), one worker per core. Extra args go to pytest.
# It first makes sure the venv is set up (`make setup`: a no-op when it is current). As root with
# apt-get (CI), it starts a local single-node SLURM (scripts/slurm_local.sh) for tests/test_slurm.py
# *in the background before the setup*, so that installing SLURM's Debian packages overlaps the venv's
# install; the SLURM tests wait for that start (SPSAMP_SLURM_STARTING names where it reports) and skip,
# saying why, if it failed. Afterwards it stops what it started. SPSAMP_SLURM=0 skips all this (the
# SLURM tests then skip, saying why). A SLURM that was already running is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
started_slurm=0
if [ "${SPSAMP_SLURM:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        && ! bash scripts/slurm_local.sh status >/dev/null 2>&1; then
    report=$(mktemp -d)
    # rc lands only when the start has ended (written then renamed: a reader never sees half of it)
    ( rc=0; bash scripts/slurm_local.sh start >"$report/log" 2>&1 || rc=$?; echo "$rc" >"$report/rc.tmp"; mv "$report/rc.tmp" "$report/rc" ) &
    export SPSAMP_SLURM_STARTING=$report
    started_slurm=1
fi
stop_slurm() {
    [ "$started_slurm" = 1 ] || return 0
    wait || true  # a start still running (setup failed early) ends before the stop
    bash scripts/slurm_local.sh stop || true
}
trap stop_slurm EXIT
"${MAKE:-make}" -s setup VENV="$VENV"
# one pytest worker per core (pytest-xdist), whole files per worker so module fixtures run once;
# each worker keeps spsamp's one-thread default on a small machine. PYTEST_WORKERS=0: no workers.
workers=${PYTEST_WORKERS:-auto}
xdist=()
[ "$workers" != 0 ] && xdist=(-n "$workers" --dist loadfile)
# pytest runs in a process group of its own, so that stopping this script (TERM, INT, HUP) stops
# its xdist workers too instead of leaving them running
if ! command -v setsid >/dev/null; then
    "$VENV/bin/python" -m pytest -ra "${xdist[@]}" "$@"  # (no util-linux: no group of its own)
    exit
fi
setsid --wait "$VENV/bin/python" -m pytest -ra "${xdist[@]}" "$@" &
pytest_pid=$!
stop_pytest() { kill -TERM -- "-$pytest_pid" 2>/dev/null || true; }
trap 'stop_pytest; exit 143' TERM
trap 'stop_pytest; exit 130' INT
trap 'stop_pytest; exit 129' HUP
wait "$pytest_pid"
