"""``redis_timeout`` is the whole wait: pool, connect, retries and replies share one budget.

On a redis-server of each test's own: stalled (``CLIENT PAUSE``, ``SIGSTOP``) and stopped,
through the async and the sync runner. The bounds asserted are the setting itself plus slack
for a loaded machine, never a speed: each test fails by a multiple of the timeout without the
shared budget or the blocking pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from bastion import Bastion, Settings
from bastion.errors import ServiceUnavailable
from bastion.redisio import Call, OutageLog, Steps
from tests.redis_server import RedisServer

TIMEOUT = 0.5
SLACK = 0.25
"""Scheduling slack on a loaded 2-core machine: the waits measured are multiples of TIMEOUT."""


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A redis-server of this test's own (asks for ``redis_server`` to skip or fail like it)."""
    own = RedisServer().start()
    try:
        yield own
    finally:
        own.cleanup()


def _bastion(url: str, **settings: Any) -> Bastion:
    return Bastion(Settings(redis_url=url, redis_timeout=TIMEOUT, **settings))


def _admin(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def _timed_async(bastion: Bastion, token: str) -> tuple[float, BaseException | None]:
    async def run() -> tuple[float, BaseException | None]:
        started = time.monotonic()
        try:
            await bastion.sessions.authenticate(token)
        except ServiceUnavailable as exc:
            return time.monotonic() - started, exc
        finally:
            await bastion.aclose()
        return time.monotonic() - started, None

    return asyncio.run(run())


def _timed_sync(bastion: Bastion, token: str) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        bastion.sync.sessions.authenticate(token)
    except ServiceUnavailable as exc:
        return time.monotonic() - started, exc
    finally:
        bastion.close()
    return time.monotonic() - started, None


RUNNERS = {"async": _timed_async, "sync": _timed_sync}


def _outcome(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as exc:
        return exc


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("stall", ["client-pause", "sigstop", "stopped"])
def test_a_stalled_or_stopped_redis_answers_503_within_the_timeout(
    server: RedisServer, runner: str, stall: str
) -> None:
    token = _bastion(server.url).sync.sessions.create("alice").token
    bastion = _bastion(server.url)  # a cold pool: connect and handshake count too
    admin = _admin(server)
    if stall == "client-pause":
        admin.client_pause(int(TIMEOUT * 4 * 1000))
    elif stall == "sigstop":
        server.pause()
    else:
        server.stop()
    try:
        took, error = RUNNERS[runner](bastion, token)
    finally:
        server.resume()
    assert isinstance(error, ServiceUnavailable)
    assert took < TIMEOUT + SLACK


def _paused_pings(admin: redis.Redis, pause_ms: int, count: int) -> Steps[None]:
    """Steps of ``count`` PINGs, each behind a CLIENT PAUSE shorter than the timeout."""
    for _ in range(count):
        admin.client_pause(pause_ms)
        yield Call("ping", ())


@pytest.mark.parametrize("runner", RUNNERS)
def test_slow_replies_share_one_budget(server: RedisServer, runner: str) -> None:
    # Three replies of 0.6 x TIMEOUT each: every one within the timeout, together 1.8 x it.
    bastion = _bastion(server.url)
    admin = _admin(server)
    steps = _paused_pings(admin, int(TIMEOUT * 600), 3)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        if runner == "async":

            async def run() -> None:
                try:
                    await bastion._runner.run(steps)
                finally:
                    await bastion.aclose()

            asyncio.run(run())
        else:
            try:
                bastion._sync_runner.run(steps)
            finally:
                bastion.close()
    assert time.monotonic() - started < TIMEOUT + SLACK


def test_waiting_for_a_connection_counts_in_the_budget(server: RedisServer) -> None:
    # 2 connections, 6 requests on a stalled Redis: 4 wait for a connection, then for Redis
    # (without one budget: nearly the timeout for the connection, then the timeout again).
    token = _bastion(server.url).sync.sessions.create("alice").token
    bastion = _bastion(server.url, redis_max_connections=2)
    admin = _admin(server)

    async def run() -> list[float]:
        async def one() -> float:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await bastion.sessions.authenticate(token)
            return time.monotonic() - started

        try:
            await bastion.sessions.authenticate(token)  # warm: the pool holds a connection
            admin.client_pause(int(TIMEOUT * 4 * 1000))
            holding = [asyncio.ensure_future(one()) for _ in range(2)]
            # The others come just after: they get a connection shortly before their own
            # timeout, when the first two give theirs up.
            await asyncio.sleep(0.05)
            waiting = [asyncio.ensure_future(one()) for _ in range(4)]
            return list(await asyncio.gather(*holding, *waiting))
        finally:
            await bastion.aclose()

    took = asyncio.run(run())
    assert max(took) < TIMEOUT + SLACK, took


def test_more_requests_than_connections_wait_for_one_async(server: RedisServer) -> None:
    token = _bastion(server.url).sync.sessions.create("alice").token
    bastion = Bastion(Settings(redis_url=server.url, redis_max_connections=100))
    admin = _admin(server)

    async def run() -> list[Any]:
        try:
            # A pause shorter than the timeout: all 150 are in flight at once.
            admin.client_pause(200)
            return list(
                await asyncio.gather(
                    *(bastion.sessions.authenticate(token) for _ in range(150)),
                    return_exceptions=True,
                )
            )
        finally:
            await bastion.aclose()

    answers = asyncio.run(run())
    assert [a for a in answers if isinstance(a, BaseException)] == []
    assert all(a is not None and a.user_id == "alice" for a in answers)


def test_more_requests_than_connections_wait_for_one_sync(server: RedisServer) -> None:
    token = _bastion(server.url).sync.sessions.create("alice").token
    bastion = Bastion(Settings(redis_url=server.url, redis_max_connections=100))
    admin = _admin(server)
    most = 0
    watching = threading.Event()

    def watch() -> None:
        nonlocal most
        while not watching.is_set():
            most = max(most, int(admin.info("clients")["connected_clients"]))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    try:
        admin.client_pause(200)
        watcher.start()
        with ThreadPoolExecutor(150) as pool:
            answers = list(
                pool.map(lambda _: _outcome(bastion.sync.sessions.authenticate, token), range(150))
            )
    finally:
        watching.set()
        watcher.join()
        bastion.close()
    assert [a for a in answers if isinstance(a, BaseException)] == []
    assert most <= 100 + 2  # the pool, the admin, and the watcher's own


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_outage_lines_are_one_per_kind_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    log = OutageLog(interval=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="bastion.redis"):
        for _ in range(1000):
            log.failed(redis.exceptions.ConnectionError("refused"))
            log.failed(redis.exceptions.TimeoutError("timed out"))
            clock.now += 0.001  # 1 s in all
        assert len(_lines(caplog, "Redis unavailable: ConnectionError")) == 1
        assert len(_lines(caplog, "Redis unavailable: TimeoutError")) == 1
        clock.now += 5
        log.failed(redis.exceptions.ConnectionError("refused"))
        again = _lines(caplog, "Redis unavailable: ConnectionError")
        assert len(again) == 2 and "and 999 more ConnectionError" in again[1]
        log.succeeded()
        log.succeeded()
        back = _lines(caplog, "Redis is back")
        assert back == ["Redis is back: 2001 operation(s) failed over 6.0 s before this success"]


@pytest.mark.parametrize("runner", ["async", "sync"])
def test_an_outage_logs_a_few_lines_and_its_end_once(
    server: RedisServer, runner: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = _bastion(server.url).sync.sessions.create("alice").token
    bastion = _bastion(server.url)
    port = server.port

    def outage() -> tuple[list[Any], list[Any]]:
        server.stop()
        failed = [_outcome(bastion.sync.sessions.authenticate, token) for _ in range(200)]
        restarted = RedisServer(port=port).start()
        try:
            return failed, [_outcome(bastion.sync.sessions.authenticate, token) for _ in range(5)]
        finally:
            restarted.cleanup()

    async def async_outage() -> tuple[list[Any], list[Any]]:
        server.stop()
        failed = [await _async_outcome(bastion.sessions.authenticate(token)) for _ in range(200)]
        restarted = RedisServer(port=port).start()
        try:
            return failed, [await _async_outcome(bastion.sessions.authenticate(token))]
        finally:
            restarted.cleanup()
            await bastion.aclose()

    with caplog.at_level(logging.WARNING, logger="bastion.redis"):
        failed, back = outage() if runner == "sync" else asyncio.run(async_outage())
    assert all(isinstance(a, ServiceUnavailable) for a in failed)
    assert back[-1] is None  # answered (the data went with the old server)
    unavailable = _lines(caplog, "Redis unavailable")
    assert 1 <= len(unavailable) <= 2, unavailable  # one per kind (refused; a reset at most)
    assert len(_lines(caplog, "Redis is back")) == 1
    bastion.close()


async def _async_outcome(awaitable: Any) -> Any:
    try:
        return await awaitable
    except Exception as exc:
        return exc


def test_redis_max_connections_is_a_checked_setting() -> None:
    from bastion.errors import ConfigError

    assert Settings().redis_max_connections == 100
    loaded = Settings.load(env={"BASTION_REDIS_MAX_CONNECTIONS": "250"})
    assert loaded.redis_max_connections == 250
    for bad in (0, 10_001):
        with pytest.raises(ConfigError, match="redis_max_connections"):
            Settings(redis_max_connections=bad)
    with pytest.raises(ConfigError, match="redis_max_connections"):
        Settings.load(env={"BASTION_REDIS_MAX_CONNECTIONS": "many"})


def test_the_clients_pool_has_the_setting(server: RedisServer) -> None:
    bastion = _bastion(server.url, redis_max_connections=7)
    for client in (bastion.redis, bastion.sync.redis):
        assert client.connection_pool.max_connections == 7
    bastion.close()


def test_the_policy_watcher_shares_the_outage_log(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # It polls Redis 4 times a second in every worker: one line per check was a flood too.
    bastion = _bastion(server.url, policy_reload_interval=0)
    token = bastion.sync.sessions.create("alice").token
    with caplog.at_level(logging.WARNING):
        server.stop()
        for _ in range(20):
            bastion.policy_watcher.check_now()
        with pytest.raises(ServiceUnavailable):
            bastion.sync.sessions.authenticate(token)
    assert len(_lines(caplog, "Redis unavailable")) == 1, caplog.text
    assert "policy" not in caplog.text
    bastion.close()
