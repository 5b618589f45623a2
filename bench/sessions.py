"""Per-request cost of Bastion's credential checks, next to a bare Starlette app and its peers.

Every request is driven in-process: a fresh ASGI ``scope``, a ``receive`` that returns one
``http.request`` message and a ``send`` that only counts ``200`` responses, awaited in a tight
loop on asyncio. No HTTP server, no HTTP client. Run with ``./scripts/bench`` (``--help``).

Beside them, the cost of one password dictionary check (sign-up and password change), with the
forms a common password hides in, against the exact look-up it replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jwt
import redis.asyncio
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.passwords import dictionary_words, fold, is_common
from bastion.sessions import keys
from bench.jwt_check import first_check

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Loop = Callable[[int], Awaitable[None]]

TARGET_US = 25.0
"""Budget: an authenticated request may cost one Redis round trip plus this many µs over bare."""
USER = "alice"
SECRET_KEY = "bench-secret-key-not-for-production"
JWT_SECRET = "x" * 40  # HS256 key of Bastion's JWTs and of the plain-pyjwt peer alike
DICTIONARY_TARGET_US = 50.0
"""Budget: one password dictionary check, forms included, in at most this many µs."""


def hmget_fields(session_id: str) -> tuple[str, ...]:
    """What Bastion reads per request from the user's session hash: the session's times and
    digest, and the user's role fields (verified, labels, teams)."""
    return (session_id, f"{session_id}:h", "r:v", "r:lb", "r:tm")


BASE_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "https",
    "path": "/me",
    "raw_path": b"/me",
    "query_string": b"",
    "root_path": "",
    "client": ("127.0.0.1", 1234),
    "server": ("testserver", 443),
}
REQUEST_MESSAGE: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return REQUEST_MESSAGE


def make_scope(
    path: str = "/me", cookie: bytes | None = None, headers: dict[bytes, bytes] | None = None
) -> dict[str, Any]:
    """The request template; every request gets a shallow copy (middleware writes to scope)."""
    raw = [(b"host", b"testserver")]
    if cookie is not None:
        raw.append((b"cookie", cookie))
    raw += (headers or {}).items()
    return {**BASE_SCOPE, "path": path, "raw_path": path.encode(), "headers": raw}


# --- the apps ------------------------------------------------------------------------------------


async def me(request: Request) -> PlainTextResponse:
    """Who the request is, as whichever layer in front of the app saw it."""
    if "bastion" in request.scope:  # Bastion: the user id, or key:<id> for an API key
        who = request.user.identity or "guest"
    elif "user" in request.scope:  # Starlette's AuthenticationMiddleware
        who = request.user.display_name if request.user.is_authenticated else "guest"
    elif "session" in request.scope:  # Starlette's SessionMiddleware
        who = request.session.get("user", "guest")
    else:
        who = "anonymous"
    return PlainTextResponse(who)


async def login(request: Request) -> PlainTextResponse:
    """Used once, outside the timing, to get a signed SessionMiddleware cookie."""
    request.session["user"] = USER
    return PlainTextResponse("ok")


def make_app() -> Starlette:
    return Starlette(routes=[Route("/me", me), Route("/login", login)])


def hmget_middleware(app: ASGIApp, client: Any, key: str, fields: tuple[str, ...]) -> ASGIApp:
    """Reference: the least a Redis-backed auth middleware does, one HMGET and then the app."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        await client.hmget(key, *fields)
        await app(scope, receive, send)

    return middleware


class PyJWTBackend(AuthenticationBackend):
    """The peer: Starlette's AuthenticationMiddleware with a plain pyjwt bearer check. Stateless,
    no Redis, so it cannot revoke a token before its ``exp``."""

    def __init__(self, secret: str, *, audience: str, issuer: str) -> None:
        self.secret, self.audience, self.issuer = secret, audience, issuer

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError("invalid token") from exc
        return AuthCredentials(["authenticated"]), SimpleUser(claims["sub"])


def pyjwt_token(secret: str, *, audience: str, issuer: str, lifetime: int) -> str:
    """A token for the peer, with the claims Bastion's JWTs carry (but ``sid``)."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": USER,
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "jti": os.urandom(16).hex(),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def jwt_first_check_loops(settings: Settings) -> tuple[Loop, Loop]:
    """Bastion's uncached JWT check (the JWT backend up to its session read) and pyjwt's
    ``jwt.decode`` on the same tokens: each loop checks ``n`` tokens new to the checker."""
    service, check = first_check(settings)
    tokens: list[str] = []

    def enough(n: int) -> list[str]:
        while len(tokens) < n:
            tokens.append(service.mint(USER, "A" * 22))
        return tokens[:n]

    audience, issuer = settings.jwt_audience, settings.jwt_issuer

    async def bastion_loop(n: int) -> None:
        batch = enough(n)
        service._verified.clear()  # every token a first check
        for token in batch:
            check(token)

    async def pyjwt_loop(n: int) -> None:
        for token in enough(n):
            jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience=audience, issuer=issuer)

    return bastion_loop, pyjwt_loop


class AnsweringRedis:
    """Stands in for ``redis.asyncio.Redis`` and answers HMGET from memory, with no I/O: a
    Bastion on it costs only Bastion's own work (no Redis client library, socket or server)."""

    def __init__(self, reply: list[Any]) -> None:
        self.reply = reply

    async def hmget(self, key: str, *fields: str) -> list[Any]:
        return self.reply

    def register_script(self, source: str) -> Callable[..., Awaitable[int]]:
        async def script(keys: Any = (), args: Any = (), client: Any = None) -> int:
            return 1  # the once-a-minute last-seen "touch": the session is alive

        return script


# --- the password dictionary check ---------------------------------------------------------------

# Passwords the rule accepts: every form is looked up, the slowest path for a password.
DICTIONARY_ACCEPTED = [
    "correct horse battery staple",
    "Ed-is-great-77",
    "Tr0ub4dor&3-horse",
    "my-password-is-long",
    "zebra 1234 zebra!",
    "\u00c9t\u00e9-\u00e0-la-plage-2024",
    "\u200bcorrect\u3000horse\u200d",
    "Blue-Kettle-42!",
]
# The forms' own worst cases, up to the 256 characters allowed: runs of digits and symbols with
# a cut point at every character, invisible or full-width characters in them (each is looked at).
DICTIONARY_WORST = [
    "!1@2#3$4%5^6&7*8(9)0" * 6 + "n0t-c0mm0n" + "0)9(8*7&6^5%4$3#2@1!" * 6,
    "1!\u200b" * 40 + "n0t-c0mm0n" + "\u200b!1" * 40,
    "\uff11\uff01" * 60 + "n0t-c0mm0n" + "\uff01\uff11" * 60,
    "1!\u3000" * 40 + "n0t-c0mm0n" + "\u3000!1" * 40,
]
# Forms of listed passwords: refused, most after a few look-ups.
DICTIONARY_REFUSED = [
    "Password1!",
    "P@ssw0rd!",
    "Summer2024!",
    "letmein!",
    "2024!!$unsh1ne",
    "1l0vey0u!!",
    "PASSWORD",
    "pass\u200bword",
]


def dictionary_loop(passwords: Sequence[str], check: Callable[[str], bool]) -> Loop:
    """A timed loop of dictionary checks over ``passwords`` in turn."""
    size = len(passwords)

    async def run(n: int) -> None:
        for i in range(n):
            check(passwords[i % size])

    return run


def dictionary_cases() -> list[Case]:
    """The dictionary check with its forms, and the exact look-up it replaced, checked first."""
    for password in DICTIONARY_ACCEPTED + DICTIONARY_WORST:
        if is_common(password):
            raise SystemExit(f"dictionary check: {password!r} should be accepted")
    for password in DICTIONARY_REFUSED:
        if not is_common(password):
            raise SystemExit(f"dictionary check: {password!r} should be refused")
    words = dictionary_words()

    def exact(password: str) -> bool:
        return fold(password).strip() in words

    everything = DICTIONARY_ACCEPTED + DICTIONARY_REFUSED
    return [
        Case(
            "dictionary_accepted",
            "dictionary check, forms: accepted",
            dictionary_loop(DICTIONARY_ACCEPTED, is_common),
        ),
        Case(
            "dictionary_refused",
            "dictionary check, forms: refused",
            dictionary_loop(DICTIONARY_REFUSED, is_common),
        ),
        Case(
            "dictionary_worst",
            "dictionary check, forms: 256 adversarial",
            dictionary_loop(DICTIONARY_WORST, is_common),
        ),
        Case(
            "dictionary_exact",
            "dictionary check, exact entry only (before)",
            dictionary_loop(everything, exact),
        ),
    ]


# --- requests, checked ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


async def call_once(app: ASGIApp, scope: dict[str, Any]) -> Response:
    """One request with a send that keeps the response (outside the timed loops)."""
    response = Response()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")

    await app(dict(scope), receive, send)
    return response


@dataclass
class Case:
    """A timed loop: an ASGI app and its request, or a bare Redis command (``app`` None)."""

    key: str
    name: str
    run: Loop
    app: ASGIApp | None = None
    scope: dict[str, Any] = field(default_factory=dict)
    expect_body: bytes = b""
    expect_redis: int = 0
    """Redis commands each request must cause (checked with the server's own counter)."""
    reference: bool = False
    """Shown under the main rows: a control for reading them, not a contender."""
    counts: list[int] = field(default_factory=lambda: [0, 0])
    """[responses with status 200, responses with another status] since the last check."""
    rounds_us: list[float] = field(default_factory=list)
    redis_per_request: float | None = None

    @classmethod
    def http(
        cls,
        key: str,
        name: str,
        app: ASGIApp,
        scope: dict[str, Any] | Sequence[dict[str, Any]],
        **kw: Any,
    ) -> Case:
        """A timed loop of requests; several scopes are sent in turn (one document each)."""
        ring = [scope] if isinstance(scope, dict) else list(scope)
        size = len(ring)
        counts = [0, 0]

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    counts[0] += 1
                else:
                    counts[1] += 1

        async def run(n: int) -> None:
            for i in range(n):
                await app(dict(ring[i % size]), receive, send)

        return cls(key, name, run, app, ring[0], counts=counts, **kw)

    def timing_row(self, bare: float) -> dict[str, Any]:
        """The figures every benchmark reports for this case, beside the bare app's median."""
        http = self.app is not None
        return {
            "key": self.key,
            "name": self.name,
            "reference": self.reference,
            "us_per_request": round(self.median, 2),
            "ratio_to_bare": round(self.median / bare, 2) if http else None,
            "overhead_us": round(self.median - bare, 2) if http else None,
            "min_us": round(min(self.rounds_us), 2),
            "max_us": round(max(self.rounds_us), 2),
            "rounds_us": [round(x, 2) for x in self.rounds_us],
        }

    def check_counts(self, n: int) -> None:
        """Every one of the last ``n`` requests answered 200."""
        if self.app is None:
            return
        good, bad = self.counts
        if good != n or bad:
            raise SystemExit(f"{self.name}: {good} of {n} requests answered 200 ({bad} others)")
        self.counts[:] = [0, 0]

    async def check_body(self) -> None:
        """Status 200 and the expected body: e.g. the app saw the authenticated user."""
        if self.app is None:
            return
        response = await call_once(self.app, self.scope)
        if response.status != 200 or response.body != self.expect_body:
            raise SystemExit(
                f"{self.name}: expected 200 {self.expect_body!r}, "
                f"got {response.status} {response.body!r}"
            )

    @property
    def median(self) -> float:
        return statistics.median(self.rounds_us)


# --- measurement ---------------------------------------------------------------------------------


async def timed(loop: Loop, n: int) -> float:
    """µs per iteration of one round of ``n``."""
    gc.collect()
    start = time.perf_counter_ns()
    await loop(n)
    return (time.perf_counter_ns() - start) / n / 1000


async def commands_processed(admin: Any) -> int:
    return int((await admin.info("stats"))["total_commands_processed"])


async def redis_per_request(admin: Any, loop: Loop, n: int) -> float:
    """Redis commands a request causes: the server's command counter around ``n`` requests."""
    before = await commands_processed(admin)
    await loop(n)
    after = await commands_processed(admin)
    return (after - before - 1) / n  # the first INFO counts itself


async def pin_cpus(admin: Any, mode: str) -> str:
    """Pin this process and its redis-server: "same" one CPU, "split" two CPUs, "off" neither."""
    if mode == "off":
        return "not pinned"
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "split" and len(cpus) < 2:
        return "not pinned (split needs two CPUs)"
    redis_pid = int((await admin.info("server"))["process_id"])
    mine, theirs = cpus[0], cpus[1] if mode == "split" else cpus[0]
    os.sched_setaffinity(0, {mine})
    os.sched_setaffinity(redis_pid, {theirs})
    if mine == theirs:
        return f"benchmark and redis-server pinned to CPU {mine}"
    return f"benchmark pinned to CPU {mine}, redis-server to CPU {theirs}"


async def bench(url: str, *, warmup: int, rounds: int, requests: int, pin: str) -> dict[str, Any]:
    app = make_app()
    # One Bastion, with JWTs on, behind every Bastion row, so the rows compare like for like.
    bastion = Bastion(Settings(redis_url=url, jwt_secret=JWT_SECRET))
    # The same, with the request path's reads sent past redis-py's command methods (and so past
    # their hooks): what the default pays for keeping them, on the same session.
    lean_bastion = Bastion(Settings(redis_url=url, jwt_secret=JWT_SECRET, redis_lean_reads=True))
    settings = bastion.settings
    client = bastion.redis  # Bastion's own redis.asyncio.Redis (pool, timeouts, retry)
    admin = redis.asyncio.Redis.from_url(url)
    try:
        pinning = await pin_cpus(admin, pin)

        # Starlette's SessionMiddleware: log in once and keep the signed cookie it sets.
        starlette_sessions = SessionMiddleware(app, secret_key=SECRET_KEY)
        response = await call_once(starlette_sessions, make_scope("/login"))
        set_cookie = [v for k, v in response.headers if k == b"set-cookie"]
        if response.status != 200 or len(set_cookie) != 1:
            raise SystemExit(f"SessionMiddleware log-in failed: {response.status} {set_cookie}")
        starlette_cookie = set_cookie[0].split(b";", 1)[0]

        # Bastion: a real session in the real Redis.
        new = await bastion.sessions.create(USER)
        bastion_cookie = f"{settings.cookie_name}={new.token}".encode()
        session_key = keys.sessions(settings.key_prefix, USER)
        session_fields = hmget_fields(new.session.id)
        # Bastion JWT: minted from that session; each request checks the session is alive.
        bastion_jwt = bastion.jwt.mint(USER, new.session.id)
        # Bastion API key. Its first use records last-used (then at most once a minute): do it
        # here, so the counted and timed requests make only the HMGET.
        new_key = await bastion.api_keys.create("bench", ["documents.read"])
        await bastion.api_keys.authenticate(new_key.key)
        # The peer: Starlette's AuthenticationMiddleware and a plain pyjwt check, no Redis.
        starlette_auth = AuthenticationMiddleware(
            app,
            backend=PyJWTBackend(
                JWT_SECRET, audience=settings.jwt_audience, issuer=settings.jwt_issuer
            ),
        )
        peer_jwt = pyjwt_token(
            JWT_SECRET,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            lifetime=settings.jwt_lifetime,
        )
        if await client.ping() is not True:
            raise SystemExit("Redis PING failed")
        reply = await client.hmget(session_key, *session_fields)
        if None in reply[:2]:
            raise SystemExit(f"HMGET {session_key}: the session hash is missing fields")
        stub = AnsweringRedis(reply)
        bastion_app = bastion.asgi(app)
        lean_app = lean_bastion.asgi(app)
        stubbed_app = Bastion(settings, redis=stub, sync_redis=stub).asgi(app)

        async def ping_loop(n: int) -> None:
            for _ in range(n):
                await client.ping()

        async def hmget_loop(n: int) -> None:
            for _ in range(n):
                await client.hmget(session_key, *session_fields)

        jwt_first_loop, pyjwt_decode_loop = jwt_first_check_loops(settings)
        alice = USER.encode()
        with_cookie = make_scope(cookie=bastion_cookie)
        cases = [
            Case.http("bare", "bare Starlette", app, make_scope(), expect_body=b"anonymous"),
            Case.http(
                "starlette_session",
                "Starlette SessionMiddleware, cookie",
                starlette_sessions,
                make_scope(cookie=starlette_cookie),
                expect_body=alice,
            ),
            Case.http(
                "starlette_auth_jwt",
                "Starlette AuthenticationMiddleware, pyjwt",
                starlette_auth,
                make_scope(headers={b"authorization": f"Bearer {peer_jwt}".encode()}),
                expect_body=alice,
            ),
            Case.http(
                "bastion_session",
                "Bastion, session cookie (real Redis)",
                bastion_app,
                with_cookie,
                expect_body=alice,
                expect_redis=1,
            ),
            Case.http(
                "bastion_session_lean",
                "Bastion, session cookie, lean reads",
                lean_app,
                with_cookie,
                expect_body=alice,
                expect_redis=1,
            ),
            Case.http(
                "bastion_jwt",
                "Bastion, JWT (real Redis)",
                bastion_app,
                make_scope(headers={b"authorization": f"Bearer {bastion_jwt}".encode()}),
                expect_body=alice,
                expect_redis=1,
            ),
            Case.http(
                "bastion_api_key",
                "Bastion, API key (real Redis)",
                bastion_app,
                make_scope(headers={b"x-api-key": new_key.key.encode()}),
                expect_body=f"key:{new_key.info.id}".encode(),
                expect_redis=1,
            ),
            Case.http(
                "bastion_guest",
                "Bastion, guest (no credentials)",
                bastion_app,
                make_scope(),
                expect_body=b"guest",
            ),
            *dictionary_cases(),
            Case("jwt_first_check", "Bastion JWT first check (no request)", jwt_first_loop),
            Case("pyjwt_decode", "pyjwt jwt.decode, same tokens", pyjwt_decode_loop),
            Case("redis_ping", "Redis PING round trip", ping_loop),
            Case("redis_hmget", "Redis HMGET round trip", hmget_loop),
            Case.http(
                "bastion_stubbed",
                "Bastion, session cookie, Redis stubbed",
                stubbed_app,
                with_cookie,
                expect_body=alice,
                reference=True,
            ),
            Case.http(
                "hmget_middleware",
                "minimal middleware: 1 HMGET, then app",
                hmget_middleware(app, client, session_key, session_fields),
                make_scope(),
                expect_body=b"anonymous",
                expect_redis=1,
                reference=True,
            ),
        ]

        # Correctness first, outside the timing: status, body (the app saw alice), Redis traffic.
        probe = max(100, warmup // 4)
        for case in cases:
            if case.app is None:
                continue
            await case.check_body()
            case.redis_per_request = await redis_per_request(admin, case.run, probe)
            case.check_counts(probe)
            if round(case.redis_per_request, 2) != case.expect_redis:
                raise SystemExit(
                    f"{case.name}: {case.redis_per_request:.2f} Redis commands per request,"
                    f" expected {case.expect_redis}"
                )

        for case in cases:  # warm-up
            await case.run(warmup)
            case.check_counts(warmup)
        for _ in range(rounds):  # rounds interleave the cases, so drift hits them all alike
            for case in cases:
                case.rounds_us.append(await timed(case.run, requests))
                case.check_counts(requests)
        for case in cases:  # still 200 and still alice at the end
            await case.check_body()
    finally:
        await admin.aclose()
        await bastion.aclose()  # its two clients (client is the async one)
        await lean_bastion.aclose()
    return summarize(cases, warmup=warmup, rounds=rounds, requests=requests, pinning=pinning)


CREDENTIAL_ROWS = {
    "bastion_session": "session cookie",
    "bastion_jwt": "JWT",
    "bastion_api_key": "API key",
}
"""The Bastion rows that each make one HMGET, and their label in the summary lines."""


def within_round(case: Case, *minus: Case) -> float:
    """Median over rounds of ``case`` minus the ``minus`` rows in the same round.

    Every round runs all cases back to back, so a difference taken within a round cancels the
    slow drift of a shared VM, which a difference of two medians keeps.
    """
    rounds = zip(case.rounds_us, *(m.rounds_us for m in minus), strict=True)
    return statistics.median(first - sum(rest) for first, *rest in rounds)


def summarize(
    cases: list[Case], *, warmup: int, rounds: int, requests: int, pinning: str
) -> dict[str, Any]:
    by_key = {c.key: c for c in cases}
    bare_case, rtt_case = by_key["bare"], by_key["redis_hmget"]
    bare = bare_case.median
    rows = []
    for c in cases:
        redis = round(c.redis_per_request, 2) if c.redis_per_request is not None else None
        rows.append({**c.timing_row(bare), "redis_commands_per_request": redis})
    overhead = within_round(by_key["bastion_session"], bare_case)
    round_trip = rtt_case.median
    beyond = within_round(by_key["bastion_session"], bare_case, rtt_case)
    # Every Bastion credential costs one HMGET; what each costs beyond it, on the same budget.
    credentials = {}
    for key in CREDENTIAL_ROWS:
        cost = within_round(by_key[key], bare_case, rtt_case)
        credentials[key] = {
            "overhead_us": round(within_round(by_key[key], bare_case), 2),
            "overhead_minus_round_trip_us": round(cost, 2),
            "within_budget": cost <= TARGET_US,
        }
    accepted, refused = by_key["dictionary_accepted"], by_key["dictionary_refused"]
    adversarial = by_key["dictionary_worst"]
    worst = max(accepted.median, refused.median, adversarial.median)
    dictionary = {
        "rule": f"one password dictionary check, forms included, <= {DICTIONARY_TARGET_US:g} us",
        "accepted_us_per_check": round(accepted.median, 2),
        "refused_us_per_check": round(refused.median, 2),
        "adversarial_us_per_check": round(adversarial.median, 2),
        "exact_only_us_per_check": round(by_key["dictionary_exact"].median, 2),
        "accepted_ratio_to_exact": round(accepted.median / by_key["dictionary_exact"].median, 2),
        "target_us": DICTIONARY_TARGET_US,
        "within_target": worst <= DICTIONARY_TARGET_US,
    }
    first, decode = by_key["jwt_first_check"], by_key["pyjwt_decode"]
    first_ratio = statistics.median(
        a / b for a, b in zip(first.rounds_us, decode.rounds_us, strict=True)
    )
    jwt_first = {
        "rule": "Bastion's uncached JWT check <= pyjwt's jwt.decode on the same token",
        "bastion_us": round(first.median, 2),
        "pyjwt_decode_us": round(decode.median, 2),
        "ratio": round(first_ratio, 3),
        "within_target": first_ratio <= 1.0,
    }
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "event_loop": "asyncio",
        "cpu_pinning": pinning,
        "warmup": warmup,
        "rounds": rounds,
        "requests_per_round": requests,
        "rows": rows,
        "target": {
            "rule": f"Bastion overhead (session cookie) <= one Redis round trip + {TARGET_US:g} us",
            "bastion_overhead_us": round(overhead, 2),
            "redis_round_trip_us": round(round_trip, 2),
            "overhead_minus_round_trip_us": round(beyond, 2),
            "budget_us": TARGET_US,
            "within_target": beyond <= TARGET_US,
            # Readings of the same gap, from the reference rows:
            "bastion_own_work_us": round(within_round(by_key["bastion_stubbed"], bare_case), 2),
            "bastion_over_hmget_middleware_us": round(
                within_round(by_key["bastion_session"], by_key["hmget_middleware"]), 2
            ),
        },
        "credentials": credentials,
        # What redis-py's command path (kept by default, with its hooks) costs over the lean
        # read, per request with a session cookie: the default row minus the lean row.
        "lean_reads_gain_us": round(
            within_round(by_key["bastion_session"], by_key["bastion_session_lean"]), 2
        ),
        "password_dictionary": dictionary,
        "jwt_first_check": jwt_first,
        # Bastion's JWT check over the stateless peer: the price of revocation (the HMGET).
        "bastion_jwt_over_starlette_auth_jwt_us": round(
            within_round(by_key["bastion_jwt"], by_key["starlette_auth_jwt"]), 2
        ),
    }


def render(summary: dict[str, Any]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = (
        f"{'case':<44}{'us/req':>9}{'x bare':>8}{'+us vs bare':>13}"
        f"{'redis cmds/req':>16}{'rounds min..max':>18}"
    )
    lines = [
        f"Bastion auth benchmark: in-process ASGI on {summary['event_loop']}, "
        f"{summary['implementation']} {summary['python']}; median of {summary['rounds']} rounds "
        f"x {summary['requests_per_round']} requests, after {summary['warmup']} warm-up",
        f"CPU: {summary['cpu_pinning']}",
        "",
        header,
        "-" * len(header),
    ]
    shown_reference = False
    for row in summary["rows"]:
        if row["reference"] and not shown_reference:
            lines.append("reference rows:")
            shown_reference = True
        spread = f"{row['min_us']:.1f}..{row['max_us']:.1f}"
        lines.append(
            f"{row['name']:<44}{row['us_per_request']:>9.1f}{num(row['ratio_to_bare'], '.2f'):>8}"
            f"{num(row['overhead_us'], '+.1f'):>13}"
            f"{num(row['redis_commands_per_request'], '.2f'):>16}{spread:>18}"
        )
    t = summary["target"]
    verdict = "WITHIN target" if t["within_target"] else "NOT within target"
    own, over_io = t["bastion_own_work_us"], t["bastion_over_hmget_middleware_us"]
    lines.append("")
    width = max(len(label) for label in CREDENTIAL_ROWS.values()) + 2
    for key, label in CREDENTIAL_ROWS.items():
        c = summary["credentials"][key]
        lines.append(
            f"Bastion overhead {f'({label})':<{width}} {c['overhead_us']:>6.1f} us;"
            f" minus the HMGET round trip of the same round:"
            f" {c['overhead_minus_round_trip_us']:.1f} us"
        )
    lines += [
        f"  (median over rounds of differences taken within each round; the HMGET round trip's"
        f" own median: {t['redis_round_trip_us']:.1f} us)",
        f"target (session cookie): one Redis round trip + {t['budget_us']:g} us -> {verdict}",
        f"  Bastion's own work (Redis stubbed in memory): {own:.1f} us;"
        f" Bastion over the minimal 1-HMGET middleware: {over_io:+.1f} us",
        f"  Bastion JWT over Starlette AuthenticationMiddleware + pyjwt (no revocation):"
        f" {summary['bastion_jwt_over_starlette_auth_jwt_us']:+.1f} us",
        f"redis_lean_reads = true saves {summary['lean_reads_gain_us']:.1f} us a request (session"
        f" cookie) over the default, which keeps redis-py's command hooks",
    ]
    j = summary["jwt_first_check"]
    verdict = "WITHIN target" if j["within_target"] else "NOT within target"
    lines += [
        f"JWT first check (uncached, up to the session read): {j['bastion_us']:.1f} us against"
        f" pyjwt's jwt.decode {j['pyjwt_decode_us']:.1f} us = {j['ratio']:.2f} x"
        f" (median of per-round ratios); target <= 1 x -> {verdict}",
    ]
    d = summary["password_dictionary"]
    verdict = "WITHIN target" if d["within_target"] else "NOT within target"
    lines += [
        f"password dictionary check with its forms, us per check (the us/req column):"
        f" {d['accepted_us_per_check']:.1f} accepted (every form looked up),",
        f"  {d['refused_us_per_check']:.1f} refused, {d['adversarial_us_per_check']:.1f} for"
        f" 256 adversarial characters; accepted = {d['accepted_ratio_to_exact']:.1f}x the exact"
        f" look-up it replaced ({d['exact_only_us_per_check']:.1f} us)",
        f"target: at most {d['target_us']:g} us a check -> {verdict}",
    ]
    return "\n".join(lines)


def on_redis_server(run: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """``run(url)`` on a redis-server of its own (a free 127.0.0.1 port), stopped afterwards."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    server = RedisServer()
    try:
        server.start()
        return asyncio.run(run(server.url))
    finally:
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./scripts/bench",
        description="us per request of Bastion's credential checks vs bare Starlette, in-process.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke test")
    parser.add_argument("--rounds", type=int, help="timed rounds per case (default 31, quick 5)")
    parser.add_argument("--requests", type=int, help="requests per round (default 1000, quick 200)")
    parser.add_argument(
        "--pin",
        choices=("same", "split", "off"),
        default="split",
        help="CPU pinning of the benchmark and its redis-server: each on its own CPU (default,"
        " like production, where Redis has its own core or host), both on one CPU, or none",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="instead: Bastion's own work (Redis stubbed) of this tree beside git revision REV's,"
        " in interleaved rounds of one process per side (bench/against.py)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="with --against: count instructions per request (valgrind's callgrind, about 5 min)"
        " instead of timing",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 31)
    requests = args.requests or (200 if args.quick else 1000)
    warmup = 200 if args.quick else 2000
    if rounds < 1 or requests < 1:
        parser.error("--rounds and --requests must be positive")
    if args.against:
        from bench import against

        if args.instructions:
            counted = against.count(args.against, requests=args.requests or 1000)
            print(json.dumps(counted, indent=2) if args.json else against.render_count(counted))
            return 0
        result = against.compare(args.against, rounds=rounds, requests=requests, warmup=warmup)
        print(json.dumps(result, indent=2) if args.json else against.render(result))
        return 0

    summary = on_redis_server(
        lambda url: bench(url, warmup=warmup, rounds=rounds, requests=requests, pin=args.pin)
    )
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
