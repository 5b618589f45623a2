"""Redis clients for :class:`Settings`: a real server at ``redis_url``, else embedded fakeredis."""

from __future__ import annotations

import logging
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialBackoff

from bastion.secret import reveal
from bastion.settings import Settings

logger = logging.getLogger("bastion")

EMBEDDED_WARNING = (
    "Bastion is using the embedded in-process Redis (fakeredis) because redis_url is not set. "
    "Sessions live in this process only: they are lost on restart and not shared between workers. "
    "This is for development only; set redis_url (BASTION_REDIS_URL) in production."
)


def make_clients(settings: Settings) -> tuple[Any, Any]:
    """An (async, sync) pair of clients on the same data."""
    if settings.redis_url is None:
        return _embedded()
    url = reveal(settings.redis_url)
    # Fail fast: a request waits at most one short retry before it gets a 503, and the pool
    # reconnects by itself on the next request once Redis is back.
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
    }
    backoff = ExponentialBackoff(cap=0.05, base=0.01)
    async_client = redis.asyncio.Redis.from_url(
        url, retry=redis.asyncio.retry.Retry(backoff, 1), **options
    )
    sync_client = redis.Redis.from_url(url, retry=redis.retry.Retry(backoff, 1), **options)
    return async_client, sync_client


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
