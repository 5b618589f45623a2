"""Credential kinds of the app's own, registered from outside the package: the issue's toy
HMAC-signed header (a user kind) and a scoped service token, on Starlette, FastAPI and Flask;
and the registry's rules (transport order, one kind per request) for every kind."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion import Bastion, ConfigError, Identity, Settings
from bastion.adapters import fastapi as fa
from bastion.adapters import flask as fl
from bastion.credentials import (
    Authorization,
    Cookie,
    CredentialBackend,
    CredentialRegistry,
    CredentialRequest,
    Header,
)
from bastion.errors import Forbidden
from tests.test_readme import blocks_tested_by

# -- the toy kind the issue asks for: written here, outside the package, in under 40 lines ------


class SignedUser(CredentialBackend):
    """``X-Signed-User: <user id>.<hex HMAC-SHA256 of the id>``: a user, judged by roles."""

    name = "signed"
    transports = (Header("X-Signed-User", description="A user id signed with a shared key."),)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def sign(self, user_id: str) -> str:
        return f"{user_id}.{hmac.new(self.key, user_id.encode(), hashlib.sha256).hexdigest()}"

    def authenticate_sync(self, token: str, request: CredentialRequest) -> Identity | None:
        user_id = token.rpartition(".")[0]
        if user_id and hmac.compare_digest(token, self.sign(user_id)):
            return self.user(user_id)
        return None


def test_the_toy_kind_takes_under_40_lines() -> None:
    lines, _ = inspect.getsourcelines(SignedUser)
    assert len(lines) < 40, len(lines)


class ServiceToken(CredentialBackend):
    """``Authorization: Service <token>``: a scoped caller, judged by scopes like an API key;
    async only (its check could await a database)."""

    name = "service"
    scoped = True
    transports = (Authorization("Service"),)

    async def authenticate(self, token: str, request: CredentialRequest) -> Identity | None:
        await asyncio.sleep(0)
        return self.key("ci", ["notes.read"]) if token == "let-me-in" else None


KEY = b"k" * 32
SIGNED = SignedUser(KEY)
POLICY = "p, user:ada, notes/*, read\n"  # ada may read notes, bob may not
ROUTES = [
    {"method": "GET", "path": "/notes/{note}", "action": "read", "resource": "notes/{note}",
     "scope": "notes.read"},
    {"method": "GET", "path": "/drafts/{note}", "action": "read", "resource": "drafts/{note}"},
]  # fmt: skip
FRAMEWORKS = ["starlette", "fastapi", "flask"]
Caller = Annotated[Identity, Depends(fa.current_identity())]


def _bastion(url: str, tmp_path: Path, *kinds: CredentialBackend) -> Bastion:
    policy = tmp_path / "policy.csv"
    policy.write_text(POLICY)
    settings = Settings.from_mapping(
        {
            "redis_url": url,
            "policy_files": (str(policy),),
            "routes": ROUTES,
            "unmatched_routes": "authenticated",
            "policy_reload_interval": 0,
            "jwt_secret": "j" * 40,
        }
    )
    return Bastion(settings, credentials=kinds or [SIGNED])


def _who(identity: Identity) -> dict[str, Any]:
    return {"who": identity.identity, "kind": identity.kind, "user": identity.is_authenticated}


def _app(framework: str, bastion: Bastion) -> Any:
    if framework == "starlette":

        async def who(request: Request) -> JSONResponse:
            return JSONResponse(_who(request.user))

        paths = ["/notes/{note}", "/drafts/{note}", "/me"]
        return bastion.asgi(Starlette(routes=[Route(path, who) for path in paths]))
    if framework == "fastapi":
        api = FastAPI()

        @api.get("/notes/{note}")
        async def note(note: str, identity: Caller) -> Any:
            return _who(identity)

        @api.get("/drafts/{note}")
        async def draft(
            note: str, identity: Annotated[Identity, Depends(fa.require("read", "drafts/{note}"))]
        ) -> Any:
            return _who(identity)

        @api.get("/me")
        async def me(identity: Caller) -> Any:
            return _who(identity)

        return bastion.asgi(api)
    app = Flask("kinds")
    fl.init_app(app, bastion, account=False)

    @app.get("/notes/<note>")
    @app.get("/drafts/<note>")
    def flask_note(note: str) -> Any:
        return _who(fl.current_identity())

    @app.get("/me")
    @fl.login_required
    def flask_me() -> Any:
        return _who(fl.current_identity())

    return app


class Client:
    """Requests to an ASGI app on one event loop, or to a WSGI app."""

    def __init__(self, framework: str, app: Any) -> None:
        self.loop = asyncio.Runner()
        self.wsgi = framework == "flask"
        transport: Any = httpx.WSGITransport(app) if self.wsgi else httpx.ASGITransport(app)
        self.client: Any = (httpx.Client if self.wsgi else httpx.AsyncClient)(
            transport=transport, base_url="https://t"
        )

    def get(self, path: str, headers: dict[str, Any] | None = None) -> httpx.Response:
        answer = self.client.get(path, headers=headers)
        return answer if self.wsgi else self.loop.run(answer)

    def close(self) -> None:
        if self.wsgi:
            self.client.close()
        else:
            self.loop.run(self.client.aclose())
        self.loop.close()


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(framework: str, real_redis: str, tmp_path: Path) -> Iterator[tuple[Bastion, Client]]:
    bastion = _bastion(real_redis, tmp_path)
    client = Client(framework, _app(framework, bastion))
    yield bastion, client
    client.close()


def _error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == kind and body["code"] == status and body["message"]


def test_a_signed_user_is_a_user_the_policy_judges(served: tuple[Bastion, Client]) -> None:
    _, client = served
    ada = {"X-Signed-User": SIGNED.sign("ada")}
    bob = {"X-Signed-User": SIGNED.sign("bob")}
    mine = client.get("/notes/n1", ada)
    assert mine.status_code == 200, mine.text
    assert mine.json() == {"who": "ada", "kind": "signed", "user": True}
    assert client.get("/me", ada).json()["who"] == "ada"  # login_required / a user dependency
    _error(client.get("/notes/n1", bob), 403, "general_access_forbidden")  # the policy says no
    _error(client.get("/drafts/d1", ada), 403, "general_access_forbidden")  # no line for drafts
    _error(client.get("/notes/n1"), 401, "user_unauthorized")  # a guest


def test_a_bad_signature_is_a_401(served: tuple[Bastion, Client]) -> None:
    _, client = served
    forged = SignedUser(b"another key").sign("ada")
    tokens: list[Any] = [forged, "ada", "ada." + "0" * 64, SIGNED.sign("ada") + "0"]
    if not client.wsgi:  # httpx's WSGI transport sends ASCII only
        tokens.append("é".encode())
    for token in tokens:
        _error(client.get("/notes/n1", {"X-Signed-User": token}), 401, "user_credential_invalid")


def test_a_signed_user_beside_another_credential_is_refused(
    served: tuple[Bastion, Client],
) -> None:
    bastion, client = served
    ada = {"X-Signed-User": SIGNED.sign("ada")}
    session = bastion.sync.sessions.create("ada").token
    key = bastion.sync.api_keys.create("ci", ["notes.read"]).key
    for other in (
        {"Cookie": f"{bastion.settings.cookie_name}={session}"},
        {bastion.settings.session_header: session},
        {"Authorization": f"Bearer {key}"},
        {"X-API-Key": key},
    ):
        _error(client.get("/notes/n1", {**ada, **other}), 403, "user_credentials_conflict")
        assert client.get("/notes/n1", other).status_code == 200  # each alone is fine


def test_a_scoped_kind_is_judged_like_an_api_key(
    framework: str, real_redis: str, tmp_path: Path
) -> None:
    bastion = _bastion(real_redis, tmp_path, SIGNED, ServiceToken())
    if framework == "flask":  # async only: a WSGI app cannot use it, and is told at start-up
        with pytest.raises(ConfigError, match=r"credentials=.service.*authenticate_sync"):
            _app(framework, bastion)
        return
    client = Client(framework, _app(framework, bastion))
    try:
        service = {"Authorization": "Service let-me-in"}
        assert client.get("/notes/n1", service).json() == {
            "who": "key:ci", "kind": "service", "user": False
        }  # fmt: skip
        _error(client.get("/drafts/d1", service), 401, "general_unauthorized_scope")
        _error(client.get("/me", service), 401, "general_unauthorized_scope")
        _error(
            client.get("/notes/n1", {"Authorization": "Service no"}), 401, "user_credential_invalid"
        )
        both = {**service, "X-Signed-User": SIGNED.sign("ada")}
        _error(client.get("/notes/n1", both), 403, "user_credentials_conflict")
        assert client.get("/notes/n1", {"Authorization": "Basic eDp5"}).status_code == 401
    finally:
        client.close()


def test_fastapi_documents_the_registered_kinds(real_redis: str, tmp_path: Path) -> None:
    bastion = _bastion(real_redis, tmp_path, SIGNED, ServiceToken())
    api = FastAPI()

    @api.get("/users-only")
    async def users_only(
        identity: Annotated[Identity, Depends(fa.current_identity(verified=True))],
    ) -> str:
        return identity.kind

    @api.get("/anyone")
    async def anyone(identity: Annotated[Identity, Depends(fa.current_identity())]) -> str:
        return identity.kind

    bastion.asgi(api)
    schema = api.openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["signed"] == {
        "type": "apiKey", "in": "header", "name": "X-Signed-User",
        "description": "A user id signed with a shared key.",
    }  # fmt: skip
    assert schemes["service"] == {"type": "http", "scheme": "service"}
    assert schemes["BastionSessionCookie"]["name"] == bastion.settings.cookie_name
    assert schemes["BastionJWT"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A JWT minted from a session (POST /account/jwts).",
    }  # fmt: skip

    def security(path: str) -> list[str]:
        return [name for entry in schema["paths"][path]["get"]["security"] for name in entry]

    users = ["BastionSessionCookie", "BastionSessionHeader", "BastionJWT", "signed"]
    assert security("/users-only") == users
    assert security("/anyone") == [*users, "BastionAPIKey", "service"]
    assert api.openapi() is schema and security("/anyone")[-1] == "service"  # stable


# -- the registry's rules ----------------------------------------------------------------------


def _registry(*kinds: CredentialBackend) -> CredentialRegistry:
    return Bastion(Settings(), credentials=kinds).credentials


def test_one_kind_per_request_and_each_kinds_transport_order() -> None:
    registry = _registry(SIGNED)
    cookie = (b"cookie", b"a=1; __Host-bastion_session=s.1.x; b=2")
    header = (b"x-bastion-session", b"s.2.y")
    found = registry.read([cookie, header])  # the cookie wins over the fallback header
    assert (found.kind, found.token, found.transport) == (
        "session", "s.1.x", registry["session"].transports[0]
    )  # fmt: skip
    assert registry.read([header]).token == "s.2.y"
    assert (
        registry.read([(b"x-api-key", b"bst_a"), (b"authorization", b"Bearer bst_b")]).problem
        == "malformed"
    )
    same = registry.read([(b"x-api-key", b"bst_a"), (b"authorization", b"Bearer bst_a")])
    assert (same.kind, same.token) == ("key", "bst_a")
    assert registry.read([(b"authorization", b"Bearer e.y.j")]).kind == "jwt"
    conflicts = {
        (b"authorization", b"Bearer e.y.j"): "jwt",
        (b"x-api-key", b"bst_a"): "key",
        (b"x-signed-user", b"ada.00"): "signed",
    }
    for extra, named in conflicts.items():  # the kind registered last names the conflict
        found = registry.read([cookie, extra])
        assert (found.problem, found.kind, found.token) == ("conflict", named, None)
    two = registry.read([(b"x-signed-user", b"ada.00"), (b"x-signed-user", b"bob.00")])
    assert (two.kind, two.problem) == ("signed", "malformed")
    assert registry.read([(b"authorization", b"Basic eDp5")]).kind is None


def test_kinds_that_cannot_be_registered() -> None:
    class Nameless(SignedUser):
        name = ""

    class Twin(SignedUser):
        name = "twin"

    class Silent(CredentialBackend):
        name = "silent"
        transports = (Header("X-Silent"),)

    class Bare(CredentialBackend):
        name = "bare"

        def authenticate_sync(self, token: str, request: CredentialRequest) -> Identity | None:
            return None

    class SessionAgain(SignedUser):
        name = "session2"
        transports = (Cookie("__Host-bastion_session"),)

    with pytest.raises(ValueError, match="backend name ''"):
        _registry(Nameless(KEY))
    with pytest.raises(ValueError, match="'signed' is registered already"):
        _registry(SIGNED, SignedUser(KEY))
    with pytest.raises(ValueError, match="'signed' and 'twin' both read Header"):
        _registry(SIGNED, Twin(KEY))
    with pytest.raises(TypeError, match="neither authenticate nor authenticate_sync"):
        _registry(Silent())
    with pytest.raises(TypeError, match="needs transports"):
        _registry(Bare())
    with pytest.raises(ValueError, match="'session' and 'session2' both read Cookie"):
        _registry(SessionAgain(KEY))
    with pytest.raises(TypeError, match="no CredentialBackend"):
        _registry(object())  # type: ignore[arg-type]


def test_a_backend_that_returns_a_wrong_identity_is_a_bug_not_a_user(real_redis: str) -> None:
    class Liar(SignedUser):
        name = "liar"
        transports = (Header("X-Liar"),)

        def authenticate_sync(self, token: str, request: CredentialRequest) -> Identity | None:
            return Identity.for_user_id("session", token)  # another kind's identity

    bastion = Bastion(Settings(redis_url=real_redis), credentials=[Liar(KEY)])
    with pytest.raises(TypeError, match=r"built with self\.user"):
        bastion._sync_runner.run(bastion._admit("GET", "https", "/", [(b"x-liar", b"ada")]))


def test_a_custom_kind_reads_a_documents_own_rows(real_redis: str, tmp_path: Path) -> None:
    """Where a document's own rows count, they are read beside the kind's check (both runners)."""
    doc = "/databases/main/collections/notes/documents/{doc}"
    settings = Settings.from_mapping(
        {
            "redis_url": real_redis,
            "policy_files": (str(tmp_path / "policy.csv"),),
            "routes": [{"method": "GET", "path": doc, "action": "read", "resource": doc[1:]}],
            "resources": [{"path": "databases/main/collections/notes", "document_security": True}],
            "policy_reload_interval": 0,
        }
    )
    (tmp_path / "policy.csv").write_text("p, user:nobody, databases/x, read\n")
    bastion = Bastion(settings, credentials=[SIGNED])
    bastion.sync.permissions.grant(
        "databases/main/collections/notes/documents/d1", "user:ada", "read"
    )

    def admit(user: str, path: str) -> Any:
        headers = [(b"x-signed-user", SIGNED.sign(user).encode())]
        return bastion._admit("GET", "https", path, headers)

    path = "/databases/main/collections/notes/documents/d1"
    identity, _ = bastion._sync_runner.run(admit("ada", path))
    assert (identity.kind, identity.user_id) == ("signed", "ada")
    with pytest.raises(Forbidden):
        bastion._sync_runner.run(admit("bob", path))

    async def on_asyncio() -> Identity:
        try:
            return (await bastion._runner.run(admit("ada", path)))[0]
        finally:
            await bastion.aclose()

    assert asyncio.run(on_asyncio()).user_id == "ada"


# -- the README's section ----------------------------------------------------------------------


def test_readme_own_credential_kind_runs_as_printed(real_redis: str, tmp_path: Path) -> None:
    blocks = blocks_tested_by(
        "tests/test_credential_backends.py::test_readme_own_credential_kind_runs_as_printed"
    )
    assert len(blocks) == 1
    (tmp_path / "app.py").write_text(blocks[0])
    probe = textwrap.dedent(
        """
        import asyncio, httpx
        from app import app, signed

        async def main():
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
                ok = await client.get("/me", headers={"X-Signed-User": signed.sign("ada")})
                bad = await client.get("/me", headers={"X-Signed-User": "ada.00"})
                guest = await client.get("/me")
                docs = await client.get("/openapi.json")
            print(ok.status_code, ok.json(), bad.status_code, bad.json()["type"])
            print(guest.status_code, sorted(docs.json()["components"]["securitySchemes"]))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "BASTION_REDIS_URL": real_redis, "GATEWAY_KEY": "a-long-shared-secret"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "200 {'user': 'ada', 'kind': 'signed'} 401 user_credential_invalid"
    assert second.startswith("401 [") and "'signed'" in second
