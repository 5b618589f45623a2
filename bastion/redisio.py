"""Redis work as data: sans-IO steps that yield operations, and the async and sync drivers.

A store method is a generator that yields :class:`Call` or :class:`Script` and receives each
result, so its logic exists once; :class:`AsyncRunner` (redis.asyncio) and :class:`SyncRunner`
(redis) carry the operations to Redis. Any Redis failure becomes ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from typing import Any, NamedTuple, TypeVar

from redis.exceptions import RedisError

from bastion.errors import ServiceUnavailable

logger = logging.getLogger("bastion.redis")

T = TypeVar("T")


class Call(NamedTuple):
    """One Redis command: ``client.<name>(*args)``."""

    name: str
    args: tuple[Any, ...]


class Script(NamedTuple):
    """A registered Lua script, run by name with keys and arguments."""

    name: str
    keys: list[str]
    args: list[Any]


class Batch(NamedTuple):
    """Several operations sent together in one round trip (a pipeline, not a transaction)."""

    ops: list[Call | Script]


Op = Call | Script | Batch
Steps = Generator[Op, Any, T]


def together(*steps: Steps[Any]) -> Steps[list[Any]]:
    """Run several steps side by side: each round, their next operations go out as one batch."""
    results: list[Any] = [None] * len(steps)
    pending: list[tuple[int, Op]] = []
    for index, step in enumerate(steps):
        try:
            pending.append((index, next(step)))
        except StopIteration as done:
            results[index] = done.value
    while pending:
        if len(pending) == 1:
            replies = [(yield pending[0][1])]
        else:
            flat: list[Call | Script] = []
            for _, op in pending:
                if isinstance(op, Batch):
                    raise TypeError("together() cannot nest batches")
                flat.append(op)
            replies = yield Batch(flat)
        following: list[tuple[int, Op]] = []
        for (index, _), reply in zip(pending, replies, strict=True):
            try:
                following.append((index, steps[index].send(reply)))
            except StopIteration as done:
                results[index] = done.value
        pending = following
    return results


def _unavailable(exc: RedisError) -> ServiceUnavailable:
    logger.error("Redis unavailable: %s: %s", type(exc).__name__, exc)
    return ServiceUnavailable()


class _Runner:
    def __init__(self, client: Any, scripts: Mapping[str, str]) -> None:
        self.client = client
        self._scripts = {name: client.register_script(src) for name, src in scripts.items()}

    def _queue(self, pipe: Any, op: Call | Script) -> None:
        if isinstance(op, Script):
            self._scripts[op.name](keys=op.keys, args=op.args, client=pipe)
        else:
            getattr(pipe, op.name)(*op.args)


class AsyncRunner(_Runner):
    """Runs steps on a ``redis.asyncio`` client."""

    async def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to completion and return its value."""
        try:
            op = next(steps)
            while True:
                try:
                    if isinstance(op, Batch):
                        pipe = self.client.pipeline(transaction=False)
                        for item in op.ops:
                            self._queue(pipe, item)
                        result = await pipe.execute()
                    elif isinstance(op, Script):
                        result = await self._scripts[op.name](keys=op.keys, args=op.args)
                    else:
                        result = await getattr(self.client, op.name)(*op.args)
                except RedisError as exc:
                    raise _unavailable(exc) from exc
                op = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class SyncRunner(_Runner):
    """Runs steps on a ``redis`` (blocking) client."""

    def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to completion and return its value."""
        try:
            op = next(steps)
            while True:
                try:
                    if isinstance(op, Batch):
                        pipe = self.client.pipeline(transaction=False)
                        for item in op.ops:
                            self._queue(pipe, item)
                        result = pipe.execute()
                    elif isinstance(op, Script):
                        result = self._scripts[op.name](keys=op.keys, args=op.args)
                    else:
                        result = getattr(self.client, op.name)(*op.args)
                except RedisError as exc:
                    raise _unavailable(exc) from exc
                op = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
