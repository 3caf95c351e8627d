#!/usr/bin/env bash
# What a revalidated list costs: wrk on the 100-task list, unconditional and with a matching
# If-None-Match (every answer 304), and on get_one over the same 100 tasks, in one run, ROUNDS
# times alternating. usage: scripts/bench-conditional.sh [BINARY] (default the release build).
# Uses ../shared/bench (BENCH_DIR): its PostgreSQL on 55432, wrk scripts and RESULT format.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-.build/release/task-management}")
export BENCH_DIR=${BENCH_DIR:-$(realpath ../shared/bench)}
ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-10s}; CONNS=${CONNS:-64}; PORT=${PORT:-5610}
"$BENCH_DIR/pg.sh" start >/dev/null
"$BENCH_DIR/pg.sh" seed 100 >/dev/null
DATABASE_URL=postgresql://postgres:postgres@127.0.0.1:55432/taskmanagement DB_POOL_SIZE=${PG_POOL_SIZE:-8} \
  HOST=127.0.0.1 PORT=$PORT LOG_LEVEL=warning "$binary" >/tmp/bench-conditional.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
list="http://127.0.0.1:$PORT/api/tasks?sort_by=created_at&sort_order=desc"
export ETAG=$(curl -fsi "$list" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$list")" = 304 ] || { echo "no 304 for $ETAG" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) binary=$binary conns=$CONNS duration=$DURATION etag=$ETAG"
declare -A sum
for round in $(seq "$ROUNDS"); do
  for scenario in list list_not_modified get_one; do
    script="$BENCH_DIR/wrk/$scenario.lua"; [ "$scenario" = list_not_modified ] && script=scripts/bench/list_not_modified.lua
    TASKS=100 wrk -t 2 -c "$CONNS" -d 3s -s "$script" "http://127.0.0.1:$PORT" >/dev/null 2>&1 || true
    line=$(TASKS=100 wrk -t 2 -c "$CONNS" -d "$DURATION" -s "$script" "http://127.0.0.1:$PORT" 2>&1 | grep '^RESULT')
    rps=$(sed -n 's/.* rps=\([^ ]*\).*/\1/p' <<<"$line")
    printf "round %s %-18s rps=%9s p50=%sms p99=%sms non2xx=%s\n" "$round" "$scenario" "$rps" \
      "$(sed -n 's/.* p50_ms=\([^ ]*\).*/\1/p' <<<"$line")" "$(sed -n 's/.* p99_ms=\([^ ]*\).*/\1/p' <<<"$line")" \
      "$(sed -n 's/.* non2xx=\([^ ]*\).*/\1/p' <<<"$line")"
    sum[$scenario]=$(awk -v a="${sum[$scenario]:-0}" -v b="$rps" 'BEGIN{print a+b}')
  done
done
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$list")" = 304 ] || { echo "the tag changed during the run" >&2; exit 1; }
awk -v l="${sum[list]}" -v n="${sum[list_not_modified]}" -v g="${sum[get_one]}" \
  'BEGIN{printf "ratios (means over rounds): 304/list=%.2f  304/get_one=%.2f\n", n/l, n/g}'
