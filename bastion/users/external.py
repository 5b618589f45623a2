"""A store of the app's own as the steps Bastion runs, with Bastion's Redis side beside it.

The account service and ``bastion.users`` run steps (:mod:`bastion.redisio`); an app's store
has plain async or sync methods (:mod:`bastion.users.protocol`). :class:`StoreSteps` joins
them: each store method is one :class:`~bastion.redisio.Hook` operation, which the async
runner awaits and the sync runner calls, the one place where Bastion's steps meet the app's
code. Around those calls it keeps what stays in Redis whatever the store: the ``disabled`` and
``deleted`` marks (read beside each record it returns) and the copy of the role fields that
requests read with the session (written on sign-up, log-in, ``update`` and ``refresh``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bastion.emails import normalize_email
from bastion.identity import is_valid_id
from bastion.redisio import Call, Hook, Script, Steps
from bastion.sessions import keys
from bastion.users.protocol import StoreTwins
from bastion.users.record import User, new_id
from bastion.users.redis import copy_roles, make_user, role_fields


class StoreSteps:
    """The app's store (:class:`StoreTwins`) as the user steps the account service runs."""

    def __init__(self, stores: StoreTwins, key_prefix: str) -> None:
        self.stores = stores
        self._prefix = key_prefix

    @staticmethod
    def new_id() -> str:
        """A fresh random user id (Bastion makes them; the store keeps the one it is given)."""
        return new_id()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Steps[Any]:
        result = yield Hook(self.stores.acall, self.stores.call, (method, args, kwargs))
        return result

    def _user(self, found: Any, method: str) -> User | None:
        if found is not None and not isinstance(found, User):
            raise TypeError(
                f"{self.stores.name}.{method} returned a {type(found).__name__}, not a "
                "bastion.users.User or None"
            )
        return found

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
        """Store a new user in the app's store, then copy its roles to Redis."""
        user = make_user(
            email, password_hash, name=name, phone=phone, history=history, user_id=user_id
        )
        stored = self._user((yield from self._call("create", user)), "create") or user
        yield from self.mirror(stored)
        return dataclasses.replace(stored, disabled=False)

    def get(self, user_id: str) -> Steps[User | None]:
        """The user with this id with Bastion's marks, or None (a deleted id is None)."""
        if not is_valid_id(user_id):
            return None
        user = self._user((yield from self._call("get", user_id)), "get")
        return (yield from self._marked(user))

    def get_by_email(self, email: str) -> Steps[User | None]:
        """The user with this email with Bastion's marks, or None."""
        found = yield from self._call("get_by_email", normalize_email(email))
        return (yield from self._marked(self._user(found, "get_by_email")))

    def _marked(self, user: User | None) -> Steps[User | None]:
        if user is None:
            return None
        disabled, deleted = yield Call(
            "hmget", (keys.user(self._prefix, user.id), "disabled", "deleted")
        )
        if deleted is not None:
            return None
        return dataclasses.replace(user, disabled=disabled is not None)

    def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> Steps[None]:
        """Replace the password hash and history in the app's store."""
        yield from self._call("set_password", user_id, password_hash, history)

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> Steps[None]:
        """Change the role fields in the app's store, then in Redis (sessions included)."""
        role_fields(verified, labels, teams)  # bad values stop here, before the store is told
        updated = yield from self._call(
            "update", user_id, verified=verified, labels=labels, teams=teams
        )
        user = self._user(updated, "update")
        if user is not None:
            yield from self.mirror(user)

    def mirror(self, user: User) -> Steps[None]:
        """Copy the record's role fields to Redis, where requests read them with the session."""
        mapping = role_fields(user.verified, user.labels, user.teams or {})
        yield from copy_roles(self._prefix, user.id, mapping)

    def delete(self, user_id: str) -> Steps[bool]:
        """Drop Bastion's copy of the roles (the tombstone stays), then the app's record."""
        if not is_valid_id(user_id):
            return False
        yield Script("user_forget", [keys.user(self._prefix, user_id)], [])
        return bool((yield from self._call("delete", user_id)))
