#!/usr/bin/env bash
# regrelay quickstart: the daemon end to end, on this machine only.
#
# Starts the Pub/Sub emulator and two local registries, seeds a two-platform image with a
# cosign-style signature into the first, runs `regrelay run` with examples/quickstart.toml,
# publishes the Artifact Registry-shaped event that a push would send to the `gcr` topic,
# and shows the image replicated with the same digest, the message acked (the subscription
# is empty) and the daemon's metrics. Everything binds 127.0.0.1 and is cleaned up on exit.
#
# The emulator needs gcloud's google-cloud-cli-pubsub-emulator and Java. When they are
# missing they are installed the way Google documents (its apt repository and signing key,
# https://cloud.google.com/sdk/docs/install#deb) if that repository is reachable and this
# user may run apt (root, or sudo without a password). Otherwise, or when the emulator does
# not start, the same demonstration runs through the stdin source (`kind = "file"`): the
# same event, the same copy and verification, and the daemon's count of verified events.
#
# Environment: REGRELAY_BIN (use this binary instead of `cargo build --release`);
# QUICKSTART_INSTALL=0 (never install anything; fall back instead).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

may_install() { # apt-get as root, or through sudo without a password
    [ "${QUICKSTART_INSTALL:-1}" != 0 ] || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    if [ "$(id -u)" -eq 0 ]; then sudo_cmd=(); return 0; fi
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo_cmd=(sudo -n)
}

# Google's documented Debian install: its signing key, its apt repository, the packages.
install_emulator() {
    may_install || return 1
    curl -fsS --max-time 10 -o "$work/cloud.google.asc" https://packages.cloud.google.com/apt/doc/apt-key.gpg \
        2>/dev/null || return 1
    echo "== installing google-cloud-cli-pubsub-emulator and Java from Google's apt repository"
    command -v gpg >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q gnupg || return 1
    gpg --dearmor <"$work/cloud.google.asc" >"$work/cloud.google.gpg" || return 1
    "${sudo_cmd[@]}" install -m 0644 "$work/cloud.google.gpg" /usr/share/keyrings/cloud.google.gpg || return 1
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" |
        "${sudo_cmd[@]}" tee /etc/apt/sources.list.d/google-cloud-sdk.list >/dev/null || return 1
    "${sudo_cmd[@]}" apt-get update -q || return 1
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q \
        google-cloud-cli google-cloud-cli-pubsub-emulator default-jre-headless || return 1
}

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
    if ! may_install; then
        echo "missing: ${need[*]} (Debian: apt-get install ${need[*]})" >&2
        exit 1
    fi
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "${need[@]}"
fi
MODE=pubsub
if ! command -v gcloud >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    install_emulator || MODE=stdin
fi

if [ -n "${REGRELAY_BIN:-}" ]; then
    REGRELAY=$REGRELAY_BIN
else
    echo "== building regrelay"
    cargo build --locked --release --quiet
    REGRELAY=$PWD/target/release/regrelay
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
try_http() { # url [tenths of a second]
    for _ in $(seq 1 "${2:-600}"); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done
    return 1
}
wait_http() { # url what log
    try_http "$1" && return
    echo "$2 did not start; log:" >&2; tail -n 40 "$3" >&2; exit 1
}

start_registry() { # name -> sets REG to host:port (no subshell, so cleanup sees the pid)
    local name=$1 port; port=$(free_port)
    mkdir -p "$work/$name/data"
    cat >"$work/$name/config.yml" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $work/$name/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port, secret: quickstart}
YML
    setsid docker-registry serve "$work/$name/config.yml" >"$work/$name/log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$port/v2/" "registry $name" "$work/$name/log"
    REG="127.0.0.1:$port"
}

start_registry source; SRC=$REG
start_registry target; DST=$REG
echo "== source registry $SRC, target registry $DST"

PROJECT=regrelay-quickstart
if [ "$MODE" = pubsub ]; then
    PS_PORT=$(free_port)
    echo "== starting the Pub/Sub emulator on 127.0.0.1:$PS_PORT (Java; takes a few seconds)"
    mkdir -p "$work/gcloud" "$work/pubsub"
    CLOUDSDK_CONFIG=$work/gcloud CLOUDSDK_CORE_DISABLE_PROMPTS=1 setsid gcloud beta emulators pubsub start \
        --project="$PROJECT" --host-port="127.0.0.1:$PS_PORT" --data-dir="$work/pubsub" >"$work/pubsub.log" 2>&1 &
    pids+=($!)
    PS=http://127.0.0.1:$PS_PORT/v1/projects/$PROJECT
    if try_http "http://127.0.0.1:$PS_PORT/" 600; then
        curl -fs -X PUT "$PS/topics/gcr" >/dev/null
        curl -fs -X PUT -H 'Content-Type: application/json' "$PS/subscriptions/regrelay" \
            -d "{\"topic\":\"projects/$PROJECT/topics/gcr\",\"ackDeadlineSeconds\":10}" >/dev/null
        echo "   topic projects/$PROJECT/topics/gcr, subscription projects/$PROJECT/subscriptions/regrelay"
    else
        echo "the Pub/Sub emulator did not start (log tail below)" >&2
        tail -n 10 "$work/pubsub.log" >&2
        MODE=stdin
    fi
fi
if [ "$MODE" = stdin ]; then
    echo "== no Pub/Sub emulator here: the same demonstration runs through the stdin source (kind = \"file\")"
fi

echo "== seeding $SRC/demo/app:1.0 (linux/amd64 + linux/arm64 index, with a signature tag)"
python3 scripts/mkimage.py --out "$work/layout" --tag 1.0 --platforms linux/amd64,linux/arm64 --layer-size 1048576 --seed 1 >/dev/null
skopeo copy -q --all --preserve-digests --dest-tls-verify=false "oci:$work/layout:1.0" "docker://$SRC/demo/app:1.0"
digest() { curl -fsI -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' "http://$1/v2/$2/manifests/$3" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
SRC_DIGEST=$(digest "$SRC" demo/app 1.0)
python3 scripts/mkimage.py --out "$work/sig" --tag sig --layer-size 512 --seed 9 >/dev/null
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$work/sig:sig" "docker://$SRC/demo/app:${SRC_DIGEST/:/-}.sig"

ADMIN=127.0.0.1:$(free_port)
sed -e "s#127.0.0.1:5001#$SRC#g" -e "s#127.0.0.1:5002#$DST#g" -e "s#127.0.0.1:8085#127.0.0.1:${PS_PORT:-8085}#g" \
    -e "s#127.0.0.1:9090#$ADMIN#g" -e "s#projects/[^/\"]*/subscriptions/[^\"]*#projects/$PROJECT/subscriptions/regrelay#" \
    examples/quickstart.toml >"$work/regrelay.toml"
if [ "$MODE" = stdin ]; then
    # The file source reading standard input, as the example's comment shows.
    sed -i -e 's#^kind = "pubsub"#kind = "file"#' -e '/^subscription = /d' -e '/^endpoint = /d' "$work/regrelay.toml"
fi
echo "== regrelay check-config (examples/quickstart.toml with this run's ports)"
"$REGRELAY" check-config --config "$work/regrelay.toml" >/dev/null
EVENT="{\"action\":\"INSERT\",\"digest\":\"$SRC/demo/app@$SRC_DIGEST\",\"tag\":\"$SRC/demo/app:1.0\"}"

if [ "$MODE" = stdin ]; then
    echo "== regrelay run, reading the event from standard input: $EVENT"
    RELAY_EXIT=0
    printf '%s\n' "$EVENT" | REGRELAY_LOG=regrelay=info "$REGRELAY" --log-format text run --config "$work/regrelay.toml" \
        >"$work/regrelay.log" 2>&1 || RELAY_EXIT=$?
    DST_DIGEST=$(digest "$DST" mirror/demo/app 1.0 || true)
    echo "--- regrelay log"
    cat "$work/regrelay.log"
    echo "---"
    echo "source digest:          $SRC_DIGEST"
    echo "target digest:          $DST_DIGEST  ($DST/mirror/demo/app:1.0)"
    echo "target tags:            $(curl -fs "http://$DST/v2/mirror/demo/app/tags/list")"
    echo "regrelay exit code:     $RELAY_EXIT (end of input: every event verified)"
    if [ -n "$SRC_DIGEST" ] && [ "$SRC_DIGEST" = "$DST_DIGEST" ] && [ "$RELAY_EXIT" = 0 ] &&
        grep -q "1 events verified or ignored, 0 failed" "$work/regrelay.log"; then
        echo "replicated, verified and acked (stdin source): the target holds exactly the source image, signature included"
        exit 0
    fi
    echo "replication did not complete; see the log above" >&2
    exit 1
fi

echo "== regrelay run (log: $work/regrelay.log)"
REGRELAY_LOG=regrelay=info setsid "$REGRELAY" --log-format text run --config "$work/regrelay.toml" >"$work/regrelay.log" 2>&1 &
RELAY_PID=$!
pids+=($RELAY_PID)
wait_http "http://$ADMIN/readyz" "regrelay" "$work/regrelay.log"

echo "== publishing to the gcr topic: $EVENT"
curl -fs -X POST -H 'Content-Type: application/json' "$PS/topics/gcr:publish" \
    -d "{\"messages\":[{\"data\":\"$(printf '%s' "$EVENT" | base64 -w0)\"}]}" >/dev/null

metric() { curl -fs "http://$ADMIN/metrics" | awk -v k="$1" 'index($0, k) == 1 { print $2 }'; }
for _ in $(seq 1 300); do
    [ "$(metric 'regrelay_messages_settled_total{outcome="acked"}')" = "1" ] && break
    sleep 0.1
done

DST_DIGEST=$(digest "$DST" mirror/demo/app 1.0 || true)
echo
echo "--- metrics (excerpt)"
curl -fs "http://$ADMIN/metrics" | grep -E '^regrelay_(messages_(received|settled)_total|copies_total|copied_bytes_total|blobs_total|event_lag_seconds_count|ready) ' || true
curl -fs "http://$ADMIN/metrics" | grep -E '^regrelay_(messages_(received|settled)_total|copies_total|blobs_total)\{' | grep -v ' 0$' || true
# Stop regrelay the way systemd or Kubernetes would; then whatever it did not ack would be
# back in the subscription.
kill -TERM "$RELAY_PID"
RELAY_EXIT=0; wait "$RELAY_PID" || RELAY_EXIT=$?
LEFT=$(curl -fs -X POST -H 'Content-Type: application/json' "$PS/subscriptions/regrelay:pull" \
    -d '{"maxMessages":10,"returnImmediately":true}' | { grep -o '"ackId"' || true; } | wc -l)
echo "--- regrelay log"
cat "$work/regrelay.log"
echo "---"
echo "source digest:          $SRC_DIGEST"
echo "target digest:          $DST_DIGEST  ($DST/mirror/demo/app:1.0)"
echo "target tags:            $(curl -fs "http://$DST/v2/mirror/demo/app/tags/list")"
echo "regrelay exit code:     $RELAY_EXIT (SIGTERM: drained and stopped)"
echo "left in subscription:   $LEFT messages (acked means gone)"
if [ -n "$SRC_DIGEST" ] && [ "$SRC_DIGEST" = "$DST_DIGEST" ]; then
    echo "replicated, verified and acked: the target holds exactly the source image, signature included"
else
    echo "replication did not complete; see the log above" >&2
    exit 1
fi
