# regrelay container image: `docker build -t regrelay .`
#
#   docker run --rm -p 9090:9090 --stop-timeout 45 \
#       -v "$PWD/config.toml:/etc/regrelay/config.toml:ro" regrelay
#
# Base images are pinned by exact version tags. To pin by digest as well (recommended for
# release builds), look the digests up and append them, keeping the tag for readers:
#   docker buildx imagetools inspect rust:1.95.0-slim-bookworm      # "Digest: sha256:..."
#   docker buildx imagetools inspect debian:bookworm-20261005-slim
#   FROM rust:1.95.0-slim-bookworm@sha256:<digest> AS build
# Update the tag and the digest together. scripts/check_dockerfile.py (CI) rejects
# floating tags (`latest`, bare names, `nonroot`, `bookworm-slim`).
#
# The runtime is Debian slim rather than gcr.io/distroless/cc-debian12: distroless
# publishes only floating tags (`nonroot`, `latest`), so it can be pinned only by a digest,
# which has to be looked up online. With a digest in hand it is a drop-in replacement
# (it has glibc, libgcc_s, CA certificates and uid 65532):
#   FROM gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
#
# No secrets go into the image: registry credentials and Google credentials come from the
# environment or mounted files at run time (see the config reference in README.md).

# ---- build ------------------------------------------------------------------------------
# Same Debian release as the runtime, so the binary's glibc requirement is met.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: build them against stub sources so that this layer
# is reused until Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# Then regrelay itself. COPY keeps the files' old modification times, which may be older
# than the stub build: touch them so that cargo rebuilds the crate instead of the stubs.
# The context has no .git: build.rs takes the commit for `regrelay --version` from
# REVISION (--build-arg REVISION="$(git rev-parse --short=12 HEAD)"), else says unknown.
ARG REVISION=unknown
COPY build.rs ./
COPY src ./src
RUN find src build.rs -name '*.rs' -exec touch {} + \
    && REGRELAY_GIT_COMMIT="${REVISION}" cargo build --release --locked \
    && ./target/release/regrelay --version

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-20261005-slim

# Keep VERSION equal to Cargo.toml's package version (CI checks it); REVISION and CREATED
# are for release builds: --build-arg REVISION="$(git rev-parse HEAD)"
#                         --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="regrelay" \
      org.opencontainers.image.description="Event-driven, verified, digest-preserving replication of container images between OCI registries" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-20261005-slim"

# TLS to registries, Pub/Sub and token endpoints verifies against the system roots
# (rustls-native-certs reads this bundle). Debian slim has no ca-certificates package; the
# build image has it, from the same Debian release.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/regrelay /usr/local/bin/regrelay

# The configuration is mounted at /etc/regrelay/config.toml (read-only is enough);
# regrelay writes nothing to disk, so the root file system can be read-only too.

# Unprivileged, numeric so that Kubernetes' runAsNonRoot can verify it (65532 = distroless
# "nonroot"). No /etc/passwd entry is needed.
USER 65532:65532

# [admin] listen: /metrics, /healthz, /livez, /readyz (default 0.0.0.0:9090).
EXPOSE 9090/tcp

# SIGTERM starts the drain: stop pulling, finish in-flight copies within
# [pipeline] shutdown_grace_secs (default 30), nack the rest, exit 0. Docker's default stop
# timeout is 10 s: run with --stop-timeout above the grace period (Kubernetes:
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/regrelay"]
CMD ["run", "--config", "/etc/regrelay/config.toml"]
