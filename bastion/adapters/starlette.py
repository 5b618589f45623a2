"""Starlette helpers: ``require`` and ``login_required``, the account routes, Bastion's errors."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ExceptionHandler
from starlette.websockets import WebSocket, WebSocketState

from bastion.account import Reply
from bastion.adapters.checks import check_permission, check_user
from bastion.core import state_of
from bastion.errors import BadRequest, BastionError
from bastion.requestbody import read_asgi
from bastion.responses import MEDIA_TYPE, OWN_HEADERS, encode
from bastion.telemetry import telemetry

if TYPE_CHECKING:
    from bastion.core import Bastion

P = ParamSpec("P")
R = TypeVar("R")
Check = Callable[[HTTPConnection], None]


def error_response(exc: BastionError) -> Response:
    """A Starlette response carrying Bastion's JSON error."""
    return Response(
        exc.body(),
        status_code=exc.status,
        media_type=MEDIA_TYPE,
        headers={**dict(OWN_HEADERS), **exc.headers},
    )


async def refuse_websocket(websocket: WebSocket, exc: BastionError) -> None:
    """Refuse a WebSocket: its JSON error as the handshake's answer, or a close (1008).

    The denial response needs the server's ``websocket.http.response`` extension and a socket
    not yet accepted; otherwise a close before accept, which servers answer with 403.
    """
    if websocket.application_state == WebSocketState.CONNECTING and (
        "websocket.http.response" in websocket.scope.get("extensions", {})
    ):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close(code=1008)


async def handle_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    """Starlette exception handler for :class:`BastionError`: its JSON, or a WebSocket refusal."""
    if not isinstance(exc, BastionError):  # pragma: no cover - registered for BastionError only
        raise exc
    telemetry.refused(exc.type, exc.status)
    if isinstance(conn, WebSocket):
        await refuse_websocket(conn, exc)
        return None
    return error_response(exc)


exception_handlers: dict[Any, ExceptionHandler] = {
    BastionError: cast(ExceptionHandler, handle_error)
}
"""``Starlette(exception_handlers=...)``: only for an app not wrapped by ``bastion.asgi``."""


def install(app: Any) -> None:
    """What ``bastion.asgi(app)`` does to a Starlette or FastAPI app it wraps.

    Bastion's errors raised inside the app (a ``require`` refusal, ``bastion.login`` while Redis
    is down) get their JSON answer from the app's own exception middleware, unless the app
    registered a handler for them itself: wrapped from outside, Bastion's middleware would only
    see them after Starlette's ``ServerErrorMiddleware`` had sent a 500.
    """
    handlers = getattr(app, "exception_handlers", None)
    if isinstance(handlers, dict) and BastionError not in handlers:
        app.add_exception_handler(BastionError, handle_error)


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
    with telemetry.account_route(name) as answered:
        try:
            body = b""
            if request.method not in ("GET", "HEAD"):
                limit = bastion.settings.max_body_size
                body = await read_asgi(state.headers, request.stream(), limit)
            reply = await bastion._runner.run(bastion._account.handle(name, state, body, params))
        except ClientDisconnect:
            # No one is left to read the answer; a 400 rather than a 500 in the log.
            disconnected = BadRequest("Client disconnected.")
            reply = bastion._account.failure(name, state, params, disconnected)
        except Exception as exc:
            reply = bastion._account.failure(name, state, params, exc)
        answered(reply.status, reply.body)
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


def _is_async(endpoint: Callable[..., Any]) -> bool:
    """Whether calling ``endpoint`` gives a coroutine (partials and ``__call__`` looked into)."""
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    return inspect.iscoroutinefunction(endpoint) or inspect.iscoroutinefunction(
        getattr(endpoint, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


def _connection(endpoint: Callable[..., Any]) -> tuple[int, str]:
    """Where the endpoint takes its connection: the position of ``request`` or ``websocket``."""
    for index, name in enumerate(inspect.signature(endpoint).parameters):
        if name in ("request", "websocket"):
            return index, name
    raise TypeError(
        f"Bastion's decorators need a 'request' or 'websocket' parameter on {endpoint!r} "
        "(as Starlette's requires does)"
    )


def _guard(check: Check) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator running ``check`` on the connection before the endpoint.

    In the shape of Starlette's ``requires``: functions and ``HTTPEndpoint`` methods, sync or
    async, and WebSocket endpoints, found by their ``request`` / ``websocket`` parameter. HTTP
    refusals are raised as Bastion's errors (rendered as JSON; see :func:`install`); a
    WebSocket is refused here, since no exception handler answers a handshake by itself.
    """

    def decorate(endpoint: Callable[P, R]) -> Callable[P, R]:
        index, name = _connection(endpoint)

        def connection(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
            conn = kwargs[name] if name in kwargs else args[index]
            if not isinstance(conn, HTTPConnection):
                raise TypeError(f"{name!r} is a {type(conn).__name__}, not a Starlette connection")
            return conn

        if name == "websocket":

            @functools.wraps(endpoint)
            async def websocket_wrapper(*args: Any, **kwargs: Any) -> Any:
                websocket = connection(args, kwargs)
                try:
                    check(websocket)
                except BastionError as exc:
                    await refuse_websocket(cast(WebSocket, websocket), exc)
                    return None
                return await cast(Callable[..., Awaitable[Any]], endpoint)(*args, **kwargs)

            return cast(Callable[P, R], websocket_wrapper)

        if _is_async(endpoint):

            @functools.wraps(endpoint)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                check(connection(args, kwargs))
                return await cast(Callable[..., Awaitable[Any]], endpoint)(*args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(endpoint)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # Starlette runs a sync endpoint in its thread pool: the check runs there too.
            check(connection(args, kwargs))
            return endpoint(*args, **kwargs)

        return sync_wrapper

    return decorate


def require(
    action: str, resource: str, *, scope: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an endpoint: refuse the caller unless they may ``action`` on ``resource``.

    ``resource`` may name path parameters (``notes/{note_id}``). Users and guests are judged by
    the policy (none configured: ``ConfigError``), API keys by ``scope`` (none: keys refused).
    """

    def check(conn: HTTPConnection) -> None:
        state = state_of(conn)
        target = resource.format(**conn.path_params)
        check_permission(state.bastion, state.identity, action, target, scope=scope)

    return _guard(check)


@overload
def login_required(endpoint: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def login_required(*, verified: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def login_required(
    endpoint: Callable[P, R] | None = None, /, *, verified: bool = False
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an endpoint: only a signed-in user (a verified one with ``verified=True``).

    ``@login_required`` or ``@login_required(verified=True)``. Guests get 401
    ``user_unauthorized``, API keys 401 ``general_unauthorized_scope`` (a key is no user), and
    unverified users 403 ``user_email_not_verified``.
    """

    def check(conn: HTTPConnection) -> None:
        check_user(state_of(conn).identity, verified=verified)

    decorate: Callable[[Callable[P, R]], Callable[P, R]] = _guard(check)
    return decorate if endpoint is None else decorate(endpoint)
