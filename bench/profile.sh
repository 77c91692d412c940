#!/usr/bin/env bash
# Profile `modelroute proxy` under load with py-spy: where does the CPU per request go?
#   bash bench/profile.sh [seconds] [connections]
# Starts the fake upstream (core 1), modelroute with bench/routes.yaml and the same
# tracing set-up as `make bench` (core 0), drives it with wrk (core 1) and records
# with py-spy.  Writes bench/results/raw/profile.{txt,svg} (raw: collapsed stacks;
# top: the hottest functions by own time, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CONNS="${2:-64}"
RAW=bench/results/raw
mkdir -p "$RAW"
[ -x .venv/bin/py-spy ] || .venv/bin/pip install -q py-spy

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

taskset -c 1 .venv/bin/modelroute fake-provider --listen 127.0.0.1:18500 --latency-ms 20 \
    --output-tokens 50 --tokens-per-second 1000 >"$RAW/profile-upstream.log" 2>&1 &
pids+=($!)
taskset -c 1 .venv/bin/python bench/otlp_sink.py --port 18560 >"$RAW/profile-sink.log" 2>&1 &
pids+=($!)
# PROFILE_TRACING=0 profiles without tracing (to see what the rest costs)
otel=(OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:18560/v1/traces OTEL_METRICS_EXPORTER=none
    OTEL_LOGS_EXPORTER=none OTEL_SERVICE_NAME=modelroute-bench)
[ "${PROFILE_TRACING:-1}" = 1 ] || otel=(OTEL_SDK_DISABLED=true)
env "${otel[@]}" \
    taskset -c 0 .venv/bin/modelroute proxy --routes bench/routes.yaml \
    --listen 127.0.0.1:18520 --admin 127.0.0.1:18521 >"$RAW/profile-modelroute.log" 2>&1 &
MR=$!
pids+=("$MR")

for _ in $(seq 100); do
    if curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
        -d '{"model":"bench","messages":[{"role":"user","content":"hi"}]}' \
        http://127.0.0.1:18520/v1/chat/completions; then break; fi
    sleep 0.2
done
taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s bench/lua/post.lua http://127.0.0.1:18520/v1/chat/completions \
    >/dev/null 2>&1  # warm-up
taskset -c 1 wrk -t1 -c"$CONNS" -d"$((SECS + 2))s" -s bench/lua/post.lua \
    http://127.0.0.1:18520/v1/chat/completions >"$RAW/profile-wrk.txt" 2>&1 &
WRK=$!
.venv/bin/py-spy record --pid "$MR" --duration "$SECS" --rate 250 --nonblocking --format raw \
    -o "$RAW/profile.txt" >/dev/null 2>&1
.venv/bin/py-spy record --pid "$MR" --duration 3 --rate 250 --nonblocking \
    -o "$RAW/profile.svg" >/dev/null 2>&1 || true
wait "$WRK" || true
grep -E "Requests/sec" "$RAW/profile-wrk.txt" || true
echo "collapsed stacks: $RAW/profile.txt; flame graph: $RAW/profile.svg"
echo "hottest functions by own samples:"
.venv/bin/python - "$RAW/profile.txt" <<'PY'
import collections
import sys

own: collections.Counter[str] = collections.Counter()
incl: collections.Counter[str] = collections.Counter()
total = 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip().rpartition(" ")
    n = int(count)
    frames = stack.split(";")
    total += n
    own[frames[-1]] += n
    for f in set(frames):
        incl[f] += n
print(f"{total} samples")
for f, n in own.most_common(25):
    print(f"  own {100 * n / total:5.1f}%  {f}")
print("inclusive, project code only:")
shown = 0
for f, n in incl.most_common():
    if "modelroute" in f or "/proxy/" in f:
        print(f"  incl {100 * n / total:5.1f}%  {f}")
        shown += 1
        if shown == 25:
            break
PY
