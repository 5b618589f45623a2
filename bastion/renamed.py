"""Bastion's names before the fronts (0.1), kept for one release with a ``DeprecationWarning``.

0.1 had two schemes: stores as ``bastion.sessions`` / ``bastion.sync_sessions``, request helpers
as ``login`` / ``login_sync`` / ``login_steps``, and some steps in public view. Now there is one:
the async object (``bastion``, ``bastion.sessions``) and its sync twin with the same names
(``bastion.sync``, ``bastion.sync.sessions``); steps are private. Code written for 0.1 keeps
working for one release, and each old name says what replaces it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bastion.core import LoginCore, SyncBastion
    from bastion.policies.grants import SyncGrantStore
    from bastion.sessions import NewSession, SyncSessionStore
    from bastion.tokens.apikeys import SyncAPIKeyStore
    from bastion.user_admin import SyncUsers

__all__ = ["DEPRECATED", "RenamedNames"]

DEPRECATED = {
    "sync_sessions": "bastion.sync.sessions",
    "sync_users": "bastion.sync.users",
    "sync_api_keys": "bastion.sync.api_keys",
    "sync_permissions": "bastion.sync.permissions",
    "login_sync": "bastion.sync.login",
    "logout_sync": "bastion.sync.logout",
    "login_steps": "bastion.login (the steps are private)",
    "logout_steps": "bastion.logout (the steps are private)",
    "admit": "the middleware (the steps are private)",
    "authenticate": "the middleware (the steps are private)",
    "runner": "the async fronts (the runners are private)",
    "sync_runner": "bastion.sync (the runners are private)",
    "account": "the account routes of bastion.adapters (the service is private)",
    "user_store": "bastion.users / bastion.sync.users (the store's steps are private)",
    "user_roles": "bastion.users / bastion.sync.users (the store's steps are private)",
}
"""Each old name of ``Bastion`` and what replaces it."""


def _warn(old: str) -> None:
    warnings.warn(
        f"bastion.{old} is deprecated and goes in the next release: use {DEPRECATED[old]}",
        DeprecationWarning,
        stacklevel=3,
    )


class _Renamed(Protocol):
    """What the old names lead to (``Bastion`` has it)."""

    sync: SyncBastion
    _login_core: LoginCore
    _runner: Any
    _sync_runner: Any
    _account: Any
    _user_store: Any
    _user_roles: Any

    def _admit(self, *args: Any, **kwargs: Any) -> Any: ...

    def _authenticate(self, *args: Any, **kwargs: Any) -> Any: ...


class RenamedNames:
    """The 0.1 names of :class:`~bastion.core.Bastion`, each a warning and then the new one."""

    @property
    def sync_sessions(self: _Renamed) -> SyncSessionStore:
        """Deprecated: ``bastion.sync.sessions``."""
        _warn("sync_sessions")
        return self.sync.sessions

    @property
    def sync_users(self: _Renamed) -> SyncUsers:
        """Deprecated: ``bastion.sync.users``."""
        _warn("sync_users")
        return self.sync.users

    @property
    def sync_api_keys(self: _Renamed) -> SyncAPIKeyStore:
        """Deprecated: ``bastion.sync.api_keys``."""
        _warn("sync_api_keys")
        return self.sync.api_keys

    @property
    def sync_permissions(self: _Renamed) -> SyncGrantStore:
        """Deprecated: ``bastion.sync.permissions``."""
        _warn("sync_permissions")
        return self.sync.permissions

    def login_sync(self: _Renamed, conn: Any, user_id: str) -> NewSession:
        """Deprecated: ``bastion.sync.login(conn, user_id)``."""
        _warn("login_sync")
        return self.sync.login(conn, user_id)

    def logout_sync(self: _Renamed, conn: Any) -> bool:
        """Deprecated: ``bastion.sync.logout(conn)``."""
        _warn("logout_sync")
        return self.sync.logout(conn)

    def login_steps(self: _Renamed, state: Any, user_id: str) -> Any:
        """Deprecated: ``await bastion.login(...)`` or ``bastion.sync.login(...)``."""
        _warn("login_steps")
        return self._login_core.login(state, user_id)

    def logout_steps(self: _Renamed, state: Any) -> Any:
        """Deprecated: ``await bastion.logout(...)`` or ``bastion.sync.logout(...)``."""
        _warn("logout_steps")
        return self._login_core.logout(state)

    def admit(self: _Renamed, *args: Any, **kwargs: Any) -> Any:
        """Deprecated: the middleware admits requests; the steps are private."""
        _warn("admit")
        return self._admit(*args, **kwargs)

    def authenticate(self: _Renamed, *args: Any, **kwargs: Any) -> Any:
        """Deprecated: the middleware authenticates requests; the steps are private."""
        _warn("authenticate")
        return self._authenticate(*args, **kwargs)

    @property
    def runner(self: _Renamed) -> Any:
        """Deprecated: the async fronts run the steps."""
        _warn("runner")
        return self._runner

    @property
    def sync_runner(self: _Renamed) -> Any:
        """Deprecated: ``bastion.sync`` runs the steps."""
        _warn("sync_runner")
        return self._sync_runner

    @property
    def account(self: _Renamed) -> Any:
        """Deprecated: the account service is private; mount the account routes."""
        _warn("account")
        return self._account

    @property
    def user_store(self: _Renamed) -> Any:
        """Deprecated: ``bastion.users`` / ``bastion.sync.users``."""
        _warn("user_store")
        return self._user_store

    @property
    def user_roles(self: _Renamed) -> Any:
        """Deprecated: ``bastion.users`` / ``bastion.sync.users``."""
        _warn("user_roles")
        return self._user_roles
