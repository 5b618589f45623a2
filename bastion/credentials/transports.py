"""Where a credential travels: a cookie, a header of its own, or a scheme of ``Authorization``.

A transport only says where to find a token; how the token is checked is its backend's business
(:mod:`bastion.credentials.backend`), as in fastapi-users' transport-and-strategy split. Each one
is also an OpenAPI security scheme (:meth:`Transport.openapi`).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Literal

Place = Literal["cookie", "header", "authorization"]


@dataclass(frozen=True, slots=True)
class Transport:
    """Where one kind of credential travels: build a :class:`Cookie`, :class:`Header` or
    :class:`Authorization`.

    ``prefix``: only tokens that start with it travel here (API keys, ``bst_...``, share
    ``Authorization: Bearer`` with JWTs that way). ``fallback``: read only when the kind's other
    transports carry nothing (the session header, for clients that cannot keep cookies); two
    other transports of one kind carrying different tokens make the credential malformed.
    ``scheme_name`` names its OpenAPI security scheme (default: the kind's name);
    ``documented=False`` leaves it out of the OpenAPI document.
    """

    place: ClassVar[Place]
    ambient: ClassVar[bool] = False
    """Whether browsers send it unasked (cookies): requests carrying it get the cross-site check."""

    name: str
    _: KW_ONLY
    prefix: str = ""
    fallback: bool = False
    description: str = ""
    scheme_name: str = ""
    documented: bool = True

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("prefix", self.prefix)):
            if not value.isascii() or any(c in value for c in " \t\r\n;,=\x00"):
                raise ValueError(f"{type(self).__name__} {field} {value!r}: ASCII, no separators")
        if not self.name:
            raise ValueError(f"{type(self).__name__} needs a name")

    def openapi(self) -> dict[str, Any]:
        """This transport as an OpenAPI security scheme object."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Cookie(Transport):
    """The token is the value of cookie ``name``."""

    place: ClassVar[Place] = "cookie"
    ambient: ClassVar[bool] = True

    def openapi(self) -> dict[str, Any]:
        """An ``apiKey`` scheme in a cookie."""
        return _described({"type": "apiKey", "in": "cookie", "name": self.name}, self)


@dataclass(frozen=True, slots=True)
class Header(Transport):
    """The token is the whole value of header ``name`` (``X-API-Key: ...``)."""

    place: ClassVar[Place] = "header"

    def openapi(self) -> dict[str, Any]:
        """An ``apiKey`` scheme in a header."""
        return _described({"type": "apiKey", "in": "header", "name": self.name}, self)


@dataclass(frozen=True, slots=True)
class Authorization(Transport):
    """The token follows scheme ``name`` in ``Authorization`` (``Authorization: Bearer ...``)."""

    place: ClassVar[Place] = "authorization"

    name: str = "Bearer"
    _: KW_ONLY
    bearer_format: str = ""

    def openapi(self) -> dict[str, Any]:
        """An ``http`` scheme (RFC 9110 §11.6.2's scheme names are case-insensitive)."""
        scheme: dict[str, Any] = {"type": "http", "scheme": self.name.lower()}
        if self.bearer_format:
            scheme["bearerFormat"] = self.bearer_format
        return _described(scheme, self)


def _described(scheme: dict[str, Any], transport: Transport) -> dict[str, Any]:
    if transport.description:
        scheme["description"] = transport.description
    return scheme
