#!/usr/bin/env bash
# `make test`: installs what is missing, starts a throwaway PostgreSQL cluster on a free port
# (unless DATABASE_URL points at one), runs `swift test` against it, and always stops it.
# Then, on that throwaway cluster and without extra arguments, the contract suites once more
# with the server behind PgBouncer in transaction pooling mode (`DB_PGBOUNCER=transaction`).
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
  TEST_PGBOUNCER_PORT=$bouncer_port swift test --skip-build --no-parallel --filter 'TaskAPITests|ConditionalRequestTests'
fi
