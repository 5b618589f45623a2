"""Which credential a request carries, read from its raw headers (sans-IO)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Source = Literal["cookie", "header"]

# Anything longer is not one of our tokens; refusing it early keeps huge headers off the hot path.
MAX_CREDENTIAL_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Credentials:
    """The credential a request sent: ``token`` and where it travelled, or nothing."""

    session_token: str | None = None
    source: Source | None = None
    malformed: bool = False
    """True when something credential-shaped was sent but cannot be one (duplicates, oversize)."""


NO_CREDENTIALS = Credentials()
_MALFORMED_COOKIE = Credentials(None, "cookie", True)
_MALFORMED_HEADER = Credentials(None, "header", True)


def read_credentials(
    headers: Iterable[tuple[bytes, bytes]], cookie_name: bytes, session_header: bytes
) -> Credentials:
    """Find the session credential: the cookie first, then the fallback header.

    ``session_header`` must be lower-case, as ASGI and WSGI servers deliver header names.
    Several different values for the same credential make it malformed, not a choice.
    """
    cookie_value: bytes | None = None
    header_value: bytes | None = None
    cookie_conflict = header_conflict = False
    for name, value in headers:
        if name == b"cookie":
            for found in _cookie_values(value, cookie_name):
                if cookie_value is not None and found != cookie_value:
                    cookie_conflict = True
                cookie_value = found
        elif name == session_header:
            if header_value is not None and value != header_value:
                header_conflict = True
            header_value = value
    if cookie_value is not None:
        if cookie_conflict:
            return _MALFORMED_COOKIE
        return _credential(cookie_value, "cookie", _MALFORMED_COOKIE)
    if header_value is not None:
        if header_conflict:
            return _MALFORMED_HEADER
        return _credential(header_value.strip(), "header", _MALFORMED_HEADER)
    return NO_CREDENTIALS


def _credential(raw: bytes, source: Source, malformed: Credentials) -> Credentials:
    if not raw or len(raw) > MAX_CREDENTIAL_LENGTH or not raw.isascii():
        return malformed
    return Credentials(raw.decode("ascii"), source)


def _cookie_values(header: bytes, name: bytes) -> Iterable[bytes]:
    # RFC 6265 §5.4 pairs: "a=b; c=d". A pair without "=" is a value with an empty name (as
    # browsers treat it), never our cookie.
    if name not in header:
        return
    for pair in header.split(b";"):
        key, sep, value = pair.partition(b"=")
        if sep and key.strip() == name:
            yield value.strip()
