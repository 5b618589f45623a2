"""``redis_timeout`` and ``redis_max_connections`` on a Redis Cluster, as on one server.

On the shared cluster fixture: a stalled master (``CLIENT PAUSE``, shorter than the cluster's
node timeout, so no failover starts) answers 503 within the timeout, its retry and slot-map
refresh included; more requests than connections wait for one instead of failing, and no
node gets more than ``redis_max_connections`` from a client. Each test fails without the
budget-aware cluster clients (2 x the timeout; MaxConnectionsError 503s; 50 connections a node).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from bastion import Bastion, Settings
from bastion.errors import ServiceUnavailable
from bastion.sessions import keys
from tests.redis_cluster import RedisCluster
from tests.test_cluster_faults import _owner

TIMEOUT = 0.5
SLACK = 0.15
"""Scheduling slack on a loaded 2-core machine: the waits this catches are multiples of it."""
PAUSE_MS = 1500
"""Longer than 2 x TIMEOUT, shorter than the fixture's cluster-node-timeout (2 s)."""


def _settings(url: str, **more: Any) -> Settings:
    return Settings(**{"redis_url": url, "redis_cluster": True, "redis_timeout": TIMEOUT, **more})


def _pause(port: int) -> None:
    admin = redis.Redis(port=port, socket_timeout=5)
    try:
        admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    finally:
        admin.close()


def _unpause(port: int) -> None:
    admin = redis.Redis(port=port, socket_timeout=5)
    try:
        admin.execute_command("CLIENT", "UNPAUSE")
    finally:
        admin.close()


def test_a_stalled_master_answers_503_within_the_timeout_async(
    redis_cluster: RedisCluster, cluster_redis: str
) -> None:
    async def run() -> float:
        bastion = Bastion(_settings(cluster_redis))
        try:
            token = (await bastion.sessions.create("stalled")).token
            port = _owner(redis_cluster, keys.sessions("bastion", "stalled"))
            _pause(port)
            try:
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable):
                    await bastion.sessions.authenticate(token)
                return time.monotonic() - started
            finally:
                _unpause(port)
        finally:
            await bastion.aclose()

    took = asyncio.run(run())
    print(f"\nasync cluster client, master paused: 503 after {took * 1000:.0f} ms")
    assert took <= TIMEOUT + SLACK


def test_a_stalled_master_answers_503_within_the_timeout_sync(
    redis_cluster: RedisCluster, cluster_redis: str
) -> None:
    bastion = Bastion(_settings(cluster_redis))
    try:
        token = bastion.sync.sessions.create("stalled").token
        port = _owner(redis_cluster, keys.sessions("bastion", "stalled"))
        _pause(port)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                bastion.sync.sessions.authenticate(token)
            took = time.monotonic() - started
        finally:
            _unpause(port)
    finally:
        bastion.close()
    print(f"\nsync cluster client, master paused: 503 after {took * 1000:.0f} ms")
    assert took <= TIMEOUT + SLACK


def _most_connections(client: Any) -> int:
    """The most connections the client holds to any one node."""
    nodes = list(client.nodes_manager.nodes_cache.values())
    if hasattr(nodes[0], "_connections"):  # asyncio: each node keeps its own list
        return max(len(node._connections) for node in nodes)
    return max(
        len(node.redis_connection.connection_pool._available_connections)
        + len(node.redis_connection.connection_pool._in_use_connections)
        for node in nodes
        if node.redis_connection is not None
    )


def test_more_requests_than_connections_wait_async(cluster_redis: str) -> None:
    """150 at once over 5 connections: all answered, none refused (redis-py alone: 503s)."""

    async def run() -> tuple[list[Any], int]:
        bastion = Bastion(_settings(cluster_redis, redis_timeout=5.0, redis_max_connections=5))
        try:
            tokens = [(await bastion.sessions.create(f"w{i}")).token for i in range(30)]
            found = await asyncio.gather(
                *(bastion.sessions.authenticate(tokens[i % 30]) for i in range(150)),
                return_exceptions=True,
            )
            return found, _most_connections(bastion.redis)
        finally:
            await bastion.aclose()

    found, most = asyncio.run(run())
    refused = [f for f in found if isinstance(f, BaseException)]
    assert refused == [] and all(f is not None for f in found)
    assert most <= 5


def test_more_requests_than_connections_wait_sync(cluster_redis: str) -> None:
    """24 threads over 3 connections a node: all answered, no node given more."""
    bastion = Bastion(_settings(cluster_redis, redis_timeout=5.0, redis_max_connections=3))
    try:
        tokens = [bastion.sync.sessions.create(f"t{i}").token for i in range(24)]

        def check(token: str) -> bool:
            return all(bastion.sync.sessions.authenticate(token) is not None for _ in range(20))

        with ThreadPoolExecutor(24) as pool:
            assert all(pool.map(check, tokens))
        assert _most_connections(bastion.sync.redis._get()) <= 3
    finally:
        bastion.close()
