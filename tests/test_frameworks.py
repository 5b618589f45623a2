"""Framework glue: the demo on each framework, FastAPI's OpenAPI, Flask over WSGI, user roles."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from bastion import Bastion, ConfigError, Secret, Settings
from bastion.adapters.flask import current_identity, init_app, require
from bastion.cli import main
from bastion.demo import FRAMEWORKS
from tests.account_app import create_app
from tests.redis_server import RedisServer

COOKIE = "__Host-bastion_session"
PASSWORD = "correct horse battery staple"


def _call(
    app: Any, framework: str, requests: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response]:
    if framework == "flask":
        with httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as client:
            return [client.request(m, p, **kw) for m, p, kw in requests]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://t") as c:
            return [await c.request(m, p, **kw) for m, p, kw in requests]

    return asyncio.run(run())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_demo_serves_the_notes_example(framework: str, real_redis: str) -> None:
    from bastion.demo import notes_app, notes_settings

    app = notes_app(notes_settings(redis_url=real_redis, env={}), framework)
    body = {"email": "ada@example.com", "password": PASSWORD}
    page, notes, signed_up, logged_in, me, mine = _call(
        app,
        framework,
        [("GET", "/", {}), ("GET", "/notes", {}), ("POST", "/account", {"json": body}),
         ("POST", "/account/sessions", {"json": body}), ("GET", "/account", {}),
         ("GET", "/notes", {})],
    )  # fmt: skip
    assert page.status_code == 200 and "<title>Bastion notes</title>" in page.text
    assert notes.status_code == 401  # the route map: guests may not list notes
    assert signed_up.status_code == 201 and logged_in.status_code == 201
    assert me.json()["email"] == "ada@example.com"
    assert mine.json() == {"notes": []}


def test_demo_settings_layer_the_config_and_the_environment(tmp_path: Path) -> None:
    from bastion.demo import notes_settings

    example = notes_settings(env={})
    assert example.session_limit == 10 and example.password_history == 5
    assert example.policy_files and example.routes and example.unmatched_routes == "deny"
    config = tmp_path / "mine.toml"
    config.write_text("session_limit = 3\nrate_limit_per_email = 50\n")
    layered = notes_settings(
        config, env={"BASTION_RATE_LIMIT_PER_EMAIL": "70"}, redis_url="redis://127.0.0.1:1/0"
    )
    assert layered.session_limit == 3 and layered.rate_limit_per_email == 70
    assert layered.routes == example.routes  # the example's route map stays
    assert layered.redis_url is not None
    assert notes_settings(env={"BASTION_CONFIG": str(config)}).session_limit == 3


def test_demo_refuses_an_unknown_framework() -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--framework", "django"])


def test_fastapi_openapi_documents_the_contract(real_redis: str) -> None:
    from fastapi import FastAPI

    from bastion.adapters.fastapi import account_router

    app = FastAPI()
    app.include_router(account_router(Bastion(Settings(redis_url=real_redis))))
    schema = app.openapi()
    paths = schema["paths"]
    assert set(paths) == {"/account", "/account/sessions", "/account/sessions/{session_id}",
                          "/account/jwts", "/account/password"}  # fmt: skip
    sign_up = paths["/account"]["post"]
    assert sign_up["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "email",
        "password",
    ]
    assert "201" in sign_up["responses"] and "409" in sign_up["responses"]
    assert "oldPassword" in str(paths["/account/password"]["patch"]["requestBody"])


def _flask(bastion: Bastion) -> Flask:
    app = Flask("t")
    init_app(app, bastion)

    @app.get("/notes/<note>")
    @require("read", "notes/{note}", scope="notes.read")
    def note(note: str) -> dict[str, str]:
        return {"note": note, "who": current_identity().identity}

    @app.post("/change")
    def change() -> dict[str, bool]:
        return {"changed": True}

    return app


def test_flask_over_wsgi(tmp_path: Path, real_redis: str) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text("p, users, notes/*, read\n")
    bastion = Bastion(Settings(redis_url=real_redis, jwt_secret="j" * 40))
    bastion.policy.replace(
        Bastion(Settings(policy_files=(str(policy),), redis_url=real_redis)).policy.engine
    )
    app = _flask(bastion)
    token = bastion.sync.sessions.create("alice").token
    key = bastion.sync.api_keys.create("k", ["notes.read"]).key
    with httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as client:
        assert client.get("/notes/n1").status_code == 401  # guests: the policy says users
        ok = client.get("/notes/n1", headers={"X-Bastion-Session": token})
        assert ok.json() == {"note": "n1", "who": "alice"}
        assert client.get("/notes/n1", headers={"X-API-Key": key}).status_code == 200
        bad = client.get("/notes/n1", headers={"cookie": f"{COOKIE}=junk"})
        assert bad.status_code == 401 and bad.json()["type"] == "user_session_invalid"
        assert "Max-Age=0" in bad.headers["set-cookie"]
        cross = client.post(
            "/change", headers={"cookie": f"{COOKIE}={token}", "Origin": "https://evil.example"}
        )
        assert cross.status_code == 403 and cross.json()["type"] == "general_cross_site_request"
        same = client.post("/change", headers={"cookie": f"{COOKIE}={token}"})
        assert same.json() == {"changed": True}


def test_flask_fails_closed_when_redis_is_down() -> None:
    server = RedisServer().start()
    try:
        bastion = Bastion(Settings(redis_url=server.url, redis_timeout=0.3))
        token = bastion.sync.sessions.create("alice").token
        server.stop()
        app = _flask(bastion)
        with httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as client:
            down = client.get("/notes/n1", headers={"X-Bastion-Session": token})
            assert down.status_code == 503 and down.json()["type"] == "service_unavailable"
    finally:
        server.cleanup()


def test_role_fields_reach_live_sessions(real_redis: str) -> None:
    bastion = Bastion(Settings(redis_url=real_redis))
    run = bastion._sync_runner.run
    user = run(bastion._user_store.create("ada@example.com", "x", name="Ada"))
    before = bastion.sync.sessions.create(user.id)
    bastion.sync.users.update(user.id, verified=True, labels=("admin",), teams={"t1": ("owner",)})
    after = bastion.sync.sessions.create(user.id)
    app = create_app(bastion, "starlette")
    homes = _call(
        app,
        "starlette",
        [("GET", "/", {"headers": {"X-Bastion-Session": t}}) for t in (before.token, after.token)],
    )
    for home in homes:
        roles = set(home.json()["roles"])
        assert {"users/verified", f"user:{user.id}/verified", "label:admin", "team:t1",
                "team:t1/owner"} <= roles  # fmt: skip
        assert "users/unverified" not in roles
    with pytest.raises(ValueError, match="label"):
        bastion.sync.users.update(user.id, labels=("no spaces allowed",))


def test_security_settings_at_run_time(
    real_redis: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion import security

    worker = Bastion(Settings(redis_url=real_redis, session_limit=7))
    assert worker.sync.security.current().session_limit == 7
    assert main(["security", "set", "session_limit", "3", "--redis-url", real_redis]) == 0
    assert main(["security", "set", "password_dictionary", "false", "--redis-url", real_redis]) == 0
    assert main(["security", "set", "session_limit", "101", "--redis-url", real_redis]) == 2
    assert "1..100" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"0\.\.20"):
        worker.sync.security.set("password_history", "21")
    with pytest.raises(ConfigError, match="one of"):
        worker.sync.security.set("cookie_secure", "false")
    # Within the second the worker may still use the old value; after it, never.
    later = time.monotonic() + security.REFRESH_SECONDS + 0.01
    monkeypatch.setattr(security.time, "monotonic", lambda: later)
    values = worker.sync.security.current()
    assert values.session_limit == 3 and values.password_dictionary is False
    assert main(["security", "show", "--redis-url", real_redis]) == 0
    assert '"session_limit": 3' in capsys.readouterr().out


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_require_helpers_on_asgi(framework: str, tmp_path: Path, real_redis: str) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text("p, users, notes/*, read\n")
    bastion = Bastion(Settings(redis_url=real_redis))
    bastion.policy.replace(
        Bastion(Settings(policy_files=(str(policy),), redis_url=real_redis)).policy.engine
    )
    from bastion.adapters import fastapi as fa
    from bastion.adapters import starlette as st

    if framework == "fastapi":
        from fastapi import Depends, FastAPI

        fast = FastAPI(exception_handlers=st.exception_handlers)

        reader = Depends(fa.require("read", "notes/{note}"))

        @fast.get("/notes/{note}")
        async def note(note: str, who: Any = reader) -> Any:
            return {"note": note, "who": who.identity}

        app = bastion.asgi(fast)
    else:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        @st.require("read", "notes/{note}")
        async def endpoint(request: Request) -> JSONResponse:
            return JSONResponse({"note": request.path_params["note"], "who": request.user.identity})

        app = bastion.asgi(
            Starlette(
                routes=[Route("/notes/{note}", endpoint)], exception_handlers=st.exception_handlers
            )
        )
    token = bastion.sync.sessions.create("alice").token
    api_key = bastion.sync.api_keys.create("k", ["a.b"]).key
    guest, alice, key = _call(
        app,
        framework,
        [
            ("GET", "/notes/n1", {}),
            ("GET", "/notes/n1", {"headers": {"X-Bastion-Session": token}}),
            ("GET", "/notes/n1", {"headers": {"X-API-Key": api_key}}),
        ],
    )  # fmt: skip
    assert guest.status_code == 401 and guest.json()["type"] == "user_unauthorized"
    assert alice.json() == {"note": "n1", "who": "alice"}
    assert key.status_code == 401 and key.json()["type"] == "general_unauthorized_scope"


class _Curl:
    """Requests to one app as the demo's printed curl commands send them: no cookie jar."""

    def __init__(self, app: Any, framework: str) -> None:
        self.loop: asyncio.Runner | None = None
        if framework == "flask":
            self.sync = httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t")
        else:
            self.loop = asyncio.Runner()  # one loop: Bastion's asyncio Redis pool lives on it
            self.client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="https://t"
            )

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self.loop is None:
            self.sync.cookies.clear()
            return self.sync.request(method, path, **kw)
        self.client.cookies.clear()
        return self.loop.run(self.client.request(method, path, **kw))

    def close(self) -> None:
        if self.loop is None:
            self.sync.close()
        else:
            self.loop.run(self.client.aclose())
            self.loop.close()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_printed_demo_command_works_on_a_real_redis(
    framework: str, real_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    from bastion.demo import JWT_KEY_WARNING, USAGE, demo_settings, notes_app, notes_settings

    with caplog.at_level("WARNING", logger="bastion.demo"):
        settings = demo_settings(notes_settings(redis_url=real_redis, env={}))
    assert JWT_KEY_WARNING in caplog.text
    secret = settings.jwt_secret  # random, made for this process, and never shown
    assert isinstance(secret, Secret) and secret.get_secret_value() not in caplog.text
    curl = _Curl(notes_app(settings, framework), framework)
    body = '{"email": "ada@example.com", "password": "correct horse battery staple"}'
    assert body in USAGE
    try:
        signed_up = curl(
            "POST", "/account", content=body, headers={"Content-Type": "application/json"}
        )
        assert signed_up.status_code == 201, signed_up.text
        logged_in = curl(
            "POST",
            "/account/sessions",
            content=body,
            headers={"X-Bastion-Fallback": "true", "Content-Type": "application/json"},
        )
        assert logged_in.status_code == 201, logged_in.text
        token = {"X-Bastion-Session": logged_in.headers["x-bastion-session"]}
        assert curl("GET", "/account", headers=token).json()["email"] == "ada@example.com"
        assert curl("GET", "/account/sessions", headers=token).json()["total"] == 1
        note = '{"title": "First note", "body": "Mine only."}'
        assert note in USAGE
        created = curl(
            "POST", "/notes", content=note, headers={**token, "Content-Type": "application/json"}
        )
        assert created.status_code == 201, created.text
        assert curl("GET", "/notes", headers=token).json()["notes"] == [created.json()]
        minted = curl("POST", "/account/jwts", headers=token)
        assert minted.status_code == 201, minted.text
        bearer = {"Authorization": f"Bearer {minted.json()['jwt']}"}
        assert curl("GET", "/account", headers=bearer).json()["email"] == "ada@example.com"
        assert curl("DELETE", "/account/sessions/current", headers=token).status_code == 204
        assert curl("GET", "/account", headers=token).status_code == 401
    finally:
        curl.close()
