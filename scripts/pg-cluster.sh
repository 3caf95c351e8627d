#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests.
#   pg-cluster.sh start DIR PORT   initdb DIR on first use, start on 127.0.0.1:PORT, create database taskmanagement
#   pg-cluster.sh stop DIR         stop it (fast shutdown); no error when it is not running
#   pg-cluster.sh status DIR       exit 0 when running
#   pg-cluster.sh free-port        print a free TCP port on 127.0.0.1
# Login: user postgres without a password, on 127.0.0.1 only (trust), socket inside DIR.
# initdb refuses to run as root, so as root everything runs as the postgres user.
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}
case "$cmd" in
  free-port)
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    ;;
  start)
    dir=$(realpath -m "$2"); port=$3
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 --auth=trust >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      echo "PostgreSQL already running in $dir"
    else
      as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi
    echo "$port" > "$dir/port"
    if ! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='taskmanagement'" | grep -q 1; then
      "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres taskmanagement
    fi
    ;;
  stop)
    dir=$(realpath -m "$2")
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  status)
    dir=$(realpath -m "$2")
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
    ;;
  *)
    sed -n '2,8p' "$0" >&2
    exit 2
    ;;
esac
