# regrelay container image: `docker build -t regrelay .`
#
#   docker run --rm -p 9090:9090 --stop-timeout 45 \
#       -v "$PWD/config.toml:/etc/regrelay/config.toml:ro" regrelay
#
# Base images are pinned by digest, the tag kept for readers (the digest wins when both
# are given). The digests are the image indexes (every platform) as several independent
# public projects pin them for these tags, recorded without a registry at hand: before a
# release, check them (a build fails on a digest that does not exist) or refresh them with
#   docker buildx imagetools inspect rust:1.95.0-slim-bookworm      # "Digest: sha256:..."
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
# and update the tag and the digest together. scripts/check_dockerfile.py (CI) rejects
# floating tags without a digest (`latest`, bare names, `nonroot`, `bookworm-slim`).
#
# The runtime is gcr.io/distroless/cc-debian12 (Debian 12, like the build stage): the
# smallest base that runs the binary as built. It has glibc and libgcc_s (the binary is
# linked against them; `static` has neither), the CA certificates that TLS to registries,
# Pub/Sub and token endpoints verifies against, and uid 65532, and no shell or package
# manager. A fully static musl build on distroless/static would save a few MiB more but
# needs the musl target and a different allocator setup; not worth it here.
#
# No secrets go into the image: registry credentials and Google credentials come from the
# environment or mounted files at run time (see the config reference in README.md).

# ---- build ------------------------------------------------------------------------------
# Same Debian release as the runtime, so the binary's glibc requirement is met.
FROM rust:1.95.0-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
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
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

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
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

# TLS verifies against the system roots, /etc/ssl/certs/ca-certificates.crt, which
# distroless ships.
COPY --from=build /src/target/release/regrelay /usr/local/bin/regrelay

# The configuration is mounted at /etc/regrelay/config.toml (read-only is enough);
# regrelay writes nothing to disk, so the root file system can be read-only too.

# Unprivileged, numeric so that Kubernetes' runAsNonRoot can verify it (65532 = distroless
# "nonroot", as the base image already sets).
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
