#!/usr/bin/env bash
# `make bench`: install the tools (once), then run the side-by-side benchmark.
# Writes bench/results/latest.md and bench/results/latest.json; raw logs go to
# bench/results/raw/ (git-ignored).  Extra arguments go to the harness, bench/harness/
# (e.g. `bash bench/run.sh --reps 1 --duration 1` for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p bench/results/raw
PIDFILE=bench/results/raw/pids
: >"$PIDFILE"

cleanup() {
    # Everything the harness started runs in its own process group, recorded here;
    # stop those groups (and only those) if the harness didn't get to it.
    local pid
    while read -r pid; do
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || true
        fi
    done <"$PIDFILE"
    sleep 0.5
    while read -r pid; do
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    done <"$PIDFILE"
}
trap cleanup EXIT

bash bench/setup.sh
# 1,000 open connections need more than the default 1,024 descriptors in the holder and the proxies
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
.venv/bin/python -m bench.harness "$@"
