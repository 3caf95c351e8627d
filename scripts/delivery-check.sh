#!/usr/bin/env bash
# Validates the GitHub workflow against the GitHub workflow schema and docker-compose.yml against
# the Compose specification, with check-jsonschema's built-in (vendored, offline) schemas.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v check-jsonschema >/dev/null 2>&1 || python3 -m pip install -q check-jsonschema
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci-cd.yml
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
