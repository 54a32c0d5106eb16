#!/usr/bin/env python3
"""Streaming latency through credproxy against the upstream directly (issue 16, item 8).

Two cases, each measured direct and through credproxy, interleaved round by round
(direct, credproxy, direct, ...) so drift on the machine hits both alike:

  sse  Server-Sent Events: the upstream writes one event every --gap ms, each carrying
       the CLOCK_MONOTONIC time it was written; the client notes when it arrived. The
       latency of an event is arrival - write; "added" is credproxy's median minus the
       direct median (target: <= 1 ms).
  ws   WebSocket echo: a `websockets` client sends a 32-byte text frame and waits for
       the echo, one at a time; "added" is the round trip's median through credproxy
       minus the direct one (target: <= 1 ms).

The upstream (plain HTTP, a raw asyncio SSE server and a `websockets` echo server) runs
in a process of its own, the client in this one; credproxy is the binary given with
--credproxy, started here with a static provider and a route listener per case (a base
URL, as an SDK would use it). Everything is on 127.0.0.1 with free ports, under a temp
directory removed at the end. Prints one JSON object with the medians, p99s and the added
latency per case.

usage: bench/stream_latency.py [--credproxy BIN] [--rounds N] [--events N] [--gap MS]
                               [--echoes N] [--check]

  --check  a few events and echoes, one round: checks that everything starts and
           connects (not a measurement).

Needs python3 with `websockets` (pip install websockets). Run it on a quiet machine.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-static-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the upstream (own process) ----------------------------------------------------------


async def sse_conn(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    target = head.split(b" ")[1].decode()
    params = dict(p.split("=") for p in target.partition("?")[2].split("&") if "=" in p)
    n, gap = int(params.get("n", "10")), int(params.get("gap", "20")) / 1000
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    await writer.drain()
    for i in range(n):
        await asyncio.sleep(gap)
        event = b"id: %d\ndata: %d\n\n" % (i, time.monotonic_ns())
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    writer.close()


def upstream_main(sse_port, ws_port, ready):
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async def main():
        sse = await asyncio.start_server(sse_conn, "127.0.0.1", sse_port)
        async with sse, serve(echo, "127.0.0.1", ws_port, compression=None):
            ready.set()
            await asyncio.Future()

    asyncio.run(main())


# --- credproxy ---------------------------------------------------------------------------

CONFIG = """
[proxy]
listen = "127.0.0.1:{main}"
admin_listen = "127.0.0.1:{admin}"
state_dir = "{work}/state"

[providers.sse]
preset = "static"
hosts = ["127.0.0.1:{sse}"]
upstream = "http://127.0.0.1:{sse}"   # plain-HTTP upstream: allowed for benchmarks and tests
token = "{token}"

[providers.ws]
preset = "static"
hosts = ["127.0.0.1:{ws}"]
upstream = "http://127.0.0.1:{ws}"
token = "{token}"

[[routes]]
listen = "127.0.0.1:{sse_route}"
provider = "sse"

[[routes]]
listen = "127.0.0.1:{ws_route}"
provider = "ws"
"""


def start_credproxy(binary, work, ports):
    path = os.path.join(work, "credproxy.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(work=work, token=TOKEN, **ports))
    log = open(os.path.join(work, "credproxy.log"), "w")
    env = dict(os.environ, CREDPROXY_LOG="warn")
    proc = subprocess.Popen([binary, "run", "--config", path], stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"credproxy exited: see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/readyz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("credproxy did not become ready within 30 s")


# --- the client --------------------------------------------------------------------------


async def sse_round(port, n, gap):
    """Latencies (ns) of n events read from http://127.0.0.1:port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /events?n=%d&gap=%d HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
        b"accept: text/event-stream\r\n\r\n" % (n, gap, port)
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    latencies, pending = [], b""
    while len(latencies) < n:
        data = await reader.read(65536)
        now = time.monotonic_ns()
        if not data:
            break
        pending += data
        while b"data: " in pending:
            start = pending.index(b"data: ") + 6
            end = pending.find(b"\n", start)
            if end < 0:
                break
            latencies.append(now - int(pending[start:end]))
            pending = pending[end:]
    writer.close()
    return latencies


async def ws_round(port, echoes):
    """Round trips (ns) of `echoes` 32-byte frames on ws://127.0.0.1:port."""
    from websockets.asyncio.client import connect

    rtts, msg = [], "x" * 32
    async with connect(f"ws://127.0.0.1:{port}/echo", proxy=None, compression=None) as ws:
        for _ in range(echoes):
            t = time.monotonic_ns()
            await ws.send(msg)
            await ws.recv()
            rtts.append(time.monotonic_ns() - t)
    return rtts


def summary(samples):
    s = sorted(samples)
    return {
        "n": len(s),
        "median_ms": statistics.median(s) / 1e6,
        "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] / 1e6,
    }


async def measure(args, ports):
    results = {"sse": {"direct": [], "credproxy": []}, "ws": {"direct": [], "credproxy": []}}
    targets = {
        "sse": {"direct": ports["sse"], "credproxy": ports["sse_route"]},
        "ws": {"direct": ports["ws"], "credproxy": ports["ws_route"]},
    }
    for _ in range(args.rounds):
        for who in ("direct", "credproxy"):
            results["sse"][who] += await sse_round(targets["sse"][who], args.events, args.gap)
            results["ws"][who] += await ws_round(targets["ws"][who], args.echoes)
    out = {}
    for case, by in results.items():
        d, c = summary(by["direct"]), summary(by["credproxy"])
        out[case] = {
            "direct": d,
            "credproxy": c,
            "added_median_ms": c["median_ms"] - d["median_ms"],
        }
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--credproxy", default=os.environ.get("CREDPROXY_BIN", "target/release/credproxy"))
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--events", type=int, default=100, help="SSE events per round")
    p.add_argument("--gap", type=int, default=20, help="ms between SSE events")
    p.add_argument("--echoes", type=int, default=1000, help="WebSocket echoes per round")
    p.add_argument("--check", action="store_true", help="start everything, measure nothing")
    args = p.parse_args()
    if args.check:
        args.rounds, args.events, args.gap, args.echoes = 1, 3, 5, 3
    if not os.access(args.credproxy, os.X_OK):
        sys.exit(f"no credproxy binary at {args.credproxy}: cargo build --release, or --credproxy BIN")
    names = ["main", "admin", "sse", "ws", "sse_route", "ws_route"]
    ports = {n: free_port() for n in names}
    ready = multiprocessing.Event()
    upstream = multiprocessing.Process(
        target=upstream_main, args=(ports["sse"], ports["ws"], ready), daemon=True
    )
    upstream.start()
    if not ready.wait(30):
        sys.exit("the upstream did not start")
    with tempfile.TemporaryDirectory(prefix="credproxy-stream-bench-") as work:
        proxy = start_credproxy(args.credproxy, work, ports)
        try:
            out = asyncio.run(measure(args, ports))
        finally:
            proxy.terminate()
            proxy.wait(10)
            upstream.terminate()
    if args.check:
        # Not a measurement: only that every path answered.
        counts = {case: out[case]["credproxy"]["n"] + out[case]["direct"]["n"] for case in ("sse", "ws")}
        print(json.dumps({"check": "ok", "samples": counts}))
        return
    out["machine"] = {"cpus": os.cpu_count()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
