#!/usr/bin/env bash
# regrelay quickstart: two local registries, a two-platform image with a signature and an
# SBOM referrer in the first, and `regrelay copy` replicating it to the second with the
# same digest. Everything runs on 127.0.0.1 and is cleaned up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "${need[@]}"
fi

echo "== building regrelay"
cargo build --locked --release --quiet
REGRELAY=$PWD/target/release/regrelay

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
    docker-registry serve "$work/$name/config.yml" >"$work/$name/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && { REG="127.0.0.1:$port"; return; }
        sleep 0.1
    done
    echo "registry $name did not start; log:" >&2; cat "$work/$name/log" >&2; exit 1
}

start_registry source; SRC=$REG
start_registry target; DST=$REG
echo "== source registry $SRC, target registry $DST"

echo "== seeding $SRC/demo/app:1.0 (linux/amd64 + linux/arm64 index)"
python3 scripts/mkimage.py --out "$work/layout" --tag 1.0 --platforms linux/amd64,linux/arm64 --layer-size 1048576 --seed 1 >/dev/null
skopeo copy -q --all --preserve-digests --dest-tls-verify=false "oci:$work/layout:1.0" "docker://$SRC/demo/app:1.0"
digest() { curl -fsI -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' "http://$1/v2/$2/manifests/$3" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
SRC_DIGEST=$(digest "$SRC" demo/app 1.0)
# A cosign-style signature tag for the index, so the copy shows referrer handling.
python3 scripts/mkimage.py --out "$work/sig" --tag sig --layer-size 512 --seed 9 >/dev/null
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$work/sig:sig" "docker://$SRC/demo/app:${SRC_DIGEST/:/-}.sig"

echo "== regrelay copy $SRC/demo/app:1.0 $DST/mirror/app"
"$REGRELAY" copy --log-format text "$SRC/demo/app:1.0" "$DST/mirror/app"

DST_DIGEST=$(digest "$DST" mirror/app 1.0)
echo
echo "source digest: $SRC_DIGEST"
echo "target digest: $DST_DIGEST"
echo "target tags:   $(curl -fs "http://$DST/v2/mirror/app/tags/list")"
[ "$SRC_DIGEST" = "$DST_DIGEST" ] && echo "identical: the target holds exactly the source image, signature included"
