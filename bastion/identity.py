"""Identity (who is calling) and Appwrite's role grammar."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from bastion.errors import MissingScope, Unauthorized

Kind = Literal["guest", "session", "jwt", "key"]

# Ids appear inside roles (``user:ID``), Redis keys (``{ID}`` hash tags) and tokens, so they
# may hold none of ``: / { } *`` or whitespace.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@+\-]{0,127}"
_ID = re.compile(ID_PATTERN)
_ROLE = re.compile(
    rf"^(?:any|guests|users(?:/(?:verified|unverified))?"
    rf"|user:{ID_PATTERN}(?:/(?:verified|unverified))?"
    rf"|team:{ID_PATTERN}(?:/{ID_PATTERN})?"
    rf"|member:{ID_PATTERN}"
    rf"|label:[A-Za-z0-9]{{1,36}})$"
)

GUEST_ROLES = frozenset({"any", "guests"})

RESERVED_SCOPES = frozenset({"authenticated", *get_args(Kind)})
"""Names Bastion itself puts in ``request.auth.scopes``; no API key may hold one, or a key
scoped ``session`` would pass Starlette's ``requires("session")``."""


def is_valid_id(value: str) -> bool:
    """Whether ``value`` is a valid user, team or membership id."""
    return _ID.fullmatch(value) is not None


def is_role(value: str) -> bool:
    """Whether ``value`` is a role of the grammar (``any``, ``users``, ``team:T/owner``, ...)."""
    return _ROLE.fullmatch(value) is not None


def user_roles(
    user_id: str,
    *,
    verified: bool = False,
    teams: Mapping[str, Iterable[str]] | None = None,
    memberships: Iterable[str] = (),
    labels: Iterable[str] = (),
) -> frozenset[str]:
    """The role set of a signed-in user, as Appwrite computes it."""
    state = "verified" if verified else "unverified"
    roles = {"any", "users", f"users/{state}", f"user:{user_id}", f"user:{user_id}/{state}"}
    for team, team_roles in (teams or {}).items():
        roles.add(f"team:{team}")
        roles.update(f"team:{team}/{role}" for role in team_roles)
    roles.update(f"member:{m}" for m in memberships)
    roles.update(f"label:{label}" for label in labels)
    return frozenset(roles)


# The hot path builds the same role set for the same users over and over; frozensets are
# immutable, so one copy per recent user can be shared by every request.
_plain_user_roles = functools.lru_cache(maxsize=4096)(user_roles)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a request; doubles as Starlette's ``request.user`` (a ``BaseUser`` look-alike)."""

    kind: Kind = "guest"
    user_id: str | None = None
    session_id: str | None = None
    roles: frozenset[str] = GUEST_ROLES
    scopes: frozenset[str] = frozenset()
    key_id: str | None = None

    @classmethod
    def guest(cls) -> Identity:
        """The identity of a request without credentials."""
        return _GUEST

    @classmethod
    def for_user(cls, kind: Kind, user_id: str, session_id: str, roles: frozenset[str]) -> Identity:
        """The identity of a user's request (``session`` or ``jwt``) with its role set.

        Every request of one session has the same identity, and identities are immutable, so
        recent ones are shared rather than built again.
        """
        return _shared_identity(kind, user_id, session_id, roles)

    @classmethod
    def for_session(cls, user_id: str, session_id: str) -> Identity:
        """The identity of a request authenticated by a session."""
        return cls("session", user_id, session_id, _plain_user_roles(user_id))

    @classmethod
    def for_jwt(cls, user_id: str, session_id: str) -> Identity:
        """The identity of a request authenticated by a JWT: its session's user and roles."""
        return cls("jwt", user_id, session_id, _plain_user_roles(user_id))

    @classmethod
    def for_key(cls, key_id: str, scopes: frozenset[str]) -> Identity:
        """The identity of a request authenticated by an API key: scopes, no user, no roles.

        Reserved names are dropped: keys created before they were refused may still hold one.
        """
        return cls("key", None, None, frozenset(), scopes - RESERVED_SCOPES, key_id)

    def require_scope(self, scope: str) -> None:
        """Refuse an API key without ``scope``; users are judged by permissions instead."""
        if self.kind == "key":
            if scope not in self.scopes:
                raise MissingScope(scope)
        elif self.kind == "guest":
            raise Unauthorized()

    @property
    def auth_scopes(self) -> list[str]:
        """Scopes for Starlette's ``AuthCredentials``: the credential kind, ``authenticated`` for
        a signed-in user, an API key's own scopes; none for guests.

        An API key is not ``authenticated``: that scope means a user (Starlette's
        ``requires("authenticated")`` guards user pages); a key has ``key`` and its scopes.
        """
        if self.kind == "guest":
            return []
        if self.kind == "key":
            return ["key", *sorted(self.scopes)]
        return ["authenticated", self.kind]

    @property
    def is_authenticated(self) -> bool:
        """True for a signed-in user, by session or JWT (Starlette's ``BaseUser`` API).

        False for guests and for API keys, which are no user: the same answer as
        ``"authenticated" in request.auth.scopes``.
        """
        return self.kind == "session" or self.kind == "jwt"

    @property
    def display_name(self) -> str:
        """The user id, ``key:ID`` for API keys, empty for guests (Starlette's ``BaseUser``)."""
        return self.identity

    @property
    def identity(self) -> str:
        """The user id, ``key:ID`` for API keys, empty for guests (Starlette's ``BaseUser``)."""
        if self.key_id is not None:
            return f"key:{self.key_id}"
        return self.user_id or ""


_GUEST = Identity()
_shared_identity = functools.lru_cache(maxsize=4096)(Identity)
