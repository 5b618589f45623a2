"""Redis clients for :class:`Settings`: standalone, Cluster or Sentinel, else embedded fakeredis."""

from __future__ import annotations

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

from bastion.redis_deadline import AsyncBlockingPool, BlockingPool, deadline_class, left
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
        options: dict[str, Any] = {
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
        }
        return _cluster_clients(url, settings.redis_timeout, options)
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


def _cluster_clients(url: str, timeout: float, options: dict[str, Any]) -> tuple[Any, Any]:
    """redis-py's cluster clients: they learn the slot map from the node named by ``url``.

    They follow MOVED and ASK themselves and retry TRYAGAIN (a multi-key command while the
    slot's keys are half moved) a few times before giving up, which Bastion answers with 503.
    """
    import redis.asyncio.cluster
    import redis.cluster

    async_client = redis.asyncio.cluster.RedisCluster.from_url(
        url, retry=AsyncBudgetRetry(timeout), **options
    )
    sync_client = LazyCluster(
        lambda: redis.cluster.RedisCluster.from_url(url, retry=BudgetRetry(timeout), **options)
    )
    return async_client, sync_client


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
    """Clients of the master the sentinels name, found again on every reconnection.

    redis-py's sentinel pool asks the sentinels for the master when it connects, and drops a
    connection whose server answers READONLY (a master demoted by a failover), so a write is
    never accepted by the old master: the request gets 503 and the next one reaches the new
    master. ``redis_url``, when set, gives the scheme (``rediss://`` for TLS), the user, the
    password and the database of the master's connections; its host is not used.
    """
    import redis.asyncio.sentinel
    import redis.connection
    import redis.sentinel

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
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    addresses = [_host_port(address) for address in settings.redis_sentinels]
    # The sentinels themselves answer within the same timeout, and take no credentials of the
    # master's (give sentinels their own ACL only if they need one; not supported here yet).
    sentinel_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    name = settings.redis_sentinel_master
    sync_sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        addresses, sentinel_kwargs=sentinel_options
    )
    async_sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        addresses, sentinel_kwargs=sentinel_options
    )
    sync_client = sync_sentinel.master_for(  # type: ignore[no-untyped-call]
        name, retry=BudgetRetry(timeout), **kwargs
    )
    async_client = async_sentinel.master_for(name, retry=AsyncBudgetRetry(timeout), **kwargs)
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
