"""Flask helpers: ``init_app``, ``current_user`` / ``current_identity``, decorators, account routes.

Flask runs Bastion natively over WSGI: the same steps as the ASGI path, on the sync Redis client.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from flask import Blueprint, Flask, Response, current_app, g, redirect, request, url_for
from werkzeug.local import LocalProxy

from bastion.account import Reply
from bastion.adapters.checks import check_permission, check_user, without_secrets
from bastion.core import RequestState, state_of
from bastion.errors import BastionError, PayloadTooLarge, Unauthorized
from bastion.identity import Identity
from bastion.requestbody import read_wsgi
from bastion.responses import MEDIA_TYPE, OWN_HEADERS, encode
from bastion.telemetry import telemetry
from bastion.users import User

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
    telemetry.refused(exc.type, exc.status)
    return _json(exc.to_dict(), exc.status, dict(exc.headers))


LOGIN_VIEW = "bastion.login_view"
"""Key of ``app.extensions`` holding the endpoint guests of the decorated views are sent to."""

EXEMPT_METHODS = frozenset({"OPTIONS"})
"""Methods the decorators let through, as Flask-Login does: a CORS preflight carries no
credentials (Fetch spec), so a view answering OPTIONS itself must be reachable without them."""


def init_app(
    app: Flask, bastion: Bastion, *, account: bool = True, login_view: str | None = None
) -> None:
    """Install Bastion on a Flask app: the WSGI middleware, ``g.identity``, JSON errors, routes.

    ``login_view`` (an endpoint, like Flask-Login's) sends guests that ``login_required`` or
    ``require`` refuse to that page instead of a 401, when the request prefers HTML (a browser's
    navigation); API clients still get the JSON 401.
    """
    app.wsgi_app = bastion.wsgi(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions["bastion"] = bastion
    app.extensions[LOGIN_VIEW] = login_view
    app.register_error_handler(BastionError, _error)

    @app.before_request
    def _identity() -> None:
        g.identity = state_of(request.environ).identity

    if account:
        app.register_blueprint(account_blueprint(bastion))


class _IdentityProxy(LocalProxy[Identity]):
    """``current_identity``: the proxy, and still the function it was (``current_identity()``)."""

    def __call__(self) -> Identity:
        """Who sent the current request (the call form of earlier releases)."""
        return self._get_current_object()


current_identity = _IdentityProxy(lambda: state_of(request.environ).identity)
"""Who sent the current request, as a proxy: ``current_identity.kind``, ``.roles``; calling it
(``current_identity()``) gives the :class:`Identity` itself."""


@dataclasses.dataclass(frozen=True, slots=True)
class SignedInUser(User):
    """The signed-in user's record (no password hash or history), with Flask-Login's members."""

    @property
    def is_authenticated(self) -> bool:
        """True: a user signed in (Flask-Login's ``UserMixin``)."""
        return True

    @property
    def is_active(self) -> bool:
        """Whether an administrator has not disabled the account."""
        return not self.disabled

    @property
    def is_anonymous(self) -> bool:
        """False: this is a user."""
        return False

    def get_id(self) -> str:
        """The user id."""
        return self.id


class AnonymousUser:
    """``current_user`` of a request without a signed-in user (Flask-Login's anonymous user).

    Guests and API keys alike: a key is no user (its identity is ``current_identity``).
    """

    id = None
    is_authenticated = False
    is_active = False
    is_anonymous = True

    def get_id(self) -> None:
        """No id."""
        return None

    def __repr__(self) -> str:
        return "AnonymousUser()"


ANONYMOUS = AnonymousUser()


def _load_user() -> SignedInUser | AnonymousUser:
    """The current request's user, read once per identity (a log-in in the view reads anew)."""
    state = state_of(request.environ)
    identity = state.identity
    cached = g.get("_bastion_user")
    if cached is not None and cached[0] is identity:
        return cast(SignedInUser | AnonymousUser, cached[1])
    user: SignedInUser | AnonymousUser = ANONYMOUS
    if identity.is_authenticated and identity.user_id is not None:
        record = state.bastion.sync.users.get(identity.user_id)
        if record is not None:
            safe = without_secrets(record)
            fields = {f.name: getattr(safe, f.name) for f in dataclasses.fields(User)}
            user = SignedInUser(**fields)
    g._bastion_user = (identity, user)
    return user


current_user: SignedInUser | AnonymousUser = cast(
    SignedInUser | AnonymousUser, LocalProxy(_load_user)
)
"""The signed-in user's :class:`SignedInUser` record (``bastion.sync.users.get``), else
:data:`ANONYMOUS`, whose ``is_authenticated`` is False; read once per request."""


def _wants_html() -> bool:
    """Whether the client prefers an HTML page to JSON (a browser navigating, not ``fetch``)."""
    best = request.accept_mimetypes.best_match(("application/json", "text/html"))
    return best == "text/html"


def _login_redirect() -> Response | None:
    """The redirect to ``login_view`` for a refused guest's browser, if the app named one."""
    login_view = current_app.extensions.get(LOGIN_VIEW)
    if login_view is None or not _wants_html():
        return None
    # The path only (no host): what the login view sends back to stays on this site.
    target = url_for(login_view, next=request.full_path.removesuffix("?"))
    return cast(Response, redirect(target, 303))


def _guard(view: F, check: Callable[[RequestState], None]) -> F:
    """``view`` behind ``check``: sync or async (``ensure_sync``), OPTIONS exempt."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method not in EXEMPT_METHODS:
            state = state_of(request.environ)
            try:
                check(state)
            except Unauthorized:
                if state.identity.is_guest:  # logging in would help: show the way
                    page = _login_redirect()
                    if page is not None:
                        return page
                raise
        return current_app.ensure_sync(view)(*args, **kwargs)

    return cast(F, wrapper)


@overload
def login_required(view: F, /) -> F: ...
@overload
def login_required(*, verified: bool = False) -> Callable[[F], F]: ...
def login_required(view: F | None = None, /, *, verified: bool = False) -> F | Callable[[F], F]:
    """Only a signed-in user may use the view: ``@login_required`` or ``(verified=True)``.

    Guests get 401 ``user_unauthorized`` (or the ``login_view`` page), API keys 401
    ``general_unauthorized_scope`` (a key is no user), unverified users 403
    ``user_email_not_verified`` when ``verified``. OPTIONS requests pass, as in Flask-Login.
    """

    def decorate(view: F) -> F:
        return _guard(view, lambda state: check_user(state.identity, verified=verified))

    return decorate if view is None else decorate(view)


def require(action: str, resource: str, *, scope: str | None = None) -> Callable[[F], F]:
    """Refuse the view unless the caller may ``action`` on ``resource`` (``{arg}`` from the URL).

    Users and guests are judged by the policy (none configured: ``ConfigError``), API keys by
    ``scope`` (no scope: keys refused). Sync and async views; OPTIONS requests pass.
    """

    def check(state: RequestState) -> None:
        target = resource.format(**(request.view_args or {}))
        check_permission(state.bastion, state.identity, action, target, scope=scope)

    def decorate(view: F) -> F:
        return _guard(view, check)

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
        with telemetry.account_route(name) as answered:
            try:
                body = b""
                if request.method not in ("GET", "HEAD"):
                    body = _body(bastion.settings.max_body_size)
                steps = bastion._account.handle(name, state, body, params)
                reply = bastion._sync_runner.run(steps)
            except Exception as exc:
                reply = bastion._account.failure(name, state, params, exc)
            answered(reply.status, reply.body)
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
