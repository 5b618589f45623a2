"""Redis clients for :class:`Settings`: standalone, Cluster or Sentinel, else embedded fakeredis."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.commands.core
import redis.connection
import redis.exceptions
import redis.retry
from redis.backoff import ExponentialBackoff

from bastion.redis_deadline import (
    AsyncBlockingPool,
    AsyncGate,
    BlockingPool,
    deadline_class,
    left,
)
from bastion.secret import reveal
from bastion.settings import Settings

logger = logging.getLogger("bastion")

T = TypeVar("T")
P = TypeVar("P")

EMBEDDED_WARNING = (
    "Bastion is using the embedded in-process Redis (fakeredis) because redis_url is not set. "
    "Sessions live in this process only: they are lost on restart and not shared between workers. "
    "This is for development only; set redis_url (BASTION_REDIS_URL) in production."
)


FAST_FAILURE_SHARE = 0.1
"""A connection error is retried only if it came within this share of ``redis_timeout``."""


_RETRY_NEEDS = 0.05
"""A retry is worth trying only with this much of the budget left (its backoff is at most this)."""


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.05, base=0.01)


def _fast_only(
    budget: float, started: float, is_retryable: Callable[[Exception], bool] | None
) -> Callable[[Exception], bool]:
    """redis-py's ``is_retryable`` hook: retry only a failure that came fast, with time left."""

    def retryable(error: Exception) -> bool:
        if is_retryable is not None and not is_retryable(error):
            return False
        if (left(None) or budget) <= _RETRY_NEEDS:  # the step's budget is (nearly) spent
            return False
        return time.monotonic() - started < budget * FAST_FAILURE_SHARE

    return retryable


class BudgetRetry(redis.retry.Retry):
    """redis-py's ``Retry``, kept within ``redis_timeout`` (see :func:`make_clients`)."""

    def __init__(self, budget: float) -> None:
        super().__init__(_backoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        self.budget = budget

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Run ``do``; a connection error that came fast is retried once."""
        started = time.monotonic()
        return super().call_with_retry(
            do, fail, _fast_only(self.budget, started, is_retryable), with_failure_count
        )


class AsyncBudgetRetry(redis.asyncio.retry.Retry):
    """:class:`BudgetRetry` for ``redis.asyncio``."""

    def __init__(self, budget: float) -> None:
        super().__init__(_backoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        self.budget = budget

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Run ``do``; a connection error that came fast is retried once."""
        started = time.monotonic()
        return await super().call_with_retry(
            do, fail, _fast_only(self.budget, started, is_retryable), with_failure_count
        )


def make_clients(settings: Settings) -> tuple[Any, Any]:
    """An (async, sync) pair of clients on the same data.

    A request waits at most ``redis_timeout`` for Redis in all, retries included
    (:mod:`bastion.redis_deadline`): waiting for one of the ``redis_max_connections``
    pooled connections (the pool blocks rather than failing at once when all are busy),
    connecting, and reading share that one budget. A timeout is never retried (Redis is hung
    or overloaded; asking again doubled the wait, to 4 s with a 2 s timeout). A connection
    error (refused, reset: a restart) is retried once, after at most 50 ms, and only if it
    came within a tenth of the timeout, so a retry never follows a long wait. The pool
    reconnects by itself on the next request once Redis is back.
    """
    if settings.redis_sentinels:
        return _sentinel_clients(settings)
    if settings.redis_url is None:
        return _embedded()
    url = reveal(settings.redis_url)
    if settings.redis_cluster:
        return _cluster_clients(url, settings)
    # from_pool: the client owns its pool, so closing the client closes the connections.
    return (
        redis.asyncio.Redis.from_pool(
            _pool(AsyncBlockingPool, url, settings, AsyncBudgetRetry(settings.redis_timeout))
        ),
        redis.Redis.from_pool(
            _pool(BlockingPool, url, settings, BudgetRetry(settings.redis_timeout))
        ),
    )


def _pool(kind: type[P], url: str, settings: Settings, retry: Any) -> P:
    """A blocking pool of ``redis_max_connections`` whose waits share the request's budget."""
    pool = kind.from_url(  # type: ignore[attr-defined]
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=retry,
    )
    # from_url picks the connection class from the scheme (TCP, TLS, Unix socket).
    pool.connection_class = deadline_class(pool.connection_class)
    return pool  # type: ignore[no-any-return]


def _cluster_clients(url: str, settings: Settings) -> tuple[Any, Any]:
    """redis-py's cluster clients: they learn the slot map from the node named by ``url``.

    They follow MOVED and ASK themselves and retry TRYAGAIN (a multi-key command while the
    slot's keys are half moved) a few times before giving up, which Bastion answers with 503.
    Every connection they open to any node waits only for what is left of the request's
    budget (connect, replies, the slot-map refresh after a failure and the one retry), and a
    worker waits for a free connection rather than failing when ``redis_max_connections``
    are busy: per node on the blocking client (its pools), per client on the asyncio one.
    """
    timeout = settings.redis_timeout
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": settings.redis_max_connections,
    }
    async_client = _async_cluster_class().from_url(url, retry=AsyncBudgetRetry(timeout), **options)
    sync_client = LazyCluster(
        lambda: _sync_cluster_class().from_url(
            url,
            retry=BudgetRetry(timeout),
            connection_pool_class=ClusterNodePool,
            timeout=timeout,
            **options,
        )
    )
    return async_client, sync_client


class ClusterNodePool(BlockingPool):
    """The blocking cluster client's pool of one node: waits for a free connection when all of
    its ``redis_max_connections`` are busy, and its connections keep to the budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The node's connection class (plain or TLS, from the URL's scheme) within the budget.
        self.connection_class = deadline_class(self.connection_class)


_SYNC_CLUSTER: Any = None


def _sync_cluster_class() -> Any:
    """:class:`redis.cluster.RedisCluster`, retrying only while the budget has time left."""
    global _SYNC_CLUSTER
    if _SYNC_CLUSTER is None:
        import redis.cluster

        class BudgetSyncCluster(redis.cluster.RedisCluster):
            """redis-py's blocking cluster client, retrying only while there is time left.

            Its pools (:class:`ClusterNodePool`) and their connections keep to the budget; what
            it cannot stop is its own 250 ms sleep before refreshing the slot map on CLUSTERDOWN
            (a blocking sleep), so a request may end up to that much past the budget then.
            """

            ERRORS_ALLOW_RETRY = WhileTimeLeft(redis.cluster.RedisCluster.ERRORS_ALLOW_RETRY)  # type: ignore[assignment]

        _SYNC_CLUSTER = BudgetSyncCluster
    return _SYNC_CLUSTER


_ASYNC_CLUSTER: Any = None


def _async_cluster_class() -> Any:
    """:class:`redis.asyncio.cluster.RedisCluster` within the budget (built on first use: the
    cluster module is imported only by an app on a Cluster)."""
    global _ASYNC_CLUSTER
    if _ASYNC_CLUSTER is not None:
        return _ASYNC_CLUSTER
    import redis.asyncio.cluster

    class BudgetCluster(redis.asyncio.cluster.RedisCluster):
        """redis-py's asyncio cluster client whose commands wait for a place, not fail.

        Its per-node pools raise ``MaxConnectionsError`` at once when full (60-100 requests
        at once got 503s) and take no pool class; each command or pipeline holds a place in
        an :class:`AsyncGate` of ``max_connections`` instead, so no node is asked for more.
        Its connections (to every node, learnt or not yet) keep to the request's budget.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            budget_class = deadline_class(self.connection_kwargs["connection_class"])
            # The same dict builds every node the slot map names later.
            self.connection_kwargs["connection_class"] = budget_class
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_class = budget_class
            timeout = self.connection_kwargs.get("socket_timeout")
            self.gate = AsyncGate(self.connection_kwargs["max_connections"], timeout)

        ERRORS_ALLOW_RETRY = WhileTimeLeft(redis.asyncio.cluster.RedisCluster.ERRORS_ALLOW_RETRY)  # type: ignore[assignment]

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            gate = self.gate
            await gate.enter()
            try:
                return await _within_budget(super().execute_command(*args, **kwargs))
            finally:
                gate.leave()

        def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
            if shard_hint:  # refused as redis-py's own does
                return super().pipeline(transaction, shard_hint)
            return BudgetPipeline(self, transaction)  # type: ignore[abstract]

    class BudgetPipeline(redis.asyncio.cluster.ClusterPipeline):
        """A cluster pipeline that holds one place in its client's gate while it runs."""

        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            gate: AsyncGate = self.cluster_client.gate  # type: ignore[attr-defined]
            await gate.enter()
            try:
                return await _within_budget(super().execute(*args, **kwargs))
            finally:
                gate.leave()

    _ASYNC_CLUSTER = BudgetCluster
    return BudgetCluster


HARD_STOP_AFTER = 0.02
"""How long past the budget a cluster command is cancelled (its own socket waits end at the
budget; this stops what redis-py does not bound: its 250 ms sleep on CLUSTERDOWN before a
slot-map refresh, and the wait for another coroutine's refresh)."""


async def _within_budget(work: Awaitable[T]) -> T:
    """``work``, cancelled ``HARD_STOP_AFTER`` past the budget (a 503, like a timeout)."""
    rest = left(None)
    if rest is None:  # outside a runner: the plain timeouts
        return await work
    try:
        async with asyncio.timeout(rest + HARD_STOP_AFTER):
            return await work
    except TimeoutError:
        # redis-py's asyncio connections disconnect when cancelled mid-command, so none is
        # left with a reply unread.
        raise redis.exceptions.TimeoutError("Redis did not answer within redis_timeout") from None


class WhileTimeLeft(tuple[type[Exception], ...]):
    """redis-py's cluster ``ERRORS_ALLOW_RETRY``, which holds only while the budget has time
    for a retry: its retry refreshes the slot map first (how a failover is followed), but one
    after a timeout only doubled the wait."""

    def __contains__(self, kind: object) -> bool:
        return (left(None) or 1.0) > _RETRY_NEEDS and super().__contains__(kind)


class LazyCluster:
    """redis-py's blocking ``RedisCluster``, built on first use.

    Its constructor connects to learn the slot map, and building a Bastion must do no Redis I/O
    (the asyncio client already waits for its first command).
    """

    is_cluster = True

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

    def get_encoder(self) -> Any:
        """The encoder scripts are hashed with (redis-py's default), without connecting."""
        encoder: Any = redis.connection.Encoder  # type: ignore[attr-defined]
        return encoder("utf-8", "strict", False)

    def register_script(self, script: str) -> Any:
        """A script run through this client (connects when it first runs)."""
        return redis.commands.core.Script(self, script)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the client if it was ever built."""
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def _sentinel_clients(settings: Settings) -> tuple[Any, Any]:
    """Clients of the master the sentinels name, which take no write on a demoted master.

    redis-py's sentinel pool asks the sentinels for the master when it connects and drops a
    connection whose server answers READONLY; :mod:`bastion.redis_sentinel` adds what that
    misses: requests get 503 from the sentinels' first failover event to ``+switch-master``,
    and no connection to the old master is used after it. The pools wait for a free
    connection when ``redis_max_connections`` are busy, and every wait (the sentinels' answers
    included) shares the request's budget. ``redis_url``, when set, gives the scheme
    (``rediss://`` for TLS), the user, the password and the database of the master's
    connections; its host is not used.
    """
    from bastion import redis_sentinel

    assert settings.redis_sentinel_master is not None  # Settings checks it comes with sentinels
    timeout = settings.redis_timeout
    kwargs: dict[str, Any] = {}
    if settings.redis_url is not None:
        parsed = redis.connection.parse_url(reveal(settings.redis_url))  # type: ignore[no-untyped-call]
        for name in ("host", "port", "path", "connection_class"):
            parsed.pop(name, None)
        kwargs.update(parsed)
        if reveal(settings.redis_url).startswith("rediss:"):
            kwargs["ssl"] = True
    kwargs.update(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
    )
    addresses = [_host_port(address) for address in settings.redis_sentinels]
    # The sentinels themselves answer within the same timeout, and take no credentials of the
    # master's (give sentinels their own ACL only if they need one; not supported here yet).
    sentinel_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    name = settings.redis_sentinel_master
    watch = redis_sentinel.FailoverWatch(name, addresses, dict(sentinel_options))
    sync_sentinel = redis_sentinel.SyncSentinel(  # type: ignore[no-untyped-call]
        addresses, sentinel_kwargs=sentinel_options
    )
    async_sentinel = redis_sentinel.AsyncSentinel(  # type: ignore[no-untyped-call]
        addresses, sentinel_kwargs=sentinel_options
    )
    for sentinel in (sync_sentinel, async_sentinel):
        sentinel.watch = watch
        for client in sentinel.sentinels:  # asking them shares the budget too
            pool = client.connection_pool
            pool.connection_class = deadline_class(pool.connection_class)
    sync_client = sync_sentinel.master_for(  # type: ignore[no-untyped-call]
        name,
        connection_pool_class=redis_sentinel.SyncSentinelPool,
        retry=BudgetRetry(timeout),
        watch=watch,
        **kwargs,
    )
    async_client = async_sentinel.master_for(
        name,
        connection_pool_class=redis_sentinel.AsyncSentinelPool,
        retry=AsyncBudgetRetry(timeout),
        watch=watch,
        **kwargs,
    )
    return async_client, sync_client


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _embedded() -> tuple[Any, Any]:
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis runs Lua scripts only with lupa)
    except ImportError:
        raise RuntimeError(
            "redis_url is not set and the embedded development Redis is not installed: "
            "pip install 'bastion[demo]' for it, or set redis_url (BASTION_REDIS_URL) to a real "
            "Redis."
        ) from None
    logger.warning(EMBEDDED_WARNING)
    server = fakeredis.FakeServer()
    return fakeredis.FakeAsyncRedis(server=server), fakeredis.FakeRedis(server=server)
