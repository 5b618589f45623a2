"""Users for apps and administrators: ``bastion.users`` (async) and ``bastion.sync.users``.

One set of steps, :class:`UserAdmin`, over the user store (the Redis one or an app's own) and
the marks Bastion keeps on the user's Redis slot; :class:`AsyncUsers` and :class:`SyncUsers`
are derived from them (:mod:`bastion.fronts`), like the session fronts. Nothing public here
returns a generator.

Disable and delete end every session of the user in the same Lua script that sets the mark, and
the session-create script refuses a marked user, so a JWT (checked against its session) dies too
and no log-in can slip a session in between. Requests never read the marks: a request costs the
same one round trip as before.
"""

from __future__ import annotations

import dataclasses
import logging

from bastion.audit import AuditLog, DetailValue
from bastion.errors import UserNotFound
from bastion.fronts import AsyncFront, OldStoreNames, SyncFront, step
from bastion.identity import is_valid_id
from bastion.redisio import Call, Steps
from bastion.sessions import SessionCore, keys
from bastion.users import User, UserCore, UserStore

logger = logging.getLogger("bastion.users")


class UserAdmin:
    """User look-ups and administration as sans-IO steps; the fronts run them against Redis."""

    def __init__(
        self, store: UserStore, redis_users: UserCore, sessions: SessionCore, audit: AuditLog
    ) -> None:
        self.store = store
        self.audit = audit
        self.redis_users = redis_users
        self.sessions = sessions
        self._prefix = sessions.settings.key_prefix
        # The Redis store reads the marks with the record; another store's records need them
        # read from Bastion's key beside it.
        self._marks_in_record = store is redis_users

    def get(self, user_id: str) -> Steps[User | None]:
        """The user with this id, or None (a deleted user is None)."""
        if not is_valid_id(user_id):
            return None
        user = yield from self.store.get(user_id)
        return (yield from self._marked(user))

    def get_by_email(self, email: str) -> Steps[User | None]:
        """The user with this email, or None."""
        user = yield from self.store.by_email(email)
        return (yield from self._marked(user))

    def _marked(self, user: User | None) -> Steps[User | None]:
        if user is None or self._marks_in_record:
            return user
        disabled, deleted = yield Call(
            "hmget", (keys.user(self._prefix, user.id), "disabled", "deleted")
        )
        if deleted is not None:
            return None
        return dataclasses.replace(user, disabled=disabled is not None)

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
        """Change the verified flag, labels or teams; live sessions get the new roles at once."""
        yield from self._existing(user_id)
        yield from self.redis_users.update(user_id, verified=verified, labels=labels, teams=teams)

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
    disable = step(UserAdmin.disable)
    enable = step(UserAdmin.enable)
    delete = step(UserAdmin.delete)


class AsyncUsers(_UserSteps, OldStoreNames, AsyncFront[UserAdmin]):
    """``bastion.users``: users for asyncio code."""


class SyncUsers(_UserSteps, OldStoreNames, SyncFront[UserAdmin]):
    """``bastion.sync.users``: the same methods for threaded code (WSGI, CLI, scripts)."""
