"""Typed calls to Bastion's fronts: checked by ``mypy --strict`` (pyproject.toml), never run.

The fronts are derived from the steps (``bastion.fronts``); these calls show that mypy still
sees each method's exact parameters and result, on the async front and on its sync twin. Each
``type: ignore[...]`` line must stay an error: mypy's ``warn_unused_ignores`` (on under
``strict``) fails the check if a wrong call ever type-checks.
"""

from __future__ import annotations

from typing import Any, assert_type

from bastion import Bastion, Identity, NewSession, SessionInfo, User
from bastion.policies.grants import ChildFilter
from bastion.security import SecurityValues
from bastion.sessions import ActiveSession
from bastion.tokens.apikeys import APIKeyInfo, NewAPIKey


async def async_callers(bastion: Bastion, request: Any, who: Identity) -> None:
    """The async fronts: each result is what the step returns."""
    assert_type(await bastion.sessions.create("alice", ip="10.0.0.1", limit=3), NewSession)
    assert_type(await bastion.sessions.authenticate("token"), ActiveSession | None)
    assert_type(await bastion.sessions.list("alice"), list[SessionInfo])
    assert_type(await bastion.sessions.revoke_all("alice", keep="sid"), list[str])
    assert_type(await bastion.sessions.revoke_everyone(batch=10), int)
    assert_type(await bastion.users.get("alice"), User | None)
    assert_type(await bastion.users.disable("alice"), list[str])
    assert_type(await bastion.api_keys.create("ci", ["documents.read"]), NewAPIKey)
    assert_type(await bastion.api_keys.list(), list[APIKeyInfo])
    assert_type(await bastion.permissions.grant("a/b/c", "users", "read", by=who), bool)
    assert_type(await bastion.permissions.filter(who, "read", "a", "b"), ChildFilter)
    assert_type(await bastion.permissions.list("a/b/c"), list[tuple[str, str]])
    assert_type(await bastion.security.set("session_limit", "5"), SecurityValues)
    assert_type(await bastion.login(request, "alice"), NewSession)
    assert_type(await bastion.logout(request), bool)

    await bastion.sessions.create("alice", ipp="10.0.0.1")  # type: ignore[call-arg]
    await bastion.sessions.create(42)  # type: ignore[arg-type]
    await bastion.sessions.revoke_everyone(batch="10")  # type: ignore[arg-type]
    await bastion.users.update("alice", verified="yes")  # type: ignore[arg-type]
    await bastion.login(request)  # type: ignore[call-arg]
    size: int = await bastion.sessions.list("alice")  # type: ignore[assignment]
    del size


def sync_callers(bastion: Bastion, request: Any, who: Identity) -> None:
    """The sync twins: the same names and parameters, results without ``await``."""
    sync = bastion.sync
    assert_type(sync.sessions.create("alice", user_agent="cli", limit=3), NewSession)
    assert_type(sync.sessions.alive("alice", "sid"), ActiveSession | None)
    assert_type(sync.sessions.list("alice"), list[SessionInfo])
    assert_type(sync.users.get_by_email("ada@example.com"), User | None)
    assert_type(sync.users.enable("alice"), bool)
    assert_type(sync.users.refresh("alice"), User)
    assert_type(sync.api_keys.revoke("0123456789abcdef"), bool)
    assert_type(sync.permissions.ids_for("a", "b", ["users"], "read"), set[str])
    assert_type(sync.security.current(), SecurityValues)
    assert_type(sync.login(request, "alice"), NewSession)
    assert_type(sync.logout(request), bool)

    sync.sessions.create("alice", ipp="10.0.0.1")  # type: ignore[call-arg]
    sync.api_keys.create("ci", ["documents.read"], expires_in="30d")  # type: ignore[arg-type]
    sync.login(request)  # type: ignore[call-arg]
    sync.sessions.nope("alice")  # type: ignore[attr-defined]
    count: str = sync.sessions.revoke_everyone()  # type: ignore[assignment]
    del count
