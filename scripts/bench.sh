#!/usr/bin/env bash
# Benchmark regrelay against `skopeo copy` on two local docker-registry instances.
#
#   bash scripts/bench.sh                 # full run (512 MiB / 40 images / 1 GiB)
#   BENCH_QUICK=1 bash scripts/bench.sh   # smoke run with small sizes
#   bash scripts/bench.sh --profile wan [--delay-ms 25] [--rate-mbit 200] [--connect-rtts 1]
#   bash scripts/bench.sh --tls           # loopback, both registries serving HTTPS
#
# Profiles:
#   loopback (default)  tools talk to the registries directly over 127.0.0.1.
#   wan                 the script creates a network namespace (needs root, `ip`, `tc`) and runs
#                       registries, proxies and both tools in it, on loopback addresses only.
#                       Each registry is reached through scripts/wan_proxy.py, which adds
#                       --delay-ms one way to each direction of each connection (and
#                       --connect-rtts round trips before a new connection's first bytes), and
#                       a `tbf` qdisc on the namespace's `lo` limits each direction of each
#                       registry's link (source 127.0.0.2, target 127.0.0.3) to --rate-mbit.
#                       Seeding and digest checks bypass the proxies. Results go to
#                       bench-out/results-wan.txt and bench-out/logs-wan/; goals A <= 0.9x,
#                       B <= 0.1x (C unchanged).
#
# --tls (loopback only): every registry serves HTTPS with a certificate for 127.0.0.1 from
# a private CA the script makes with openssl; both tools verify it (regrelay
# `--registry-ca HOST=ca.pem`, skopeo `--src-cert-dir/--dest-cert-dir` holding ca.crt).
# Results go to bench-out/results-tls.txt and bench-out/logs-tls/.
#
# Environment:
#   BENCH_QUICK=1       shrink sizes (A: 64 MiB, B: 40 tiny images, C: 128 MiB)
#   BENCH_REPEAT=N      repetitions of A and B (default 3; the median wall time is reported)
#   BENCH_TIMEOUT=S     per-invocation time limit in seconds (default 1800)
#   BENCH_TMPDIR=DIR    where registries store data (default: $TMPDIR or /tmp)
#   BENCH_REGRELAY_ARGS="--jobs 8"  extra arguments for every `regrelay copy` (default none)
#   REGRELAY_BIN=PATH   benchmark this binary instead of building target/release/regrelay
#   BENCH_SCENARIOS="A B C"  which scenarios to run (default all three)
#   BENCH_REGISTRY_LOGS=1    keep every registry's JSON request log (info level, one line per
#                       request with its completion time in ns and duration) in the logs dir
#
# Scenarios:
#   A  one image, 8 layers of 64 MiB: `regrelay copy SRC DST` vs `skopeo copy --all
#      --preserve-digests`.  Goal: regrelay wall <= 0.95 x skopeo wall.
#   B  40 images in 40 repositories sharing two 8 MiB base layers plus one unique 2 MiB
#      layer each: one `regrelay copy --from-file` vs 40 sequential skopeo runs (sum of
#      wall times, max of peak RSS).  Goal: <= 0.5 x.
#   C  one image with a single 1 GiB layer: peak RSS.  Goal: regrelay <= 64 MiB.
#
# Every tool invocation copies into a freshly started, empty target registry, so neither
# tool benefits from blobs the other (or an earlier repetition) uploaded.  Both registries
# listen on 127.0.0.1 only.  A failed copy, or a target whose manifest digest differs from
# the source's, fails the benchmark.  Raw results go to bench-out/results.txt.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

PROFILE=loopback
TLS=0
WAN_DELAY_MS=25
WAN_RATE_MBIT=200
WAN_CONNECT_RTTS=1
while (($#)); do
    case $1 in
        --profile) PROFILE=${2:-}; shift 2 ;;
        --delay-ms) WAN_DELAY_MS=${2:-}; shift 2 ;;
        --rate-mbit) WAN_RATE_MBIT=${2:-}; shift 2 ;;
        --connect-rtts) WAN_CONNECT_RTTS=${2:-}; shift 2 ;;
        --tls) TLS=1; shift ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ $PROFILE == loopback || $PROFILE == wan ]] || die "--profile must be loopback or wan"
[[ $TLS == 0 || $PROFILE == loopback ]] || die "--tls runs with the loopback profile only"
[[ $WAN_DELAY_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--delay-ms must be a non-negative number"
[[ $WAN_RATE_MBIT =~ ^[1-9][0-9]*$ ]] || die "--rate-mbit must be a positive integer"
[[ $WAN_CONNECT_RTTS =~ ^[0-9]$ ]] || die "--connect-rtts must be 0..9"

QUICK=${BENCH_QUICK:-0}
REPEAT=${BENCH_REPEAT:-3}
TOOL_TIMEOUT=${BENCH_TIMEOUT:-1800}
SCENARIOS=${BENCH_SCENARIOS:-A B C}
REGISTRY_LOGS=${BENCH_REGISTRY_LOGS:-0}
read -ra EXTRA_ARGS <<<"${BENCH_REGRELAY_ARGS:-}"   # e.g. "--jobs 8": added to every regrelay copy
OUT_DIR=$ROOT/bench-out
MIB=$((1 << 20))
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
for s in $SCENARIOS; do [[ $s == [ABC] ]] || die "BENCH_SCENARIOS: unknown scenario '$s'"; done

if [[ $QUICK == 1 ]]; then
    A_LAYERS=8; A_SIZE=$((8 * MIB))                                  # 64 MiB
    B_IMAGES=40; B_BASE=$((512 * 1024)); B_UNIQUE=$((128 * 1024))
    C_SIZE=$((128 * MIB))
else
    A_LAYERS=8; A_SIZE=$((64 * MIB))                                 # 512 MiB
    B_IMAGES=40; B_BASE=$((8 * MIB)); B_UNIQUE=$((2 * MIB))
    C_SIZE=$((1024 * MIB))
fi
if [[ $PROFILE == wan ]]; then
    A_GOAL=0.9
    B_GOAL=0.1
    RESULTS=$OUT_DIR/results-wan.txt
    LOGS=$OUT_DIR/logs-wan
else
    A_GOAL=0.95
    B_GOAL=0.5
    RESULTS=$OUT_DIR/results.txt
    LOGS=$OUT_DIR/logs
    if [[ $TLS == 1 ]]; then
        RESULTS=$OUT_DIR/results-tls.txt
        LOGS=$OUT_DIR/logs-tls
    fi
fi
C_GOAL_KIB=$((64 * 1024))

[[ $REPEAT =~ ^[1-9][0-9]?$ ]] || die "BENCH_REPEAT must be 1..99"
[[ $TOOL_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT must be a positive integer"
for tool in docker-registry skopeo python3 curl timeout cargo $([[ $TLS == 1 ]] && echo openssl); do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install -y time)"

# --- temp dir, process bookkeeping, cleanup -------------------------------------------
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/regrelay-bench.XXXXXX")
declare -a PIDS=()      # registry processes still running
declare -A USED_PORTS=()

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do
        [[ -n $pid ]] || continue
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        [[ -n $pid ]] || continue
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- TLS: a private CA and a certificate for 127.0.0.1 (--tls) -------------------------
SCHEME=http
declare -a CURL_TLS=()
if [[ $TLS == 1 ]]; then
    SCHEME=https
    TLS_DIR=$WORK/tls
    mkdir -p "$TLS_DIR/certs.d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=regrelay bench CA" -keyout "$TLS_DIR/ca-key.pem" -out "$TLS_DIR/ca.pem" 2>/dev/null \
        || die "openssl: cannot make the CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/req.pem" 2>/dev/null || die "openssl: cannot make the key"
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TLS_DIR/ext.cnf"
    openssl x509 -req -in "$TLS_DIR/req.pem" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca-key.pem" \
        -CAcreateserial -days 2 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/cert.pem" 2>/dev/null \
        || die "openssl: cannot sign the certificate"
    cp "$TLS_DIR/ca.pem" "$TLS_DIR/certs.d/ca.crt"   # skopeo's --*-cert-dir layout
    CURL_TLS=(--cacert "$TLS_DIR/ca.pem")
fi

# --- build ---------------------------------------------------------------------------
if [[ -n ${REGRELAY_BIN:-} ]]; then
    REGRELAY=$REGRELAY_BIN
else
    if [[ -z ${BENCH_IN_NETNS:-} ]]; then
        log "building regrelay (release)"
        if [[ -f Cargo.lock ]]; then
            cargo build --release --locked >&2
        else
            cargo build --release >&2
        fi
    fi
    REGRELAY=${CARGO_TARGET_DIR:-$ROOT/target}/release/regrelay
fi
[[ -x $REGRELAY ]] || die "no binary at $REGRELAY"

# --- wan profile: re-run this script inside a network namespace with a tbf qdisc -------
if [[ $PROFILE == wan && -z ${BENCH_IN_NETNS:-} ]]; then
    for tool in ip tc; do command -v "$tool" >/dev/null || die "--profile wan needs $tool"; done
    NETNS=regrelay-bench-$$
    netns_cleanup() {
        local rc=$? pid
        # Everything in the namespace was started by this run; stop what is left, then delete it.
        for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
        sleep 0.2
        for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NETNS" 2>/dev/null || true
        rm -rf "$WORK"
        exit "$rc"
    }
    trap netns_cleanup EXIT
    ip netns add "$NETNS" || die "cannot create network namespace $NETNS (needs root)"
    ip -n "$NETNS" link set lo up
    # lo in the namespace: htb only classifies (its classes are not limiting), a tbf under each
    # shaped class limits one direction of one registry link. Unclassified traffic
    # (proxy <-> registry, seeding, digest checks) goes through unshaped.
    ntc() { ip netns exec "$NETNS" tc "$@" || die "tc $* failed (no htb/tbf/u32 in this kernel?)"; }
    ntc qdisc add dev lo root handle 1: htb default 1 r2q 100000
    ntc class add dev lo parent 1: classid 1:1 htb rate 100gbit
    minor=10
    for match in "src 127.0.0.2/32" "dst 127.0.0.2/32" "src 127.0.0.3/32" "dst 127.0.0.3/32"; do
        ntc class add dev lo parent 1: classid "1:$minor" htb rate 100gbit
        # burst >= lo's 64 KiB MTU; latency bounds the queue (limit = rate x latency).
        ntc qdisc add dev lo parent "1:$minor" handle "$minor:" tbf rate "${WAN_RATE_MBIT}mbit" \
            burst 256kb latency 100ms
        # shellcheck disable=SC2086
        ntc filter add dev lo parent 1: protocol ip prio 1 u32 match ip $match flowid "1:$minor"
        minor=$((minor + 1))
    done
    log "wan profile: namespace $NETNS, ${WAN_DELAY_MS} ms one way per direction," \
        "connect ${WAN_CONNECT_RTTS} RTT, tbf ${WAN_RATE_MBIT} Mbit/s per link direction"
    rc=0
    ip netns exec "$NETNS" env BENCH_IN_NETNS=1 bash "$0" --profile wan --delay-ms "$WAN_DELAY_MS" \
        --rate-mbit "$WAN_RATE_MBIT" --connect-rtts "$WAN_CONNECT_RTTS" || rc=$?
    mkdir -p "$OUT_DIR"
    ip netns exec "$NETNS" tc -s qdisc show dev lo >"$OUT_DIR/wan-tc-stats.txt" 2>&1 || true
    exit "$rc"
fi

# --- registries ----------------------------------------------------------------------
# free_port: sets FREE_PORT (not a $(subshell): USED_PORTS must persist).
free_port() {
    local p i
    for i in $(seq 1 50); do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
        # Never reuse a port within one run: skopeo's blob-info cache is keyed by host:port.
        if [[ -z ${USED_PORTS[$p]:-} ]]; then
            USED_PORTS[$p]=1
            FREE_PORT=$p
            return 0
        fi
    done
    die "no free port found"
}

# start_registry NAME [PROXY_IP]: starts a registry with its own storage under $WORK/NAME.
# Sets REG_PORT, REG_PID, REG_DIR, REG_DIRECT (host:port for seeding and checks) and REG_TOOL
# (host:port the tools use: in the wan profile, a delay proxy on PROXY_IP, default 127.0.0.3).
start_registry() {
    local name=$1 proxy_ip=${2:-127.0.0.3} i level=warn
    REG_DIR=$WORK/$name
    REG_NAME=$name
    rm -rf "$REG_DIR"
    mkdir -p "$REG_DIR/storage"
    free_port
    REG_PORT=$FREE_PORT
    [[ $REGISTRY_LOGS == 1 ]] && level=info
    cat >"$REG_DIR/config.yml" <<EOF
version: 0.1
log:
  level: $level
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
EOF
    if [[ $TLS == 1 ]]; then
        printf '  tls:\n    certificate: %s\n    key: %s\n' "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >>"$REG_DIR/config.yml"
    fi
    docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/registry.log" 2>&1 &
    REG_PID=$!
    PIDS+=("$REG_PID")
    REG_DIRECT=127.0.0.1:$REG_PORT
    REG_TOOL=$REG_DIRECT
    REG_PROXY_PID=""
    for i in $(seq 1 200); do
        if [[ $(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' --max-time 2 "$SCHEME://127.0.0.1:$REG_PORT/v2/" || true) == 200 ]]; then
            [[ $PROFILE == wan ]] && start_proxy "$proxy_ip"
            return 0
        fi
        kill -0 "$REG_PID" 2>/dev/null || { cat "$REG_DIR/registry.log" >&2; die "registry $name exited"; }
        sleep 0.1
    done
    cat "$REG_DIR/registry.log" >&2
    die "registry $name did not answer GET /v2/ within 20 s"
}

# start_proxy IP: a wan_proxy.py on IP:<unused port> in front of $REG_DIRECT; sets REG_TOOL.
start_proxy() {
    local ip=$1 ready=$REG_DIR/proxy.port i
    free_port
    # Above the tools' priority: the proxy stands for the network, whose timing should not
    # depend on how busy the two cores are.
    nice -n -10 python3 scripts/wan_proxy.py --listen "$ip:$FREE_PORT" --upstream "$REG_DIRECT" \
        --delay-ms "$WAN_DELAY_MS" --connect-rtts "$WAN_CONNECT_RTTS" --ready-file "$ready" \
        >"$REG_DIR/proxy.log" 2>&1 &
    REG_PROXY_PID=$!
    PIDS+=("$REG_PROXY_PID")
    for i in $(seq 1 100); do
        if [[ -s $ready ]]; then
            REG_TOOL=$ip:$FREE_PORT
            [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$REG_TOOL/v2/" || true) == 200 ]] \
                || die "no answer through the delay proxy at $REG_TOOL"
            return 0
        fi
        kill -0 "$REG_PROXY_PID" 2>/dev/null || { cat "$REG_DIR/proxy.log" >&2; die "delay proxy exited"; }
        sleep 0.1
    done
    die "delay proxy did not start within 10 s"
}

# stop_registry PID DIR [PROXY_PID]
stop_registry() {
    local pid=$1 dir=$2 proxy=${3:-} i p
    for p in $proxy $pid; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        for i in "${!PIDS[@]}"; do
            [[ ${PIDS[$i]} == "$p" ]] && PIDS[$i]=""
        done
    done
    if [[ $REGISTRY_LOGS == 1 ]]; then cp "$dir/registry.log" "$LOGS/registry-$(basename "$dir").log"; fi
    rm -rf "$dir"
    sync   # do not let one run's dirty pages be written back during the next timed run
}

# manifest_digest HOST:PORT REPO TAG
manifest_digest() {
    curl -sf "${CURL_TLS[@]}" --max-time 30 -I \
        -H 'Accept: application/vnd.oci.image.index.v1+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "$SCHEME://$1/v2/$2/manifests/$3" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'
}

# expect_digest HOST:PORT REPO TAG DIGEST
expect_digest() {
    local got
    got=$(manifest_digest "$1" "$2" "$3" || true)
    [[ $got == "$4" ]] || die "target $1/$2:$3 has digest '${got}', want $4"
}

# --- timing --------------------------------------------------------------------------
# timed LOGFILE CMD...: runs CMD under /usr/bin/time; sets T_WALL (s) and T_RSS (KiB).
# A non-zero exit fails the benchmark.
timed() {
    local logf=$1 tf rc=0
    shift
    tf=$WORK/time.$$.out
    timeout -k 10 "$TOOL_TIMEOUT" /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$logf" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
        echo "---- $* (exit $rc) ----" >&2
        tail -n 30 "$logf" >&2
        die "command failed (exit $rc); not timing a failed copy"
    fi
    read -r T_WALL T_RSS < <(tail -n 1 "$tf")
    [[ $T_WALL =~ ^[0-9.]+$ && $T_RSS =~ ^[0-9]+$ ]] || die "cannot parse /usr/bin/time output: $(cat "$tf")"
}

# ca_args DST: sets CA_ARGS, regrelay's trust in the private CA for the source and DST (--tls).
declare -a CA_ARGS=()
ca_args() {
    CA_ARGS=()
    [[ $TLS == 1 ]] && CA_ARGS=(--registry-ca "$SRC_TOOL=$TLS_DIR/ca.pem" --registry-ca "$1=$TLS_DIR/ca.pem")
    return 0
}

run_regrelay() { # LOGFILE ARGS...
    local logf=$1
    shift
    REGRELAY_LOG=warn timed "$logf" "$REGRELAY" --log-format text "$@"
}

# skopeo: plain HTTP without --tls; with it, HTTPS verified against the private CA.
if [[ $TLS == 1 ]]; then
    SKOPEO_SRC_TLS=(--src-cert-dir "$TLS_DIR/certs.d")
    SKOPEO_DST_TLS=(--dest-cert-dir "$TLS_DIR/certs.d")
else
    SKOPEO_SRC_TLS=(--src-tls-verify=false)
    SKOPEO_DST_TLS=(--dest-tls-verify=false)
fi

run_skopeo() { # LOGFILE SRC DST
    timed "$1" skopeo copy --all --preserve-digests "${SKOPEO_SRC_TLS[@]}" "${SKOPEO_DST_TLS[@]}" \
        "docker://$2" "docker://$3"
}

seed() { # LAYOUT TAG SRCREF
    skopeo copy --all --preserve-digests "${SKOPEO_DST_TLS[@]}" "oci:$1:$2" "docker://$3" >/dev/null \
        || die "seeding $3 failed"
}

median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
maxof() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | tail -n 1; }

mkdir -p "$LOGS"
rm -f "$LOGS"/*.log
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RAW=$WORK/raw.txt
: >"$RAW"
raw() { echo "$*" | tee -a "$RAW" >&2; }

# --- source registry -----------------------------------------------------------------
start_registry source 127.0.0.2
SRC=$REG_DIRECT         # seeding and digest checks
SRC_TOOL=$REG_TOOL      # what the tools copy from (the delay proxy in the wan profile)
SRC_PID=$REG_PID; SRC_DIR=$REG_DIR; SRC_PROXY_PID=$REG_PROXY_PID
log "source registry at $SRC, tools use $SRC_TOOL (profile=$PROFILE, quick=$QUICK, repeat=$REPEAT, work=$WORK)"

# --- seed ----------------------------------------------------------------------------
A_DIGEST=""; C_DIGEST=""
if has A; then
log "seeding A: $A_LAYERS layers x $A_SIZE bytes"
A_DIGEST=$(python3 scripts/mkimage.py --out "$WORK/layout-a" --tag a --layers "$A_LAYERS" --size "$A_SIZE" --seed bench-a)
seed "$WORK/layout-a" a "$SRC/bench/a:v1"
rm -rf "$WORK/layout-a"
expect_digest "$SRC" bench/a v1 "$A_DIGEST"
fi

if has B; then
log "seeding B: $B_IMAGES images (2 x $B_BASE shared + 1 x $B_UNIQUE unique)"
declare -a B_DIGESTS=()
for i in $(seq 1 "$B_IMAGES"); do
    B_DIGESTS[$i]=$(python3 scripts/mkimage.py --out "$WORK/layout-b" --tag "img$i" --base-seed bench-b \
        --base-layers 2 --base-size "$B_BASE" --layer-size "$B_UNIQUE" --seed "bench-b-$i")
    seed "$WORK/layout-b" "img$i" "$SRC/bench/b/img$i:v1"
done
rm -rf "$WORK/layout-b"
for i in $(seq 1 "$B_IMAGES"); do expect_digest "$SRC" "bench/b/img$i" v1 "${B_DIGESTS[$i]}"; done
fi

if has C; then
log "seeding C: 1 layer x $C_SIZE bytes"
C_DIGEST=$(python3 scripts/mkimage.py --out "$WORK/layout-c" --tag c --layer-size "$C_SIZE" --seed bench-c)
seed "$WORK/layout-c" c "$SRC/bench/c:v1"
rm -rf "$WORK/layout-c"
expect_digest "$SRC" bench/c v1 "$C_DIGEST"
fi
sync

# --- scenario runners (each into a fresh target registry) ----------------------------
a_regrelay() { # REP
    start_registry "target-a-r$1"
    local dst=$REG_TOOL direct=$REG_DIRECT
    ca_args "$dst"
    run_regrelay "$LOGS/A-regrelay-$1.log" copy "${EXTRA_ARGS[@]}" "${CA_ARGS[@]}" "$SRC_TOOL/bench/a:v1" "$dst/r/bench/a:v1"
    expect_digest "$direct" r/bench/a v1 "$A_DIGEST"
    stop_registry "$REG_PID" "$REG_DIR" "$REG_PROXY_PID"
    raw "A rep=$1 tool=regrelay wall_s=$T_WALL rss_kib=$T_RSS"
    A_R_WALL+=" $T_WALL"; A_R_RSS+=" $T_RSS"
}
a_skopeo() {
    start_registry "target-a-s$1"
    local dst=$REG_TOOL direct=$REG_DIRECT
    run_skopeo "$LOGS/A-skopeo-$1.log" "$SRC_TOOL/bench/a:v1" "$dst/s/bench/a:v1"
    expect_digest "$direct" s/bench/a v1 "$A_DIGEST"
    stop_registry "$REG_PID" "$REG_DIR" "$REG_PROXY_PID"
    raw "A rep=$1 tool=skopeo wall_s=$T_WALL rss_kib=$T_RSS"
    A_S_WALL+=" $T_WALL"; A_S_RSS+=" $T_RSS"
}
b_regrelay() {
    start_registry "target-b-r$1"
    local dst=$REG_TOOL direct=$REG_DIRECT i list=$WORK/b-pairs.txt
    : >"$list"
    for i in $(seq 1 "$B_IMAGES"); do
        echo "$SRC_TOOL/bench/b/img$i:v1 $dst/r/bench/b/img$i:v1" >>"$list"
    done
    ca_args "$dst"
    run_regrelay "$LOGS/B-regrelay-$1.log" copy "${EXTRA_ARGS[@]}" "${CA_ARGS[@]}" --from-file "$list"
    for i in $(seq 1 "$B_IMAGES"); do expect_digest "$direct" "r/bench/b/img$i" v1 "${B_DIGESTS[$i]}"; done
    stop_registry "$REG_PID" "$REG_DIR" "$REG_PROXY_PID"
    raw "B rep=$1 tool=regrelay wall_s=$T_WALL rss_kib=$T_RSS"
    B_R_WALL+=" $T_WALL"; B_R_RSS+=" $T_RSS"
}
b_skopeo() {
    start_registry "target-b-s$1"
    local dst=$REG_TOOL direct=$REG_DIRECT i sum=0 max=0 t0 t1
    t0=$(date +%s.%N)
    for i in $(seq 1 "$B_IMAGES"); do
        run_skopeo "$LOGS/B-skopeo-$1-img$i.log" "$SRC_TOOL/bench/b/img$i:v1" "$dst/s/bench/b/img$i:v1"
        sum=$(awk -v a="$sum" -v b="$T_WALL" 'BEGIN{printf "%.2f", a+b}')
        if ((T_RSS > max)); then max=$T_RSS; fi
    done
    t1=$(date +%s.%N)
    for i in $(seq 1 "$B_IMAGES"); do expect_digest "$direct" "s/bench/b/img$i" v1 "${B_DIGESTS[$i]}"; done
    stop_registry "$REG_PID" "$REG_DIR" "$REG_PROXY_PID"
    raw "B rep=$1 tool=skopeo wall_s=$sum rss_kib=$max runs=$B_IMAGES loop_wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')"
    B_S_WALL+=" $sum"; B_S_RSS+=" $max"
}
c_regrelay() {
    start_registry target-c-r
    local dst=$REG_TOOL direct=$REG_DIRECT
    ca_args "$dst"
    run_regrelay "$LOGS/C-regrelay.log" copy "${EXTRA_ARGS[@]}" "${CA_ARGS[@]}" "$SRC_TOOL/bench/c:v1" "$dst/r/bench/c:v1"
    expect_digest "$direct" r/bench/c v1 "$C_DIGEST"
    stop_registry "$REG_PID" "$REG_DIR" "$REG_PROXY_PID"
    raw "C rep=1 tool=regrelay wall_s=$T_WALL rss_kib=$T_RSS"
    C_R_WALL=$T_WALL; C_R_RSS=$T_RSS
}
c_skopeo() {
    start_registry target-c-s
    local dst=$REG_TOOL direct=$REG_DIRECT
    run_skopeo "$LOGS/C-skopeo.log" "$SRC_TOOL/bench/c:v1" "$dst/s/bench/c:v1"
    expect_digest "$direct" s/bench/c v1 "$C_DIGEST"
    stop_registry "$REG_PID" "$REG_DIR" "$REG_PROXY_PID"
    raw "C rep=1 tool=skopeo wall_s=$T_WALL rss_kib=$T_RSS"
    C_S_WALL=$T_WALL; C_S_RSS=$T_RSS
}

A_R_WALL=""; A_R_RSS=""; A_S_WALL=""; A_S_RSS=""
B_R_WALL=""; B_R_RSS=""; B_S_WALL=""; B_S_RSS=""
C_R_WALL=""; C_R_RSS=""; C_S_WALL=""; C_S_RSS=""

# Alternate which tool goes first, so neither always runs on a warmer machine.
if has A; then
    for rep in $(seq 1 "$REPEAT"); do
        log "scenario A, repetition $rep/$REPEAT"
        if ((rep % 2)); then a_regrelay "$rep"; a_skopeo "$rep"; else a_skopeo "$rep"; a_regrelay "$rep"; fi
    done
fi
if has B; then
    for rep in $(seq 1 "$REPEAT"); do
        log "scenario B, repetition $rep/$REPEAT"
        if ((rep % 2)); then b_regrelay "$rep"; b_skopeo "$rep"; else b_skopeo "$rep"; b_regrelay "$rep"; fi
    done
fi
if has C; then
    log "scenario C"
    c_regrelay
    c_skopeo
fi
stop_registry "$SRC_PID" "$SRC_DIR" "$SRC_PROXY_PID"

# --- report --------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.3f", a/b; else print "inf" }'; }
rep_ratios() { paste -d' ' <(tr ' ' '\n' <<<"$1" | grep -v '^$') <(tr ' ' '\n' <<<"$2" | grep -v '^$') \
    | awk '{ printf "%s%.3f", (NR > 1 ? " " : ""), ($2 > 0 ? $1 / $2 : 0) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a <= b) }' && echo yes || echo no; }

if [[ $PROFILE == wan ]]; then
    PROFILE_DESC="wan: ${WAN_DELAY_MS} ms one way on each direction of each registry connection (+${WAN_CONNECT_RTTS} RTT per new connection), tbf ${WAN_RATE_MBIT} Mbit/s per direction per registry link"
else
    PROFILE_DESC="loopback: tools talk to the registries directly over 127.0.0.1"
    [[ $TLS == 1 ]] && PROFILE_DESC="loopback, TLS: HTTPS with a private CA (P-256), verified by both tools"
fi
A_RW=$(median <<<"$A_R_WALL"); A_SW=$(median <<<"$A_S_WALL")
B_RW=$(median <<<"$B_R_WALL"); B_SW=$(median <<<"$B_S_WALL")
A_RATIO=$(ratio "$A_RW" "$A_SW"); B_RATIO=$(ratio "$B_RW" "$B_SW"); C_RATIO=$(ratio "$C_R_WALL" "$C_S_WALL")

TABLE=$WORK/table.txt
{
    echo "profile $PROFILE_DESC"
    printf '%-28s %12s %12s %7s %14s %14s  %-26s %s\n' scenario "regrelay s" "skopeo s" ratio "regrelay MiB" "skopeo MiB" goal met
    has A && printf '%-28s %12s %12s %7s %14s %14s  %-26s %s\n' \
        "A 1 image, $((A_LAYERS * A_SIZE / MIB)) MiB/$A_LAYERS layers" "$A_RW" "$A_SW" "$A_RATIO" \
        "$(mib "$(maxof <<<"$A_R_RSS")")" "$(mib "$(maxof <<<"$A_S_RSS")")" "wall ratio <= $A_GOAL" "$(le "$A_RATIO" "$A_GOAL")"
    has B && printf '%-28s %12s %12s %7s %14s %14s  %-26s %s\n' \
        "B $B_IMAGES images, shared base" "$B_RW" "$B_SW" "$B_RATIO" \
        "$(mib "$(maxof <<<"$B_R_RSS")")" "$(mib "$(maxof <<<"$B_S_RSS")")" "wall ratio <= $B_GOAL" "$(le "$B_RATIO" "$B_GOAL")"
    has C && printf '%-28s %12s %12s %7s %14s %14s  %-26s %s\n' \
        "C 1 layer of $((C_SIZE / MIB)) MiB" "$C_R_WALL" "$C_S_WALL" "$C_RATIO" \
        "$(mib "$C_R_RSS")" "$(mib "$C_S_RSS")" "regrelay RSS <= 64 MiB" "$(le "$C_R_RSS" "$C_GOAL_KIB")"
    echo
    echo "wall: median of $REPEAT repetitions for A and B (B skopeo = sum of $B_IMAGES runs), single run for C;"
    echo "      ratio = median regrelay wall / median skopeo wall."
    echo "per-repetition ratios:$(has A && echo " A $(rep_ratios "$A_R_WALL" "$A_S_WALL")")$(has B && echo " B $(rep_ratios "$B_R_WALL" "$B_S_WALL")")"
    echo "RSS: peak resident set (GNU time %M), max over repetitions (B skopeo: max over its $B_IMAGES runs)."
} >"$TABLE"

{
    echo "# regrelay benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty worktree)')"
    echo "# profile $PROFILE_DESC"
    echo "# load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# regrelay copy extra arguments: ${EXTRA_ARGS[*]:-none}"
    echo "# scenarios=$SCENARIOS quick=$QUICK repeat=$REPEAT nproc=$(nproc) cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
    echo "# $("$REGRELAY" version) | skopeo $(skopeo --version | awk '{print $3}') | $(docker-registry --version) | $(rustc --version)"
    echo "# sizes: A=${A_LAYERS}x${A_SIZE} B=${B_IMAGES}x(2x${B_BASE}+${B_UNIQUE}) C=${C_SIZE} bytes"
    echo "# digests: A=$A_DIGEST C=$C_DIGEST"
    cat "$RAW"
    echo
    cat "$TABLE"
} >"$RESULTS"

echo
cat "$TABLE"
echo
echo "raw results: $RESULTS"
