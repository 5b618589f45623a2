"""The headers of Bastion's own responses, and how its log-in headers join an app's response."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
