#!/usr/bin/env bash
# `make test`: installs what is missing, starts a throwaway PostgreSQL cluster on a free port
# (unless DATABASE_URL points at one), runs `swift test` against it, and always stops it.
# Exit status and summary are swift test's own. Extra arguments go to swift test.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

cleanup() { :; }
if [ -z "${DATABASE_URL:-}" ]; then
  dir=$(mktemp -d /tmp/task-management-test.XXXXXX)
  chmod 755 "$dir"
  port=$(scripts/pg-cluster.sh free-port)
  cleanup() { scripts/pg-cluster.sh stop "$dir/pg"; rm -rf "$dir"; }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  scripts/pg-cluster.sh start "$dir/pg" "$port" || exit 1
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/taskmanagement"
fi

# The binary tests start the real server, so build it first.
swift build --product task-management || exit 1
# Suites run one after another: several start servers and load them, and timings stay honest.
swift test --no-parallel "$@"
