#!/usr/bin/env python3
"""TCP proxy that adds a fixed one-way delay to both directions of every connection.

Used by `scripts/bench.sh --profile wan` to put a registry "far away" from the tools:

    python3 scripts/wan_proxy.py --listen 127.0.0.3:PORT --upstream 127.0.0.1:REGPORT \
        --delay-ms 25 [--connect-rtts 1] [--ready-file FILE]

How the delay is applied (per connection, per direction, independently):

- every chunk read from one side is stamped with `arrival + delay` and put in that
  direction's queue; a timer writes each chunk to the other side when its time has come, in
  arrival order. Reading continues while earlier chunks wait, so the delay adds latency but
  does not turn into a bandwidth cap (the bytes in flight are delay x rate, like a real link).
- concurrent connections never wait on each other: each has its own queues and timers on
  one asyncio event loop, and nothing sleeps.
- a new connection pays the TCP handshake: the client's first bytes reach the upstream no
  earlier than `accept + connect_rtts x 2 x delay + delay` (default one round trip, as for
  plain TCP; 2 would model TLS 1.3 on top). The local connect() itself returns at once.
- end of stream (FIN) and close travel through the same queue, so they arrive delayed and
  after the data before them; a reset closes the other side after the data queued so far.
- backpressure: a direction stops reading when more than --max-buffer bytes wait in its
  queue or the other side's socket buffer is full, and resumes when both have drained.

Bandwidth is not limited here: bench.sh shapes the traffic with a `tbf` qdisc on the
namespace's loopback device. Listens and connects on loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import os
import signal
import sys

EOF = object()  # queue marker: half-close the other side
CLOSE = object()  # queue marker: close the other side


class Direction:
    """One direction of one connection: a delay queue feeding `dst` from `src`."""

    def __init__(self, loop, delay, max_buffer, not_before=0.0):
        self.loop = loop
        self.delay = delay
        self.max_buffer = max_buffer
        self.not_before = not_before
        self.queue = collections.deque()  # (due, bytes | EOF | CLOSE)
        self.queued = 0
        self.timer = None
        self.src = None  # transport we read from
        self.dst = None  # transport we write to (None until the upstream is connected)
        self.dst_paused = False  # dst's write buffer is above its high-water mark
        self.reading_paused = False
        self.done = False

    def push(self, item):
        due = max(self.loop.time() + self.delay, self.not_before)
        self.queue.append((due, item))
        if isinstance(item, bytes):
            self.queued += len(item)
        self._schedule()
        self._backpressure()

    def _schedule(self):
        if self.timer is not None or not self.queue or self.dst is None or self.done:
            return
        due = self.queue[0][0]
        if due <= self.loop.time():
            self.timer = self.loop.call_soon(self._flush)
        else:
            self.timer = self.loop.call_at(due, self._flush)

    def _flush(self):
        self.timer = None
        # Write everything that is due (within 0.5 ms: timer granularity) in one go.
        horizon = self.loop.time() + 0.0005
        chunks = []
        while self.queue and self.queue[0][0] <= horizon:
            _, item = self.queue.popleft()
            if isinstance(item, bytes):
                chunks.append(item)
                self.queued -= len(item)
                continue
            self._write(chunks)
            chunks = []
            if item is EOF:
                if not self.dst.is_closing() and self.dst.can_write_eof():
                    self.dst.write_eof()
            else:
                self.dst.close()
                self.done = True
                self.queue.clear()
                return
        self._write(chunks)
        self._schedule()
        self._backpressure()

    def _write(self, chunks):
        if chunks and not self.dst.is_closing():
            self.dst.writelines(chunks)

    def attach(self, dst):
        self.dst = dst
        self._schedule()

    def _backpressure(self):
        if self.src is None or self.src.is_closing():
            return
        full = self.queued > self.max_buffer or self.dst_paused
        if full and not self.reading_paused:
            self.src.pause_reading()
            self.reading_paused = True
        elif not full and self.reading_paused and self.queued <= self.max_buffer // 2:
            self.src.resume_reading()
            self.reading_paused = False

    def set_dst_paused(self, paused):
        self.dst_paused = paused
        self._backpressure()


class Side(asyncio.Protocol):
    """One socket of a proxied connection: what it reads goes into `out`, and `into` is the
    direction that writes to it (for pause_writing/resume_writing)."""

    def __init__(self, out: Direction, into: Direction, on_made=None):
        self.out = out
        self.into = into
        self.on_made = on_made

    def connection_made(self, transport):
        self.out.src = transport
        if self.on_made is not None:
            self.on_made(transport)

    def data_received(self, data):
        self.out.push(data)

    def eof_received(self):
        self.out.push(EOF)
        return True  # keep our side open: the other direction may still be sending

    def connection_lost(self, exc):
        self.out.push(CLOSE)

    def pause_writing(self):
        self.into.set_dst_paused(True)

    def resume_writing(self):
        self.into.set_dst_paused(False)


def serve(args):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    delay = args.delay_ms / 1000.0
    up_host, up_port = args.upstream
    tasks = set()  # keeps the pending upstream connects alive

    def new_client():
        handshake = loop.time() + args.connect_rtts * 2 * delay
        c2u = Direction(loop, delay, args.max_buffer, not_before=handshake + delay)
        u2c = Direction(loop, delay, args.max_buffer)

        def client_made(client):
            u2c.attach(client)

            async def connect_upstream():
                try:
                    await loop.create_connection(
                        lambda: Side(u2c, c2u, on_made=c2u.attach),
                        up_host,
                        up_port,
                        local_addr=("127.0.0.1", 0),
                    )
                except OSError as e:
                    print(f"wan_proxy: upstream {up_host}:{up_port}: {e}", file=sys.stderr)
                    client.close()

            task = loop.create_task(connect_upstream())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        return Side(c2u, u2c, on_made=client_made)

    server = loop.run_until_complete(
        loop.create_server(new_client, args.listen[0], args.listen[1], reuse_address=True)
    )
    port = server.sockets[0].getsockname()[1]
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.ready_file)
    else:
        print(port, flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    loop.run_forever()
    server.close()


def loopback_addr(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    if not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address")
    return host, int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=loopback_addr, required=True, help="HOST:PORT (port 0: any)")
    p.add_argument("--upstream", type=loopback_addr, required=True, help="HOST:PORT")
    p.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay (default 25)")
    p.add_argument("--connect-rtts", type=int, default=1,
                   help="round trips a new connection costs before data flows (default 1)")
    p.add_argument("--max-buffer", type=int, default=16 << 20,
                   help="bytes queued per direction before reading pauses (default 16 MiB)")
    p.add_argument("--ready-file", help="write the bound port here instead of stdout")
    args = p.parse_args()
    if args.delay_ms < 0 or args.connect_rtts < 0:
        p.error("--delay-ms and --connect-rtts must not be negative")
    serve(args)


if __name__ == "__main__":
    main()
