"""What the cluster client costs on the request path: a session check, standalone vs Cluster.

Run with ``./scripts/bench cluster`` (``--requests N``). The same session check
(``bastion.sessions.authenticate``: one HMGET) on a standalone redis-server, where Bastion sends
it through its lean read path, and on a 3-master Redis Cluster through redis-py's
``RedisCluster`` (slot look-up, its command machinery); rounds interleaved, medians printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bastion import Bastion, Settings
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer


async def _round(bastion: Bastion, token: str, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await bastion.sessions.authenticate(token)
    return (time.perf_counter() - started) / requests * 1e6


async def run(requests: int, rounds: int) -> dict[str, float]:
    """Median µs per session check on each topology."""
    server, cluster = RedisServer().start(), RedisCluster().start()
    try:
        bastions = {
            "standalone": Bastion(Settings(redis_url=server.url)),
            "cluster": Bastion(Settings(redis_url=cluster.url, redis_cluster=True)),
        }
        tokens = {k: (await b.sessions.create("alice")).token for k, b in bastions.items()}
        times: dict[str, list[float]] = {k: [] for k in bastions}
        for _ in range(rounds):
            for name, bastion in bastions.items():
                times[name].append(await _round(bastion, tokens[name], requests))
        for bastion in bastions.values():
            await bastion.aclose()
    finally:
        server.cleanup()
        cluster.cleanup()
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    """Print µs per session check on both, and their difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args(argv)
    result = asyncio.run(run(options.requests, options.rounds))
    standalone, cluster = result["standalone"], result["cluster"]
    print(f"session check, standalone (lean read): {standalone:.0f} µs")
    print(f"session check, Redis Cluster client:   {cluster:.0f} µs")
    print(f"cluster client cost: +{cluster - standalone:.0f} µs ({cluster / standalone:.2f}x)")


if __name__ == "__main__":
    main()
