"""Audit events of account actions, on Starlette, FastAPI and Flask, on a real redis-server.

Each test drives real account routes and reads the three places an event goes: the records of
the ``bastion.audit`` logger, the app's ``audit_hook``, and (where it traces) the current span.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bastion import Bastion, Settings
from bastion.adapters import flask as flask_adapter
from bastion.audit import EVENTS, AuditEvent, AuditLog
from bastion.telemetry import Telemetry
from tests.conftest import demo_app
from tests.test_account_contract import COOKIE, PASSWORD, Client, clients, log_in, sign_up

FRAMEWORKS = ["starlette", "fastapi", "flask"]
NEW_PASSWORD = "new pass phrase 1"
WRONG_PASSWORD = "not the password at all"
JWT_SECRET = "j" * 40


class Trail:
    """What one app recorded: the hook's events and the ``bastion.audit`` log records."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.hooked: list[AuditEvent] = []

    def hook(self, event: AuditEvent) -> None:
        self.hooked.append(event)

    @property
    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == "bastion.audit"]

    def events(self) -> list[dict[str, Any]]:
        """The events logged so far, checked to be the ones the hook got, in the same order."""
        logged = [r.bastion_audit for r in self.records if hasattr(r, "bastion_audit")]
        assert logged == [e.to_dict() for e in self.hooked]
        for record, event in zip(
            [r for r in self.records if hasattr(r, "bastion_audit")], self.hooked, strict=True
        ):
            level = logging.INFO if event.outcome == "success" else logging.WARNING
            assert record.levelno == level, (record.getMessage(), event)
            assert record.getMessage().startswith(f"{event.event} {event.outcome} ")
        return logged

    def take(self) -> list[dict[str, Any]]:
        """The events since the last ``take``."""
        events = self.events()
        self.caplog.clear()
        self.hooked.clear()
        return events

    def names(self) -> list[tuple[str, str]]:
        """(event, outcome) of the events since the last ``take``."""
        return [(e["event"], e["outcome"]) for e in self.take()]


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def trail(caplog: pytest.LogCaptureFixture) -> Trail:
    caplog.set_level(logging.INFO, logger="bastion.audit")
    return Trail(caplog)


@pytest.fixture
def make(framework: str, real_redis: str, trail: Trail) -> Iterator[Any]:
    with clients(framework) as client_for:

        def build(**settings: Any) -> tuple[Client, Bastion]:
            bastion = Bastion(
                Settings(redis_url=real_redis, jwt_secret=JWT_SECRET, **settings),
                audit_hook=trail.hook,
            )
            return client_for(bastion), bastion

        yield build


def _only(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == name]
    assert len(found) == 1, events
    return found[0]


def test_sign_up_events(make: Any, trail: Trail) -> None:
    client, _ = make()
    created = sign_up(client)
    assert created.status_code == 201
    [event] = trail.take()
    assert event["event"] == "sign_up" and event["outcome"] == "success"
    assert event["user_id"] == created.json()["id"]
    assert event["session_id"] is None and event["reason"] is None
    assert event["client_ip"] and event["user_agent"].startswith("python-httpx/")

    assert sign_up(client).status_code == 409
    [dup] = trail.take()
    assert (dup["event"], dup["outcome"], dup["reason"]) == (
        "sign_up",
        "failure",
        "user_already_exists",
    )
    assert dup["user_id"] is None  # the existing account is not named

    weak = client.request("POST", "/account", json={"email": "b@example.com", "password": "x"})
    assert weak.status_code == 400
    assert [e["reason"] for e in trail.take()] == ["password_too_short"]
    json_type = {"Content-Type": "application/json"}
    assert client.request("POST", "/account", content=b"{", headers=json_type).status_code == 400
    assert [(e["event"], e["reason"]) for e in trail.take()] == [("sign_up", "general_bad_request")]


def test_log_in_events(make: Any, trail: Trail) -> None:
    client, _ = make()
    user_id = sign_up(client).json()["id"]
    trail.take()

    session = log_in(client).json()
    [event] = trail.take()
    assert (event["event"], event["outcome"]) == ("log_in", "success")
    assert event["user_id"] == user_id and event["session_id"] == session["id"]
    assert event["details"] == {}

    again = log_in(client).json()  # from a signed-in client: its session is replaced
    [event] = trail.take()
    assert event["session_id"] == again["id"]
    assert event["details"] == {"replaced_session_id": session["id"]}

    assert log_in(client, password=WRONG_PASSWORD).status_code == 401
    [wrong] = trail.take()
    assert (wrong["event"], wrong["outcome"], wrong["reason"]) == (
        "log_in",
        "failure",
        "user_invalid_credentials",
    )
    assert wrong["user_id"] == user_id  # whose account was tried

    assert log_in(client, email="nobody@example.com").status_code == 401
    [unknown] = trail.take()
    assert unknown["reason"] == "user_invalid_credentials" and unknown["user_id"] is None


def test_failed_log_ins_never_carry_the_email(make: Any, trail: Trail) -> None:
    client, _ = make(rate_limit_per_email=1)
    sign_up(client, email="grace@example.com")
    trail.take()
    log_in(client, email="grace@example.com", password=WRONG_PASSWORD)
    log_in(client, email="Someone.Else@Example.com")
    assert log_in(client, email="grace@example.com").status_code == 429
    records = trail.records
    assert len(records) == 4  # wrong password, unknown email, rate_limited + log_in refused
    seen = " ".join(repr(r.__dict__) + r.getMessage() for r in records)
    seen += " ".join(repr(e) for e in trail.hooked)
    for part in ("grace@example.com", "someone.else", "Someone.Else", "example.com"):
        assert part not in seen


def test_rate_limited_events(make: Any, trail: Trail) -> None:
    client, _ = make(rate_limit_per_email=2)
    user_id = sign_up(client).json()["id"]
    for _ in range(2):
        log_in(client, password=WRONG_PASSWORD)
    trail.take()
    limited = log_in(client)
    assert limited.status_code == 429
    limit, refused = trail.take()
    assert (limit["event"], limit["outcome"], limit["reason"]) == (
        "rate_limited",
        "failure",
        "general_rate_limit_exceeded",
    )
    assert limit["details"]["endpoint"] == "login" and limit["details"]["limit"] == 2
    assert limit["details"]["retry_after"] == int(limited.headers["retry-after"])
    assert (refused["event"], refused["reason"]) == ("log_in", "general_rate_limit_exceeded")
    assert refused["user_id"] is None  # refused before the email was looked up
    assert user_id not in json.dumps(limit)


def test_log_out_and_session_revoke_events(make: Any, trail: Trail) -> None:
    client, _ = make()
    user_id = sign_up(client).json()["id"]
    other = client.device()
    try:
        theirs = log_in(other).json()["id"]
        mine = log_in(client).json()["id"]
        trail.take()

        assert client.request("DELETE", f"/account/sessions/{theirs}").status_code == 204
        [one] = trail.take()
        assert (one["event"], one["outcome"]) == ("session_revoke", "success")
        assert one["user_id"] == user_id and one["session_id"] == mine
        assert one["details"] == {"scope": "one", "count": 1, "session_ids": [theirs]}

        assert client.request("DELETE", f"/account/sessions/{theirs}").status_code == 404
        [gone] = trail.take()
        assert (gone["event"], gone["outcome"], gone["reason"]) == (
            "session_revoke",
            "failure",
            "general_not_found",
        )
        assert gone["details"] == {"scope": "one", "session_ids": [theirs]}
        client.request("DELETE", "/account/sessions/not-a-session-id%0Aforged")
        [odd] = trail.take()
        assert odd["details"] == {"scope": "one"}  # the client's string is not logged

        assert client.request("DELETE", "/account/sessions/current").status_code == 204
        [out] = trail.take()
        assert (out["event"], out["outcome"]) == ("log_out", "success")
        assert out["user_id"] == user_id and out["session_id"] == mine

        assert client.request("DELETE", "/account/sessions/current").status_code == 401
        [guest] = trail.take()
        assert (guest["event"], guest["reason"], guest["user_id"]) == (
            "log_out",
            "user_unauthorized",
            None,
        )

        other.cookies.clear()  # its session was revoked: a stale cookie gets only a 401
        first = log_in(other).json()["id"]
        second = log_in(client).json()["id"]
        trail.take()
        assert client.request("DELETE", "/account/sessions").status_code == 204
        [everywhere] = trail.take()  # one event: no log_out beside it
        assert (everywhere["event"], everywhere["outcome"]) == ("session_revoke", "success")
        assert everywhere["session_id"] == second
        assert everywhere["details"]["scope"] == "all"
        assert everywhere["details"]["count"] == 2
        assert sorted(everywhere["details"]["session_ids"]) == sorted([first, second])

        assert client.request("DELETE", "/account/sessions").status_code == 401
        assert [(e["event"], e["reason"], e["details"]) for e in trail.take()] == [
            ("session_revoke", "user_unauthorized", {"scope": "all"})
        ]
    finally:
        other.close()


def test_jwt_create_events(make: Any, trail: Trail) -> None:
    client, bastion = make()
    user_id = sign_up(client).json()["id"]
    session_id = log_in(client).json()["id"]
    trail.take()

    jwt = client.request("POST", "/account/jwts").json()["jwt"]
    [made] = trail.take()
    assert (made["event"], made["outcome"]) == ("jwt_create", "success")
    assert made["user_id"] == user_id and made["session_id"] == session_id
    assert made["details"] == {"lifetime": bastion.settings.jwt_lifetime}

    api = client.device()
    try:
        denied = api.request("POST", "/account/jwts", headers={"Authorization": f"Bearer {jwt}"})
        assert denied.status_code == 403
        [refused] = trail.take()
        assert (refused["event"], refused["outcome"], refused["reason"]) == (
            "jwt_create",
            "failure",
            "user_jwt_creation_denied",
        )
        assert refused["user_id"] == user_id and refused["session_id"] == session_id
        assert api.request("POST", "/account/jwts").status_code == 401
        assert [(e["event"], e["reason"]) for e in trail.take()] == [
            ("jwt_create", "user_unauthorized")
        ]
    finally:
        api.close()


def test_password_change_events(make: Any, trail: Trail) -> None:
    client, _ = make(password_history=2)
    user_id = sign_up(client).json()["id"]
    other = client.device()
    try:
        theirs = log_in(other).json()["id"]
        mine = log_in(client).json()["id"]
        trail.take()

        body = {"password": NEW_PASSWORD, "oldPassword": WRONG_PASSWORD}
        assert client.request("PATCH", "/account/password", json=body).status_code == 401
        [wrong] = trail.take()
        assert (wrong["event"], wrong["outcome"], wrong["reason"]) == (
            "password_change",
            "failure",
            "user_invalid_credentials",
        )
        assert wrong["user_id"] == user_id and wrong["session_id"] == mine

        body = {"password": PASSWORD, "oldPassword": PASSWORD}
        assert client.request("PATCH", "/account/password", json=body).status_code == 400
        assert [e["reason"] for e in trail.take()] == ["password_recently_used"]

        body = {"password": NEW_PASSWORD, "oldPassword": PASSWORD}
        assert client.request("PATCH", "/account/password", json=body).status_code == 200
        changed, revoked = trail.take()
        assert (changed["event"], changed["outcome"]) == ("password_change", "success")
        assert changed["user_id"] == user_id and changed["session_id"] == mine
        assert changed["details"] == {"revoke_other_sessions": True}
        assert (revoked["event"], revoked["outcome"]) == ("session_revoke", "success")
        assert revoked["session_id"] == mine
        assert revoked["details"] == {
            "scope": "others",
            "cause": "password_change",
            "count": 1,
            "session_ids": [theirs],
        }
    finally:
        other.close()


def test_password_change_without_revocation(make: Any, trail: Trail) -> None:
    client, _ = make(revoke_sessions_on_password_change=False)
    sign_up(client)
    log_in(client)
    trail.take()
    body = {"password": NEW_PASSWORD, "oldPassword": PASSWORD}
    assert client.request("PATCH", "/account/password", json=body).status_code == 200
    [changed] = trail.take()
    assert changed["details"] == {"revoke_other_sessions": False}


def test_password_change_rate_limited(make: Any, trail: Trail) -> None:
    client, _ = make(rate_limit_per_email=1)
    user_id = sign_up(client).json()["id"]
    log_in(client)
    body = {"password": NEW_PASSWORD, "oldPassword": WRONG_PASSWORD}
    client.request("PATCH", "/account/password", json=body)
    trail.take()
    assert client.request("PATCH", "/account/password", json=body).status_code == 429
    limit, refused = trail.take()
    assert limit["event"] == "rate_limited" and limit["user_id"] == user_id
    assert limit["details"]["endpoint"] == "password"
    assert (refused["event"], refused["reason"]) == (
        "password_change",
        "general_rate_limit_exceeded",
    )


def test_session_evicted_event(make: Any, trail: Trail) -> None:
    client, _ = make(session_limit=2)
    user_id = sign_up(client).json()["id"]
    devices = [client.device() for _ in range(3)]
    try:
        ids = [log_in(device).json()["id"] for device in devices]
    finally:
        for device in devices:
            device.close()
    events = trail.take()
    assert [(e["event"], e["outcome"]) for e in events] == [
        ("sign_up", "success"),
        ("log_in", "success"),
        ("log_in", "success"),
        ("log_in", "success"),
        ("session_evicted", "success"),
    ]
    evicted = events[-1]
    assert evicted["user_id"] == user_id and evicted["session_id"] == ids[2]
    assert evicted["details"] == {"session_ids": [ids[0]], "count": 1}


def test_reads_record_nothing(make: Any, trail: Trail) -> None:
    client, _ = make()
    assert client.request("GET", "/account").status_code == 401
    assert client.request("GET", "/account/sessions").status_code == 401
    sign_up(client)
    log_in(client)
    trail.take()
    assert client.request("GET", "/account").status_code == 200
    assert client.request("GET", "/account/sessions").status_code == 200
    assert trail.take() == []


def test_api_key_on_account_routes_is_recorded_without_its_secret(make: Any, trail: Trail) -> None:
    client, bastion = make()
    key = bastion.sync.api_keys.create("ci", ["users.read"]).key
    response = client.request("POST", "/account/jwts", headers={"X-API-Key": key})
    assert response.status_code == 401
    [event] = trail.take()
    assert (event["event"], event["reason"], event["user_id"]) == (
        "jwt_create",
        "general_unauthorized_scope",
        None,
    )
    # bst_<id>_<secret>: the id is hex, the secret base64url (which may hold "_" itself).
    assert key.split("_", 2)[2] not in json.dumps(event)


# -- secrets -------------------------------------------------------------------------------------


def _tracer() -> tuple[Any, InMemorySpanExporter]:
    """A tracer of a private provider (the global one is left alone) and what it exported."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("bastion-tests"), exporter


def _traced(client: Client, tracer: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request served inside a recording span, as under an OpenTelemetry-instrumented server."""
    if client.runner is None:
        with tracer.start_as_current_span(f"{method} {path}"):
            return client.request(method, path, **kw)

    async def served() -> httpx.Response:
        # The span must be current in the task that serves the request.
        with tracer.start_as_current_span(f"{method} {path}"):
            return await client.async_client.request(method, path, **kw)

    return client.runner.run(served())


def _cookie_token(response: httpx.Response) -> str:
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    return cookie.split(";")[0].split("=", 1)[1]


def test_no_secret_reaches_any_event(make: Any, trail: Trail) -> None:
    """Every event, driven with known secrets; none of them is in a record, hook event or span."""
    # Two password-change attempts fit the limit; log-in counts only its two failures below.
    client, bastion = make(session_limit=1, rate_limit_per_email=2)
    tracer, exporter = _tracer()

    def call(method: str, path: str, who: Client = client, **kw: Any) -> httpx.Response:
        return _traced(who, tracer, method, path, **kw)

    other, bearer, keyed = client.device(), client.device(), client.device()
    try:
        body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada L"}
        user_id = call("POST", "/account", json=body).json()["id"]
        user = bastion.sync.users.get(user_id)
        assert user is not None
        login_body = {"email": "ada@example.com", "password": PASSWORD}
        first = call("POST", "/account/sessions", who=other, json=login_body)
        fallback = {"X-Bastion-Fallback": "true"}
        second = call("POST", "/account/sessions", json=login_body, headers=fallback)  # evicts
        header_token = second.headers["x-bastion-session"]
        jwt = call("POST", "/account/jwts").json()["jwt"]
        denied = call(
            "POST", "/account/jwts", who=bearer, headers={"Authorization": f"Bearer {jwt}"}
        )
        assert denied.status_code == 403
        call("PATCH", "/account/password", json={"password": "x", "oldPassword": WRONG_PASSWORD})
        change = {"password": NEW_PASSWORD, "oldPassword": PASSWORD}
        assert call("PATCH", "/account/password", json=change).status_code == 200
        key = bastion.sync.api_keys.create("ci", ["users.read"]).key
        assert call("DELETE", "/account/sessions", who=keyed, headers={"X-API-Key": key})
        assert call("DELETE", "/account/sessions/current").status_code == 204
        new_login = {"email": "ada@example.com", "password": NEW_PASSWORD}
        third = call("POST", "/account/sessions", json=new_login)
        assert third.status_code == 201
        assert call("DELETE", "/account/sessions").status_code == 204
        wrong = {"email": "ada@example.com", "password": WRONG_PASSWORD}
        statuses = [call("POST", "/account/sessions", json=wrong).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
    finally:
        for device in (other, bearer, keyed):
            device.close()

    changed = bastion.sync.users.get(user_id)
    assert changed is not None
    # What an administrator does to the account is recorded too (here in a traced job).
    with tracer.start_as_current_span("administration"):
        bastion.sync.users.disable(user_id)
        bastion.sync.users.enable(user_id)
        bastion.sync.users.delete(user_id)
    names = {e["event"] for e in trail.events()}
    assert names == set(EVENTS), set(EVENTS) - names
    tokens = [_cookie_token(first), header_token, _cookie_token(third)]
    secrets = [
        PASSWORD,
        NEW_PASSWORD,
        WRONG_PASSWORD,
        JWT_SECRET,
        jwt,
        *jwt.split("."),
        key,
        key[len("bst_0123456789abcdef_") :],
        *tokens,
        *(t.rsplit(".", 1)[1] for t in tokens),
        user.password_hash,
        user.password_hash.rsplit("$", 1)[1],
        changed.password_hash,
        changed.password_hash.rsplit("$", 1)[1],
    ]
    spans = exporter.get_finished_spans()
    span_events = [e for s in spans for e in s.events if e.name.startswith("bastion.")]
    assert len(span_events) == len(trail.hooked)
    seen = [
        *(r.getMessage() for r in trail.records),
        *(repr(r.__dict__) for r in trail.records),
        *(json.dumps(r.bastion_audit) for r in trail.records if hasattr(r, "bastion_audit")),
        *(repr(e) for e in trail.hooked),
        *(repr(e.to_dict()) for e in trail.hooked),
        *(repr(dict(e.attributes or {})) for e in span_events),
    ]
    for secret in secrets:
        assert len(secret) >= 8
        for text in seen:
            assert secret not in text, (secret, text)
    assert all("ada@example.com" not in text for text in seen)


# -- the hook ------------------------------------------------------------------------------------


def test_a_failing_hook_never_breaks_the_request(
    framework: str, real_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.audit")

    def broken(event: AuditEvent) -> None:
        raise RuntimeError("the audit table is gone")

    bastion = Bastion(Settings(redis_url=real_redis, jwt_secret=JWT_SECRET), audit_hook=broken)
    loop = asyncio.Runner()
    client = Client(framework, bastion, loop)
    try:
        assert sign_up(client).status_code == 201
        assert log_in(client).status_code == 201
    finally:
        client.close()
        loop.close()
    audit = [r for r in caplog.records if r.name == "bastion.audit"]
    assert [r.levelname for r in audit] == ["INFO", "ERROR", "INFO", "ERROR"]
    for failure in audit[1::2]:
        assert failure.exc_info is not None and failure.exc_info[0] is RuntimeError
        assert "the audit table is gone" in caplog.text  # the traceback is in the log


def test_an_async_hook_is_refused_loudly(caplog: pytest.LogCaptureFixture) -> None:
    async def wrong(event: AuditEvent) -> None:  # pragma: no cover - never awaited
        return None

    caplog.set_level(logging.INFO, logger="bastion.audit")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be a warning
        AuditLog(wrong).record("sign_up", None, user_id="u1")
    assert [r.levelname for r in caplog.records] == ["INFO", "ERROR"]
    assert "plain function" in caplog.records[1].getMessage()


# -- log-in and log-out called by the app itself ------------------------------------------------


def test_app_login_logout_and_jwt_record_events(real_redis: str, trail: Trail) -> None:
    bastion = Bastion(
        Settings(redis_url=real_redis, jwt_secret=JWT_SECRET, session_limit=1),
        audit_hook=trail.hook,
    )

    async def flow() -> list[str]:
        app = demo_app(bastion)
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://t") as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://t") as b,
        ):
            first = (await a.post("/login", json={"user": "alice"})).json()["session"]
            second = (await b.post("/login", json={"user": "alice"})).json()["session"]
            await b.post("/jwt")
            await b.post("/logout")
            await b.post("/logout")  # a guest now: nothing ends, nothing is recorded
            await b.post("/jwt")
        return [first, second]

    first, second = asyncio.run(flow())
    events = trail.take()
    assert [(e["event"], e["outcome"]) for e in events] == [
        ("log_in", "success"),
        ("log_in", "success"),
        ("session_evicted", "success"),
        ("jwt_create", "success"),
        ("log_out", "success"),
        ("jwt_create", "failure"),
    ]
    assert events[0]["user_id"] == "alice" and events[0]["session_id"] == first
    assert events[2]["details"] == {"session_ids": [first], "count": 1}
    assert events[3]["session_id"] == events[4]["session_id"] == second
    assert events[5]["reason"] == "user_unauthorized"


def test_app_login_logout_sync_record_events(real_redis: str, trail: Trail) -> None:
    bastion = Bastion(Settings(redis_url=real_redis), audit_hook=trail.hook)
    app = Flask("audit")
    flask_adapter.init_app(app, bastion, account=False)

    @app.post("/login")
    def login() -> Any:
        from flask import request

        new = bastion.sync.login(request, "bob")
        return {"session": new.session.id}, 201

    @app.post("/logout")
    def logout() -> Any:
        from flask import request

        bastion.sync.logout(request)
        return "", 204

    with httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as http:
        session = http.post("/login", headers={"User-Agent": "audit-test/1"}).json()["session"]
        http.post("/logout", headers={"User-Agent": "audit-test/1"})
    login_event, logout_event = trail.take()
    assert (login_event["event"], login_event["user_id"], login_event["session_id"]) == (
        "log_in",
        "bob",
        session,
    )
    assert login_event["user_agent"] == "audit-test/1"
    assert (logout_event["event"], logout_event["session_id"]) == ("log_out", session)


def test_app_routes_unaffected_by_audit(real_redis: str, trail: Trail) -> None:
    """Ordinary authenticated requests record nothing: events are for account actions only."""
    bastion = Bastion(Settings(redis_url=real_redis), audit_hook=trail.hook)

    async def flow() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://t"
        ) as http:
            await http.post("/login", json={"user": "carol"})
            trail.take()
            for _ in range(3):
                assert (await http.get("/me")).status_code == 200
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://t"
        ) as stranger:
            forged = await stranger.get("/me", headers={"Cookie": f"{COOKIE}=bad"})
            assert forged.status_code == 401  # a refused credential is not an account action

    asyncio.run(flow())
    assert trail.take() == []


# -- OpenTelemetry -------------------------------------------------------------------------------


def test_events_go_onto_the_recording_span(make: Any, trail: Trail) -> None:
    client, _ = make()
    tracer, exporter = _tracer()
    user_id = _traced(client, tracer, "POST", "/account", json={
        "email": "ada@example.com", "password": PASSWORD,
    }).json()["id"]  # fmt: skip
    _traced(client, tracer, "POST", "/account/sessions", json={"email": "ada@example.com",
            "password": WRONG_PASSWORD})  # fmt: skip
    logged = trail.take()
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["POST /account", "POST /account/sessions"]
    [signed_up] = spans[0].events
    assert signed_up.name == "bastion.sign_up"
    assert signed_up.attributes is not None
    attributes = dict(signed_up.attributes)
    assert attributes["event"] == "sign_up" and attributes["outcome"] == "success"
    assert attributes["user_id"] == user_id
    assert attributes["timestamp"] == logged[0]["timestamp"]
    assert "reason" not in attributes and "session_id" not in attributes  # None is no attribute
    [refused] = spans[1].events
    assert refused.name == "bastion.log_in"
    assert refused.attributes is not None
    assert refused.attributes["reason"] == "user_invalid_credentials"
    assert refused.attributes["user_id"] == user_id


def test_span_attributes_flatten_details() -> None:
    tracer, exporter = _tracer()
    with tracer.start_as_current_span("login"):
        AuditLog().record(
            "session_evicted",
            None,
            user_id="u1",
            session_id="s" * 20,
            details={"session_ids": ("a", "b"), "count": 2},
        )
    [span] = exporter.get_finished_spans()
    [event] = span.events
    assert event.attributes is not None
    assert event.attributes["details.session_ids"] == ("a", "b")
    assert event.attributes["details.count"] == 2


def test_without_a_recording_span_or_without_opentelemetry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.audit")
    AuditLog().record("sign_up", None, user_id="u1")  # no span is current: nothing to add to
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    absent = Telemetry()
    monkeypatch.setattr("bastion.audit.telemetry", absent)
    AuditLog().record("sign_up", None, user_id="u2")
    assert absent._trace is None
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]


def test_without_opentelemetry_installed_bastion_imports_and_records() -> None:
    """A fresh interpreter where the package cannot be imported: one failed attempt, at most."""
    code = """
import importlib.abc, logging, sys

attempts = []

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            attempts.append(name)
            raise ImportError(name)
        return None

sys.meta_path.insert(0, Absent())
from bastion.audit import AuditLog
import bastion, bastion.account
before = len(attempts)  # what imports made (redis-py looks for it too)
got = []
log = AuditLog(got.append)
for user in ("u1", "u2", "u3"):
    log.record("sign_up", None, user_id=user)
print(len(got), len(attempts) - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["3", "1"]  # three events, one look for the package


def test_opentelemetry_is_imported_at_the_first_event_by_bastion_telemetry_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = Telemetry()
    monkeypatch.setattr("bastion.audit.telemetry", fresh)
    assert not hasattr(fresh._trace, "get_current_span")
    AuditLog().record("sign_up", None, user_id="u1")
    assert hasattr(fresh._trace, "get_current_span")
    source = (Path(__file__).parent.parent / "bastion" / "audit.py").read_text()
    assert "opentelemetry" not in source.split('"""', 2)[2]


# -- the event itself ----------------------------------------------------------------------------


def test_event_is_frozen_and_json_ready() -> None:
    event = AuditEvent(
        "session_revoke", "success", "u1", details={"session_ids": ("a",), "count": 1}
    )
    with pytest.raises(FrozenInstanceError):
        event.user_id = "u2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.details["count"] = 2  # type: ignore[index]
    data = event.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["details"] == {"session_ids": ["a"], "count": 1}
    assert event.timestamp.utcoffset() is not None and event.timestamp.utcoffset().seconds == 0
    assert hash(event) == hash(event)
    with pytest.raises(ValueError, match="outcome"):
        AuditEvent("log_in", "maybe")  # type: ignore[arg-type]


def test_ids_from_the_client_are_not_logged(trail: Trail) -> None:
    log = AuditLog(trail.hook)
    log.record("log_in", None, user_id="alice\nFAKE log_in success", session_id="x y")
    [event] = trail.take()
    assert event["user_id"] is None and event["session_id"] is None


def test_state_gives_address_and_a_bounded_user_agent(trail: Trail) -> None:
    class State:
        client_ip = "203.0.113.9"
        user_agent = "a" * 5000

    AuditLog(trail.hook).record("sign_up", State(), user_id="u1")
    [event] = trail.take()
    assert event["client_ip"] == "203.0.113.9" and len(event["user_agent"]) == 512


def test_readme_lists_every_event() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Audit log", 1)[1].split("\n## ", 1)[0]
    for name in EVENTS:
        assert f"`{name}`" in section, name


def test_readme_audit_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Audit log", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### Observability\n", 1)[0]  # tests/test_telemetry.py runs it
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    audit = logging.getLogger("bastion.audit")
    saved = (audit.level, audit.propagate, list(audit.handlers))
    namespace: dict[str, Any] = {"settings": Settings()}  # the embedded Redis
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
        namespace["bastion"].audit.record("sign_up", None, user_id="u1")
    finally:
        for handler in audit.handlers:
            if handler not in saved[2]:
                handler.close()
        audit.setLevel(saved[0])
        audit.propagate = saved[1]
        audit.handlers[:] = saved[2]
    line = json.loads((tmp_path / "audit.log").read_text())
    assert (line["event"], line["user_id"]) == ("sign_up", "u1")
    assert namespace["events"].get_nowait()["user_id"] == "u1"


@pytest.mark.parametrize("framework", ["starlette"])
def test_administrators_actions_on_users_are_recorded(make: Any, trail: Trail) -> None:
    client, bastion = make()
    user_id = sign_up(client).json()["id"]
    session_id = log_in(client.device()).json()["id"]
    trail.take()
    ended = bastion.sync.users.delete(user_id)
    assert ended == [session_id]
    bastion.sync.sessions.revoke_everyone()
    events = trail.take()
    assert [(e["event"], e["outcome"]) for e in events] == [
        ("user_delete", "success"),
        ("session_revoke", "success"),
    ]
    delete, everyone = events
    assert delete["user_id"] == user_id and delete["client_ip"] == ""
    assert delete["details"] == {"count": 1, "session_ids": ended}
    assert everyone["details"] == {"scope": "everyone", "count": 0}
    assert everyone["user_id"] is None


@pytest.mark.parametrize("framework", ["flask"])
def test_disable_and_enable_are_recorded(make: Any, trail: Trail) -> None:
    client, bastion = make()
    user_id = sign_up(client).json()["id"]
    session_id = log_in(client).json()["id"]
    trail.take()
    bastion.sync.users.disable(user_id)
    bastion.sync.users.enable(user_id)
    bastion.sync.users.enable(user_id)
    disable, enable = trail.take()
    assert (disable["event"], disable["user_id"]) == ("user_disable", user_id)
    assert disable["details"] == {"count": 1, "session_ids": [session_id]}
    assert (enable["event"], enable["user_id"], enable["details"]) == ("user_enable", user_id, {})
