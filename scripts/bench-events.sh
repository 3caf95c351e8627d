#!/usr/bin/env bash
# What live updates cost (issue 18), on ../shared/bench's PostgreSQL (55432), pool 8: wrk's
# mixed scenario (64 connections) alone, then again while SUBSCRIBERS (1,000) streams are open on
# the same process and a marker task is created every 100 ms (scripts/bench/events_load.py):
# mixed requests/s both times, RSS per subscriber, whether every subscriber got every event,
# and marker delivery p50/p99 (subscribers read by scripts/bench/events_client.c, built with gcc).
# usage: scripts/bench-events.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-.build/release/task-management}")
BENCH_DIR=${BENCH_DIR:-$(realpath ../shared/bench)}
SUBSCRIBERS=${SUBSCRIBERS:-1000}; DURATION=${DURATION:-10}; PORT=${PORT:-5613}
ulimit -n "$(ulimit -Hn)"
"$BENCH_DIR/pg.sh" start >/dev/null
"$BENCH_DIR/pg.sh" seed 100 >/dev/null  # the mixed scenario's table (as run.sh seeds it)
DATABASE_URL=postgresql://postgres:postgres@127.0.0.1:55432/taskmanagement DB_POOL_SIZE=8 HOST=127.0.0.1 PORT=$PORT \
  LOG_LEVEL=warning "$binary" >/tmp/bench-events.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
mixed() {
  TASKS=100 wrk -t 2 -c 64 -d 3s -s "$BENCH_DIR/wrk/mixed.lua" "http://127.0.0.1:$PORT" >/dev/null 2>&1 || true
  TASKS=100 wrk -t 2 -c 64 -d "${DURATION}s" -s "$BENCH_DIR/wrk/mixed.lua" "http://127.0.0.1:$PORT" 2>&1 | grep '^RESULT' | cut -d' ' -f2-8
}
echo "# $(date -u +%FT%TZ) binary=$binary subscribers=$SUBSCRIBERS"
echo "mixed alone:            $(mixed)"
gcc -O2 -o /tmp/bench-events-client scripts/bench/events_client.c
python3 scripts/bench/events_load.py "$PORT" "$server" "$SUBSCRIBERS" $((DURATION + 5)) /tmp/bench-events-client > /tmp/bench-events.out &
load=$!
sleep 3
echo "mixed with subscribers: $(mixed)"
wait $load
echo "subscribers: $(cat /tmp/bench-events.out)"
