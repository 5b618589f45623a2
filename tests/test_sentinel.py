"""Bastion on Sentinel: the master is killed under load; 503 during the failover, then 200.

The session cache is on: its listener follows the master the data pool uses, is flushed when
the old master goes, and serves again from the new one (a session revoked there is refused)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from bastion import Bastion, Settings
from tests.conftest import demo_app
from tests.redis_cluster import RedisSentinels

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


def _plain(settings: Settings) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
