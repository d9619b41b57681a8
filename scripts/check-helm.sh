#!/usr/bin/env bash
# Check the Helm chart (deploy/helm/regrelay) and the Grafana dashboard (deploy/grafana/)
# without a helm binary (Debian packages none) and without a cluster:
#   - the Helm engine comes from the PyPI package helm-python-sdk (Helm v4's Go SDK behind
#     ctypes): lint --strict, values.schema.json, render (helm template);
#   - every rendered object is validated with the PyPI package kubernetes-validate against
#     the Kubernetes schemas of the chart's oldest supported version and of the newest
#     one the package knows; the CRD kinds it has no schema for (ServiceMonitor,
#     PrometheusRule, ScaledObject, TriggerAuthentication) are skipped there by name and
#     checked here for apiVersion/kind/metadata.name and their references;
#   - the rendered config.toml: parses as TOML, holds no inline secret, listens on the
#     container port, fits its shutdown grace inside terminationGracePeriodSeconds, and
#     refers only to mounted files and Secret-backed variables (registry auth and the
#     Service Bus source's auth: every `_file`/`path` key and every `_env` key);
#     `regrelay check-config` accepts it, with stand-ins of the right shape for the secrets
#     it reads (a connection string for the configured namespace, a Google credentials
#     JSON) (REGRELAY_BIN, else target/debug or target/release; skipped with a note when
#     there is none, a failure under CI);
#   - a KEDA azure-servicebus trigger scales on the Service Bus entity that config.source
#     reads;
#   - the chart refuses what it must refuse (grace too short, inline passwords, client
#     secrets, connection strings and keys, a Service Bus topic without its own
#     subscription, a sidecar registry with several replicas);
#   - the dashboard is valid JSON and imports with a ${DS_PROMETHEUS} input; every query of
#     the dashboard and of the alerts parses as PromQL (PyPI promql-parser), and every
#     metric they use is in README.md's metrics table.
# This runs for the default values, every file in deploy/helm/regrelay/examples/ and every
# file in deploy/helm/regrelay/ci/.
#
# The Python packages go into a virtualenv in target/py (reused while the pinned versions
# match). Where python3-venv is missing (a fresh Debian) it falls back to
# `pip install --target target/py/site`, and as root installs python3-venv/python3-pip from
# Debian as a last resort. Needs network access to PyPI on the first run only.
# Prints one line per check and exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3 promql-parser==0.11.0)
venv=target/py
site=$venv/site
stamp=$venv/.check-helm-requirements
log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date +%s)

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

probe='import helm_python, kubernetes_validate, jsonschema, yaml, promql_parser'

# Sets $py (and PYTHONPATH where needed) to a Python with the pinned packages.
find_python() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${requirements[*]}" ] || return 1
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$probe" 2>/dev/null; then
        py=$venv/bin/python
        return 0
    fi
    if [ -d "$site" ] && PYTHONPATH=$site python3 -c "$probe" 2>/dev/null; then
        export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
        py=python3
        return 0
    fi
    return 1
}

install_packages() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 || return 1
    local pip_args=(install -q --disable-pip-version-check "${requirements[@]}")
    rm -rf "$venv"
    # 1. A virtualenv (needs python3-venv on Debian).
    if python3 -m venv "$venv" >>"$log" 2>&1 && "$venv/bin/python" -m pip "${pip_args[@]}" >>"$log" 2>&1; then
        echo "${requirements[*]}" >"$stamp"
        return 0
    fi
    rm -rf "$venv"
    # 2. pip into a private directory, used through PYTHONPATH.
    if python3 -m pip --version >>"$log" 2>&1 && python3 -m pip "${pip_args[@]}" --target "$site" >>"$log" 2>&1; then
        echo "${requirements[*]}" >"$stamp"
        return 0
    fi
    # 3. Give the machine a venv module (Debian), then 1. again.
    if apt_install python3-venv python3-pip; then
        rm -rf "$venv"
        if python3 -m venv "$venv" >>"$log" 2>&1 && "$venv/bin/python" -m pip "${pip_args[@]}" >>"$log" 2>&1; then
            echo "${requirements[*]}" >"$stamp"
            return 0
        fi
    fi
    return 1
}

py=
if ! find_python; then
    if install_packages && find_python; then
        echo "ok: installed ${requirements[*]} for $py ($(($(date +%s) - started)) s)"
    else
        echo "FAIL: could not install ${requirements[*]} (venv, pip --target and apt all failed):"
        tail -15 "$log" | sed 's/^/    /'
        exit 1
    fi
fi

bin=${REGRELAY_BIN:-}
if [ -z "$bin" ]; then
    for candidate in target/debug/regrelay target/release/regrelay; do
        if [ -x "$candidate" ]; then
            bin=$candidate
            break
        fi
    done
fi

status=0
REGRELAY_BIN=$bin "$py" - <<'PY' || status=1
import contextlib
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import helm_python as helm
import jsonschema
import kubernetes_validate
import promql_parser
import yaml

CHART = "deploy/helm/regrelay"
DASHBOARD = "deploy/grafana/regrelay.json"
RELEASE, NAMESPACE = "regrelay", "regrelay"


def kube_floor():
    """The oldest Kubernetes the chart supports: kubeVersion ">=X.Y.Z-0" in Chart.yaml."""
    with open(os.path.join(CHART, "Chart.yaml"), encoding="utf-8") as f:
        m = re.fullmatch(r">=\s*v?(\d+\.\d+)(?:\.\d+)?(?:-0)?", str(yaml.safe_load(f).get("kubeVersion", "")).strip())
    if not m:
        sys.exit("FAIL: Chart.yaml: kubeVersion is not of the form \">=X.Y.Z-0\"")
    return m.group(1) + ".0"


# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
KUBE_VERSIONS = [kube_floor(), kubernetes_validate.latest_version()]
# Kinds kubernetes-validate has no schema for (CRDs): checked structurally below instead.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
SECRETS_DIR = "/var/run/secrets/regrelay/"
# Keys of registry auth and Service Bus auth that name a file or an environment variable.
FILE_KEYS = ("password_file", "token_file", "path", "credentials_file", "client_secret_file",
             "connection_string_file", "key_file", "federated_token_file")
ENV_KEYS = ("password_env", "token_env", "client_secret_env", "connection_string_env", "key_env")
# Where the Azure Workload Identity webhook projects its token (federated_token_file).
AZURE_TOKEN_DIR = "/var/run/secrets/azure/tokens/"

failures = 0


def ok(msg):
    print(f"ok: {msg}")


def fail(msg, detail=None):
    """One FAIL line; anything past the first line of msg, and detail, indented below it."""
    global failures
    failures += 1
    first, _, rest = str(msg).strip().partition("\n")
    print(f"FAIL: {first}")
    lines = [l for l in (rest + "\n" + str(detail or "")).strip().splitlines() if l.strip()]
    for line in lines[:25]:
        print(f"    {line.strip()}")


class Problem(Exception):
    pass


def check(label, fn, *args):
    """Run one check; a Problem or any exception is one FAIL line, else one ok line."""
    try:
        note = fn(*args)
    except Problem as e:
        fail(f"{label}: {e}")
        return False
    except Exception as e:  # the SDK's errors carry the useful text
        fail(f"{label}: {type(e).__name__}", e)
        return False
    ok(f"{label}{': ' + note if note else ''}")
    return True


def readme_metrics():
    """Metric names of README.md's metrics table, with the regrelay_ prefix."""
    text = open("README.md", encoding="utf-8").read()
    names = set(re.findall(r"^\| `([a-z_]+)` \| (?:counter|gauge|histogram) \|", text, re.M))
    if not names:
        raise Problem("README.md has no metrics table (| `name` | counter/gauge/histogram |)")
    return {"regrelay_" + n for n in names}


# Grafana's variables, replaced by something PromQL parses before a dashboard query is parsed.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr, where):
    """Metric names of a PromQL expression (parsed: a syntax error is a Problem), with the
    histogram series suffixes folded into their family."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    expr = re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)
    try:
        tree = promql_parser.parse(expr)
    except ValueError as e:
        raise Problem(f"{where}: PromQL does not parse: {e}: {expr}")
    names = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(tree, visit)
    return {re.sub(r"(_seconds)_(bucket|sum|count)$", r"\1", n) for n in names}


# ---- per values file ---------------------------------------------------------------------

def render(chart, values):
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                objects.append((path, doc))
    return objects


def by_kind(objects, kind):
    return [o for _, o in objects if o.get("kind") == kind]


def check_values(chart, schema, values):
    merged = chart.merge_values(values)
    chart.validate_schema(merged)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(merged), key=lambda e: list(e.absolute_path))
    if errors:
        raise Problem("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]))
    return "helm's validator and jsonschema draft-07 on the merged values"


@contextlib.contextmanager
def native_stderr():
    """Collect what the native Helm library writes to fd 2 (its log) instead of showing it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        out = []
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def check_lint(values):
    with native_stderr() as log:
        report = helm.lint(CHART, values, strict=True, kube_version="v" + KUBE_VERSIONS[-1])
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [
        {"path": "", "error": e} for e in report.get("errors", []) or []
    ]
    # In lint mode Helm turns `fail` and `required` into log lines instead of errors.
    bad += [{"path": "templates", "error": line.split("INFO ", 1)[-1]}
            for line in log[0].splitlines() if "funcMap fail" in line or "required" in line]
    if bad:
        seen = dict.fromkeys(f"{m.get('path') or 'chart'}: {' '.join(str(m.get('error')).split())}" for m in bad)
        raise Problem(f"{len(seen)} finding(s)\n" + "\n".join(seen))
    infos = [m.get("error") for m in report.get("messages", []) if m.get("severity") == 1]
    return f"no warnings or errors{' (info: ' + '; '.join(infos) + ')' if infos else ''}"


def check_objects(objects):
    kinds = []
    for path, o in objects:
        for key in ("apiVersion", "kind"):
            if not isinstance(o.get(key), str) or not o[key]:
                raise Problem(f"{path}: an object without {key}")
        if not (o.get("metadata") or {}).get("name"):
            raise Problem(f"{path}: {o['kind']} without metadata.name")
        kinds.append(o["kind"])
    return ", ".join(sorted(kinds))


def check_kubernetes(objects):
    checked, skipped = 0, set()
    for path, o in objects:
        if (o["apiVersion"], o["kind"]) in CRD_KINDS:
            skipped.add(o["kind"])
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise Problem(f"{path}: {o['kind']} {o['metadata']['name']} against {version}: "
                              f"{'.'.join(map(str, e.path))}: {e.message}")
        checked += 1
    note = f"{checked} objects against {' and '.join(KUBE_VERSIONS)} (strict)"
    if skipped:
        note += f"; skipped CRD kinds {', '.join(sorted(skipped))}"
    return note


def servicebus_trigger_matches(objects, metadata):
    """A KEDA azure-servicebus trigger scales on the entity that a Service Bus source reads."""
    source = tomllib.loads(config_of(objects))["source"]
    if source.get("kind") != "servicebus":
        return
    name, _, suffix = source["namespace"].lower().partition(".")
    clouds = {"servicebus.windows.net": None, "servicebus.chinacloudapi.cn": "AzureChinaCloud",
              "servicebus.usgovcloudapi.net": "AzureUSGovernmentCloud"}
    want = {"namespace": name, "cloud": clouds.get(suffix, "Private"),
            "endpointSuffix": None if suffix in clouds else suffix}
    if "queue" in source:
        want |= {"queueName": source["queue"], "topicName": None, "subscriptionName": None}
    else:
        want |= {"queueName": None, "topicName": source["topic"], "subscriptionName": source["subscription"]}
    wrong = {k: metadata.get(k) for k, v in want.items() if metadata.get(k) != v}
    if wrong:
        raise Problem(f"the azure-servicebus trigger does not scale on config.source "
                      f"({source['namespace']}): {wrong}, expected {({k: want[k] for k in wrong})}")


def check_crds(objects, metrics):
    notes = []
    deployment = by_kind(objects, "Deployment")[0]
    service_names = {s["metadata"]["name"] for s in by_kind(objects, "Service")}
    auths = {t["metadata"]["name"] for t in by_kind(objects, "TriggerAuthentication")}
    for so in by_kind(objects, "ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") != deployment["metadata"]["name"]:
            raise Problem(f"ScaledObject targets {ref}, not the Deployment")
        if "replicas" in deployment["spec"]:
            raise Problem("the Deployment sets replicas although KEDA scales it")
        for t in so["spec"]["triggers"]:
            if t["type"] not in ("gcp-pubsub", "azure-servicebus"):
                raise Problem(f"unexpected trigger type {t['type']}")
            if t["authenticationRef"]["name"] not in auths:
                raise Problem(f"trigger {t['type']} refers to a missing TriggerAuthentication")
            if any(not isinstance(v, str) for v in t["metadata"].values()):
                raise Problem(f"trigger {t['type']}: KEDA metadata values must be strings")
            if t["type"] == "azure-servicebus":
                servicebus_trigger_matches(objects, t["metadata"])
            notes.append(f"ScaledObject {t['type']}")
    for sm in by_kind(objects, "ServiceMonitor"):
        if sm["spec"]["endpoints"][0]["port"] != "http-metrics" or not service_names:
            raise Problem("ServiceMonitor does not scrape the http-metrics port of a Service")
        notes.append("ServiceMonitor")
    for pr in by_kind(objects, "PrometheusRule"):
        used = set()
        for group in pr["spec"]["groups"]:
            for rule in group["rules"]:
                if not rule.get("alert") or not rule.get("expr"):
                    raise Problem("PrometheusRule: a rule without alert or expr")
                used |= metric_names(rule["expr"], f"alert {rule['alert']}")
        unknown = used - metrics
        if unknown:
            raise Problem(f"PrometheusRule uses metrics missing from README.md: {', '.join(sorted(unknown))}")
        notes.append(f"PrometheusRule ({len(used)} metrics, PromQL parsed, all in README.md)")
    return ", ".join(notes) if notes else "none rendered"


def config_of(objects):
    cms = by_kind(objects, "ConfigMap")
    if len(cms) != 1 or "config.toml" not in cms[0].get("data", {}):
        raise Problem("expected one ConfigMap with config.toml")
    return cms[0]["data"]["config.toml"]


def auths_of(cfg):
    """Every auth table: the registries', then the Service Bus source's."""
    for r in cfg.get("registries", {}).values():
        if isinstance(r.get("auth"), dict):
            yield r["auth"]
    source = cfg.get("source", {})
    if source.get("kind") == "servicebus" and isinstance(source.get("auth"), dict):
        yield source["auth"]


def check_pod(objects):
    """The config against the pod: port, grace, secrets, hardening, probes."""
    text = config_of(objects)
    cfg = tomllib.loads(text)
    inline = re.findall(r"(?:^|[{,]\s*)(password|token|client_secret|connection_string|key)\s*=", text, re.M)
    if inline:
        raise Problem(f"config.toml holds an inline secret ({', '.join(sorted(set(inline)))} =)")
    deployment = by_kind(objects, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "regrelay")
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "admin")
    listen = cfg.get("admin", {}).get("listen", "0.0.0.0:9090")
    if listen != f"0.0.0.0:{port}":
        raise Problem(f"admin.listen {listen!r} does not match the container port {port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        if get["path"] != path or get["port"] != "admin":
            raise Problem(f"{probe} is {get}, expected {path} on the admin port")
    grace = cfg.get("pipeline", {}).get("shutdown_grace_secs", 30)
    tgps = pod["terminationGracePeriodSeconds"]
    if not tgps > grace:
        raise Problem(f"terminationGracePeriodSeconds {tgps} <= shutdown_grace_secs {grace}")
    sc, psc = container["securityContext"], pod["securityContext"]
    hardening = {
        "runAsNonRoot": sc.get("runAsNonRoot") is True and psc.get("runAsNonRoot") is True,
        "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
        "allowPrivilegeEscalation: false": sc.get("allowPrivilegeEscalation") is False,
        "capabilities drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
        "seccomp RuntimeDefault": psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        "emptyDir on /tmp": any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]),
    }
    missing = [k for k, good in hardening.items() if not good]
    for c in pod["containers"] + pod.get("initContainers", []):
        if c["securityContext"] != sc:
            missing.append(f"container {c['name']} has a different securityContext")
    if missing:
        raise Problem("hardening: " + ", ".join(missing))
    # Files named by the config are on mounted volumes; variables come from Secrets.
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container["volumeMounts"]]
    azure_wi = deployment["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true"
    env = {e["name"]: e for e in container.get("env", [])}
    for auth in auths_of(cfg):
        for key in FILE_KEYS:
            if key not in auth:
                continue
            webhook = key == "federated_token_file" and azure_wi and auth[key].startswith(AZURE_TOKEN_DIR)
            if not webhook and not any(auth[key].startswith(m) for m in mounts):
                raise Problem(f"auth {key} {auth[key]!r} is on no mounted volume")
        if auth.get("credential") == "workload_identity" and not azure_wi:
            raise Problem(f"{auth['kind']} auth uses workload_identity, but the pods lack the "
                          f"azure.workload.identity/use label (workloadIdentity.azure.enabled)")
        for key in ENV_KEYS:
            if key in auth:
                var = env.get(auth[key])
                if var is None and not container.get("envFrom"):
                    raise Problem(f"auth {key} {auth[key]!r} is not in the container's env")
                if var is not None and "secretKeyRef" not in var.get("valueFrom", {}):
                    raise Problem(f"env {auth[key]} must come from a Secret (valueFrom.secretKeyRef)")
    checksum = deployment["spec"]["template"]["metadata"]["annotations"].get("checksum/config")
    if not checksum:
        raise Problem("the pod template has no checksum/config annotation")
    return f"listen {listen}, grace {grace} s < terminationGracePeriodSeconds {tgps} s, no inline secrets, hardened"


def stand_in_for(cfg, key, secret):
    """What regrelay reads from a file or variable named by `key`, with `secret` inside."""
    if key.startswith("connection_string"):
        source = cfg["source"]
        entity = source.get("queue") or source.get("topic")
        return (f"Endpoint=sb://{source['namespace']}/;SharedAccessKeyName=stand-in;"
                f"SharedAccessKey={secret};EntityPath={entity}")
    if key == "credentials_file":
        return json.dumps({"type": "service_account", "client_email": "stand-in@example.iam.gserviceaccount.com",
                           "private_key_id": "stand-in", "private_key": secret})
    return secret


def check_config_binary(objects, binary):
    """`regrelay check-config` on the rendered file, with stand-ins for its secrets."""
    text = config_of(objects)
    cfg = tomllib.loads(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    stand_in = "stand-in-secret-7f3a"
    with tempfile.TemporaryDirectory() as tmp:
        for i, auth in enumerate(auths_of(cfg)):
            # Files regrelay reads at startup (a docker config and the federated and static
            # Entra tokens are read when first used).
            for key in ("password_file", "token_file", "credentials_file", "client_secret_file",
                        "connection_string_file", "key_file"):
                if key in auth:
                    local = os.path.join(tmp, f"secret-{i}-{key}")
                    with open(local, "w") as f:
                        f.write(stand_in_for(cfg, key, stand_in) + "\n")
                    text = text.replace(json.dumps(auth[key]), json.dumps(local))
            for key in ENV_KEYS:
                if key in auth:
                    env[auth[key]] = stand_in_for(cfg, key, stand_in)
        path = os.path.join(tmp, "config.toml")
        with open(path, "w") as f:
            f.write(text)
        run = subprocess.run([binary, "check-config", "--config", path], env=env,
                             capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise Problem(f"exit {run.returncode}: {(run.stderr or run.stdout).strip()}")
    if stand_in in run.stdout + run.stderr:
        raise Problem("check-config printed a secret value")
    return f"{binary} check-config: valid"


def check_values_file(chart, schema, metrics, label, values):
    binary = os.environ.get("REGRELAY_BIN", "")
    check(f"{label}: values.schema.json", check_values, chart, schema, values)
    check(f"{label}: helm lint --strict", check_lint, values)
    objects = []

    def do_render():
        objects.extend(render(chart, values))
        return f"{len(objects)} objects"

    if not check(f"{label}: helm template", do_render):
        return
    check(f"{label}: apiVersion/kind/metadata.name", check_objects, objects)
    check(f"{label}: kubernetes-validate", check_kubernetes, objects)
    check(f"{label}: CRD objects", check_crds, objects, metrics)
    check(f"{label}: config.toml against the pod", check_pod, objects)
    if any(c["metadata"]["name"].endswith("-sync") for c in by_kind(objects, "CronJob")):
        check(f"{label}: sync CronJob", check_sync_cronjob, objects)
    if binary:
        check(f"{label}: regrelay check-config", check_config_binary, objects, binary)
    elif os.environ.get("CI"):
        fail(f"{label}: regrelay check-config: no regrelay binary; build it first (cargo build, "
             f"or scripts/test.sh) or set REGRELAY_BIN")
    else:
        print(f"skip: {label}: regrelay check-config: no regrelay binary (cargo build, or set REGRELAY_BIN)")


def check_sync_cronjob(objects):
    """`regrelay sync` once at a time, with the Deployment's config, mounts and identity."""
    cron = next(c for c in by_kind(objects, "CronJob") if c["metadata"]["name"].endswith("-sync"))
    deployment = by_kind(objects, "Deployment")[0]
    if cron["spec"].get("concurrencyPolicy") != "Forbid":
        raise Problem("concurrencyPolicy is not Forbid")
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod = deployment["spec"]["template"]["spec"]
    container = job["containers"][0]
    main = next(c for c in pod["containers"] if c["name"] == "regrelay")
    if container["args"][:3] != ["sync", "--config", "/etc/regrelay/config.toml"]:
        raise Problem(f"args {container['args']}")
    for key in ("serviceAccountName", "volumes"):
        if job.get(key) != pod.get(key):
            raise Problem(f"{key} differs from the Deployment's")
    for key in ("image", "env", "volumeMounts", "securityContext"):
        if container.get(key) != main.get(key):
            raise Problem(f"container {key} differs from the Deployment's")
    if job.get("restartPolicy") != "Never":
        raise Problem("restartPolicy is not Never")
    return f"sync every {cron['spec']['schedule']!r}, Forbid, the Deployment's identity and mounts"


# ---- the chart refuses ---------------------------------------------------------------------

REFUSALS = [
    ("terminationGracePeriodSeconds <= shutdown_grace_secs",
     {"terminationGracePeriodSeconds": 30}, "must be larger than config.pipeline.shutdown_grace_secs"),
    ("an inline password",
     {"config": {"registries": [{"host": "r.example", "auth": {"kind": "basic", "username": "u", "password": "p"}}]}},
     "password"),
    ("a sidecar registry with 2 replicas",
     {"replicaCount": 2, "sidecar": {"registry": {"enabled": True}}}, "replicaCount 1"),
    ("KEDA azure-servicebus without a queue or topic",
     {"keda": {"enabled": True, "trigger": "azure-servicebus", "azureServicebus": {"namespace": "ns"}}},
     "queueName"),
    ("an inline Entra client secret (acr_entra)",
     {"config": {"registries": [{"host": "r.azurecr.io", "auth": {
         "kind": "acr_entra", "tenant": "t", "credential": "client_secret", "client_id": "c",
         "client_secret": "s"}}]}},
     "client_secret"),
    ("an inline Service Bus connection string",
     {"config": {"source": {"kind": "servicebus", "subscription": None, "namespace": "ns.servicebus.windows.net",
                            "queue": "q", "auth": {"kind": "sas", "connection_string": "Endpoint=sb://..."}}}},
     "connection_string"),
    ("an inline Service Bus key",
     {"config": {"source": {"kind": "servicebus", "subscription": None, "namespace": "ns.servicebus.windows.net",
                            "queue": "q", "auth": {"kind": "sas", "key_name": "listen", "key": "k"}}}},
     "'key'"),
    ("the in-process sweep with 2 replicas",
     {"config": {"reconcile": {"interval_secs": 600}}}, "set syncCronJob.enabled instead"),
    ("the sync CronJob with a sidecar registry",
     {"replicaCount": 1, "syncCronJob": {"enabled": True}, "sidecar": {"registry": {"enabled": True}}},
     "a Job cannot reach it"),
    ("a Service Bus topic whose subscription is still the Pub/Sub default",
     {"config": {"source": {"kind": "servicebus", "namespace": "ns.servicebus.windows.net", "topic": "t",
                            "auth": {"kind": "entra", "credential": "workload_identity"}}}},
     "/config/source/subscription"),
]


def check_refusal(chart, values, expected):
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    except Exception as e:  # HelmValuesError (schema) or HelmRenderError (fail)
        if expected not in str(e):
            raise Problem(f"refused, but the message lacks {expected!r}: {e}")
        return f"refused ({type(e).__name__})"
    raise Problem("rendered without an error")


# ---- Grafana ---------------------------------------------------------------------------------

def check_dashboard(metrics):
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    inputs = {i.get("name") for i in dash.get("__inputs", [])}
    if "DS_PROMETHEUS" not in inputs:
        raise Problem("no __inputs entry DS_PROMETHEUS")
    panels = []

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or None in ids:
        raise Problem("panel ids are missing or not unique")
    exprs = []
    for p in panels:
        if p.get("type") == "row":
            continue
        if "gridPos" not in p:
            raise Problem(f"panel {p.get('title')!r} has no gridPos")
        ds = p.get("datasource", {})
        if ds.get("uid") != "${DS_PROMETHEUS}":
            raise Problem(f"panel {p.get('title')!r}: datasource is not ${{DS_PROMETHEUS}}")
        targets = p.get("targets", [])
        if not targets:
            raise Problem(f"panel {p.get('title')!r} has no query")
        exprs += [(t.get("expr", ""), f"panel {p.get('title')!r}") for t in targets]
    for v in dash.get("templating", {}).get("list", []):
        query = v.get("query", "")
        query = query.get("query", "") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.+),\s*[A-Za-z_]+\)", query.strip())
        if not m:
            raise Problem(f"variable {v.get('name')}: expected label_values(SELECTOR, LABEL), got {query!r}")
        exprs.append((m.group(1), f"variable {v.get('name')}"))
    used = set().union(*(metric_names(e, where) for e, where in exprs))
    unknown = used - metrics
    if unknown:
        raise Problem(f"metrics missing from README.md: {', '.join(sorted(unknown))}")
    return f"{len(panels)} panels, {len(exprs)} queries parsed, {len(used)} metrics, all in README.md"


def main():
    try:
        metrics = readme_metrics()
    except Problem as e:
        fail(str(e))
        return 1
    with open(os.path.join(CHART, "values.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    check("values.schema.json is a draft-07 schema", jsonschema.Draft7Validator.check_schema, schema)
    sets = [("default values", {})]
    for path in sorted(glob.glob(os.path.join(CHART, "examples", "*.yaml"))) + sorted(
            glob.glob(os.path.join(CHART, "ci", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            sets.append((os.path.relpath(path, CHART), yaml.safe_load(f) or {}))
    with helm.Chart.load(CHART) as chart:
        for label, values in sets:
            check_values_file(chart, schema, metrics, label, values)
        for label, values, expected in REFUSALS:
            check(f"the chart refuses {label}", check_refusal, chart, values, expected)
    check(f"{DASHBOARD}", check_dashboard, metrics)
    return 1 if failures else 0


sys.exit(main())
PY

elapsed=$(($(date +%s) - started))
if [ "$status" -eq 0 ]; then
    echo "helm chart checks: all passed (${elapsed} s)"
else
    echo "helm chart checks: FAILED (see the FAIL lines above; ${elapsed} s)"
fi
exit "$status"
