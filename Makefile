# The two commands: `make run` (server on :5555 with a private PostgreSQL under .data/) and
# `make test` (the whole suite against a throwaway PostgreSQL). The checks below run in CI too.
.PHONY: run test build db-stop image-check k8s-check delivery-check check bench clean fuzz hostile soak faults conformance

run:
	@scripts/run.sh

test:
	@scripts/test.sh

build:
	@scripts/deps.sh
	swift build -c release --product task-management

db-stop:
	@scripts/pg-cluster.sh stop .data/pg

# The Dockerfile: hadolint, and its runtime stage run for real in a debootstrap chroot.
image-check:
	@scripts/image-check.sh

# k8s-notes/: rendered with kustomize, validated against the Kubernetes schemas.
k8s-check:
	@scripts/k8s-check.sh

# .github/workflows and docker-compose.yml against their JSON schemas.
delivery-check:
	@scripts/delivery-check.sh

# libFuzzer targets (request parser, JSON and validation, router), FUZZ_SECONDS each (default 60).
fuzz:
	@scripts/fuzz.sh

# Hostile clients against the release binary: slowloris, trickled chunks, idle floods, slow readers.
hostile:
	@scripts/hostile.sh

# A misbehaving link to PostgreSQL (proxy faults) and PgBouncer in transaction mode: every
# answer checked, 0 wrong, 0 hung, no crash (FAULT_SECONDS per case, default 10).
faults:
	@scripts/faults.sh

# Checkers nobody here wrote: openapi-spec-validator, schemathesis, the UI's calls in headless
# Chromium, redbot and httplint, and the original Flask service's own tests.
conformance:
	@scripts/conformance.sh

# The UI's calls for SOAK_SECONDS (default 600): RSS must stay flat, no 5xx.
soak:
	@scripts/soak.sh

check: test conformance hostile faults fuzz k8s-check delivery-check image-check

# Side-by-side benchmark with the peer and the ceilings (../shared/bench).
bench:
	@scripts/bench.sh

clean: db-stop
	rm -rf .build .build-static .build-rootfs .data .venv-conformance artifacts
