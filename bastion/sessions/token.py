"""The session token a client holds: ``<user id>.<session id>.<secret>``, minted and parsed."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import NamedTuple

from bastion.identity import ID_PATTERN

SESSION_ID_BYTES = 16
SECRET_BYTES = 32  # 256 bits: twice what ASVS 5.0 asks of a session token.
MAX_TOKEN_LENGTH = 256

_SESSION_ID = r"[A-Za-z0-9_-]{22}"
_SESSION_ID_RE = re.compile(_SESSION_ID)
_SECRET_LENGTH = 43
_USER_ID_RE = re.compile(ID_PATTERN)


class ParsedToken(NamedTuple):
    """The three parts of a well-formed session token."""

    user_id: str
    session_id: str
    secret: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_session_id() -> str:
    """A fresh random session id (not secret: it names the session in lists and logs)."""
    while True:
        session_id = _b64(secrets.token_bytes(SESSION_ID_BYTES))
        # An id is typed as a command-line argument (``bastion sessions revoke USER ID``), where a
        # leading "-" reads as an option: drawn again, 1 time in 64.
        if session_id[0] != "-":
            return session_id


def new_secret() -> str:
    """A fresh random session secret."""
    return _b64(secrets.token_bytes(SECRET_BYTES))


def is_session_id(value: str) -> bool:
    """Whether ``value`` has the shape of a session id."""
    return _SESSION_ID_RE.fullmatch(value) is not None


def format_token(user_id: str, session_id: str, secret: str) -> str:
    """The token string handed to the client."""
    return f"{user_id}.{session_id}.{secret}"


def parse_token(token: str) -> ParsedToken | None:
    """Split a token into its parts, or None when it is not exactly one well-formed token."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    # The user id may contain dots, so the two fixed-width parts are split off from the right
    # (one regex over the whole token backtracks through every dot of the id).
    rest, _, secret = token.rpartition(".")
    user_id, _, session_id = rest.rpartition(".")
    # The ids become parts of a Redis key, so they must match their patterns exactly; the secret
    # is only hashed and compared, so its length and ASCII are enough.
    if (
        len(secret) != _SECRET_LENGTH
        or not secret.isascii()
        or _SESSION_ID_RE.fullmatch(session_id) is None
        or _USER_ID_RE.fullmatch(user_id) is None
    ):
        return None
    return ParsedToken(user_id, session_id, secret)


def hash_secret(secret: str) -> bytes:
    """The SHA-256 digest stored in Redis in place of the secret."""
    return hashlib.sha256(secret.encode("ascii")).digest()
