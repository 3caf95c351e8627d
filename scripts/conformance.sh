#!/usr/bin/env bash
# `make conformance`: the API checked by tools nobody here wrote, against the release binary and
# a throwaway PostgreSQL (unless DATABASE_URL points at one):
#   1. openapi-spec-validator on Sources/App/openapi.yaml and on what the server serves;
#   2. the original Flask service's tests (Tests/Conformance/test_main.py), the UI's calls in
#      headless Chromium (test_browser.py), live updates through a second replica in Chromium
#      (test_events_browser.py) and redbot/httplint (test_http_lint.py), with pytest;
#   3. schemathesis, every check on, fixed seed and example count (Tests/Conformance/schemathesis.toml),
#      then again (fewer examples) as a client asking for problem details.
# Installs chromium and chromium-driver from Debian and the pinned PyPI tools into
# .venv-conformance (`--install-only` stops there). Screenshots and reports go to
# artifacts/conformance/. Fails when any step fails; runs them all either way.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

install() {
  scripts/deps.sh || return 1
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq || return 1
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
  fi
  local requirements=Tests/Conformance/requirements.txt stamp=.venv-conformance/requirements.txt
  if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    rm -rf .venv-conformance
    python3 -m venv .venv-conformance || return 1
    .venv-conformance/bin/pip install -q --disable-pip-version-check -r "$requirements" || return 1
    cp "$requirements" "$stamp"
  fi
}

install || { echo "conformance: installing the checkers failed" >&2; exit 1; }
[ "${1:-}" = "--install-only" ] && exit 0
venv=$root/.venv-conformance/bin
artifacts=$root/artifacts/conformance
rm -rf "$artifacts" && mkdir -p "$artifacts"

dir=$(mktemp -d /tmp/task-management-conformance.XXXXXX)
chmod 755 "$dir"
server_pid= other_pid=
cleanup() {
  for pid in $server_pid $other_pid; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [ -d "$dir/pg" ] && scripts/pg-cluster.sh stop "$dir/pg"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${DATABASE_URL:-}" ]; then
  pgport=$(scripts/pg-cluster.sh free-port)
  scripts/pg-cluster.sh start "$dir/pg" "$pgport" || exit 1
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$pgport/taskmanagement"
fi

# CONFORMANCE_BINARY runs another build (a debug one, a deliberately broken one) instead.
binary=${CONFORMANCE_BINARY:-.build-static/release/task-management}
if [ -z "${CONFORMANCE_BINARY:-}" ]; then
  swift build -c release --static-swift-stdlib --product task-management --scratch-path .build-static || exit 1
fi
port=$(scripts/pg-cluster.sh free-port)
base="http://127.0.0.1:$port"
PORT=$port HOST=127.0.0.1 LOG_LEVEL=warning "$binary" > "$artifacts/server.log" 2>&1 &
server_pid=$!
# A second replica on the same database, for the live-updates browser test.
other_port=$(scripts/pg-cluster.sh free-port)
other="http://127.0.0.1:$other_port"
PORT=$other_port HOST=127.0.0.1 LOG_LEVEL=warning "$binary" > "$artifacts/other-server.log" 2>&1 &
other_pid=$!
for url in "$base" "$other"; do
  for _ in $(seq 1 100); do
    curl -fs "$url/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "$url/readyz" >/dev/null || { echo "conformance: $url did not become ready" >&2; cat "$artifacts"/*server.log >&2; exit 1; }
done

failed=()
step() {
  local name=$1; shift
  echo "== $name"
  if "$@"; then echo "== $name: passed"; else echo "== $name: FAILED"; failed+=("$name"); fi
}

served_is_written() {
  curl -fs "$base/api/openapi.json" -o "$dir/served.json" &&
    curl -fs "$base/api/openapi.yaml" -o "$dir/served.yaml" &&
    cmp "$dir/served.yaml" Sources/App/openapi.yaml &&
    "$venv/python" -c 'import json, sys, yaml
served, written = json.load(open(sys.argv[1])), yaml.safe_load(open(sys.argv[2]))
sys.exit(0 if served == written else "the served JSON differs from openapi.yaml")' "$dir/served.json" Sources/App/openapi.yaml
}
step "openapi.yaml is valid OpenAPI" "$venv/openapi-spec-validator" Sources/App/openapi.yaml
step "the served description is openapi.yaml" served_is_written
step "the served JSON is valid OpenAPI" "$venv/openapi-spec-validator" "$dir/served.json"
step "pytest (original tests, browser, live updates, HTTP linters)" env TASKM_BASE_URL="$base" TASKM_OTHER_URL="$other" TASKM_ARTIFACTS="$artifacts" \
  "$venv/python" -m pytest -q -p no:cacheprovider --junitxml="$artifacts/pytest.xml" Tests/Conformance
step "schemathesis" bash -c "cd Tests/Conformance && '$venv/schemathesis' run '$base/api/openapi.json' --checks all \
  --report junit --report-dir '$artifacts'"
# Again as a client that asks for RFC 9457 problem details: every error in that shape, as described.
step "schemathesis, problem details" bash -c "cd Tests/Conformance && '$venv/schemathesis' run '$base/api/openapi.json' \
  --checks all --max-examples 10 -H 'Accept: application/problem+json' --report junit --report-dir '$artifacts/problem'"

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "conformance: the server died" >&2; failed+=("server alive")
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "conformance: FAILED: ${failed[*]} (artifacts in $artifacts)"
  exit 1
fi
echo "conformance: all passed (artifacts in $artifacts)"
