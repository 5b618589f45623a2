"""Taking secrets out of text before it is logged (a traceback, an exception's message)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable

MASK = "[redacted]"


def redact(text: str, secrets: Iterable[str], mask: str = MASK) -> str:
    """``text`` with every secret replaced by ``mask``, as written, escaped or URL-quoted."""
    for secret in sorted(set(secrets), key=len, reverse=True):  # longest first: none half-masked
        if not secret:
            continue
        forms = {
            secret,
            repr(secret)[1:-1],
            json.dumps(secret)[1:-1],
            urllib.parse.quote(secret, safe=""),
        }
        for form in forms:
            text = text.replace(form, mask)
    return text
