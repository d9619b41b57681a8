#!/usr/bin/env bash
# Check deploy/systemd/regrelay.service, regrelay-sync.service and regrelay-sync.timer with
# systemd's own tools, offline (the exposure score is for the two services):
#   1. `systemd-analyze verify`: syntax, unknown or misspelt keys, values that do not parse,
#      and that every Exec*= binary exists. The unit names /usr/local/bin/regrelay, so a copy
#      whose binary paths point at this repository's target/debug/regrelay (built by
#      `cargo test` before this runs) is verified instead. systemd reports unknown keys as
#      warnings with exit status 0, so any line it prints about the unit is a failure.
#   2. `systemd-analyze security --offline=yes`: the exposure score (0.0 best, 10.0 worst)
#      must stay at or below MAX_EXPOSURE (default 2.0). `--threshold` counts in tenths.
# Needs systemd-analyze (Debian package systemd, 252 or newer for --offline); no running
# systemd and no root. One line per check; exit 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

units=(deploy/systemd/regrelay.service deploy/systemd/regrelay-sync.service deploy/systemd/regrelay-sync.timer)
bin=${REGRELAY_BIN:-target/debug/regrelay}
max_exposure=${MAX_EXPOSURE:-2.0}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "FAIL: systemd-analyze not found (apt-get install systemd)"
    exit 1
fi
for unit in "${units[@]}"; do
    if [ ! -f "$unit" ]; then
        echo "FAIL: $unit not found"
        exit 1
    fi
done
if [ ! -x "$bin" ]; then
    echo "FAIL: $bin not found: build it first (cargo build, or scripts/test.sh), or set REGRELAY_BIN"
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin_abs=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
# Same file names: systemd derives the unit names from them (the timer finds its service).
for unit in "${units[@]}"; do
    sed "s#/usr/local/bin/regrelay#${bin_abs}#g" "$unit" >"$tmp/$(basename "$unit")"
done

status=0
threshold=$(awk -v m="$max_exposure" 'BEGIN { printf "%d", m * 10 + 0.5 }')

for unit in "${units[@]}"; do
    name=$(basename "$unit")
    # --man=no: Documentation= man pages need not be installed here.
    # --recursive-errors=no: only this unit counts, not the dependencies it pulls in
    # (network-online.target, ...), which belong to the host.
    verify_out=$(cd "$tmp" && systemd-analyze verify --man=no --recursive-errors=no "$tmp/$name" 2>&1) && verify_rc=0 || verify_rc=$?
    problems=$(grep -F "$name" <<<"$verify_out" || true)
    if [ "$verify_rc" -eq 0 ] && [ -z "$problems" ]; then
        echo "ok: systemd-analyze verify $unit"
    else
        echo "FAIL: systemd-analyze verify $unit (exit $verify_rc):"
        sed "s#$tmp/#$(dirname "$unit")/#g; s#^#    #" <<<"${problems:-$verify_out}"
        status=1
    fi
    # Lines about other units (the host's) are shown, not counted.
    other=$(grep -vF "$name" <<<"$verify_out" | grep -v '^$' || true)
    [ -z "$other" ] || sed 's/^/    note: /' <<<"$other"

    [[ "$name" == *.service ]] || continue
    security_out=$(systemd-analyze security --offline=yes --threshold="$threshold" "$tmp/$name" 2>&1) && security_rc=0 || security_rc=$?
    score=$(sed -n "s/.*Overall exposure level for ${name//./\\.}: \([0-9.]*\).*/\1/p" <<<"$security_out")
    if [ -z "$score" ]; then
        echo "FAIL: systemd-analyze security $unit: no exposure score (exit $security_rc):"
        sed 's/^/    /' <<<"$security_out" | tail -20
        status=1
    elif [ "$security_rc" -ne 0 ]; then
        echo "FAIL: systemd-analyze security $unit: exposure $score > $max_exposure; the open items:"
        grep '✗' <<<"$security_out" | sed 's/  */ /g; s/^/    /'
        status=1
    else
        # The items still open, with their weight, for the log.
        open=$(grep '✗' <<<"$security_out" | awk '{ printf "%s%s %s", sep, $2, $NF; sep = ", " }')
        echo "ok: systemd-analyze security $unit: exposure $score <= $max_exposure (open: $open)"
    fi
done

exit "$status"
