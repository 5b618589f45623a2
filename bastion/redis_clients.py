"""Redis clients for :class:`Settings`: a real server at ``redis_url``, else embedded fakeredis."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.retry
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
    if settings.redis_url is None:
        return _embedded()
    url = reveal(settings.redis_url)
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
