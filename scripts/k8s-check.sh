#!/usr/bin/env bash
# Renders k8s-notes/ with kustomize and validates every object against the Kubernetes schemas
# (kubernetes-validate, strict: unknown fields are errors). Offline once the tools are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
fi
command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install -q kubernetes-validate
rendered=$(mktemp /tmp/k8s-rendered.XXXXXX.yaml)
trap 'rm -f "$rendered"' EXIT
kubectl kustomize k8s-notes > "$rendered"
kubernetes-validate --strict "$rendered"
echo "k8s check: $(grep -c '^kind:' "$rendered") objects rendered and valid"
