"""Fixtures: settings, embedded (fakeredis) and real (redis-server) Redis, and Bastion apps."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fakeredis
import httpx
import pytest
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters.starlette import exception_handlers
from tests.redis_cluster import RedisCluster, RedisSentinels
from tests.redis_server import RedisServer, require_redis_server

SESSION_CACHE = os.environ.get("BASTION_SESSION_CACHE", "off")
"""The session cache the real-Redis Bastions of the fixtures use (read before the tests hide
every BASTION_* variable): ``BASTION_SESSION_CACHE=tracking`` runs them with it on."""

CLUSTER_MODULES = {"test_sessions", "test_jwt", "test_apikeys", "test_authorization", "test_users"}
"""Modules whose ``backend`` tests also run on the Redis Cluster (the suite's time is counted)."""


@pytest.fixture(autouse=True)
def _no_bastion_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own BASTION_* variables out of the tests."""
    for key in list(os.environ):
        if key.startswith("BASTION_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _stop_policy_watchers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stop the policy watcher of every Bastion a test built, when the test ends.

    An app's lifespan stops its own; a test's Bastion is rarely closed, and its watcher (started
    by the first request) would poll every 0.25 s for the rest of the run, against a Redis that
    a later test stopped, logging and retrying in a thread beside every later test.
    """
    made: list[Bastion] = []
    build = Bastion.__init__

    def recorded(self: Bastion, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Bastion, "__init__", recorded)
    yield
    for bastion in made:
        bastion.policy_watcher.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole run (fails under CI if missing)."""
    if RedisServer.binary() is None:
        message = "redis-server is not installed (apt-get install -y redis-server)"
        if require_redis_server():
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def real_redis(redis_server: RedisServer) -> Iterator[str]:
    """The real server's URL, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``backend``: fakeredis and a real redis-server; the Redis Cluster too in some modules."""
    if "backend" in metafunc.fixturenames:
        names = ["fakeredis", "redis-server"]
        if metafunc.module.__name__.rsplit(".", 1)[-1] in CLUSTER_MODULES:
            names.append("redis-cluster")
        metafunc.parametrize("backend", names)


def _needs(what: str) -> None:
    message = f"{what} is not installed (apt-get install -y redis-server redis-tools)"
    if require_redis_server():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster with a replica each, started once for the whole run."""
    import shutil

    if RedisServer.binary() is None or shutil.which("redis-cli") is None:
        _needs("redis-server or redis-cli")
    cluster = RedisCluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def cluster_redis(redis_cluster: RedisCluster) -> str:
    """The cluster's URL (one node), every master emptied before the test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinels() -> Iterator[RedisSentinels]:
    """One master, one replica and three sentinels, started once for the whole run."""
    if RedisServer.binary() is None:
        _needs("redis-server")
    sentinels = RedisSentinels().start()
    yield sentinels
    sentinels.cleanup()


def end_session_now(client: Any, user_id: str, session_id: str) -> None:
    """Set a stored session's absolute end to a millisecond ago (Redis has not dropped it yet)."""
    import time

    from bastion.sessions import keys

    key = keys.sessions("bastion", user_id)
    order, _, last_seen = client.hget(key, session_id).split()
    client.hset(key, session_id, b"%s %d %s" % (order, int(time.time() * 1000) - 1, last_seen))


async def caught_up(bastion: Bastion) -> None:
    """After a test wrote Redis behind Bastion's back: wait until its session cache (when on)
    has applied the invalidation, as it would have by the next request of a real client."""
    cache = bastion._session_cache
    if cache is not None and cache.stats().state != "refused":
        assert await cache.caught_up(), cache.stats()


def make_bastion(backend: str, request: pytest.FixtureRequest, **settings: Any) -> Bastion:
    """A Bastion on the named backend with the given settings."""
    if backend == "fakeredis":
        server = fakeredis.FakeServer()
        return Bastion(
            Settings(**settings),
            redis=fakeredis.FakeAsyncRedis(server=server),
            sync_redis=fakeredis.FakeRedis(server=server),
        )
    settings.setdefault("session_cache", SESSION_CACHE)
    if backend == "redis-cluster":
        url = request.getfixturevalue("cluster_redis")
        return Bastion(Settings(redis_url=url, redis_cluster=True, **settings))
    url = request.getfixturevalue("real_redis")
    return Bastion(Settings(redis_url=url, **settings))


@pytest.fixture
def bastion(backend: str, request: pytest.FixtureRequest) -> Bastion:
    """A Bastion with default settings on each backend."""
    return make_bastion(backend, request)


def demo_app(bastion: Bastion) -> Any:
    """A small app: who am I, log in as a user id, log out, and a state-changing route."""

    async def me(request: Request) -> Response:
        user = request.user
        return JSONResponse(
            {
                "user": user.identity,
                "session": user.session_id,
                "roles": sorted(user.roles),
                "scopes": request.auth.scopes,
            }
        )

    async def login(request: Request) -> Response:
        body = await request.json()
        new = await bastion.login(request, body["user"])
        return JSONResponse(
            {"session": new.session.id, "evicted": list(new.evicted)}, status_code=201
        )

    async def logout(request: Request) -> Response:
        await bastion.logout(request)
        return Response(status_code=204)

    async def jwt(request: Request) -> Response:
        return JSONResponse({"jwt": bastion.create_jwt(request)}, status_code=201)

    async def documents(request: Request) -> Response:
        bastion.identity(request).require_scope("documents.read")
        return JSONResponse({"who": request.user.identity, "kind": request.user.kind})

    async def change(request: Request) -> Response:
        return JSONResponse({"changed": True, "user": request.user.identity})

    return bastion.asgi(
        Starlette(
            exception_handlers=exception_handlers,
            routes=[
                Route("/me", me),
                Route("/login", login, methods=["POST"]),
                Route("/logout", logout, methods=["POST"]),
                Route("/jwt", jwt, methods=["POST"]),
                Route("/documents", documents),
                Route("/change", change, methods=["POST", "GET", "PUT", "DELETE", "PATCH"]),
            ],
        )
    )


@pytest.fixture
async def client(bastion: Bastion) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTPS client for :func:`demo_app`."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://testserver"
    ) as c:
        yield c


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (redis.asyncio's loop)."""
    return "asyncio"
