"""The session cache on real redis-servers: hits cost no Redis command, and no fault serves a
revoked session later than the lease (revocation from another process, CLIENT KILL, CLIENT
PAUSE, restart, FLUSHALL, the fill race); fakeredis stays uncached."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bastion import Bastion, Settings
from bastion.errors import ConfigError
from bastion.sessions import keys
from bastion.sessions.cache import SessionCache
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
LEASE = 1.0


def cached(url: str, **settings: Any) -> Bastion:
    return Bastion(Settings(redis_url=url, session_cache="tracking", **settings))


def cache_of(bastion: Bastion) -> SessionCache:
    cache = bastion._session_cache
    assert cache is not None
    return cache


async def until(what: str, ready: Callable[[], bool], within: float = 3.0) -> float:
    """Wait (on the loop, so the listener runs) until ``ready``; the seconds it took."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def warm(bastion: Bastion, token: str) -> None:
    """Read the session until it is served from memory."""
    await until("the listener is live", lambda: bastion.session_cache_stats().state == "live")
    for _ in range(100):  # an invalidation of the session's creation may still be on its way
        hits = bastion.session_cache_stats().hits
        assert await bastion.sessions.authenticate(token) is not None
        if bastion.session_cache_stats().hits == hits + 1:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("never served from memory")


def hmget_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats").get("cmdstat_hmget", {"calls": 0})
    client.close()
    return int(stats["calls"])


async def test_hits_send_nothing_to_redis(real_redis: str) -> None:
    bastion = cached(real_redis)
    new = await bastion.sessions.create("u1")
    await warm(bastion, new.token)
    before = hmget_calls(real_redis)
    for _ in range(50):
        active = await bastion.sessions.authenticate(new.token)
        assert active is not None and active.session_id == new.session.id
    assert hmget_calls(real_redis) == before
    # A wrong secret is still refused from the cached digest; a missing session is not cached.
    assert await bastion.sessions.authenticate(new.token[:-2] + "AA") is None
    assert await bastion.sessions.authenticate("u1.AAAAAAAAAAAAAAAAAAAAAA.x" + "A" * 42) is None
    stats = bastion.session_cache_stats()
    assert stats.entries == 1 and stats.hits >= 51
    await bastion.aclose()
    assert bastion.session_cache_stats().state == "off"


async def test_expiry_is_checked_on_every_hit(real_redis: str) -> None:
    from tests.conftest import end_session_now

    bastion = cached(real_redis)
    new = await bastion.sessions.create("u1")
    await warm(bastion, new.token)
    entry_fields = next(iter(next(iter(cache_of(bastion)._entries.values())).values()))[0]
    order, _, last = entry_fields[0].split()
    entry_fields[0] = b"%s %d %s" % (order, int(time.time() * 1000) - 1, last)  # ended a ms ago
    assert await bastion.sessions.authenticate(new.token) is None
    sync = redis.Redis.from_url(real_redis)
    end_session_now(sync, "u1", new.session.id)
    sync.close()
    await bastion.aclose()


REVOKER = """
import sys, time
from bastion import Bastion, Settings
b = Bastion(Settings(redis_url=sys.argv[1]))
for line in sys.stdin:
    user, sid = line.split()
    b.sync.sessions.revoke(user, sid)
    print(time.monotonic(), flush=True)
"""


async def test_revocation_from_another_process(real_redis: str) -> None:
    """Each revocation another process makes is applied before that session's next request
    is served, once the invalidation has crossed the loopback (measured: microseconds)."""
    bastion = cached(real_redis)
    news = [await bastion.sessions.create(f"user{i}") for i in range(20)]
    for new in news:
        await warm(bastion, new.token)
    revoker = subprocess.Popen(
        [sys.executable, "-c", REVOKER, real_redis],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert revoker.stdin is not None and revoker.stdout is not None
    cache = cache_of(bastion)
    try:
        for new in news:
            key = keys.sessions("bastion", new.session.user_id)
            assert key in cache._entries
            revoker.stdin.write(f"{new.session.user_id} {new.session.id}\n")
            revoker.stdin.flush()
            await asyncio.to_thread(revoker.stdout.readline)  # the revoker has its reply
            await until("the entry dropped", lambda k=key: k not in cache._entries, LEASE)  # type: ignore[misc]
            assert await bastion.sessions.authenticate(new.token) is None
    finally:
        revoker.stdin.close()
        revoker.wait(10)
    assert bastion.session_cache_stats().invalidations >= 20
    await bastion.aclose()


async def test_own_revocations_are_forgotten_at_once(real_redis: str) -> None:
    """The revoking worker drops the keys itself, without waiting for its invalidation."""
    bastion = cached(real_redis)
    cache = cache_of(bastion)
    first, second = await bastion.sessions.create("u1"), await bastion.sessions.create("u2")
    third = await bastion.sessions.create("u3")
    for new in (first, second, third):
        await warm(bastion, new.token)
    cache._invalidated = lambda node, names: None  # type: ignore[method-assign]  # deaf listener
    assert await bastion.sessions.revoke("u1", first.session.id)
    assert await bastion.sessions.authenticate(first.token) is None
    assert await bastion.sessions.revoke_all("u2") == [second.session.id]
    assert await bastion.sessions.authenticate(second.token) is None
    bastion.sync.sessions.revoke("u3", third.session.id)  # a thread of the same app
    assert await bastion.sessions.authenticate(third.token) is None
    await bastion.aclose()


async def test_listener_killed_flushes_then_refills(real_redis: str) -> None:
    bastion = cached(real_redis)
    new = await bastion.sessions.create("u1")
    await warm(bastion, new.token)
    admin = redis.Redis.from_url(real_redis)
    flushes = bastion.session_cache_stats().flushes
    killed = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed == 1
    await until("flushed", lambda: bastion.session_cache_stats().flushes > flushes)
    assert bastion.session_cache_stats().entries == 0
    admin.close()
    await warm(bastion, new.token)
    assert bastion.session_cache_stats().reconnects >= 1
    await bastion.aclose()


async def test_flushall_flushes(real_redis: str) -> None:
    bastion = cached(real_redis)
    new = await bastion.sessions.create("u1")
    await warm(bastion, new.token)
    admin = redis.Redis.from_url(real_redis)
    admin.flushall()
    admin.close()
    await until("flushed", lambda: bastion.session_cache_stats().entries == 0)
    assert await bastion.sessions.authenticate(new.token) is None
    await bastion.aclose()


async def test_a_stalled_redis_lapses_the_lease(real_redis: str) -> None:
    """CLIENT PAUSE: no canary comes back, so hits stop within the lease; then the cache refills."""
    bastion = cached(real_redis, redis_timeout=5.0)
    new = await bastion.sessions.create("u1")
    await warm(bastion, new.token)
    cache = cache_of(bastion)
    args = next(iter(next(iter(cache._entries.values()))))
    admin = redis.Redis.from_url(real_redis)
    admin.execute_command("CLIENT", "PAUSE", "2500", "ALL")
    paused = time.monotonic()
    lapsed = await until("the lease lapsed", lambda: cache._lookup(args) is None, LEASE + 0.5)
    assert lapsed <= LEASE + 0.3
    assert time.monotonic() - paused < 2.5  # while Redis is still stalled
    assert bastion.session_cache_stats().lease_lapses >= 1
    admin.close()
    await until("paused no more", lambda: time.monotonic() - paused > 2.6, 5)
    await until("refilled", lambda: bastion.session_cache_stats().state == "live", 5)
    await warm(bastion, new.token)
    await bastion.aclose()


async def test_restart_flushes_and_refills() -> None:
    server = RedisServer().start()
    try:
        bastion = cached(server.url)
        new = await bastion.sessions.create("u1")
        await warm(bastion, new.token)
        server.stop()
        await until("flushed", lambda: bastion.session_cache_stats().entries == 0)
        server.start()  # same port, empty: the session is gone with the old server's memory
        assert await bastion.sessions.authenticate(new.token) is None
        again = await bastion.sessions.create("u1")
        await until("live again", lambda: bastion.session_cache_stats().state == "live", 5)
        await warm(bastion, again.token)
        await bastion.aclose()
    finally:
        server.cleanup()


class SlowReplies:
    """A loopback proxy in front of Redis that holds every reply for ``delay`` seconds."""

    def __init__(self, port: int, delay: float) -> None:
        self.port, self.delay = port, delay
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            while data := await src.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                dst.write(data)

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer, 0)),
            asyncio.ensure_future(pipe(up_reader, writer, self.delay)),
        ]
        await asyncio.wait(tasks, return_when="FIRST_COMPLETED")
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def test_revocations_racing_fills_are_never_served_after(
    real_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 reads in flight (their replies held 20 ms) while their sessions are revoked 5 ms in:
    the invalidation overtakes the reply, and no revoked session is served afterwards."""
    port = int(real_redis.rsplit(":", 1)[1].split("/")[0])
    proxy = SlowReplies(port, 0.02)
    proxy_port = await proxy.start()
    maker = SessionCache._maker

    def direct(self: SessionCache) -> Any:  # the listener alone goes straight to Redis
        make = maker(self)
        return lambda: _with_port(make(), port)

    monkeypatch.setattr(SessionCache, "_maker", direct)
    bastion = cached(f"redis://127.0.0.1:{proxy_port}/0")
    admin = redis.Redis.from_url(real_redis)
    news = [await bastion.sessions.create(f"user{i}") for i in range(100)]
    await until("the listener is live", lambda: bastion.session_cache_stats().state == "live")

    async def race(new: Any) -> None:
        read = asyncio.ensure_future(bastion.sessions.authenticate(new.token))
        await asyncio.sleep(0.005)
        await asyncio.to_thread(admin.hdel, keys.sessions("bastion", new.session.user_id),
                                new.session.id)  # fmt: skip
        await read  # the stale reply: read before the revocation

    for chunk in range(0, 100, 10):
        await asyncio.gather(*(race(n) for n in news[chunk : chunk + 10]))
    served = [n for n in news if await bastion.sessions.authenticate(n.token) is not None]
    assert served == []
    # The race did happen (most fills were in flight when their session changed).
    assert bastion.session_cache_stats().discarded_fills >= 50
    admin.close()
    await bastion.aclose()
    await proxy.stop()


def _with_port(conn: Any, port: int) -> Any:
    conn.port = port
    return conn


async def test_fakeredis_stays_uncached(caplog: pytest.LogCaptureFixture) -> None:
    import fakeredis

    server = fakeredis.FakeServer()
    with caplog.at_level(logging.WARNING, "bastion.sessions.cache"):
        bastion = Bastion(
            Settings(session_cache="tracking"),
            redis=fakeredis.FakeAsyncRedis(server=server),
            sync_redis=fakeredis.FakeRedis(server=server),
        )
        new = await bastion.sessions.create("u1")
        for _ in range(3):
            assert await bastion.sessions.authenticate(new.token) is not None
    assert bastion.session_cache_stats().state == "refused"
    assert bastion.session_cache_stats().hits == 0
    assert len([r for r in caplog.records if "session cache off" in r.message]) == 1
    await bastion.aclose()


async def test_refused_tracking_is_logged_once(
    real_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that refuses CLIENT TRACKING (as proxies and managed services do)."""
    admin = redis.Redis.from_url(real_redis)
    admin.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-client|tracking"],
    )  # fmt: skip
    url = real_redis.replace("redis://", "redis://app:pw@")
    with caplog.at_level(logging.WARNING, "bastion.sessions.cache"):
        bastion = cached(url)
        new = await bastion.sessions.create("u1")
        await until("refused", lambda: bastion.session_cache_stats().state == "refused")
        for _ in range(3):
            assert await bastion.sessions.authenticate(new.token) is not None
    assert bastion.session_cache_stats().hits == 0
    assert len([r for r in caplog.records if "session cache off" in r.message]) == 1
    admin.acl_deluser("app")
    admin.close()
    await bastion.aclose()


def test_the_tracked_prefix_leaves_out_rate_limits_and_api_keys() -> None:
    """Writes under other prefixes never reach the workers: only per-user keys start ``P:{``."""
    from bastion import ratelimit
    from bastion.tokens import apikeys

    settings = Settings()
    head, _ = keys.sessions_around(settings.key_prefix)
    limits = ratelimit.RateLimitCore(settings)
    names = [
        apikeys.APIKeyCore(settings)._key("abc"),
        *(k for k in limits.keys("log_in", email="a@b.c", ip="1.2.3.4") if k),
        limits.account_key("log_in", "a@b.c"),
        f"{settings.key_prefix}:email:{{x}}",
        f"{settings.key_prefix}:security",
    ]
    assert not [n for n in names if n.startswith(head)]
    assert keys.sessions(settings.key_prefix, "u1").startswith(head)


def test_settings_are_checked() -> None:
    assert Settings().session_cache == "off"
    with pytest.raises(ConfigError, match="session_cache"):
        Settings(session_cache="lru")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="session_cache_lease"):
        Settings(session_cache_lease=0.01)
    env = {"BASTION_SESSION_CACHE": "tracking", "BASTION_SESSION_CACHE_LEASE": "0.5"}
    loaded = Settings.load(env=env)
    assert loaded.session_cache == "tracking" and loaded.session_cache_lease == 0.5


async def test_cluster_has_a_listener_canary_and_lease_per_primary(cluster_redis: str) -> None:
    bastion = Bastion(
        Settings(redis_url=cluster_redis, redis_cluster=True, session_cache="tracking")
    )
    news = [await bastion.sessions.create(f"user{i}") for i in range(12)]
    await until("live", lambda: bastion.session_cache_stats().state == "live", 5)
    cache = cache_of(bastion)
    assert len(cache._nodes) == 3
    assert len({n.address for n in cache._nodes}) == 3
    for new in news:
        await warm(bastion, new.token)
    # Entries of every primary are served, each under its own primary's lease.
    assert (
        len({entry[2].address for group in cache._entries.values() for entry in group.values()})
        == 3
    )
    other = Bastion(Settings(redis_url=cluster_redis, redis_cluster=True))
    for new in news:
        await other.sessions.revoke(new.session.user_id, new.session.id)
    for new in news:
        key = keys.sessions("bastion", new.session.user_id)
        await until("dropped", lambda k=key: k not in cache._entries, LEASE)  # type: ignore[misc]
        assert await bastion.sessions.authenticate(new.token) is None
    await other.aclose()
    await bastion.aclose()


async def test_listeners_outlive_the_request_that_started_them(
    real_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener starts inside a request's Redis budget, and must not inherit it.

    A task copies its creator's context: with the budget of the request that started the
    cache, every later connect, read and canary write of the listener was cut to 1 ms once that
    request's budget ran out (the lease lapsed under load, the listener reconnected in a loop,
    and a cancel racing those timeouts could leave the loop waiting forever at shutdown).
    """
    from bastion import redis_deadline

    seen: list[float | None] = []
    probe = SessionCache._probe

    async def recording(self: SessionCache, node: Any) -> None:
        seen.append(redis_deadline._DEADLINE.get())
        await probe(self, node)

    monkeypatch.setattr(SessionCache, "_probe", recording)
    bastion = cached(real_redis, redis_timeout=0.2)
    new = await bastion.sessions.create("u1")  # this request's run starts the listener
    await warm(bastion, new.token)
    assert seen == [None]  # no request's deadline in the listener's context
    await asyncio.sleep(LEASE + 0.5)  # long past the first request's budget
    stats = bastion.session_cache_stats()
    assert (stats.state, stats.lease_lapses, stats.reconnects) == ("live", 0, 0), stats
    hits = stats.hits
    assert await bastion.sessions.authenticate(new.token) is not None
    assert bastion.session_cache_stats().hits == hits + 1
    await bastion.aclose()


REVOKE_ON_CLUSTER = """
import sys
from bastion import Bastion, Settings
b = Bastion(Settings(redis_url=sys.argv[1], redis_cluster=True))
assert b.sync.sessions.revoke(sys.argv[2], sys.argv[3])
"""


async def test_a_resharded_slot_flushes_and_revocations_after_it_are_honoured(
    cluster_redis: str, redis_cluster: Any
) -> None:
    """A cached user's slot migrated to another primary (SETSLOT + MIGRATE, as resharding does):
    everything is flushed and the listeners rebuilt, the entry comes back under the lease of its
    new primary, and a revocation made on that primary by another process is never served."""
    from redis.cluster import key_slot

    from tests.test_cluster import Migration

    bastion = Bastion(
        Settings(redis_url=cluster_redis, redis_cluster=True, session_cache="tracking")
    )
    stayer = await bastion.sessions.create("stayer")  # the first request starts the listeners
    await until("live", lambda: bastion.session_cache_stats().state == "live", 5)
    cache = cache_of(bastion)
    canary_slots = {key_slot(n.tag.encode()) for n in cache._nodes}
    # A user whose slot holds no canary (a canary written mid-migration would only add noise).
    user = next(
        f"mover{i}"
        for i in range(1000)
        if key_slot(keys.sessions("bastion", f"mover{i}").encode()) not in canary_slots
    )
    mover = await bastion.sessions.create(user)
    for new in (mover, stayer):
        await warm(bastion, new.token)
    key = keys.sessions("bastion", user)
    slot = key_slot(key.encode())
    (before,) = [entry[2] for entry in cache._entries[key].values()]
    flushes = bastion.session_cache_stats().flushes
    migration = Migration(redis_cluster, slot)
    assert before.address == ("127.0.0.1", migration.source)
    try:
        migration.begin()
        for name in migration.nodes[migration.source].execute_command(
            "CLUSTER", "GETKEYSINSLOT", slot, 100
        ):
            migration.move(name.decode())
        migration.finish()
        # MIGRATE deleted the key on the old primary: its listener heard of it.
        dropped = await until("the moved session dropped", lambda: key not in cache._entries, LEASE)
        moved = time.monotonic()
        # The next read follows MOVED; the cache sees the slot has changed hands: all flushed.
        assert await bastion.sessions.authenticate(mover.token) is not None
        assert bastion.session_cache_stats().flushes > flushes
        assert cache._entries == {}
        for _ in range(500):  # requests start the listeners again (at most every 0.5 s)
            if bastion.session_cache_stats().state == "live":
                break
            assert await bastion.sessions.authenticate(stayer.token) is not None
            await asyncio.sleep(0.01)
        live_again = time.monotonic() - moved
        for new in (mover, stayer):
            await warm(bastion, new.token)
        (after,) = [entry[2] for entry in cache._entries[key].values()]
        assert after.address == ("127.0.0.1", migration.target)
        # Revoked by another process, on the new primary: dropped, never served again.
        done = subprocess.run(
            [sys.executable, "-c", REVOKE_ON_CLUSTER, cluster_redis, user, mover.session.id],
            timeout=30,
        )
        assert done.returncode == 0
        revoked = await until(
            "the revoked session dropped", lambda: key not in cache._entries, LEASE
        )
        print(
            f"\nresharded slot: moved session dropped {1000 * dropped:.1f} ms after the migration"
            f" ended, live again {1000 * live_again:.0f} ms after the first read that"
            f" followed MOVED; a revocation after it dropped within {1000 * revoked:.1f} ms"
        )
        for _ in range(20):
            assert await bastion.sessions.authenticate(mover.token) is None
            await asyncio.sleep(0.05)
        assert await bastion.sessions.authenticate(stayer.token) is not None
    finally:
        # Give the slot back, so the cluster is left as the other tests know it.
        back = Migration(redis_cluster, slot)
        back.target = before.address[1] if before.address else back.target
        if back.source != back.target:
            back.begin()
            for name in back.nodes[back.source].execute_command(
                "CLUSTER", "GETKEYSINSLOT", slot, 100
            ):
                back.move(name.decode())
            back.finish()
        back.close()
        migration.close()
        await bastion.aclose()


class FreezingProxy:
    """A loopback TCP proxy that can freeze the connections it carries: bytes are still read
    from both ends but never passed on, and nothing is closed (a silent network loss)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.flowing: list[asyncio.Event] = []
        self.tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> int:
        """Freeze every connection open now (later ones flow); how many were frozen."""
        for flowing in self.flowing:
            flowing.clear()
        frozen, self.flowing = len(self.flowing), []
        return frozen

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        flowing = asyncio.Event()
        flowing.set()
        self.flowing.append(flowing)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if flowing.is_set():
                    dst.write(data)

        tasks = [asyncio.ensure_future(pipe(reader, up_writer)),
                 asyncio.ensure_future(pipe(up_reader, writer))]  # fmt: skip
        self.tasks.update(tasks)
        await asyncio.wait(tasks, return_when="FIRST_COMPLETED")
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()


async def test_a_frozen_listener_connection_lapses_then_is_replaced(
    real_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's TCP connection stops carrying anything, without closing: hits stop
    within the lease, a revocation meanwhile is never served, the listener is declared dead and
    replaced (a new connection), and the cache refills."""
    port = int(real_redis.rsplit(":", 1)[1].split("/")[0])
    proxy = FreezingProxy(port)
    proxy_port = await proxy.start()
    maker = SessionCache._maker

    def through_proxy(self: SessionCache) -> Any:  # the listener alone goes through the proxy
        make = maker(self)
        return lambda: _with_port(make(), proxy_port)

    monkeypatch.setattr(SessionCache, "_maker", through_proxy)
    bastion = cached(real_redis)
    cache = cache_of(bastion)
    new, other = await bastion.sessions.create("u1"), await bastion.sessions.create("u2")
    for session in (new, other):
        await warm(bastion, session.token)
    args = next(iter(cache._entries[keys.sessions("bastion", "u1")]))
    flushes, reconnects = bastion.session_cache_stats().flushes, cache._counts["reconnects"]
    assert proxy.freeze() == 1  # the listener's connection only: data goes straight to Redis
    frozen = time.monotonic()
    # Revoked behind Bastion's back: its invalidation is lost in the frozen connection.
    admin = redis.Redis.from_url(real_redis)
    admin.hdel(keys.sessions("bastion", "u1"), new.session.id)
    admin.close()
    served_until = frozen
    while cache._lookup(args) is not None:  # the stale entry, until the lease ends
        served_until = time.monotonic()
        assert served_until - frozen < LEASE, "served past the lease"
        await asyncio.sleep(0.001)
    lapsed = time.monotonic() - frozen
    assert bastion.session_cache_stats().lease_lapses >= 1
    assert await bastion.sessions.authenticate(new.token) is None  # read from Redis: revoked
    await until(
        "declared dead, flushed", lambda: bastion.session_cache_stats().flushes > flushes, 3
    )
    flushed = time.monotonic() - frozen
    assert cache._counts["reconnects"] > reconnects or await until(
        "reconnected", lambda: cache._counts["reconnects"] > reconnects, 3
    )
    await until("live again", lambda: bastion.session_cache_stats().state == "live", 3)
    replaced = time.monotonic() - frozen
    await warm(bastion, other.token)
    assert await bastion.sessions.authenticate(new.token) is None
    print(
        f"\nfrozen listener: last stale hit {1000 * (served_until - frozen):.0f} ms,"
        f" hits refused from {1000 * lapsed:.0f} ms, flushed at {1000 * flushed:.0f} ms,"
        f" live again at {1000 * replaced:.0f} ms"
    )
    await bastion.aclose()
    await proxy.stop()
