"""Starlette helpers: render Bastion's errors as its JSON body from inside an app."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import BastionError


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`BastionError` (``exception_handlers=...``)."""
    if not isinstance(exc, BastionError):  # pragma: no cover - registered for BastionError only
        raise exc
    return Response(
        exc.body(),
        status_code=exc.status,
        media_type="application/json",
        headers={"cache-control": "no-store", **exc.headers},
    )


exception_handlers = {BastionError: handle_error}
"""Pass to ``Starlette(exception_handlers=...)`` so Bastion's errors keep their status and body."""
