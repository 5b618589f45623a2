"""The session cache: revocation -> drop delay, and HTTP throughput bare / cache off / cache on.

``python -m bench.session_cache [--revocations N] [--rounds R] [--seconds S] [--json]``

1. Propagation: a worker holds N cached sessions; another process revokes them one by one with
   ``bastion.sync.sessions.revoke`` and notes the moment its reply came (CLOCK_MONOTONIC, shared
   by the processes); the worker notes when its listener dropped the entry. Negative: dropped
   before the revoker had its reply.
2. HTTP: uvicorn (one worker; httptools and uvloop when installed) serving a bare Starlette
   app, the same app behind Bastion with the cache off, and with it on; a load generator in
   another process keeps 32 keep-alive connections busy for S seconds per row, rows
   interleaved over R rounds. Reported: requests per second, the ratio to bare in the same
   round (median over rounds), and the server's CPU time per request (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from tests.redis_server import RedisServer, free_port

COOKIE = "__Host-bastion_session"
MODES = ("bare", "off", "tracking")

REVOKER = """
import sys, time
from bastion import Bastion, Settings
b = Bastion(Settings(redis_url=sys.argv[1]))
for line in sys.stdin:
    user, sid = line.split()
    b.sync.sessions.revoke(user, sid)
    print(time.monotonic(), flush=True)
"""


async def propagation(url: str, count: int) -> dict[str, float]:
    """Revocation (by another process) -> entry dropped, over ``count`` revocations."""
    from bastion import Bastion, Settings
    from bastion.sessions import keys

    bastion = Bastion(Settings(redis_url=url, session_cache="tracking"))
    cache = bastion._session_cache
    assert cache is not None
    dropped: dict[str, float] = {}
    invalidated = cache._invalidated

    def noting(node: Any, names: list[Any]) -> None:
        invalidated(node, names)
        now = time.monotonic()
        for name in names:
            dropped.setdefault(name.decode() if isinstance(name, bytes) else name, now)

    cache._invalidated = noting  # type: ignore[method-assign]
    news = [await bastion.sessions.create(f"user{i}") for i in range(count)]
    while bastion.session_cache_stats().state != "live":
        await asyncio.sleep(0.01)
    assert await cache.caught_up()
    for new in news:
        await bastion.sessions.authenticate(new.token)
    revoker = subprocess.Popen(
        [sys.executable, "-c", REVOKER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert revoker.stdin is not None and revoker.stdout is not None
    delays = []
    for new in news:
        key = keys.sessions("bastion", new.session.user_id)
        assert key in cache._entries, "not cached before its revocation"
        dropped.pop(key, None)
        revoker.stdin.write(f"{new.session.user_id} {new.session.id}\n")
        revoker.stdin.flush()
        replied = float(await asyncio.to_thread(revoker.stdout.readline))
        while key not in dropped:
            await asyncio.sleep(0)
        delays.append((dropped[key] - replied) * 1e6)
    revoker.stdin.close()
    revoker.wait()
    await bastion.aclose()
    delays.sort()
    return {
        "revocations": count,
        "p50_us": round(statistics.median(delays), 1),
        "p90_us": round(delays[int(0.9 * len(delays))], 1),
        "p99_us": round(delays[int(0.99 * len(delays))], 1),
        "max_us": round(delays[-1], 1),
        "dropped_before_reply": round(sum(d < 0 for d in delays) / len(delays), 3),
    }


def serve(mode: str, port: int, url: str) -> None:
    """The server process of one row."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bastion import Bastion, Settings

    async def me(request: Request) -> PlainTextResponse:
        user = request.scope.get("user")
        return PlainTextResponse(getattr(user, "identity", "") or "ok")

    app: Any = Starlette(routes=[Route("/me", me)])
    if mode != "bare":
        app = Bastion(Settings(redis_url=url, session_cache=mode)).asgi(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


LOAD = """
import asyncio, sys, time
port, token, seconds, conns = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
request = (f"GET /me HTTP/1.1\\r\\nHost: localhost\\r\\n"
           f"Cookie: __Host-bastion_session={token}\\r\\n\\r\\n").encode()
done = 0
bad = 0
async def one(until):
    global done, bad
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < until:
        writer.write(request)
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            bad += 1
        done += 1
    writer.close()
async def main():
    until = time.monotonic() + seconds
    await asyncio.gather(*(one(until) for _ in range(conns)))
asyncio.run(main())
print(done, bad)
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_row(mode: str, url: str, token: str, seconds: float) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.session_cache", "--serve", mode, str(port), url]
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        load = [sys.executable, "-c", LOAD, str(port), token]
        subprocess.run([*load, "1", "32"], check=True, capture_output=True)  # warm-up
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            [*load, str(seconds), "32"], check=True, capture_output=True, text=True
        ).stdout.split()
        cpu = cpu_seconds(server.pid) - before
        done, bad = int(out[0]), int(out[1])
        if bad:
            raise RuntimeError(f"{mode}: {bad} answers were not 200")
        return {"rps": done / seconds, "cpu_us": cpu / done * 1e6}
    finally:
        server.terminate()
        server.wait()


def http(url: str, rounds: int, seconds: float) -> dict[str, Any]:
    import redis

    from bastion import Bastion, Settings

    bastion = Bastion(Settings(redis_url=url))
    token = bastion.sync.sessions.create("bench").token
    bastion.close()
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            rows[mode].append(http_row(mode, url, token, seconds))
    client = redis.Redis.from_url(url)
    client.close()
    out: dict[str, Any] = {}
    for mode in MODES:
        ratios = [r["rps"] / b["rps"] for r, b in zip(rows[mode], rows["bare"], strict=True)]
        out[mode] = {
            "rps": round(statistics.median(r["rps"] for r in rows[mode])),
            "x_bare": round(statistics.median(ratios), 3),
            "cpu_us_per_request": round(statistics.median(r["cpu_us"] for r in rows[mode]), 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revocations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    server = RedisServer().start()
    try:
        results = {
            "propagation": asyncio.run(propagation(server.url, args.revocations)),
            "http": http(server.url, args.rounds, args.seconds),
        }
    finally:
        server.cleanup()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    p = results["propagation"]
    print(f"revocation -> drop over {p['revocations']} revocations by another process:")
    print(
        f"  p50 {p['p50_us']} µs, p90 {p['p90_us']} µs, p99 {p['p99_us']} µs, max {p['max_us']} µs;"
        f" dropped before the revoker's reply: {p['dropped_before_reply']:.0%}"
    )
    print("HTTP, uvicorn one worker, 32 keep-alive connections, session cookie on /me:")
    print(f"  {'row':<22}{'req/s':>8}{'x bare':>9}{'CPU µs/req':>12}")
    names = {"bare": "bare Starlette", "off": "Bastion, cache off", "tracking": "Bastion, cache on"}
    for mode in MODES:
        row = results["http"][mode]
        cpu = row["cpu_us_per_request"]
        print(f"  {names[mode]:<22}{row['rps']:>8}{row['x_bare']:>9.3f}{cpu:>12}")


if __name__ == "__main__":
    main()
