"""The user record every store keeps, and the checks a new one passes."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from bastion.emails import validate_email
from bastion.errors import BadRequest
from bastion.identity import user_roles

_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass(frozen=True, slots=True)
class User:
    """One account; ``password_hash`` and ``password_history`` never leave the server."""

    id: str
    email: str
    name: str = ""
    phone: str = ""
    verified: bool = False
    labels: tuple[str, ...] = ()
    teams: dict[str, tuple[str, ...]] | None = None
    # Never in a repr: a User printed in a log or a traceback must not carry a hash.
    password_hash: str = field(default="", repr=False)
    password_history: tuple[str, ...] = field(default=(), repr=False)
    created_ms: int = 0
    disabled: bool = False
    """Disabled by an administrator: no session, no log-in (``user_blocked``) until enabled.

    Bastion's own mark, kept in Redis whatever store keeps the record: stores ignore it.
    """

    def to_public(self) -> dict[str, Any]:
        """The user as the account routes show it (no hashes)."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "phone": self.phone,
            "emailVerification": self.verified,
            "labels": list(self.labels),
        }

    @property
    def roles(self) -> frozenset[str]:
        """The user's Appwrite roles."""
        return user_roles(
            self.id, verified=self.verified, teams=self.teams or {}, labels=self.labels
        )


def new_id() -> str:
    """A fresh random user id (80 bits: ids are never reused, deleted ones included)."""
    return secrets.token_hex(10)


def validate_profile(email: str, name: str, phone: str) -> tuple[str, str, str]:
    """Check and normalise sign-up fields; ``BadRequest`` says which one is wrong."""
    email = validate_email(email)
    name = unicodedata.normalize("NFKC", name).strip()
    if len(name) > 128 or not name.isprintable():
        raise BadRequest("Invalid name: at most 128 printable characters.")
    phone = phone.replace(" ", "").replace("-", "")
    if phone and not _PHONE.fullmatch(phone):
        raise BadRequest("Invalid phone: expected E.164, like +15551234567.")
    return email, name, phone
