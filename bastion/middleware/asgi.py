"""``BastionMiddleware``: pure ASGI, authenticates every HTTP and WebSocket request."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from bastion.core import Bastion, Publish, RequestState
from bastion.errors import BastionError
from bastion.identity import Identity
from bastion.responses import merge_headers
from bastion.settings import Settings
from bastion.telemetry import telemetry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _publish_user(scope: Scope, identity: Identity) -> None:
    scope["user"] = identity


@functools.cache
def scope_publisher() -> Publish:
    """Sets ``scope["user"]``, and ``scope["auth"]`` (Starlette's ``AuthCredentials``).

    Starlette is imported here, when the first ASGI middleware is built, and nowhere on the
    WSGI side. ``scope["auth"]`` is Starlette's convention: where Starlette is not installed no
    one reads it, so only ``scope["user"]`` is set.
    """
    try:
        from starlette.authentication import AuthCredentials
    except ImportError:
        return _publish_user
    # Users and guests of one kind share one scope list (theirs depend on the kind alone);
    # only scoped callers (API keys) have their own.
    shared: dict[str, AuthCredentials] = {}

    def publish(scope: Scope, identity: Identity) -> None:
        scope["user"] = identity
        if identity.key_id is not None:
            scope["auth"] = AuthCredentials(identity.auth_scopes)
            return
        credentials = shared.get(identity.kind)
        if credentials is None:
            credentials = shared[identity.kind] = AuthCredentials(identity.auth_scopes)
        scope["auth"] = credentials

    return publish


class BastionMiddleware:
    """Authenticate each request (session cookie or header, JWT, API key), then call the app.

    Sets ``scope["user"]`` (an :class:`Identity`), ``scope["auth"]`` (Starlette's
    ``AuthCredentials``, so ``starlette.authentication.requires`` works; set when Starlette is
    installed) and ``scope["bastion"]``.
    A bad credential is answered with 401, a cross-site cookie request with 403 and an unreachable
    Redis with 503: the app is never called for them.
    """

    def __init__(
        self, app: ASGIApp, bastion: Bastion | None = None, *, settings: Settings | None = None
    ) -> None:
        self.app = app
        self.bastion = bastion if bastion is not None else Bastion(settings)
        self._watching = False
        self._guarding = self.bastion.authorizer.active
        self._publish = scope_publisher()
        # Bound once, as every request calls them. Without a tracer the telemetry hook costs a
        # call and a check of one global.
        self._run = self.bastion._runner.run
        self._admit = self.bastion._admit
        self._observe = telemetry.admission
        self._sent_credential = self.bastion._sent_credential
        if hasattr(app, "add_exception_handler"):
            # A Starlette or FastAPI app (so Starlette is installed): errors Bastion's calls
            # raise inside it render as their JSON, with no handler to register by hand.
            from bastion.adapters.starlette import install

            install(app)
        if hasattr(app, "openapi_schema"):
            # FastAPI: its OpenAPI document shows the registered credential kinds.
            from bastion.adapters.fastapi import document_credentials

            document_credentials(cast(Any, app), self.bastion)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if not self._watching:
            # Started by the first request, so each worker process (after a fork) runs its own.
            self._watching = True
            if self.bastion.authorizer.active:
                self.bastion.policy_watcher.start()
        headers = scope["headers"]
        try:
            identity, credentials = await self._run(
                self._observe(
                    self._admit(
                        scope.get("method", "GET"),
                        scope.get("scheme", "http"),
                        scope.get("path", "/") if self._guarding else "",
                        headers,
                        kind == "websocket",
                    ),
                    self._sent_credential,
                    headers,
                )
            )
        except BastionError as exc:
            await self._refuse(scope, receive, send, exc)
            return

        client = scope.get("client")
        # All positional: keyword arguments to a class cost a dict per request.
        state = RequestState(
            self.bastion,
            identity,
            credentials,
            headers,
            client[0] if client else "",
            scope,
            True,  # asgi
            receive,
            self._publish,
        )
        scope["bastion"] = state
        started = False

        async def send_with_cookies(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if state.response_headers:
                    message = dict(message)
                    message["headers"] = merge_headers(
                        message.get("headers", ()), state.response_headers
                    )
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookies)
        except BastionError as exc:
            # Raised by Bastion's own calls inside the app (log-in while Redis is down, ...):
            # rendered here as its JSON error unless the app already began its response.
            if started or kind != "http":
                raise
            await self._refuse(scope, receive, send, exc)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: BastionError) -> None:
        status, headers, body = self.bastion.refusal(exc, scope["headers"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # WebSocket: answer the handshake with the JSON error where the server supports it,
        # else close before accepting (the server then answers 403).
        await receive()
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
