#!/usr/bin/env bash
# Request budgets: how many registry requests regrelay and skopeo make for the same copy,
# counted from the source and target registries' access logs (deterministic, unlike wall
# time, so this runs fine on a busy machine).
#
#   bash scripts/bench-requests.sh        # prints a Markdown table; raw logs in bench-out/
#
# Cases (each tool copies into its own fresh, empty target registry):
#   single   a new single-platform image (config + 2 layers of 2 MiB)
#   index    a new two-platform index (two manifests, one small layer each)
#   mounts   the single image copied to repository `a`, then to repository `b` of the same
#            target (one regrelay process with both pairs; two skopeo runs, whose blob-info
#            cache lets the second mount): the requests of both copies
#   present  the single image copied again onto a target that already holds it
# Both tools run with referrers off for regrelay (`--no-referrers`) so that both do the
# same work; skopeo never looks for referrers. `/v2/` pings are counted too.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/bench-out/requests
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/regrelay-requests.XXXXXX")
declare -a PIDS=()
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
die() { echo "bench-requests: $*" >&2; exit 1; }
for tool in docker-registry skopeo python3 curl cargo; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

# Request counts do not depend on the build profile: the debug build is enough.
cargo build --locked >&2
REGRELAY=${CARGO_TARGET_DIR:-$ROOT/target}/debug/regrelay

# start_registry NAME: sets REG (host:port); the access log goes to $WORK/NAME/access.log.
start_registry() {
    local name=$1 port i
    mkdir -p "$WORK/$name/storage"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$WORK/$name/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/$name/storage
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$WORK/$name/config.yml" >"$WORK/$name/access.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" && break
        sleep 0.1
    done
    REG=127.0.0.1:$port
}

# count NAME: requests in NAME's access log since the last mark (ping included).
declare -A MARK=()
count() {
    local n
    n=$(grep -cE '"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/' "$WORK/$1/access.log" || true)
    echo $((n - ${MARK[$1]:-0}))
}
mark() { MARK[$1]=$(grep -cE '"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/' "$WORK/$1/access.log" || true); }
methods() { # NAME: method histogram since the mark
    grep -E '"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/' "$WORK/$1/access.log" | tail -n "$(count "$1")" |
        sed -E 's/.*"(GET|HEAD|PUT|POST|PATCH|DELETE) .*/\1/' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}' | sed 's/, $//'
}

start_registry src
SRC=$REG
python3 scripts/mkimage.py --out "$WORK/layout" --tag single --layers 2 --size $((2 << 20)) --seed req-1 >/dev/null
python3 scripts/mkimage.py --out "$WORK/layout" --tag index --platforms linux/amd64,linux/arm64 --layer-size 65536 --seed req-2 >/dev/null
for t in single index; do
    skopeo copy --all --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:$t" "docker://$SRC/app:$t" >/dev/null
done

regrelay_copy() { "$REGRELAY" --log-format text copy --no-referrers "$@" >>"$OUT/regrelay.log" 2>&1; }
skopeo_copy() {
    skopeo copy --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
        --src-no-creds --dest-no-creds "docker://$1" "docker://$2" >>"$OUT/skopeo.log" 2>&1
}

declare -A RES=()
run_case() { # CASE TOOL
    local case=$1 tool=$2 dst
    start_registry "dst-$tool-$case"
    dst=$REG
    case $case in
        single | index)
            mark src; mark "dst-$tool-$case"
            if [[ $tool == regrelay ]]; then regrelay_copy "$SRC/app:$case" "$dst/app:$case"; else skopeo_copy "$SRC/app:$case" "$dst/app:$case"; fi
            ;;
        mounts)
            if [[ $tool == regrelay ]]; then
                # One process, two pairs one after the other (--jobs 1): the second mounts.
                printf '%s %s\n%s %s\n' "$SRC/app:single" "$dst/a:single" "$SRC/app:single" "$dst/b:single" >"$WORK/pairs"
                mark src; mark "dst-$tool-$case"
                "$REGRELAY" --log-format text copy --no-referrers --jobs 1 --from-file "$WORK/pairs" >>"$OUT/regrelay.log" 2>&1
            else
                mark src; mark "dst-$tool-$case"
                skopeo_copy "$SRC/app:single" "$dst/a:single"
                skopeo_copy "$SRC/app:single" "$dst/b:single"
            fi
            ;;
        present)
            skopeo_copy "$SRC/app:single" "$dst/app:single"
            mark src; mark "dst-$tool-$case"
            if [[ $tool == regrelay ]]; then regrelay_copy "$SRC/app:single" "$dst/app:single"; else skopeo_copy "$SRC/app:single" "$dst/app:single"; fi
            ;;
    esac
    sleep 0.5 # the access log line is written after the answer
    RES[$case,$tool]="$(count src) + $(count "dst-$tool-$case")"
    RES[$case,$tool,m]="src: $(methods src); dst: $(methods "dst-$tool-$case")"
}

for c in single index mounts present; do
    for t in regrelay skopeo; do run_case "$c" "$t"; done
done

echo "| case | regrelay (source + target) | skopeo (source + target) |"
echo "|---|---|---|"
for c in single index mounts present; do
    echo "| $c | ${RES[$c,regrelay]} | ${RES[$c,skopeo]} |"
done
echo
for c in single index mounts present; do
    for t in regrelay skopeo; do echo "$c $t: ${RES[$c,$t,m]}"; done
done
