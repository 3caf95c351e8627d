# The two commands: `make run` (server on :5555 with a private PostgreSQL under .data/) and
# `make test` (the whole suite against a throwaway PostgreSQL).
.PHONY: run test build db-stop clean

run:
	@scripts/run.sh

test:
	@scripts/test.sh

build:
	@scripts/deps.sh
	swift build -c release --product task-management

db-stop:
	@scripts/pg-cluster.sh stop .data/pg

clean: db-stop
	rm -rf .build .data
