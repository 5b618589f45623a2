"""Redis memory per session: writes sessions through Bastion and reads ``INFO memory``.

Run with ``./scripts/bench memory`` (``--sessions N``, ``--json``). It starts its own
redis-server (default configuration, no persistence) on a free loopback port, and writes the
sessions through Bastion's own create step (pipelined, 1,000 at a time), each with a 111-character
user agent, in three shapes:

- ``10 per user``: 10,000 users with the default cap of 10 sessions, from one browser each
  (Chrome's agent);
- ``1 per user``: 100,000 users with one session each (no user agent to share), Chrome's agent;
- ``1 per user, unknown agent``: the same with an agent of 111 characters in which none of the
  browser phrases that :mod:`bastion.sessions.agents` stores as a byte each occurs (the layout's
  worst case for that length).

Each shape's figure is (``used_memory`` after - before) / sessions, after the same writes on an
empty server, so Redis's own baseline is not counted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import redis

from bastion import Bastion, Settings
from bastion.redisio import together
from tests.redis_server import RedisServer

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
OTHER_AGENT = (
    "ExampleCrawler/3.2 (compatible; +https://crawler.example.org/about; contact "
    "crawler@example.org; build 2026.11)"
)
assert len(USER_AGENT) == len(OTHER_AGENT) == 111
CHUNK = 1000


def measure(url: str, sessions: int, per_user: int, agent: str = USER_AGENT) -> dict[str, Any]:
    """Write ``sessions`` sessions, ``per_user`` per user; bytes per session from INFO memory."""
    client = redis.Redis.from_url(url)
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    with Bastion(Settings(redis_url=url)) as bastion:
        core, run = bastion._sessions_core, bastion._sync_runner
        for start in range(0, sessions, CHUNK):
            steps = [
                core.create(f"user{n // per_user}", ip="203.0.113.7", user_agent=agent)
                for n in range(start, min(start + CHUNK, sessions))
            ]
            run.run(together(*steps))
    after = int(client.info("memory")["used_memory"])
    keys = int(client.dbsize())
    client.close()
    return {
        "shape": f"{per_user} per user" + ("" if agent == USER_AGENT else ", unknown agent"),
        "sessions": sessions,
        "keys": keys,
        "bytes_per_session": round((after - before) / sessions),
    }


def main(argv: list[str] | None = None) -> None:
    """Print bytes per session for each shape, and the 10M-session extrapolation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    server = RedisServer().start()
    try:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        rows = [measure(server.url, options.sessions, n) for n in (10, 1)]
        rows.append(measure(server.url, options.sessions, 1, OTHER_AGENT))
    finally:
        server.cleanup()
    if options.json:
        print(json.dumps({"redis_version": version, "rows": rows}, indent=2))
        return
    print(f"Redis {version}, default configuration; user agent of {len(USER_AGENT)} characters")
    for row in rows:
        per = row["bytes_per_session"]
        print(
            f"{row['shape']:>26}: {row['sessions']:,} sessions, {row['keys']:,} keys, "
            f"{per} B per session, 10M sessions ~ {per * 10_000_000 / 2**30:.1f} GiB"
        )


if __name__ == "__main__":
    main()
