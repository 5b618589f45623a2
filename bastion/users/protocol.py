"""What a user store is: the ``UserStore`` protocol (async), its sync twin, and their check.

An app keeps its users where it likes (``Bastion(users=...)``); sessions, rate limits, roles for
requests and Bastion's own marks stay in Redis. A store is any object with these six methods,
all ``async def`` (:class:`UserStore`) or all plain ``def`` (:class:`SyncUserStore`); no base
class to inherit, no generator, nothing of Bastion's to yield. An async app (Starlette,
FastAPI) can use either: a sync store's calls then run in a worker thread. Sync code (Flask,
``bastion.sync.users``) needs a sync one: an async store can carry its twin as ``store.sync``,
as ``Bastion`` does. :func:`user_stores` checks the store at start-up.

The contract, for every store:

* **Emails** reach the store normalised (NFKC, trimmed, casefolded: :func:`normalize_email`):
  Bastion normalises before every call, the store stores and compares them as given.
* **Ids** are Bastion's (80 random bits, a string of at most 128 characters): the store keeps
  the id it is given. An id is never reused: Bastion keeps a deleted id's tombstone in Redis and
  refuses it a session for good.
* **Missing users** are ``None`` from ``get`` / ``get_by_email`` / ``update``, ``False`` from
  ``delete``, and nothing at all from ``set_password``: never an exception.
* **A taken email** (or id) on ``create`` raises :class:`bastion.errors.UserAlreadyExists`; two
  sign-ups racing for one email must end with one record and one ``UserAlreadyExists`` (a
  unique index does it), never two records or another error.
* **The database down** raises :class:`bastion.errors.ServiceUnavailable` (a 503 with
  ``Retry-After``); any other exception is a 500 for the request that met it, its traceback
  logged. A ``ValueError`` is the client's bad input (a 400).
* **Bastion's marks** (``User.disabled``, a deleted id's tombstone) live in Redis, not in the
  store: return ``disabled=False``; Bastion fills it in.
* **Roles** (``verified``, ``labels``, ``teams``) are the store's, and requests read a copy that
  Bastion keeps in Redis beside the sessions (a request never calls the store). Bastion copies
  them on sign-up, at each log-in and in ``bastion.users.update``; an app that changes them in
  its own database calls ``bastion.users.refresh(user_id)`` so live sessions see it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bastion.errors import ConfigError
from bastion.redisio import Steps
from bastion.users.record import User

__all__ = [
    "METHODS",
    "StoreTwins",
    "SyncUserStore",
    "UserSteps",
    "UserStore",
    "UserStoreMismatch",
    "user_stores",
]

METHODS = ("get", "get_by_email", "create", "update", "set_password", "delete")
"""The methods of a user store, async or sync."""


@runtime_checkable
class UserStore(Protocol):
    """Users in a database of the app's own, for async code (see the module for the contract)."""

    async def get(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        ...

    async def get_by_email(self, email: str) -> User | None:
        """The user with this email (given normalised: compare it as it is), or None."""
        ...

    async def create(self, user: User) -> User:
        """Store a new user and return it as stored; ``UserAlreadyExists`` if the email is taken.

        ``user`` is complete: Bastion's id, the normalised email, the password hash and history
        (a history of at most the last ``password_history`` hashes), ``created_ms``.
        """
        ...

    async def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> User | None:
        """Change the fields given (None leaves one as it is); the user after, or None if none."""
        ...

    async def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> None:
        """Replace the password hash and the history of previous hashes (no user: do nothing)."""
        ...

    async def delete(self, user_id: str) -> bool:
        """Remove the record, hashes included, and free its email; False if there was none.

        Bastion calls it after it has ended the user's sessions and tombstoned the id, and may
        call it again to finish a delete that was cut short: it must be idempotent.
        """
        ...


@runtime_checkable
class SyncUserStore(Protocol):
    """The twin of :class:`UserStore` for sync code (Flask, scripts): the same methods, plain."""

    def get(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        ...

    def get_by_email(self, email: str) -> User | None:
        """The user with this email (given normalised: compare it as it is), or None."""
        ...

    def create(self, user: User) -> User:
        """Store a new user and return it as stored; ``UserAlreadyExists`` if the email is taken."""
        ...

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> User | None:
        """Change the fields given (None leaves one as it is); the user after, or None if none."""
        ...

    def set_password(self, user_id: str, password_hash: str, history: tuple[str, ...]) -> None:
        """Replace the password hash and the history of previous hashes (no user: do nothing)."""
        ...

    def delete(self, user_id: str) -> bool:
        """Remove the record, hashes included, and free its email; False if there was none."""
        ...


class UserStoreMismatch(ConfigError):
    """``Bastion(users=...)`` given something that is no store, or not the kind the app needs."""

    def __init__(self, message: str) -> None:
        self.name, self.value, self.allowed = "users", None, "a UserStore or SyncUserStore"
        ValueError.__init__(self, message)


_SHAPE = (
    "a user store has the methods get, get_by_email, create, update, set_password and delete, "
    "all async def (bastion.users.UserStore) or all plain def (bastion.users.SyncUserStore)"
)


@dataclass(frozen=True, slots=True)
class StoreTwins:
    """The app's store as the runners call it: its async side, its sync side (either may be None).

    The one place Bastion calls an app's store: the ``Hook`` operation of the steps
    (:mod:`bastion.redisio`) names a method, and the async runner awaits :meth:`acall`, the
    sync runner calls :meth:`call`.
    """

    async_store: Any
    sync_store: Any
    name: str

    async def acall(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``method`` for async code: awaited, or a sync store's in a worker thread."""
        if self.async_store is not None:
            return await getattr(self.async_store, method)(*args, **kwargs)
        call = functools.partial(getattr(self.sync_store, method), *args, **kwargs)
        return await asyncio.to_thread(call)

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``method`` for sync code; an async-only store cannot serve it."""
        if self.sync_store is None:
            raise UserStoreMismatch(self.needs_sync())
        return getattr(self.sync_store, method)(*args, **kwargs)

    def needs_sync(self) -> str:
        """Why an async-only store cannot serve sync code, and what to do."""
        return (
            f"Bastion(users=...): {self.name} is an async UserStore, and sync code (Flask, WSGI, "
            "bastion.sync.users) needs a SyncUserStore: give the store its sync twin as "
            f"{self.name}.sync, or pass a SyncUserStore (async apps can use one too; its calls "
            "then run in a worker thread)"
        )


def _methods(store: object, name: str, where: str) -> tuple[list[str], list[str]]:
    """The store's async and plain methods; a missing one is a start-up error."""
    missing = [m for m in METHODS if not callable(getattr(store, m, None))]
    if missing:
        raise UserStoreMismatch(
            f"Bastion(users=...): {where} is not a user store: it has no "
            f"{', '.join(missing)} ({_SHAPE})"
        )
    coroutines = [m for m in METHODS if inspect.iscoroutinefunction(getattr(store, m))]
    plain = [m for m in METHODS if m not in coroutines]
    if coroutines and plain:
        raise UserStoreMismatch(
            f"Bastion(users=...): {where} mixes async and plain methods ({', '.join(coroutines)} "
            f"async def; {', '.join(plain)} plain def): {_SHAPE}"
        )
    return coroutines, plain


def user_stores(store: object) -> StoreTwins:
    """Check ``store`` (start-up) and say which code it can serve; precise errors otherwise."""
    name = type(store).__name__
    coroutines, _ = _methods(store, name, name)
    if not coroutines:
        return StoreTwins(None, store, name)
    twin = getattr(store, "sync", None)
    if twin is None:
        return StoreTwins(store, None, name)
    twin_coroutines, _ = _methods(twin, name, f"{name}.sync")
    if twin_coroutines:
        raise UserStoreMismatch(
            f"Bastion(users=...): {name}.sync must be the sync twin (a SyncUserStore), but its "
            f"{', '.join(twin_coroutines)} are async def"
        )
    return StoreTwins(store, twin, name)


class UserSteps(Protocol):
    """Private: the user operations as the steps Bastion runs (the account service, ``users``).

    :class:`~bastion.users.redis.UserCore` (the default store, on Redis) and
    :class:`~bastion.users.external.StoreSteps` (an app's store) have them; returned users carry
    Bastion's marks (a deleted id is None).
    """

    def new_id(self) -> str:
        """A fresh user id."""
        ...

    def create(
        self,
        email: str,
        password_hash: str,
        *,
        name: str = "",
        phone: str = "",
        history: tuple[str, ...] = (),
        user_id: str | None = None,
    ) -> Steps[User]:
        """Store a new user; ``UserAlreadyExists`` if the email is taken."""
        ...

    def get(self, user_id: str) -> Steps[User | None]:
        """The user with this id, or None."""
        ...

    def get_by_email(self, email: str) -> Steps[User | None]:
        """The user with this email (normalised here), or None."""
        ...

    def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> Steps[None]:
        """Replace the password hash and the history of previous hashes."""
        ...

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> Steps[None]:
        """Change the role fields, in the record and in the copy requests read."""
        ...

    def mirror(self, user: User) -> Steps[None]:
        """Copy the record's role fields to where requests read them (if elsewhere)."""
        ...

    def delete(self, user_id: str) -> Steps[bool]:
        """Drop the record and free its email (idempotent); False if none."""
        ...
