"""One side of ``./scripts/bench sessions --against REV``: Bastion's own work, timed on request.

Run as a script by :mod:`bench.against`, with ``PYTHONPATH`` naming the source tree whose
``bastion`` it imports (this working tree's, or a checked-out older revision's). It imports
nothing else of Bastion's beyond the API every revision has (``Bastion``, ``Settings``, the
stores' ``create``, ``jwt.mint``), so the same measuring code runs against both.

Protocol: the settings as JSON in ``argv[1]`` (``"collect": false``: no collection before a
timed command, only after ``record``); the worker answers ``{"ready": path of the bastion
it imported, "rows": [...]}``, then each line ``ROW N`` on stdin times ``N`` requests of ``ROW``
and answers ``{"cpu_us": ..., "wall_us": ...}`` per request; ``record N`` records the replies
again; EOF ends it.

Rows, all with Redis stubbed (no socket, no server in the timed loop):

* ``bare``: the app alone.
* ``stubbed_*``: Bastion on an in-memory stand-in for the client (no redis-py at all), as the
  session benchmark's "Redis stubbed" row: Bastion's own work.
* ``client_*``: Bastion on a real ``redis.asyncio.Redis`` whose connection answers from memory:
  Bastion's own work plus redis-py's client side (the command machinery, or the lean read).

For a session cookie, a JWT and an API key each, and ``stubbed_guest``: a request with no
credential (no Redis read at all). The replies are those the real Redis gave for
the same credentials, recorded again before every round (so "last seen" stays fresh and no
request takes the once-a-minute touch path).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion import Bastion, Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
USER = "alice"
JWT_SECRET = "x" * 40
CREDENTIALS = ("session", "jwt", "api_key")

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
REQUEST: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return REQUEST


async def me(request: Request) -> PlainTextResponse:
    user = request.scope.get("user")
    return PlainTextResponse(getattr(user, "identity", None) or "anonymous")


class Recording:
    """A real client's stand-in that remembers every HMGET reply, by key (not redis-py's class,
    so Bastion calls its ``hmget`` method whatever the revision)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.replies: dict[bytes, list[Any]] = {}

    async def hmget(self, key: str, *fields: str) -> list[Any]:
        reply: list[Any] = await self.client.hmget(key, *fields)
        self.replies[key.encode()] = reply
        return reply

    def register_script(self, source: str) -> Any:
        return self.client.register_script(source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class Replaying:
    """The stand-in of the "Redis stubbed" row: HMGET from the recorded replies, no I/O."""

    def __init__(self, replies: dict[bytes, list[Any]]) -> None:
        self.replies = replies

    async def hmget(self, key: str, *fields: str) -> list[Any]:
        return self.replies[key.encode()]

    def register_script(self, source: str) -> Callable[..., Awaitable[int]]:
        async def script(keys: Any = (), args: Any = (), client: Any = None) -> int:
            return 1

        return script


class MemoryConnection(redis.asyncio.Connection):
    """A redis-py connection that answers HMGET from the recorded replies and scripts with 1:
    the client's own machinery runs, the socket and server do not."""

    def __init__(self, *, replies: dict[bytes, list[Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._replies = replies
        self._pending: deque[Any] = deque()

    @property
    def is_connected(self) -> bool:
        return True

    async def connect(self) -> None:
        return None

    async def can_read_destructive(self) -> bool:
        return False

    async def can_read(self) -> bool:  # type: ignore[override]
        return False

    async def disconnect(self, nowait: bool = False, **kwargs: Any) -> None:
        self._pending.clear()

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        data = command if isinstance(command, bytes) else b"".join(command)
        for args in _parse_commands(data):
            name = args[0].upper()
            if name == b"HMGET":
                self._pending.append(self._replies[args[1]])
            else:  # EVALSHA: a touch, answered "alive"
                self._pending.append(1)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        return self._pending.popleft()


def _parse_commands(data: bytes) -> list[list[bytes]]:
    """The commands in packed RESP (arrays of bulk strings)."""
    commands, at = [], 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        count = int(data[at + 1 : end])
        at = end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", at)
            size = int(data[at + 1 : end])
            at = end + 2
            args.append(data[at : at + size])
            at += size + 2
        commands.append(args)
    return commands


async def main(config: dict[str, Any]) -> None:
    import bastion

    settings = Settings(redis_url=config["redis_url"], jwt_secret=JWT_SECRET, **config["settings"])
    app = Starlette(routes=[Route("/me", me)])
    real = Bastion(settings)
    # bastion.redis: the async client (older revisions: bastion.runner.client)
    recording = Recording(getattr(real, "redis", None) or real.runner.client)
    recorder = Bastion(settings, redis=recording)
    new = await real.sessions.create(USER)
    key = await real.api_keys.create("bench", ["documents.read"])
    headers = {
        "session": [(b"cookie", f"{settings.cookie_name}={new.token}".encode())],
        "jwt": [(b"authorization", f"Bearer {real.jwt.mint(USER, new.session.id)}".encode())],
        "api_key": [(b"x-api-key", key.key.encode())],
        "guest": [],
    }
    scopes = {
        kind: {**BASE_SCOPE, "headers": [(b"host", b"testserver"), *extra]}
        for kind, extra in headers.items()
    }
    expected = {"session": USER, "jwt": USER, "api_key": f"key:{key.info.id}", "guest": "anonymous"}
    recorder_app = recorder.asgi(app)
    replies = recording.replies

    async def record() -> None:
        for kind in CREDENTIALS:
            status, body = await call(recorder_app, scopes[kind])
            if status != 200 or body != expected[kind].encode():
                raise SystemExit(f"recording {kind}: {status} {body!r}")

    await record()
    await record()  # the API key's first use records its last use: the second is the usual one
    stand_in = Replaying(replies)
    stubbed = Bastion(settings, redis=stand_in, sync_redis=stand_in).asgi(app)
    pool = redis.asyncio.ConnectionPool(connection_class=MemoryConnection, replies=replies)
    client = Bastion(
        settings, redis=redis.asyncio.Redis(connection_pool=pool), sync_redis=stand_in
    ).asgi(app)
    rows: dict[str, tuple[Any, dict[str, Any], str]] = {"bare": (app, scopes["session"], "")}
    for kind in CREDENTIALS:
        rows[f"stubbed_{kind}"] = (stubbed, scopes[kind], expected[kind])
        rows[f"client_{kind}"] = (client, scopes[kind], expected[kind])
    rows["stubbed_guest"] = (stubbed, scopes["guest"], expected["guest"])
    for name, (row_app, scope, want) in rows.items():  # checked before any timing
        status, body = await call(row_app, scope)
        if status != 200 or (want and body != want.encode()):
            raise SystemExit(f"{bastion.__file__}: {name}: {status} {body!r}")
    print(json.dumps({"ready": bastion.__file__, "rows": list(rows)}), flush=True)

    counts = [0, 0]

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            counts[0 if message["status"] == 200 else 1] += 1

    for line in sys.stdin:  # "ROW N": time N requests of ROW
        name, n = line.split()[0], int(line.split()[1])
        if name == "record":
            await record()
            # A full collection here, not in the timed command: under --instructions its cost
            # (which grows with the heap, so differs between trees) stays out of the count.
            gc.collect()
            print("{}", flush=True)
            continue
        row_app, scope, _ = rows[name]
        if config.get("collect", True):
            gc.collect()
        # CPU time of this thread: the loop does no I/O, so this is the work itself, and time
        # the scheduler gives to other processes (2 shared cores here) does not count.
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(int(n)):
            await row_app(dict(scope), receive, send)
        cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
        if counts != [n, 0]:
            raise SystemExit(f"{name}: {counts[1]} of {n} requests did not answer 200")
        counts[:] = [0, 0]
        print(json.dumps({"cpu_us": cpu / n / 1000, "wall_us": wall / n / 1000}), flush=True)
    closing = getattr(real, "aclose", None)  # older revisions had no lifecycle
    if closing is not None:
        await closing()


async def call(app: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    """One request, outside the timing: its status and body."""
    got: dict[str, Any] = {"status": 0, "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            got["status"] = message["status"]
        elif message["type"] == "http.response.body":
            got["body"] += message.get("body", b"")

    await app(dict(scope), receive, send)
    return got["status"], got["body"]


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
