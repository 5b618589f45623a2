"""The fronts: one async object and its sync twin per store, no generator in public view."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest

from bastion import Bastion, Settings
from bastion.fronts import AsyncFront, SyncFront, step
from bastion.renamed import DEPRECATED

pytestmark = pytest.mark.anyio

FRONTS = ("sessions", "users", "api_keys", "permissions", "security")
OLD_STORE_NAMES = {"core", "client"}  # bastion.fronts.OldStoreNames: deprecated too


def _public(obj: object) -> dict[str, object]:
    """Public attributes as stored: properties are not called, methods not bound."""
    found = {}
    for name in dir(obj):
        if name.startswith("_") or name in DEPRECATED or name in OLD_STORE_NAMES:
            continue
        found[name] = inspect.getattr_static(obj, name)
    return found


def _callable(attribute: object) -> Any:
    if isinstance(attribute, staticmethod | classmethod):
        return attribute.__func__
    return attribute


def test_nothing_public_returns_a_generator() -> None:
    """Walk Bastion, its sync twin and every public part of both, calling nothing."""
    bastion = Bastion(Settings())
    walked: dict[str, object] = {"bastion": bastion, "bastion.sync": bastion.sync}
    for path, owner in list(walked.items()):
        for name, attribute in _public(owner).items():
            # The parts (fronts, policy, watcher, ...); the Redis clients are redis-py's own API.
            if not callable(attribute) and not isinstance(attribute, property) and name != "redis":
                walked[f"{path}.{name}"] = getattr(owner, name)
    seen: list[str] = []
    for path, obj in walked.items():
        for name, attribute in _public(obj).items():
            function = _callable(attribute)
            assert not inspect.isgeneratorfunction(function), f"{path}.{name}"
            assert not inspect.isasyncgenfunction(function), f"{path}.{name}"
            assert not inspect.isgenerator(attribute), f"{path}.{name}"
            seen.append(f"{path}.{name}")
    # The walk reached every front's methods, not an empty list.
    for front in FRONTS:
        assert f"bastion.{front}" in walked and f"bastion.sync.{front}" in walked
    assert {"bastion.login", "bastion.sync.login", "bastion.sessions.create"} <= set(seen)
    assert {"bastion.sync.security.set", "bastion.lifespan", "bastion.policy_watcher.start"} <= set(
        seen
    )


def test_every_front_has_a_sync_twin_with_the_same_methods() -> None:
    bastion = Bastion(Settings())
    pairs = [(bastion, bastion.sync)]
    pairs += [(getattr(bastion, name), getattr(bastion.sync, name)) for name in FRONTS]
    for front, twin in pairs:
        assert isinstance(front, AsyncFront) and isinstance(twin, SyncFront)
        steps = _steps(type(front))
        assert steps and steps == _steps(type(twin)), type(front)
        for name in steps:
            async_method, sync_method = getattr(type(front), name), getattr(type(twin), name)
            assert inspect.iscoroutinefunction(async_method), (front, name)
            assert not inspect.iscoroutinefunction(sync_method), (twin, name)
            assert inspect.signature(async_method) == inspect.signature(sync_method)
            assert async_method.__doc__ and async_method.__doc__ == sync_method.__doc__
            assert async_method.__name__ == sync_method.__name__ == name
            assert not hasattr(async_method, "__wrapped__")  # no way back to the generator
            assert "Steps[" not in str(inspect.signature(sync_method))


def _steps(front: type) -> set[str]:
    """The names a front class declared as steps (in its MRO)."""
    return {
        name
        for klass in front.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, step)
    }


def test_a_front_method_shows_the_steps_signature_and_docstring() -> None:
    from bastion.sessions import AsyncSessionStore, SessionCore, SyncSessionStore

    shown = inspect.signature(SyncSessionStore.create)
    assert list(shown.parameters) == ["self", "user_id", "ip", "user_agent", "limit"]
    assert shown.parameters["ip"].kind is inspect.Parameter.KEYWORD_ONLY
    assert shown.return_annotation == "NewSession"
    assert AsyncSessionStore.create.__doc__ == SessionCore.create.__doc__
    assert AsyncSessionStore.create.__qualname__ == "AsyncSessionStore.create"
    from bastion.policies.grants import SyncGrantStore

    assert SyncGrantStore.list.__name__ == "list"  # GrantCore.rows, under its public name


async def test_both_fronts_run_the_same_steps_on_their_own_runner(bastion: Bastion) -> None:
    made = bastion.sync.sessions.create("alice")
    assert (await bastion.sessions.authenticate(made.token)) is not None
    key = await bastion.api_keys.create("ci", ["documents.read"])
    assert [k.id for k in bastion.sync.api_keys.list()] == [key.info.id]
    assert bastion.sync.permissions.grant("a/b/c", "users", "read")
    assert await bastion.permissions.list("a/b/c") == [("users", "read")]
    assert (await bastion.security.set("session_limit", "4")).session_limit == 4
    assert bastion.sync.security.current().session_limit == 4
    assert bastion.sync.security.reset().session_limit == 10


def test_a_front_honours_a_patched_step(bastion: Bastion, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    list_steps = bastion._sessions_core.list

    def spying(user_id: str) -> Any:
        seen.append(user_id)
        return list_steps(user_id)

    monkeypatch.setattr(bastion._sessions_core, "list", spying)
    assert bastion.sync.sessions.list("alice") == []
    assert seen == ["alice"]


def test_a_step_declaration_is_no_method_elsewhere() -> None:
    from bastion.sessions.store import SessionCore, _SessionSteps

    assert isinstance(_SessionSteps.create, step)
    with pytest.raises(TypeError, match="step declaration"):
        _SessionSteps().create  # noqa: B018
    assert step(SessionCore.create).name == "create"


def test_old_names_warn_and_lead_to_the_new_ones(bastion: Bastion) -> None:
    """Every 0.1 name still works for one release, with a DeprecationWarning naming the new one."""
    from bastion.credentials import NO_CREDENTIALS

    calls: dict[str, tuple[Any, ...]] = {
        "login_steps": (None, "alice"),  # steps: made, not run
        "logout_steps": (None,),
        "admit": ("GET", "https", "/", []),
        "authenticate": (NO_CREDENTIALS, None),
    }
    for old in DEPRECATED:
        renamed = inspect.getattr_static(bastion, old)
        if old in ("login_sync", "logout_sync"):
            continue  # they need a request: test_old_request_helpers_still_log_in_and_out
        with pytest.warns(DeprecationWarning, match=f"bastion.{old} is deprecated"):
            value = getattr(bastion, old)
            if not isinstance(renamed, property) and old in calls:
                value = value(*calls[old])
                assert inspect.isgenerator(value)
                value.close()
        assert value is not None
    with pytest.warns(DeprecationWarning):
        store = bastion.sync_sessions
    assert store is bastion.sync.sessions
    made = store.create("alice")
    with pytest.warns(DeprecationWarning, match="use bastion.redis or bastion.sync.redis"):
        assert bastion.sync.sessions.client is bastion.sync.redis
    with pytest.warns(DeprecationWarning, match="the steps are private"):
        steps = bastion.sessions.core
    assert steps is bastion._sessions_core
    with pytest.warns(DeprecationWarning):
        runner = bastion.sync_runner
    with pytest.warns(DeprecationWarning):
        active = runner.run(bastion.sessions.core.authenticate(made.token))
    assert active is not None and active.session_id == made.session.id
    with pytest.warns(DeprecationWarning):
        assert bastion.user_store is bastion.user_roles  # the Redis store is the default


def test_old_request_helpers_still_log_in_and_out(real_redis: str) -> None:
    from flask import Flask, request

    from bastion.adapters.flask import init_app

    bastion = Bastion(Settings(redis_url=real_redis))
    app = Flask("renamed")
    init_app(app, bastion, account=False)

    @app.post("/login")
    def login() -> Any:
        with pytest.warns(DeprecationWarning, match="use bastion.sync.login"):
            new = bastion.login_sync(request, "bob")
        return {"session": new.session.id}, 201

    @app.post("/logout")
    def logout() -> Any:
        with pytest.warns(DeprecationWarning, match="use bastion.sync.logout"):
            assert bastion.logout_sync(request)
        return "", 204

    import httpx

    with (
        httpx.Client(transport=httpx.WSGITransport(app), base_url="https://t") as http,
        bastion,
    ):
        session = http.post("/login").json()["session"]
        assert [s.id for s in bastion.sync.sessions.list("bob")] == [session]
        assert http.post("/logout").status_code == 204
        assert bastion.sync.sessions.list("bob") == []


async def test_no_deprecation_warning_from_bastion_itself(real_redis: str) -> None:
    """Bastion's own code (middleware, account routes, CLI) uses only the new names."""
    import httpx

    from bastion.cli import main
    from tests.account_app import create_app

    body = {"email": "ada@example.com", "password": "correct horse battery staple"}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*is deprecated and goes in the next release")
        async with Bastion(Settings(redis_url=real_redis)) as bastion:
            transport = httpx.ASGITransport(create_app(bastion, "starlette"))
            async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
                assert (await http.post("/account", json=body)).status_code == 201
                assert (await http.post("/account/sessions", json=body)).status_code == 201
                assert (await http.get("/account")).status_code == 200
        with Bastion(Settings(redis_url=real_redis)) as bastion:
            wsgi = httpx.WSGITransport(create_app(bastion, "flask"))
            with httpx.Client(transport=wsgi, base_url="https://t") as client:
                assert client.post("/account/sessions", json=body).status_code == 201
                assert client.delete("/account/sessions/current").status_code == 204
        url = ["--redis-url", real_redis]
        assert main(["sessions", "list", "alice", *url]) == 0
        assert main(["keys", "list", *url]) == 0
        assert main(["security", "show", *url]) == 0
        assert main(["users", "disable", "--email", "ada@example.com", *url]) == 0
