"""200 concurrent log-ins of one user from threads and processes, on a real redis-server."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import httpx
import pytest

from bastion import Bastion, Settings
from tests.conftest import demo_app

pytestmark = pytest.mark.anyio

THREADS, PROCESSES, PER_WORKER, CAP = 4, 4, 25, 10


Made = tuple[str, str, int, tuple[str, ...], str]


def login_many(url: str, count: int, start_at: float) -> list[Made]:
    """Log ``alice`` in ``count`` times from a fresh client, all workers starting at once."""
    bastion = Bastion(Settings(redis_url=url))
    store = bastion.sync.sessions
    bastion.sync.redis.ping()  # connect before the start line, so the logins themselves overlap
    time.sleep(max(0.0, start_at - time.time()))
    worker = f"{os.getpid()}/{threading.get_ident()}"
    made = []
    for _ in range(count):
        new = store.create("alice", limit=CAP)
        made.append((new.token, new.session.id, new.order, new.evicted, worker))
    return made


async def test_cap_holds_under_concurrent_logins(real_redis: str) -> None:
    start_at = time.time() + 3.0  # time enough for the spawned interpreters to import bastion
    spawn = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(PROCESSES, mp_context=spawn) as procs,
        ThreadPoolExecutor(THREADS) as threads,
    ):
        futures = [
            procs.submit(login_many, real_redis, PER_WORKER, start_at) for _ in range(PROCESSES)
        ]
        futures += [
            threads.submit(login_many, real_redis, PER_WORKER, start_at) for _ in range(THREADS)
        ]
        results = [row for f in futures for row in f.result(timeout=120)]

    total = (THREADS + PROCESSES) * PER_WORKER
    assert len(results) == total == 200
    orders = [order for _, _, order, _, _ in results]
    assert len(set(orders)) == total, "two creations got the same rank"
    by_rank = [worker for *_, worker in sorted(results, key=lambda r: r[2])]
    assert len(set(by_rank)) == THREADS + PROCESSES
    switches = sum(a != b for a, b in itertools.pairwise(by_rank))
    assert switches >= THREADS + PROCESSES, "the workers did not actually run at the same time"

    bastion = Bastion(Settings(redis_url=real_redis))
    live = [s.id for s in await bastion.sessions.list("alice")]
    newest = [sid for _, sid, _, _, _ in sorted(results, key=lambda r: r[2])[-CAP:]]
    assert len(live) == CAP
    assert live == newest, "the survivors are not the 10 most recently created"

    evicted = [sid for _, _, _, gone, _ in results for sid in gone]
    assert len(evicted) == len(set(evicted)) == total - CAP, "a session was evicted twice or never"
    assert set(evicted) | set(live) == {sid for _, sid, _, _, _ in results}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://t"
    ) as client:
        for token, sid, _, _, _ in results:
            response = await client.get("/me", headers={"X-Bastion-Session": token})
            if sid in live:
                assert response.status_code == 200 and response.json()["session"] == sid
            else:
                assert response.status_code == 401, sid
