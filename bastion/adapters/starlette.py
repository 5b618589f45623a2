"""Starlette helpers: the account routes, and rendering Bastion's errors from inside an app."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from bastion.account import Reply
from bastion.core import state_of
from bastion.errors import BadRequest, BastionError
from bastion.requestbody import read_asgi
from bastion.responsebody import MEDIA_TYPE, encode
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
        media_type=MEDIA_TYPE,
        headers={**dict(OWN_HEADERS), **exc.headers},
    )


exception_handlers = {BastionError: handle_error}
"""Pass to ``Starlette(exception_handlers=...)`` so Bastion's errors keep their status and body."""


def to_response(reply: Reply) -> Response:
    """A Starlette response for an account-service reply."""
    headers = {**dict(OWN_HEADERS), **reply.headers}
    if reply.body is None:
        return Response(status_code=reply.status, headers=headers)
    return Response(
        encode(reply.body), status_code=reply.status, headers=headers, media_type=MEDIA_TYPE
    )


async def serve_account(bastion: Bastion, name: str, request: Request) -> Response:
    """Answer one account route: read the body within ``max_body_size``, then run the route."""
    state = state_of(request)
    params = dict(request.path_params)
    try:
        body = b""
        if request.method not in ("GET", "HEAD"):
            limit = bastion.settings.max_body_size
            body = await read_asgi(state.headers, request.stream(), limit)
        reply = await bastion._runner.run(bastion._account.handle(name, state, body, params))
    except ClientDisconnect:
        # No one is left to read the answer; a 400 rather than a 500 in the log.
        reply = bastion._account.failure(name, state, params, BadRequest("Client disconnected."))
    except Exception as exc:
        reply = bastion._account.failure(name, state, params, exc)
    return to_response(reply)


def account_endpoint(bastion: Bastion, name: str) -> Callable[[Request], Any]:
    """The Starlette endpoint of one account route."""

    async def endpoint(request: Request) -> Response:
        return await serve_account(bastion, name, request)

    endpoint.__name__ = name
    return endpoint


def account_routes(bastion: Bastion) -> list[Route]:
    """The account routes (DESIGN.md section 4) at ``settings.account_prefix``."""
    prefix = bastion.settings.account_prefix
    grouped: dict[tuple[str, str], list[str]] = {}
    for method, path, name in bastion._account.mount():
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
