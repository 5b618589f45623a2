"""Scoped API keys: format, storage, scopes, expiry, precedence and the CLI."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters.starlette import exception_handlers
from bastion.cli import main
from tests.conftest import demo_app

pytestmark = pytest.mark.anyio
COOKIE = "__Host-bastion_session"


def _client(bastion: Bastion) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://t")


def _raw_key(bastion: Bastion, key_id: str) -> str:
    return f"bastion:apikey:{{{key_id}}}"


async def test_key_format_and_storage(bastion: Bastion) -> None:
    new = await bastion.api_keys.create("ci", ["documents.read", "files.write"])
    prefix, key_id, secret = new.key.split("_", 2)
    assert prefix == "bst" and key_id == new.info.id and len(secret) == 43
    raw = bastion.sync.redis
    stored = raw.hgetall(_raw_key(bastion, key_id))
    assert secret.encode() not in b"".join(k + v for k, v in stored.items())
    listed = await bastion.api_keys.list()
    assert [k.to_dict()["scopes"] for k in listed] == [["documents.read", "files.write"]]
    assert secret not in json.dumps([k.to_dict() for k in listed])


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_key_with_the_scope_passes(bastion: Bastion, header: str) -> None:
    new = await bastion.api_keys.create("ci", ["documents.read"])
    value = new.key if header == "x-api-key" else f"Bearer {new.key}"
    async with _client(bastion) as client:
        response = await client.get("/documents", headers={header: value})
        assert response.json() == {"who": f"key:{new.info.id}", "kind": "key"}
        me = (await client.get("/me", headers={header: value})).json()
        assert me["roles"] == [] and me["session"] is None
        assert me["scopes"] == ["key", "documents.read"]  # a key is no signed-in user


async def test_missing_scope_names_the_scope(bastion: Bastion) -> None:
    new = await bastion.api_keys.create("ci", ["files.read"])
    async with _client(bastion) as client:
        response = await client.get("/documents", headers={"X-API-Key": new.key})
        assert response.status_code == 401
        body = response.json()
        assert body["type"] == "general_unauthorized_scope"
        assert "documents.read" in body["message"]


async def test_each_bad_key_gets_its_error(bastion: Bastion) -> None:
    good = await bastion.api_keys.create("a", ["documents.read"])
    other = await bastion.api_keys.create("b", ["documents.read"])
    _, key_id, secret = good.key.split("_", 2)
    _, other_id, other_secret = other.key.split("_", 2)
    revoked = await bastion.api_keys.create("c", ["documents.read"])
    assert await bastion.api_keys.revoke(revoked.info.id)
    expired = await bastion.api_keys.create("d", ["documents.read"], expires_in=3600)
    bastion.sync.redis.hset(_raw_key(bastion, expired.info.id), "x", int(time.time() * 1000) - 1)
    cases = {
        f"bst_{key_id}_{other_secret}": "api_key_invalid",  # wrong secret, right id
        f"bst_{other_id}_{secret}": "api_key_invalid",  # right secret, wrong id
        f"bst_{'0' * 16}_{secret}": "api_key_invalid",  # unknown id
        revoked.key: "api_key_invalid",
        expired.key: "api_key_expired",
        "bst_": "api_key_invalid",
        f"bst_{key_id}": "api_key_invalid",
        f"bst_{key_id.upper()}_{secret}": "api_key_invalid",
        f"bst_{key_id}_{secret}x": "api_key_invalid",
        f"bst_{key_id}_{secret[:-1]}!": "api_key_invalid",
        "bst_" + "a" * 5000: "api_key_invalid",
    }
    async with _client(bastion) as client:
        for key, error in cases.items():
            response = await client.get("/documents", headers={"X-API-Key": key})
            assert response.status_code == 401, key
            assert response.json()["type"] == error, key
        for raw in (b"bst_\xff\xfe", b""):
            response = await client.get("/documents", headers=[(b"x-api-key", raw)])
            assert response.status_code == 401
        assert (await client.get("/documents", headers={"X-API-Key": good.key})).status_code == 200


async def test_last_used_is_written_at_most_once_a_minute(bastion: Bastion) -> None:
    new = await bastion.api_keys.create("ci", ["documents.read"])
    raw = bastion.sync.redis
    key = _raw_key(bastion, new.info.id)
    assert raw.hget(key, "u") == b"0"
    first = await bastion.api_keys.authenticate(new.key)
    used = raw.hget(key, "u")
    assert int(used) > 0 and first.last_used_ms == int(used)
    for _ in range(5):
        await bastion.api_keys.authenticate(new.key)
    assert raw.hget(key, "u") == used
    raw.hset(key, "u", int(used) - 61_000)
    await bastion.api_keys.authenticate(new.key)
    assert int(raw.hget(key, "u")) >= int(used)


async def test_a_key_is_not_a_session(bastion: Bastion) -> None:
    new = await bastion.api_keys.create("ci", ["documents.read"])
    session = (await bastion.sessions.create("alice")).token
    async with _client(bastion) as client:
        jwt = await client.post("/jwt", headers={"X-API-Key": new.key})
        assert jwt.status_code == 403 and jwt.json()["type"] == "user_jwt_creation_denied"
        for extra in (
            {"cookie": f"{COOKIE}={session}"},
            {"X-Bastion-Session": session},
            {"Authorization": "Bearer some.jwt.value"},
        ):
            both = await client.get("/documents", headers={"X-API-Key": new.key, **extra})
            assert both.status_code == 403
            assert both.json()["type"] == "user_api_key_and_session_set"
        mismatch = await client.get(
            "/documents", headers={"X-API-Key": new.key, "Authorization": "Bearer bst_x_y"}
        )
        assert mismatch.status_code == 401


def test_create_validates_input(bastion: Bastion) -> None:
    with pytest.raises(ValueError, match="scope"):
        bastion.sync.api_keys.create("ci", ["Documents.Read"])
    with pytest.raises(ValueError, match=r"1\.\.100 scopes"):
        bastion.sync.api_keys.create("ci", [])
    with pytest.raises(ValueError, match="name"):
        bastion.sync.api_keys.create("", ["documents.read"])
    with pytest.raises(ValueError, match="60 seconds"):
        bastion.sync.api_keys.create("ci", ["documents.read"], expires_in=5)
    assert bastion.sync.api_keys.revoke("../etc") is False


def test_cli_keys(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["keys", "create", "--name", "ci", "--scope", "documents.read", "--scope",
              "files.read", "--expire", "30d", "--redis-url", real_redis])
        == 0
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    key = out[-1]
    assert key.startswith("bst_")
    store = Bastion(Settings(redis_url=real_redis)).sync.api_keys
    info = store.authenticate(key)
    assert info.scopes == {"documents.read", "files.read"}
    assert info.expires_ms is not None
    assert 29.9 * 86400_000 < info.expires_ms - time.time() * 1000 <= 30 * 86400_000

    assert main(["keys", "list", "--redis-url", real_redis]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["id"] for k in listed] == [info.id]
    assert key.split("_", 2)[2] not in json.dumps(listed)

    assert main(["keys", "revoke", info.id, "--redis-url", real_redis]) == 0
    assert main(["keys", "revoke", info.id, "--redis-url", real_redis]) == 1
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--scope", "a", "--expire", "soon"])
    assert main(["keys", "create", "--name", "x", "--scope", "BAD", "--redis-url", real_redis]) == 2


RESERVED = ["authenticated", "session", "jwt", "key", "guest"]


@pytest.mark.parametrize("scope", RESERVED)
async def test_reserved_scopes_are_refused_at_creation(bastion: Bastion, scope: str) -> None:
    with pytest.raises(ValueError, match=f"scope '{scope}' is reserved"):
        await bastion.api_keys.create("ci", ["documents.read", scope])
    with pytest.raises(ValueError, match="reserved"):
        bastion.sync.api_keys.create("ci", [scope])
    assert await bastion.api_keys.list() == []


def test_cli_refuses_a_reserved_scope(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    for scope in RESERVED:
        argv = ["keys", "create", "--name", "x", "--scope", scope, "--redis-url", real_redis]
        assert main(argv) == 2
        assert f"scope '{scope}' is reserved" in capsys.readouterr().err
    assert Bastion(Settings(redis_url=real_redis)).sync.api_keys.list() == []


def _requires_app(bastion: Bastion) -> Any:
    """Views guarded by Starlette's own ``requires``, as an app would write them."""

    def view(scope: str) -> Any:
        @requires(scope, status_code=403)
        async def guarded(request: Request) -> Response:
            return JSONResponse({"ok": scope, "user": request.user.is_authenticated})

        return guarded

    routes = [Route(f"/{s}", view(s)) for s in [*RESERVED, "documents.read"]]
    return bastion.asgi(Starlette(routes=routes, exception_handlers=exception_handlers))


async def test_a_key_passes_only_its_own_scopes_in_requires(bastion: Bastion) -> None:
    new = await bastion.api_keys.create("ci", ["documents.read"])
    # A key stored before reserved names were refused: its reserved scope is ignored.
    old = await bastion.api_keys.create("old", ["documents.read"])
    bastion.sync.redis.hset(
        _raw_key(bastion, old.info.id), "s", "authenticated documents.read jwt session"
    )
    session = (await bastion.sessions.create("alice")).token
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(_requires_app(bastion)), base_url="https://t"
    ) as client:
        for key in (new.key, old.key):
            allowed = await client.get("/documents.read", headers={"X-API-Key": key})
            assert allowed.json() == {"ok": "documents.read", "user": False}
            assert (await client.get("/key", headers={"X-API-Key": key})).status_code == 200
            for scope in ("authenticated", "session", "jwt", "guest"):
                refused = await client.get(f"/{scope}", headers={"X-API-Key": key})
                assert refused.status_code == 403, (key == old.key, scope)
        as_user = {"X-Bastion-Session": session}
        user = await client.get("/authenticated", headers=as_user)
        assert user.json() == {"ok": "authenticated", "user": True}
        assert (await client.get("/session", headers=as_user)).status_code == 200
        assert (await client.get("/key", headers=as_user)).status_code == 403
