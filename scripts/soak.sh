#!/usr/bin/env bash
# `make soak [SOAK_SECONDS=600]`: the release binary on a throwaway PostgreSQL, driven with the
# UI's calls (Tests/Hostile/soak.py); reports RSS at start, after warm-up and at the end, 5xx
# and p99, and fails on any 5xx or RSS growing more than 10% after warm-up.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1
dir=$(mktemp -d /tmp/task-management-soak.XXXXXX)
chmod 755 "$dir"
pgport=$(scripts/pg-cluster.sh free-port)
port=$(scripts/pg-cluster.sh free-port)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; scripts/pg-cluster.sh stop "$dir/pg"; rm -rf "$dir"' EXIT
scripts/pg-cluster.sh start "$dir/pg" "$pgport" || exit 1
swift build -c release --static-swift-stdlib --product task-management --scratch-path .build-static || exit 1
DATABASE_URL="postgresql://postgres@127.0.0.1:$pgport/taskmanagement" HOST=127.0.0.1 PORT=$port LOG_LEVEL=warning \
  .build-static/release/task-management &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
python3 Tests/Hostile/soak.py "$port" "$server" "${SOAK_SECONDS:-600}" "${SOAK_CLIENTS:-8}"
