"""``BastionMiddleware``: pure ASGI, authenticates every HTTP and WebSocket request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.authentication import AuthCredentials

from bastion.cookies import clear_cookie
from bastion.core import Bastion, RequestState
from bastion.credentials import Credentials, read_credentials
from bastion.csrf import is_cross_site
from bastion.errors import (
    APIKeyAndSession,
    APIKeyInvalid,
    BastionError,
    CrossSiteRequest,
    JWTAndSession,
    JWTInvalid,
    SessionInvalid,
    Unauthorized,
)
from bastion.identity import Identity
from bastion.redisio import Steps, together
from bastion.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("bastion.middleware")

_PROBLEMS: dict[tuple[str, str | None], type[BastionError]] = {
    ("malformed", "session"): SessionInvalid,
    ("malformed", "jwt"): JWTInvalid,
    ("malformed", "key"): APIKeyInvalid,
    ("jwt_and_session", "jwt"): JWTAndSession,
    ("key_and_session", "key"): APIKeyAndSession,
}


class BastionMiddleware:
    """Authenticate each request (session cookie or header, JWT, API key), then call the app.

    Sets ``scope["user"]`` (an :class:`Identity`), ``scope["auth"]`` (Starlette's
    ``AuthCredentials``, so ``starlette.authentication.requires`` works) and ``scope["bastion"]``.
    A bad credential is answered with 401, a cross-site cookie request with 403 and an unreachable
    Redis with 503: the app is never called for them.
    """

    def __init__(
        self, app: ASGIApp, bastion: Bastion | None = None, *, settings: Settings | None = None
    ) -> None:
        self.app = app
        self.bastion = bastion if bastion is not None else Bastion(settings)
        s = self.bastion.settings
        self._cookie_name = s.cookie_name.encode()
        self._session_header = s.session_header.lower().encode()
        self._allowed_origins = s.allowed_origins
        self._clear_cookie = (b"set-cookie", clear_cookie(s).encode())
        self._watching = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self._watching:
            # Started by the first request, so each worker process (after a fork) runs its own.
            self._watching = True
            if self.bastion.authorizer.active:
                self.bastion.policy_watcher.start()
        credentials = read_credentials(scope["headers"], self._cookie_name, self._session_header)
        authorizer = self.bastion.authorizer
        try:
            target = None
            if authorizer.active:
                target = authorizer.target(scope.get("method", "GET"), _raw_path(scope))
            rows_for = target.resource if target and authorizer.needs_rows(target) else None
            identity, rows = await self._authenticate(credentials, rows_for)
            if credentials.source == "cookie" and is_cross_site(
                scope.get("method", "GET"),
                scope.get("scheme", "http"),
                scope["headers"],
                self._allowed_origins,
                websocket=scope["type"] == "websocket",
            ):
                raise CrossSiteRequest()
            if authorizer.active:
                authorizer.authorize(identity, target, rows)
        except BastionError as exc:
            # A stale cookie is cleared with the 401 so the browser's next request is a guest's.
            clear = credentials.source == "cookie" and isinstance(exc, Unauthorized)
            await self._refuse(scope, receive, send, exc, clear)
            return

        state = RequestState(self.bastion, identity, credentials)
        scope["bastion"] = state
        scope["user"] = identity
        scope["auth"] = AuthCredentials(identity.auth_scopes)

        started = False

        async def send_with_cookies(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if state.response_headers:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *state.response_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookies)
        except BastionError as exc:
            # Raised by Bastion's own calls inside the app (log-in while Redis is down, ...):
            # rendered here as its JSON error unless the app already began its response.
            if started or scope["type"] != "http":
                raise
            await self._refuse(scope, receive, send, exc, clear=False)

    async def _authenticate(
        self, credentials: Credentials, rows_for: str | None
    ) -> tuple[Identity, list[tuple[str, str]]]:
        """Who is calling, plus the resource's own permission rows when they count.

        The rows are read in the same round trip as the credential (one pipeline), never after
        it; API keys skip resource permissions, so their requests do not read them.
        """
        kind, token = credentials.kind, credentials.token
        if credentials.problem is not None:
            raise _PROBLEMS[credentials.problem, kind]()
        bastion = self.bastion
        rows_steps = bastion.permissions.core.rows(rows_for) if rows_for and kind != "key" else None
        if kind is None or token is None:
            rows = await bastion.runner.run(rows_steps) if rows_steps is not None else []
            return Identity.guest(), rows
        if kind == "session":
            active, rows = await self._with_rows(
                bastion.sessions.core.authenticate(token), rows_steps
            )
            if active is None:
                raise SessionInvalid()
            return Identity.for_session(active.user_id, active.session_id), rows
        if kind == "jwt":
            subject = bastion.jwt.verify(token)
            # Session-bound: a JWT dies with its session (revoked, evicted, expired).
            active, rows = await self._with_rows(
                bastion.sessions.core.alive(subject.user_id, subject.session_id), rows_steps
            )
            if active is None:
                raise JWTInvalid("Failed to verify JWT: its session has ended.")
            return Identity.for_jwt(subject.user_id, subject.session_id), rows
        info = await bastion.api_keys.authenticate(token)
        return Identity.for_key(info.id, info.scopes), []

    async def _with_rows(
        self, steps: Steps[Any], rows_steps: Steps[list[tuple[str, str]]] | None
    ) -> tuple[Any, list[tuple[str, str]]]:
        if rows_steps is None:
            return await self.bastion.runner.run(steps), []
        found, rows = await self.bastion.runner.run(together(steps, rows_steps))
        return found, rows

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, exc: BastionError, clear: bool
    ) -> None:
        logger.info(
            "refused %s %s: %s (%d)",
            scope.get("method", "WS"),
            scope.get("path"),
            exc.type,
            exc.status,
        )
        body = exc.body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
        ]
        if clear:
            headers.append(self._clear_cookie)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # WebSocket: answer the handshake with the JSON error where the server supports it,
        # else close before accepting (the server then answers 403).
        await receive()
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {"type": "websocket.http.response.start", "status": exc.status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def _raw_path(scope: Scope) -> str:
    # The path as sent, still percent-encoded, so an encoded "/" cannot split an id in two.
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.split(b"?", 1)[0].decode("latin-1")
    return str(scope.get("path", "/"))
