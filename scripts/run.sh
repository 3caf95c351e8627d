#!/usr/bin/env bash
# `make run`: installs what is missing, starts the private PostgreSQL cluster under .data/
# (unless DATABASE_URL is set), builds in release mode and runs the server in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

if [ -z "${DATABASE_URL:-}" ]; then
  dir=.data/pg
  mkdir -p .data
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$(realpath .data)"; then
    # The postgres user cannot reach the project folder (a home directory, say): keep the
    # cluster in /tmp and link it from .data/.
    target=/tmp/task-management-$(realpath . | md5sum | cut -c1-12)
    mkdir -p "$target"
    [ -L "$dir" ] || ln -sfn "$target" "$dir"
  fi
  if [ -f "$dir/port" ]; then port=$(cat "$dir/port"); else port=${DB_PORT:-55433}; fi
  if ! scripts/pg-cluster.sh status "$dir" && ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $port))" 2>/dev/null; then
    port=$(scripts/pg-cluster.sh free-port)
  fi
  scripts/pg-cluster.sh start "$dir" "$port"
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/taskmanagement"
  echo "using the private PostgreSQL cluster in $dir on port $port (stop it with: make db-stop)"
fi

swift build -c release --product task-management
exec .build/release/task-management
