"""Bastion on a Redis Cluster: script batches, slot migration mid-operation, revoke_everyone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import key_slot

from bastion import Bastion, Settings
from bastion.cli import main
from bastion.errors import ServiceUnavailable
from bastion.redisio import Batch, Steps, together
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


def _interrupted(steps: Steps[int], after: int) -> Steps[int]:
    """``steps`` with a Redis failure (a 503) thrown in at its ``after``-th batch of scripts."""
    batches, reply = 0, None
    op = next(steps)
    while True:
        if isinstance(op, Batch):
            batches += 1
            if batches == after:
                op = steps.throw(ServiceUnavailable())  # raises out of the walk
        reply = yield op
        try:
            op = steps.send(reply)
        except StopIteration as done:
            return int(done.value)


async def test_revoke_everyone_walks_every_primary_and_can_be_run_again(
    bastion: Bastion,
    redis_cluster: RedisCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = [f"everyone{i}" for i in range(250)]
    tokens = [
        bastion.sync.sessions.create(u).token
        for u in users
        for _ in range(2 if u[-1] == "0" else 1)
    ]
    per_primary = [redis.Redis(port=p).dbsize() for p in redis_cluster.masters()]
    assert len(per_primary) == 3 and all(per_primary), per_primary  # spread over every primary
    # A walk cut short by Redis (a 503 after its first batch of revocations)...
    with pytest.raises(ServiceUnavailable):
        bastion._sync_runner.run(_interrupted(bastion._sessions_core.revoke_everyone(batch=50), 2))
    left = [t for t in tokens if bastion.sync.sessions.authenticate(t) is not None]
    assert 0 < len(left) < len(tokens)
    # ... is run again, from the async front this time, and ends every session that was left.
    assert await bastion.sessions.revoke_everyone(batch=50) == len(left)
    assert all(bastion.sync.sessions.authenticate(t) is None for t in tokens)
    assert not [k for k in bastion.sync.redis.scan_iter(match="bastion:{*}:s")]
    assert bastion.sync.sessions.revoke_everyone() == 0
    # The command line reaches the cluster through BASTION_REDIS_CLUSTER.
    new = bastion.sync.sessions.create("late")
    monkeypatch.setenv("BASTION_REDIS_CLUSTER", "true")
    assert main(["sessions", "revoke", "--all-users", "--redis-url", redis_cluster.url]) == 0
    assert "revoked 1 session(s)" in capsys.readouterr().out
    assert bastion.sync.sessions.authenticate(new.token) is None
