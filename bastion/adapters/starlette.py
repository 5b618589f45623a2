"""Starlette helpers: the account routes, and rendering Bastion's errors from inside an app."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from bastion.account import Reply
from bastion.core import state_of
from bastion.errors import BastionError
from bastion.responses import OWN_HEADERS

if TYPE_CHECKING:
    from bastion.core import Bastion


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`BastionError` (``exception_handlers=...``)."""
    if not isinstance(exc, BastionError):  # pragma: no cover - registered for BastionError only
        raise exc
    return Response(
        exc.body(),
        status_code=exc.status,
        media_type="application/json",
        headers={**dict(OWN_HEADERS), **exc.headers},
    )


exception_handlers = {BastionError: handle_error}
"""Pass to ``Starlette(exception_handlers=...)`` so Bastion's errors keep their status and body."""


def to_response(reply: Reply) -> Response:
    """A Starlette response for an account-service reply."""
    headers = {**dict(OWN_HEADERS), **reply.headers}
    if reply.body is None:
        return Response(status_code=reply.status, headers=headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


def account_endpoint(bastion: Bastion, name: str) -> Callable[[Request], Any]:
    """The Starlette endpoint of one account route."""

    async def endpoint(request: Request) -> Response:
        body = await request.body() if request.method not in ("GET", "HEAD") else b""
        steps = bastion.account.handle(name, state_of(request), body, dict(request.path_params))
        return to_response(await bastion.runner.run(steps))

    endpoint.__name__ = name
    return endpoint


def account_routes(bastion: Bastion) -> list[Route]:
    """The account routes (DESIGN.md section 4) at ``settings.account_prefix``."""
    prefix = bastion.settings.account_prefix
    grouped: dict[tuple[str, str], list[str]] = {}
    for method, path, name in bastion.account.mount():
        grouped.setdefault((path, name), []).append(method)
    return [
        Route(
            prefix + path, account_endpoint(bastion, name), methods=methods, name=f"account_{name}"
        )
        for (path, name), methods in grouped.items()
    ]


def account_router(bastion: Bastion) -> Router:
    """A Starlette ``Router`` with the account routes; add its routes to your app."""
    return Router(routes=account_routes(bastion))


def require(
    action: str, resource: str, *, scope: str | None = None
) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Decorate an endpoint: refuse the caller unless they may ``action`` on ``resource``.

    ``resource`` may name path parameters (``notes/{note_id}``); API keys need ``scope``.
    """

    def decorate(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            state = state_of(request)
            target = resource.format(**request.path_params)
            state.bastion.require(state.identity, action, target, scope=scope)
            return await endpoint(request)

        return wrapper

    return decorate
