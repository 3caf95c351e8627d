# syntax=docker/dockerfile:1

# ---- build: the official Swift 6 image for Debian 12 (bookworm) ----
FROM swift:6.3-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-dev libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies resolve in a layer of their own: it is rebuilt only when Package.swift changes.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
COPY Fuzz ./Fuzz
RUN swift build -c release --static-swift-stdlib --product task-management \
 && install -D "$(swift build -c release --show-bin-path)/task-management" /out/task-management

# ---- runtime: only what the binary needs from Debian ----
FROM debian:bookworm-slim
# DL3008: versions are not pinned so that every rebuild picks up bookworm's security fixes
# (apt-get upgrade applies them to the base too); bookworm is a stable release, so the set of
# packages and their ABI do not move under us.
# runtime-packages: libpq5 libevent-2.1-7 libevent-pthreads-2.1-7 ca-certificates
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get upgrade -y \
 && apt-get install -y --no-install-recommends libpq5 libevent-2.1-7 libevent-pthreads-2.1-7 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /out/task-management /usr/local/bin/task-management
USER 10001:10001
ENV HOST=0.0.0.0 PORT=5555
EXPOSE 5555
ENTRYPOINT ["/usr/local/bin/task-management"]
