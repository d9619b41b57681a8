#!/usr/bin/env bash
# Benchmark `regrelay sync` (issue 13) on local docker-registry instances, and compare it
# with `skopeo sync --src docker --dest docker` (Debian skopeo) on a backfill.
#
#   bash scripts/bench-sync.sh
#
# Environment:
#   BENCH_REPOS=N        repositories of the in-sync set (default 100)
#   BENCH_TAGS=N         tags per repository (default 100): 100 x 100 = 10,000 tags
#   BENCH_EMPTY_REPOS=N  repositories of the from-empty set (default 10: 1,000 tags)
#   BENCH_JOBS=N         `regrelay sync --jobs` (default 16)
#   BENCH_TMPDIR=DIR     where registries store data (default: $TMPDIR or /tmp)
#   REGRELAY_BIN=PATH    the binary (default target/release/regrelay, built if missing)
#
# Scenarios (each tag is its own tiny image: a 64-byte layer and a config shared within
# its repository, a manifest of its own):
#   1  in sync: source and target seeded identically; `regrelay sync --check`: wall time,
#      registry requests (both access logs) per tag, peak RSS. Goals: < 30 s, <= 2.05
#      requests per tag.
#   2  1 % drift: one tag per repository moved at the target; `regrelay sync` repairs it
#      (wall time), then `--check` exits 0.
#   3  from empty: BENCH_EMPTY_REPOS x BENCH_TAGS tags; `regrelay sync` into one empty
#      registry vs one `skopeo sync` per repository into another (sum of wall times).
#      Goal: regrelay <= 0.3 x skopeo.
# Registries listen on 127.0.0.1 only. Results go to bench-out/sync.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPOS=${BENCH_REPOS:-100}
TAGS=${BENCH_TAGS:-100}
EMPTY_REPOS=${BENCH_EMPTY_REPOS:-10}
JOBS=${BENCH_JOBS:-16}
BIN=${REGRELAY_BIN:-target/release/regrelay}
OUT_DIR=$ROOT/bench-out
RESULTS=$OUT_DIR/sync.txt

die() { echo "bench-sync: $*" >&2; exit 1; }
log() { echo "bench-sync: $*" >&2; }
for tool in docker-registry skopeo python3 curl; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install -y time)"
if [[ ! -x $BIN ]]; then
    log "building $BIN"
    cargo build --release --locked >&2
fi

mkdir -p "$OUT_DIR"
: >"$RESULTS"
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/regrelay-bench-sync.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_registry NAME: sets REG (host:port) and REG_LOG (its access log).
start_registry() {
    local name=$1 dir=$WORK/$1 port i
    mkdir -p "$dir/storage"
    port=$(free_port)
    cat >"$dir/config.yml" <<CONF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
CONF
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    PIDS+=("$!")
    for i in $(seq 1 200); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true) == 200 ]] && break
        sleep 0.1
    done
    REG=127.0.0.1:$port
    REG_LOG=$dir/registry.log
}

# Registry API requests in an access log so far.
requests() { grep -cE '"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/' "$1" || true; }

# config SRC DST FILE: mirror every repository of SRC to DST under the same name.
config() {
    cat >"$3" <<CONF
[source]
kind = "file"

[registries."$1"]
max_in_flight = 32
[registries."$2"]
max_in_flight = 32

[[rules]]
name = "mirror"
source_registry = "$1"
repository = "**"
[[rules.targets]]
registry = "$2"
CONF
}

raw() { echo "$*" | tee -a "$RESULTS" >&2; }

# timed OUT CMD...: runs CMD, stdout to OUT; sets WALL (s), RSS (KiB), RC.
timed() {
    local out=$1
    shift
    set +e
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >"$out" 2>"$out.err"
    RC=$?
    set -e
    read -r WALL RSS <"$WORK/time"
}

seed() { python3 scripts/bench_sync.py seed "$@"; }

log "scenario 1: $REPOS x $TAGS tags in sync"
start_registry src; SRC=$REG; SRC_LOG=$REG_LOG
start_registry dst; DST=$REG; DST_LOG=$REG_LOG
t0=$(date +%s.%N)
seed "$SRC" --repos "$REPOS" --tags "$TAGS"
seed "$DST" --repos "$REPOS" --tags "$TAGS"
log "seeded both in $(echo "$(date +%s.%N) - $t0" | bc) s"
config "$SRC" "$DST" "$WORK/sync.toml"
before=$(($(requests "$SRC_LOG") + $(requests "$DST_LOG")))
timed "$WORK/check.out" "$BIN" --log-format json sync --config "$WORK/sync.toml" --check --jobs "$JOBS"
[[ $RC == 0 ]] || { cat "$WORK/check.out.err" >&2; die "sync --check exited $RC on an in-sync set"; }
after=$(($(requests "$SRC_LOG") + $(requests "$DST_LOG")))
n=$((REPOS * TAGS))
reqs=$((after - before))
raw "in-sync check: tags=$n wall_s=$WALL requests=$reqs requests_per_tag=$(echo "scale=3; $reqs / $n" | bc) peak_rss_kib=$RSS"
raw "  src: HEAD $(grep -c '"HEAD /v2/' "$SRC_LOG") GET-lists $(grep -cE '"GET /v2/[^ ]*(tags/list|_catalog)' "$SRC_LOG")"

log "scenario 2: 1 % drift (one tag per repository moved at the target)"
seed "$DST" --repos "$REPOS" --tags 1 --salt moved
timed "$WORK/repair.out" "$BIN" --log-format json sync --config "$WORK/sync.toml" --jobs "$JOBS"
[[ $RC == 0 ]] || { cat "$WORK/repair.out.err" >&2; die "sync exited $RC repairing drift"; }
repaired=$(grep -c '^moved ' "$WORK/repair.out" || true)
raw "1% drift repair: moved=$repaired wall_s=$WALL peak_rss_kib=$RSS"
timed "$WORK/check2.out" "$BIN" --log-format json sync --config "$WORK/sync.toml" --check --jobs "$JOBS"
[[ $RC == 0 ]] || die "sync --check after the repair exited $RC"

log "scenario 3: $EMPTY_REPOS x $TAGS tags from empty, regrelay sync vs skopeo sync"
start_registry src3; SRC3=$REG
start_registry dst3a; DSTA=$REG; DSTA_LOG=$REG_LOG
start_registry dst3b; DSTB=$REG; DSTB_LOG=$REG_LOG
SRC3_LOG=$WORK/src3/registry.log
seed "$SRC3" --repos "$EMPTY_REPOS" --tags "$TAGS" --prefix sync
config "$SRC3" "$DSTA" "$WORK/empty.toml"
src_before=$(requests "$SRC3_LOG"); r_from=$src_before
timed "$WORK/empty.out" "$BIN" --log-format json sync --config "$WORK/empty.toml" --jobs "$JOBS"
[[ $RC == 0 ]] || { grep -E '"level":"(WARN|ERROR)"' "$WORK/empty.out.err" | head -5 >&2 || true; tail -n 3 "$WORK/empty.out.err" >&2; die "sync from empty exited $RC"; }
r_wall=$WALL; r_rss=$RSS
r_src=$(($(requests "$SRC3_LOG") - src_before)); r_dst=$(requests "$DSTA_LOG")
src_before=$(requests "$SRC3_LOG")
s_wall=0; s_rss=0
for r in $(seq 0 $((EMPTY_REPOS - 1))); do
    repo=$(printf 'sync%03d' "$r")
    timed "$WORK/skopeo.out" skopeo sync --src docker --dest docker --src-tls-verify=false \
        --dest-tls-verify=false --scoped=false --all --preserve-digests "$SRC3/$repo" "$DSTB/"
    [[ $RC == 0 ]] || { tail "$WORK/skopeo.out.err" >&2; die "skopeo sync exited $RC"; }
    s_wall=$(echo "$s_wall + $WALL" | bc)
    (( RSS > s_rss )) && s_rss=$RSS
done
s_src=$(($(requests "$SRC3_LOG") - src_before)); s_dst=$(requests "$DSTB_LOG")
# Both targets must hold the same digests as the source.
for r in 0 $((EMPTY_REPOS - 1)); do
    repo=$(printf 'sync%03d' "$r")
    for t in t000 "$(printf 't%03d' $((TAGS - 1)))"; do
        want=$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$SRC3/v2/$repo/manifests/$t" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
        for d in "$DSTA" "$DSTB"; do
            got=$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$d/v2/$repo/manifests/$t" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
            [[ -n $want && $got == "$want" ]] || die "$d/$repo:$t is $got, expected $want"
        done
    done
done
# by_method LOG FROM [N]: "GET n HEAD n ..." over N request lines after the first FROM.
by_method() {
    grep -E '"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/' "$1" | tail -n +$(($2 + 1)) | head -n "${3:-1000000000}" |
        sed -E 's/.*"(GET|HEAD|PUT|POST|PATCH|DELETE) .*/\1/' | sort | uniq -c | awk '{printf "%s %s ", $2, $1}'
}
n3=$((EMPTY_REPOS * TAGS))
raw "from empty requests: regrelay src=$r_src dst=$r_dst per_tag=$(echo "scale=2; ($r_src + $r_dst) / $n3" | bc) (source: $(by_method "$SRC3_LOG" "$r_from" "$r_src"); target: $(by_method "$DSTA_LOG" 0)) skopeo src=$s_src dst=$s_dst per_tag=$(echo "scale=2; ($s_src + $s_dst) / $n3" | bc) (target: $(by_method "$DSTB_LOG" 0))"
raw "from empty: tags=$((EMPTY_REPOS * TAGS)) regrelay_wall_s=$r_wall regrelay_peak_rss_kib=$r_rss skopeo_wall_s=$s_wall skopeo_peak_rss_kib=$s_rss ratio=$(echo "scale=3; $r_wall / $s_wall" | bc)"
log "results in $RESULTS"
