#!/usr/bin/env bash
# The daemon benchmark: `regrelay run` fed from a local Pub/Sub emulator, against the
# per-event glue people run today (one `skopeo copy --all --preserve-digests` per message,
# 8 in parallel), each into its own fresh target registry.
#
#   bash scripts/bench-daemon.sh                 # full run (about 4 minutes here)
#   BENCH_QUICK=1 bash scripts/bench-daemon.sh   # smoke run: 200 messages, 20 digests
#
# Phases (see docs/benchmarks.md, "Daemon: Pub/Sub fan-in"):
#   fan-in   1000 messages naming 100 distinct digests in 40 repositories (10 per digest,
#            shuffled), published in one request while the consumer runs: drain time,
#            copies, dedup hits, registry requests, peak RSS.
#   no-op    the same 1000 messages again: every image is already at the target.
#   latency  60 messages, one every 200 ms, each for a small image not yet copied:
#            publish returned -> settled, p50/p99.
#
# Environment:
#   BENCH_QUICK=1       small sizes (200 messages / 20 digests / 8 repositories / 10 latency)
#   BENCH_TMPDIR=DIR    where registry storage goes (default: $TMPDIR or /tmp)
#   BENCH_WAIT_QUIET=S  before each phase, wait up to S seconds until no compiler, test binary,
#                       other registry or emulator has run for 5 s (default 0: do not wait);
#                       each phase records whether such processes ran during it
#   BENCH_ARGS="..."    extra arguments for scripts/bench_daemon.py (see its --help)
#   REGRELAY_BIN=PATH   benchmark this binary instead of building target/release/regrelay
#                       (e.g. one built from a clean `git archive` of a commit)
#
# Needs docker-registry, skopeo, gcloud with google-cloud-cli-pubsub-emulator and Java,
# python3, GNU time, cargo. Everything binds 127.0.0.1; every child process group
# (registries, the emulator: gcloud plus its Java child, regrelay) is stopped on exit.
# Raw results: bench-out/daemon-results.txt; logs: bench-out/daemon-logs/.
# Exit status 1 when regrelay misbehaved (stuck drain, wrong copy count or digest,
# warnings or errors in its log); the anomalies are listed at the end of the output.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

die() { echo "bench-daemon: $*" >&2; exit 1; }

for tool in docker-registry skopeo gcloud java python3 cargo; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install -y time)"

if [[ -n ${REGRELAY_BIN:-} ]]; then
    REGRELAY=$REGRELAY_BIN
    echo "bench-daemon: using $REGRELAY (REGRELAY_BIN; not built from this tree)" >&2
else
    echo "bench-daemon: building regrelay (release)" >&2
    cargo build --release --locked >&2
    REGRELAY=${CARGO_TARGET_DIR:-$ROOT/target}/release/regrelay
fi
[[ -x $REGRELAY ]] || die "no binary at $REGRELAY"

args=(--regrelay "$REGRELAY" --out "$ROOT/bench-out")
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    args+=(--messages 200 --digests 20 --repos 8 --latency-n 10)
fi
if [[ -n ${BENCH_WAIT_QUIET:-} ]]; then
    args+=(--wait-quiet "$BENCH_WAIT_QUIET")
fi
if [[ -n ${BENCH_TMPDIR:-${TMPDIR:-}} ]]; then
    args+=(--tmp "${BENCH_TMPDIR:-$TMPDIR}")
fi
mkdir -p "$ROOT/bench-out"
# shellcheck disable=SC2086  # BENCH_ARGS is split on purpose
exec python3 "$ROOT/scripts/bench_daemon.py" "${args[@]}" ${BENCH_ARGS:-}
