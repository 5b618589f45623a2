"""Text a client writes about itself (its User-Agent), made safe to store, log and show."""

from __future__ import annotations


def clean_text(value: str | bytes, limit: int) -> str:
    """``value`` decoded as UTF-8 (invalid bytes as U+FFFD), printable characters only, cut.

    Controls (NUL, ESC and terminal sequences, CR/LF), format characters (bidi overrides,
    zero-width ones) and separators other than the space are dropped, so the text cannot forge
    a log line, colour a terminal or reorder what a session list shows. ``<`` and ``>`` are
    printable and stay: the text is data, escaped by whoever renders it (Bastion's answers are
    JSON with ``nosniff``).
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not text.isprintable():
        text = "".join(char for char in text if char.isprintable())
    return text[:limit]
