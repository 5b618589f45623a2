"""Which credential a request carries, read from its raw headers (sans-IO).

Three kinds travel four ways: a session token in the cookie or the fallback header, a JWT as
``Authorization: Bearer``, an API key as ``X-API-Key`` or ``Authorization: Bearer bst_...``.
A request must carry one kind at most: a JWT beside a session, or an API key beside either,
is refused rather than resolved by a silent preference (as Appwrite does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["session", "jwt", "key"]
Source = Literal["cookie", "header", "bearer", "x-api-key"]
Problem = Literal["malformed", "jwt_and_session", "key_and_session"]

# Anything longer is not one of our credentials; refusing it early keeps huge headers cheap.
MAX_CREDENTIAL_LENGTH = 4096
API_KEY_PREFIX = "bst_"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The credential a request sent (kind, token, where it travelled), or why it is unusable."""

    kind: Kind | None = None
    token: str | None = None
    source: Source | None = None
    problem: Problem | None = None

    @property
    def session_token(self) -> str | None:
        """The session token, when the credential is a session."""
        return self.token if self.kind == "session" else None


NO_CREDENTIALS = Credentials()


class _Slot:
    """One place a credential can travel; several different values there make it malformed."""

    __slots__ = ("conflict", "value")

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.conflict = False

    def put(self, value: bytes) -> None:
        if self.value is not None and value != self.value:
            self.conflict = True
        self.value = value


def read_credentials(
    headers: Iterable[tuple[bytes, bytes]], cookie_name: bytes, session_header: bytes
) -> Credentials:
    """Find the request's credential. ``session_header`` must be lower-case, as servers send it."""
    cookie = header = bearer = api_key = None
    for name, value in headers:
        if name == b"cookie":
            for found in _cookie_values(value, cookie_name):
                cookie = cookie or _Slot()
                cookie.put(found)
        elif name == session_header:
            header = header or _Slot()
            header.put(value.strip())
        elif name == b"authorization":
            scheme, _, rest = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":  # other schemes belong to the app, not to us
                bearer = bearer or _Slot()
                bearer.put(rest.strip())
        elif name == b"x-api-key":
            api_key = api_key or _Slot()
            api_key.put(value.strip())

    session = _first(("cookie", cookie), ("header", header))
    jwt = key = None
    if bearer is not None:
        if bearer.value is not None and bearer.value.startswith(API_KEY_PREFIX.encode()):
            key = ("bearer", bearer)
        else:
            jwt = ("bearer", bearer)
    if api_key is not None:
        if key is not None and key[1].value != api_key.value:
            return Credentials("key", None, "x-api-key", "malformed")
        key = ("x-api-key", api_key)

    if key is not None and (session is not None or jwt is not None):
        return Credentials("key", None, key[0], "key_and_session")  # type: ignore[arg-type]
    if jwt is not None and session is not None:
        return Credentials("jwt", None, session[0], "jwt_and_session")  # type: ignore[arg-type]
    if session is not None:
        return _credential("session", *session)
    if jwt is not None:
        return _credential("jwt", *jwt)
    if key is not None:
        return _credential("key", *key)
    return NO_CREDENTIALS


def _first(*slots: tuple[str, _Slot | None]) -> tuple[str, _Slot] | None:
    # The cookie wins over the fallback header when both carry a session (Appwrite's order).
    for source, slot in slots:
        if slot is not None:
            return source, slot
    return None


def _credential(kind: Kind, source: str, slot: _Slot) -> Credentials:
    raw = slot.value or b""
    if slot.conflict or not raw or len(raw) > MAX_CREDENTIAL_LENGTH or not raw.isascii():
        return Credentials(kind, None, source, "malformed")  # type: ignore[arg-type]
    return Credentials(kind, raw.decode("ascii"), source)  # type: ignore[arg-type]


def _cookie_values(header: bytes, name: bytes) -> Iterable[bytes]:
    # RFC 6265 §5.4 pairs: "a=b; c=d". A pair without "=" is a value with an empty name (as
    # browsers treat it), never our cookie.
    if name not in header:
        return
    for pair in header.split(b";"):
        key, sep, value = pair.partition(b"=")
        if sep and key.strip() == name:
            yield value.strip()
