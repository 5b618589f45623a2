"""Redis down: every 503 says when to come back (Retry-After), on Starlette, FastAPI and Flask."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bastion.errors import ServiceUnavailable
from tests.redis_server import RedisServer
from tests.test_account_contract import FRAMEWORKS, PASSWORD, Client, _bastion


@pytest.fixture
def own_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop (the suite's shared one stays up).

    It asks for ``redis_server`` so it is skipped, or fails under CI, like it when the binary
    is missing.
    """
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def test_the_error_carries_retry_after() -> None:
    assert ServiceUnavailable().headers == {"Retry-After": "2"}
    assert ServiceUnavailable(headers={"X-Extra": "1"}).headers == {
        "Retry-After": "2",
        "X-Extra": "1",
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_503_has_retry_after(framework: str, own_redis: RedisServer) -> None:
    bastion = _bastion(own_redis.url, redis_timeout=0.3)
    token = bastion.sync.sessions.create("alice").token
    loop = asyncio.Runner()
    client = Client(framework, bastion, loop)
    try:
        up = client.request("GET", "/account", headers={"X-Bastion-Session": token})
        assert up.status_code == 401  # Redis answers: a session of no account
        own_redis.stop()
        body = {"email": "ada@example.com", "password": PASSWORD}
        answers = {
            # Refused by the middleware before the app: the credential cannot be checked.
            "middleware": client.request("GET", "/account", headers={"X-Bastion-Session": token}),
            # Refused by the account routes: the rate limit cannot be counted.
            "log_in": client.request("POST", "/account/sessions", json=body),
            "sign_up": client.request("POST", "/account", json=body),
        }
        for where, answer in answers.items():
            assert answer.status_code == 503, where
            assert answer.json()["type"] == "service_unavailable", where
            assert answer.headers["retry-after"] == "2", where
    finally:
        client.close()
        loop.close()
