#!/usr/bin/env bash
# `make test`: installs what is missing, starts a throwaway PostgreSQL cluster on a free port
# (unless DATABASE_URL points at one), runs `swift test` against it, and always stops it.
# Then, on that throwaway cluster and without extra arguments, the contract suites once more
# with the server behind PgBouncer in transaction pooling mode (`DB_PGBOUNCER=transaction`),
# and, when Chromium is installed, the live-updates browser test against two replicas.
# Fails when either pass fails. Extra arguments go to swift test.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

cleanup() { :; }
own_cluster=
if [ -z "${DATABASE_URL:-}" ]; then
  own_cluster=1
  dir=$(mktemp -d /tmp/task-management-test.XXXXXX)
  chmod 755 "$dir"
  port=$(scripts/pg-cluster.sh free-port)
  cleanup() { scripts/pgbouncer.sh stop "$dir/bouncer"; scripts/pg-cluster.sh stop "$dir/pg"; rm -rf "$dir"; }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  scripts/pg-cluster.sh start "$dir/pg" "$port" || exit 1
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/taskmanagement"
fi

# The binary tests start the real server, so build it first.
swift build --product task-management || exit 1
# Suites run one after another: several start servers and load them, and timings stay honest.
swift test --no-parallel "$@" || exit 1

if [ -n "$own_cluster" ] && [ $# -eq 0 ]; then
  echo "== the contract behind PgBouncer (transaction pooling)"
  bouncer_port=$(scripts/pg-cluster.sh free-port)
  scripts/pgbouncer.sh start "$dir/bouncer" "$bouncer_port" "$port" || exit 1
  TEST_PGBOUNCER_PORT=$bouncer_port swift test --skip-build --no-parallel --filter 'TaskAPITests|ConditionalRequestTests' || exit 1
fi

# Live updates in a real browser, when Chromium and the checkers' venv are installed
# (`scripts/conformance.sh --install-only` installs them; `make conformance` runs this test too).
if [ -n "$own_cluster" ] && [ $# -eq 0 ] && command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
   && [ -x .venv-conformance/bin/python ]; then
  echo "== live updates in headless Chromium (two replicas)"
  pids= urls=()
  for _ in 1 2; do
    p=$(scripts/pg-cluster.sh free-port)
    PORT=$p HOST=127.0.0.1 LOG_LEVEL=warning .build/debug/task-management > "$dir/replica-$p.log" 2>&1 &
    pids="$pids $!"
    urls+=("http://127.0.0.1:$p")
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  TASKM_BASE_URL=${urls[0]} TASKM_OTHER_URL=${urls[1]} TASKM_ARTIFACTS="$dir/artifacts" \
    .venv-conformance/bin/python -m pytest -q -p no:cacheprovider Tests/Conformance/test_events_browser.py
  status=$?
  kill $pids 2>/dev/null; wait $pids 2>/dev/null
  [ $status -eq 0 ] || exit $status
fi
