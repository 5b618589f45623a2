"""The time a Redis step has left: one budget of ``redis_timeout`` for everything it waits on.

A runner (:mod:`bastion.redisio`) sets a deadline when it starts a step; the pools and
connections :func:`bastion.redis_clients.make_clients` builds read it, so waiting for a free
connection, connecting (with its handshake), each retry and each reply together stay within
``redis_timeout``. Set separately, each of those waits had ``redis_timeout`` of its own, and
a request could wait several times the setting.

The deadline is a context variable: each asyncio task and each thread has its own, and code
outside a runner (a user's own commands on Bastion's client) keeps the plain timeouts.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from typing import Any

import redis
import redis.asyncio

__all__ = ["deadline_class", "left", "shift", "start", "stop"]

_DEADLINE: ContextVar[float | None] = ContextVar("bastion_redis_deadline", default=None)

MIN_WAIT = 0.001
"""Shortest wait handed to a socket or a pool once the budget is spent: 0 would mean
"non-blocking" to a socket (an error of another kind, which a retry might even repeat)."""


def start(budget: float) -> Token[float | None]:
    """Give the current task or thread ``budget`` seconds of Redis waits from now."""
    return _DEADLINE.set(time.monotonic() + budget)


def stop(token: Token[float | None]) -> None:
    """End the budget :func:`start` gave (back to the one before it, usually none)."""
    _DEADLINE.reset(token)


def shift(seconds: float) -> None:
    """Move the deadline ``seconds`` later: time spent on other work (password hashing)."""
    deadline = _DEADLINE.get()
    if deadline is not None:
        _DEADLINE.set(deadline + seconds)


def left(limit: float | None) -> float | None:
    """The wait to allow now: ``limit``, cut to what the budget has left (at least 1 ms)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return limit
    rest = max(deadline - time.monotonic(), MIN_WAIT)
    return rest if limit is None else min(limit, rest)


class _Timeouts:
    """The connect and socket timeouts of a connection, cut to the budget when one runs."""

    # The names redis-py's sync connections store their settings under (its asyncio ones use
    # plain attributes, which these properties take over).
    _socket_connect_timeout: float | None = None
    _socket_timeout: float | None = None

    @property
    def socket_connect_timeout(self) -> float | None:
        """How long a connect (and its handshake) may take now."""
        return left(self._socket_connect_timeout)

    @socket_connect_timeout.setter
    def socket_connect_timeout(self, value: float | None) -> None:
        self._socket_connect_timeout = value

    @property
    def socket_timeout(self) -> float | None:
        """How long a send or a read may take now."""
        return left(self._socket_timeout)

    @socket_timeout.setter
    def socket_timeout(self, value: float | None) -> None:
        self._socket_timeout = value


class _SyncTimeouts(_Timeouts):
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        # A blocking socket keeps the timeout it was given at connect; each read is told the
        # time left instead (the parser sets it on the socket and puts it back afterwards).
        if "timeout" not in kwargs and _DEADLINE.get() is not None:
            kwargs["timeout"] = self.socket_timeout
        return super().read_response(*args, **kwargs)  # type: ignore[misc]


class _PoolTimeout:
    """A blocking pool's wait for a free connection, cut to the budget when one runs."""

    _pool_limit: float | None = None

    @property
    def timeout(self) -> float | None:
        """How long to wait for a free connection now."""
        return left(self._pool_limit)

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._pool_limit = value


class BlockingPool(_PoolTimeout, redis.BlockingConnectionPool):
    """redis-py's blocking pool (waits for a free connection) within the budget."""


class AsyncBlockingPool(_PoolTimeout, redis.asyncio.BlockingConnectionPool):
    """:class:`BlockingPool` for ``redis.asyncio``."""


_CLASSES: dict[type, type] = {}


def deadline_class(connection_class: type) -> type:
    """``connection_class`` (plain, TLS or Unix socket; sync or asyncio) within the budget."""
    made = _CLASSES.get(connection_class)
    if made is None:
        is_async = issubclass(connection_class, redis.asyncio.connection.AbstractConnection)
        mixin = _Timeouts if is_async else _SyncTimeouts
        made = type(f"Budget{connection_class.__name__}", (mixin, connection_class), {})
        _CLASSES[connection_class] = made
    return made
