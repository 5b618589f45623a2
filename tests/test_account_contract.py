"""The HTTP account contract, identical on Starlette, FastAPI and Flask, on a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette

from bastion import Bastion, Settings
from bastion.adapters import fastapi as fastapi_adapter
from bastion.adapters import flask as flask_adapter
from bastion.adapters import starlette as starlette_adapter
from bastion.passwords import PasswordHasher
from tests.conftest import SESSION_CACHE
from tests.redis_server import RedisServer

FRAMEWORKS = ["starlette", "fastapi", "flask"]
PASSWORD = "correct horse battery staple"
COOKIE = "__Host-bastion_session"


RAW = "raw-base64:"


def _raw_headers(app: Any) -> Any:
    """Header values as a WSGI server gives them: any byte, as a latin-1 string (PEP 3333).

    httpx's WSGI transport only passes ASCII, so tests send other bytes as ``raw-base64:...``.
    """

    def server(environ: dict[str, Any], start_response: Any) -> Any:
        for key, value in list(environ.items()):
            if key.startswith("HTTP_") and isinstance(value, str) and value.startswith(RAW):
                environ[key] = base64.b64decode(value[len(RAW) :]).decode("latin-1")
        return app(environ, start_response)

    return server


class Client:
    """One synchronous HTTP client over any of the three apps (cookies kept like a browser)."""

    def __init__(
        self, framework: str, bastion: Bastion, loop: asyncio.Runner, peer: str = "127.0.0.1"
    ) -> None:
        self.framework = framework
        self.bastion = bastion
        self.loop = loop
        self.peer = peer  # the address the server sees the request come from
        self.runner: asyncio.Runner | None = None
        if framework == "flask":
            app = Flask("contract")
            flask_adapter.init_app(app, bastion)
            self.sync = httpx.Client(
                transport=httpx.WSGITransport(_raw_headers(app), remote_addr=peer),
                base_url="https://t",
            )
            return
        if framework == "fastapi":
            fast = FastAPI()
            fast.include_router(fastapi_adapter.account_router(bastion))
            asgi: Any = bastion.asgi(fast)
        else:
            asgi = bastion.asgi(
                Starlette(
                    routes=starlette_adapter.account_routes(bastion),
                    exception_handlers=starlette_adapter.exception_handlers,
                )
            )
        # One event loop for every client of a test: they share Bastion's asyncio Redis pool.
        self.runner = loop
        self.async_client = httpx.AsyncClient(
            transport=httpx.ASGITransport(asgi, client=(peer, 123)), base_url="https://t"
        )

    @property
    def cookies(self) -> httpx.Cookies:
        return self.sync.cookies if self.runner is None else self.async_client.cookies

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self.runner is None:
            headers = kw.get("headers")
            if isinstance(headers, list):  # raw bytes: through the WSGI server stand-in
                kw["headers"] = [
                    (k, v if v.isascii() else (RAW + base64.b64encode(v).decode()).encode())
                    for k, v in headers
                ]
            return self.sync.request(method, path, **kw)
        return self.runner.run(self.async_client.request(method, path, **kw))

    def device(self, peer: str | None = None) -> Client:
        """Another client of the same app and loop: a second browser of the same user."""
        return Client(self.framework, self.bastion, self.loop, peer or self.peer)

    def close(self) -> None:
        if self.runner is None:
            self.sync.close()
        else:
            self.runner.run(self.async_client.aclose())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each framework on a redis-server; the contract on the Redis Cluster too (on Starlette)."""
    if "make" in metafunc.fixturenames:
        pairs = [(f, "redis-server") for f in FRAMEWORKS] + [("starlette", "redis-cluster")]
        metafunc.parametrize(("framework", "store"), pairs)


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store() -> str:
    """Where ``make`` keeps its data (the contract's own tests also name the Redis Cluster)."""
    return "redis-server"


def _bastion(url: str, **settings: Any) -> Bastion:
    defaults = {"redis_url": url, "jwt_secret": "j" * 40, "session_cache": SESSION_CACHE}
    return Bastion(Settings(**{**defaults, **settings}))


@contextmanager
def clients(framework: str) -> Iterator[Callable[[Bastion], Client]]:
    """Clients of one framework over any Bastion, on one event loop; all closed at the end."""
    made: list[Client] = []
    loop = asyncio.Runner()

    def client_for(bastion: Bastion) -> Client:
        client = Client(framework, bastion, loop)
        made.append(client)
        return client

    try:
        yield client_for
    finally:
        for client in made:
            client.close()
        loop.close()


@pytest.fixture
def make(framework: str, store: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    cluster = store == "redis-cluster"
    url = request.getfixturevalue("cluster_redis" if cluster else "real_redis")
    with clients(framework) as client_for:

        def build(**settings: Any) -> tuple[Client, Bastion]:
            if cluster:
                settings.setdefault("redis_cluster", True)
            bastion = _bastion(url, **settings)
            return client_for(bastion), bastion

        yield build


def sign_up(client: Client, email: str = "ada@example.com", **extra: Any) -> httpx.Response:
    return client.request(
        "POST", "/account", json={"email": email, "password": PASSWORD, "name": "Ada L", **extra}
    )


def log_in(
    client: Client, email: str = "ada@example.com", password: str = PASSWORD
) -> httpx.Response:
    return client.request("POST", "/account/sessions", json={"email": email, "password": password})


def test_sign_up(make: Any) -> None:
    client, _ = make()
    created = sign_up(client, phone="+15551234567")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "ada@example.com" and body["name"] == "Ada L"
    assert set(body) == {"id", "email", "name", "phone", "emailVerification", "labels"}
    again = sign_up(client, email="  ADA@Example.com ")
    assert again.status_code == 409 and again.json()["type"] == "user_already_exists"
    json_type = {"Content-Type": "application/json"}
    assert client.request("POST", "/account", content=b"not json").status_code == 415
    assert (
        client.request("POST", "/account", content=b"not json", headers=json_type).status_code
        == 400
    )
    missing = client.request("POST", "/account", json={"email": "x@example.com"})
    assert missing.status_code == 400 and "password" in missing.json()["message"]
    bad_email = client.request("POST", "/account", json={"email": "nope", "password": PASSWORD})
    assert bad_email.status_code == 400


@pytest.mark.parametrize(
    ("password", "error"),
    [
        ("Pw-7x!q", "password_too_short"),
        ("x" * 257, "password_too_long"),
        ("PASSWORD1", "password_in_dictionary"),
        ("grace-hopper-1906", "password_personal_data"),
    ],
)
def test_password_rules_on_sign_up(make: Any, password: str, error: str) -> None:
    client, _ = make()
    response = client.request(
        "POST",
        "/account",
        json={"email": "grace@example.com", "password": password, "name": "Grace Hopper"},
    )
    assert response.status_code == 400
    assert response.json()["type"] == error


def test_log_in_and_the_current_user(make: Any) -> None:
    client, _ = make()
    assert client.request("GET", "/account").status_code == 401
    sign_up(client)
    first = log_in(client)
    assert first.status_code == 201
    assert first.headers["set-cookie"].startswith(f"{COOKIE}=")
    assert "secret" not in first.text
    me = client.request("GET", "/account")
    assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
    second = log_in(client)
    assert second.json()["id"] != first.json()["id"]  # a new session id on every log-in
    listed = client.request("GET", "/account/sessions").json()
    assert listed["total"] == 1  # the log-in replaced the session it came with
    assert listed["sessions"][0]["current"] is True


def test_wrong_password_and_unknown_email_look_the_same(make: Any) -> None:
    client, _ = make()
    sign_up(client)
    wrong = log_in(client, password="not the password at all")
    unknown = log_in(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["type"] == "user_invalid_credentials"


def test_unknown_email_costs_an_argon2_verify(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, bastion = make()
    calls: list[str] = []
    original = bastion._account.hasher.dummy_verify
    monkeypatch.setattr(
        bastion._account.hasher, "dummy_verify", lambda pw: (calls.append(pw), original(pw))[1]
    )
    log_in(client, email="nobody@example.com", password="guess-guess-guess")
    assert calls == ["guess-guess-guess"]


def test_sessions_jwts_and_log_out(make: Any) -> None:
    client, bastion = make()
    sign_up(client)
    other = client.device()  # a second device of the same user
    try:
        log_in(other)
        log_in(client)
        sessions = client.request("GET", "/account/sessions").json()["sessions"]
        assert len(sessions) == 2
        mine = next(s for s in sessions if s["current"])
        theirs = next(s for s in sessions if not s["current"])

        jwt = client.request("POST", "/account/jwts")
        assert jwt.status_code == 201
        bearer = {"Authorization": f"Bearer {jwt.json()['jwt']}"}
        api = client.device()  # a client without cookies, holding only the JWT
        assert api.request("GET", "/account", headers=bearer).status_code == 200
        again = api.request("POST", "/account/jwts", headers=bearer)
        assert again.status_code == 403 and again.json()["type"] == "user_jwt_creation_denied"

        assert client.request("DELETE", f"/account/sessions/{theirs['id']}").status_code == 204
        assert other.request("GET", "/account").status_code == 401
        gone = client.request("DELETE", f"/account/sessions/{theirs['id']}")
        assert gone.status_code == 404
        out = client.request("DELETE", "/account/sessions/current")
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        assert api.request("GET", "/account", headers=bearer).status_code == 401  # the JWT died
        api.close()
        assert mine["id"] not in [s.id for s in bastion.sync.sessions.list(mine["userId"])]

        log_in(client)
        log_in(other)
        assert client.request("DELETE", "/account/sessions").status_code == 204
        assert other.request("GET", "/account").status_code == 401
        assert client.request("GET", "/account").status_code == 401
    finally:
        other.close()


def test_password_change(make: Any) -> None:
    client, _ = make(password_history=2)
    sign_up(client)
    other = client.device()
    try:
        log_in(other)
        log_in(client)
        wrong = client.request(
            "PATCH",
            "/account/password",
            json={"password": "new pass phrase 1", "oldPassword": "nope"},
        )
        assert wrong.status_code == 401 and wrong.json()["type"] == "user_invalid_credentials"
        reuse = client.request(
            "PATCH", "/account/password", json={"password": PASSWORD, "oldPassword": PASSWORD}
        )
        assert reuse.status_code == 400 and reuse.json()["type"] == "password_recently_used"
        changed = client.request(
            "PATCH",
            "/account/password",
            json={"password": "new pass phrase 1", "oldPassword": PASSWORD},
        )
        assert changed.status_code == 200, changed.text
        assert client.request("GET", "/account").status_code == 200  # this session stays
        assert other.request("GET", "/account").status_code == 401  # the others end
        assert log_in(other).status_code == 401
        assert log_in(other, password="new pass phrase 1").status_code == 201
    finally:
        other.close()


def test_api_keys_cannot_reach_account_routes(make: Any) -> None:
    client, bastion = make()
    key = bastion.sync.api_keys.create("ci", ["users.read"]).key
    routes = [
        ("GET", "/account"),
        ("GET", "/account/sessions"),
        ("POST", "/account/jwts"),
        ("PATCH", "/account/password"),
        ("DELETE", "/account/sessions"),
    ]
    for method, path in routes:
        response = client.request(method, path, headers={"X-API-Key": key}, json={})
        assert response.status_code in (400, 401), (method, path)
        if response.status_code == 401:
            assert response.json()["type"] == "general_unauthorized_scope"


def test_rate_limits(make: Any) -> None:
    client, _ = make(rate_limit_per_email=3)
    sign_up(client)
    statuses = [log_in(client, password=f"wrong-{i}-password").status_code for i in range(3)]
    assert statuses == [401, 401, 401]
    limited = log_in(client)
    assert limited.status_code == 429
    assert limited.json()["type"] == "general_rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit"] == "3"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in limited.headers


def test_session_cap_and_run_time_security(make: Any) -> None:
    client, bastion = make(session_limit=3)
    sign_up(client)
    devices = [client.device() for _ in range(3)]
    for device in devices:
        log_in(device)
        device.close()
    user_id = log_in(client).json()["userId"]
    assert len(bastion.sync.sessions.list(user_id)) == 3
    bastion.sync.security.set("session_limit", "1")
    log_in(client)
    assert len(bastion.sync.sessions.list(user_id)) == 1


def test_log_in_upgrades_an_old_hash(make: Any) -> None:
    client, bastion = make()
    weak = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    bastion._sync_runner.run(
        bastion._user_store.create("old@example.com", weak.hash(PASSWORD), name="Old Timer")
    )
    assert log_in(client, email="old@example.com").status_code == 201
    user = bastion.sync.users.get_by_email("old@example.com")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def _signed_in_twice_with_a_jwt(client: Client) -> tuple[str, Client, Client, dict[str, str]]:
    """Sign up, log in on two devices, mint a JWT: (user id, other device, JWT holder, header)."""
    user_id = sign_up(client).json()["id"]
    other, api = client.device(), client.device()
    assert log_in(other).status_code == 201
    assert log_in(client).status_code == 201
    bearer = {"Authorization": f"Bearer {client.request('POST', '/account/jwts').json()['jwt']}"}
    assert client.request("GET", "/account").status_code == 200
    assert other.request("GET", "/account").status_code == 200
    assert api.request("GET", "/account", headers=bearer).status_code == 200
    return user_id, other, api, bearer


def test_disable_ends_sessions_and_jwts_and_blocks_log_in(make: Any) -> None:
    client, bastion = make()
    user_id, other, api, bearer = _signed_in_twice_with_a_jwt(client)
    try:
        assert len(bastion.sync.users.disable(user_id)) == 2
        for device in (client, other):
            gone = device.request("GET", "/account")
            assert gone.status_code == 401 and gone.json()["type"] == "user_session_invalid"
        dead_jwt = api.request("GET", "/account", headers=bearer)
        assert dead_jwt.status_code == 401 and dead_jwt.json()["type"] == "user_jwt_invalid"

        blocked = log_in(client)
        assert blocked.status_code == 401, blocked.text
        assert blocked.json() == {
            "code": 401,
            "type": "user_blocked",
            "message": "This user is blocked.",
        }
        assert COOKIE not in blocked.headers.get("set-cookie", "")
        # Without the password, a disabled account looks like any other.
        wrong = log_in(client, password="not the password at all")
        assert wrong.json()["type"] == "user_invalid_credentials"
        assert bastion.sync.sessions.list(user_id) == []

        assert bastion.sync.users.enable(user_id) is True
        assert log_in(client).status_code == 201
        assert client.request("GET", "/account").json()["id"] == user_id
    finally:
        other.close()
        api.close()


def test_delete_ends_sessions_and_jwts_and_frees_the_email(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bastion = make()
    user_id, other, api, bearer = _signed_in_twice_with_a_jwt(client)
    try:
        assert len(bastion.sync.users.delete(user_id)) == 2
        # Every credential the user still holds is refused, GET /account included.
        assert client.request("GET", "/account").status_code == 401
        assert other.request("GET", "/account").status_code == 401
        assert api.request("GET", "/account", headers=bearer).status_code == 401
        assert client.request("GET", "/account/sessions").status_code == 401

        calls: list[str] = []
        original = bastion._account.hasher.dummy_verify
        monkeypatch.setattr(
            bastion._account.hasher, "dummy_verify", lambda pw: (calls.append(pw), original(pw))[1]
        )
        deleted = log_in(client)
        unknown = log_in(client, email="nobody@example.com")
        assert deleted.status_code == 401
        assert deleted.json() == unknown.json()
        assert deleted.json()["type"] == "user_invalid_credentials"
        assert calls == [PASSWORD, PASSWORD]  # the unknown-email path: the dummy argon2 verify

        again = sign_up(client)
        assert again.status_code == 201, again.text
        assert again.json()["id"] != user_id
        assert log_in(client).status_code == 201
        assert client.request("GET", "/account").json()["id"] == again.json()["id"]
    finally:
        other.close()
        api.close()


@pytest.mark.parametrize(
    ("action", "error"), [("disable", "user_blocked"), ("delete", "user_invalid_credentials")]
)
def test_a_log_in_racing_a_disable_or_delete_creates_no_session(
    make: Any, monkeypatch: pytest.MonkeyPatch, action: str, error: str
) -> None:
    client, bastion = make()
    user_id = sign_up(client).json()["id"]
    create = bastion._sessions_core.create
    landed: list[str] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        # Runs once the password has been checked, just before the session-create script.
        getattr(bastion.sync.users, action)(user_id)
        landed.append(action)
        return (yield from create(*args, **kwargs))

    monkeypatch.setattr(bastion._sessions_core, "create", racing)
    refused = log_in(client)
    assert landed == [action]
    assert refused.status_code == 401 and refused.json()["type"] == error
    assert bastion.sync.sessions.list(user_id) == []
    assert client.request("GET", "/account").status_code == 401


def test_jwts_switched_off_are_a_json_501(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = make(jwt_secret=None)
    sign_up(client)
    assert log_in(client).status_code == 201
    with caplog.at_level("INFO", logger="bastion.audit"):
        response = client.request("POST", "/account/jwts")
    events = [r.bastion_audit for r in caplog.records if hasattr(r, "bastion_audit")]
    assert [(e["event"], e["outcome"], e["reason"]) for e in events] == [
        ("jwt_create", "failure", "general_jwt_disabled")
    ]
    assert response.status_code == 501, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "code": 501,
        "type": "general_jwt_disabled",
        "message": "JWTs are disabled on this server: it has no JWT key configured.",
    }
    # The session is untouched, and guests still hear that they must log in first.
    assert client.request("GET", "/account").status_code == 200
    client.cookies.clear()
    assert client.request("POST", "/account/jwts").status_code == 401


def _own_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} {response.status_code}"
    assert response.headers.get_list("cache-control") == ["no-store"], where
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], where


def test_bastions_own_responses_carry_no_store_once_and_nosniff(make: Any) -> None:
    client, _ = make()
    assert sign_up(client).status_code == 201
    logged_in = client.request(
        "POST",
        "/account/sessions",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-Bastion-Fallback": "true"},
    )
    assert logged_in.status_code == 201
    _own_headers(logged_in)
    _own_headers(sign_up(client))  # 409
    assert len(logged_in.headers.get_list("x-bastion-session")) == 1
    assert len(logged_in.headers.get_list("set-cookie")) == 1
    _own_headers(log_in(client))  # with the cookie: the old session is replaced
    for method, path in [
        ("GET", "/account"),
        ("GET", "/account/sessions"),
        ("POST", "/account/jwts"),
        ("PATCH", "/account/password"),  # 400: no body
        ("DELETE", "/account/sessions/current"),  # 204
        ("GET", "/account"),  # 401 from the account route: a guest now
    ]:
        _own_headers(client.request(method, path))
    # Refused by the middleware before any route: a forged session, a cross-site cookie request.
    forged = client.request("GET", "/account", headers={"X-Bastion-Session": "a.b.c"})
    assert forged.status_code == 401 and forged.json()["type"] == "user_session_invalid"
    _own_headers(forged)
    log_in(client)
    cross = client.request("DELETE", "/account/sessions", headers={"Origin": "https://evil.test"})
    assert cross.status_code == 403 and cross.json()["type"] == "general_cross_site_request"
    _own_headers(cross)


HOSTILE_AGENT = (
    b"Mozilla/5.0 \x1b[31mred\x1b[0m <script>alert(1)</script> \x00nul\r\n\t"
    + "ümläut \u202ertl\u200b 😀 ".encode()
    + b"\xff\xfe end"
)
CLEAN_AGENT = "Mozilla/5.0 [31mred[0m <script>alert(1)</script> nulümläut rtl 😀 \ufffd\ufffd end"


@pytest.mark.parametrize(
    ("peer", "forwarded", "stored"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("\x1b[2J<script>", None, ""),  # a peer that is no address (a proxy's or socket's)
        ("127.0.0.1", "fe80::1%\x1b<b>", "fe80::1"),  # an IPv6 zone is free text: dropped
        ("127.0.0.1", "2001:DB8::0:1", "2001:db8::1"),
    ],
)
def test_sessions_keep_a_clean_ip_and_user_agent(
    make: Any, peer: str, forwarded: str | None, stored: str
) -> None:
    client, bastion = make(trusted_proxies=["127.0.0.1"])
    user_id = sign_up(client).json()["id"]
    device = client.device(peer)
    try:
        headers = [(b"user-agent", HOSTILE_AGENT)]
        if forwarded is not None:
            headers.append((b"x-forwarded-for", forwarded.encode()))
        response = device.request(
            "POST",
            "/account/sessions",
            json={"email": "ada@example.com", "password": PASSWORD},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        assert (response.json()["userAgent"], response.json()["ip"]) == (CLEAN_AGENT, stored)
        listed = device.request("GET", "/account/sessions")
        assert listed.headers["x-content-type-options"] == "nosniff"
        (session,) = listed.json()["sessions"]
        assert session["userAgent"] == CLEAN_AGENT and session["ip"] == stored
        assert [(s.user_agent, s.ip) for s in bastion.sync.sessions.list(user_id)] == [
            (CLEAN_AGENT, stored)
        ]
    finally:
        device.close()


def test_a_long_user_agent_is_cut_after_cleaning(make: Any) -> None:
    client, _ = make()
    sign_up(client)
    agent = ("\x1b" * 600 + "é" * 600).encode()
    client.request(
        "POST",
        "/account/sessions",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers=[(b"user-agent", agent)],
    )
    (session,) = client.request("GET", "/account/sessions").json()["sessions"]
    assert session["userAgent"] == "é" * 256


HUNG_TIMEOUT = 1.0
HUNG_MARGIN = 0.4  # scheduling, the 503's own work; one retry more would be a whole timeout


def test_a_hung_redis_is_a_503_within_redis_timeout(framework: str) -> None:
    # A server of its own: the shared one must never be left paused.
    server = RedisServer().start()
    loop = asyncio.Runner()
    clients: list[Client] = []
    try:
        bastion = _bastion(server.url, redis_timeout=HUNG_TIMEOUT)
        client = Client(framework, bastion, loop)
        clients.append(client)
        sign_up(client)
        assert log_in(client).status_code == 201
        assert client.request("GET", "/account").status_code == 200  # the pool is warm
        token = client.cookies[COOKIE]
        # A new Bastion: its first connection is accepted by the kernel, then never answered.
        fresh = Client(framework, _bastion(server.url, redis_timeout=HUNG_TIMEOUT), loop)
        clients.append(fresh)
        server.pause()
        waits = {}
        for name, who, method, path, kw in [
            # The session read on a pooled connection (the middleware's one round trip).
            ("session", client, "GET", "/account", {}),
            # A log-in: its rate-limit script first.
            ("log-in", client, "POST", "/account/sessions",
             {"json": {"email": "ada@example.com", "password": PASSWORD}}),
            ("new connection", fresh, "GET", "/account",
             {"headers": {"X-Bastion-Session": token}}),
        ]:  # fmt: skip
            started = time.monotonic()
            response = who.request(method, path, **kw)
            waits[name] = round(time.monotonic() - started, 3)
            assert response.status_code == 503, (name, response.text)
            assert response.json()["type"] == "service_unavailable"
        print(f"\n503 under a hung Redis ({framework}, redis_timeout={HUNG_TIMEOUT}):", waits)
        for name, waited in waits.items():
            assert HUNG_TIMEOUT * 0.9 <= waited <= HUNG_TIMEOUT + HUNG_MARGIN, (name, waited)
    finally:
        server.resume()
        for made in clients:
            made.close()
        loop.close()
        server.cleanup()
