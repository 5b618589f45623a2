"""The session cache: session reads served from process memory, kept true by Redis tracking.

Opt-in (``session_cache = "tracking"``), asyncio only. Per worker process and per Redis primary,
one dedicated RESP2 connection (the *listener*) runs ``CLIENT ID``, ``CLIENT TRACKING ON REDIRECT
<its own id> BCAST PREFIX <PREFIX>:{ PREFIX <its canary prefix>`` and ``SUBSCRIBE
__redis__:invalidate``; Redis then sends it the name of every key written under those prefixes.
It is not redis-py's ``PubSub``, which resubscribes after a reconnect without turning tracking
back on (invalidations to a RESP2 client that is not subscribed are dropped silently).

The tracked prefix ``<PREFIX>:{`` begins the names of per-user keys only: the session hash
``<PREFIX>:{uid}:s``, the account hash and the old layout's keys. Rate limits (``<PREFIX>:rl:``),
API keys (``<PREFIX>:apikey:``), the email index, grants and settings live under other prefixes,
so their writes never reach the workers. Rare account writes (sign-up, a password or role
change) do, one message each.

What keeps a cached answer true (see ``docs`` in the README's "Session cache" subsection):

- Only live sessions are cached; expiry and the idle timeout are checked on every request from
  the cached fields (by the session store, as for a read from Redis).
- A fill is kept only if no invalidation of its key and no flush came while the read was in
  flight (a ticket per key, an epoch for flushes).
- Everything is flushed when a listener (re)connects, drops, or Redis flushes its data; nothing
  is cached until the subscription is confirmed.
- The lease: a hit is served only while the newest *canary* this listener saw come back was sent
  less than ``session_cache_lease`` ago. A canary is a write through the data connections to a
  key only this listener tracks; Redis sends its invalidation after every invalidation it queued
  before, so a revocation acknowledged before the canary was sent was applied before the hit.
  A stalled Redis, a silent network loss or a listener left on an old master thus serve nothing
  stale longer than the lease. ``session_cache_max_age`` re-reads each entry regardless.
- The worker that writes a session hash (log-in, log-out, revocations, evictions, disable,
  delete) forgets it at once, before and after the write.
- Where ``CLIENT TRACKING`` is refused (a proxy, a managed service, fakeredis): logged once,
  uncached.

Cluster: a listener, canary and lease per primary; an entry is served under the lease of the
primary that owns its slot (at fill time and at every hit), never filled from a replica (the
cluster client reads primaries), and everything is flushed when the primaries or the slot map
change, a slot migrated by resharding included.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ResponseError

from bastion.redisio import Batch, Call, Op, Script
from bastion.sessions import keys
from bastion.telemetry import telemetry

logger = logging.getLogger("bastion.sessions.cache")

CHANNEL = b"__redis__:invalidate"
BACKOFF_FIRST, BACKOFF_MAX = 0.01, 0.5


@dataclass(frozen=True, slots=True)
class SessionCacheStats:
    """Counters of one process's session cache since it was built."""

    state: str
    """``off``, ``starting``, ``live``, ``lapsed`` (no fresh lease), or ``refused``."""
    entries: int
    hits: int
    misses: int
    fills: int
    discarded_fills: int
    invalidations: int
    flushes: int
    lease_lapses: int
    reconnects: int

    def to_dict(self) -> dict[str, int | str]:
        """The counters as a JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__slots__}


class _Node:
    """One primary's listener state."""

    __slots__ = ("acked", "address", "canary_prefix", "live", "sent", "seq", "tag")

    def __init__(self, address: tuple[str, int] | None, canary_prefix: str, tag: str) -> None:
        self.address = address
        self.canary_prefix = canary_prefix
        self.tag = tag  # the canary's hash tag: a slot this primary owns ("" standalone)
        self.live = False  # subscribed: invalidations reach us
        self.acked = -math.inf  # send time of the newest canary seen back
        self.seq = 0
        self.sent: dict[int, float] = {}


class _Refused(Exception):
    """Redis refused tracking or the subscription: stay uncached."""


# A cached read: (reply, filled at, node whose lease covers it).
Entry = tuple[Any, float, _Node]
# A fill in flight: (its own identity, the flush epoch it began in, the key's node).
Ticket = tuple[object, int, _Node]
Send = Callable[[Op], Awaitable[Any]]


class SessionCache:
    """Session hash reads from memory while Redis tracking vouches for them (one per process)."""

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str,
        max_entries: int = 20_000,
        lease: float = 1.0,
        max_age: float = 60.0,
        timeout: float = 2.0,
    ) -> None:
        self._client = client
        head, self._tail = keys.sessions_around(key_prefix)
        self._head = head  # "<PREFIX>:{": also the tracked prefix (per-user keys only)
        self._canary_root = f"{key_prefix}:cc:"
        self._max_entries = max_entries
        self._lease = lease
        self._max_age = max_age
        self._timeout = timeout
        self._interval = lease / 4
        self._entries: dict[str, dict[tuple[Any, ...], Entry]] = {}
        self._count = 0
        self._tickets: dict[str, Ticket] = {}
        self._epoch = 0
        self._nodes: list[_Node] = []
        self._slot_map: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "starting"
        self._closed = False
        self._next_start = 0.0
        self._lapsed = False
        self._counts = dict.fromkeys(
            (
                "hits",
                "misses",
                "fills",
                "discarded_fills",
                "invalidations",
                "flushes",
                "lease_lapses",
                "reconnects",
            ),
            0,
        )
        telemetry.watch_cache(self)
        if type(client).__module__.startswith("fakeredis"):
            self._refuse("the embedded fakeredis has no client-side tracking")

    # -- the request path ----------------------------------------------------------------------

    def wants(self, op: Op) -> bool:
        """Whether ``op`` reads or writes a session hash (so it goes through :meth:`run`)."""
        if self._state == "refused":
            return False
        kind = type(op)
        if kind is Call:
            return op.name == "hmget" and self._is_session(op.args[0])  # type: ignore[union-attr]
        if kind is Script:
            return any(self._is_session(k) for k in op.keys)  # type: ignore[union-attr]
        if kind is Batch:
            return any(self.wants(o) for o in op.ops)  # type: ignore[union-attr]
        return False

    async def run(self, op: Op, send: Send) -> Any:
        """Answer ``op`` from memory when it may, else ``send`` it (and keep what it read)."""
        if self._loop is not asyncio.get_running_loop():
            self._start()
        if type(op) is Call:
            args = op.args
            hit = self._lookup(args)
            if hit is not None:
                return hit
            ticket = self._ticket(args[0])
            reply = await send(op)
            self._store(args, ticket, reply)
            return reply
        if type(op) is Script:
            return await self._write(op.keys, op, send)
        assert isinstance(op, Batch)
        return await self._batch(op.ops, send)

    async def _batch(self, ops: list[Call | Script], send: Send) -> list[Any]:
        replies: list[Any] = [None] * len(ops)
        rest: list[int] = []
        reads: set[int] = set()
        written = [k for op in ops if type(op) is Script for k in op.keys if self._is_session(k)]
        for index, op in enumerate(ops):
            hit = None
            if type(op) is Call and op.name == "hmget" and self._is_session(op.args[0]):
                reads.add(index)
                hit = self._lookup(op.args)
            if hit is None:
                rest.append(index)
            else:
                replies[index] = hit
        if not rest:
            return replies
        tickets = [self._ticket(ops[i].args[0]) if i in reads else None for i in rest]
        if written:
            self.forget(written)
        try:
            answers = await send(Batch([ops[i] for i in rest]))
        finally:
            if written:
                self.forget(written)
        for index, ticket, answer in zip(rest, tickets, answers, strict=True):
            replies[index] = answer
            if index in reads:
                self._store(tuple(ops[index].args), ticket, answer)
        return replies

    async def _write(self, written: list[str], op: Op, send: Send) -> Any:
        """A script that writes session hashes: they are forgotten before it and after it."""
        sessions = [k for k in written if self._is_session(k)]
        self.forget(sessions)
        try:
            return await send(op)
        finally:
            self.forget(sessions)

    def _is_session(self, key: Any) -> bool:
        return type(key) is str and key.startswith(self._head) and key.endswith(self._tail)

    def _lookup(self, args: tuple[Any, ...]) -> Any:
        """The cached reply of this exact read, if its lease and age allow it; else None."""
        group = self._entries.get(args[0])
        entry = group.get(args) if group is not None else None
        if entry is None:
            self._counts["misses"] += 1
            return None
        reply, filled, node = entry
        if self._moved(args[0], node):
            self._counts["misses"] += 1
            return None
        now = time.monotonic()
        if now - node.acked >= self._lease:
            self._lapse()
            return None
        if now - filled >= self._max_age:
            self._counts["misses"] += 1
            return None
        self._counts["hits"] += 1
        return reply

    def _lapse(self) -> None:
        self._counts["misses"] += 1
        if not self._lapsed:
            self._lapsed = True
            self._counts["lease_lapses"] += 1

    def _ticket(self, key: str) -> Ticket | None:
        """A fill ticket for ``key``, if its primary's listener is live (else no fill)."""
        node = self._node_of(key)
        if node is None or not node.live:
            return None
        ticket: Ticket = (object(), self._epoch, node)
        self._tickets[key] = ticket
        return ticket

    def _store(self, args: tuple[Any, ...], ticket: Ticket | None, reply: Any) -> None:
        """Keep ``reply`` if its ticket survived (no invalidation, no flush while in flight)."""
        if ticket is None:
            return
        key = args[0]
        if self._tickets.get(key) is ticket:
            del self._tickets[key]
        else:
            self._counts["discarded_fills"] += 1
            return
        _token, epoch, node = ticket
        if epoch == self._epoch and self._moved(key, node):
            epoch = -1  # read across a slot move: kept by no lease (and everything was flushed)
        # Missing sessions are never cached: the next log-in must be seen at once.
        if epoch != self._epoch or not reply or reply[0] is None or reply[1] is None:
            if epoch != self._epoch:
                self._counts["discarded_fills"] += 1
            return
        group = self._entries.get(key)
        if group is None:
            while self._count >= self._max_entries and self._entries:
                oldest = next(iter(self._entries))
                self._count -= len(self._entries.pop(oldest))
            group = self._entries[key] = {}
        if args not in group:
            self._count += 1
        group[args] = (reply, time.monotonic(), node)
        self._counts["fills"] += 1

    def forget(self, names: list[str]) -> None:
        """Drop these session hashes (and fills in flight for them): this worker wrote them."""
        for name in names:
            group = self._entries.pop(name, None)
            if group is not None:
                self._count -= len(group)
            self._tickets.pop(name, None)

    def forget_written(self, op: Op) -> None:
        """:meth:`forget` the session hashes a script (or a batch of them) wrote."""
        ops = op.ops if isinstance(op, Batch) else [op]
        self.forget([k for o in ops if type(o) is Script for k in o.keys if self._is_session(k)])

    def flush(self) -> None:
        """Drop everything, and every fill in flight."""
        self._entries.clear()
        self._tickets.clear()
        self._count = 0
        self._epoch += 1
        self._counts["flushes"] += 1

    # -- nodes ---------------------------------------------------------------------------------

    def _node_of(self, key: str) -> _Node | None:
        nodes = self._nodes
        if len(nodes) == 1 and nodes[0].address is None:
            return nodes[0]
        if not nodes:
            return None
        slots = getattr(self._client.nodes_manager, "slots_cache", None)
        if slots is not self._slot_map:  # the cluster client learnt a new map: start again
            self._topology_changed()
            return None
        try:
            primary = slots[key_slot(key.encode())][0]
        except (KeyError, IndexError, TypeError):
            return None
        for node in nodes:
            if node.address == (primary.host, int(primary.port)):
                return node
        return None

    def _moved(self, key: str, node: _Node) -> bool:
        """Cluster: whether ``key``'s slot has left ``node`` (then all is flushed, rebuilt).

        redis-py patches its slot map in place when a MOVED reply tells it of a migrated slot,
        so the map's identity alone misses a resharding: the owner is looked up again, and an
        entry is only ever served under the lease of the primary that owns its slot now (whose
        listener is the one that hears of its writes).
        """
        if node.address is None or self._node_of(key) is node:
            return False
        if self._nodes:  # (_node_of has already started again if the map was replaced)
            self._topology_changed()
        return True

    def _topology_changed(self) -> None:
        logger.info("session cache: the cluster's slot map changed; flushed, listeners rebuilt")
        self.flush()
        self._stop_tasks()
        self._loop = None  # the next request starts the listeners again
        self._nodes = []

    # -- the listeners -------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the listeners on the running loop (the first request, after a fork)."""
        if self._closed or self._state == "refused" or time.monotonic() < self._next_start:
            return
        self._next_start = time.monotonic() + BACKOFF_MAX
        self._stop_tasks()
        self.flush()
        self._loop = asyncio.get_running_loop()
        self._nodes = []
        # A context of their own: a task copies its creator's, and this one is a request's,
        # whose Redis budget (bastion.redis_deadline) would cut every connect and read of the
        # listeners long after that request ended.
        self._tasks = [self._loop.create_task(self._supervise(), context=contextvars.Context())]

    async def _supervise(self) -> None:
        """Build one listener per primary (one in all outside a cluster) and keep them going."""
        cluster = hasattr(self._client, "nodes_manager")
        try:
            if cluster:
                await self._client.initialize()
                self._slot_map = self._client.nodes_manager.slots_cache
                primaries = self._client.get_primaries()
                nodes = [
                    _Node((p.host, int(p.port)), self._canary_prefix(), self._tag_on(p))
                    for p in primaries
                ]
                makers = [self._maker_for_node(p) for p in primaries]
            else:
                nodes, makers = [_Node(None, self._canary_prefix(), "")], [self._maker()]
        except Exception as exc:  # no Redis yet: try again at a later request
            logger.warning("session cache: cannot reach Redis yet (%s); uncached", exc)
            self._loop = None
            return
        self._nodes = nodes
        loop = asyncio.get_running_loop()
        self._tasks.extend(
            loop.create_task(self._keep(node, make))
            for node, make in zip(nodes, makers, strict=True)
        )

    def _canary_prefix(self) -> str:
        return f"{self._canary_root}{os.getpid()}.{id(self):x}.{os.urandom(4).hex()}:"

    def _tag_on(self, primary: Any) -> str:
        """A hash tag whose slot this primary owns (for its canary key)."""
        slots = self._client.nodes_manager.slots_cache
        for n in range(100_000):
            tag = f"c{n}"
            owners = slots.get(key_slot(tag.encode()))
            if owners and owners[0].name == primary.name:
                return tag
        raise RuntimeError(f"no slot of {primary.name} found for the session cache's canary")

    def _maker(self) -> Callable[[], Any]:
        pool = self._client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        connection_class = pool.connection_class
        return lambda: connection_class(**_listener_kwargs(kwargs))

    def _maker_for_node(self, primary: Any) -> Callable[[], Any]:
        kwargs = dict(primary.connection_kwargs)
        connection_class = primary.connection_class
        return lambda: connection_class(**_listener_kwargs(kwargs))

    async def _keep(self, node: _Node, make: Callable[[], Any]) -> None:
        """One primary's listener: connect, track, subscribe, read; on any loss flush and again."""
        backoff = BACKOFF_FIRST
        first = True
        while not self._closed:
            if not first:
                self._counts["reconnects"] += 1
            first = False
            conn = make()
            reader: asyncio.Future[None] | None = None
            prober: asyncio.Future[None] | None = None
            task: asyncio.Future[None] | None
            try:
                await conn.connect()
                reader = asyncio.ensure_future(self._listen(node, conn))
                prober = asyncio.ensure_future(self._probe(node))
                done, _ = await asyncio.wait({reader, prober}, return_when="FIRST_COMPLETED")
                for task in done:
                    task.result()  # a refusal propagates
                backoff = BACKOFF_FIRST
            except _Refused as exc:
                self._refuse(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # Python 3.11's asyncio.timeout turns a cancel that lands as it expires into
                    # a TimeoutError: the cancel still stands, and must end this loop.
                    raise asyncio.CancelledError from exc
                logger.info("session cache: listener lost (%s: %s)", type(exc).__name__, exc)
            finally:
                node.live = False
                for task in (reader, prober):
                    if task is not None:
                        task.cancel()
                self.flush()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _listen(self, node: _Node, conn: Any) -> None:
        try:
            await conn.send_command("CLIENT", "ID")
            own_id = await conn.read_response(timeout=self._timeout)
            await conn.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST",
                "PREFIX", self._head, "PREFIX", node.canary_prefix,
            )  # fmt: skip
            await conn.read_response(timeout=self._timeout)
            await conn.send_command("SUBSCRIBE", CHANNEL)
            confirmed = await conn.read_response(timeout=self._timeout)
        except ResponseError as exc:
            raise _Refused(f"Redis refused client-side tracking: {exc}") from None
        if not (isinstance(confirmed, list) and confirmed and _text(confirmed[0]) == "subscribe"):
            raise _Refused(f"unexpected answer to SUBSCRIBE: {confirmed!r}")
        # Invalidations reach us from here on: what was filled before may have missed some.
        self.flush()
        node.live = True
        while True:
            message = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            if not isinstance(message, list) or len(message) < 3 or _text(message[0]) != "message":
                continue
            names = message[2]
            if names is None:  # FLUSHALL / FLUSHDB
                self.flush()
                continue
            self._invalidated(node, names)

    def _invalidated(self, node: _Node, names: list[bytes | str]) -> None:
        canary = node.canary_prefix
        for raw in names:
            name = _text(raw)
            if name.startswith(canary):
                try:
                    seq = int(name[len(canary) :].split(":", 1)[0])
                except ValueError:
                    continue
                sent = node.sent.pop(seq, None)
                if sent is not None and sent > node.acked:
                    node.acked = sent
                    self._lapsed = False
                for old in [s for s in node.sent if s < seq]:
                    del node.sent[old]
                continue
            self._counts["invalidations"] += 1
            group = self._entries.pop(name, None)
            if group is not None:
                self._count -= len(group)
            self._tickets.pop(name, None)

    async def _probe(self, node: _Node) -> None:
        """Canary writes, every quarter lease; returns when the listener must count as dead."""
        client, lease = self._client, self._lease
        while not node.live:
            await asyncio.sleep(0.001)
        since = time.monotonic()
        while True:
            node.seq += 1
            seq = node.seq
            key = f"{node.canary_prefix}{seq}"
            if node.tag:
                key += f":{{{node.tag}}}"
            node.sent[seq] = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.set(key, b"1", px=int(lease * 2000) + 1000), lease)
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            if now - max(node.acked, since) > lease + self._interval:
                raise ConnectionError("no canary came back within the lease")

    async def caught_up(self, within: float = 5.0) -> bool:
        """Wait until every invalidation Redis queued before this call has been applied (a
        canary sent after it came back on every listener); False if not within ``within`` s."""
        since, deadline = time.monotonic(), time.monotonic() + within
        while time.monotonic() < deadline:
            nodes = self._nodes
            if nodes and all(n.live and n.acked >= since for n in nodes):
                return True
            await asyncio.sleep(0.005)
        return False

    # -- lifecycle and figures -----------------------------------------------------------------

    def _refuse(self, why: str) -> None:
        if self._state != "refused":
            logger.warning("session cache off: %s; sessions are read from Redis", why)
        self._state = "refused"
        self.flush()

    def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    def stop(self) -> None:
        """Stop serving from memory (sync code: the listeners end with their event loop)."""
        self._closed = True
        for node in self._nodes:
            node.live = False
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for task in self._tasks:
                loop.call_soon_threadsafe(task.cancel)
        self.flush()

    async def aclose(self) -> None:
        """Stop the listeners and forget everything."""
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for node in self._nodes:
            node.live = False
        self.flush()

    def stats(self) -> SessionCacheStats:
        """The cache's counters now."""
        state = self._state
        if state != "refused":
            now = time.monotonic()
            if self._closed:
                state = "off"
            elif self._nodes and all(n.live and now - n.acked < self._lease for n in self._nodes):
                state = "live"
            elif self._nodes and any(n.acked > -math.inf for n in self._nodes):
                state = "lapsed"
        return SessionCacheStats(state=state, entries=self._count, **self._counts)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _listener_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The data connections' options, for a RESP2 connection that waits for messages forever
    and never reconnects by itself (a reconnect must re-enable tracking: done by the caller)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options = dict(kwargs)
    options.update(protocol=2, retry=Retry(NoBackoff(), 0), socket_timeout=None)
    for name in list(options):
        # Push notifications of server maintenance need RESP3; this connection is RESP2.
        if name in ("cache", "cache_config") or "maint_notifications" in name:
            del options[name]
    return options
