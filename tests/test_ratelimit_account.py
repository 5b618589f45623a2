"""The per-account limit: one email's password guesses from every address together."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from redis.crc import key_slot

from bastion import ConfigError, Settings
from bastion.ratelimit import SCRIPTS, RateLimitCore, SyncRateLimiter
from bastion.redisio import SyncRunner
from tests.test_account_contract import FRAMEWORKS, PASSWORD, Client, _bastion, clients

WRONG = "not the password at all"


def test_the_setting() -> None:
    assert Settings().rate_limit_per_account == 100
    assert (
        Settings.load(env={"BASTION_RATE_LIMIT_PER_ACCOUNT": "250"}).rate_limit_per_account == 250
    )
    for bad in (0, 1_000_001, "many"):
        with pytest.raises(ConfigError) as info:
            Settings.from_mapping({"rate_limit_per_account": bad})
        assert info.value.name == "rate_limit_per_account"


def test_the_account_counter_spans_every_address() -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    settings = Settings(rate_limit_per_email=5, rate_limit_per_ip=50, rate_limit_per_account=8)
    limiter = SyncRateLimiter(RateLimitCore(settings), SyncRunner(client, SCRIPTS))
    verdicts = [
        limiter.hit("login", email="victim@x.io", ip=f"203.0.113.{n}", per_account=True)
        for n in range(10)
    ]
    assert [d.allowed for d in verdicts] == [True] * 8 + [False] * 2
    assert (verdicts[-1].limit, verdicts[-1].remaining) == (8, 0)
    # Spelt another way it is the same account; other accounts and endpoints are their own.
    hit = limiter.hit
    assert not hit("login", email=" VICTIM@x.io", ip="198.51.100.1", per_account=True).allowed
    assert hit("login", email="other@x.io", ip="198.51.100.1", per_account=True).allowed
    assert hit("password", email="victim@x.io", ip="198.51.100.1", per_account=True).allowed
    # Without per_account (sign-up) the counter is neither read nor written.
    assert hit("login", email="victim@x.io", ip="198.51.100.2").allowed
    keys = sorted(k.decode() for k in client.scan_iter("*:account"))
    core = RateLimitCore(settings)
    assert keys == sorted(
        [
            core.account_key("login", "victim@x.io"),
            core.account_key("login", "other@x.io"),
            core.account_key("password", "victim@x.io"),
        ]
    )
    for key in keys:
        assert re.fullmatch(r"bastion:rl:\{[0-9a-f]{32}\}:[a-z]+:account", key), key
        assert "victim" not in key and "x.io" not in key
    # Tagged by the email: each account's counters in a slot of their own, not one shared slot.
    assert len({key_slot(k.encode()) for k in keys}) == 2
    client.close()


# -- over HTTP on Starlette, FastAPI and Flask -----------------------------------------------------


@pytest.fixture(params=FRAMEWORKS)
def make(request: pytest.FixtureRequest, real_redis: str) -> Iterator[Any]:
    """Build the account app of the test's framework; 127.0.0.1 (the test client) is a proxy."""
    with clients(str(request.param)) as client_for:
        yield lambda **settings: client_for(
            _bastion(real_redis, trusted_proxies=("127.0.0.1",), **settings)
        )


def _from(n: int) -> dict[str, str]:
    """The header a trusted proxy adds for the n-th client address."""
    return {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.1"}


def log_in(client: Client, n: int, password: str, email: str = "ada@example.com") -> Any:
    return client.request(
        "POST",
        "/account/sessions",
        json={"email": email, "password": password},
        headers=_from(n),
    )


def test_rotating_addresses_cannot_brute_force_one_account(make: Any) -> None:
    client = make()
    for email in ("ada@example.com", "bob@example.com"):
        made = client.request("POST", "/account", json={"email": email, "password": PASSWORD})
        assert made.status_code == 201
    answers = [log_in(client, n, WRONG) for n in range(101)]
    assert [a.status_code for a in answers] == [401] * 100 + [429]
    refused = answers[-1]
    assert refused.json()["type"] == "general_rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit"] == "100"
    assert 3500 <= int(refused.headers["retry-after"]) <= 3600
    # The trade-off: the owner's right password from a new address waits for the window too.
    assert log_in(client, 200, PASSWORD).status_code == 429
    # Another account is untouched, from the same addresses.
    assert log_in(client, 5, PASSWORD, "bob@example.com").status_code == 201


def test_password_checks_are_limited_per_account(make: Any) -> None:
    client = make(rate_limit_per_account=3)
    made = client.request(
        "POST", "/account", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert made.status_code == 201
    assert log_in(client, 0, PASSWORD).status_code == 201  # the session (a cookie) changes it
    statuses = [
        client.request(
            "PATCH",
            "/account/password",
            json={"password": "a new and long passphrase", "oldPassword": WRONG},
            headers=_from(n),
        ).status_code
        for n in range(1, 5)
    ]
    assert statuses == [401, 401, 401, 429]
    # Ending the other sessions with a password shares the password counter.
    ended = client.request(
        "DELETE", "/account/sessions", json={"password": PASSWORD}, headers=_from(9)
    )
    assert ended.status_code == 429


def test_sign_up_has_no_per_account_counter(make: Any) -> None:
    client = make(rate_limit_per_account=2)
    body = {"email": "ada@example.com", "password": PASSWORD}
    statuses = [
        client.request("POST", "/account", json=body, headers=_from(n)).status_code
        for n in range(4)
    ]
    assert statuses == [201, 409, 409, 409]
