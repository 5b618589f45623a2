"""The built-in kinds as credential backends: a session, a JWT bound to its session, an API key.

Each is a :class:`CredentialBackend` like an app's own, with its public ``authenticate`` /
``authenticate_sync``; on a request Bastion runs their private step (``_check``) directly, so a
session's or JWT's look-up and the resource's permission rows still travel in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from bastion.credentials.backend import CredentialBackend, CredentialRequest
from bastion.credentials.transports import Authorization, Cookie, Header
from bastion.errors import (
    APIKeyAndSession,
    APIKeyInvalid,
    BastionError,
    JWTAndSession,
    JWTInvalid,
    SessionInvalid,
)
from bastion.identity import Identity
from bastion.redisio import AsyncRunner, Steps, SyncRunner
from bastion.sessions.store import SessionCore
from bastion.settings import Settings
from bastion.tokens.apikeys import PREFIX, APIKeyCore
from bastion.tokens.jwt import JWTService
from bastion.users import roles_from_fields

__all__ = ["APIKeyBackend", "JWTBackend", "SessionBackend"]


class _Builtin(CredentialBackend):
    """A built-in kind: its check is a step of Bastion's own, run by Bastion's runners."""

    def __init__(self, runner: AsyncRunner, sync_runner: SyncRunner) -> None:
        self._runner = runner
        self._sync_runner = sync_runner

    async def authenticate(self, token: str, request: CredentialRequest) -> Identity | None:
        """Who ``token`` is, or None; raises the kind's error when it can say more."""
        return await self._runner.run(self._check(token, *request))

    def authenticate_sync(self, token: str, request: CredentialRequest) -> Identity | None:
        """The sync twin of :meth:`authenticate`."""
        return self._sync_runner.run(self._check(token, *request))


class SessionBackend(_Builtin):
    """A session token: in the session cookie, or in the session header (the fallback)."""

    name = "session"
    invalid: type[BastionError] = SessionInvalid

    def __init__(
        self, settings: Settings, sessions: SessionCore, runner: AsyncRunner, sync: SyncRunner
    ) -> None:
        super().__init__(runner, sync)
        self._sessions = sessions
        self.cookie = Cookie(
            settings.cookie_name,
            scheme_name="BastionSessionCookie",
            description="The session cookie a log-in sets (browsers).",
        )
        self.header = Header(
            settings.session_header,
            fallback=True,
            scheme_name="BastionSessionHeader",
            description="The session token, for clients that cannot keep cookies "
            "(X-Bastion-Fallback).",
        )
        self.transports = (self.cookie, self.header)

    def identity(self, user_id: str, session_id: str) -> Identity:
        """The identity of a session just started (a log-in): its roles come with the next
        request, which reads them from the session."""
        return self.user(user_id, session_id=session_id)

    def _check(
        self, token: str, method: str, scheme: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Steps[Identity | None]:
        active = yield from self._sessions.authenticate(token)
        if active is None:
            return None
        roles = roles_from_fields(active.user_id, active.verified, active.labels, active.teams)
        return Identity.for_user(self.name, active.user_id, active.session_id, roles)


class JWTBackend(_Builtin):
    """A JWT minted from a session, as ``Authorization: Bearer``; it dies with its session."""

    name = "jwt"
    invalid: type[BastionError] = JWTInvalid
    conflict: type[BastionError] = JWTAndSession

    def __init__(
        self, jwt: JWTService, sessions: SessionCore, runner: AsyncRunner, sync: SyncRunner
    ) -> None:
        super().__init__(runner, sync)
        self._jwt = jwt
        self._sessions = sessions
        self.transports = (
            Authorization(
                "Bearer",
                bearer_format="JWT",
                scheme_name="BastionJWT",
                description="A JWT minted from a session (POST /account/jwts).",
            ),
        )

    def _check(
        self, token: str, method: str, scheme: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Steps[Identity | None]:
        subject = self._jwt.verify(token)  # its ids are checked: verify refuses any other
        active = yield from self._sessions.alive_checked(subject.user_id, subject.session_id)
        if active is None:
            raise JWTInvalid("Failed to verify JWT: its session has ended.")
        roles = roles_from_fields(active.user_id, active.verified, active.labels, active.teams)
        return Identity.for_user(self.name, active.user_id, active.session_id, roles)


class APIKeyBackend(_Builtin):
    """A scoped API key (``bst_...``): as ``X-API-Key``, or as ``Authorization: Bearer``."""

    name = "key"
    scoped: ClassVar[bool] = True
    invalid: type[BastionError] = APIKeyInvalid
    conflict: type[BastionError] = APIKeyAndSession

    def __init__(self, keys: APIKeyCore, runner: AsyncRunner, sync: SyncRunner) -> None:
        super().__init__(runner, sync)
        self._keys = keys
        self.transports = (
            Header(
                "X-API-Key",
                scheme_name="BastionAPIKey",
                description="A scoped API key (bst_...); also accepted as Authorization: Bearer.",
            ),
            # Told apart from a JWT by its prefix; documented by the header's scheme above.
            Authorization("Bearer", prefix=PREFIX + "_", documented=False),
        )

    def _check(
        self, token: str, method: str, scheme: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Steps[Identity | None]:
        info = yield from self._keys.authenticate(token)
        return Identity.for_key(info.id, info.scopes, kind=self.name)
