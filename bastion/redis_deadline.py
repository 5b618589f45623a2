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

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

import redis
import redis.asyncio
import redis.exceptions

__all__ = ["AsyncGate", "deadline_class", "left", "shift", "start_at", "stop"]

_DEADLINE: ContextVar[float | None] = ContextVar("bastion_redis_deadline", default=None)

MIN_WAIT = 0.001
"""Shortest wait handed to a socket or a pool once the budget is spent: 0 would mean
"non-blocking" to a socket (an error of another kind, which a retry might even repeat)."""


# A budget is started and stopped by every run of steps with Redis work, so these are the
# context variable's own methods, with no function around them. start_at(time.monotonic() +
# budget) gives the current task or thread that many seconds of Redis waits from now; stop(token)
# ends it (back to the deadline before, usually none).
start_at: Callable[[float], Token[float | None]] = _DEADLINE.set
stop: Callable[[Token[float | None]], None] = _DEADLINE.reset


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


class BlockingPool(_PoolTimeout, redis.ConnectionPool):
    """A pool that waits (within the budget) for a free connection when all are in use.

    redis-py's ``BlockingConnectionPool`` goes through a queue on every get and release, free
    connections or not (8 µs more per session look-up than the plain pool, measured on
    loopback); this one is the plain pool until every connection is in use.
    """

    def __init__(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._freed = threading.Condition(threading.Lock())
        self._waiting = 0

    def _can_get(self) -> bool:
        return bool(self._available_connections) or (
            self._created_connections < self.max_connections
        )

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connected connection; waits (within the budget) while all are in use."""
        give_up: float | None = None
        while True:
            try:
                # Arguments as given: redis-py before 5.3 passes the command name.
                return super().get_connection(*args, **kwargs)
            except redis.exceptions.ConnectionError:
                if self._can_get():  # not "too many connections": Redis itself failed
                    raise
                if give_up is None:
                    timeout = self.timeout
                    give_up = time.monotonic() + (timeout if timeout is not None else 1e9)
            with self._freed:
                # Counted before looking: a release either sees this waiter or left a
                # connection this look finds (no wake-up is lost).
                self._waiting += 1
                try:
                    rest = give_up - time.monotonic()
                    timed_out = not self._can_get() and (rest <= 0 or not self._freed.wait(rest))
                    if timed_out and not self._can_get():
                        raise redis.exceptions.ConnectionError("No connection available.")
                finally:
                    self._waiting -= 1

    def release(self, connection: Any) -> None:
        """Put ``connection`` back and wake a waiter, if any."""
        super().release(connection)
        if self._waiting:
            with self._freed:
                self._freed.notify()


class AsyncBlockingPool(_PoolTimeout, redis.asyncio.ConnectionPool):
    """:class:`BlockingPool` for ``redis.asyncio``: waits for a free connection only when none is.

    redis-py's asyncio ``BlockingConnectionPool`` takes a condition lock and starts a timer on
    every get, free connections or not: 18 µs more per request than the plain pool, measured
    with a session look-up on loopback. This one is the plain pool until every connection is
    in use; then a request queues (first come, first served) until a release wakes it.
    """

    def __init__(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _can_get(self) -> bool:
        return bool(self._available_connections) or (
            len(self._in_use_connections) < self.max_connections
        )

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connected connection; waits (within the budget) while all are in use."""
        if not self._can_get():
            await self._wait()
        # Arguments as given: redis-py before 5.3 passes the command name.
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                while not self._can_get():
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        if waiter.done() and not waiter.cancelled():
                            self._wake()  # woken, then timed out: the next one gets it
                        raise
        except TimeoutError:
            raise redis.exceptions.ConnectionError("No connection available.") from None

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def release(self, connection: Any) -> None:
        """Put ``connection`` back and wake the longest waiter."""
        await super().release(connection)
        if self._waiters:
            self._wake()


class AsyncGate:
    """At most ``capacity`` holders at once; the others queue (first come, first served) within
    the budget, then fail with ``ConnectionError`` like a full pool.

    For redis-py's asyncio cluster client, whose per-node pools cannot wait (they raise
    ``MaxConnectionsError`` at once when full, and take no pool class): the client holds a
    place here for each command or pipeline, so no node ever needs more connections than
    ``capacity``. Free places cost a counter check, no lock and no timer.
    """

    def __init__(self, capacity: int, timeout: float | None) -> None:
        self.capacity = capacity
        self.timeout = timeout
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def enter(self) -> None:
        """Take a place, waiting (within the budget) while all are held."""
        if self.held < self.capacity and not self._waiters:
            self.held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(left(self.timeout)):
                await waiter  # the place is handed over by leave(): held stays counted
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a place just as the wait ended: pass it on
            if isinstance(error, TimeoutError):
                raise redis.exceptions.ConnectionError("No connection available.") from None
            raise

    def leave(self) -> None:
        """Give a place back: to the longest waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.held -= 1


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
