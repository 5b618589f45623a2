"""Flask helpers: ``init_app``, the current identity, a ``require`` decorator, the account routes.

Flask runs Bastion natively over WSGI: the same steps as the ASGI path, on the sync Redis client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, request

from bastion.account import Reply
from bastion.core import state_of
from bastion.errors import BastionError, PayloadTooLarge
from bastion.identity import Identity
from bastion.requestbody import read_wsgi
from bastion.responsebody import MEDIA_TYPE, encode
from bastion.responses import OWN_HEADERS

if TYPE_CHECKING:
    from bastion.core import Bastion

F = TypeVar("F", bound=Callable[..., Any])


def _json(body: Any, status: int, headers: dict[str, str]) -> Response:
    # Bastion's own encoding, not the app's JSON provider (which sorts keys and adds spaces):
    # the same bytes as on Starlette and FastAPI.
    response = current_app.response_class(
        b"" if body is None else encode(body), status=status, mimetype=MEDIA_TYPE
    )
    for name, value in (*OWN_HEADERS, *headers.items()):
        response.headers[name] = value
    return response


def _error(exc: BastionError) -> Response:
    return _json(exc.to_dict(), exc.status, dict(exc.headers))


def init_app(app: Flask, bastion: Bastion, *, account: bool = True) -> None:
    """Install Bastion on a Flask app: the WSGI middleware, ``g.identity``, JSON errors, routes."""
    app.wsgi_app = bastion.wsgi(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions["bastion"] = bastion
    app.register_error_handler(BastionError, _error)

    @app.before_request
    def _identity() -> None:
        g.identity = state_of(request.environ).identity

    if account:
        app.register_blueprint(account_blueprint(bastion))


def current_identity() -> Identity:
    """Who sent the current request."""
    return state_of(request.environ).identity


def require(action: str, resource: str, *, scope: str | None = None) -> Callable[[F], F]:
    """Refuse the view unless the caller may ``action`` on ``resource`` (``{arg}`` from the URL).

    Users and guests are judged by the policy, API keys by ``scope`` (no scope: keys refused).
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bastion: Bastion = current_app.extensions["bastion"]
            target = resource.format(**(request.view_args or {}))
            bastion.require(current_identity(), action, target, scope=scope)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _body(limit: int) -> bytes:
    """The request body, read within ``limit`` (see :func:`bastion.requestbody.read_wsgi`)."""
    # A hook of the app's may have read it first (Flask's get_json keeps a copy): that copy is
    # the body, since the stream it came from is spent.
    cached = getattr(request, "_cached_data", None)
    if isinstance(cached, bytes):
        if len(cached) > limit:
            raise PayloadTooLarge(limit)
        return cached
    return read_wsgi(request.environ, limit)


def _view(bastion: Bastion, name: str) -> Callable[..., Response]:
    def view(**params: str) -> Response:
        state = state_of(request.environ)
        reply: Reply
        try:
            body = b""
            if request.method not in ("GET", "HEAD"):
                body = _body(bastion.settings.max_body_size)
            reply = bastion._sync_runner.run(bastion._account.handle(name, state, body, params))
        except Exception as exc:
            reply = bastion._account.failure(name, state, params, exc)
        return _json(reply.body, reply.status, reply.headers)

    view.__name__ = name
    return view


def account_blueprint(bastion: Bastion) -> Blueprint:
    """A ``Blueprint`` with the account routes at ``settings.account_prefix``."""
    blueprint = Blueprint("bastion_account", __name__, url_prefix=bastion.settings.account_prefix)
    for method, path, name in bastion._account.mount():
        # Exactly the paths the route map exempts: no trailing-slash twins ("" is the prefix).
        rule = path.replace("{session_id}", "<session_id>")
        blueprint.add_url_rule(
            rule, endpoint=f"{name}_{method.lower()}", view_func=_view(bastion, name),
            methods=[method],
        )  # fmt: skip
    return blueprint
