"""Redis work as data: sans-IO steps that yield operations, and the async and sync drivers.

A store method is a generator that yields :class:`Call`, :class:`Script`, :class:`Batch`,
:class:`Scan`, :class:`Compute` or :class:`Hook` (the app's own code) and receives each result,
so its logic exists once; :class:`AsyncRunner` (redis.asyncio) and :class:`SyncRunner` (redis) carry
the operations out.
Any Redis failure becomes ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from time import monotonic
from typing import Any, NamedTuple, TypeVar

import redis
import redis.asyncio
import redis.exceptions
from redis.exceptions import RedisError, ResponseError

from bastion import redis_deadline
from bastion.errors import ServiceUnavailable
from bastion.redis_deadline import start_at, stop

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


class Scan(NamedTuple):
    """One round of a walk over every key matching ``match`` (SCAN), on every primary.

    Replies ``(cursor, keys)``; the walk is over when the cursor is 0. On a Redis Cluster the
    cursor is a dict of one cursor per primary, and a round asks each unfinished one.
    """

    cursor: Any
    match: str
    batch: int
    """Keys a node looks at per round (SCAN's COUNT)."""


def scan_done(cursor: Any) -> bool:
    """Whether a :class:`Scan` cursor says the walk is over (on every node)."""
    if isinstance(cursor, dict):
        return not any(int(c) for c in cursor.values())
    return int(cursor) == 0


class Compute(NamedTuple):
    """CPU work (password hashing): off the event loop when async, inline when sync."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


class Hook(NamedTuple):
    """The app's own code with an async and a sync form (a credential backend, a user store):
    the async runner awaits ``fn(*args)``, the sync runner calls ``sync_fn(*args)``.

    The one way steps reach code of the app's: the app writes plain ``async def`` or ``def``
    methods, and never sees a step."""

    fn: Callable[..., Any]
    sync_fn: Callable[..., Any]
    args: tuple[Any, ...]


Op = Call | Script | Batch | Scan | Compute | Hook
Steps = Generator[Op, Any, T]


def together(*steps: Steps[Any]) -> Steps[list[Any]]:
    """Run several steps side by side: each round, their Redis operations go out as one batch."""
    results: list[Any] = [None] * len(steps)
    pending: list[tuple[int, Op]] = []
    for index, step in enumerate(steps):
        try:
            pending.append((index, next(step)))
        except StopIteration as done:
            results[index] = done.value
    while pending:
        replies: list[Any]
        if len(pending) == 1:
            replies = [(yield pending[0][1])]
        else:
            ops = [op for _, op in pending]
            for op in ops:
                if type(op) is not Call and type(op) is not Script:
                    replies = yield from _mixed_round(ops)
                    break
            else:  # the usual round: one command from each step, sent as one batch
                replies = yield Batch(ops)  # type: ignore[arg-type]
        following: list[tuple[int, Op]] = []
        for (index, _), reply in zip(pending, replies, strict=True):
            try:
                following.append((index, steps[index].send(reply)))
            except StopIteration as done:
                results[index] = done.value
        pending = following
    return results


def _mixed_round(ops: list[Op]) -> Steps[list[Any]]:
    """One round of :func:`together` where some steps yield batches or CPU work."""
    flat: list[Call | Script] = []
    spans: list[tuple[int, int] | None] = []
    for op in ops:
        if isinstance(op, (Compute, Hook, Scan)):
            spans.append(None)
            continue
        parts = list(op.ops) if isinstance(op, Batch) else [op]
        spans.append((len(flat), len(flat) + len(parts)))
        flat.extend(parts)
    answers = (yield Batch(flat)) if flat else []
    replies: list[Any] = []
    for op, span in zip(ops, spans, strict=True):
        if span is None:
            replies.append((yield op))
        elif isinstance(op, Batch):
            replies.append(answers[span[0] : span[1]])
        else:
            replies.append(answers[span[0]])
    return replies


class OutageLog:
    """Redis failures on the log without flooding it: an outage can fail every request.

    The first failure of a kind (the exception's type) is logged at once; then at most one line
    per kind every ``interval`` seconds, counting the failures not logged since. The first
    success after a failure logs one line: how long it lasted and how many operations failed.
    """

    def __init__(self, interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.failing = False
        """Whether the last operation failed; read after every success, so kept a plain bool."""
        self._lock = threading.Lock()
        self._kinds: dict[str, list[float]] = {}  # kind -> [logged at, failures not logged]
        self._since = 0.0
        self._failures = 0

    def failed(self, exc: Exception) -> None:
        """Count a failure; log it unless its kind was logged within ``interval``."""
        kind = type(exc).__name__
        now = self.clock()
        with self._lock:
            if not self.failing:
                self.failing, self._since, self._failures = True, now, 0
            self._failures += 1
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return
            quiet = int(seen[1]) if seen is not None else 0
            self._kinds[kind] = [now, 0]
        if quiet:
            logger.error(
                "Redis unavailable: %s: %s (and %d more %s in the last %.0f s)",
                kind, exc, quiet, kind, now - seen[0] if seen else 0.0,
            )  # fmt: skip
        else:
            logger.error("Redis unavailable: %s: %s", kind, exc)

    def succeeded(self) -> None:
        """Log the end of an outage, once."""
        with self._lock:
            if not self.failing:
                return
            self.failing = False
            lasted, failures = self.clock() - self._since, self._failures
            self._kinds.clear()
        logger.warning(
            "Redis is back: %d operation(s) failed over %.1f s before this success",
            failures, lasted,
        )  # fmt: skip


def _failure(op: Op, exc: Exception, outages: OutageLog) -> Exception:
    """What the steps see when an operation fails: Redis trouble is a 503, CPU work's (and the
    app's hooks') own error.

    Whatever the Redis client raises counts as trouble, not only ``RedisError``: redis-py's
    cluster client, refreshing its slot map while a master fails over, closes connections other
    requests are using, and they fail with an AttributeError (redis-py 8.1). Fail closed: 503.
    """
    if isinstance(op, (Compute, Hook)):
        return exc
    if isinstance(exc, (RedisError, OSError, AttributeError)):
        outages.failed(exc)
        unavailable = ServiceUnavailable()
        unavailable.__cause__ = exc
        return unavailable
    return exc


# The reads every request makes (the session hash, a resource's rows) can be sent through the
# client's own connection API when ``redis_lean_reads`` is on: redis-py's command methods and
# Pipeline add bookkeeping (observability hooks such as OpenTelemetry's redis instrumentation,
# a command stack, response callbacks) that costs more per request than Bastion's whole
# decision, and these two commands need none of it (their raw replies are what the methods
# return). Pool, packing, timeouts, retry and parser stay redis-py's own. Off by default: the
# hooks then see every command, as they expect (bench/README.md measures what that costs).
_LEAN_COMMANDS = {"hmget": "HMGET", "smembers": "SMEMBERS"}


def _lean_capable(client: Any, expected: type) -> bool:
    """Whether ``client`` is a plain pooled redis-py client this module may read through.

    Only the exact class (not fakeredis or a user's subclass), without a dedicated connection or
    a client-side cache (whose connections must see every command), and a pool whose
    ``get_connection`` takes no command name (redis-py 5.3 and later).
    """
    if type(client) is not expected:
        return False
    if getattr(client, "single_connection_client", False) or getattr(client, "connection", None):
        return False
    pool = getattr(client, "connection_pool", None)
    if getattr(pool, "cache", None) is not None:
        return False
    get_connection = getattr(pool, "get_connection", None)
    if get_connection is None:
        return False
    try:
        parameters = list(inspect.signature(get_connection).parameters.values())
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in parameters
    )


def _lean_commands(op: Op) -> list[tuple[Any, ...]] | None:
    """The wire commands of an op made only of lean reads, else None."""
    if type(op) is Call:
        ops: list[Call | Script] = [op]
    elif type(op) is Batch:
        ops = op.ops
    else:
        return None
    commands = []
    for item in ops:
        if type(item) is not Call or item.name not in _LEAN_COMMANDS:
            return None
        commands.append((_LEAN_COMMANDS[item.name], *item.args))
    return commands


def _merge(ops: list[Call | Script], scripts: list[Any], calls: list[Any]) -> list[Any]:
    """The replies of a batch run as scripts and a pipeline of calls, in the batch's order."""
    script_replies, call_replies = iter(scripts), iter(calls)
    return [next(script_replies) if type(op) is Script else next(call_replies) for op in ops]


CLOSED = "this Bastion is closed: build a new one (close() and aclose() are final)"


class _Runner:
    def __init__(
        self,
        client: Any,
        scripts: Mapping[str, str],
        lean: bool,
        budget: float | None,
        outages: OutageLog | None,
    ) -> None:
        self.client = client
        # Seconds of Redis waits one run of steps may have in all (``redis_timeout``): see
        # bastion.redis_deadline. CPU work in between does not count.
        self.budget = budget
        self.outages = outages if outages is not None else OutageLog()
        # Registering computes each script's SHA1 locally: nothing is sent to Redis here.
        self._scripts = {name: client.register_script(src) for name, src in scripts.items()}
        self._lean = lean
        # redis-py's cluster pipelines refuse EVALSHA: a batch's scripts run beside them there.
        self._scripts_apart = getattr(client, "is_cluster", False) or hasattr(
            client, "nodes_manager"
        )
        # Set by Bastion.close(): work after it is a bug, refused rather than reconnecting.
        self.closed = False
        # The session cache (bastion.sessions.cache), when on: it sees the session reads and
        # writes (``wants``), answers reads from memory and forgets what a write changes.
        self.cache: Any = None

    def _scan_nodes(self, cursor: Any) -> list[tuple[str, Any, int]]:
        """The cluster nodes a :class:`Scan` round asks: (name, node, cursor) of each."""
        if not isinstance(cursor, dict):  # the first round: every primary, from the start
            primaries = self.client.get_primaries()
            if not primaries:  # never "nothing to walk": the slot map is not known
                raise redis.exceptions.ConnectionError("no cluster primary is known")
            return [(node.name, node, 0) for node in primaries]
        asked = []
        for name, at in cursor.items():
            if int(at) == 0:
                continue
            node = self.client.get_node(node_name=name)
            if node is None:  # a node left the cluster: its cursor means nothing elsewhere
                raise redis.exceptions.ConnectionError(
                    f"cluster node {name} left during a SCAN walk; start the walk again"
                )
            asked.append((name, node, int(at)))
        return asked

    def _queue(self, pipe: Any, op: Call | Script) -> None:
        if isinstance(op, Script):
            self._scripts[op.name](keys=op.keys, args=op.args, client=pipe)
        else:
            getattr(pipe, op.name)(*op.args)


class AsyncRunner(_Runner):
    """Runs steps on a ``redis.asyncio`` client."""

    def __init__(
        self,
        client: Any,
        scripts: Mapping[str, str],
        *,
        lean_reads: bool = False,
        budget: float | None = None,
        outages: OutageLog | None = None,
    ) -> None:
        lean = lean_reads and _lean_capable(client, redis.asyncio.Redis)
        super().__init__(client, scripts, lean, budget, outages)
        # redis-py's asyncio cluster client learns the slot map on its first command and then
        # recycles the connections it had: commands sent meanwhile by other coroutines failed on
        # connections closed under them (redis-py 8.1: an AttributeError, 4 in 60 at once).
        # One coroutine warms it up first; the others wait for it (see _warm_up).
        self._cold = self._scripts_apart and hasattr(client, "initialize")
        self._warming: asyncio.Future[bool] | None = None

    async def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to completion and return its value."""
        if self.closed:
            steps.close()
            raise RuntimeError(CLOSED)
        budget = None
        try:
            op = next(steps)
            # The budget starts with the first operation: steps with none (a guest's admission)
            # wait for nothing, and the CPU work before it is no Redis wait.
            if self.budget is not None:
                budget = start_at(monotonic() + self.budget)
            if self._cold:  # within the request's budget
                await self._warm_up()
            while True:
                # Every branch sets result (a request's admission is usually one pass here).
                error: Exception | None = None
                try:
                    if self.cache is not None and self.cache.wants(op):
                        result = await self.cache.run(op, self._send)
                    elif self._lean and (lean := _lean_commands(op)) is not None:
                        # redis_lean_reads: the request's reads, past the command methods
                        result = await self._read(lean)
                        if type(op) is Call:
                            result = result[0]
                    elif type(op) is Call:
                        result = await getattr(self.client, op.name)(*op.args)
                    elif isinstance(op, Compute):
                        started = time.monotonic()
                        result = await asyncio.to_thread(op.fn, *op.args)
                        redis_deadline.shift(time.monotonic() - started)
                    elif isinstance(op, Hook):
                        result = await op.fn(*op.args)
                    elif isinstance(op, Batch):
                        result = await self._batch(op.ops)
                    elif isinstance(op, Script):
                        result = await self._scripts[op.name](keys=op.keys, args=op.args)
                    elif isinstance(op, Scan):
                        result = await self._scan(op)
                    else:
                        result = await getattr(self.client, op.name)(*op.args)
                    if self.outages.failing and type(op) is not Compute:
                        self.outages.succeeded()
                except Exception as exc:
                    error = _failure(op, exc, self.outages)
                # Failures go back into the steps, so their own handlers see them.
                op = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            if budget is not None:
                stop(budget)

    async def _warm_up(self) -> None:
        """Wait for the cluster client's first use, made by one coroutine (once it succeeds)."""
        task = self._warming
        if task is None:
            task = self._warming = asyncio.ensure_future(self._warm())
        if await asyncio.shield(task):
            self._cold = False
        elif self._warming is task:
            self._warming = None  # Redis is down: the next request tries again; this one goes on

    async def _warm(self) -> bool:
        try:
            await self.client.initialize()
            await self.client.ping()
        except Exception:  # the request's own command fails the same way and is answered 503
            return False
        return True

    async def _send(self, op: Op) -> Any:
        """Send a call, script or batch to Redis (the session cache's way past itself)."""
        lean = _lean_commands(op) if self._lean else None
        if lean is not None:
            result = await self._read(lean)
            return result[0] if type(op) is Call else result
        if isinstance(op, Batch):
            return await self._batch(op.ops)
        if isinstance(op, Script):
            return await self._scripts[op.name](keys=op.keys, args=op.args)
        assert isinstance(op, Call)
        return await getattr(self.client, op.name)(*op.args)

    async def _batch(self, ops: list[Call | Script]) -> list[Any]:
        """One pipeline; on a cluster, the scripts run concurrently beside it."""
        if not self._scripts_apart:
            pipe = self.client.pipeline(transaction=False)
            for item in ops:
                await self._queue_async(pipe, item)
            return await pipe.execute()  # type: ignore[no-any-return]
        calls = [op for op in ops if type(op) is Call]
        scripts = [op for op in ops if type(op) is Script]
        work: list[Any] = [self._scripts[op.name](keys=op.keys, args=op.args) for op in scripts]
        if calls:
            pipe = self.client.pipeline(transaction=False)
            for item in calls:
                getattr(pipe, item.name)(*item.args)
            work.append(pipe.execute())
        done = await asyncio.gather(*work)
        return _merge(ops, done[: len(scripts)], done[len(scripts)] if calls else [])

    async def _scan(self, op: Scan) -> tuple[Any, list[Any]]:
        """One SCAN round: the server's own, or each unfinished primary's on a cluster."""
        if not self._scripts_apart:
            return await self.client.scan(op.cursor, op.match, op.batch)  # type: ignore[no-any-return]
        await self.client.initialize()  # the slot map, learnt on first use (once)
        asked = self._scan_nodes(op.cursor)
        replies = await asyncio.gather(
            *(self.client.scan(at, op.match, op.batch, target_nodes=node) for _, node, at in asked)
        )
        cursors = dict(op.cursor) if isinstance(op.cursor, dict) else {}
        found: list[Any] = []
        for (name, _, _), (cursor, keys) in zip(asked, replies, strict=True):
            cursors[name] = next(iter(cursor.values()))
            found.extend(keys)
        return cursors, found

    async def _queue_async(self, pipe: Any, op: Call | Script) -> None:
        # redis.asyncio's scripts are coroutines even on a pipeline: only awaiting one queues it.
        if isinstance(op, Script):
            await self._scripts[op.name](keys=op.keys, args=op.args, client=pipe)
        else:
            getattr(pipe, op.name)(*op.args)

    async def _read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` together on one pooled connection and read every reply."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            return await conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: _exchange(conn, commands), lambda _error: conn.disconnect()
            )
        finally:
            await pool.release(conn)


async def _exchange(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    packed = conn.pack_command(*commands[0]) if len(commands) == 1 else conn.pack_commands(commands)
    await conn.send_packed_command(packed)
    return _replies([await _reply(conn) for _ in commands])


async def _reply(conn: Any) -> Any:
    # Every reply is read, errors included, so the connection is left in step for the next user.
    try:
        return await conn.read_response()
    except ResponseError as exc:
        return exc


def _replies(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


class SyncRunner(_Runner):
    """Runs steps on a ``redis`` (blocking) client."""

    def __init__(
        self,
        client: Any,
        scripts: Mapping[str, str],
        *,
        lean_reads: bool = False,
        budget: float | None = None,
        outages: OutageLog | None = None,
    ) -> None:
        lean = lean_reads and _lean_capable(client, redis.Redis)
        super().__init__(client, scripts, lean, budget, outages)

    def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to completion and return its value."""
        if self.closed:
            steps.close()
            raise RuntimeError(CLOSED)
        budget = None
        outages = self.outages
        try:
            op = next(steps)
            # The budget starts with the first operation (see AsyncRunner.run).
            if self.budget is not None:
                budget = start_at(monotonic() + self.budget)
            while True:
                result: Any = None
                error: Exception | None = None
                try:
                    if self._lean and (lean := _lean_commands(op)) is not None:
                        result = self._read(lean)
                        if type(op) is Call:
                            result = result[0]
                    elif type(op) is Call:
                        result = getattr(self.client, op.name)(*op.args)
                    elif isinstance(op, Compute):
                        started = time.monotonic()
                        result = op.fn(*op.args)
                        redis_deadline.shift(time.monotonic() - started)
                    elif isinstance(op, Hook):
                        result = op.sync_fn(*op.args)
                    elif isinstance(op, Batch):
                        result = self._batch(op.ops)
                    elif isinstance(op, Script):
                        result = self._scripts[op.name](keys=op.keys, args=op.args)
                    elif isinstance(op, Scan):
                        result = self._scan(op)
                    else:
                        result = getattr(self.client, op.name)(*op.args)
                    if outages.failing and type(op) is not Compute:
                        outages.succeeded()
                except Exception as exc:
                    error = _failure(op, exc, outages)
                finally:
                    # Sessions written from threads of an async app: forgotten by its cache too.
                    if self.cache is not None and type(op) is not Call and self.cache.wants(op):
                        self.cache.forget_written(op)
                op = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            if budget is not None:
                stop(budget)

    def _batch(self, ops: list[Call | Script]) -> list[Any]:
        """One pipeline; on a cluster, the scripts run one by one after it."""
        if not self._scripts_apart:
            pipe = self.client.pipeline(transaction=False)
            for item in ops:
                self._queue(pipe, item)
            return pipe.execute()  # type: ignore[no-any-return]
        calls = [op for op in ops if type(op) is Call]
        answers = []
        if calls:
            pipe = self.client.pipeline(transaction=False)
            for item in calls:
                getattr(pipe, item.name)(*item.args)
            answers = pipe.execute()
        ran = [
            self._scripts[op.name](keys=op.keys, args=op.args) for op in ops if type(op) is Script
        ]
        return _merge(ops, ran, answers)

    def _scan(self, op: Scan) -> tuple[Any, list[Any]]:
        """One SCAN round: the server's own, or each unfinished primary's on a cluster."""
        if not self._scripts_apart:
            return self.client.scan(op.cursor, op.match, op.batch)  # type: ignore[no-any-return]
        cursors = dict(op.cursor) if isinstance(op.cursor, dict) else {}
        found: list[Any] = []
        for name, node, at in self._scan_nodes(op.cursor):
            cursor, keys = self.client.scan(at, op.match, op.batch, target_nodes=node)
            cursors[name] = next(iter(cursor.values()))
            found.extend(keys)
        return cursors, found

    def _read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` together on one pooled connection and read every reply."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            return conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: _exchange_sync(conn, commands), lambda _error: conn.disconnect()
            )
        finally:
            pool.release(conn)


def _exchange_sync(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    packed = conn.pack_command(*commands[0]) if len(commands) == 1 else conn.pack_commands(commands)
    conn.send_packed_command(packed)
    replies = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return _replies(replies)
