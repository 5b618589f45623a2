"""Rate limits: per (email, IP) and per IP, atomic under bursts, on fakeredis and redis-server."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.crc import key_slot

from bastion import Settings
from bastion.errors import RateLimited, ServiceUnavailable
from bastion.ratelimit import (
    SCRIPTS,
    AsyncRateLimiter,
    RateDecision,
    RateLimitCore,
    SyncRateLimiter,
    normalize_email,
    normalize_ip,
)
from bastion.redis_clients import make_clients
from bastion.redisio import AsyncRunner, SyncRunner
from tests.redis_server import free_port

pytestmark = pytest.mark.anyio

ATTACKER, VICTIM_IP = "203.0.113.9", "198.51.100.7"
KEY = re.compile(r"bastion:rl:\{([0-9a-f]{32})\}:[a-z]+:(ip|email:[0-9a-f]{32})")


def _fullwidth(text: str) -> str:
    """The same letters in their full-width forms, which NFKC folds back."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


@dataclass
class Limiters:
    """Both fronts on one Redis, and a raw sync client to look at the keys."""

    aio: AsyncRateLimiter
    sync: SyncRateLimiter
    raw: Any

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self.raw.scan_iter("*"))


def _fake(settings: Settings) -> tuple[Limiters, Any]:
    server = fakeredis.FakeServer()
    aclient = fakeredis.FakeAsyncRedis(server=server)
    client = fakeredis.FakeRedis(server=server)
    made = Limiters(
        AsyncRateLimiter(RateLimitCore(settings), AsyncRunner(aclient, SCRIPTS)),
        SyncRateLimiter(RateLimitCore(settings), SyncRunner(client, SCRIPTS)),
        client,
    )
    return made, aclient


def _real(url: str, settings: Settings) -> tuple[Limiters, Any]:
    # The clients Bastion itself would make (short timeouts, one quick retry).
    aclient, client = make_clients(Settings(redis_url=url))
    made = Limiters(
        AsyncRateLimiter(RateLimitCore(settings), AsyncRunner(aclient, SCRIPTS)),
        SyncRateLimiter(RateLimitCore(settings), SyncRunner(client, SCRIPTS)),
        client,
    )
    return made, aclient


@pytest.fixture
async def make(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A factory of :class:`Limiters` with the given settings on the test's backend."""
    opened: list[Any] = []

    def factory(**values: Any) -> Limiters:
        settings = Settings(**values)
        if backend == "fakeredis":
            made, aclient = _fake(settings)
        else:
            made, aclient = _real(request.getfixturevalue("real_redis"), settings)
        opened.append((made.raw, aclient))
        return made

    yield factory
    for client, aclient in opened:
        client.close()
        await aclient.aclose()


async def test_limit_reached_gives_429_with_headers(make: Any) -> None:
    lim = make(rate_limit_per_email=3, rate_limit_window=600)
    seen = [await lim.aio.hit("login", email="alice@example.com", ip=ATTACKER) for _ in range(3)]
    assert [(d.allowed, d.limit, d.remaining) for d in seen] == [(True, 3, r) for r in (2, 1, 0)]
    for decision in seen:
        decision.raise_if_denied()
        assert "Retry-After" not in decision.headers()
        assert 599 < decision.reset_after <= 600

    denied = await lim.aio.hit("login", email="alice@example.com", ip=ATTACKER)
    assert (denied.allowed, denied.limit, denied.remaining) == (False, 3, 0)
    with pytest.raises(RateLimited) as caught:
        denied.raise_if_denied()
    error = caught.value
    assert error.status == 429 and error.to_dict()["type"] == "general_rate_limit_exceeded"
    assert set(error.headers) == {
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
    }
    assert error.headers["X-RateLimit-Limit"] == "3"
    assert error.headers["X-RateLimit-Remaining"] == "0"
    assert 598 <= int(error.headers["Retry-After"]) <= 600
    assert abs(int(error.headers["X-RateLimit-Reset"]) - (time.time() + 600)) <= 2
    # The sync front sees the same counters.
    assert not lim.sync.hit("login", email="ALICE@example.com", ip=ATTACKER).allowed


def test_decision_headers_round_up() -> None:
    denied = RateDecision(False, 10, 0, 0.2, decided_at=1000.0)
    assert denied.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1001",
        "Retry-After": "1",
    }
    assert RateDecision(False, 10, 0, 0.0, decided_at=5.0).headers()["Retry-After"] == "1"
    allowed = RateDecision(True, 10, 4, 59.5, decided_at=1000.0)
    assert allowed.headers()["X-RateLimit-Reset"] == "1060"
    allowed.raise_if_denied()


async def test_strictest_counter_is_reported(make: Any) -> None:
    lim = make(rate_limit_per_email=3, rate_limit_per_ip=5)
    first = await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)
    assert (first.limit, first.remaining) == (3, 2)
    # Without an email only the per-IP counter applies.
    no_email = await lim.aio.hit("signup", email=None, ip=ATTACKER)
    assert (no_email.limit, no_email.remaining) == (5, 4)
    for email in ("b@x.io", "c@x.io", "d@x.io"):
        await lim.aio.hit("login", email=email, ip=ATTACKER)
    # The per-IP counter (5 - 4 - 1 = 0 left) is now stricter than a@x.io's (3 - 1 - 1 = 1 left).
    again = await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)
    assert (again.allowed, again.limit, again.remaining) == (True, 5, 0)


async def test_window_resets_and_denied_attempts_extend_nothing(
    request: pytest.FixtureRequest,
) -> None:
    # Both backends in one test, so the suite sleeps only once.
    settings = Settings(rate_limit_per_email=2, rate_limit_window=1)
    fake, fake_async = _fake(settings)
    real, real_async = _real(request.getfixturevalue("real_redis"), settings)
    try:
        for lim in (fake, real):
            assert [lim.sync.hit("login", email="a@x.io", ip=ATTACKER).allowed for _ in range(2)]
            for _ in range(20):
                assert not lim.sync.hit("login", email="a@x.io", ip=ATTACKER).allowed
        time.sleep(1.1)
        for lim in (fake, real):
            after = await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)
            # A fresh window: the 20 refusals neither counted nor pushed the reset back.
            assert (after.allowed, after.remaining) == (True, 1)
    finally:
        for lim, aclient in ((fake, fake_async), (real, real_async)):
            lim.raw.close()
            await aclient.aclose()


async def test_attacker_cannot_lock_the_victim_out(make: Any) -> None:
    lim = make(rate_limit_per_email=10, rate_limit_per_ip=100)
    verdicts = [
        (await lim.aio.hit("login", email="victim@example.com", ip=ATTACKER)).allowed
        for _ in range(30)
    ]
    assert verdicts == [True] * 10 + [False] * 20
    # Spelling the email differently does not give the attacker a fresh counter.
    for variant in (
        " Victim@Example.COM ",
        "VICTIM@EXAMPLE.COM",
        _fullwidth("victim") + "@example.com",
    ):
        assert not (await lim.aio.hit("login", email=variant, ip=ATTACKER)).allowed
    # The victim, from their own address, still has all ten attempts.
    mine = await lim.aio.hit("login", email="Victim@Example.com", ip=VICTIM_IP)
    assert (mine.allowed, mine.limit, mine.remaining) == (True, 10, 9)
    # Other endpoints count separately.
    assert (await lim.aio.hit("password", email="victim@example.com", ip=ATTACKER)).allowed


async def test_spraying_emails_from_one_ip_hits_the_ip_limit(make: Any) -> None:
    lim = make(rate_limit_per_email=3, rate_limit_per_ip=20)
    allowed = [
        (await lim.aio.hit("login", email=f"user{n}@example.com", ip=ATTACKER)).allowed
        for n in range(25)
    ]
    assert allowed == [True] * 20 + [False] * 5
    denied = await lim.aio.hit("login", email="fresh@example.com", ip=ATTACKER)
    assert (denied.allowed, denied.limit) == (False, 20)
    assert denied.headers()["X-RateLimit-Limit"] == "20"
    # Another address, and the same address on another endpoint, are unaffected.
    assert (await lim.aio.hit("login", email="fresh@example.com", ip=VICTIM_IP)).allowed
    assert (await lim.aio.hit("signup", email="fresh@example.com", ip=ATTACKER)).allowed


async def test_denied_attempts_do_not_count(make: Any) -> None:
    lim = make(rate_limit_per_email=2, rate_limit_per_ip=5, rate_limit_window=600)
    for _ in range(2):
        assert lim.sync.hit("login", email="a@x.io", ip=ATTACKER).allowed
    resets = []
    for _ in range(10):
        denied = lim.sync.hit("login", email="a@x.io", ip=ATTACKER)
        assert not denied.allowed
        resets.append(denied.reset_after)
    assert resets == sorted(resets, reverse=True), "a refusal pushed the reset back"
    per_email, per_ip = lim.sync._core.keys("login", email="a@x.io", ip=ATTACKER)
    assert (int(lim.raw.get(per_email)), int(lim.raw.get(per_ip))) == (2, 2)
    # The IP counter kept room for three more attempts at other emails, not zero.
    others = [lim.sync.hit("login", email=f"{n}@x.io", ip=ATTACKER).allowed for n in range(4)]
    assert others == [True, True, True, False]
    # A refusal by the IP counter does not touch a fresh email counter either.
    assert lim.raw.get(lim.sync._core.keys("login", email="3@x.io", ip=ATTACKER)[0]) is None


async def test_reset_clears_only_the_email_counter(make: Any) -> None:
    lim = make(rate_limit_per_email=2, rate_limit_per_ip=50)
    for _ in range(3):
        await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)
    assert not (await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)).allowed
    assert await lim.aio.reset("login", email=" A@X.io", ip=ATTACKER) is True
    assert await lim.aio.reset("login", email="a@x.io", ip=ATTACKER) is False
    assert lim.sync.reset("login", email=None, ip=ATTACKER) is False
    after = await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)
    assert (after.allowed, after.remaining) == (True, 1)
    # The per-IP counter still holds the two earlier allowed attempts plus this one.
    _, per_ip = lim.sync._core.keys("login", email=None, ip=ATTACKER)
    assert int(lim.raw.get(per_ip)) == 3
    assert lim.sync.reset("login", email="a@x.io", ip=ATTACKER) is True


async def test_keys_hold_no_personal_data(make: Any) -> None:
    lim = make()
    hostile = "Mallory{x}:*\n\u202e@evil.example"
    for email, ip in [
        ("Alice.Smith@Example.com", ATTACKER),
        (hostile, "2001:db8:1:2::99"),
        ("bob@example.com", "not an address {ratelimit}"),
    ]:
        await lim.aio.hit("login", email=email, ip=ip)
    keys = lim.keys()
    assert len(keys) == 6
    for key in keys:
        assert KEY.fullmatch(key), key
        for needle in ("alice", "smith", "example", "203.0.113", "2001", "mallory", "bob"):
            assert needle not in key.lower()
    # Tagged by the address: the two counters of one address share a cluster slot (one script
    # checks them), and the three addresses spread over three slots.
    tags = {KEY.fullmatch(k)[1] for k in keys}  # type: ignore[index]
    assert len(tags) == 3
    assert len({key_slot(k.encode()) for k in keys}) == 3


def test_normalisation() -> None:
    assert normalize_email("  " + _fullwidth("A") + "lice@Example.COM\t") == "alice@example.com"
    assert normalize_email("STRASSE@x.de") == normalize_email("straße@x.de")
    assert normalize_ip(" 203.0.113.9 ") == "203.0.113.9"
    assert normalize_ip("::ffff:203.0.113.9") == "203.0.113.9"
    # One IPv6 subscriber (a /64) is one client.
    assert (
        normalize_ip("2001:db8:1:2::1")
        == normalize_ip("2001:DB8:1:2:ffff::7")
        == ("2001:db8:1:2::/64")
    )
    assert normalize_ip("2001:db8:1:3::1") != normalize_ip("2001:db8:1:2::1")
    assert normalize_ip("unix-socket") == "unix-socket"
    core = RateLimitCore(Settings(key_prefix="app1"))
    assert core.keys("login", email="a@x.io", ip="2001:db8::1")[1].startswith("app1:rl:{")
    for endpoint in ("", "Login", "log in", "{x}", "a" * 33, "1st"):
        with pytest.raises(ValueError, match="endpoint"):
            core.keys(endpoint, email=None, ip=ATTACKER)


def test_redis_down_fails_closed() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2)
    _, client = make_clients(settings)
    limiter = SyncRateLimiter(RateLimitCore(settings), SyncRunner(client, SCRIPTS))
    with pytest.raises(ServiceUnavailable):
        limiter.hit("login", email="a@x.io", ip=ATTACKER)


# A model of the intended semantics, checked against the script on random attempt sequences.
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["a@x.io", "b@x.io", "c@x.io", None]), st.sampled_from("pq")),
        max_size=40,
    ),
    st.integers(1, 4),
    st.integers(1, 8),
)
def test_matches_a_model(
    attempts: list[tuple[str | None, str]], per_email: int, per_ip: int
) -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    lim = SyncRateLimiter(
        RateLimitCore(Settings(rate_limit_per_email=per_email, rate_limit_per_ip=per_ip)),
        SyncRunner(client, SCRIPTS),
    )
    counts: dict[tuple[str | None, str], int] = {}
    for email, ip in attempts:
        # (None, ip) is the per-IP counter; (email, ip) the per-email one.
        counters: list[tuple[tuple[str | None, str], int]] = [((None, ip), per_ip)]
        if email is not None:
            counters.append(((email, ip), per_email))
        expected = all(counts.get(key, 0) < limit for key, limit in counters)
        if expected:
            for key, _ in counters:
                counts[key] = counts.get(key, 0) + 1
        got = lim.hit("login", email=email, ip=f"10.0.0.{ord(ip)}")
        assert got.allowed == expected
        if expected:
            assert got.remaining == min(limit - counts[key] for key, limit in counters)
    client.close()


# Concurrency, on a real redis-server: the check and the increment are one atomic step.
BURST, LIMIT = 200, 10


async def test_async_burst_admits_exactly_the_limit(real_redis: str) -> None:
    settings = Settings(rate_limit_per_email=LIMIT, rate_limit_per_ip=1000)
    clients = [
        redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                real_redis, max_connections=8
            )
        )
        for _ in range(4)
    ]
    try:
        limiters = [
            AsyncRateLimiter(RateLimitCore(settings), AsyncRunner(c, SCRIPTS)) for c in clients
        ]
        decisions = await asyncio.gather(
            *(
                limiters[n % len(limiters)].hit("login", email="victim@x.io", ip=ATTACKER)
                for n in range(BURST)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == LIMIT
    assert sorted(d.remaining for d in allowed) == list(range(LIMIT))
    check = redis.Redis.from_url(real_redis)
    per_email, per_ip = RateLimitCore(settings).keys("login", email="victim@x.io", ip=ATTACKER)
    assert per_email is not None
    assert check.mget([per_email, per_ip]) == [str(LIMIT).encode()] * 2
    check.close()


def test_thread_burst_admits_exactly_the_limit(real_redis: str) -> None:
    settings = Settings(rate_limit_per_email=1000, rate_limit_per_ip=LIMIT)
    client = redis.Redis.from_url(real_redis, max_connections=16)
    limiter = SyncRateLimiter(RateLimitCore(settings), SyncRunner(client, SCRIPTS))
    start = threading.Barrier(16)

    def burst(worker: int) -> list[bool]:
        start.wait(timeout=10)  # every thread fires at once
        return [
            limiter.hit("signup", email=f"u{worker}-{n}@x.io", ip=ATTACKER).allowed
            for n in range(BURST // 16 + 1)
        ]

    with ThreadPoolExecutor(16) as pool:
        verdicts = [v for row in pool.map(burst, range(16)) for v in row]
    client.close()
    assert len(verdicts) >= BURST
    assert verdicts.count(True) == LIMIT


# --- counting failures only (log-in) ---------------------------------------------------------


async def test_check_counts_nothing(make: Any) -> None:
    lim = make(rate_limit_per_email=3, rate_limit_per_ip=50, rate_limit_window=600)
    for _ in range(5):
        decision = await lim.aio.check("login", email="a@x.io", ip=ATTACKER)
        assert (decision.allowed, decision.limit, decision.remaining) == (True, 3, 3)
        assert 599 < decision.reset_after <= 600
    assert lim.keys() == []
    for _ in range(2):
        lim.sync.hit("login", email="a@x.io", ip=ATTACKER)
    assert lim.sync.check("login", email="a@x.io", ip=ATTACKER).remaining == 1
    lim.sync.hit("login", email="a@x.io", ip=ATTACKER)
    refused = await lim.aio.check("login", email=" A@x.io", ip=ATTACKER)
    assert (refused.allowed, refused.limit, refused.remaining) == (False, 3, 0)
    assert "Retry-After" in refused.headers()
    per_email, per_ip = lim.sync._core.keys("login", email="a@x.io", ip=ATTACKER)
    assert (int(lim.raw.get(per_email)), int(lim.raw.get(per_ip))) == (3, 3)
    # The per-IP counter refuses as well, for any email.
    ip_only = make(rate_limit_per_email=50, rate_limit_per_ip=1)
    ip_only.sync.hit("login", email="b@x.io", ip=VICTIM_IP)
    assert not ip_only.sync.check("login", email="c@x.io", ip=VICTIM_IP).allowed
    assert ip_only.sync.check("login", email="c@x.io", ip="192.0.2.1").allowed


async def test_failures_in_flight_together_never_push_a_counter_past_the_limit(
    make: Any,
) -> None:
    # Five attempts pass the check together at one failure short of the limit, then all fail:
    # the work ran four times past the limit (concurrency - 1), the counter stops at the limit.
    lim = make(rate_limit_per_email=3, rate_limit_per_ip=50)
    for _ in range(2):
        lim.sync.hit("login", email="a@x.io", ip=ATTACKER)
    checks = [await lim.aio.check("login", email="a@x.io", ip=ATTACKER) for _ in range(5)]
    assert all(c.allowed for c in checks)
    counted = [(await lim.aio.hit("login", email="a@x.io", ip=ATTACKER)).allowed for _ in range(5)]
    assert counted == [True, False, False, False, False]
    per_email, _ = lim.sync._core.keys("login", email="a@x.io", ip=ATTACKER)
    assert int(lim.raw.get(per_email)) == 3
    assert not lim.sync.check("login", email="a@x.io", ip=ATTACKER).allowed
