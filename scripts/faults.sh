#!/usr/bin/env bash
# `make faults`: the fault-injection tier. The release binary talks to a throwaway PostgreSQL
# through Tests/Faults/pgproxy.py, once per fault (delay, stall, cut, truncate, swap, garble,
# replay, and none), then two replicas through PgBouncer in transaction pooling mode
# (`DB_PGBOUNCER=transaction`, otherwise the defaults); each time Tests/Faults/checker.py drives the API and checks every answer.
# Passes when there are 0 wrong answers, 0 failures (5xx other than 503, dropped connections),
# 0 hung requests, no crash, no leaked continuation, and SIGTERM ends the server with status 0.
# FAULT_SECONDS of load per case (default 10); FAULT_MODES to pick cases; FAULT_BINARY to run
# a given binary instead of building one.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

seconds=${FAULT_SECONDS:-10}
modes=${FAULT_MODES:-"pass delay stall cut truncate swap garble replay pgbouncer"}
dir=$(mktemp -d /tmp/task-management-faults.XXXXXX)
chmod 755 "$dir"
pgport=$(scripts/pg-cluster.sh free-port)
server_pid= proxy_pid=
cleanup() {
  for pid in $server_pid $proxy_pid; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  scripts/pgbouncer.sh stop "$dir/bouncer"
  scripts/pg-cluster.sh stop "$dir/pg"
  rm -rf "$dir"
}
trap cleanup EXIT
scripts/pg-cluster.sh start "$dir/pg" "$pgport" || exit 1

# FAULT_BINARY runs another build (an older commit's, say) through the same cases.
binary=${FAULT_BINARY:-.build-static/release/task-management}
if [ -z "${FAULT_BINARY:-}" ]; then
  swift build -c release --static-swift-stdlib --product task-management --scratch-path .build-static || exit 1
fi

status=0
summary=()
for mode in $modes; do
  via=$(scripts/pg-cluster.sh free-port)
  rm -f "$dir/proxy.log"
  if [ "$mode" = pgbouncer ]; then
    scripts/pgbouncer.sh start "$dir/bouncer" "$via" "$pgport" || exit 1
  else
    python3 Tests/Faults/pgproxy.py "$via" 127.0.0.1 "$pgport" "$mode" 0.03 7 >"$dir/proxy.log" 2>&1 &
    proxy_pid=$!
  fi
  sleep 0.5
  # Behind PgBouncer two replicas share the backends, as pods do.
  # Through the proxy, a shallow pipeline keeps several connections open for swap and garble
  # to cross; behind PgBouncer the default depth, in its transaction-pooling mode.
  replicas=1 depth=2 pooler=off; [ "$mode" = pgbouncer ] && replicas=2 depth=16 pooler=transaction
  ports= server_pid=
  : >"$dir/server.log"
  for _ in $(seq 1 $replicas); do
    port=$(scripts/pg-cluster.sh free-port)
    # No SSL or GSS negotiation through the proxy: it parses the protocol from the first message.
    DATABASE_URL="postgresql://postgres@127.0.0.1:$via/taskmanagement?sslmode=disable&gssencmode=disable" DB_PIPELINE_DEPTH=$depth DB_PGBOUNCER=$pooler PORT=$port HOST=127.0.0.1 LOG_LEVEL=warning \
      "$binary" >>"$dir/server.log" 2>&1 &
    server_pid="$server_pid $!"
    ports="${ports:+$ports,}$port"
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done

  result=$(python3 Tests/Faults/checker.py "$ports" "$seconds" 12)
  checker=$?
  verdict=ok
  [ $checker -eq 0 ] || verdict="checker failed"
  for pid in $server_pid; do kill -0 "$pid" 2>/dev/null || verdict="server crashed"; done
  if grep -q "CONTINUATION MISUSE" "$dir/server.log"; then verdict="leaked continuation"; fi
  started=$(date +%s)
  kill -TERM $server_pid 2>/dev/null
  exit_status=0
  for pid in $server_pid; do wait "$pid" || exit_status=$?; done
  server_pid=
  took=$(( $(date +%s) - started ))
  [ $exit_status -eq 0 ] || verdict="exit status $exit_status after SIGTERM"
  [ $took -le 15 ] || verdict="SIGTERM took $took s"
  poisoned=$(grep -c "poisoned" "$dir/server.log")
  # With DB_PGBOUNCER=transaction nothing a pooler does is out of turn: no connection is poisoned.
  if [ "$mode" = pgbouncer ] && [ "$poisoned" -gt 0 ] && [ "$verdict" = ok ]; then verdict="$poisoned connections poisoned behind PgBouncer"; fi
  for pid in $proxy_pid; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  proxy_pid=
  scripts/pgbouncer.sh stop "$dir/bouncer"
  injected=$(sed -n 's/.* \([0-9]*\) faults injected in all/\1/p' "$dir/proxy.log" 2>/dev/null)
  echo "== $mode: $verdict; ${result%%$'\n'*}; faults injected: ${injected:--}; connections poisoned: $poisoned; SIGTERM exit $exit_status in ${took}s"
  [ "$verdict" = ok ] || { status=1; echo "$result" | tail -n +2; tail -n 20 "$dir/server.log"; }
  summary+=("$mode: $verdict")
done
printf '%s\n' "${summary[@]}"
exit $status
