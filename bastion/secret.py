"""Secret values: masked wherever they are shown, and read only on purpose.

Settings objects end up in reprs, logs, tracebacks and error messages; a value wrapped here shows
as ``'**********'`` (a Redis URL with its password replaced by ``***``) in every one of them, and
the code that needs the real value asks for it by name (``get_secret_value()``, as in pydantic).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "**********"
"""What a secret looks like wherever it is shown."""

_PASSWORD_MASK = "***"  # noqa: S105  (the mask itself, not a password)
_SECRET_QUERY_KEYS = {"password"}  # redis-py reads ?password=... too


class Secret:
    """A secret string (a JWT key secret): ``repr`` and ``str`` show ``'**********'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The real value, for the code that signs, connects or compares with it."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Secret)
        # Constant time: settings are compared rarely, but a secret is never compared any other way.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))


class SecretURL(Secret):
    """A URL that may carry a password (``redis_url``): shown with the password masked."""

    __slots__ = ()

    def __str__(self) -> str:
        return mask_url(self._value)


def mask_url(url: str) -> str:
    """``url`` with its password (and a ``password=`` query value) replaced by ``***``.

    ``redis://user:pw@host:6379/0`` shows as ``redis://user:***@host:6379/0``; user information
    without a colon is masked whole (a password put where the user name goes is still a
    password); a URL that cannot be parsed, or has an ``@`` outside its host part, is masked
    whole.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if "@" in url and "@" not in parts.netloc:
        return MASK  # user information outside a ``//host`` part: no telling where it ends
    masked = url
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        hidden = f"{user}:{_PASSWORD_MASK}@{host}" if colon else f"{_PASSWORD_MASK}@{host}"
        masked = masked.replace(parts.netloc, hidden, 1)  # the first occurrence: after scheme://
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(k, _PASSWORD_MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs],
                safe="*",
            )
            masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def reveal(value: str | Secret) -> str:
    """The real value of a secret setting (settings hold a :class:`Secret` once validated)."""
    return value.get_secret_value() if isinstance(value, Secret) else value
