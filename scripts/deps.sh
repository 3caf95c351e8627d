#!/usr/bin/env bash
# Installs what building and testing need on Debian 12, only when something is missing:
# libevent-dev, libpq-dev, pkg-config, postgresql (server binaries for the private clusters),
# pgbouncer (the transaction-pooling test pass and fault tier).
set -euo pipefail

missing=()
pkg-config --exists libevent_pthreads 2>/dev/null || missing+=(libevent-dev)
pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pgbouncer >/dev/null 2>&1 || ls /usr/sbin/pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a pgbouncer service on install; the tests run their own.
  if [[ " ${missing[*]} " == *" pgbouncer "* ]]; then
    $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || $SUDO service pgbouncer stop >/dev/null 2>&1 || true
  fi
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH (Swift 6 toolchain required)" >&2; exit 1; }
