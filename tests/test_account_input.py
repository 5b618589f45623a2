"""What the account routes accept, and how they refuse the rest, the same on every framework.

Cross-site requests (login CSRF), bodies that are not JSON, bodies that are not a JSON object
of the route's fields, and failures of Bastion's own code: black-box over HTTP on Starlette,
FastAPI and Flask (in-process), on a real redis-server. The transport side (sizes, chunked
bodies) is in ``test_body_limits.py``, over real servers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Bastion, ConfigError, Settings
from bastion.account import BODIES
from bastion.adapters import fastapi as fastapi_adapter
from bastion.responses import encode
from tests.test_account_contract import COOKIE, PASSWORD, Client, clients, log_in, sign_up

FRAMEWORKS = ["starlette", "fastapi", "flask"]
JSON = {"Content-Type": "application/json"}
LOGIN = {"email": "ada@example.com", "password": PASSWORD}
EVIL = "http://evil.com"


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(framework: str, real_redis: str) -> Iterator[Any]:
    with clients(framework) as client_for:

        def build(**settings: Any) -> tuple[Client, Bastion]:
            bastion = Bastion(Settings(redis_url=real_redis, jwt_secret="j" * 40, **settings))
            return client_for(bastion), bastion

        yield build


def send(
    client: Client, method: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    """``body`` as JSON text (bytes as they are), declared as JSON unless ``headers`` say else."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.request(
        method, path, content=content, headers=JSON if headers is None else headers
    )


# -- 1. cross-site requests --------------------------------------------------------------------

CROSS_SITE = [
    # What a page on another site can make a browser send without CORS: a text/plain "simple"
    # request, with the browser's own Origin and Sec-Fetch-Site.
    {"Content-Type": "text/plain", "Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {**JSON, "Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {**JSON, "Sec-Fetch-Site": "cross-site"},
    {**JSON, "Origin": EVIL},  # a browser without Fetch Metadata
    {**JSON, "Origin": "null"},  # a sandboxed frame
    {**JSON, "Origin": "http://t"},  # not https: not this origin
    {**JSON, "Origin": "https://x.t", "Sec-Fetch-Site": "same-site"},  # a sibling subdomain
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_cross_site_log_in_and_sign_up_are_refused(make: Any, headers: dict[str, str]) -> None:
    client, bastion = make()
    user_id = sign_up(client).json()["id"]
    login = send(client, "POST", "/account/sessions", LOGIN, headers)
    assert login.status_code == 403, login.text
    assert login.json() == {
        "code": 403,
        "type": "general_cross_site_request",
        "message": "Cross-site request refused: the account routes answer only the app's own "
        "pages and allowed_origins.",
    }
    assert "set-cookie" not in login.headers
    assert bastion.sync.sessions.list(user_id) == []
    other = {"email": "eve@example.com", "password": PASSWORD}
    signup = send(client, "POST", "/account", other, headers)
    assert (signup.status_code, signup.json()["type"]) == (403, "general_cross_site_request")
    assert bastion.sync.users.get_by_email("eve@example.com") is None


def test_same_site_and_allowed_origins_still_log_in(make: Any) -> None:
    client, _ = make(allowed_origins=("https://app.t",))
    assert sign_up(client).status_code == 201
    for headers in (
        {},  # curl, a mobile app: no browser, nothing to trick
        {"Origin": "https://t", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://t"},
        {"Sec-Fetch-Site": "none"},  # typed in the address bar
        {"Origin": "https://app.t", "Sec-Fetch-Site": "same-site"},  # in allowed_origins
    ):
        response = send(client, "POST", "/account/sessions", LOGIN, {**JSON, **headers})
        assert response.status_code == 201, (headers, response.text)
        assert response.headers["set-cookie"].startswith(f"{COOKIE}=")


def test_cross_site_requests_to_every_account_route_are_refused(make: Any) -> None:
    # Reads too: a page of another site has no use for them, and a uniform 403 is no oracle of
    # whether the visitor is signed in (200 or 401 would be). Header credentials too.
    client, _ = make()
    sign_up(client)
    token = log_in(client).headers["set-cookie"].split(";")[0].split("=", 1)[1]
    requests = [
        ("GET", "/account"),
        ("GET", "/account/sessions"),
        ("POST", "/account/jwts"),
        ("PATCH", "/account/password"),
        ("DELETE", "/account/sessions/current"),
        ("DELETE", "/account/sessions"),
    ]
    for method, path in requests:
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": EVIL}):
            response = send(client, method, path, b"", headers)
            assert response.status_code == 403, (method, path, headers, response.text)
            assert response.json()["type"] == "general_cross_site_request"
    api = client.device()  # no cookie: the token in the fallback header
    try:
        bare = api.request("GET", "/account", headers={"X-Bastion-Session": token})
        assert bare.status_code == 200
        crossed = api.request(
            "GET", "/account", headers={"X-Bastion-Session": token, "Origin": EVIL}
        )
        assert crossed.status_code == 403
    finally:
        api.close()
    assert client.request("GET", "/account").status_code == 200  # the session is untouched


# -- 2. JSON only --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/jsonp", "application/json-seq",
     "text/json", "application/json; charset=latin-1", "application/json; charset=utf-16"],
)  # fmt: skip
def test_bodies_that_are_not_declared_json_are_refused(make: Any, content_type: str) -> None:
    client, bastion = make()
    user_id = sign_up(client).json()["id"]
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = send(client, "POST", "/account/sessions", LOGIN, headers)
    assert response.status_code == 415, response.text
    assert response.json() == {
        "code": 415,
        "type": "general_unsupported_media_type",
        "message": "The request body must be JSON, sent with Content-Type: application/json.",
    }
    assert "set-cookie" not in response.headers
    assert bastion.sync.sessions.list(user_id) == []


def test_json_with_or_without_a_charset_is_accepted(make: Any) -> None:
    client, _ = make()
    assert sign_up(client).status_code == 201
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON;charset="UTF-8"',
        "application/json;charset=utf8",
    ):
        response = send(client, "POST", "/account/sessions", LOGIN, {"Content-Type": content_type})
        assert response.status_code == 201, (content_type, response.text)
    # A body-less DELETE needs no type; a body with one, the password to end the others.
    other = client.device()
    try:
        log_in(other)
        assert client.request("DELETE", "/account/sessions/current").status_code == 204
        log_in(client)
        ended = send(client, "DELETE", "/account/sessions", {"password": PASSWORD})
        assert ended.status_code == 204, ended.text
        assert other.request("GET", "/account").status_code == 401
    finally:
        other.close()


# -- 3. bodies that are not an object of the route's fields ---------------------------------------

NOT_AN_OBJECT = "The request body must be a JSON object."
NOT_A_STRING = "Field 'email' must be a string."
TOO_DEEP = "The request body is nested too deeply."
NOT_UTF8 = "The request body must be UTF-8."
BAD_BODIES = [
    ("deep array", b"[" * 2000, TOO_DEEP),
    ("deep object", b'{"email":' * 2000, TOO_DEEP),
    ("deep field", b'{"email":' + b"[" * 5000 + b"]" * 5000 + b"}", TOO_DEEP),
    ("duplicate key", b'{"email":"ada@example.com","email":"eve@example.com","password":"x"}',
     "The request body has a duplicate key."),
    ("NaN", b'{"email":NaN,"password":"x"}', "NaN and Infinity are not JSON."),
    ("Infinity", b'{"email":"a@b.c","password":Infinity}', "NaN and Infinity are not JSON."),
    ("-Infinity", b'{"email":-Infinity}', "NaN and Infinity are not JSON."),
    ("not UTF-8", b'{"email":"\xff\xfe@example.com","password":"x"}', NOT_UTF8),
    ("UTF-16", json.dumps(LOGIN).encode("utf-16"), NOT_UTF8),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + json.dumps(LOGIN).encode(), NOT_AN_OBJECT),
    ("lone surrogate", b'{"email":"ada@example.com","password":"\\ud800pw"}',
     "The request body has a \\u escape that is not a character."),
    ("huge integer", b'{"email":1' + b"0" * 60_000 + b',"password":"x"}', NOT_A_STRING),
    ("huge float", b'{"email":1e999999,"password":"x"}', NOT_A_STRING),
    ("string", b'"ada@example.com"', NOT_AN_OBJECT),
    ("array", json.dumps([LOGIN]).encode(), NOT_AN_OBJECT),
    ("number", b"42", NOT_AN_OBJECT),
    ("null", b"null", NOT_AN_OBJECT),
    ("true", b"true", NOT_AN_OBJECT),
    ("two objects", b"{} {}", NOT_AN_OBJECT),
    ("truncated", b'{"email":"ada@example.com","password', NOT_AN_OBJECT),
    ("blank", b"   ", NOT_AN_OBJECT),
    ("list field", b'{"email":["ada@example.com"],"password":"x"}', NOT_A_STRING),
    ("operator field", b'{"email":{"$ne":null},"password":"x"}', NOT_A_STRING),
    ("boolean field", b'{"email":"ada@example.com","password":true}',
     "Field 'password' must be a string."),
    ("unknown field", b'{"email":"ada@example.com","password":"x","admin":true}',
     "The request body has a field this route does not take (email, password)."),
    ("empty object", b"{}", "Missing required field 'email'."),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bodies_that_are_not_an_object_of_the_fields_are_a_400(
    make: Any, name: str, body: bytes, message: str
) -> None:
    client, _ = make()
    response = client.request("POST", "/account/sessions", content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json() == {"code": 400, "type": "general_bad_request", "message": message}


def test_unknown_fields_are_refused_on_every_route_that_takes_a_body(make: Any) -> None:
    client, _ = make()
    sign_up(client)
    log_in(client)
    for method, path in (
        ("POST", "/account"),
        ("POST", "/account/jwts"),
        ("PATCH", "/account/password"),
        ("DELETE", "/account/sessions/current"),
        ("DELETE", "/account/sessions"),
    ):
        response = send(client, method, path, {"extra": "x"})
        assert (response.status_code, response.json()["type"]) == (400, "general_bad_request")
        assert "does not take" in response.json()["message"], (method, path)
    assert client.request("GET", "/account").status_code == 200  # nothing was done


def test_the_openapi_bodies_are_the_routes_fields(real_redis: str) -> None:
    from fastapi import FastAPI

    bastion = Bastion(Settings(redis_url=real_redis))
    api = FastAPI()
    api.include_router(fastapi_adapter.account_router(bastion))
    schema = api.openapi()
    for name, model in fastapi_adapter._BODIES.items():
        required, optional = BODIES[name]
        assert set(model.model_fields) == {*required, *optional}, name
        assert model.model_json_schema()["additionalProperties"] is False, name
    assert schema["paths"]["/account/sessions"]["post"]["requestBody"]["required"] is True


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["email", "password", "x"])


class Harness:
    """One Starlette app on the embedded Redis, one loop and one client for every example."""

    def __init__(self) -> None:
        from starlette.applications import Starlette

        from bastion.adapters import starlette as starlette_adapter

        # One log-in attempt at most reaches argon2: the others are rate limited first.
        bastion = Bastion(Settings(rate_limit_per_ip=1))
        app = bastion.asgi(Starlette(routes=starlette_adapter.account_routes(bastion)))
        self.runner = asyncio.Runner()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://t")

    def post(self, body: bytes) -> httpx.Response:
        call = self.client.post("/account/sessions", content=body, headers=JSON)
        return self.runner.run(call)

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        st.binary(max_size=200),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(FIELDS, JSON_VALUES).map(lambda v: json.dumps(v).encode()),
    )
)
def test_generated_bodies_are_refused_in_bastions_shape(harness: Harness, body: bytes) -> None:
    response = harness.post(body)
    assert response.status_code in (400, 401, 429), response.text
    payload = response.json()
    assert set(payload) == {"code", "type", "message"}
    assert payload["code"] == response.status_code


# -- 4. the same bytes on every framework, and 500s without details ----------------------------


def test_errors_and_answers_are_the_same_bytes_on_every_framework(real_redis: str) -> None:
    loop = asyncio.Runner()
    clients = {
        framework: Client(
            framework,
            Bastion(Settings(redis_url=real_redis, jwt_secret="j" * 40, key_prefix=framework)),
            loop,
        )
        for framework in FRAMEWORKS
    }
    profile = {"email": "ada@example.com", "password": PASSWORD, "name": "Åda Łovelace"}
    requests: list[tuple[str, str, bytes, dict[str, str]]] = [
        *(("POST", "/account/sessions", body, JSON) for _, body, _ in BAD_BODIES),
        ("POST", "/account", json.dumps(profile).encode(), JSON),  # 201, the user
        ("POST", "/account", json.dumps(profile).encode(), JSON),  # 409
        ("POST", "/account", b'{"email":"x@example.com","password":"short"}', JSON),
        ("POST", "/account/sessions", json.dumps(LOGIN).encode(), {"Content-Type": "text/plain"}),
        ("POST", "/account/sessions", json.dumps(LOGIN).encode(), {**JSON, "Origin": EVIL}),
        ("POST", "/account/sessions", b" " * 65_537, JSON),  # 413
        ("POST", "/account/sessions", b'{"email":"ada@example.com","password":"wrong!"}', JSON),
        ("GET", "/account", b"", {}),  # 401 for a guest
        ("DELETE", "/account/sessions/current", b"", {"Cookie": f"{COOKIE}=forged.token.x"}),
        ("POST", "/account/jwts", b"", {}),
    ]
    try:
        answers: dict[str, list[tuple[int, str, bytes]]] = {}
        for framework, client in clients.items():
            answers[framework] = []
            user_id = ""
            for method, path, body, headers in requests:
                response = client.request(method, path, content=body, headers=headers)
                if response.status_code == 201:
                    user_id = response.json()["id"]
                # The one thing that differs: each framework's user has its own random id.
                raw = response.content.replace(user_id.encode(), b"ID") if user_id else b""
                kind = response.headers["content-type"]
                answers[framework].append((response.status_code, kind, raw or response.content))
    finally:
        for client in clients.values():
            client.close()
        loop.close()
    assert answers["flask"] == answers["starlette"]
    assert answers["fastapi"] == answers["starlette"]
    statuses = [status for status, _, _ in answers["starlette"]]
    assert {201, 400, 401, 403, 409, 413, 415} <= set(statuses)
    for status, content_type, raw in answers["starlette"]:
        assert content_type == "application/json"
        body = json.loads(raw)
        assert raw == encode(body)  # compact, keys in their own order, UTF-8 as is
        if status >= 400:
            assert set(body) == {"code", "type", "message"} and body["code"] == status
    assert "Åda Łovelace".encode() in answers["flask"][len(BAD_BODIES)][2]


def test_an_unexpected_failure_is_a_500_without_details(
    make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client, bastion = make()

    def broken(email: str) -> Any:
        raise RuntimeError(f"connection string postgres://app:{PASSWORD}@db lost")
        yield  # a generator, like every store step

    monkeypatch.setattr(bastion._user_store, "get_by_email", broken)
    with caplog.at_level(logging.ERROR, logger="bastion.account"):
        response = send(client, "POST", "/account/sessions", LOGIN)
    assert response.status_code == 500
    assert response.content == (
        b'{"code":500,"type":"general_server_error","message":"Server error."}'
    )
    assert response.headers["content-type"] == "application/json"
    [record] = [r for r in caplog.records if r.name == "bastion.account"]
    assert record.levelno == logging.ERROR
    logged = record.getMessage()
    assert "Traceback" in logged and "RuntimeError: connection string" in logged
    assert PASSWORD not in logged and "[redacted]" in logged


def test_a_store_that_refuses_a_value_is_a_400_in_bastions_words(
    make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client, bastion = make()

    def picky(email: str) -> Any:
        raise ValueError(f"invalid literal for int() with base 10: {email!r}")
        yield

    monkeypatch.setattr(bastion._user_store, "get_by_email", picky)
    with caplog.at_level(logging.WARNING, logger="bastion.account"):
        response = send(client, "POST", "/account/sessions", LOGIN)
    assert response.json() == {
        "code": 400,
        "type": "general_bad_request",
        "message": "The request is malformed.",
    }
    assert any("invalid literal" in r.getMessage() for r in caplog.records)


# -- the setting -------------------------------------------------------------------------------


def test_max_body_size_is_validated() -> None:
    assert Settings().max_body_size == 65_536
    assert Settings.load(env={"BASTION_MAX_BODY_SIZE": "32768"}).max_body_size == 32_768
    for bad in (16_383, 1_048_577, 0, -1):
        with pytest.raises(ConfigError, match="max_body_size"):
            Settings(max_body_size=bad)


def test_flask_reads_a_body_an_app_hook_read_first(real_redis: str) -> None:
    from flask import Flask, request

    from bastion.adapters import flask as flask_adapter

    bastion = Bastion(Settings(redis_url=real_redis))
    app = Flask("hooked")
    seen: list[Any] = []

    @app.before_request
    def log_json() -> None:  # the kind of hook a request logger adds
        seen.append(request.get_json(silent=True))

    flask_adapter.init_app(app, bastion)
    with httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as client:
        profile = {"email": "ada@example.com", "password": PASSWORD}
        assert client.post("/account", json=profile).status_code == 201
        too_big = client.post("/account/sessions", content=b" " * 65_537, headers=JSON)
        assert (too_big.status_code, too_big.json()["type"]) == (413, "general_payload_too_large")
    assert seen[0] == profile
