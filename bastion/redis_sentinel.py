"""Sentinel clients that take no write on a demoted master: fenced while the sentinels fail over.

redis-py's sentinel pool asks the sentinels for the master only when a connection connects,
and leaves a connection only when its server answers READONLY. After ``SENTINEL FAILOVER`` (or
any failover while the old master still runs), the old master is not told it was replaced
until a sentinel converts it, about 10 s after the new one is promoted: meanwhile it takes
every write Bastion sends on its open connections, and those writes vanish when it resyncs as
a replica (608 of 643 acknowledged sessions were lost in a test).

A :class:`FailoverWatch` subscribes to every sentinel's failover events. From the first one
(``+try-failover``: the replica is promoted a timer tick or more later) to ``+switch-master``,
the pools refuse connections: a request gets 503 at once. ``+switch-master`` names the new
master; for a while that address is used whatever a sentinel that has not heard yet says, and
every connection made before it is closed before it is used again (a generation count).
A failed attempt (``-failover-abort-*``) lifts the fence; so does time, after
:data:`FENCE_AT_MOST`, should the leading sentinel die mid-failover.

The window this cannot close: a write sent before the first event reaches this worker that
Redis had not yet copied to the replica being promoted (asynchronous replication: microseconds
on a healthy link). Only the servers can close it: ``min-replicas-to-write`` (see the README).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import redis
import redis.asyncio.sentinel
import redis.exceptions
import redis.sentinel

from bastion.redis_deadline import AsyncBlockingPool, BlockingPool, deadline_class

logger = logging.getLogger("bastion")

FENCE_AT_MOST = 15.0
"""Seconds a fence lasts without its ``+switch-master`` or abort (a sentinel died mid-way)."""
LISTEN_SLICE = 0.25
"""Seconds a listener waits for an event before it looks whether it was closed: how long
closing takes at most (a listener is a thread; a read in progress cannot be interrupted)."""
PIN_FOR = 30.0
"""Seconds the master named by ``+switch-master`` is used whatever the sentinels say (the
others hear of it within a few seconds; one asked too early named the old master again)."""

_FENCING = (
    "+try-failover",
    "+elected-leader",
    "+failover-state-*",
    "+selected-slave",
    "+promoted-slave",
)
_LIFTING = ("-failover-abort-*", "+switch-master")


class FailoverRefused(redis.exceptions.ConnectionError):
    """A connection refused while the sentinels fail the master over (a 503)."""


class FailoverWatch:
    """The failover state of one master, learnt from every sentinel's events (see the module)."""

    def __init__(self, name: str, sentinels: list[tuple[str, int]], options: dict[str, Any]):
        self.name = name
        self.generation = 0
        """Bumped when the master changes: connections made before are closed before reuse."""
        self._fenced_since: float | None = None
        self._pinned: tuple[str, int] | None = None
        self._pinned_until = 0.0
        self._sentinels = sentinels
        self._options = options
        self._lock = threading.Lock()
        self._threads: list[Any] = []
        self._pid: int | None = None
        self._closed = False

    # -- the pools' side (hot path: two attribute reads while no failover runs) --

    def check(self) -> None:
        """Refuse (503) while a failover runs; start listening on first use in this process."""
        if self._pid is None or self._fenced_since is not None:
            self._slow_check()

    def _slow_check(self) -> None:
        import os

        if self._pid != os.getpid():
            self._start()
        since = self._fenced_since
        if since is not None:
            if time.monotonic() - since < FENCE_AT_MOST:
                raise FailoverRefused(f"the sentinels are failing {self.name!r} over")
            logger.warning(
                "Redis Sentinel: no end of the failover of %r heard within %.0f s; "
                "connecting to the master the sentinels name",
                self.name,
                FENCE_AT_MOST,
            )
            self._fenced_since = None

    def pinned(self) -> tuple[str, int] | None:
        """The master ``+switch-master`` named, while it overrides the sentinels' answers."""
        if self._pinned is not None and time.monotonic() < self._pinned_until:
            return self._pinned
        return None

    # -- the listeners' side --

    def _start(self) -> None:
        import os

        with self._lock:
            if self._pid == os.getpid() or self._closed:
                return
            self._pid = os.getpid()
            self._threads = []  # a forked child has none of its parent's threads
            self._clients: list[redis.Redis] = []
            for host, port in self._sentinels:
                # Kept: a client collected closes its pool, the subscription's connection too.
                client = redis.Redis(host=host, port=port, **self._options)
                self._clients.append(client)
                pubsub = client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.psubscribe(**dict.fromkeys((*_FENCING, *_LIFTING), self._on_event))
                self._threads.append(
                    pubsub.run_in_thread(
                        sleep_time=LISTEN_SLICE,
                        daemon=True,
                        exception_handler=self._listener_failed,
                    )
                )

    def _listener_failed(self, error: BaseException, pubsub: Any, thread: Any) -> None:
        if self._closed:
            return  # the thread ends now
        # The sentinel is down or restarting: the other sentinels still report; try again.
        logger.info("Redis Sentinel: event listener lost (%s); reconnecting", type(error).__name__)
        time.sleep(1.0)

    def _on_event(self, message: dict[str, Any]) -> None:
        event = _text(message["channel"])
        words = _text(message["data"]).split()
        if not _about(words, self.name):
            return
        with self._lock:
            if event == "+switch-master":
                new = (words[3], int(words[4]))
                changed = new != self._pinned
                # Pinned first: a connection that sees the new generation finds the new master.
                self._pinned, self._pinned_until = new, time.monotonic() + PIN_FOR
                if changed:
                    self.generation += 1
                    logger.warning(
                        "Redis Sentinel: %r switched to %s:%d", self.name, new[0], new[1]
                    )
                self._fenced_since = None
            elif event.startswith("-failover-abort"):
                self._fenced_since = None
            elif self._fenced_since is None:
                self._fenced_since = time.monotonic()
                logger.warning("Redis Sentinel: %r is failing over (%s)", self.name, event)

    def close(self) -> None:
        """Stop listening; returns when the listeners have ended (within about LISTEN_SLICE).

        Waited for, so that nothing of a closed Bastion still runs: a listener left reading
        would reconnect, retrying, to sentinels that the app or its tests shut down next.
        """
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.stop()  # its loop ends after the read in progress, closing its subscription
        for thread in threads:
            # A listener in a reconnect takes up to the sentinels' socket timeouts; not forever.
            thread.join(LISTEN_SLICE + 2 * float(self._options.get("socket_timeout") or 1.0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _about(words: list[str], name: str) -> bool:
    """Whether an event's words are about the master ``name`` (``master NAME ...`` or
    ``... @ NAME ip port``; ``+switch-master NAME ...``)."""
    if words[:2] == ["master", name] or (words and words[0] == name):
        return True
    return "@" in words and words[words.index("@") + 1 : words.index("@") + 2] == [name]


# -- redis-py's sentinel classes, through their own hooks (master_for's connection_pool_class) --


def _watch_of(connection: Any) -> FailoverWatch:
    return connection.connection_pool.watch  # type: ignore[no-any-return]


class _SyncConnection:
    """A sentinel-managed connection that remembers the failover generation it connected in."""

    generation = -1

    def connect(self) -> None:
        # The pool calls this on every use; only a connection it makes counts.
        fresh = getattr(self, "_sock", None) is None
        generation = _watch_of(self).generation  # read before asking who the master is
        super().connect()  # type: ignore[misc]
        if fresh:
            self.generation = generation


class _AsyncConnection:
    generation = -1

    async def connect(self) -> None:
        fresh = not self.is_connected  # type: ignore[attr-defined]
        generation = _watch_of(self).generation
        await super().connect()  # type: ignore[misc]
        if fresh:
            self.generation = generation


class SyncSentinelPool(BlockingPool, redis.sentinel.SentinelConnectionPool):
    """redis-py's sentinel pool, waiting when full, within the budget, fenced by the watch."""

    def __init__(self, *args: Any, watch: FailoverWatch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch = watch
        # The connections' ``connection_pool`` is this proxy in the blocking client.
        self.proxy.watch = watch  # type: ignore[attr-defined]
        self.connection_class = _connection_class(self.connection_class, _SyncConnection)

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connection to the current master; refused while a failover runs."""
        watch = self.watch
        watch.check()
        connection = super().get_connection(*args, **kwargs)
        if connection.generation != watch.generation:  # made before the master changed
            try:
                connection.disconnect()
                connection.connect()
            except BaseException:
                self.release(connection)
                raise
        return connection

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the connections; closing them all (the client's close) ends the watch too."""
        if inuse_connections:
            self.watch.close()
        super().disconnect(inuse_connections)


class AsyncSentinelPool(AsyncBlockingPool, redis.asyncio.sentinel.SentinelConnectionPool):
    """:class:`SyncSentinelPool` for ``redis.asyncio``."""

    def __init__(self, *args: Any, watch: FailoverWatch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch = watch
        self.connection_class = _connection_class(self.connection_class, _AsyncConnection)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connection to the current master; refused while a failover runs."""
        watch = self.watch
        watch.check()
        connection = await super().get_connection(*args, **kwargs)
        if connection.generation != watch.generation:
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the connections; closing them all (the client's close) ends the watch too."""
        if inuse_connections:
            await asyncio.to_thread(self.watch.close)  # it waits for the listeners' threads
        await super().disconnect(inuse_connections)


_MADE: dict[tuple[type, type], type] = {}


def _connection_class(base: type, mixin: type) -> type:
    made = _MADE.get((base, mixin))
    if made is None:
        made = type(f"Watched{base.__name__}", (mixin, deadline_class(base)), {})
        _MADE[(base, mixin)] = made
    return made


class SyncSentinel(redis.sentinel.Sentinel):
    """redis-py's ``Sentinel``; the master ``+switch-master`` named wins for a while."""

    watch: FailoverWatch

    def discover_master(self, service_name: str) -> Any:
        """The master's address: the one just switched to, else the sentinels' answer."""
        pinned = self.watch.pinned() if service_name == self.watch.name else None
        if pinned is not None:
            return pinned
        return super().discover_master(service_name)  # type: ignore[no-untyped-call]


class AsyncSentinel(redis.asyncio.sentinel.Sentinel):
    """:class:`SyncSentinel` for ``redis.asyncio``."""

    watch: FailoverWatch

    async def discover_master(self, service_name: str) -> Any:
        """The master's address: the one just switched to, else the sentinels' answer."""
        pinned = self.watch.pinned() if service_name == self.watch.name else None
        if pinned is not None:
            return pinned
        return await super().discover_master(service_name)
