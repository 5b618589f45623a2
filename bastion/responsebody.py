"""How Bastion encodes the JSON bodies it sends, the same bytes on Starlette, FastAPI and Flask."""

from __future__ import annotations

import json
from typing import Any

MEDIA_TYPE = "application/json"
"""The ``Content-Type`` of every body Bastion sends (JSON is UTF-8 by definition: no charset)."""


def encode(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8: Starlette's ``JSONResponse`` encoding, for every app."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # A lone surrogate (from a record no sign-up made: a store of the app's own) cannot be
    # UTF-8; written back as its JSON escape it stays the same string value, and no 500.
    return text.encode("utf-8", "backslashreplace")
