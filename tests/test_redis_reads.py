"""The request-path reads (HMGET, SMEMBERS) sent through redis-py's connection API.

Opt-in (``redis_lean_reads``): they must answer exactly what the client's own methods answer,
leave the connection in step after an error reply, and be used only for plain pooled clients.
By default every read goes through the client's command methods (``tests/test_telemetry.py``
shows a command hook seeing them).
"""

from __future__ import annotations

import fakeredis
import pytest
import redis
import redis.asyncio

from bastion.errors import ServiceUnavailable
from bastion.redisio import AsyncRunner, Batch, Call, Script, Steps, SyncRunner, together

pytestmark = pytest.mark.anyio


def read(*ops: Call) -> Steps[list[object]]:
    """One round with ``ops`` as one batch (or one call), returning the replies."""
    if len(ops) == 1:
        return [(yield ops[0])]
    return (yield Batch(list(ops)))  # type: ignore[no-any-return]


def caught(steps: Steps[object]) -> Steps[object]:
    """The steps' value, or the error the runner threw into them."""
    try:
        return (yield from steps)
    except ServiceUnavailable as exc:
        return exc


def seed(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.hset("h", mapping={"a": "1", "b": "2"})
    client.sadd("s", "x", "y")
    client.close()


CASES = [
    [Call("hmget", ("h", "a", "b", "c"))],
    [Call("hmget", ("missing", "a"))],
    [Call("smembers", ("s",))],
    [Call("smembers", ("missing",))],
    [Call("hmget", ("h", "b")), Call("smembers", ("s",))],
]


def normal(op: Call, reply: object) -> object:
    # SMEMBERS comes back as a list on this path and as a set from the client's method.
    return sorted(reply) if op.name == "smembers" else reply  # type: ignore[call-overload]


async def test_async_reads_answer_like_the_client(real_redis: str) -> None:
    seed(real_redis)
    client = redis.asyncio.Redis.from_url(real_redis)
    runner = AsyncRunner(client, {}, lean_reads=True)
    assert runner._lean
    try:
        for ops in CASES:
            got = await runner.run(read(*ops))
            want = [await getattr(client, op.name)(*op.args) for op in ops]
            assert [normal(op, g) for op, g in zip(ops, got, strict=True)] == [
                normal(op, w) for op, w in zip(ops, want, strict=True)
            ], ops
    finally:
        await client.aclose()


def test_sync_reads_answer_like_the_client(real_redis: str) -> None:
    seed(real_redis)
    client = redis.Redis.from_url(real_redis)
    runner = SyncRunner(client, {}, lean_reads=True)
    assert runner._lean
    try:
        for ops in CASES:
            got = runner.run(read(*ops))
            want = [getattr(client, op.name)(*op.args) for op in ops]
            assert [normal(op, g) for op, g in zip(ops, got, strict=True)] == [
                normal(op, w) for op, w in zip(ops, want, strict=True)
            ], ops
    finally:
        client.close()


async def test_an_error_reply_is_a_503_and_the_connection_stays_in_step(real_redis: str) -> None:
    seed(real_redis)
    client = redis.asyncio.Redis.from_url(real_redis, max_connections=1)
    runner = AsyncRunner(client, {}, lean_reads=True)
    try:
        for _ in range(3):
            # HMGET on a set: WRONGTYPE. The SMEMBERS reply after it must still be read.
            wrong = await runner.run(
                caught(read(Call("hmget", ("s", "a")), Call("smembers", ("s",))))
            )
            assert isinstance(wrong, ServiceUnavailable)
            # The one pooled connection answers the next request with its own replies.
            fine = await runner.run(read(Call("hmget", ("h", "a")), Call("smembers", ("s",))))
            assert fine[0] == [b"1"] and sorted(fine[1]) == [b"x", b"y"]
    finally:
        await client.aclose()


def test_sync_error_reply_keeps_the_connection_in_step(real_redis: str) -> None:
    seed(real_redis)
    client = redis.Redis.from_url(real_redis, max_connections=1)
    runner = SyncRunner(client, {}, lean_reads=True)
    try:
        for _ in range(3):
            wrong = runner.run(caught(read(Call("hmget", ("s", "a")), Call("smembers", ("s",)))))
            assert isinstance(wrong, ServiceUnavailable)
            assert runner.run(read(Call("hmget", ("h", "b")))) == [[b"2"]]
    finally:
        client.close()


async def test_a_server_that_is_gone_is_a_503() -> None:
    client = redis.asyncio.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    runner = AsyncRunner(client, {}, lean_reads=True)
    assert runner._lean
    try:
        assert isinstance(
            await runner.run(caught(read(Call("hmget", ("h", "a"))))), ServiceUnavailable
        )
    finally:
        await client.aclose()


async def test_together_batches_two_reads_into_one_exchange(real_redis: str) -> None:
    seed(real_redis)
    client = redis.asyncio.Redis.from_url(real_redis)
    runner = AsyncRunner(client, {}, lean_reads=True)

    def one(op: Call) -> Steps[object]:
        return (yield op)

    try:
        got = await runner.run(
            together(one(Call("hmget", ("h", "a"))), one(Call("smembers", ("s",))))
        )
        assert got[0] == [b"1"] and sorted(got[1]) == [b"x", b"y"]  # type: ignore[arg-type]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "client",
    [
        fakeredis.FakeAsyncRedis(),
        redis.asyncio.Redis(single_connection_client=True),
        type("Mine", (redis.asyncio.Redis,), {})(),
    ],
    ids=["fakeredis", "single-connection", "subclass"],
)
def test_other_clients_keep_the_command_methods(client: object) -> None:
    assert not AsyncRunner(client, {}, lean_reads=True)._lean


def test_a_client_side_cache_keeps_the_command_methods() -> None:
    from redis.cache import CacheConfig

    client = redis.Redis(protocol=3, cache_config=CacheConfig())
    assert not SyncRunner(client, {}, lean_reads=True)._lean
    assert SyncRunner(redis.Redis(), {}, lean_reads=True)._lean


def test_the_client_methods_are_the_default() -> None:
    assert not AsyncRunner(redis.asyncio.Redis(), {})._lean
    assert not SyncRunner(redis.Redis(), {})._lean
    assert AsyncRunner(redis.asyncio.Redis(), {}, lean_reads=True)._lean


ECHO = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.mark.parametrize("use_async", [True, False])
async def test_scripts_in_a_batch_run_on_both_runners(real_redis: str, use_async: bool) -> None:
    # redis.asyncio's scripts are coroutines even on a pipeline: once, none of them ran.
    seed(real_redis)

    def steps() -> Steps[list[object]]:
        ops: list[Call | Script] = [Script("echo", ["n"], [2]), Call("get", ("n",))]
        return (yield Batch([*ops, Script("echo", ["n"], [3])]))  # type: ignore[no-any-return]

    if use_async:
        client = redis.asyncio.Redis.from_url(real_redis)
        replies = await AsyncRunner(client, {"echo": ECHO}).run(steps())
        await client.aclose()
    else:
        sync_client = redis.Redis.from_url(real_redis)
        replies = SyncRunner(sync_client, {"echo": ECHO}).run(steps())
        sync_client.close()
    assert replies == [2, b"2", 5]


@pytest.mark.parametrize("front", ["sync", "async"])
async def test_only_a_fast_connection_error_is_retried(front: str) -> None:
    import time

    from redis.exceptions import ConnectionError, TimeoutError

    from bastion.redis_clients import AsyncBudgetRetry, BudgetRetry

    budget = 1.0

    async def run(failures: list[BaseException], delay: float = 0.0) -> tuple[str, int]:
        calls = 0

        def attempt() -> str:
            nonlocal calls
            calls += 1
            if failures:
                time.sleep(delay)
                raise failures.pop(0)
            return "ok"

        async def async_attempt() -> str:
            return attempt()

        async def async_fail(_error: Exception) -> None:
            return None

        if front == "sync":
            result = BudgetRetry(budget).call_with_retry(attempt, lambda _error: None)
        else:
            result = await AsyncBudgetRetry(budget).call_with_retry(async_attempt, async_fail)
        return result, calls

    # A refused or reset connection (a restart): asked again once, at once.
    assert await run([ConnectionError("reset")]) == ("ok", 2)
    with pytest.raises(ConnectionError):
        await run([ConnectionError("reset"), ConnectionError("still down")])
    # A timeout means a hung Redis: asking again would double the wait.
    with pytest.raises(TimeoutError):
        await run([TimeoutError("hung")])
    # A connection error after a long wait: no second wait.
    with pytest.raises(ConnectionError):
        await run([ConnectionError("late")], delay=budget * 0.2)
