#!/usr/bin/env bash
# Check the packaging without a Docker engine or a running systemd:
#   - Dockerfile and .dockerignore: scripts/check_dockerfile.py, which parses the Dockerfile
#     with the BuildKit parser (PyPI package `dockerfile`), after a self-test that each of
#     its rules rejects a known-bad Dockerfile;
#   - deploy/systemd/regrelay.service, regrelay-sync.service and regrelay-sync.timer:
#     scripts/check-systemd.sh (`systemd-analyze verify`
#     and `systemd-analyze security`), which needs target/debug/regrelay: run it after
#     `cargo test` / scripts/test.sh.
# The `dockerfile` package goes into a virtualenv in target/py-docker (reused by later runs).
# Where python3-venv is missing (a fresh Debian), it falls back to
# `pip install --target target/py-docker/site` plus PYTHONPATH (`pip install --user` is
# refused on Debian 12, PEP 668), and as root installs python3-venv or python3-pip from
# Debian as a last resort, like scripts/test.sh does.
# Prints one line per check and exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/py-docker
site=$venv/site
log=$(mktemp)
trap 'rm -f "$log"' EXIT

apt_install() {
    local sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || return 1
        sudo_cmd=(sudo -n)
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    echo "note: installing $* from Debian" >&2
    "${sudo_cmd[@]}" apt-get update -q >>"$log" 2>&1
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "$@" >>"$log" 2>&1
}

# Sets $py (and PYTHONPATH where needed) to a Python that can `import dockerfile`.
find_python() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import dockerfile' 2>/dev/null; then
        py=$venv/bin/python
        return 0
    fi
    if [ -d "$site" ] && PYTHONPATH=$site python3 -c 'import dockerfile' 2>/dev/null; then
        export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
        py=python3
        return 0
    fi
    return 1
}

install_dockerfile_pkg() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 || return 1
    # 1. A virtualenv (needs python3-venv on Debian).
    rm -rf "$venv"
    if python3 -m venv "$venv" >>"$log" 2>&1 &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check dockerfile >>"$log" 2>&1; then
        return 0
    fi
    rm -rf "$venv"
    # 2. pip into a private directory, used through PYTHONPATH.
    if python3 -m pip --version >>"$log" 2>&1 &&
        python3 -m pip install -q --disable-pip-version-check --target "$site" dockerfile >>"$log" 2>&1; then
        return 0
    fi
    # 3. Give the machine a venv module (Debian), then 1. again.
    if apt_install python3-venv python3-pip; then
        rm -rf "$venv"
        python3 -m venv "$venv" >>"$log" 2>&1 &&
            "$venv/bin/python" -m pip install -q --disable-pip-version-check dockerfile >>"$log" 2>&1 &&
            return 0
    fi
    return 1
}

status=0
py=
if ! find_python; then
    if install_dockerfile_pkg && find_python; then
        echo "ok: installed the dockerfile parser (PyPI 'dockerfile') for $py"
    else
        echo "FAIL: could not install the PyPI package 'dockerfile' (venv, pip --target and apt all failed):"
        tail -15 "$log" | sed 's/^/    /'
        status=1
    fi
fi

if [ -n "$py" ]; then
    "$py" scripts/check_dockerfile.py --self-test || status=1
    "$py" scripts/check_dockerfile.py Dockerfile || status=1
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd || true
fi
bash scripts/check-systemd.sh || status=1

if [ "$status" -eq 0 ]; then
    echo "packaging checks: all passed"
else
    echo "packaging checks: FAILED (see the FAIL lines above)"
fi
exit "$status"
