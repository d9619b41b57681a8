#!/usr/bin/env python3
"""The daemon benchmark: `regrelay run` against per-event `skopeo copy` glue, both fed
from a local Pub/Sub emulator.  Started by scripts/bench-daemon.sh (which builds the
binary and checks the tools); see docs/benchmarks.md, section "Daemon: Pub/Sub fan-in".

Everything binds 127.0.0.1.  Every child (registries, the emulator, regrelay) runs in its
own process group and the whole group is stopped on exit, also on errors and Ctrl-C.

Phases, each tool against its own fresh target registry (same source registry):

  fan-in   N messages (default 1000) naming D distinct digests (default 100) in R
           repositories (default 40), published in one request once the consumer is
           running; drain time = publish returned -> the last message settled.
  no-op    the same N messages again, after fan-in: every image is already at the target.
  latency  L messages (default 60), one per publish request, GAP seconds apart, each for a
           small image not yet at the target; latency = publish returned -> the message
           settled (regrelay: its "acked" JSON log line, by message_id; glue: skopeo exited).

The glue is what people run today: W workers (default 8, = regrelay's pipeline.workers)
each running one `skopeo copy --all --preserve-digests` per message, acked when it exits 0.
It is kept cheap on the Pub/Sub side (a dispatcher long-pulls batches, at most 2 x W
messages outstanding, over keep-alive connections; acks go out in batches every 100 ms),
so that the comparison is about the copies.

regrelay misbehaving (stuck drain, a wrong copy count, a wrong digest at the target,
warnings or errors in its log, a non-zero exit at shutdown) is reported as an anomaly and
makes the script exit 1; it is never worked around.
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
MKIMAGE = os.path.join(HERE, "mkimage.py")
PROJECT = "regrelay-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB = 1024

# urllib without proxies: everything here is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print(f"bench-daemon: {msg}", file=sys.stderr, flush=True)


class Abort(Exception):
    """A failure that ends the run (the message says what was seen)."""


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------

PROCS = []  # (name, Popen); each the leader of its own process group
USED_PORTS = set()


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in USED_PORTS:
            USED_PORTS.add(port)
            return port


def spawn(name, cmd, stdout_path, stderr_path=None, env=None, cwd=None):
    out = open(stdout_path, "ab")
    err = open(stderr_path, "ab") if stderr_path else subprocess.STDOUT
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                         start_new_session=True)
    out.close()
    if stderr_path:
        err.close()
    PROCS.append((name, p))
    return p


def proc_stat(pid):
    """(state, pgrp, utime+stime ticks) of a live pid, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    # rest[0] = state, [2] = pgrp, [11] = utime, [12] = stime (fields 3, 5, 14, 15)
    return rest[0], int(rest[2]), int(rest[11]) + int(rest[12])


def group_pids(pgid):
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st and st[1] == pgid and st[0] not in "ZX":
                pids.append(int(name))
    return pids


def group_cpu(pgid):
    """CPU seconds (user + sys) of the live members of a process group."""
    total = 0
    for pid in group_pids(pgid):
        st = proc_stat(pid)
        if st:
            total += st[2]
    return total / CLK_TCK


def stop_group(p, term_timeout=15.0):
    """SIGTERM the group, wait until no member is left (SIGKILL after term_timeout), then
    reap the leader. Returns the leader's exit code."""
    pgid = p.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + term_timeout
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_pids(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while group_pids(pgid):
            time.sleep(0.05)
    return p.wait()


def cleanup():
    while PROCS:
        name, p = PROCS.pop()
        try:
            stop_group(p, term_timeout=10.0)
        except Exception as e:  # keep cleaning up the rest
            log(f"stopping {name}: {e}")


def competitors():
    """Names of processes that compete for the CPU and are not ours: compilers, cargo,
    test binaries, other registries / emulators / regrelay instances."""
    ours = set()
    for _, p in PROCS:
        ours.update(group_pids(p.pid))
    mine = os.getpgrp()  # the skopeo runs of the glue are in our own group
    seen = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in ours:
            continue
        st = proc_stat(name)
        if st is None or st[1] == mine:
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if comm in ("cargo", "rustc", "cc", "ld", "cc1", "rust-lld", "ld.lld", "clippy-driver",
                    "rustdoc", "docker-registry", "java", "regrelay", "skopeo") \
                or "/target/debug/deps/" in cmdline or "/target/release/deps/" in cmdline:
            seen.add(comm)
    return seen


def wait_quiet(max_wait, need=5.0):
    """Waits (at most max_wait seconds) until no competing process has been seen for
    `need` seconds in a row; returns how long it waited."""
    if max_wait <= 0:
        return 0.0
    t0 = time.monotonic()
    quiet_since = None
    said = False
    while time.monotonic() - t0 < max_wait:
        c = competitors()
        now = time.monotonic()
        if c:
            quiet_since = None
            if not said:
                log(f"waiting for a quiet machine (seen: {', '.join(sorted(c))})")
                said = True
        else:
            quiet_since = quiet_since or now
            if now - quiet_since >= need:
                break
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1)


class Watch:
    """Samples the load and competing processes while a phase runs."""

    def __init__(self):
        self.names = set()
        self.samples = 0
        self.hits = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.load0 = os.getloadavg()[0]
        self.t.start()

    def run(self):
        while not self.stop.wait(0.5):
            c = competitors()
            self.samples += 1
            if c:
                self.hits += 1
                self.names |= c

    def done(self):
        self.stop.set()
        self.t.join()
        return {"load1_start": round(self.load0, 2), "load1_end": round(os.getloadavg()[0], 2),
                "competitor_samples": f"{self.hits}/{self.samples}",
                "competitors": ",".join(sorted(self.names)) or "none"}


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------

def http_req(method, url, body=None, timeout=30, headers=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    with OPENER.open(req, timeout=timeout) as r:
        return r.status, r.headers, r.read()


def wait_http(url, what, logfile, deadline_s=90, proc=None):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            status, _, _ = http_req("GET", url, timeout=2)
            if status == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = ""
    try:
        with open(logfile, errors="replace") as f:
            tail = "".join(f.readlines()[-30:])
    except OSError:
        pass
    raise Abort(f"{what} did not answer {url} within {deadline_s} s; log tail:\n{tail}")


class PubSub:
    """The emulator's REST API over one keep-alive connection per thread (a new TCP
    connection per request costs the emulator about 10 ms of CPU, a reused one about 3)."""

    def __init__(self, port):
        self.port = port
        self.prefix = f"/v1/projects/{PROJECT}"
        self.local = threading.local()

    def call(self, method, path, body=None, timeout=30):
        data = json.dumps(body if body is not None else {})
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None or conn.timeout != timeout:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                conn.request(method, f"{self.prefix}/{path}", data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status >= 300:
                raise Abort(f"pubsub {method} {path} -> {resp.status}: {raw[:300]!r}")
            return json.loads(raw) if raw.strip() else {}

    def create(self, topic, sub, ack_deadline=60):
        self.call("PUT", f"topics/{topic}")
        self.call("PUT", f"subscriptions/{sub}",
                  {"topic": f"projects/{PROJECT}/topics/{topic}", "ackDeadlineSeconds": ack_deadline})

    def publish(self, topic, payloads):
        """One publish request (at most 1000 messages); returns the message ids."""
        assert 0 < len(payloads) <= 1000
        msgs = [{"data": base64.b64encode(p).decode()} for p in payloads]
        ids = self.call("POST", f"topics/{topic}:publish", {"messages": msgs})["messageIds"]
        assert len(ids) == len(payloads)
        return ids

    def pull(self, sub, n):
        """A long pull of up to n messages: blocks until at least one is there."""
        r = self.call("POST", f"subscriptions/{sub}:pull", {"maxMessages": n, "returnImmediately": False},
                      timeout=None)
        return r.get("receivedMessages", [])

    def peek_count(self, sub):
        r = self.call("POST", f"subscriptions/{sub}:pull", {"maxMessages": 100, "returnImmediately": True})
        got = r.get("receivedMessages", [])
        if got:
            self.call("POST", f"subscriptions/{sub}:modifyAckDeadline",
                      {"ackIds": [m["ackId"] for m in got], "ackDeadlineSeconds": 0})
        return len(got)

    def ack(self, sub, ack_ids):
        self.call("POST", f"subscriptions/{sub}:acknowledge", {"ackIds": ack_ids})

    def nack(self, sub, ack_ids):
        self.call("POST", f"subscriptions/{sub}:modifyAckDeadline", {"ackIds": ack_ids, "ackDeadlineSeconds": 0})


# --------------------------------------------------------------------------------------
# registries
# --------------------------------------------------------------------------------------

ACCESS_RE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (/v2/\S*) HTTP/[0-9.]+" (\d{3}) ')


class Registry:
    def __init__(self, work, name):
        self.name = name
        self.dir = os.path.join(work, name)
        os.makedirs(os.path.join(self.dir, "storage"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.access_log = os.path.join(self.dir, "access.log")
        self.log = os.path.join(self.dir, "registry.log")
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            # The access log (stdout) is on: it counts the requests of both tools.
            f.write(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {self.dir}/storage
  delete:
    enabled: true
http:
  addr: {self.host}
  secret: bench-daemon
""")
        self.proc = spawn(f"registry {name}", ["docker-registry", "serve", cfg], self.access_log, self.log)
        wait_http(f"http://{self.host}/v2/", f"registry {name}", self.log, proc=self.proc)
        self.mark()

    def mark(self):
        """Start a new counting window of the access log."""
        self.offset = os.path.getsize(self.access_log)
        self.cpu0 = group_cpu(self.proc.pid)

    def window(self):
        """Requests since mark() by kind, and CPU seconds used since mark()."""
        time.sleep(0.2)  # let the last lines land
        with open(self.access_log, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        counts = {}
        total = 0
        for m in ACCESS_RE.finditer(text):
            method, path, status = m.group(1), m.group(2), m.group(3)
            total += 1
            path = path.split("?", 1)[0] + ("?mount" if "mount=" in m.group(2) else "")
            if path == "/v2/":
                kind = "ping"
            elif "/manifests/" in path:
                kind = "manifest"
            elif "/blobs/uploads/" in path:
                kind = "mount" if path.endswith("?mount") else "upload"
            elif "/blobs/" in path:
                kind = "blob"
            elif path.endswith("/tags/list"):
                kind = "tags"
            elif "/referrers/" in path:
                kind = "referrers"
            else:
                kind = "other"
            key = f"{method} {kind}"
            if method == "POST" and kind == "mount":
                key += f" {status}"  # 201 = mounted, 202 = not mounted, upload started
            counts[key] = counts.get(key, 0) + 1
        return total, counts, group_cpu(self.proc.pid) - self.cpu0

    def digest(self, repo, ref):
        h = {"Accept": ", ".join([
            "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json"])}
        try:
            _, headers, _ = http_req("HEAD", f"http://{self.host}/v2/{repo}/manifests/{ref}", headers=h)
        except urllib.error.HTTPError:
            return None
        return headers.get("Docker-Content-Digest")


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------

class Image:
    def __init__(self, repo, tag, base_seed, seed):
        self.repo, self.tag, self.base_seed, self.seed = repo, tag, base_seed, seed
        self.digest = None

    def event(self, host):
        return json.dumps({"action": "INSERT", "digest": f"{host}/{self.repo}@{self.digest}",
                           "tag": f"{host}/{self.repo}:{self.tag}"}, separators=(",", ":")).encode()


def seed_images(work, src, images, base_size, layer_size, jobs=4):
    """Writes each repository's images into one OCI layout (blobs shared by the images of a
    repository are stored once) and copies every tag to the source with skopeo."""
    by_repo = {}
    for im in images:
        by_repo.setdefault(im.repo, []).append(im)

    def one_repo(item):
        repo, ims = item
        lay = os.path.join(work, "layouts", repo.replace("/", "_"))
        for im in ims:
            out = subprocess.run([sys.executable, MKIMAGE, "--out", lay, "--tag", im.tag,
                                  "--base-seed", im.base_seed, "--base-size", str(base_size),
                                  "--layer-size", str(layer_size), "--seed", im.seed],
                                 check=True, capture_output=True, text=True)
            im.digest = out.stdout.strip()
            r = subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                                f"oci:{lay}:{im.tag}", f"docker://{src.host}/{im.repo}:{im.tag}"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise Abort(f"seeding {im.repo}:{im.tag} failed: {r.stderr}")
        shutil.rmtree(lay)

    with ThreadPoolExecutor(jobs) as ex:
        list(ex.map(one_repo, by_repo.items()))
    for im in images:
        got = src.digest(im.repo, im.tag)
        if got != im.digest:
            raise Abort(f"source {im.repo}:{im.tag} has digest {got}, want {im.digest}")


def verify_target(dst, images, prefix="mirror/"):
    bad = []
    for im in images:
        got = dst.digest(prefix + im.repo, im.tag)
        if got != im.digest:
            bad.append(f"{dst.host}/{prefix}{im.repo}:{im.tag} has {got}, want {im.digest}")
    return bad


# --------------------------------------------------------------------------------------
# regrelay
# --------------------------------------------------------------------------------------

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_RE.match(line)
        if m:
            labels = dict(LABEL_RE.findall(m.group(2) or ""))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


class Metrics:
    def __init__(self, series):
        self.series = series

    def get(self, name, **labels):
        return sum(v for n, l, v in self.series
                   if n == name and all(l.get(k) == want for k, want in labels.items()))

    def by(self, name, label):
        out = {}
        for n, l, v in self.series:
            if n == name and v:
                out[l.get(label, "")] = out.get(l.get(label, ""), 0) + v
        return out


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$")


def parse_ts(s):
    import calendar
    m = TS_RE.match(s)
    if not m:
        raise ValueError(f"timestamp {s!r}")
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    return calendar.timegm((y, mo, d, h, mi, se, 0, 0, 0)) + frac


class Regrelay:
    def __init__(self, binary, work, ps_port, src, dst, workers, out_dir):
        self.binary = binary
        self.admin = f"127.0.0.1:{free_port()}"
        self.cfg = os.path.join(work, "regrelay.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""# written by scripts/bench_daemon.py
[source]
kind = "pubsub"
subscription = "projects/{PROJECT}/subscriptions/regrelay-sub"
endpoint = "http://127.0.0.1:{ps_port}"

[pipeline]
workers = {workers}
shutdown_grace_secs = 10

[admin]
listen = "{self.admin}"

[registries."{src.host}"]

[registries."{dst.host}"]

[[rules]]
name = "all"
source_registry = "{src.host}"
repository = "**"
[[rules.targets]]
registry = "{dst.host}"
repository = "mirror/{{repository}}"
""")
        r = subprocess.run([binary, "check-config", "--config", self.cfg], capture_output=True, text=True)
        if r.returncode != 0:
            raise Abort(f"regrelay check-config rejected {self.cfg}:\n{r.stderr}")
        shutil.copy(self.cfg, os.path.join(out_dir, "regrelay.toml"))
        self.log = os.path.join(out_dir, "regrelay.log")
        open(self.log, "w").close()
        env = dict(os.environ, REGRELAY_LOG="regrelay=debug")
        self.proc = spawn("regrelay", [binary, "--log-format", "json", "run", "--config", self.cfg],
                          self.log, env=env)
        wait_http(f"http://{self.admin}/readyz", "regrelay", self.log, proc=self.proc)
        self.cpu0 = 0.0

    def metrics(self):
        _, _, raw = http_req("GET", f"http://{self.admin}/metrics", timeout=5)
        return Metrics(parse_metrics(raw.decode()))

    def cpu(self):
        st = proc_stat(self.proc.pid)
        return st[2] / CLK_TCK if st else 0.0

    def settled(self):
        """(acked, all settled) from /metrics."""
        m = self.metrics()
        return m.get("regrelay_messages_settled_total", outcome="acked"), \
            m.get("regrelay_messages_settled_total")

    def wait_acked(self, target, poll=0.05, stall_s=60, limit_s=900):
        """Polls /metrics until acked >= target; returns the time of that poll's answer.
        Aborts when nothing settles for stall_s seconds or the daemon exits."""
        start = last_change = time.monotonic()
        last = None
        while True:
            acked, settled = self.settled()
            now = time.time()
            if acked >= target:
                return now
            if settled != last:
                last, last_change = settled, time.monotonic()
            if self.proc.poll() is not None:
                raise Abort(f"regrelay exited with {self.proc.returncode} while draining\n{self.log_tail()}")
            if time.monotonic() - last_change > stall_s or time.monotonic() - start > limit_s:
                raise Abort(f"regrelay drain stuck: acked {acked:.0f} of {target}, settled {settled:.0f}, "
                            f"no progress for {time.monotonic() - last_change:.0f} s\n{self.log_tail()}")
            time.sleep(poll)

    def log_records(self):
        recs = []
        with open(self.log, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return recs

    def acked_times(self):
        """message_id -> timestamp of its "acked" log line."""
        out = {}
        for r in self.log_records():
            if r.get("message") == "acked":
                mid = (r.get("span") or {}).get("message_id")
                if mid is not None:
                    out[str(mid)] = parse_ts(r["timestamp"])
        return out

    def copy_breakdown(self, published):
        """Where a copying message's time goes, from the JSON log (message_id -> publish
        time, or None): the copy ("source resolved" -> the copy engine's "verified"), the
        tag write and read-back after it (-> the pipeline's "verified"), and how many copies
        ran at once on average. With publish times, also publish -> "source resolved"
        (delivery, the tag lock, the source tag HEAD and the target check). Empty when the
        log lines are not there (they are diagnostics, not an interface)."""
        start, cend, pend = {}, {}, {}
        for r in self.log_records():
            m = None
            for sp in r.get("spans") or []:
                if "message_id" in sp:
                    m = str(sp["message_id"])
            if m not in published:
                continue
            msg, tgt, t = r.get("message"), r.get("target"), parse_ts(r["timestamp"])
            if msg == "source resolved":
                start.setdefault(m, t)
            elif msg == "verified" and tgt == "regrelay::replicate":
                cend.setdefault(m, t)
            elif msg == "verified" and tgt == "regrelay::pipeline":
                pend.setdefault(m, t)
        ms = [m for m in start if m in cend and m in pend]
        if not ms:
            return {}
        copy = [cend[m] - start[m] for m in ms]
        tag = [pend[m] - cend[m] for m in ms]
        span = max(pend[m] for m in ms) - min(start[m] for m in ms)
        out = {"copy_median_ms": round(pct(copy, 50) * 1000, 1), "copy_p90_ms": round(pct(copy, 90) * 1000, 1),
               "tag_write_median_ms": round(pct(tag, 50) * 1000, 1),
               "copy_phase_s": round(span, 2),
               "copy_concurrency": round(sum(pend[m] - start[m] for m in ms) / span, 1) if span > 0 else "nan"}
        pre = [start[m] - published[m] for m in ms if published.get(m)]
        if pre:
            out["before_copy_median_ms"] = round(pct(pre, 50) * 1000, 1)
        return out

    def problems(self):
        return [json.dumps(r) for r in self.log_records() if r.get("level") in ("WARN", "ERROR")]

    def log_tail(self, n=30):
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-n:])


# --------------------------------------------------------------------------------------
# skopeo glue
# --------------------------------------------------------------------------------------

STOP = b'{"action":"BENCH_STOP"}'


class Glue:
    """The per-event glue, written to be cheap on the Pub/Sub side so that the comparison
    is about the copies: one dispatcher long-pulls batches (at most 2 x W messages
    outstanding, like regrelay's default flow control), W workers each run one
    `skopeo copy` per message, and an acker acknowledges in batches every 100 ms."""

    def __init__(self, ps, topic, sub, dst, workers, out_dir):
        self.ps, self.topic, self.sub, self.dst = ps, topic, sub, dst
        self.workers = workers
        self.max_outstanding = 2 * workers
        self.out_dir = out_dir
        self.lock = threading.Condition()
        self.outstanding = 0
        self.queue = []            # messages pulled, not yet taken by a worker
        self.to_ack = []
        self.done = {}             # message_id -> time skopeo exited 0 (the ack is queued then)
        self.acked = 0
        self.pulls = 0
        self.ack_requests = 0
        self.failures = []
        self.runs = []             # (wall s, max RSS KiB, user s, sys s) per invocation
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.dispatcher, daemon=True),
                        threading.Thread(target=self.acker, daemon=True)]
        self.threads += [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(workers)]
        for t in self.threads:
            t.start()

    def dispatcher(self):
        while True:
            with self.lock:
                # Pull when at least half the workers could take a message.
                while self.max_outstanding - self.outstanding < max(1, self.workers // 2):
                    self.lock.wait()
                room = self.max_outstanding - self.outstanding
            try:
                got = self.ps.pull(self.sub, room)
            except Exception as e:  # noqa: BLE001 - recorded, retried
                with self.lock:
                    self.failures.append(f"pull: {e}")
                time.sleep(0.5)
                continue
            stop = False
            with self.lock:
                self.pulls += 1
                for rm in got:
                    if base64.b64decode(rm["message"].get("data", "")) == STOP:
                        self.to_ack.append(rm["ackId"])
                        stop = True
                        continue
                    self.outstanding += 1
                    self.queue.append(rm)
                if stop:
                    self.queue.extend([None] * self.workers)
                self.lock.notify_all()
            if stop:
                return

    def acker(self):
        while True:
            stopping = self.stopping.wait(0.1)
            with self.lock:
                ids, self.to_ack = self.to_ack, []
            if ids:
                try:
                    self.ps.ack(self.sub, ids)
                    self.ack_requests += 1
                except Exception as e:  # noqa: BLE001
                    with self.lock:
                        self.failures.append(f"ack: {e}")
            if stopping:
                return

    def worker(self, i):
        tf = os.path.join(self.out_dir, f"time.{i}")
        logf = os.path.join(self.out_dir, f"skopeo-worker{i}.log")
        while True:
            with self.lock:
                while not self.queue:
                    self.lock.wait()
                rm = self.queue.pop(0)
            if rm is None:
                return
            msg = rm["message"]
            try:
                ev = json.loads(base64.b64decode(msg["data"]))
                src = ev["digest"]                          # HOST/REPO@sha256:...
                repo = src.split("@", 1)[0].split("/", 1)[1]
                tag = ev["tag"].rsplit(":", 1)[1]
                cmd = ["/usr/bin/time", "-f", "%e %M %U %S", "-o", tf,
                       "skopeo", "copy", "--all", "--preserve-digests",
                       "--src-tls-verify=false", "--dest-tls-verify=false",
                       f"docker://{src}", f"docker://{self.dst.host}/mirror/{repo}:{tag}"]
                with open(logf, "ab") as lf:
                    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf).returncode
            except Exception as e:  # noqa: BLE001
                rc, src = f"error {e}", "?"
            finished = time.time()
            try:
                with open(tf) as f:
                    wall, rss, user, sys_ = f.read().split()[-4:]
                run = (float(wall), int(rss), float(user), float(sys_))
            except (OSError, ValueError):
                run = None
            with self.lock:
                self.outstanding -= 1
                if rc == 0:
                    self.to_ack.append(rm["ackId"])
                    self.done[msg["messageId"]] = finished
                    self.acked += 1
                    if run:
                        self.runs.append(run)
                else:
                    self.failures.append(f"skopeo exit {rc} for {src} (see {logf})")
                self.lock.notify_all()
            if rc != 0:
                try:
                    self.ps.nack(self.sub, [rm["ackId"]])
                except Exception:  # noqa: BLE001
                    pass

    def wait_acked(self, target, stall_s=120):
        last, last_change = -1, time.monotonic()
        while True:
            with self.lock:
                acked, fails = self.acked, len(self.failures)
                last_done = max(self.done.values()) if self.done else 0.0
            if acked >= target:
                return last_done
            if acked != last:
                last, last_change = acked, time.monotonic()
            if time.monotonic() - last_change > stall_s:
                raise Abort(f"skopeo glue stuck at {acked} of {target} acked; failures: {self.failures[-5:]}")
            if fails > 50:
                raise Abort(f"skopeo glue: too many failures: {self.failures[-5:]}")
            time.sleep(0.05)

    def take_stats(self):
        with self.lock:
            runs, self.runs = self.runs, []
            pulls, acks = self.pulls, self.ack_requests
            self.pulls = self.ack_requests = 0
        return runs, pulls, acks

    def stop(self):
        self.ps.publish(self.topic, [STOP])
        for t in self.threads[:1] + self.threads[2:]:
            t.join(timeout=60)
        self.stopping.set()
        self.threads[1].join(timeout=60)


# --------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(1, min(len(v), int(-(-p * len(v) // 100))))
    return v[k - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regrelay", required=True)
    ap.add_argument("--out", required=True, help="results directory (bench-out)")
    ap.add_argument("--tmp", default=None, help="where registry storage goes")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--digests", type=int, default=100)
    ap.add_argument("--repos", type=int, default=40)
    ap.add_argument("--dup-order", choices=["shuffled", "grouped"], default="shuffled")
    ap.add_argument("--latency-n", type=int, default=60)
    ap.add_argument("--latency-gap", type=float, default=0.2)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each phase, wait up to SECONDS for 5 s without compilers, tests or other "
                         "registries running (default 0: do not wait)")
    ap.add_argument("--base-size", type=int, default=512 * KIB)
    ap.add_argument("--layer-size", type=int, default=256 * KIB)
    args = ap.parse_args()
    if args.messages % args.digests or args.messages > 1000:
        ap.error("--messages must be a multiple of --digests and at most 1000 (one publish request)")
    if args.digests < args.repos:
        ap.error("--digests must be >= --repos")

    import tempfile
    work = tempfile.mkdtemp(prefix="regrelay-bench-daemon.", dir=args.tmp)
    logs = os.path.join(args.out, "daemon-logs")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)
    raw = []
    anomalies = []

    def record(key, **kv):
        line = key + " " + " ".join(f"{k}={v}" for k, v in kv.items())
        raw.append(line)
        log(line)

    t_script = time.monotonic()
    try:
        # --- registries and the emulator ------------------------------------------------
        src = Registry(work, "source")
        log(f"source registry {src.host}")
        ps_port = free_port()
        ps_dir = os.path.join(work, "pubsub")
        os.makedirs(os.path.join(ps_dir, "data"))
        os.makedirs(os.path.join(ps_dir, "gcloud"))
        env = dict(os.environ, CLOUDSDK_CONFIG=os.path.join(ps_dir, "gcloud"), CLOUDSDK_CORE_DISABLE_PROMPTS="1",
                   CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
                   CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true")
        ps_log = os.path.join(logs, "pubsub-emulator.log")
        emu = spawn("pubsub emulator", ["gcloud", "beta", "emulators", "pubsub", "start", f"--project={PROJECT}",
                                        f"--host-port=127.0.0.1:{ps_port}",
                                        f"--data-dir={os.path.join(ps_dir, 'data')}"], ps_log, env=env)
        log(f"starting the Pub/Sub emulator on 127.0.0.1:{ps_port}")
        wait_http(f"http://127.0.0.1:{ps_port}/", "the Pub/Sub emulator", ps_log, proc=emu)
        ps = PubSub(ps_port)
        ps.create("regrelay-events", "regrelay-sub")
        ps.create("glue-events", "glue-sub")

        # --- images ---------------------------------------------------------------------
        fanin = []
        for i in range(args.digests):
            r = i % args.repos
            fanin.append(Image(f"fanin/app{r:02d}", f"v{i // args.repos + 1}", f"fanin-base-{r}", f"fanin-{i}"))
        lat = [Image(f"latency/app{i:02d}", "v1", f"latency-base-{i}", f"latency-{i}")
               for i in range(args.latency_n)]
        t0 = time.monotonic()
        log(f"seeding {len(fanin)} fan-in images in {args.repos} repositories and {len(lat)} latency images")
        seed_images(work, src, fanin + lat, args.base_size, args.layer_size)
        record("seed", images=len(fanin) + len(lat), seconds=f"{time.monotonic() - t0:.1f}")
        subprocess.run(["sync"], check=False)

        per_digest = args.messages // args.digests
        order = [im for im in fanin for _ in range(per_digest)]
        if args.dup_order == "shuffled":
            random.Random(3).shuffle(order)
        payloads = [im.event(src.host) for im in order]
        lat_payloads = [im.event(src.host) for im in lat]

        results = {}

        # ================= regrelay ======================================================
        dst_r = Registry(work, "target-regrelay")
        rr = Regrelay(args.regrelay, work, ps_port, src, dst_r, args.workers, logs)
        log(f"regrelay running (admin {rr.admin}), target {dst_r.host}")
        time.sleep(1.0)  # let the streaming pull open

        def regrelay_phase(name, pl, expect_acked_total, one_at_a_time=False):
            waited = wait_quiet(args.wait_quiet)
            m0 = rr.metrics()
            src.mark(); dst_r.mark()
            cpu0, emu0 = rr.cpu(), group_cpu(emu.pid)
            w = Watch()
            pubs = {}
            if one_at_a_time:
                t_first = None
                for p in pl:
                    t_send = time.time()
                    mid = ps.publish("regrelay-events", [p])[0]
                    pubs[mid] = time.time()
                    t_first = t_first or t_send
                    time.sleep(max(0.0, args.latency_gap - (time.time() - t_send)))
                t_pub = t_first
                pub_s = 0.0
            else:
                t_send = time.time()
                for mid in ps.publish("regrelay-events", pl):
                    pubs[mid] = None
                t_pub = time.time()
                pub_s = t_pub - t_send
            t_end = rr.wait_acked(expect_acked_total)
            env_info = w.done()
            m1 = rr.metrics()
            s_total, s_kinds, s_cpu = src.window()
            d_total, d_kinds, d_cpu = dst_r.window()
            acked = rr.acked_times()
            ours = [acked[mid] for mid in pubs if mid in acked]
            if len(ours) != len(pubs):
                anomalies.append(f"regrelay {name}: {len(pubs) - len(ours)} published messages have no 'acked' "
                                 f"log line")
            d = lambda n, **l: m1.get(n, **l) - m0.get(n, **l)  # noqa: E731
            res = {
                "drain_s": round(t_end - t_pub, 3),
                "drain_log_s": round(max(ours) - t_pub, 3) if ours else "nan",
                "publish_request_s": round(pub_s, 3),
                "acked": int(d("regrelay_messages_settled_total", outcome="acked")),
                "nacked": int(d("regrelay_messages_settled_total", outcome="nacked")),
                "rejected": int(d("regrelay_messages_settled_total", outcome="rejected")),
                "ignored": int(d("regrelay_messages_settled_total", outcome="ignored")),
                "received": int(d("regrelay_messages_received_total")),
                "copies_replicated": int(d("regrelay_copies_total", outcome="replicated")),
                "copies_already_present": int(d("regrelay_copies_total", outcome="already_present")),
                "copies_failed": int(d("regrelay_copies_total", outcome="failed")),
                "dedup_in_flight": int(d("regrelay_dedup_hits_total", kind="in_flight")),
                "dedup_recent": int(d("regrelay_dedup_hits_total", kind="recent")),
                "registry_requests": int(d("regrelay_registry_requests_total")),
                "registry_requests_source": int(d("regrelay_registry_requests_total", registry=src.host)),
                "registry_requests_target": int(d("regrelay_registry_requests_total", registry=dst_r.host)),
                "registry_retries": int(d("regrelay_registry_retries_total")),
                "blobs_uploaded": int(d("regrelay_blobs_total", action="uploaded")),
                "blobs_mounted": int(d("regrelay_blobs_total", action="mounted")),
                "blobs_skipped": int(d("regrelay_blobs_total", action="skipped")),
                "bytes_copied": int(d("regrelay_copied_bytes_total")),
                "access_log_source": s_total, "access_log_target": d_total,
                "cpu_regrelay_s": round(rr.cpu() - cpu0, 2), "cpu_source_registry_s": round(s_cpu, 2),
                "cpu_target_registry_s": round(d_cpu, 2), "cpu_emulator_s": round(group_cpu(emu.pid) - emu0, 2),
                "vmhwm_kib": vm_hwm_kib(rr.proc.pid),
            }
            res.update(env_info, waited_for_quiet_s=waited)
            res.update(rr.copy_breakdown(pubs))
            if one_at_a_time:
                lats = [acked[mid] - pubs[mid] for mid in pubs if mid in acked]
                res.update(latency_n=len(lats), latency_p50_ms=round(pct(lats, 50) * 1000, 1),
                           latency_p90_ms=round(pct(lats, 90) * 1000, 1),
                           latency_p99_ms=round(pct(lats, 99) * 1000, 1),
                           latency_min_ms=round(min(lats) * 1000, 1), latency_max_ms=round(max(lats) * 1000, 1))
                lag = m1.by("regrelay_event_lag_seconds_bucket", "le")
                lag0 = m0.by("regrelay_event_lag_seconds_bucket", "le")
                res["event_lag_buckets"] = ",".join(
                    f"le{k}:{int(v - lag0.get(k, 0))}" for k, v in sorted(lag.items(), key=lambda kv: float(kv[0]))
                    if k in ("0.1", "0.25", "0.5", "1", "+Inf"))
            record(f"regrelay {name}", **res)
            record(f"regrelay {name} source-requests", **s_kinds)
            record(f"regrelay {name} target-requests", **d_kinds)
            return res

        log(f"[regrelay] fan-in: {len(payloads)} messages, {len(fanin)} digests")
        results["r_fanin"] = r = regrelay_phase("fan-in", payloads, len(payloads))
        if r["copies_replicated"] != len(fanin):
            anomalies.append(f"regrelay fan-in: {r['copies_replicated']} copies replicated, want {len(fanin)}")
        bad = verify_target(dst_r, fanin)
        if bad:
            anomalies.append("regrelay fan-in: wrong target digests: " + "; ".join(bad[:5]))

        log(f"[regrelay] no-op: {len(payloads)} messages for images already at the target")
        results["r_noop"] = r = regrelay_phase("no-op", payloads, 2 * len(payloads))
        if r["copies_replicated"] != 0:
            anomalies.append(f"regrelay no-op: {r['copies_replicated']} more copies replicated, want 0")

        log(f"[regrelay] latency: {len(lat)} messages, {args.latency_gap} s apart")
        results["r_lat"] = r = regrelay_phase("latency", lat_payloads, 2 * len(payloads) + len(lat),
                                              one_at_a_time=True)
        if r["copies_replicated"] != len(lat):
            anomalies.append(f"regrelay latency: {r['copies_replicated']} copies replicated, want {len(lat)}")
        bad = verify_target(dst_r, lat)
        if bad:
            anomalies.append("regrelay latency: wrong target digests: " + "; ".join(bad[:5]))

        results["r_vmhwm_kib"] = vm_hwm_kib(rr.proc.pid)
        probs = rr.problems()
        if probs:
            anomalies.append(f"regrelay logged {len(probs)} WARN/ERROR lines, e.g.:\n  " + "\n  ".join(probs[:5]))
        t_stop = time.monotonic()
        rc = stop_group(rr.proc, term_timeout=30)
        PROCS.remove(("regrelay", rr.proc))
        record("regrelay shutdown", exit_code=rc, seconds=f"{time.monotonic() - t_stop:.2f}")
        if rc != 0:
            anomalies.append(f"regrelay exited {rc} after SIGTERM")
        stop_group(dst_r.proc)
        PROCS.remove((f"registry {dst_r.name}", dst_r.proc))
        shutil.rmtree(dst_r.dir, ignore_errors=True)
        subprocess.run(["sync"], check=False)

        # ================= skopeo glue ===================================================
        # The emulator's REST paths (which the glue uses; regrelay uses gRPC) are cold in
        # the JVM: warm them up so that JIT compilation does not land in the glue's phases.
        ps.create("warmup-events", "warmup-sub")
        for _ in range(3):
            ps.publish("warmup-events", [b"warm-up"] * 200)
            left = 200
            while left > 0:
                got = ps.pull("warmup-sub", 8)
                ps.ack("warmup-sub", [m["ackId"] for m in got])
                left -= len(got)

        dst_s = Registry(work, "target-skopeo")
        glue_logs = os.path.join(logs, "skopeo")
        os.makedirs(glue_logs)
        glue = Glue(ps, "glue-events", "glue-sub", dst_s, args.workers, glue_logs)
        log(f"skopeo glue running ({args.workers} workers), target {dst_s.host}")
        time.sleep(1.0)
        glue_acked = [0]

        def glue_phase(name, pl, one_at_a_time=False):
            waited = wait_quiet(args.wait_quiet)
            src.mark(); dst_s.mark()
            emu0 = group_cpu(emu.pid)
            w = Watch()
            pubs = {}
            if one_at_a_time:
                t_first = None
                for p in pl:
                    t_send = time.time()
                    mid = ps.publish("glue-events", [p])[0]
                    pubs[mid] = time.time()
                    t_first = t_first or t_send
                    time.sleep(max(0.0, args.latency_gap - (time.time() - t_send)))
                t_pub, pub_s = t_first, 0.0
            else:
                t_send = time.time()
                for mid in ps.publish("glue-events", pl):
                    pubs[mid] = None
                t_pub = time.time()
                pub_s = t_pub - t_send
            glue_acked[0] += len(pl)
            t_end = glue.wait_acked(glue_acked[0])
            env_info = w.done()
            runs, pulls, ack_requests = glue.take_stats()
            s_total, s_kinds, s_cpu = src.window()
            d_total, d_kinds, d_cpu = dst_s.window()
            res = {
                "drain_s": round(t_end - t_pub, 3),
                "publish_request_s": round(pub_s, 3),
                "invocations": len(runs),
                "failures": len(glue.failures),
                "pubsub_pulls": pulls, "pubsub_ack_requests": ack_requests,
                "skopeo_wall_sum_s": round(sum(r[0] for r in runs), 2),
                "skopeo_wall_median_s": round(statistics.median(r[0] for r in runs), 3),
                "skopeo_rss_median_kib": int(statistics.median(r[1] for r in runs)),
                "skopeo_rss_max_kib": max(r[1] for r in runs),
                "cpu_skopeo_s": round(sum(r[2] + r[3] for r in runs), 2),
                "cpu_source_registry_s": round(s_cpu, 2), "cpu_target_registry_s": round(d_cpu, 2),
                "cpu_emulator_s": round(group_cpu(emu.pid) - emu0, 2),
                "access_log_source": s_total, "access_log_target": d_total,
                "manifest_puts": d_kinds.get("PUT manifest", 0),
                "blob_uploads": d_kinds.get("PUT upload", 0),
                "blob_mounts": d_kinds.get("POST mount 201", 0),
            }
            res.update(env_info, waited_for_quiet_s=waited)
            if one_at_a_time:
                with glue.lock:
                    lats = [glue.done[mid] - pubs[mid] for mid in pubs if mid in glue.done]
                res.update(latency_n=len(lats), latency_p50_ms=round(pct(lats, 50) * 1000, 1),
                           latency_p90_ms=round(pct(lats, 90) * 1000, 1),
                           latency_p99_ms=round(pct(lats, 99) * 1000, 1),
                           latency_min_ms=round(min(lats) * 1000, 1), latency_max_ms=round(max(lats) * 1000, 1))
            record(f"skopeo {name}", **res)
            record(f"skopeo {name} source-requests", **s_kinds)
            record(f"skopeo {name} target-requests", **d_kinds)
            return res

        log(f"[skopeo] fan-in: {len(payloads)} messages")
        results["s_fanin"] = glue_phase("fan-in", payloads)
        bad = verify_target(dst_s, fanin)
        if bad:
            anomalies.append("skopeo fan-in: wrong target digests: " + "; ".join(bad[:5]))
        log(f"[skopeo] no-op: {len(payloads)} messages")
        results["s_noop"] = glue_phase("no-op", payloads)
        log(f"[skopeo] latency: {len(lat)} messages, {args.latency_gap} s apart")
        results["s_lat"] = glue_phase("latency", lat_payloads, one_at_a_time=True)
        bad = verify_target(dst_s, lat)
        if bad:
            anomalies.append("skopeo latency: wrong target digests: " + "; ".join(bad[:5]))
        glue.stop()
        left = ps.peek_count("glue-sub")
        if left:
            anomalies.append(f"skopeo glue: {left} messages left in its subscription")
    except Abort as e:
        anomalies.append(f"ABORTED: {e}")
        results = None
    finally:
        cleanup()
        shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - t_script
    report(args, raw, results, anomalies, elapsed)
    return 1 if anomalies else 0


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def report(args, raw, results, anomalies, elapsed):
    out = []
    out.append(f"# regrelay daemon benchmark, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet"], capture_output=True).returncode != 0
    out.append(f"# git: {git or 'unknown'}{' (dirty worktree)' if dirty else ''}")
    if os.environ.get("REGRELAY_BIN"):
        out.append(f"# binary: {args.regrelay} (REGRELAY_BIN: not built from this tree; "
                   f"{os.environ.get('BENCH_BINARY_NOTE', 'source not recorded')})")
    changed = []
    if not os.environ.get("REGRELAY_BIN"):
        changed = subprocess.run(["git", "status", "--short", "--", "src", "Cargo.toml", "Cargo.lock"],
                                 capture_output=True, text=True).stdout.split("\n")
        changed = [c.strip() for c in changed if c.strip()]
    if changed:
        out.append(f"# uncommitted changes built into the binary: {'; '.join(changed)}")
    ver = subprocess.run([args.regrelay, "version"], capture_output=True, text=True).stdout.strip()
    sk = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    reg = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.strip()
    out.append(f"# {ver} | {sk} | {reg} | cpu={_cpu_model()}")
    out.append(f"# nproc={os.cpu_count()} messages={args.messages} digests={args.digests} repos={args.repos} "
               f"order={args.dup_order} workers={args.workers} latency_n={args.latency_n} "
               f"gap={args.latency_gap}s image=config+{args.base_size}B repo base+{args.layer_size}B own layer")
    out.append(f"# script wall: {elapsed:.0f} s")
    out.extend(raw)
    out.append("")
    if results:
        rf, rn, rl = results["r_fanin"], results["r_noop"], results["r_lat"]
        sf, sn, sl = results["s_fanin"], results["s_noop"], results["s_lat"]
        n = args.messages
        ratio = lambda a, b: f"{a / b:.3f}" if b else "inf"  # noqa: E731
        rows = [
            ("fan-in drain (s)", f"{rf['drain_s']:.2f}", f"{sf['drain_s']:.2f}", ratio(rf["drain_s"], sf["drain_s"])),
            ("fan-in copies", f"{rf['copies_replicated']} replicated",
             f"{sf['invocations']} runs, {sf['manifest_puts']} manifest PUTs", ""),
            ("fan-in blobs uploaded/mounted", f"{rf['blobs_uploaded']}/{rf['blobs_mounted']}",
             f"{sf['blob_uploads']}/{sf['blob_mounts']}", ""),
            ("fan-in dedup hits (in-flight/recent)", f"{rf['dedup_in_flight']}/{rf['dedup_recent']}", "-", ""),
            ("fan-in registry requests (src+dst)", f"{rf['registry_requests']}",
             f"{sf['access_log_source'] + sf['access_log_target']}",
             ratio(rf["registry_requests"], sf["access_log_source"] + sf["access_log_target"])),
            ("fan-in CPU s (tool/src reg/dst reg)",
             f"{rf['cpu_regrelay_s']}/{rf['cpu_source_registry_s']}/{rf['cpu_target_registry_s']}",
             f"{sf['cpu_skopeo_s']}/{sf['cpu_source_registry_s']}/{sf['cpu_target_registry_s']}", ""),
            ("fan-in Pub/Sub emulator CPU s", f"{rf['cpu_emulator_s']}", f"{sf['cpu_emulator_s']}", ""),
            ("peak RSS (MiB)", f"{rf['vmhwm_kib'] / 1024:.1f} (daemon, VmHWM)",
             f"{sf['skopeo_rss_max_kib'] / 1024:.1f} max, {sf['skopeo_rss_median_kib'] / 1024:.1f} median per run",
             ""),
            ("no-op drain (s)", f"{rn['drain_s']:.2f}", f"{sn['drain_s']:.2f}", ratio(rn["drain_s"], sn["drain_s"])),
            ("no-op requests per message", f"{rn['registry_requests'] / n:.2f}",
             f"{(sn['access_log_source'] + sn['access_log_target']) / n:.2f}",
             ratio(rn["registry_requests"], sn["access_log_source"] + sn["access_log_target"])),
            ("no-op copies", f"{rn['copies_replicated']} more (total {rf['copies_replicated'] + rn['copies_replicated']})",
             f"{sn['manifest_puts']} manifest PUTs", ""),
            ("latency p50 (ms)", f"{rl['latency_p50_ms']}", f"{sl['latency_p50_ms']}",
             ratio(rl["latency_p50_ms"], sl["latency_p50_ms"])),
            ("latency p99 (ms)", f"{rl['latency_p99_ms']}", f"{sl['latency_p99_ms']}",
             ratio(rl["latency_p99_ms"], sl["latency_p99_ms"])),
        ]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows + [("", "regrelay")])
        w2 = max(len(r[2]) for r in rows + [("", "", "skopeo glue")])
        out.append(f"{'':{w0}}  {'regrelay':>{w1}}  {'skopeo glue':>{w2}}  ratio")
        for r in rows:
            out.append(f"{r[0]:{w0}}  {r[1]:>{w1}}  {r[2]:>{w2}}  {r[3]}")
        out.append("")
    if anomalies:
        out.append("ANOMALIES:")
        out.extend(f"- {a}" for a in anomalies)
    else:
        out.append("no anomalies")
    text = "\n".join(out) + "\n"
    path = os.path.join(args.out, "daemon-results.txt")
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print(f"raw results: {path}")


if __name__ == "__main__":
    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        sys.exit(main())
    except BaseException:
        cleanup()
        raise
