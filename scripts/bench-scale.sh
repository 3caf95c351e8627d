#!/usr/bin/env bash
# How the server's cost grows with rows and connections (issue 16), on ../shared/bench's
# PostgreSQL (BENCH_DIR; port 55432), one server at a time, DB_POOL_SIZE=PG_POOL_SIZE (8):
#   lists:   wrk on the list (created_at desc) at 100 and 10,000 rows, then pgbench -M prepared
#            -c PG_POOL_SIZE on the same SELECT, same duration; the ratio;
#   memory:  32 clients reading a 100,000-row list at once, half slowly
#            (scripts/bench/list_memory.py): the server's RSS above idle;
#   conns:   wrk get_one (1,000 rows) at 64, 1,024 and 4,096 keep-alive connections;
#   idle:    10,000 idle keep-alive connections held open while wrk runs get_one at 64: RSS
#            per idle connection, and get_one's rate beside them.
# usage: scripts/bench-scale.sh [BINARY] (default the release build); PARTS picks parts.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-.build/release/task-management}")
export BENCH_DIR=${BENCH_DIR:-$(realpath ../shared/bench)}
DURATION=${DURATION:-10}; POOL=${PG_POOL_SIZE:-8}; PORT=${PORT:-5611}
PARTS=${PARTS:-"lists memory conns idle"}
ulimit -n "$(ulimit -Hn)"
export PGHOST=127.0.0.1 PGPORT=55432 PGUSER=postgres PGPASSWORD=postgres PGDATABASE=taskmanagement
"$BENCH_DIR/pg.sh" start >/dev/null
server=
stop_server() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; }
trap 'stop_server; [ -n "${holder:-}" ] && kill "$holder" 2>/dev/null' EXIT
start_server() {
  DATABASE_URL=postgresql://postgres:postgres@127.0.0.1:55432/taskmanagement DB_POOL_SIZE=$POOL \
    HOST=127.0.0.1 PORT=$PORT LOG_LEVEL=warning "$binary" >/tmp/bench-scale.log 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.1; done
  echo "the server did not start" >&2; cat /tmp/bench-scale.log >&2; exit 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server/status"; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
wrk_line() {  # connections script [TASKS]
  TASKS=${3:-1000} wrk -t 2 -c "$1" -d 3s -s "$BENCH_DIR/wrk/$2.lua" "http://127.0.0.1:$PORT" >/dev/null 2>&1 || true
  TASKS=${3:-1000} wrk -t 2 -c "$1" -d "${DURATION}s" --timeout 10s -s "$BENCH_DIR/wrk/$2.lua" "http://127.0.0.1:$PORT" 2>&1 | grep '^RESULT'
}
echo "# $(date -u +%FT%TZ) binary=$binary pool=$POOL duration=${DURATION}s nproc=$(nproc) nofile=$(ulimit -n)"

for part in $PARTS; do
  case $part in
    lists)
      for rows in 100 10000; do
        "$BENCH_DIR/pg.sh" seed "$rows" >/dev/null
        start_server
        line=$(wrk_line 64 list "$rows")
        stop_server
        pgb=$(/usr/lib/postgresql/15/bin/pgbench -n -M prepared -c "$POOL" -j 2 -T "$DURATION" -f "$BENCH_DIR/pgbench/list.sql" 2>&1 |
          sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        echo "lists rows=$rows server_rps=$(field rps "$line") p50_ms=$(field p50_ms "$line") p99_ms=$(field p99_ms "$line") non2xx=$(field non2xx "$line") pgbench_tps=$pgb ratio=$(awk -v a="$(field rps "$line")" -v b="$pgb" 'BEGIN{printf "%.2f", a/b}')"
      done ;;
    memory)
      "$BENCH_DIR/pg.sh" seed 100000 >/dev/null
      start_server
      sleep 1
      echo "memory rows=100000 $(python3 scripts/bench/list_memory.py "$PORT" "$server" 32)"
      stop_server ;;
    conns)
      "$BENCH_DIR/pg.sh" seed 1000 >/dev/null
      start_server
      base=
      for conns in 64 1024 4096; do
        line=$(wrk_line "$conns" get_one)
        rps=$(field rps "$line"); base=${base:-$rps}
        echo "conns get_one connections=$conns rps=$rps p50_ms=$(field p50_ms "$line") p99_ms=$(field p99_ms "$line") non2xx=$(field non2xx "$line") sockerr_c/r/w/t=$(field connect "$line")/$(field read "$line")/$(field write "$line")/$(field timeout "$line") vs_64=$(awk -v a="$rps" -v b="$base" 'BEGIN{printf "%.2f", a/b}') rss_mib=$(( $(rss_kib) / 1024 ))"
      done
      stop_server ;;
    idle)
      "$BENCH_DIR/pg.sh" seed 1000 >/dev/null
      start_server
      curl -fs "http://127.0.0.1:$PORT/api/tasks/1" >/dev/null
      sleep 1
      before=$(rss_kib)
      python3 - "$PORT" 10000 <<'PY' &
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
    held.append(s)
for s in held:
    s.recv(4096)
print("held", len(held), flush=True)
time.sleep(3600)
PY
      holder=$!
      for _ in $(seq 300); do
        [ "$(ss -Htn state established "( sport = :$PORT )" | wc -l)" -ge 10000 ] && break; sleep 0.1
      done
      sleep 2
      after=$(rss_kib)
      line=$(wrk_line 64 get_one)
      echo "idle connections=10000 rss_before_mib=$((before / 1024)) rss_after_mib=$((after / 1024)) per_idle_kib=$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.1f", (a-b)/10000}') get_one_rps_beside=$(field rps "$line") p99_ms=$(field p99_ms "$line") sockerr_c/r/w/t=$(field connect "$line")/$(field read "$line")/$(field write "$line")/$(field timeout "$line")"
      kill "$holder"; holder=
      stop_server ;;
  esac
done
