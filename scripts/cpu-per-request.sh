#!/usr/bin/env bash
# Server CPU per request, a steadier figure than requests/s on a shared machine: starts BINARY on
# port 18090 against the bench harness's PostgreSQL (../shared/bench/pg.sh, port 55432, seeded),
# runs wrk with the harness's scenario scripts (64 connections, 3 s warm-up, 10 s measured) and
# divides the server's task-clock (perf stat) by the requests served.
# Usage: scripts/cpu-per-request.sh BINARY [SCENARIO...]   (default: get_one health)
set -euo pipefail
binary=$1; shift
[ $# -gt 0 ] && scenarios=("$@") || scenarios=(get_one health)
bench=${BENCH_DIR:-$(cd "$(dirname "$0")/../../shared/bench" && pwd)}
url=http://127.0.0.1:18090
DATABASE_URL=postgresql://postgres:postgres@127.0.0.1:55432/taskmanagement PORT=18090 DB_POOL_SIZE=8 LOG_LEVEL=error \
  "$binary" > /dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
sleep 1.5
perf_out=$(mktemp)
for scenario in "${scenarios[@]}"; do
  wrk -t2 -c64 -d3s -s "$bench/wrk/$scenario.lua" "$url" > /dev/null 2>&1
  perf stat -e task-clock -p "$pid" -o "$perf_out" -- sleep 10 > /dev/null 2>&1 &
  perf_pid=$!
  out=$(wrk -t2 -c64 -d10s -s "$bench/wrk/$scenario.lua" "$url" 2>&1)
  wait $perf_pid
  requests=$(awk '/requests in/{print $1}' <<< "$out")
  milliseconds=$(awk '/task-clock/{gsub(",", "", $1); print $1}' "$perf_out")
  rps=$(awk '/Requests\/sec/{print $2}' <<< "$out")
  echo "$scenario requests/s=$rps server_cpu_us_per_request=$(python3 -c "print(round($milliseconds * 1000 / $requests, 2))")"
done
rm -f "$perf_out"
