"""The checks behind every framework's helpers, written once: a signed-in user, a permission.

Each framework's decorators and dependencies only find the request's state and call these, so
a refusal is the same error, with the same status and ``type``, on Starlette, FastAPI and Flask.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bastion.errors import BastionError, ConfigError, MissingScope, Unauthorized, UserUnverified
from bastion.identity import Identity
from bastion.users import User

if TYPE_CHECKING:
    from bastion.core import Bastion

NO_KEY = "(none: this route accepts no API key)"
"""What :class:`MissingScope` names when a route takes no API key at all (as the route map says)."""

VERIFIED_ROLE = "users/verified"


def user_refusal(identity: Identity, *, verified: bool = False) -> BastionError | None:
    """The error for a caller who is not a signed-in user (or not verified, if asked); else None.

    An API key is no user: 401 ``general_unauthorized_scope``, as the route map answers a key on
    a route that takes none; the client holds a credential of the wrong kind, and a user's
    session or JWT would be accepted, so it is an authentication problem (401), not a refusal
    of the caller (403). A guest gets 401 ``user_unauthorized``; an unverified user 403
    ``user_email_not_verified`` (logging in again would not help, verifying would).
    """
    if identity.is_scoped:
        return MissingScope(NO_KEY)
    if not identity.is_authenticated:
        return Unauthorized()
    if verified and VERIFIED_ROLE not in identity.roles:
        return UserUnverified()
    return None


def without_secrets(user: User) -> User:
    """The record with its password hash and history blanked: what a view may hold.

    A view that returns or logs the user it was given (FastAPI serialises a returned dataclass
    whole, ``repr`` shows every field) then shows no hash.
    """
    return dataclasses.replace(user, password_hash="", password_history=())


def check_user(identity: Identity, *, verified: bool = False) -> None:
    """Raise unless a signed-in user sent the request (a verified one if ``verified``)."""
    refusal = user_refusal(identity, verified=verified)
    if refusal is not None:
        raise refusal


def check_permission(
    bastion: Bastion, identity: Identity, action: str, resource: str, *, scope: str | None
) -> None:
    """Raise the refusal the caller gets unless they may ``action`` on ``resource``.

    Users and guests are judged by the policy, API keys by ``scope``. A policy without rules
    allows no user anything, so a signed-in user reaching a ``require`` there means a missing
    policy, not a refused user: that is a ``ConfigError`` (a 500 with this message in the log)
    rather than a 403 that looks like the user's fault, and never a silent "signed in is enough".
    """
    if identity.is_authenticated and not bastion.policy.engine.rules:
        raise ConfigError(
            "policy_files",
            bastion.settings.policy_files,
            f"a policy with rules, since require({action!r}, {resource!r}) judges signed-in "
            "users by it (for any signed-in user, use login_required or current_user())",
        )
    bastion.require(identity, action, resource, scope=scope)
