"""Framework-native helpers: Starlette's decorators, FastAPI's dependencies, Flask's decorators
and proxies, each on its own framework, with no exception handler registered by hand; and CORS
preflights through a route map on all three."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion import (
    Bastion,
    BastionError,
    BastionMiddleware,
    ConfigError,
    Identity,
    Settings,
    User,
)
from bastion.adapters import fastapi as fa
from bastion.adapters import flask as fl
from bastion.adapters import starlette as st

ORIGIN = "https://app.example"
NOTES = "p, users, notes/*, read\n"


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.csv"
    path.write_text(NOTES)
    return str(path)


def _bastion(url: str, policy: str | None, **settings: Any) -> Bastion:
    """A Bastion whose route map lets every request through to the helpers (unless told)."""
    if policy is not None:
        settings = {"policy_files": (policy,), "unmatched_routes": "allow", **settings}
    return Bastion(Settings(redis_url=url, **settings))


class People:
    """A verified-later user with a session, and two API keys (with and without the scope)."""

    def __init__(self, bastion: Bastion) -> None:
        run = bastion._sync_runner.run  # creating a record with a given hash is the store's step
        self.user: User = run(bastion._user_store.create("ada@example.com", "x", name="Ada"))
        self.session = {"X-Bastion-Session": bastion.sync.sessions.create(self.user.id).token}
        self.key = {"X-API-Key": bastion.sync.api_keys.create("k", ["notes.read"]).key}
        self.other_key = {"X-API-Key": bastion.sync.api_keys.create("o", ["other"]).key}


class ASGIClient:
    """Requests to an ASGI app on one event loop (Bastion's asyncio Redis pool lives on it)."""

    def __init__(self, app: Any, loop: asyncio.Runner | None = None) -> None:
        self.app = app
        self.owned = loop is None
        self.loop = asyncio.Runner() if loop is None else loop
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://t")

    def __enter__(self) -> ASGIClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.run(self.client.aclose())
        if self.owned:
            self.loop.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.loop.run(self.client.request(method, path, **kw))

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def websocket(
        self, path: str, headers: dict[str, str] | None = None, *, denial: bool = True
    ) -> list[dict[str, Any]]:
        """The messages the app sends to a WebSocket handshake that then says nothing."""
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "wss", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "subprotocols": [],
            "headers": [(b"host", b"t"), *((k.lower().encode(), v.encode())
                                           for k, v in (headers or {}).items())],
            "client": ("127.0.0.1", 5000), "server": ("t", 443),
            "extensions": {"websocket.http.response": {}} if denial else {},
        }  # fmt: skip
        inbox = [{"type": "websocket.connect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run(self.app(scope, receive, send))
        return sent


def _refused(response: httpx.Response | Any, status: int, kind: str) -> bool:
    return bool(
        response.status_code == status
        and response.headers["content-type"] == "application/json"
        and response.json()["type"] == kind
    )


# -- Starlette ---------------------------------------------------------------------------------


def _starlette_app(bastion: Bastion) -> Starlette:
    @st.require("read", "notes/{note}")
    async def async_note(request: Request) -> JSONResponse:
        return JSONResponse({"note": request.path_params["note"], "who": request.user.identity})

    @st.require("read", "notes/{note}", scope="notes.read")
    def sync_note(request: Request) -> JSONResponse:
        return JSONResponse({"note": request.path_params["note"], "who": request.user.identity})

    class Note(HTTPEndpoint):
        @st.require("read", "notes/{note}")
        async def get(self, request: Request) -> Response:
            return PlainTextResponse("async method")

        @st.login_required
        def post(self, request: Request) -> Response:
            return PlainTextResponse("sync method")

    @st.login_required(verified=True)
    async def verified(request: Request) -> Response:
        return PlainTextResponse("verified")

    @st.require("read", "notes/{note}")
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"hello {websocket.user.identity}")
        await websocket.close()

    async def inline(request: Request) -> Response:
        # A Bastion error raised by the app's own code renders as JSON too.
        bastion.identity(request).require_scope("notes.read")
        return PlainTextResponse("inline")

    return Starlette(
        routes=[
            Route("/async/{note}", async_note),
            Route("/sync/{note}", sync_note),
            Route("/endpoint/{note}", Note),
            Route("/verified", verified),
            Route("/inline", inline),
            WebSocketRoute("/ws/{note}", socket),
        ]
    )


def test_starlette_decorators_inspect_the_endpoint(real_redis: str, policy: str) -> None:
    bastion = _bastion(real_redis, policy)
    people = People(bastion)
    with ASGIClient(bastion.asgi(_starlette_app(bastion))) as client:  # no exception_handlers
        assert _refused(client.get("/async/n1"), 401, "user_unauthorized")
        assert client.get("/async/n1", headers=people.session).json()["who"] == people.user.id
        assert _refused(
            client.get("/async/n1", headers=people.key), 401, "general_unauthorized_scope"
        )
        assert _refused(client.get("/sync/n1"), 401, "user_unauthorized")
        assert client.get("/sync/n1", headers=people.session).json()["note"] == "n1"
        assert client.get("/sync/n1", headers=people.key).status_code == 200
        assert _refused(
            client.get("/sync/n1", headers=people.other_key), 401, "general_unauthorized_scope"
        )
        assert _refused(client.get("/endpoint/n1"), 401, "user_unauthorized")
        assert client.get("/endpoint/n1", headers=people.session).text == "async method"
        assert _refused(client.post("/endpoint/n1"), 401, "user_unauthorized")
        assert _refused(
            client.post("/endpoint/n1", headers=people.key), 401, "general_unauthorized_scope"
        )
        assert client.post("/endpoint/n1", headers=people.session).text == "sync method"
        refused = client.get("/verified", headers=people.session)
        assert _refused(refused, 403, "user_email_not_verified")
        bastion.sync.users.update(people.user.id, verified=True)
        assert client.get("/verified", headers=people.session).text == "verified"
        assert _refused(client.get("/inline"), 401, "user_unauthorized")
        assert client.get("/inline", headers=people.key).text == "inline"
        # WebSockets: the handshake is answered with the JSON error, or closed before accept
        # where the server cannot send an answer; a user's is accepted.
        start, body = client.websocket("/ws/n1")
        assert start["type"] == "websocket.http.response.start" and start["status"] == 401
        assert json.loads(body["body"])["type"] == "user_unauthorized"
        assert client.websocket("/ws/n1", denial=False) == [
            {"type": "websocket.close", "code": 1008, "reason": ""}
        ]
        accepted = client.websocket("/ws/n1", people.session)
        assert [m["type"] for m in accepted] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
        assert accepted[1]["text"] == f"hello {people.user.id}"


def test_starlette_middleware_renders_refusals_without_handlers(
    real_redis: str, policy: str
) -> None:
    """Added with ``Middleware(BastionMiddleware)``, Bastion sits inside Starlette's error
    middleware and renders the decorators' refusals itself."""
    bastion = _bastion(real_redis, policy)
    inner = _starlette_app(bastion)
    app = Starlette(
        routes=inner.routes, middleware=[Middleware(BastionMiddleware, bastion=bastion)]
    )
    token = People(bastion).session
    with ASGIClient(app) as client:
        assert _refused(client.get("/async/n1"), 401, "user_unauthorized")
        assert client.get("/async/n1", headers=token).status_code == 200


def test_starlette_errors_in_websockets_and_the_apps_own_handler(real_redis: str) -> None:
    """A Bastion error raised in a WebSocket endpoint refuses the handshake; an app's own
    handler for Bastion's errors is left in place by ``bastion.asgi``."""
    bastion = _bastion(real_redis, None)

    async def socket(websocket: WebSocket) -> None:
        bastion.identity(websocket).require_scope("notes.read")
        await websocket.accept()  # pragma: no cover - guests never get here

    async def page(request: Request) -> Response:
        bastion.identity(request).require_scope("notes.read")
        return PlainTextResponse("never")  # pragma: no cover

    async def mine(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("the app's own page", status_code=401)

    with ASGIClient(bastion.asgi(Starlette(routes=[WebSocketRoute("/ws", socket)]))) as client:
        start, body = client.websocket("/ws")
        assert start["status"] == 401 and json.loads(body["body"])["type"] == "user_unauthorized"
    own = Starlette(routes=[Route("/page", page)], exception_handlers={BastionError: mine})
    with ASGIClient(bastion.asgi(own)) as client:
        assert client.get("/page").text == "the app's own page"


def test_starlette_decorator_needs_a_connection_parameter() -> None:
    def endpoint(req: Request) -> Response:  # pragma: no cover - never called
        return Response()

    with pytest.raises(TypeError, match="'request' or 'websocket'"):
        st.require("read", "notes")(endpoint)


# -- FastAPI -----------------------------------------------------------------------------------


def _fastapi_app(bastion: Bastion) -> FastAPI:
    app = FastAPI()
    app.include_router(fa.account_router(bastion))

    @app.get("/me")
    async def me(user: Annotated[User, Depends(fa.current_user())]) -> dict[str, Any]:
        return {"email": user.email}

    @app.get("/me/record")
    async def record(user: Annotated[User, Depends(fa.current_user())]) -> Any:
        return user  # returned whole, as a careless view would: no hash in it

    @app.get("/me/verified")
    async def me_verified(user: Annotated[User, Depends(fa.current_user(verified=True))]) -> str:
        return user.email

    @app.get("/me/maybe")
    async def me_maybe(
        user: Annotated[User | None, Depends(fa.current_user(optional=True))],
    ) -> Any:
        return None if user is None else user.email

    @app.get("/who")
    async def who(identity: Annotated[Identity, Depends(fa.current_identity())]) -> str:
        return identity.kind

    @app.get("/who/maybe")
    async def who_maybe(
        identity: Annotated[Identity | None, Depends(fa.current_identity(optional=True))],
    ) -> Any:
        return None if identity is None else identity.kind

    @app.get("/who/verified")
    async def who_verified(
        identity: Annotated[Identity, Depends(fa.current_identity(verified=True))],
    ) -> Any:
        return identity.kind

    @app.get("/who/legacy")
    async def legacy(identity: Annotated[Identity, Depends(fa.current_identity)]) -> str:
        return identity.kind

    @app.get("/notes/{note}")
    async def note(
        note: str, who: Annotated[Identity, Depends(fa.require("read", "notes/{note}"))]
    ) -> Any:
        return {"note": note, "who": who.identity}

    @app.get("/keyed/{note}")
    async def keyed(
        note: str,
        who: Annotated[Identity, Depends(fa.require("read", "notes/{note}", scope="notes.read"))],
    ) -> Any:
        return who.kind

    return app


def test_fastapi_dependencies_refuse_as_bastion_does(real_redis: str, policy: str) -> None:
    bastion = _bastion(real_redis, policy)
    people = People(bastion)
    app = bastion.asgi(_fastapi_app(bastion))  # no exception handler registered by hand
    session, key = {"headers": people.session}, {"headers": people.key}
    calls = [
        ("/me", {}), ("/me", session), ("/me", key),
        ("/me/verified", session),
        ("/me/maybe", {}), ("/me/maybe", session), ("/me/maybe", key),
        ("/who", {}), ("/who", session), ("/who", key),
        ("/who/maybe", {}), ("/who/verified", key), ("/who/verified", session),
        ("/who/legacy", {}), ("/who/legacy", key),
        ("/notes/n1", {}), ("/notes/n1", session), ("/notes/n1", key),
        ("/keyed/n1", key),
    ]  # fmt: skip
    client = ASGIClient(app)
    answers = iter([client.get(path, **kw) for path, kw in calls])
    assert _refused(next(answers), 401, "user_unauthorized")
    assert next(answers).json() == {"email": "ada@example.com"}
    assert _refused(next(answers), 401, "general_unauthorized_scope")  # a key is no user
    assert _refused(next(answers), 403, "user_email_not_verified")
    assert [next(answers).json() for _ in range(3)] == [None, "ada@example.com", None]
    assert _refused(next(answers), 401, "user_unauthorized")
    assert [next(answers).json() for _ in range(2)] == ["session", "key"]
    assert next(answers).json() is None
    assert _refused(next(answers), 401, "general_unauthorized_scope")
    assert _refused(next(answers), 403, "user_email_not_verified")
    assert [next(answers).json() for _ in range(2)] == ["guest", "key"]  # the earlier form
    assert _refused(next(answers), 401, "user_unauthorized")
    assert next(answers).json() == {"note": "n1", "who": people.user.id}
    assert _refused(next(answers), 401, "general_unauthorized_scope")
    assert next(answers).json() == "key"

    record = client.get("/me/record", **session).json()
    assert record["email"] == "ada@example.com"
    assert record["password_hash"] == "" and record["password_history"] == []
    bastion.sync.users.update(people.user.id, verified=True)
    with client:
        verified, identity = (
            client.get("/me/verified", **session),
            client.get("/who/verified", **session),
        )
        assert verified.json() == "ada@example.com" and identity.json() == "session"
        bastion.sync.users.delete(people.user.id)
        gone = client.get("/me/maybe", **session)
        assert _refused(gone, 401, "user_session_invalid")  # its sessions ended with it


def test_fastapi_refusals_render_under_add_middleware(real_redis: str, policy: str) -> None:
    bastion = _bastion(real_redis, policy)
    app = _fastapi_app(bastion)
    app.add_middleware(BastionMiddleware, bastion=bastion)
    with ASGIClient(app) as client:
        assert _refused(client.get("/notes/n1"), 401, "user_unauthorized")


def test_fastapi_openapi_declares_security_and_password_limits(
    real_redis: str, policy: str
) -> None:
    bastion = _bastion(
        real_redis,
        policy,
        cookie_name="__Host-notes",
        session_header="X-Notes-Session",
        password_min_length=12,
        password_max_length=64,
    )
    fast = _fastapi_app(bastion)
    bastion.asgi(fast)
    schema = fast.openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BastionSessionCookie"] == {
        "type": "apiKey", "in": "cookie", "name": "__Host-notes",
        "description": "The session cookie a log-in sets (browsers).",
    }  # fmt: skip
    assert schemes["BastionSessionHeader"]["name"] == "X-Notes-Session"
    assert schemes["BastionJWT"]["scheme"] == "bearer"
    assert schemes["BastionAPIKey"]["name"] == "X-API-Key"
    paths = schema["paths"]

    def security(path: str) -> set[str]:
        return {name for entry in paths[path]["get"].get("security", []) for name in entry}

    users = {"BastionSessionCookie", "BastionSessionHeader", "BastionJWT"}
    assert security("/me") == users
    assert security("/notes/{note}") == users  # no scope: keys are refused
    assert security("/keyed/{note}") == users | {"BastionAPIKey"}
    assert security("/who") == users | {"BastionAPIKey"}
    assert security("/who/verified") == users
    for path, method in (("/account", "post"), ("/account/password", "patch")):
        body = paths[path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["password"]["minLength"] == 12
        assert body["properties"]["password"]["maxLength"] == 64


# -- require without a policy --------------------------------------------------------------


def test_require_without_a_policy_is_a_config_error(real_redis: str) -> None:
    """No policy allows a user anything: a signed-in user meets a precise error, never a 403."""
    bastion = _bastion(real_redis, None)
    people = People(bastion)
    flask_app = _flask_app(bastion)
    flask_app.config["PROPAGATE_EXCEPTIONS"] = True
    fast = bastion.asgi(_fastapi_app(bastion))
    star = bastion.asgi(_starlette_app(bastion))
    loop = asyncio.Runner()  # one for both apps: they share the Bastion's asyncio Redis pool
    for app, path in ((fast, "/keyed/n1"), (star, "/sync/n1")):
        with ASGIClient(app, loop) as client:
            assert _refused(client.get(path), 401, "user_unauthorized")
            assert client.get(path, headers=people.key).status_code == 200
            with pytest.raises(ConfigError, match=r"policy_files=\(\): expected a policy with"):
                client.get(path, headers=people.session)
    loop.close()
    with _flask_client(flask_app) as client:
        assert _refused(client.get("/notes/n1"), 401, "user_unauthorized")
        with pytest.raises(ConfigError, match="use login_required or current_user"):
            client.get("/notes/n1", headers=people.session)


# -- Flask -------------------------------------------------------------------------------------


def _flask_app(bastion: Bastion, **options: Any) -> Flask:
    app = Flask("helpers")
    fl.init_app(app, bastion, **options)

    @app.get("/notes/<note>")
    @fl.require("read", "notes/{note}", scope="notes.read")
    async def note(note: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"note": note, "who": fl.current_identity.identity}

    @app.get("/sync/<note>")
    @fl.require("read", "notes/{note}")
    def sync_note(note: str) -> dict[str, str]:
        return {"note": note, "who": fl.current_identity().identity}

    @app.route("/private", methods=["GET", "OPTIONS"])
    @fl.login_required
    def private() -> dict[str, Any]:
        user = fl.current_user
        return {"method": "GET", "user": user.is_authenticated and user.email}

    @app.get("/async-private")
    @fl.login_required
    async def async_private() -> dict[str, Any]:
        return {"email": fl.current_user.email}

    @app.get("/verified")
    @fl.login_required(verified=True)
    def verified() -> str:
        return "verified"

    @app.get("/whoever")
    def whoever() -> dict[str, Any]:
        user = fl.current_user
        return {
            "authenticated": user.is_authenticated,
            "anonymous": user.is_anonymous,
            "id": user.get_id(),
            "kind": fl.current_identity.kind,
            "repr": repr(user),
        }

    @app.get("/login")
    def login() -> str:
        return "the log-in page"

    return app


@pytest.fixture
def flask_bastion(real_redis: str, policy: str) -> Bastion:
    return _bastion(real_redis, policy)


def _flask_client(app: Flask) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t")


def test_flask_decorators_on_sync_and_async_views(flask_bastion: Bastion) -> None:
    people = People(flask_bastion)
    with _flask_client(_flask_app(flask_bastion)) as client:
        assert _refused(client.get("/notes/n1"), 401, "user_unauthorized")
        mine = client.get("/notes/n1", headers=people.session)
        assert mine.json() == {"note": "n1", "who": people.user.id}  # async view: not a 500
        assert client.get("/notes/n1", headers=people.key).json()["who"].startswith("key:")
        assert client.get("/sync/n1", headers=people.session).json()["note"] == "n1"
        assert _refused(
            client.get("/sync/n1", headers=people.key), 401, "general_unauthorized_scope"
        )
        assert _refused(client.get("/private"), 401, "user_unauthorized")
        assert client.options("/private").json() == {"method": "GET", "user": False}
        assert _refused(
            client.get("/private", headers=people.key), 401, "general_unauthorized_scope"
        )
        assert client.get("/private", headers=people.session).json()["user"] == "ada@example.com"
        assert client.get("/async-private", headers=people.session).json() == {
            "email": "ada@example.com"
        }
        assert _refused(
            client.get("/verified", headers=people.session), 403, "user_email_not_verified"
        )
        flask_bastion.sync.users.update(people.user.id, verified=True)
        assert client.get("/verified", headers=people.session).text == "verified"


def test_flask_current_user_and_identity_proxies(flask_bastion: Bastion) -> None:
    people = People(flask_bastion)
    with _flask_client(_flask_app(flask_bastion)) as client:
        anonymous = {
            "authenticated": False,
            "anonymous": True,
            "id": None,
            "repr": "AnonymousUser()",
        }
        assert client.get("/whoever").json() == {**anonymous, "kind": "guest"}
        user = client.get("/whoever", headers=people.session).json()
        assert user.pop("repr").startswith("SignedInUser(id=")
        assert user == {
            "authenticated": True, "anonymous": False, "id": people.user.id, "kind": "session"
        }  # fmt: skip
        assert client.get("/whoever", headers=people.key).json() == {**anonymous, "kind": "key"}
        # The record a view holds has no password hash (People stored "x"), nor its repr.
        shown = client.get("/whoever", headers=people.session).json()["repr"]
        assert "password_hash" not in shown and "password_history" not in shown


def test_flask_login_view_redirects_browsers_only(flask_bastion: Bastion) -> None:
    app = _flask_app(flask_bastion, login_view="login")
    page = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    with _flask_client(app) as client:
        sent = client.get("/private?tab=2", headers=page)
        assert sent.status_code == 303
        assert sent.headers["location"] == "/login?next=/private?tab%3D2"
        assert client.get("/sync/n1", headers=page).headers["location"] == "/login?next=/sync/n1"
        assert _refused(client.get("/private"), 401, "user_unauthorized")  # curl, fetch: */*
        api = {"Accept": "application/json"}
        assert _refused(client.get("/private", headers=api), 401, "user_unauthorized")
        # A key is no guest: logging in is not its way in.
        key = {**page, **People(flask_bastion).key}
        assert _refused(client.get("/private", headers=key), 401, "general_unauthorized_scope")


# -- CORS preflights through a route map -------------------------------------------------------


ROUTES = [{"method": "GET", "path": "/notes/{note}", "action": "read", "resource": "notes/{note}"}]
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "x-bastion-session"}  # fmt: skip


@pytest.fixture
def mapped(real_redis: str, policy: str) -> Iterator[Bastion]:
    settings = Settings.from_mapping(
        {"redis_url": real_redis, "policy_files": [policy], "routes": ROUTES,
         "unmatched_routes": "deny"}
    )  # fmt: skip
    yield Bastion(settings)


async def _note(request: Request) -> JSONResponse:
    return JSONResponse({"note": request.path_params["note"], "who": request.user.kind})


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"who": request.user.kind})


def _cors_app(framework: str, bastion: Bastion) -> Any:
    if framework == "flask":
        from flask_cors import CORS

        app = Flask("cors")
        fl.init_app(app, bastion)
        CORS(app, origins=[ORIGIN], allow_headers=["X-Bastion-Session"])
        app.add_url_rule("/notes/<note>", "note", lambda note: {"note": note})
        app.add_url_rule(
            "/echo", "echo", lambda: {"who": fl.current_identity.kind}, methods=["OPTIONS"],
            provide_automatic_options=False,
        )  # fmt: skip
        return app
    cors = Middleware(
        CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["GET"],
        allow_headers=["X-Bastion-Session"],
    )  # fmt: skip
    if framework == "fastapi":
        fast = FastAPI(middleware=[cors])
        fast.add_api_route("/notes/{note}", _note)
        fast.add_route("/echo", _echo, methods=["OPTIONS"])
        return bastion.asgi(fast)
    return bastion.asgi(
        Starlette(
            routes=[Route("/notes/{note}", _note), Route("/echo", _echo, methods=["OPTIONS"])],
            middleware=[cors],
        )
    )


@pytest.mark.parametrize("framework", ["starlette", "fastapi", "flask"])
def test_cors_preflight_passes_the_route_map(framework: str, mapped: Bastion) -> None:
    token = {"X-Bastion-Session": mapped.sync.sessions.create("alice").token}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("OPTIONS", "/notes/n1", {"headers": PREFLIGHT}),
        ("GET", "/notes/n1", {"headers": {"Origin": ORIGIN}}),
        ("GET", "/notes/n1", {"headers": {"Origin": ORIGIN, **token}}),
        ("OPTIONS", "/notes/n1", {"headers": {"Origin": ORIGIN}}),  # no preflight: judged
        # A preflight claiming a credential reaches an app route as a guest.
        ("OPTIONS", "/echo", {"headers": {"Access-Control-Request-Method": "GET", **token}}),
    ]
    if framework == "flask":
        with _flask_client(_cors_app(framework, mapped)) as client:
            answers = [client.request(m, p, **kw) for m, p, kw in requests]
    else:
        with ASGIClient(_cors_app(framework, mapped)) as asgi:
            answers = [asgi.request(m, p, **kw) for m, p, kw in requests]
    preflight, guest, alice, options, echo = answers
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-bastion-session" in preflight.headers["access-control-allow-headers"].lower()
    assert _refused(guest, 401, "user_unauthorized")
    assert alice.status_code == 200 and alice.headers["access-control-allow-origin"] == ORIGIN
    assert _refused(options, 401, "user_unauthorized")
    assert echo.json() == {"who": "guest"}


# -- the README's examples ---------------------------------------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
FRAMEWORKS = ["starlette", "fastapi", "flask"]


def _readme_blocks(section: str) -> list[str]:
    part = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in part.split("```python\n")[1:]]


def _run_block(block: str, url: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(block.replace("redis://127.0.0.1:6379/0", url), "README.md", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_readme_use_it_examples_run(
    framework: str, real_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _readme_blocks("Use it")[: len(FRAMEWORKS)]  # then the closing examples
    assert [b.splitlines()[0] for b in blocks] == ["# app.py"] * len(FRAMEWORKS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_REDIS_URL", real_redis)  # the apps read Settings.load(...)
    (tmp_path / "policy.csv").write_text(NOTES)
    (tmp_path / "bastion.toml").write_text(
        'policy_files = ["policy.csv"]\nunmatched_routes = "allow"\n'
    )
    namespace = _run_block(blocks[FRAMEWORKS.index(framework)], real_redis)
    bastion, app = namespace["bastion"], namespace["app"]
    people = People(bastion)
    page = {"Accept": "text/html,*/*;q=0.8"}
    client: Any = _flask_client(app) if framework == "flask" else ASGIClient(app)
    with client:
        signed_up = client.post(
            "/account", json={"email": "bob@example.com", "password": "correct horse battery"}
        )
        assert signed_up.status_code == 201, signed_up.text
        assert _refused(client.get("/notes/n1"), 401, "user_unauthorized")
        assert client.get("/notes/n1", headers=people.session).json()["note"] == "n1"
        assert client.get("/notes/n1", headers=people.key).status_code == 200
        assert _refused(
            client.get("/notes/n1", headers=people.other_key), 401, "general_unauthorized_scope"
        )
        assert client.get("/me", headers=people.session).json() == {"email": "ada@example.com"}
        assert _refused(client.get("/me", headers=people.key), 401, "general_unauthorized_scope")
        if framework == "flask":
            assert client.get("/me", headers=page).headers["location"] == "/login?next=/me"
        else:
            assert _refused(client.get("/me"), 401, "user_unauthorized")
        if framework == "fastapi":
            assert client.get("/").json() == {"user": None}
            assert _refused(
                client.get("/me/verified", headers=people.session), 403, "user_email_not_verified"
            )
        if framework == "starlette":
            assert client.get("/", headers=people.session).json()["user"] == people.user.id
            start, _ = client.websocket("/notes/n1/feed")
            assert start["status"] == 401
            accepted = client.websocket("/notes/n1/feed", people.session)
            assert json.loads(accepted[1]["text"]) == {"note": "n1"}
