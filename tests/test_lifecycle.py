"""Bastion's lifecycle: no Redis I/O when built, lazy start, and nothing left after close.

Counted on a redis-server of this module's own (no other test's clients on it): its
``CLIENT LIST`` (connections open now) and ``total_connections_received`` (connections ever
made), and ``threading.enumerate()`` for the policy watcher's thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.errors import ServiceUnavailable
from bastion.policies import watch
from bastion.policies.watch import announce
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio

WATCHER = "bastion-policy-watch"
ROUTES = [{"method": "GET", "path": "/notes/{id}", "action": "read", "resource": "notes/{id}"}]


@pytest.fixture(scope="module")
def own_server(redis_server: RedisServer) -> Iterator[str]:
    """A redis-server for this module alone: other tests' Bastions (their policy watchers keep
    polling the suite's server) would come and go in its ``CLIENT LIST``."""
    server = RedisServer().start()
    yield server.url
    server.cleanup()


@pytest.fixture
def real_redis(own_server: str) -> str:
    """This module's server, emptied before each test."""
    client = redis.Redis.from_url(own_server)
    client.flushall()
    client.close()
    return own_server


@pytest.fixture
def admin(real_redis: str) -> Iterator[redis.Redis]:
    """A client of the test's own, to ask the server who is connected."""
    client = redis.Redis.from_url(real_redis)
    yield client
    client.close()


def _guarded(url: str, tmp_path: Path, **more: Any) -> Settings:
    """Settings with authorization on (a route map and a policy) and a fast policy watcher."""
    policy = tmp_path / "policy.csv"
    policy.write_text("p, users, notes/*, read\n")
    return Settings.from_mapping(
        {"redis_url": url, "policy_files": [str(policy)], "routes": ROUTES,
         "policy_reload_interval": 0.1, **more}
    )  # fmt: skip


def _clients(admin: redis.Redis) -> int:
    """Connections open on the server, the admin's own left out."""
    me = admin.client_id()
    return sum(1 for c in admin.client_list() if int(c["id"]) != me)


def _watcher(bastion: Bastion) -> threading.Thread:
    """This Bastion's policy watcher thread (others' may run too: they are not ours to count)."""
    thread = bastion.policy_watcher._thread
    assert thread is not None and thread.name == WATCHER and thread in threading.enumerate()
    return thread


def _gone(thread: threading.Thread) -> bool:
    return not thread.is_alive() and thread not in threading.enumerate()


def _until(done: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait for ``done`` (the server notices a closed socket a moment after it is closed)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.02)


def _watched(bastion: Bastion) -> bool:
    """Whether the watcher made its first check (its first Redis read)."""
    return bastion.policy_watcher._version is not watch._UNREAD


async def _note(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["id"])


def _wsgi_note(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"n1"]


def test_building_bastion_does_no_redis_io(
    real_redis: str, tmp_path: Path, admin: redis.Redis
) -> None:
    before = admin.info("stats")["total_connections_received"]
    bastion = Bastion(_guarded(real_redis, tmp_path))
    assert bastion.authorizer.active  # authorization on: 0.1 read the policy version here
    bastion.asgi(Starlette())
    bastion.wsgi(_wsgi_note)
    assert admin.info("stats")["total_connections_received"] == before
    assert not bastion.policy_watcher.running  # the watcher starts with the first request
    bastion.close()


def test_building_bastion_needs_no_redis(tmp_path: Path) -> None:
    started = time.monotonic()
    bastion = Bastion(_guarded(f"redis://127.0.0.1:{free_port()}/0", tmp_path, redis_timeout=2))
    assert time.monotonic() - started < 1.0  # no connect attempt to wait for
    assert bastion.policy_watcher.check_now() is False  # Redis down: files only, no reload
    assert bastion.policy_watcher.check_now() is False
    bastion.close()


async def test_aclose_leaves_no_connection_and_no_watcher(
    real_redis: str, tmp_path: Path, admin: redis.Redis
) -> None:
    base = _clients(admin)
    bastion = Bastion(_guarded(real_redis, tmp_path))
    app = bastion.asgi(Starlette(routes=[Route("/notes/{id}", _note)]))
    token = bastion.sync.sessions.create("alice").token  # a blocking connection
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
        for _ in range(3):  # an asyncio connection; the first request starts the watcher
            got = await http.get("/notes/n1", headers={"X-Bastion-Session": token})
            assert got.status_code == 200
    await asyncio.to_thread(_until, lambda: _watched(bastion), "the watcher's first check")
    watcher = _watcher(bastion)
    assert _clients(admin) >= base + 2

    await bastion.aclose()
    assert bastion.is_closed and _gone(watcher)
    await asyncio.to_thread(_until, lambda: _clients(admin) == base, "connections to close")
    await bastion.aclose()  # idempotent


def test_with_closes_a_wsgi_app_on_exit(
    real_redis: str, tmp_path: Path, admin: redis.Redis
) -> None:
    base = _clients(admin)
    with Bastion(_guarded(real_redis, tmp_path)) as bastion:
        app = bastion.wsgi(_wsgi_note)
        token = bastion.sync.sessions.create("alice").token
        with httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as http:
            assert http.get("/notes/n1", headers={"X-Bastion-Session": token}).status_code == 200
            assert http.get("/notes/n1").status_code == 401
        _until(lambda: _watched(bastion), "the watcher's first check")
        watcher = _watcher(bastion)
        assert _clients(admin) > base
    assert bastion.is_closed and _gone(watcher)
    _until(lambda: _clients(admin) == base, "connections to close")


@contextlib.asynccontextmanager
async def _served(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan as a server does: startup, then shutdown on leaving."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    said: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        said.append(message["type"])

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    )
    while not said:
        await asyncio.sleep(0.01)
    assert said == ["lifespan.startup.complete"], said
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task
        assert said[-1] == "lifespan.shutdown.complete", said


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_lifespan_closes_bastion_when_the_app_stops(
    framework: str, real_redis: str, tmp_path: Path, admin: redis.Redis
) -> None:
    base = _clients(admin)
    bastion = Bastion(_guarded(real_redis, tmp_path))
    if framework == "fastapi":
        from fastapi import FastAPI

        api = FastAPI(lifespan=bastion.lifespan)
        api.add_api_route("/notes/{id}", _note)
        app = bastion.asgi(api)
    else:
        app = bastion.asgi(
            Starlette(routes=[Route("/notes/{id}", _note)], lifespan=bastion.lifespan)
        )
    async with _served(app):
        token = (await bastion.sessions.create("alice")).token
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
            got = await http.get("/notes/n1", headers={"X-Bastion-Session": token})
            assert got.status_code == 200
        await asyncio.to_thread(_until, lambda: _watched(bastion), "the watcher's first check")
        watcher = _watcher(bastion)
        assert not bastion.is_closed
    assert bastion.is_closed and _gone(watcher)
    await asyncio.to_thread(_until, lambda: _clients(admin) == base, "connections to close")


def test_wsgi_closes_bastion_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Callable[[], None]] = []
    unregistered: list[Callable[[], None]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", unregistered.append)
    bastion = Bastion(Settings())
    bastion.wsgi(_wsgi_note)
    bastion.wsgi(_wsgi_note)
    assert len(registered) == 1  # once, however many apps it wraps
    registered[0]()  # what the interpreter runs at exit
    assert bastion.is_closed and unregistered == registered

    # The hook does not keep a Bastion alive: one collected before exit is simply gone.
    other = Bastion(Settings())
    other.wsgi(_wsgi_note)
    hook = registered[-1]
    del other
    gc.collect()
    hook()


def test_flask_init_app_closes_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from bastion.adapters.flask import init_app

    registered: list[Callable[[], None]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    bastion = Bastion(Settings())
    init_app(Flask("lifecycle"), bastion)
    [hook] = registered
    hook()
    assert bastion.is_closed


async def test_a_closed_bastion_refuses_work_and_reuse() -> None:
    bastion = Bastion(Settings())
    await bastion.sessions.create("alice")
    bastion.close()
    bastion.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        bastion.sync.sessions.list("alice")
    with pytest.raises(RuntimeError, match="closed"):
        await bastion.users.get("alice")
    with pytest.raises(RuntimeError, match="closed"), bastion:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        async with bastion:
            pass
    bastion.policy_watcher.start()  # a first request after close starts no thread
    assert not bastion.policy_watcher.running and bastion.policy_watcher._thread is None


def test_clients_passed_in_are_left_open(real_redis: str) -> None:
    mine = redis.Redis.from_url(real_redis)
    bastion = Bastion(Settings(redis_url=real_redis), sync_redis=mine)
    assert bastion.sync.redis is mine
    bastion.sync.sessions.create("alice")
    bastion.close()
    pool: Any = mine.connection_pool
    assert len(pool._available_connections) == 1  # still connected: it is the app's to close
    assert mine.ping()
    mine.close()


def test_the_watcher_reads_the_announced_version_at_its_first_check(
    real_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _guarded(real_redis, tmp_path)
    early, late = Bastion(settings), Bastion(settings)
    assert early.policy_watcher.check_now() is False  # nothing announced: nothing to do
    announce(settings, early.sync.redis)
    # ``late`` was built before the announcement, so its policy may be stale: one reload.
    with caplog.at_level("INFO", logger="bastion.policy"):
        assert late.policy_watcher.check_now() is True
    assert "policy reloaded" in caplog.text
    assert late.policy_watcher.check_now() is False
    assert early.policy_watcher.check_now() is True  # it knew the version before
    early.close()
    late.close()


async def test_readme_lifecycle_examples_run(
    real_redis: str, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Sync and async, and closing", 1)[1].split("\n## ", 1)[0]
    monkeypatch.setenv("BASTION_REDIS_URL", real_redis)  # the blocks read Settings.load()
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    base = _clients(admin)
    served: dict[str, Any] = {}
    exec(compile(blocks[0], "README.md", "exec"), served)
    bastion: Bastion = served["bastion"]
    async with _served(served["app"]):
        await bastion.sessions.create("alice")
    assert bastion.is_closed
    async with served["lifespan"](served["api"]):
        pass  # a lifespan of one's own closes it too (closing twice is fine)

    # The script block runs asyncio.run itself: in a thread, off this test's event loop.
    script: dict[str, Any] = {}
    await asyncio.to_thread(exec, compile(blocks[1], "README.md", "exec"), script)
    assert script["bastion"].is_closed
    fields = await asyncio.to_thread(admin.hkeys, "bastion:{alice}:s")
    assert len([f for f in fields if b":" not in f]) == 2  # two sessions in alice's hash
    await asyncio.to_thread(_until, lambda: _clients(admin) == base, "connections to close")


def test_close_warns_of_asyncio_connections_only_when_one_is_open(
    real_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What a WSGI Bastion says at exit: only connections still open need ``aclose``."""
    warning = "cannot close the asyncio client's connections"
    caplog.set_level("WARNING", logger="bastion.middleware")
    # Redis down when the async client was tried: its pool keeps the connection object it
    # made, disconnected. Nothing is open, so nothing to warn about.
    down = Bastion(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2))
    down.wsgi(_wsgi_note)
    with pytest.raises(ServiceUnavailable):
        asyncio.run(down.sessions.list("alice"))
    pool: Any = down.redis.connection_pool
    assert len(pool._available_connections) == 1 and not pool._available_connections[0].is_connected
    down.close()
    assert warning not in caplog.text
    # A connection the asyncio client really holds open: the warning says what to do.
    up = Bastion(Settings(redis_url=real_redis))
    up.wsgi(_wsgi_note)
    loop = asyncio.Runner()
    try:
        assert loop.run(up.sessions.list("alice")) == []
        up.close()
        assert warning in caplog.text
    finally:
        loop.run(up.redis.aclose())
        loop.close()
