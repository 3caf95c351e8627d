#!/usr/bin/env bash
# `make bench`: builds the release binary and runs ../shared/bench/compare.sh with it as the
# server under test, beside the Hummingbird peer, nginx and pgbench. Env as compare.sh reads it
# (ROUNDS, SCENARIOS, PG_POOL_SIZE, PEER, PGBENCH); BENCH_DIR overrides the harness location.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH_DIR:-$(realpath ../shared/bench)}
[ -x "$bench/compare.sh" ] || { echo "no benchmark harness at $bench" >&2; exit 1; }
scripts/deps.sh
for tool in wrk nginx; do
  command -v $tool >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; }
done
swift build -c release --product task-management
"$bench/pg.sh" start
"$bench/pg.sh" seed 1000
if [ "${PEER:-1}" = 1 ]; then "$bench/peers/hummingbird/hb.sh" build; fi
SUT_BIN="$(pwd)/.build/release/task-management" "$bench/compare.sh"
