#!/usr/bin/env python3
"""Check scripts/wan_proxy.py against a registry: delay, concurrency and throughput.

    python3 scripts/check_wan_proxy.py --registry 127.0.0.1:PORT --blob REPO@sha256:... \
        [--delay-ms 25] [--connections 1,20,100]

Starts its own proxies (delay 0 and --delay-ms) on free loopback ports and measures:

1. latency: GET /v2/ on a new connection (expected 4 x delay: handshake RTT + request RTT)
   and on a kept-alive one (2 x delay), for N concurrent connections at once; if the proxy
   serialised connections, the slowest of N would take N times as long.
2. throughput: the blob downloaded with curl directly, through the proxy with delay 0
   (the proxy's own cost) and with --delay-ms (the delay must not cap the rate).

Run it where nothing else loads the CPU; the numbers include the registry's own time.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

NICE = ["nice", "-n", os.environ.get("WAN_PROXY_NICE", "0")]
HERE = os.path.dirname(os.path.abspath(__file__))


def start_proxy(upstream, delay_ms, connect_rtts):
    fd, ready = tempfile.mkstemp()
    os.close(fd)
    os.unlink(ready)
    proc = subprocess.Popen(NICE + [
        sys.executable, os.path.join(HERE, "wan_proxy.py"), "--listen", "127.0.0.1:0",
        "--upstream", upstream, "--delay-ms", str(delay_ms), "--connect-rtts", str(connect_rtts),
        "--ready-file", ready,
    ])
    for _ in range(100):
        if os.path.exists(ready):
            with open(ready) as f:
                port = int(f.read())
            os.unlink(ready)
            return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("proxy did not start")


async def get_v2(reader, writer, host):
    writer.write(f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)


async def one_conn(addr):
    host, port = addr.rsplit(":", 1)
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    await get_v2(reader, writer, addr)
    t1 = time.monotonic()
    await get_v2(reader, writer, addr)
    t2 = time.monotonic()
    writer.close()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


async def latency(addr, n):
    t0 = time.monotonic()
    res = await asyncio.gather(*(one_conn(addr) for _ in range(n)))
    first = sorted(r[0] for r in res)
    again = sorted(r[1] for r in res)
    return first[len(first) // 2], first[-1], again[len(again) // 2], again[-1], (time.monotonic() - t0) * 1000


def download(addr, blob):
    repo, digest = blob.split("@")
    out = subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
         f"http://{addr}/v2/{repo}/blobs/{digest}"],
        check=True, capture_output=True, text=True).stdout.split()
    secs, size = float(out[0]), int(out[1])
    return secs, size * 8 / secs / 1e6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--blob", required=True, help="REPO@sha256:... of a large blob")
    p.add_argument("--delay-ms", type=float, default=25)
    p.add_argument("--connections", default="1,20,100")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    p0, zero = start_proxy(a.registry, 0, 0)
    pd, delayed = start_proxy(a.registry, a.delay_ms, 1)
    try:
        print(f"latency, GET /v2/ (ms; median / max over connections); delay {a.delay_ms} ms: "
              f"expect {4 * a.delay_ms:.0f} on a new connection, {2 * a.delay_ms:.0f} kept alive")
        for label, addr in (("direct", a.registry), ("proxy delay 0", zero),
                            (f"proxy delay {a.delay_ms:g}", delayed)):
            for n in (int(x) for x in a.connections.split(",")):
                f50, fmax, k50, kmax, total = asyncio.run(latency(addr, n))
                print(f"  {label:<16} {n:>4} concurrent: new {f50:6.1f} / {fmax:6.1f}   "
                      f"kept alive {k50:6.1f} / {kmax:6.1f}   all done {total:6.0f}")
        print("throughput, one blob download with curl (s, Mbit/s), best of", a.repeat)
        for label, addr in (("direct", a.registry), ("proxy delay 0", zero),
                            (f"proxy delay {a.delay_ms:g}", delayed)):
            best = min((download(addr, a.blob) for _ in range(a.repeat)), key=lambda r: r[0])
            print(f"  {label:<16} {best[0]:6.2f} s  {best[1]:8.0f} Mbit/s")
    finally:
        p0.terminate()
        pd.terminate()
        p0.wait()
        pd.wait()


if __name__ == "__main__":
    main()
