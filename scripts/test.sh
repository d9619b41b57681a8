#!/usr/bin/env bash
# Run regrelay's whole test suite on a fresh Debian machine.
#
# Installs what the process tests need and a fresh machine lacks (the real registry,
# distribution 2.8 from Debian's `docker-registry`, `htpasswd`, and a Java runtime for
# the Pub/Sub emulator), then runs every tier: unit tests, copy-engine tests, binary tests
# against real registries, and the daemon's end-to-end tests against the real Pub/Sub
# emulator (`gcloud beta emulators pubsub`, package google-cloud-cli-pubsub-emulator from
# Google's apt repository); then, on a full run, the packaging checks (scripts/check-*.sh:
# Dockerfile, systemd unit, Helm chart), which install their Python tools from PyPI.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test copy`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
if ! command -v gcloud >/dev/null 2>&1 || ! gcloud components list --only-local-state --format='value(id)' 2>/dev/null | grep -qx pubsub-emulator; then
    # Only installable where Google's apt repository is configured; without it the
    # emulator tests skip locally and fail under CI (they never pass silently).
    if apt-cache policy google-cloud-cli-pubsub-emulator 2>/dev/null | grep -q Candidate; then
        missing+=(google-cloud-cli-pubsub-emulator)
    else
        echo "note: the Pub/Sub emulator is not installed and its apt repository is not configured"
    fi
fi
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}"
fi
# The Debian package starts a system registry on :5000; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    echo "note: a system docker-registry service is running; the tests do not use it"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Packaging checks (Dockerfile rules, systemd unit verify + security score, Helm chart
# render/lint/validate, Grafana dashboard) on the full run only: they need the debug
# binary the tests built. Each passing check script counts as one passed test.
pkg_passed=0 pkg_failed=0
if [ $# -eq 0 ]; then
    for check in scripts/check-packaging.sh scripts/check-helm.sh; do
        [ -f "$check" ] || continue
        if bash "$check"; then pkg_passed=$((pkg_passed + 1)); else pkg_failed=$((pkg_failed + 1)); status=1; fi
    done
fi
set -e
# cargo prints one summary per test binary (the last is often the 0-test doc run); close
# with the total (one line, "tests: N passed, N failed, N skipped"), after the list of tests
# that skipped for a missing tool (counted as skipped, not passed; see the awk script).
awk -v pp="$pkg_passed" -v pf="$pkg_failed" -f scripts/test-summary.awk "$log"
exit "$status"
