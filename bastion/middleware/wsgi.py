"""``BastionWSGIMiddleware``: the WSGI twin of the ASGI middleware (Flask and friends).

Both run the same steps (:meth:`Bastion.admit`); this one drives them with the sync Redis client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

from bastion.clientip import wsgi_peer
from bastion.core import Bastion, RequestState
from bastion.errors import BastionError, ConfigError
from bastion.identity import Identity
from bastion.requestpath import wsgi_path
from bastion.responses import merge_headers
from bastion.settings import Settings
from bastion.telemetry import telemetry

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_BODY_HEADERS = (("CONTENT_TYPE", b"content-type"), ("CONTENT_LENGTH", b"content-length"))
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def headers_of(environ: Environ) -> list[tuple[bytes, bytes]]:
    """The request headers as ASGI spells them: lower-case names, bytes."""
    found = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower().encode("latin-1")
            found.append((name, str(value).encode("latin-1")))
    # WSGI keeps these two apart from the HTTP_ ones; the account routes check them.
    for key, name in _BODY_HEADERS:
        value = environ.get(key)
        if value:
            found.append((name, str(value).encode("latin-1")))
    return found


def publish_identity(environ: MutableMapping[str, Any], identity: Identity) -> None:
    """Where a WSGI app finds the identity: ``environ["bastion.identity"]``."""
    environ["bastion.identity"] = identity


def status_line(status: int) -> str:
    """``"401 Unauthorized"`` for 401."""
    return f"{status} {_REASONS.get(status, 'Error')}"


class BastionWSGIMiddleware:
    """Authenticate and authorize each WSGI request, then call the app.

    Sets ``environ["bastion"]`` (a :class:`RequestState`) and ``environ["bastion.identity"]``;
    refusals are JSON errors and the app is never called for them.
    """

    def __init__(
        self, app: WSGIApp, bastion: Bastion | None = None, *, settings: Settings | None = None
    ) -> None:
        self.app = app
        self.bastion = bastion if bastion is not None else Bastion(settings)
        self._watching = False
        self._guarding = self.bastion.authorizer.active
        for backend in self.bastion.credentials:
            if not backend._has_sync:
                raise ConfigError(
                    "credentials",
                    backend.name,
                    f"a backend with authenticate_sync: {backend!r} has only the async "
                    "authenticate, and a WSGI app checks credentials without an event loop",
                )
        # Bound once: without a tracer, the telemetry hook costs a call and a check of one global.
        self._observe = telemetry.admission
        self._sent_credential = self.bastion._sent_credential

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self._watching:
            self._watching = True
            if self.bastion.authorizer.active:
                self.bastion.policy_watcher.start()
        headers = headers_of(environ)
        try:
            identity, credentials = self.bastion._sync_runner.run(
                self._observe(
                    self.bastion._admit(
                        str(environ.get("REQUEST_METHOD", "GET")),
                        str(environ.get("wsgi.url_scheme", "http")),
                        wsgi_path(
                            str(environ.get("SCRIPT_NAME", "")), str(environ.get("PATH_INFO", "/"))
                        )
                        if self._guarding
                        else "",
                        headers,
                    ),
                    self._sent_credential,
                    headers,
                )
            )
        except BastionError as exc:
            return self._refuse(exc, headers, start_response)

        # All positional: keyword arguments to a class cost a dict per request.
        state = RequestState(
            self.bastion,
            identity,
            credentials,
            headers,
            wsgi_peer(environ),
            environ,
            False,  # asgi
            None,  # receive
            publish_identity,
        )
        environ["bastion"] = state

        def start_with_cookies(
            status: str, response_headers: list[Any], exc_info: Any = None
        ) -> Any:
            if state.response_headers:
                merged = merge_headers(
                    [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers],
                    state.response_headers,
                )
                response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in merged]
            return start_response(status, response_headers, exc_info)

        try:
            return _closing(self.app(environ, start_with_cookies))
        except BastionError as exc:
            # Raised by Bastion's calls inside the app before it answered (log-in while Redis
            # is down, ...): rendered as its JSON error.
            return self._refuse(exc, headers, start_response)

    def _refuse(
        self, exc: BastionError, headers: list[tuple[bytes, bytes]], start_response: StartResponse
    ) -> Iterable[bytes]:
        status, out, body = self.bastion.refusal(exc, headers)
        start_response(
            status_line(status), [(k.decode("latin-1"), v.decode("latin-1")) for k, v in out]
        )
        return [body]


def _closing(result: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from result
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
