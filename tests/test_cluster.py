"""Bastion on a Redis Cluster: batches with scripts, and a user's slot migrating mid-operation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import key_slot

from bastion import Bastion, Settings
from bastion.errors import ServiceUnavailable
from bastion.redisio import together
from bastion.sessions import keys
from tests.redis_cluster import RedisCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def bastion(cluster_redis: str) -> Iterator[Bastion]:
    with Bastion(Settings(redis_url=cluster_redis, redis_cluster=True)) as made:
        yield made


async def test_together_runs_scripts_in_a_batch_on_both_runners(bastion: Bastion) -> None:
    """Scripts of several slots in one batch: each runs, on the async and the sync runner."""
    users = [f"batch{i}" for i in range(6)]
    assert len({key_slot(keys.sessions("bastion", u).encode()) for u in users}) > 1
    made = await bastion._runner.run(
        together(*(bastion._sessions_core.create(u, user_agent="ua") for u in users))
    )
    assert [m.session.user_id for m in made] == users
    listed = bastion._sync_runner.run(together(*(bastion._sessions_core.list(u) for u in users)))
    assert [[s.id for s in found] for found in listed] == [[m.session.id] for m in made]


class Migration:
    """One slot moved between two masters by hand, key by key, as redis-cli --cluster does."""

    def __init__(self, cluster: RedisCluster, slot: int) -> None:
        self.slot = slot
        self.nodes = {p: redis.Redis(port=p) for p in cluster.masters()}
        owner = [p for p, c in self.nodes.items() if self._owns(c)]
        self.source = owner[0]
        self.target = next(p for p in self.nodes if p != self.source)
        self.ids = {p: c.execute_command("CLUSTER", "MYID").decode() for p, c in self.nodes.items()}

    def _owns(self, client: redis.Redis) -> bool:
        port = client.connection_pool.connection_kwargs["port"]
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= self.slot <= end:
                return bool(master[1] == port)
        return False

    def begin(self) -> None:
        self.nodes[self.target].execute_command(
            "CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.ids[self.source]
        )
        self.nodes[self.source].execute_command(
            "CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.ids[self.target]
        )

    def move(self, key: str) -> None:
        self.nodes[self.source].execute_command(
            "MIGRATE", "127.0.0.1", self.target, "", 0, 5000, "KEYS", key
        )

    def finish(self) -> None:
        for port in (self.target, self.source, *self.nodes):
            self.nodes[port].execute_command(
                "CLUSTER", "SETSLOT", self.slot, "NODE", self.ids[self.target]
            )

    def close(self) -> None:
        for client in self.nodes.values():
            client.close()


def test_a_user_migrating_mid_operation_ends_in_the_promised_state(
    bastion: Bastion, redis_cluster: RedisCluster
) -> None:
    """revoke_all, list, create while the user's keys are half moved between two masters."""
    user = "mover"
    made = [bastion.sync.sessions.create(user) for _ in range(5)]
    bastion.sync.redis.hset(keys.user("bastion", user), "verified", "1")
    sessions_key = keys.sessions("bastion", user)
    migration = Migration(redis_cluster, key_slot(sessions_key.encode()))
    try:
        migration.begin()
        # The session hash has moved, the account hash has not: one key per script follows ASK.
        migration.move(sessions_key)
        assert len(bastion.sync.sessions.list(user)) == 5
        ended = bastion.sync.sessions.revoke_all(user)
        assert sorted(ended) == sorted(m.session.id for m in made)
        assert all(bastion.sync.sessions.authenticate(m.token) is None for m in made)
        assert bastion.sync.sessions.list(user) == []
        # Creating needs both keys, in two nodes now: refused whole (TRYAGAIN, then 503)...
        with pytest.raises(ServiceUnavailable):
            bastion.sync.sessions.create(user)
        migration.move(keys.user("bastion", user))
        migration.finish()
    finally:
        migration.close()
    # ... and nothing of it was written; after the migration everything works on the new node.
    assert bastion.sync.sessions.list(user) == []
    again = bastion.sync.sessions.create(user)
    assert [s.id for s in bastion.sync.sessions.list(user)] == [again.session.id]
    assert all(bastion.sync.sessions.authenticate(m.token) is None for m in made)
