"""What Bastion's own routes accept as a request body: one JSON object, within ``max_body_size``.

The size is checked from ``Content-Length`` before a byte is read, and again while reading, so
a chunked body (no length) is cut off at the limit: no server holds more of it than the limit
plus one chunk. The decoding is strict: UTF-8, one object, no duplicate key, no NaN or
Infinity, no lone surrogate, no nesting deep enough to exhaust the parser. Anything else is a
``BadRequest`` with Bastion's own message, never the parser's.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

from bastion.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

NOT_AN_OBJECT = "The request body must be a JSON object."

# More digits than any allowed limit: refused without int(), which stops at 4300 digits.
_MAX_LENGTH_DIGITS = 12
_SURROGATE = re.compile("[\ud800-\udfff]")


class Number:
    """A JSON number in a request body, left unconverted: no field of Bastion's is a number.

    Keeping the digits unparsed means a 60 KB number costs nothing and raises nothing.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<number>"


_NUMBER = Number()


def declared_length(value: str | bytes | None, limit: int) -> int | None:
    """The size a ``Content-Length`` value announces (None without one); over ``limit``: 413."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:  # WSGI servers may pass "" for a request without the header
        return None
    if not (text.isascii() and text.isdigit()):
        raise BadRequest("Invalid Content-Length header.")
    digits = text.lstrip("0") or "0"
    if len(digits) > _MAX_LENGTH_DIGITS or int(digits) > limit:
        raise PayloadTooLarge(limit)
    return int(digits)


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of one (lower-case) header."""
    return [value for key, value in headers if key == name]


def is_json(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` value is ``application/json`` (a charset, if any, UTF-8)."""
    media, *params = content_type.split(b";")
    if media.strip().lower() != b"application/json":
        return False
    for param in params:
        name, _, value = param.partition(b"=")
        # The body is decoded as UTF-8 whatever it says; a body declared otherwise would be
        # read as something else than its sender meant.
        charset = value.strip().strip(b'"').lower()
        if name.strip().lower() == b"charset" and charset not in (b"utf-8", b"utf8"):
            return False
    return True


def require_json(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse (415) a body whose one ``Content-Type`` is not JSON.

    What a cross-site HTML form or a no-CORS ``fetch`` can send (``text/plain``, form
    encodings) is thereby never read as an account request.
    """
    types = header(headers, b"content-type")
    if len(types) != 1 or not is_json(types[0]):
        raise UnsupportedMediaType()


async def read_asgi(
    headers: Iterable[tuple[bytes, bytes]], chunks: AsyncGenerator[bytes, None], limit: int
) -> bytes:
    """The body from an ASGI server's chunks: refused by its length, or once past ``limit``."""
    for value in header(headers, b"content-length"):
        declared_length(value, limit)
    parts: list[bytes] = []
    size = 0
    # Closed when left early, so the server is told at once that the rest is not wanted.
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            parts.append(chunk)
    return b"".join(parts)


def read_wsgi(environ: Mapping[str, Any], limit: int) -> bytes:
    """The body from ``wsgi.input``: refused by its length, and never read past ``limit + 1``."""
    length = declared_length(environ.get("CONTENT_LENGTH"), limit)
    terminated = bool(environ.get("wsgi.input_terminated"))
    if terminated:
        # The server ends the stream itself (a chunked body): read to its end, or one byte
        # past the limit, which is enough to know the body is too large.
        budget = limit + 1
    elif length is None:
        # PEP 3333: without a length, reading may block until the client gives up.
        return b""
    else:
        budget = length
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size < budget:
        chunk = stream.read(min(budget - size, 65_536))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge(limit)
    if not terminated and length is not None and size < length:
        raise BadRequest("The request body is shorter than its Content-Length.")
    return b"".join(parts)


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body`` (``{}`` for an empty body); ``BadRequest`` for anything else.

    Numbers come back as :class:`Number`; top-level keys and string values are valid Unicode.
    """
    if not body:
        return {}
    try:
        # Strictly UTF-8 (RFC 8259): json.loads would also guess UTF-16 and UTF-32 from bytes.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The request body must be UTF-8.") from None
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_int=_number,
            parse_float=_number,
        )
    except RecursionError:
        raise BadRequest("The request body is nested too deeply.") from None
    except ValueError:
        raise BadRequest(NOT_AN_OBJECT) from None
    if not isinstance(data, dict):
        raise BadRequest(NOT_AN_OBJECT)
    for key, value in data.items():
        # "\ud800" is valid JSON but no valid string: it could not be hashed, stored or sent.
        if _SURROGATE.search(key) or (isinstance(value, str) and _SURROGATE.search(value)):
            raise BadRequest("The request body has a \\u escape that is not a character.")
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        # Parsers disagree on which of two values wins; a proxy or log may have seen the other.
        raise BadRequest("The request body has a duplicate key.")
    return data


def _constant(name: str) -> Any:
    raise BadRequest("NaN and Infinity are not JSON.")


def _number(digits: str) -> Number:
    return _NUMBER
