"""What Bastion's own responses look like: one JSON encoding, its headers, and how its log-in
headers join an app's response (the same bytes on Starlette, FastAPI and Flask)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

MEDIA_TYPE = "application/json"
"""The ``Content-Type`` of every body Bastion sends (JSON is UTF-8 by definition: no charset)."""


def encode(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8: Starlette's ``JSONResponse`` encoding, for every app."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # A lone surrogate (from a record no sign-up made: a store of the app's own) cannot be
    # UTF-8; written back as its JSON escape it stays the same string value, and no 500.
    return text.encode("utf-8", "backslashreplace")


OWN_HEADERS: tuple[tuple[str, str], ...] = (
    # Its answers are about sessions and tokens: no shared or browser cache may keep one.
    ("cache-control", "no-store"),
    # Its bodies are JSON and must never be sniffed into HTML (a user agent echoed back, ...).
    ("x-content-type-options", "nosniff"),
)
"""Headers on every response Bastion writes: its refusals and the account routes' answers."""

OWN_HEADERS_RAW: tuple[tuple[bytes, bytes], ...] = tuple(
    (name.encode(), value.encode()) for name, value in OWN_HEADERS
)
""":data:`OWN_HEADERS` as ASGI spells them."""


def merge_headers(
    app: Iterable[tuple[bytes, bytes]], ours: Sequence[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The app's response headers with Bastion's (a log-in's or log-out's) added.

    ``Set-Cookie`` is appended; any other header of ours replaces the app's of the same name, so
    a log-in answer carries one ``Cache-Control: no-store`` (not the app's and ours, nor a
    weaker one of the app's beside it) and one session header.
    """
    replaced = {name.lower() for name, _ in ours} - {b"set-cookie"}
    kept = [(name, value) for name, value in app if name.lower() not in replaced]
    return [*kept, *ours]
