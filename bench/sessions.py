"""Per-request cost of Bastion's session check, next to a bare Starlette app and its peers.

Every request is driven in-process: a fresh ASGI ``scope``, a ``receive`` that returns one
``http.request`` message and a ``send`` that only counts ``200`` responses, awaited in a tight
loop on asyncio. No HTTP server, no client library. Run with ``./scripts/bench`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.sessions import keys

ROOT = Path(__file__).resolve().parent.parent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Send], Awaitable[None]]
Loop = Callable[[int], Awaitable[None]]

TARGET_US = 25.0
"""Budget: Bastion may cost one Redis round trip plus this many µs over the bare app."""
USER = "alice"
SECRET_KEY = "bench-secret-key-not-for-production"  # noqa: S105

BASE_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "https",
    "path": "/me",
    "raw_path": b"/me",
    "query_string": b"",
    "root_path": "",
    "client": ("127.0.0.1", 1234),
    "server": ("testserver", 443),
}
REQUEST_MESSAGE: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return REQUEST_MESSAGE


def make_scope(path: str = "/me", cookie: bytes | None = None) -> dict[str, Any]:
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return {**BASE_SCOPE, "path": path, "raw_path": path.encode(), "headers": headers}


# --- the app -------------------------------------------------------------------------------------


async def me(request: Request) -> PlainTextResponse:
    """Who the request is, as whichever layer in front of the app saw it."""
    if "user" in request.scope:  # Bastion
        who = request.user.identity or "guest"
    elif "session" in request.scope:  # Starlette's SessionMiddleware
        who = request.session.get("user", "guest")
    else:
        who = "anonymous"
    return PlainTextResponse(who)


async def login(request: Request) -> PlainTextResponse:
    """Used once, outside the timing, to get a signed SessionMiddleware cookie."""
    request.session["user"] = USER
    return PlainTextResponse("ok")


def make_app() -> Starlette:
    return Starlette(routes=[Route("/me", me), Route("/login", login)])


# --- one request, checked ------------------------------------------------------------------------


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


async def call_once(app: ASGIApp, scope: dict[str, Any]) -> Response:
    """One request with a send that keeps the response (outside the timed loops)."""
    response = Response()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")

    await app(dict(scope), receive, send)
    return response


@dataclass
class Case:
    """One ASGI app and the request sent to it, with the body the app must answer."""

    key: str
    name: str
    app: ASGIApp
    scope: dict[str, Any]
    expect_body: bytes
    ok: list[int] = field(default_factory=lambda: [0, 0])
    """[responses with status 200, responses with any other status] since the last reset."""

    def loop(self) -> Loop:
        app, template, counts = self.app, self.scope, self.ok

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    counts[0] += 1
                else:
                    counts[1] += 1

        async def run(n: int) -> None:
            for _ in range(n):
                await app(dict(template), receive, send)

        return run

    def check_counts(self, n: int) -> None:
        good, bad = self.ok
        if good != n or bad:
            raise SystemExit(
                f"{self.name}: {good} of {n} requests answered 200 ({bad} other statuses)"
            )
        self.ok[:] = [0, 0]

    async def check_body(self) -> None:
        response = await call_once(self.app, self.scope)
        if response.status != 200 or response.body != self.expect_body:
            raise SystemExit(
                f"{self.name}: expected 200 {self.expect_body!r}, "
                f"got {response.status} {response.body!r}"
            )


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class Result:
    key: str
    name: str
    rounds_us: list[float]
    redis_commands: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.rounds_us)


async def timed(loop: Loop, n: int) -> float:
    """µs per iteration of one round of ``n``."""
    gc.collect()
    start = time.perf_counter_ns()
    await loop(n)
    return (time.perf_counter_ns() - start) / n / 1000


async def redis_commands(admin: Any) -> int:
    info = await admin.info("stats")
    return int(info["total_commands_processed"])


async def commands_per_request(admin: Any, loop: Loop, n: int) -> float:
    """Redis commands a request causes: the server's command counter around ``n`` requests."""
    before = await redis_commands(admin)
    await loop(n)
    after = await redis_commands(admin)
    return (after - before - 1) / n  # the first INFO is counted too


async def pin_to_one_cpu(admin: Any) -> str:
    """Run this process and its redis-server on one CPU: the round trip is then a steady local
    context switch, where across CPUs (above all on VMs) it swings by tens of µs between runs."""
    if not hasattr(os, "sched_setaffinity"):
        return "off (not supported here)"
    cpu = min(os.sched_getaffinity(0))
    redis_pid = int((await admin.info("server"))["process_id"])
    os.sched_setaffinity(0, {cpu})
    os.sched_setaffinity(redis_pid, {cpu})
    return f"benchmark and redis-server pinned to CPU {cpu}"


async def bench(url: str, *, warmup: int, rounds: int, requests: int, pin: bool) -> dict[str, Any]:
    app = make_app()
    bastion = Bastion(Settings(redis_url=url))
    client = bastion.sessions.client  # Bastion's own redis.asyncio.Redis (pool, timeouts, retry)
    admin = redis.asyncio.Redis.from_url(url)
    try:
        pinning = await pin_to_one_cpu(admin) if pin else "off (--no-pin)"
        # Starlette's SessionMiddleware: log in once and keep the signed cookie it sets.
        starlette_sessions = SessionMiddleware(app, secret_key=SECRET_KEY)
        response = await call_once(starlette_sessions, make_scope("/login"))
        set_cookie = [v for k, v in response.headers if k == b"set-cookie"]
        if response.status != 200 or len(set_cookie) != 1:
            raise SystemExit(f"SessionMiddleware log-in failed: {response.status} {set_cookie}")
        starlette_cookie = set_cookie[0].split(b";", 1)[0]

        # Bastion: a real session in the real Redis.
        new = await bastion.sessions.create(USER)
        bastion_cookie = f"{bastion.settings.cookie_name}={new.token}".encode()
        bastion_app = bastion.asgi(app)
        session_key = keys.session(bastion.settings.key_prefix, USER, new.session.id)

        cases = [
            Case("bare", "bare Starlette", app, make_scope(), b"anonymous"),
            Case(
                "starlette_session",
                "Starlette SessionMiddleware, cookie",
                starlette_sessions,
                make_scope(cookie=starlette_cookie),
                USER.encode(),
            ),
            Case(
                "bastion_session",
                "Bastion, session cookie (Redis)",
                bastion_app,
                make_scope(cookie=bastion_cookie),
                USER.encode(),
            ),
            Case(
                "bastion_guest",
                "Bastion, guest (no credentials)",
                bastion_app,
                make_scope(),
                b"guest",
            ),
        ]

        async def ping_loop(n: int) -> None:
            for _ in range(n):
                await client.ping()

        async def hmget_loop(n: int) -> None:
            for _ in range(n):
                await client.hmget(session_key, "h", "e", "l")

        if await client.ping() is not True:
            raise SystemExit("Redis PING failed")
        if None in await client.hmget(session_key, "h", "e", "l"):
            raise SystemExit(f"HMGET {session_key}: the session hash is missing fields")

        loops: list[tuple[str, str, Loop, Case | None]] = [
            (c.key, c.name, c.loop(), c) for c in cases
        ]
        loops += [
            ("redis_ping", "Redis PING round trip", ping_loop, None),
            ("redis_hmget", "Redis HMGET round trip", hmget_loop, None),
        ]

        # Correctness first, outside the timing: status, body (the app saw alice), Redis traffic.
        results: dict[str, Result] = {}
        for key, name, loop, case in loops:
            result = Result(key, name, [])
            if case is not None:
                await case.check_body()
                probe = max(100, warmup // 4)
                result.redis_commands = await commands_per_request(admin, loop, probe)
                case.check_counts(probe)
            results[key] = result
        if round(results["bastion_session"].redis_commands or 0, 2) != 1:
            raise SystemExit("Bastion with a cookie should cost exactly one Redis command")
        for key in ("bare", "starlette_session", "bastion_guest"):
            if results[key].redis_commands:
                raise SystemExit(f"{results[key].name}: unexpected Redis traffic")

        for _key, _name, loop, case in loops:  # warm-up
            await loop(warmup)
            if case is not None:
                case.check_counts(warmup)
        for _ in range(rounds):  # rounds interleave the cases, so drift hits them all alike
            for key, _name, loop, case in loops:
                results[key].rounds_us.append(await timed(loop, requests))
                if case is not None:
                    case.check_counts(requests)
        for case in cases:  # the session is still valid at the end
            await case.check_body()
    finally:
        await admin.aclose()
        await client.aclose()
        bastion.sync_sessions.client.close()
    return summarize(results, warmup=warmup, rounds=rounds, requests=requests, pinning=pinning)


def summarize(
    results: dict[str, Result], *, warmup: int, rounds: int, requests: int, pinning: str
) -> dict[str, Any]:
    bare = results["bare"].median
    rows = []
    for r in results.values():
        http = r.redis_commands is not None
        rows.append(
            {
                "key": r.key,
                "name": r.name,
                "us_per_request": round(r.median, 2),
                "min_us": round(min(r.rounds_us), 2),
                "max_us": round(max(r.rounds_us), 2),
                "ratio_to_bare": round(r.median / bare, 2) if http else None,
                "overhead_us": round(r.median - bare, 2) if http else None,
                "redis_commands_per_request": round(r.redis_commands, 2) if http else None,
                "rounds_us": [round(x, 2) for x in r.rounds_us],
            }
        )
    overhead = results["bastion_session"].median - bare
    round_trip = results["redis_hmget"].median
    beyond = overhead - round_trip
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "event_loop": "asyncio",
        "cpu_pinning": pinning,
        "warmup": warmup,
        "rounds": rounds,
        "requests_per_round": requests,
        "rows": rows,
        "target": {
            "rule": f"Bastion (session cookie) overhead <= one Redis round trip + {TARGET_US:g} us",
            "bastion_overhead_us": round(overhead, 2),
            "redis_round_trip_us": round(round_trip, 2),
            "overhead_minus_round_trip_us": round(beyond, 2),
            "budget_us": TARGET_US,
            "within_target": beyond <= TARGET_US,
        },
    }


def render(summary: dict[str, Any]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"Bastion session benchmark: in-process ASGI on {summary['event_loop']}, "
        f"{summary['implementation']} {summary['python']}; median of {summary['rounds']} rounds "
        f"x {summary['requests_per_round']} requests (after {summary['warmup']} warm-up)",
        f"CPU: {summary['cpu_pinning']}",
        "",
        f"{'case':<38}{'us/req':>9}{'x bare':>8}{'+us vs bare':>13}"
        f"{'redis cmds/req':>16}{'rounds min..max':>20}",
    ]
    lines.append("-" * len(lines[-1]))
    for row in summary["rows"]:
        spread = f"{row['min_us']:.1f}..{row['max_us']:.1f}"
        lines.append(
            f"{row['name']:<38}{row['us_per_request']:>9.1f}{num(row['ratio_to_bare'], '.2f'):>8}"
            f"{num(row['overhead_us'], '+.1f'):>13}"
            f"{num(row['redis_commands_per_request'], '.2f'):>16}{spread:>20}"
        )
    t = summary["target"]
    verdict = "WITHIN target" if t["within_target"] else "NOT within target"
    lines += [
        "",
        f"Bastion overhead (session cookie) {t['bastion_overhead_us']:.1f} us"
        f" - one Redis round trip (HMGET) {t['redis_round_trip_us']:.1f} us"
        f" = {t['overhead_minus_round_trip_us']:.1f} us;"
        f" target: one Redis round trip + {t['budget_us']:g} us -> {verdict}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./scripts/bench",
        description="µs per request of Bastion's session check vs bare Starlette, in-process ASGI.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke test")
    parser.add_argument("--rounds", type=int, help="timed rounds per case (default 7, quick 3)")
    parser.add_argument("--requests", type=int, help="requests per round (default 4000, quick 300)")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the benchmark and its redis-server to one CPU (noisier round trips)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    requests = args.requests or (300 if args.quick else 4000)
    warmup = 200 if args.quick else 2000
    if rounds < 1 or requests < 1:
        parser.error("--rounds and --requests must be positive")

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    server = RedisServer()
    try:
        server.start()
        summary = asyncio.run(
            bench(server.url, warmup=warmup, rounds=rounds, requests=requests, pin=not args.no_pin)
        )
    finally:
        server.cleanup()
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
