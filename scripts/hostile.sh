#!/usr/bin/env bash
# `make hostile`: the hostile-client tier (Tests/Hostile/hostile_clients.py) against the release
# binary (the same static build the image check makes) and a throwaway PostgreSQL, unless
# DATABASE_URL points at one. Bounded: about 30 seconds, 127.0.0.1 only.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

if [ -z "${DATABASE_URL:-}" ]; then
  dir=$(mktemp -d /tmp/task-management-hostile.XXXXXX)
  chmod 755 "$dir"
  port=$(scripts/pg-cluster.sh free-port)
  trap 'scripts/pg-cluster.sh stop "$dir/pg"; rm -rf "$dir"' EXIT
  scripts/pg-cluster.sh start "$dir/pg" "$port" || exit 1
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/taskmanagement"
fi

swift build -c release --static-swift-stdlib --product task-management --scratch-path .build-static || exit 1
python3 Tests/Hostile/hostile_clients.py .build-static/release/task-management "$DATABASE_URL"
