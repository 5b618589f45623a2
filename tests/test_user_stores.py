"""User stores of the app's own: the protocol, the SQLAlchemy store, the account contract on each.

Sessions, rate limits and roles stay in a real redis-server; user records go to SQLite (the
async SQLAlchemy store on aiosqlite for Starlette and FastAPI, the sync one for Flask) or to a
dict behind a few lines of plain async Python.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters import starlette as starlette_adapter
from bastion.errors import ConfigError, ServiceUnavailable, UserAlreadyExists
from bastion.sessions import keys
from bastion.users import (
    RedisUserStore,
    SyncRedisUserStore,
    SyncUserStore,
    User,
    UserStore,
    UserStoreMismatch,
)
from bastion.users.protocol import user_stores
from bastion.users.sqlalchemy import SQLAlchemyUserStore, SyncSQLAlchemyUserStore, UserTable
from tests.test_account_contract import FRAMEWORKS, PASSWORD, Client, clients, log_in, sign_up
from tests.test_readme import blocks_tested_by


class Base(DeclarativeBase):
    pass


class UserRecord(UserTable, Base):
    """The app's own user table: Bastion's columns in the app's metadata."""

    __tablename__ = "users"


class DictStore:
    """A UserStore in plain async Python: the whole protocol in a few lines."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.calls = 0

    async def get(self, user_id: str) -> User | None:
        self.calls += 1
        return self.users.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        self.calls += 1
        return next((u for u in self.users.values() if u.email == email), None)

    async def create(self, user: User) -> User:
        self.calls += 1
        if any(u.email == user.email for u in self.users.values()):
            raise UserAlreadyExists()
        self.users[user.id] = user
        return user

    async def update(self, user_id: str, **changes: Any) -> User | None:
        self.calls += 1
        if user_id not in self.users:
            return None
        given = {k: v for k, v in changes.items() if v is not None}
        self.users[user_id] = dataclasses.replace(self.users[user_id], **given)
        return self.users[user_id]

    async def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> None:
        self.calls += 1
        if user_id in self.users:
            self.users[user_id] = dataclasses.replace(
                self.users[user_id], password_hash=password_hash, password_history=history
            )

    async def delete(self, user_id: str) -> bool:
        self.calls += 1
        return self.users.pop(user_id, None) is not None


def _sqlite(path: Path) -> Engine:
    """A SQLite file with the app's tables (made by the sync engine: no event loop needed)."""
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    return engine


def _counting(engine: Engine) -> list[str]:
    """Every SQL statement the engine runs, from now on."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


# -- the store contract, on every implementation ------------------------------------------------


@pytest.fixture(params=["dict", "sqlalchemy-async", "sqlalchemy-sync", "redis-async", "redis-sync"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    if kind == "dict":
        yield DictStore()
    elif kind == "sqlalchemy-async":
        _sqlite(tmp_path / "users.db").dispose()
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
        yield SQLAlchemyUserStore(engine, UserRecord)
        asyncio.run(engine.dispose())
    elif kind == "sqlalchemy-sync":
        engine = _sqlite(tmp_path / "users.db")
        yield SyncSQLAlchemyUserStore(sessionmaker(engine), UserRecord)
        engine.dispose()
    else:
        url = request.getfixturevalue("real_redis")
        bastion = Bastion(Settings(redis_url=url))
        if kind == "redis-async":
            yield RedisUserStore(bastion._user_roles, bastion._runner)
        else:
            yield SyncRedisUserStore(bastion._user_roles, bastion._sync_runner)
        bastion.close()


def test_every_store_keeps_the_contract(store: Any) -> None:
    keeps_the_contract(store)


def keeps_the_contract(store: Any) -> None:
    """Run the UserStore contract (README, bastion.users.protocol) on ``store``."""
    twins = user_stores(store)
    assert isinstance(store, UserStore if twins.async_store is not None else SyncUserStore)

    async def call(method: str, *args: Any, **kwargs: Any) -> Any:
        return await twins.acall(method, args, kwargs)

    async def contract() -> None:
        ada = User("u1", "ada@example.com", "Ada L", password_hash="h1", created_ms=5)
        assert await call("create", ada) == ada
        assert await call("get", "u1") == ada
        assert await call("get_by_email", "ada@example.com") == ada
        assert await call("get", "nobody") is None
        assert await call("get_by_email", "nobody@example.com") is None
        with pytest.raises(UserAlreadyExists):
            await call("create", User("u2", "ada@example.com", password_hash="h2"))
        assert await call("get", "u2") is None

        updated = await call(
            "update", "u1", verified=True, labels=("vip",), teams={"t1": ("owner",)}
        )
        assert updated == dataclasses.replace(
            ada, verified=True, labels=("vip",), teams={"t1": ("owner",)}
        )
        kept = await call("update", "u1", verified=False)
        assert kept.labels == ("vip",) and not kept.verified  # None leaves a field as it is
        assert await call("update", "nobody", verified=True) is None

        await call("set_password", "u1", "h3", ("h1", "h3"))
        found = await call("get", "u1")
        assert found.password_hash == "h3" and found.password_history == ("h1", "h3")
        await call("set_password", "nobody", "h", ())  # a missing user: nothing, no error

        assert await call("delete", "u1") is True
        assert await call("delete", "u1") is False  # idempotent
        assert await call("get", "u1") is None
        # The email is free again.
        await call("create", User("u3", "ada@example.com", password_hash="h"))

    asyncio.run(contract())


# -- the account contract on each framework, records in SQLite ---------------------------------


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class SQLApp:
    """A Bastion whose users live in SQLite, and clients of the framework's account routes."""

    def __init__(self, framework: str, url: str, path: Path, make: Callable[[Bastion], Client]):
        self.framework = framework
        self.path = path
        self.engine = _sqlite(path)
        if framework == "flask":
            self.statements = _counting(self.engine)
            store: Any = SyncSQLAlchemyUserStore(self.engine, UserRecord)
            self.async_engine = None
        else:
            self.async_engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
            self.statements = _counting(self.async_engine.sync_engine)
            store = SQLAlchemyUserStore(self.async_engine, UserRecord)
        settings = Settings(redis_url=url, password_history=3)
        self.bastion = Bastion(settings, users=store)
        self.client = make(self.bastion)

    def admin(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``bastion.sync.users.METHOD`` on Flask, ``await bastion.users.METHOD`` elsewhere."""
        if self.framework == "flask":
            return getattr(self.bastion.sync.users, method)(*args, **kwargs)
        return self.client.loop.run(getattr(self.bastion.users, method)(*args, **kwargs))

    def row(self, user_id: str) -> sqlite3.Row | None:
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            found: sqlite3.Row | None = db.execute(
                "SELECT * FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            return found

    def close(self) -> None:
        if self.async_engine is not None:
            self.client.loop.run(self.async_engine.dispose())
        self.engine.dispose()


@pytest.fixture
def app(framework: str, real_redis: str, tmp_path: Path) -> Iterator[SQLApp]:
    with clients(framework) as make:
        made = SQLApp(framework, real_redis, tmp_path / "app.db", make)
        try:
            yield made
        finally:
            made.close()


def test_the_account_contract_with_users_in_sql(app: SQLApp, real_redis: str) -> None:
    client = app.client
    created = sign_up(client)
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    row = app.row(user_id)
    assert row is not None and row["email"] == "ada@example.com" and row["name"] == "Ada L"
    assert row["password_hash"].startswith("$argon2id$")
    # The record is the database's; Redis keeps only the copy of the roles beside the sessions.
    raw = redis.Redis.from_url(real_redis)
    assert set(raw.hgetall(keys.user("bastion", user_id))) == {b"verified", b"labels", b"teams"}
    assert not raw.keys("bastion:email:*")

    again = sign_up(client, email="  ADA@Example.com ")
    assert again.status_code == 409 and again.json()["type"] == "user_already_exists"
    assert log_in(client, password="wrong password here").status_code == 401
    assert log_in(client).status_code == 201
    me = client.request("GET", "/account")
    assert me.status_code == 200 and me.json()["id"] == user_id

    # Password change: the history is kept in the database and checked; personal data too.
    personal = client.request(
        "PATCH", "/account/password", json={"password": "ada-l-forever-x", "oldPassword": PASSWORD}
    )
    assert personal.status_code == 400 and personal.json()["type"] == "password_personal_data"
    changed = client.request(
        "PATCH",
        "/account/password",
        json={"password": "new pass phrase 1", "oldPassword": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    row = app.row(user_id)
    assert row is not None and len(json.loads(row["password_history"])) == 2
    reuse = client.request(
        "PATCH",
        "/account/password",
        json={"password": PASSWORD, "oldPassword": "new pass phrase 1"},
    )
    assert reuse.status_code == 400 and reuse.json()["type"] == "password_recently_used"
    assert log_in(client, password="new pass phrase 1").status_code == 201

    # Requests read no user record: listing sessions is Redis only.
    before = len(app.statements)
    for _ in range(3):
        assert client.request("GET", "/account/sessions").status_code == 200
    assert len(app.statements) == before

    # Disable, enable, delete: the marks live in Redis, the record in the database.
    assert len(app.admin("disable", user_id)) == 1
    assert client.request("GET", "/account").status_code == 401
    blocked = log_in(client, password="new pass phrase 1")
    assert blocked.status_code == 401 and blocked.json()["type"] == "user_blocked"
    assert app.admin("get", user_id).disabled
    assert app.admin("enable", user_id) is True
    assert log_in(client, password="new pass phrase 1").status_code == 201
    assert app.admin("delete", user_id)
    assert app.row(user_id) is None
    assert raw.hgetall(keys.user("bastion", user_id)).keys() == {b"deleted"}
    client.cookies.clear()  # the deleted user's session cookie is dead
    gone = log_in(client, password="new pass phrase 1")
    assert gone.status_code == 401 and gone.json()["type"] == "user_invalid_credentials"
    renewed = sign_up(client)
    assert renewed.status_code == 201 and renewed.json()["id"] != user_id
    raw.close()


def test_roles_changed_through_bastion_or_in_the_database_reach_sessions(
    app: SQLApp, real_redis: str
) -> None:
    client = app.client
    user_id = sign_up(client).json()["id"]
    log_in(client)
    raw = redis.Redis.from_url(real_redis)
    # The role fields travel once in the user's session hash (bastion.sessions.keys).
    session_key = keys.sessions("bastion", user_id)
    assert raw.exists(session_key)
    app.admin("update", user_id, verified=True, labels=("vip",))
    row = app.row(user_id)
    assert row is not None and row["verified"] == 1 and row["labels"] == '["vip"]'
    assert raw.hmget(session_key, "r:v", "r:lb") == [b"1", b"vip"]

    # The app changes its own table: Redis sees it after refresh, not before.
    with sqlite3.connect(app.path) as db:
        db.execute("UPDATE users SET verified = 0, labels = '[]' WHERE id = ?", (user_id,))
    assert raw.hmget(session_key, "r:v", "r:lb") == [b"1", b"vip"]
    assert app.admin("refresh", user_id).verified is False
    assert raw.hmget(session_key, "r:v", "r:lb") == [b"0", b""]
    raw.close()


def test_concurrent_sign_ups_of_one_email_make_one_account(app: SQLApp) -> None:
    devices = [app.client.device(peer=f"127.0.0.{n}") for n in range(2, 8)]
    try:
        if app.framework == "flask":
            with ThreadPoolExecutor(len(devices)) as pool:
                answers = list(pool.map(sign_up, devices))
        else:

            async def all_at_once() -> list[httpx.Response]:
                body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada L"}
                return list(
                    await asyncio.gather(
                        *(d.async_client.post("/account", json=body) for d in devices)
                    )
                )

            answers = app.client.loop.run(all_at_once())
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] + [409] * (len(devices) - 1), [a.text for a in answers]
        with sqlite3.connect(app.path) as db:
            assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (1,)
    finally:
        for device in devices:
            device.close()


# -- a store in plain async Python, and the request path ----------------------------------------


def test_a_dict_store_serves_accounts_and_requests_never_call_it(real_redis: str) -> None:
    store = DictStore()
    bastion = Bastion(Settings(redis_url=real_redis), users=store)

    async def me(request: Request) -> JSONResponse:
        return JSONResponse(sorted(bastion.identity(request).roles))

    app = bastion.asgi(
        Starlette(routes=[*starlette_adapter.account_routes(bastion), Route("/me", me)])
    )

    async def flow() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=("127.0.0.1", 1)), base_url="https://t"
        ) as client:
            body = {"email": "ada@example.com", "password": PASSWORD}
            user_id = (await client.post("/account", json=body)).json()["id"]
            assert (await client.post("/account/sessions", json=body)).status_code == 201
            assert (await client.get("/account")).json()["email"] == "ada@example.com"
            await bastion.users.update(user_id, verified=True, labels=("vip",))
            assert store.users[user_id].verified
            calls = store.calls
            roles = (await client.get("/me")).json()
            assert "users/verified" in roles and "label:vip" in roles
            assert store.calls == calls  # the request read Redis only
            store.users[user_id] = dataclasses.replace(store.users[user_id], labels=())
            await bastion.users.refresh(user_id)
            assert "label:vip" not in (await client.get("/me")).json()
        await bastion.aclose()

    asyncio.run(flow())


# -- start-up checks ---------------------------------------------------------------------------


def test_a_store_missing_a_method_stops_start_up(real_redis: str) -> None:
    class Partial:
        async def get(self, user_id: str) -> User | None:
            return None

        async def create(self, user: User) -> User:
            return user

    with pytest.raises(ConfigError) as caught:
        Bastion(Settings(redis_url=real_redis), users=Partial())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "Partial is not a user store: it has no get_by_email, update, set_password, delete" in (
        message
    )
    assert "all async def (bastion.users.UserStore) or all plain def" in message


def test_a_store_mixing_async_and_plain_methods_stops_start_up(real_redis: str) -> None:
    class Mixed(DictStore):
        def delete(self, user_id: str) -> bool:  # type: ignore[override]
            return False

    with pytest.raises(UserStoreMismatch, match=r"Mixed mixes async and plain methods .*delete"):
        Bastion(Settings(redis_url=real_redis), users=Mixed())


def test_an_async_store_cannot_serve_flask(real_redis: str) -> None:
    from flask import Flask

    from bastion.adapters.flask import init_app

    bastion = Bastion(Settings(redis_url=real_redis), users=DictStore())
    with pytest.raises(UserStoreMismatch, match=r"DictStore is an async UserStore, and sync code"):
        init_app(Flask("app"), bastion)
    with pytest.raises(UserStoreMismatch, match=r"give the store its sync twin as DictStore.sync"):
        bastion.sync.users.get("u1")


def test_an_async_store_with_its_sync_twin_serves_both(real_redis: str, tmp_path: Path) -> None:
    engine = _sqlite(tmp_path / "both.db")
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'both.db'}")
    store = SQLAlchemyUserStore(async_engine, UserRecord, sync_bind=engine)
    bastion = Bastion(Settings(redis_url=real_redis), users=store)
    store.sync.create(User("u1", "ada@example.com"))  # type: ignore[union-attr]
    found = bastion.sync.users.get_by_email("ADA@example.com")
    assert found is not None and found.id == "u1"

    async def read() -> User | None:
        try:
            return await bastion.users.get("u1")
        finally:
            await async_engine.dispose()

    assert asyncio.run(read()) == found
    bastion.close()

    class BadTwin(DictStore):
        sync = DictStore()

    with pytest.raises(UserStoreMismatch, match=r"BadTwin.sync must be the sync twin"):
        Bastion(Settings(redis_url=real_redis), users=BadTwin())


def test_a_database_that_is_down_is_a_503(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'users.db'}")
    store = SyncSQLAlchemyUserStore(engine, UserRecord)
    with pytest.raises(ServiceUnavailable):
        store.get("u1")


# -- the README's section ----------------------------------------------------------------------


def test_the_readme_sqlalchemy_example_runs_as_printed(real_redis: str, tmp_path: Path) -> None:
    [block] = blocks_tested_by(
        "tests/test_user_stores.py::test_the_readme_sqlalchemy_example_runs_as_printed"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_REDIS_URL"] = real_redis
    done = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "'email': 'ada@example.com'" in done.stdout
    assert "'emailVerification': True" in done.stdout
    raw = redis.Redis.from_url(real_redis)
    assert not raw.keys("bastion:email:*")  # the records went to SQLite
    assert raw.keys("bastion:*:user")
    raw.close()


def test_the_readme_store_of_your_own_keeps_the_contract(
    real_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_REDIS_URL", real_redis)
    namespace: dict[str, Any] = {"__name__": "readme"}
    [block] = blocks_tested_by(
        "tests/test_user_stores.py::test_the_readme_store_of_your_own_keeps_the_contract"
    )
    exec(compile(block, "README.md", "exec"), namespace)
    bastion = namespace["bastion"]
    assert isinstance(bastion._app_users.async_store, namespace["MemoryUsers"])
    keeps_the_contract(namespace["MemoryUsers"]())
    bastion.close()
