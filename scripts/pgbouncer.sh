#!/usr/bin/env bash
# A private PgBouncer in transaction pooling mode in front of a local PostgreSQL, as many
# deployments put one between pods and the database (used by `make test` and `make faults`).
#   scripts/pgbouncer.sh start DIR LISTEN_PORT PG_PORT [POOL_SIZE]   (every database name is passed through)
#   scripts/pgbouncer.sh stop DIR
# POOL_SIZE (default 4) backends per database and user: fewer than the server's connections, so
# that backends change hands between transactions, as when several pods share them.
set -euo pipefail
cd "$(dirname "$0")/.."

command=${1:-}; dir=${2:?usage: scripts/pgbouncer.sh start|stop DIR ...}
case "$command" in
  start)
    port=${3:?listen port}; pgport=${4:?PostgreSQL port}; pool=${5:-4}
    mkdir -p "$dir"
    echo '"postgres" ""' > "$dir/users.txt"
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pgport
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 1000
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    chown -R postgres "$dir"
    # -d: daemonizes once it listens (the pid file says which process to stop).
    runuser -u postgres -- "$(command -v pgbouncer || echo /usr/sbin/pgbouncer)" -d "$dir/pgbouncer.ini" || { cat "$dir/pgbouncer.log" >&2; exit 1; }
    for _ in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && exit 0
      sleep 0.1
    done
    echo "pgbouncer did not listen on $port" >&2; cat "$dir/pgbouncer.log" >&2; exit 1
    ;;
  stop)
    [ -f "$dir/pgbouncer.pid" ] || exit 0
    pid=$(cat "$dir/pgbouncer.pid")
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    ;;
  *) echo "usage: scripts/pgbouncer.sh start|stop DIR ..." >&2; exit 2 ;;
esac
