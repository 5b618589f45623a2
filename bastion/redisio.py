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


Op = Call | Script
Steps = Generator[Op, Any, T]


def _unavailable(exc: RedisError) -> ServiceUnavailable:
    logger.error("Redis unavailable: %s: %s", type(exc).__name__, exc)
    return ServiceUnavailable()


class AsyncRunner:
    """Runs steps on a ``redis.asyncio`` client."""

    def __init__(self, client: Any, scripts: Mapping[str, str]) -> None:
        self.client = client
        self._scripts = {name: client.register_script(src) for name, src in scripts.items()}

    async def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to completion and return its value."""
        try:
            op = next(steps)
            while True:
                try:
                    if isinstance(op, Script):
                        result = await self._scripts[op.name](keys=op.keys, args=op.args)
                    else:
                        result = await getattr(self.client, op.name)(*op.args)
                except RedisError as exc:
                    raise _unavailable(exc) from exc
                op = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class SyncRunner:
    """Runs steps on a ``redis`` (blocking) client."""

    def __init__(self, client: Any, scripts: Mapping[str, str]) -> None:
        self.client = client
        self._scripts = {name: client.register_script(src) for name, src in scripts.items()}

    def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to completion and return its value."""
        try:
            op = next(steps)
            while True:
                try:
                    if isinstance(op, Script):
                        result = self._scripts[op.name](keys=op.keys, args=op.args)
                    else:
                        result = getattr(self.client, op.name)(*op.args)
                except RedisError as exc:
                    raise _unavailable(exc) from exc
                op = steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
