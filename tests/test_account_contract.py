"""The HTTP account contract, identical on Starlette, FastAPI and Flask, on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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

FRAMEWORKS = ["starlette", "fastapi", "flask"]
PASSWORD = "correct horse battery staple"
COOKIE = "__Host-bastion_session"


class Client:
    """One synchronous HTTP client over any of the three apps (cookies kept like a browser)."""

    def __init__(self, framework: str, bastion: Bastion, loop: asyncio.Runner) -> None:
        self.framework = framework
        self.bastion = bastion
        self.loop = loop
        self.runner: asyncio.Runner | None = None
        if framework == "flask":
            app = Flask("contract")
            flask_adapter.init_app(app, bastion)
            self.sync = httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t")
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
            transport=httpx.ASGITransport(asgi), base_url="https://t"
        )

    @property
    def cookies(self) -> httpx.Cookies:
        return self.sync.cookies if self.runner is None else self.async_client.cookies

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self.runner is None:
            return self.sync.request(method, path, **kw)
        return self.runner.run(self.async_client.request(method, path, **kw))

    def device(self) -> Client:
        """Another client of the same app and loop: a second browser of the same user."""
        return Client(self.framework, self.bastion, self.loop)

    def close(self) -> None:
        if self.runner is None:
            self.sync.close()
        else:
            self.runner.run(self.async_client.aclose())


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _bastion(url: str, **settings: Any) -> Bastion:
    return Bastion(Settings(redis_url=url, jwt_secret="j" * 40, **settings))


@pytest.fixture
def make(framework: str, real_redis: str) -> Iterator[Any]:
    made: list[Client] = []
    loop = asyncio.Runner()

    def build(**settings: Any) -> tuple[Client, Bastion]:
        bastion = _bastion(real_redis, **settings)
        client = Client(framework, bastion, loop)
        made.append(client)
        return client, bastion

    yield build
    for client in made:
        client.close()
    loop.close()


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
    original = bastion.account.hasher.dummy_verify
    monkeypatch.setattr(
        bastion.account.hasher, "dummy_verify", lambda pw: (calls.append(pw), original(pw))[1]
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
        assert mine["id"] not in [s.id for s in bastion.sync_sessions.list(mine["userId"])]

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
    key = bastion.sync_api_keys.create("ci", ["users.read"]).key
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
    assert len(bastion.sync_sessions.list(user_id)) == 3
    bastion.sync_runner.run(bastion.security.set("session_limit", "1"))
    log_in(client)
    assert len(bastion.sync_sessions.list(user_id)) == 1


def test_log_in_upgrades_an_old_hash(make: Any) -> None:
    client, bastion = make()
    weak = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    bastion.sync_runner.run(
        bastion.user_store.create("old@example.com", weak.hash(PASSWORD), name="Old Timer")
    )
    assert log_in(client, email="old@example.com").status_code == 201
    user = bastion.sync_users.get_by_email("old@example.com")
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
        assert len(bastion.sync_users.disable(user_id)) == 2
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
        assert bastion.sync_sessions.list(user_id) == []

        assert bastion.sync_users.enable(user_id) is True
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
        assert len(bastion.sync_users.delete(user_id)) == 2
        # Every credential the user still holds is refused, GET /account included.
        assert client.request("GET", "/account").status_code == 401
        assert other.request("GET", "/account").status_code == 401
        assert api.request("GET", "/account", headers=bearer).status_code == 401
        assert client.request("GET", "/account/sessions").status_code == 401

        calls: list[str] = []
        original = bastion.account.hasher.dummy_verify
        monkeypatch.setattr(
            bastion.account.hasher, "dummy_verify", lambda pw: (calls.append(pw), original(pw))[1]
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
    create = bastion.sessions.core.create
    landed: list[str] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        # Runs once the password has been checked, just before the session-create script.
        getattr(bastion.sync_users, action)(user_id)
        landed.append(action)
        return (yield from create(*args, **kwargs))

    monkeypatch.setattr(bastion.sessions.core, "create", racing)
    refused = log_in(client)
    assert landed == [action]
    assert refused.status_code == 401 and refused.json()["type"] == error
    assert bastion.sync_sessions.list(user_id) == []
    assert client.request("GET", "/account").status_code == 401
