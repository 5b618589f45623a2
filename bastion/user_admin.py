"""Users for apps and administrators: ``bastion.users`` (async) and ``bastion.sync.users``.

One set of steps, :class:`UserAdmin`, over the user store (the Redis one or an app's own, see
:mod:`bastion.users.external`) and the marks Bastion keeps on the user's Redis slot;
:class:`AsyncUsers` and :class:`SyncUsers` are derived from them (:mod:`bastion.fronts`), like
the session fronts. Nothing public here
returns a generator.

Disable and delete end every session of the user in the same Lua script that sets the mark, and
the session-create script refuses a marked user, so a JWT (checked against its session) dies too
and no log-in can slip a session in between. Requests never read the marks: a request costs the
same one round trip as before.
"""

from __future__ import annotations

import logging

from bastion.audit import AuditLog, DetailValue
from bastion.errors import UserNotFound
from bastion.fronts import AsyncFront, OldStoreNames, SyncFront, step
from bastion.identity import is_valid_id
from bastion.redisio import Steps
from bastion.sessions import SessionCore
from bastion.users.protocol import UserSteps
from bastion.users.record import User

logger = logging.getLogger("bastion.users")


class UserAdmin:
    """User look-ups and administration as sans-IO steps; the fronts run them against Redis."""

    def __init__(self, store: UserSteps, sessions: SessionCore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit
        self.sessions = sessions

    def get(self, user_id: str) -> Steps[User | None]:
        """The user with this id, or None (a deleted user is None)."""
        if not is_valid_id(user_id):
            return None
        return (yield from self.store.get(user_id))

    def get_by_email(self, email: str) -> Steps[User | None]:
        """The user with this email, or None."""
        return (yield from self.store.get_by_email(email))

    def _existing(self, user_id: str) -> Steps[User]:
        user = yield from self.get(user_id)
        if user is None:
            raise UserNotFound()
        return user

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> Steps[None]:
        """Change the verified flag, labels or teams; live sessions get the new roles at once.

        With a store of the app's own, the store is changed first, then the copy of the roles
        that requests read in Redis.
        """
        yield from self._existing(user_id)
        yield from self.store.update(user_id, verified=verified, labels=labels, teams=teams)

    def refresh(self, user_id: str) -> Steps[User]:
        """Copy the user's roles from the store to Redis; returns the user.

        For an app that changes ``verified``, labels or teams in its own database (not through
        :meth:`update`): live sessions get the new roles from their next request. With the
        default store (Redis) there is nothing to copy.
        """
        user = yield from self._existing(user_id)
        yield from self.store.mirror(user)
        return user

    def disable(self, user_id: str) -> Steps[list[str]]:
        """End every session (JWTs die with them) and refuse log-ins; returns the ids ended."""
        yield from self._existing(user_id)
        ended = yield from self.sessions.block(user_id)
        if ended is None:  # deleted meanwhile
            raise UserNotFound()
        logger.info("user disabled: user=%s sessions_ended=%d", user_id, len(ended))
        self._record("user_disable", user_id, ended)
        return ended

    def enable(self, user_id: str) -> Steps[bool]:
        """Let a disabled user log in again; True if they were disabled."""
        yield from self._existing(user_id)
        lifted = yield from self.sessions.unblock(user_id)
        if lifted:
            logger.info("user enabled: user=%s", user_id)
            self.audit.record("user_enable", None, user_id=user_id)
        return lifted

    def delete(self, user_id: str) -> Steps[list[str]]:
        """End every session, tombstone the id, drop the record, free the email; ids ended.

        First, in one script on the user's slot, the id is tombstoned and every session ends
        (the security-relevant part, all or nothing); then the store drops the record and frees
        the email. A delete cut short between the two is finished by calling it again.
        """
        if not is_valid_id(user_id):
            raise UserNotFound()
        user = yield from self.store.get(user_id)
        if user is None:
            if (yield from self.sessions.is_retired(user_id)) and (
                yield from self.store.delete(user_id)
            ):
                logger.info("user deletion finished: user=%s", user_id)
                self._record("user_delete", user_id, [])
                return []
            raise UserNotFound()
        ended = yield from self.sessions.retire(user_id)
        yield from self.store.delete(user_id)
        logger.info("user deleted: user=%s sessions_ended=%d", user_id, len(ended or ()))
        self._record("user_delete", user_id, ended or [])
        return ended or []

    def _record(self, name: str, user_id: str, ended: list[str]) -> None:
        """An administrator's action on a user (no request: no client address)."""
        details: dict[str, DetailValue] = {"count": len(ended), "session_ids": tuple(ended)}
        self.audit.record(name, None, user_id=user_id, details=details)


class _UserSteps:
    """The user operations users call, on ``bastion.users`` and ``bastion.sync.users``."""

    get = step(UserAdmin.get)
    get_by_email = step(UserAdmin.get_by_email)
    update = step(UserAdmin.update)
    refresh = step(UserAdmin.refresh)
    disable = step(UserAdmin.disable)
    enable = step(UserAdmin.enable)
    delete = step(UserAdmin.delete)


class AsyncUsers(_UserSteps, OldStoreNames, AsyncFront[UserAdmin]):
    """``bastion.users``: users for asyncio code."""


class SyncUsers(_UserSteps, OldStoreNames, SyncFront[UserAdmin]):
    """``bastion.sync.users``: the same methods for threaded code (WSGI, CLI, scripts)."""
