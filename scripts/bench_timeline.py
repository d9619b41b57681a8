#!/usr/bin/env python3
"""Timeline and sequential round trips of one image's copy, from registry request logs.

    python3 scripts/bench_timeline.py --source LOG --target LOG --src-repo bench/b/img7 \
        --dst-repo r/bench/b/img7 [--rtt-ms 50]

Reads the JSON request logs that `BENCH_REGISTRY_LOGS=1 scripts/bench.sh` keeps
(distribution's "response completed" lines: completion time in ns and duration), takes the
requests whose path names the given repositories (plus `/v2/` pings), and prints them in
order of start time, with the connection they came on (the proxy's upstream port: one per
client connection) and the "wave" each belongs to.

Waves: a request starts a new wave when it starts at least half a round trip after the end of
the latest request of the previous wave that ended before it, i.e. it was sent after an answer
came back; requests that start together (within half a round trip) share a wave. The number of
waves is the number of sequential round trips on the critical path, as seen by the registries
(with one delay proxy per registry, a dependent request arrives one RTT after the answer it
waited for left). A new connection costs one more RTT before its first request, which the
logs do not show; the summary counts the connections.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re


def parse_duration(text):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text)
    if not m:
        return 0.0
    scale = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_time(text):
    # 2026-12-01T22:56:54.943975129Z: keep microseconds.
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    base = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc)
    frac = float("0." + (m.group(2) or "0"))
    return base.timestamp() + frac


def load(path, label, repo):
    out = []
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            uri = e.get("http.request.uri")
            if not uri or not e.get("msg", "").startswith("response completed"):
                continue
            path_only = uri.split("?")[0]
            if not (path_only == "/v2/" or path_only.startswith(f"/v2/{repo}/")):
                continue
            end = parse_time(e["time"])
            dur = parse_duration(e.get("http.response.duration", "0s"))
            out.append({
                "reg": label,
                "method": e.get("http.request.method"),
                "uri": uri,
                "status": e.get("http.response.status"),
                "start": end - dur,
                "end": end,
                "conn": e.get("http.request.remoteaddr", "?").rsplit(":", 1)[-1],
                "ua": e.get("http.request.useragent", ""),
            })
    return out


def short(uri, repo):
    uri = uri.replace(f"/v2/{repo}/", "…/")
    uri = re.sub(r"sha256:([0-9a-f]{8})[0-9a-f]{56}", r"sha256:\1", uri)
    uri = re.sub(r"(uploads/)([0-9a-f-]{8})[0-9a-f-]{28}", r"\1\2", uri)
    uri = re.sub(r"_state=[^&]*", "_state=…", uri)
    return uri


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--src-repo", required=True)
    p.add_argument("--dst-repo", required=True)
    p.add_argument("--rtt-ms", type=float, default=50.0)
    p.add_argument("--agent", default="", help="only requests whose User-Agent contains this")
    a = p.parse_args()
    reqs = load(a.source, "src", a.src_repo) + load(a.target, "dst", a.dst_repo)
    reqs = [r for r in reqs if a.agent in r["ua"]]
    if not reqs:
        raise SystemExit("no requests for these repositories")
    # The copy's window: from 1 s before the first request to the target repository (the
    # source manifest GET and pings come shortly before it; seeding the source, long before)
    # to 1.5 RTT after the last manifest PUT (a read-back GET follows one RTT later; the next
    # skopeo run's HEADs of this repository's blobs, as mount candidates, come later still).
    rtt = a.rtt_ms / 1000
    dst = [r for r in reqs if r["reg"] == "dst" and r["uri"] != "/v2/"]
    puts = [r for r in dst if r["method"] == "PUT" and "/manifests/" in r["uri"]]
    if not dst or not puts:
        raise SystemExit("no manifest PUT to the target repository")
    lo = min(r["start"] for r in dst) - 1.0
    hi = max(r["end"] for r in puts) + 1.5 * rtt
    named = [r for r in reqs if r["uri"] != "/v2/" and lo <= r["start"] <= hi]
    # /v2/ pings are not per repository: keep those from half a second before the first
    # request of the image on.
    first = min(r["start"] for r in named)
    reqs = [r for r in reqs if lo <= r["start"] <= hi and (r["uri"] != "/v2/" or r["start"] >= first - 0.5)]
    reqs.sort(key=lambda r: r["start"])
    half = a.rtt_ms / 2000
    wave, wave_start = 0, None
    for r in reqs:
        if wave_start is None or r["start"] - wave_start > half:
            # Sent after some answer came back: a new wave.
            wave, wave_start = wave + 1, r["start"]
        r["wave"] = wave
    t0 = reqs[0]["start"]
    print(f"{'wave':>4} {'start ms':>9} {'dur ms':>8} reg conn  status method uri")
    for r in reqs:
        repo = a.src_repo if r["reg"] == "src" else a.dst_repo
        print(f"{r['wave']:>4} {(r['start'] - t0) * 1000:>9.1f} {(r['end'] - r['start']) * 1000:>8.1f} "
              f"{r['reg']} {r['conn']:>5} {r['status']:>4} {r['method']:<6} {short(r['uri'], repo)}")
    conns = {(r["reg"], r["conn"]) for r in reqs}
    span = (max(r["end"] for r in reqs) - t0) * 1000
    print(f"\n{len(reqs)} requests in {wave} waves (sequential round trips seen at the registries), "
          f"{len(conns)} connections, {span:.0f} ms from first request start to last request end")


if __name__ == "__main__":
    main()
