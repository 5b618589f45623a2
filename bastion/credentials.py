"""Which credential a request carries, read from its raw headers (sans-IO).

Three kinds travel four ways: a session token in the cookie or the fallback header, a JWT as
``Authorization: Bearer``, an API key as ``X-API-Key`` or ``Authorization: Bearer bst_...``.
A request must carry one kind at most: a JWT beside a session, or an API key beside either,
is refused rather than resolved by a silent preference (as Appwrite does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

Kind = Literal["session", "jwt", "key"]
Source = Literal["cookie", "header", "bearer", "x-api-key"]
Problem = Literal["malformed", "jwt_and_session", "key_and_session"]

# Anything longer is not one of our credentials; refusing it early keeps huge headers cheap.
MAX_CREDENTIAL_LENGTH = 4096
API_KEY_PREFIX = "bst_"


class Credentials(NamedTuple):
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

# Stands for two different values in one place: the credential there is malformed (a NUL
# byte cannot reach us in a header value, so no real credential equals it).
_CONFLICT = b"\x00conflict"


def _put(held: bytes | None, value: bytes) -> bytes:
    return value if held is None or held == value else _CONFLICT


def read_credentials(
    headers: Iterable[tuple[bytes, bytes]], cookie_name: bytes, session_header: bytes
) -> Credentials:
    """Find the request's credential. ``session_header`` must be lower-case, as servers send it."""
    cookie = header = bearer = api_key = None
    for name, value in headers:
        if name == b"cookie":
            if cookie_name in value:
                for pair in value.split(b";"):
                    # RFC 6265 §5.4 pairs: "a=b; c=d". A pair without "=" is a value with an
                    # empty name (as browsers treat it), never our cookie.
                    pair_name, sep, found = pair.partition(b"=")
                    if sep and pair_name.strip() == cookie_name:
                        cookie = _put(cookie, found.strip())
        elif name == session_header:
            header = _put(header, value.strip())
        elif name == b"authorization":
            scheme, _, rest = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":  # other schemes belong to the app, not to us
                bearer = _put(bearer, rest.strip())
        elif name == b"x-api-key":
            api_key = _put(api_key, value.strip())

    # The cookie wins over the fallback header when both carry a session (Appwrite's order).
    session: tuple[Source, bytes] | None = None
    if cookie is not None:
        session = ("cookie", cookie)
    elif header is not None:
        session = ("header", header)
    if session is not None and bearer is None and api_key is None:  # the usual case
        return _credential("session", *session)
    jwt: tuple[Source, bytes] | None = None
    key: tuple[Source, bytes] | None = None
    if bearer is not None:
        if bearer.startswith(API_KEY_PREFIX.encode()):
            key = ("bearer", bearer)
        else:
            jwt = ("bearer", bearer)
    if api_key is not None:
        if key is not None and key[1] != api_key:
            return Credentials("key", None, "x-api-key", "malformed")
        key = ("x-api-key", api_key)

    if key is not None and (session is not None or jwt is not None):
        return Credentials("key", None, key[0], "key_and_session")
    if jwt is not None and session is not None:
        return Credentials("jwt", None, session[0], "jwt_and_session")
    if session is not None:
        return _credential("session", *session)
    if jwt is not None:
        return _credential("jwt", *jwt)
    if key is not None:
        return _credential("key", *key)
    return NO_CREDENTIALS


def _credential(kind: Kind, source: Source, raw: bytes) -> Credentials:
    if not raw or len(raw) > MAX_CREDENTIAL_LENGTH or not raw.isascii() or raw == _CONFLICT:
        return Credentials(kind, None, source, "malformed")
    return Credentials(kind, raw.decode("ascii"), source)
