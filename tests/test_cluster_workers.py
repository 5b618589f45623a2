"""4 uvicorn worker processes on the Redis Cluster: the cap holds, grants and policies reach all.

A real ``uvicorn --workers 4`` serves :mod:`tests.workers_app` on a free loopback port, its
Redis set by ``BASTION_REDIS_URL`` and ``BASTION_REDIS_CLUSTER=true`` as in production.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion import Bastion, Settings
from bastion.cli import main
from tests.redis_server import free_port
from tests.workers_app import NOTES, POLICY

pytestmark = pytest.mark.anyio

WORKERS, LOGINS, CAP = 4, 200, 10
IN_FLIGHT = 200
"""Requests at once: all the log-ins, about 50 a worker."""
MAX_CONNECTIONS = 8
"""Each worker's ``redis_max_connections``: fewer than the requests it gets at once, which wait
for a connection (redis-py's own cluster pool refused them at once: MaxConnectionsError)."""
ROOT = Path(__file__).resolve().parent.parent
START_WITHIN = 60.0
"""Seconds 4 workers may take to start on a loaded 2-core machine."""
SWAP_WITHIN = 1.0
"""The promise: every worker has a published policy version within a second."""


class Workers:
    """``uvicorn tests.workers_app:create_app --workers N`` in a subprocess, on a free port."""

    def __init__(self, env: dict[str, str], workers: int = WORKERS) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", "tests.workers_app:create_app", "--factory"]
        command += ["--workers", str(workers), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--log-level", "warning"]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.DEVNULL,
        )
        self.workers = workers
        self.pids: set[int] = set()

    def wait_for_every_worker(self) -> set[int]:
        """Poll ``/health`` on new connections until every worker process has answered."""
        pids: set[int] = set()
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline and len(pids) < self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}")
            try:
                pids.add(httpx.get(f"{self.url}/health", timeout=5).json()["pid"])
            except httpx.TransportError:
                time.sleep(0.1)
        if len(pids) < self.workers:
            raise RuntimeError(f"only {len(pids)} of {self.workers} workers answered")
        self.pids = pids
        return pids

    def stop(self) -> None:
        """SIGTERM to uvicorn's supervisor (it stops its workers); SIGKILL if that hangs."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workers(cluster_redis: str, tmp_path: Path) -> Iterator[Workers]:
    policy = tmp_path / "policy.csv"
    policy.write_text(POLICY)
    served = Workers(
        {
            "BASTION_REDIS_URL": cluster_redis,
            "BASTION_REDIS_CLUSTER": "true",
            "BASTION_REDIS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "WORKERS_APP_POLICY": str(policy),
        }
    )
    try:
        served.wait_for_every_worker()
        yield served
    finally:
        served.stop()


def _fresh(url: str) -> httpx.AsyncClient:
    """A client opening a new connection per request, so the requests spread over workers."""
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=60)


async def _log_in(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    response = await client.post(
        "/login", json={"user": user}, headers={"X-Bastion-Fallback": "true"}
    )
    assert response.status_code == 201, response.text
    return {**response.json(), "token": response.headers["X-Bastion-Session"]}


async def test_cap_holds_and_a_grant_reaches_every_worker(
    workers: Workers, cluster_redis: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bastion = Bastion(Settings(redis_url=cluster_redis, redis_cluster=True))
    async with _fresh(workers.url) as client:
        # 200 log-ins of one user at once, over every worker.
        made = await asyncio.gather(*(_log_in(client, "alice") for _ in range(LOGINS)))
        login_pids = {m["pid"] for m in made}
        live = [s.id for s in await bastion.sessions.list("alice")]
        assert len(live) == CAP
        evicted = [sid for m in made for sid in m["evicted"]]
        assert len(evicted) == len(set(evicted)) == LOGINS - CAP, "evicted twice or never"
        assert set(evicted) | set(live) == {m["session"] for m in made}

        async def me(token: str) -> tuple[int, int | None]:
            response = await client.get("/me", headers={"X-Bastion-Session": token})
            return response.status_code, response.json().get("pid")

        answers = await asyncio.gather(*(me(m["token"]) for m in made))
        for m, (status, _) in zip(made, answers, strict=True):
            assert status == (200 if m["session"] in live else 401), m["session"]

        # A document only its rows open: 404 on every worker, then granted through the API.
        bob = {"X-Bastion-Session": (await _log_in(client, "bob"))["token"]}
        doc = f"/{NOTES}/documents/n1"

        before = await _each_worker(client, doc, bob, lambda r: r.status_code == 404)
        assert len(before) == WORKERS
        await bastion.permissions.grant(doc.lstrip("/"), "user:bob", "read")
        granted = time.monotonic()
        after = await _each_worker(client, doc, bob, lambda r: r.status_code == 200)
        slowest = time.monotonic() - granted
        assert len(after) == WORKERS, after
        # The property: every request after the grant, on every worker, saw it (rows are read
        # in the request). How soon the loop first reached the last worker is the OS's
        # balancing of connections, printed, not asserted (a busy machine takes longer).
        statuses = [r.status_code for rs in after.values() for r in rs]
        assert set(statuses) == {200}, "a worker answered from before the grant"
    await bastion.aclose()
    with capsys.disabled():
        print(
            f"\n{WORKERS} uvicorn workers on the Cluster ({MAX_CONNECTIONS} connections each): "
            f"{LOGINS} log-ins of one user at once on "
            f"{len(login_pids)} workers left {len(live)} sessions, {len(evicted)} evicted tokens "
            f"401; a grant answered 200 by every worker within {slowest * 1000:.0f} ms "
            f"({len(statuses)} requests after it, none refused)"
        )


async def _each_worker(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], until: Any
) -> dict[int, list[httpx.Response]]:
    """GET ``path`` on new connections until every worker's answers satisfy ``until`` (10 s)."""
    answers: dict[int, list[httpx.Response]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = await asyncio.gather(*(client.get(path, headers=headers) for _ in range(WORKERS)))
        for response in batch:
            answers.setdefault(int(response.headers["x-worker"]), []).append(response)
        if len(answers) == WORKERS and all(until(r[-1]) for r in answers.values()):
            return answers
    raise AssertionError(f"not every worker answered as expected: {answers}")


async def test_a_published_policy_reaches_every_worker_within_a_second(
    workers: Workers,
    cluster_redis: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The workers watch for published versions as in production (policy_reload_interval's
    # default); each tells when a version came in: its watcher's log line, timed in the worker.
    async with _fresh(workers.url) as client:
        bob = {"X-Bastion-Session": (await _log_in(client, "bob"))["token"]}
        before = await _each_worker(client, "/reports", bob, lambda r: True)
        assert {r.status_code for rs in before.values() for r in rs} == {403}

        folder = tmp_path / "published"
        folder.mkdir()
        (folder / "policy.csv").write_text(POLICY + "p, users, reports, read\n")
        (folder / "policy.test.yaml").write_text(REPORTS_SUITE)
        monkeypatch.setenv("BASTION_REDIS_CLUSTER", "true")
        assert main(["policy", "publish", str(folder), "--redis-url", cluster_redis]) == 0
        # The CLI returns right after the version is stored: the publication's moment.
        published = time.time()
        health = await _each_worker(client, "/health", {}, lambda r: r.json()["published"] == 1)
        assert set(health) == workers.pids, "a worker restarted"
        delays = sorted(rs[-1].json()["since"] - published for rs in health.values())
        assert delays[-1] < SWAP_WITHIN, delays

        # From then on every request on every worker is decided by the published policy.
        after = await _each_worker(client, "/reports", bob, lambda r: True)
        assert {r.status_code for rs in after.values() for r in rs} == {200}
    with capsys.disabled():
        print(
            f"\n{WORKERS} uvicorn workers on the Cluster: a published policy in force on every "
            f"worker {', '.join(f'{d * 1000:.0f}' for d in delays)} ms after publication; "
            f"{sum(map(len, after.values()))} requests after it, all decided by it"
        )


REPORTS_SUITE = """name: reports
policies: [policy.csv]
principals:
  bob: {user: bob}
tests:
  - name: users read the reports
    principal: bob
    resource: reports
    expect: {read: allow}
"""
