"""Identity (who is calling) and Appwrite's role grammar."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bastion.errors import MissingScope, Unauthorized

GUEST = "guest"
"""The ``kind`` of a request without credentials; other kinds are the credential backends'
names (``session``, ``jwt``, ``key`` and the app's own, see :mod:`bastion.credentials`)."""

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

RESERVED_SCOPES = frozenset({"authenticated", GUEST, "session", "jwt", "key"})
"""Names Bastion itself puts in ``request.auth.scopes`` (the built-in kinds); no API key may hold
one, or a key scoped ``session`` would pass Starlette's ``requires("session")``."""


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
    """Who sent a request; doubles as Starlette's ``request.user`` (a ``BaseUser`` look-alike).

    ``kind`` names the credential backend that vouched for it (``guest`` without one). It is
    one of three things, whatever the kind: a user (``user_id``, judged by its ``roles``), a
    scoped caller such as an API key (``key_id``, judged by its ``scopes``), or a guest.
    """

    kind: str = GUEST
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
    def for_user(
        cls, kind: str, user_id: str, session_id: str | None, roles: frozenset[str]
    ) -> Identity:
        """The identity of a user's request, vouched for by backend ``kind``, with its roles.

        ``session_id`` is the Bastion session the credential belongs to (a session or a JWT),
        None for a kind that has none. Every request of one session has the same identity, and
        identities are immutable, so recent ones are shared rather than built again.
        """
        return _shared_identity(kind, user_id, session_id, roles)

    @classmethod
    def for_user_id(cls, kind: str, user_id: str, session_id: str | None = None) -> Identity:
        """A user's identity with the roles its id alone gives (``users/unverified``, ...)."""
        return _shared_identity(kind, user_id, session_id, _plain_user_roles(user_id))

    @classmethod
    def for_key(cls, key_id: str, scopes: frozenset[str], kind: str = "key") -> Identity:
        """The identity of a scoped caller (an API key): scopes, no user, no roles.

        Reserved names are dropped: keys created before they were refused may still hold one.
        """
        return cls(kind, None, None, frozenset(), scopes - RESERVED_SCOPES, key_id)

    def require_scope(self, scope: str) -> None:
        """Refuse a scoped caller without ``scope``; users are judged by permissions instead."""
        if self.key_id is not None:
            if scope not in self.scopes:
                raise MissingScope(scope)
        elif self.user_id is None:
            raise Unauthorized()

    @property
    def is_guest(self) -> bool:
        """True for a request without credentials: neither a user nor a scoped caller."""
        return self.user_id is None and self.key_id is None

    @property
    def is_scoped(self) -> bool:
        """True for a caller judged by its scopes, not by roles: an API key (or a kind of the
        app's own that says so). Scoped callers skip resource permissions and are no user."""
        return self.key_id is not None

    @property
    def auth_scopes(self) -> list[str]:
        """Scopes for Starlette's ``AuthCredentials``: the credential kind, ``authenticated`` for
        a signed-in user, a scoped caller's own scopes; none for guests.

        An API key is not ``authenticated``: that scope means a user (Starlette's
        ``requires("authenticated")`` guards user pages); a key has ``key`` and its scopes.
        """
        if self.key_id is not None:
            return [self.kind, *sorted(self.scopes)]
        if self.user_id is None:
            return []
        return ["authenticated", self.kind]

    @property
    def is_authenticated(self) -> bool:
        """True for a signed-in user (session, JWT, or a user kind of the app's own).

        False for guests and for API keys, which are no user (Starlette's ``BaseUser`` API): the
        same answer as ``"authenticated" in request.auth.scopes``.
        """
        return self.user_id is not None

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
