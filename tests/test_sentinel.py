"""Bastion on Sentinel: the master is killed under load; 503 during the failover, then 200.

The session cache is on: its listener follows the master the data pool uses, is flushed when
the old master goes, and serves again from the new one (a session revoked there is refused)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from bastion import Bastion, Settings
from bastion.errors import ServiceUnavailable
from tests.conftest import demo_app
from tests.redis_cluster import RedisSentinels, _ask, wait_for

pytestmark = pytest.mark.anyio
COOKIE = "__Host-bastion_session"
FAILOVER_WITHIN = 30.0


async def test_master_killed_under_load(redis_sentinels: RedisSentinels) -> None:
    settings = Settings(
        redis_sentinels=redis_sentinels.sentinels,
        redis_sentinel_master=redis_sentinels.name,
        redis_timeout=0.5,
        session_cache="tracking",
    )
    bastion = Bastion(settings)
    first_master = redis_sentinels.master_port()
    tokens = [(await bastion.sessions.create(f"user{i}")).token for i in range(20)]
    # Acknowledged by the replica: these are the sessions a failover must keep.
    assert await bastion.redis.execute_command("WAIT", 1, 2000) == 1
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://testserver"
    ) as client:

        async def me(token: str) -> int:
            response = await client.get("/me", headers={"cookie": f"{COOKIE}={token}"})
            if response.status_code == 200:
                assert response.json()["user"] == token.split(".")[0]  # never served as a guest
            return response.status_code

        assert {await me(t) for t in tokens} == {200}
        (
            redis_sentinels.master
            if first_master == redis_sentinels.master.port
            else redis_sentinels.replica
        ).stop()
        deadline = time.monotonic() + FAILOVER_WITHIN
        recovered = False
        while time.monotonic() < deadline and not recovered:
            round_statuses = [await me(t) for t in tokens[:5]]
            statuses.update(round_statuses)
            # Cached sessions may still be served within the lease: recovered means the
            # sentinels named a new master and it answers.
            recovered = (
                set(round_statuses) == {200} and redis_sentinels.master_port() != first_master
            )
            await asyncio.sleep(0.05)
        assert recovered, statuses
        assert redis_sentinels.master_port() != first_master
        # Every acknowledged session survived, and the new master takes writes.
        assert {await me(t) for t in tokens} == {200}
        new = await bastion.sessions.create("after")
        assert await me(new.token) == 200
        # The cache follows the new master: live again, and a revocation there is honoured.
        cache = bastion._session_cache
        assert cache is not None and await cache.caught_up(10)
        stats = bastion.session_cache_stats()
        assert stats.reconnects >= 1 and stats.state == "live", stats
        hits = stats.hits
        assert await me(tokens[0]) == 200 and await me(tokens[0]) == 200
        assert bastion.session_cache_stats().hits > hits
        user, session_id = tokens[0].split(".")[:2]
        other = Bastion(settings.__class__(**{**_plain(settings), "session_cache": "off"}))
        assert await other.sessions.revoke(user, session_id)
        await other.aclose()
        assert await cache.caught_up(5)
        assert await me(tokens[0]) == 401
    await bastion.aclose()
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, "the failover was not seen at all"
    print(f"\nSentinel failover under load: {dict(statuses)}")


def test_sentinel_settings_are_checked() -> None:
    from bastion.errors import ConfigError

    with pytest.raises(ConfigError, match="redis_sentinel_master"):
        Settings(redis_sentinels=["127.0.0.1:26379"])
    with pytest.raises(ConfigError, match="redis_sentinels"):
        Settings(redis_sentinels=["no port"], redis_sentinel_master="m")
    with pytest.raises(ConfigError, match="redis_cluster"):
        Settings(redis_cluster=True, redis_sentinels=["h:1"], redis_sentinel_master="m")
    with pytest.raises(ConfigError, match="redis_url"):
        Settings(redis_cluster=True)
    env = {"BASTION_REDIS_CLUSTER": "true", "BASTION_REDIS_URL": "redis://10.0.0.5:7000"}
    assert Settings.load(env=env).redis_cluster is True
    env = {"BASTION_REDIS_SENTINELS": "a:26379,b:26379", "BASTION_REDIS_SENTINEL_MASTER": "m"}
    assert Settings.load(env=env).redis_sentinels == ("a:26379", "b:26379")


@pytest.mark.parametrize("runner", ["async", "sync"])
async def test_a_demoted_master_takes_no_write(runner: str) -> None:
    """SENTINEL FAILOVER demotes the master Bastion is connected to: its writes go to the new one.

    Sessions are created in a loop across the switch. Each one Bastion acknowledged must be on
    the new master afterwards (a write the old master took after the promotion would be lost
    when it resyncs as a replica); the others failed with 503 (READONLY from the old master).
    """
    sentinels = RedisSentinels().start()  # its own: the shared set-up loses its master above
    try:
        bastion = Bastion(
            Settings(
                redis_sentinels=sentinels.sentinels,
                redis_sentinel_master=sentinels.name,
                redis_timeout=0.5,
            )
        )
        old = sentinels.master_port()

        async def create(user: str) -> Any:
            if runner == "sync":  # the blocking client and its pool, in a thread
                return await asyncio.to_thread(bastion.sync.sessions.create, user)
            return await bastion.sessions.create(user)

        acknowledged: list[str] = []
        refused = 0
        for i in range(5):  # connections to the old master are open in the pool
            acknowledged.append((await create(f"before{i}")).token)
        assert (
            _ask(sentinels.sentinel_ports[0], "sentinel", "failover", sentinels.name).strip()
            == "OK"
        )
        deadline = time.monotonic() + FAILOVER_WITHIN
        readonly_seen, after = False, 0
        while time.monotonic() < deadline and after < 20:
            try:
                made = await create(f"user{len(acknowledged) + refused}")
                acknowledged.append(made.token)
                after += readonly_seen
            except ServiceUnavailable:
                refused += 1
            if not readonly_seen:
                demoted = "role:slave" in _ask(old, "info", "replication")
                readonly_seen = demoted and sentinels.master_port() != old
            await asyncio.sleep(0.01)
        assert readonly_seen, "the old master was never demoted"
        new = sentinels.master_port()
        assert new != old
        wait_for(
            "old master synced",
            lambda: "master_link_status:up" in _ask(old, "info", "replication"),
        )
        lost = [t for t in acknowledged if await bastion.sessions.authenticate(t) is None]
        print(
            f"\nSentinel demotion: {len(lost)} of {len(acknowledged)} acknowledged lost, "
            f"{refused} refused with 503"
        )
        assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged writes lost"
        # Nothing is written to the demoted master: it refuses writes itself.
        assert "READONLY" in _ask(old, "set", "probe", "1")
        await bastion.aclose()
        print(
            f"\nSentinel demotion ({runner}): {len(acknowledged)} sessions acknowledged, all on "
            f"the new master; {refused} refused with 503 during the switch"
        )
    finally:
        sentinels.cleanup()


def _plain(settings: Settings) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
