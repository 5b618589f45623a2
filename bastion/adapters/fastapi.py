"""FastAPI helpers: ``current_user`` / ``current_identity`` / ``require`` dependencies, the
account routes as an ``APIRouter``, and the OpenAPI security schemes of Bastion's credentials.

The dependencies raise Bastion's errors, which ``bastion.asgi(app)`` has the app render as their
JSON. The account endpoints read the raw body and hand it to the same account service as
Starlette and Flask, so errors keep Bastion's JSON contract (not FastAPI's 422 format); the
request and response models below exist for the OpenAPI document.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from bastion.account import BODIES
from bastion.adapters.checks import check_permission, user_refusal, without_secrets
from bastion.adapters.starlette import serve_account
from bastion.core import state_of
from bastion.errors import Unauthorized, UserBlocked
from bastion.identity import Identity
from bastion.settings import Settings
from bastion.users import User

if TYPE_CHECKING:
    from bastion.core import Bastion
    from bastion.credentials import CredentialRegistry

T = TypeVar("T")


class Body(BaseModel):
    """A request body of the account routes: JSON, and no field but the documented ones."""

    model_config = ConfigDict(extra="forbid")


class SignUp(Body):
    """Body of ``POST /account``."""

    email: str = Field(examples=["ada@example.com"])
    password: str  # its length limits are the settings' (account_router puts them in the schema)
    name: str | None = None
    phone: str | None = Field(default=None, examples=["+15551234567"])


class LogIn(Body):
    """Body of ``POST /account/sessions``."""

    email: str
    password: str


class PasswordChange(Body):
    """Body of ``PATCH /account/password``."""

    password: str  # as in SignUp
    oldPassword: str


class Confirm(Body):
    """Optional body of the routes that end other sessions: the password, to re-authenticate."""

    password: str | None = None


class UserOut(BaseModel):
    """A user as the account routes show it."""

    id: str
    email: str
    name: str
    phone: str
    emailVerification: bool
    labels: list[str]


class SessionOut(BaseModel):
    """One session (never its secret)."""

    id: str
    userId: str
    created: str
    expires: str
    lastSeen: str
    ip: str
    userAgent: str
    current: bool


class SessionList(BaseModel):
    """The caller's sessions."""

    total: int
    sessions: list[SessionOut]


class JWTOut(BaseModel):
    """A JWT minted from the current session."""

    jwt: str


class ErrorOut(BaseModel):
    """Every error: ``{"code", "type", "message"}``."""

    code: int
    type: str
    message: str


_BODIES: dict[str, type[Body]] = {
    "sign_up": SignUp,
    "log_in": LogIn,
    "change_password": PasswordChange,
    "delete_sessions": Confirm,
    "delete_session": Confirm,
}
# Bodies that set a new password: its limits in their schema are the deployment's own settings.
_NEW_PASSWORD: frozenset[type[Body]] = frozenset({SignUp, PasswordChange})
# Bodies that may be left out, having no required field (the password is needed only
# outside the re-auth window); the account service's table says which fields each route takes.
_OPTIONAL_BODIES = frozenset(name for name, (required, _) in BODIES.items() if not required)
_ANSWERS: dict[str, tuple[int, type[BaseModel] | None]] = {
    "sign_up": (201, UserOut),
    "get_account": (200, UserOut),
    "log_in": (201, SessionOut),
    "list_sessions": (200, SessionList),
    "delete_sessions": (204, None),
    "delete_session": (204, None),
    "create_jwt": (201, JWTOut),
    "change_password": (200, UserOut),
}
_SUMMARIES = {
    "sign_up": "Sign up",
    "get_account": "The current user",
    "log_in": "Log in: start a session (sets the session cookie)",
    "list_sessions": "The caller's sessions",
    "delete_sessions": "Log out everywhere",
    "delete_session": "Log out one session ('current' or an id)",
    "create_jwt": "A JWT for the current session",
    "change_password": "Change the password (other sessions end)",
}


def _schema(body: type[Body], settings: Settings) -> dict[str, Any]:
    """The JSON schema of a request body, with a new password's limits from ``settings``."""
    schema = body.model_json_schema()
    if body in _NEW_PASSWORD:
        low, high = settings.password_min_length, settings.password_max_length
        schema["properties"]["password"].update(
            minLength=low,
            maxLength=high,
            description=f"At least {low} visible characters and at most {high} characters.",
        )
    return schema


def _endpoint(bastion: Bastion, name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await serve_account(bastion, name, request)

    endpoint.__name__ = f"account_{name}"
    return endpoint


def account_router(bastion: Bastion) -> APIRouter:
    """An ``APIRouter`` with the account routes at ``settings.account_prefix``."""
    router = APIRouter(prefix=bastion.settings.account_prefix, tags=["account"])
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 429, 500, 501, 503)
    }
    for method, path, name in bastion._account.mount():
        status, model = _ANSWERS[name]
        extra: dict[str, Any] = {}
        body = _BODIES.get(name)
        if body is not None:
            extra["requestBody"] = {
                "required": name not in _OPTIONAL_BODIES,
                "content": {"application/json": {"schema": _schema(body, bastion.settings)}},
            }
        responses = dict(errors)
        responses[status] = {"model": model} if model else {"description": "No content"}
        router.add_api_route(
            path,
            _endpoint(bastion, name),
            methods=[method],
            status_code=status,
            response_model=None,
            responses=responses,
            summary=_SUMMARIES[name],
            openapi_extra=extra or None,
        )
    return router


# The credentials as OpenAPI security schemes, for the document only: the middleware has read
# them already, so they never refuse anything here (auto_error=False). They mark which routes
# take users only and which take scoped callers (API keys) too; ``document_credentials``, which
# ``bastion.asgi(app)`` installs, replaces them with the schemes of the Bastion's registered
# transports (its cookie and header names, the app's own kinds). Unreplaced, they show the
# built-in kinds under the default settings' names.
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Settings)}
SESSION_COOKIE = APIKeyCookie(
    name=str(_DEFAULTS["cookie_name"]),
    scheme_name="BastionSessionCookie",
    description="The session cookie a log-in sets (browsers).",
    auto_error=False,
)
SESSION_HEADER = APIKeyHeader(
    name=str(_DEFAULTS["session_header"]),
    scheme_name="BastionSessionHeader",
    description="The session token, for clients that cannot keep cookies (X-Bastion-Fallback).",
    auto_error=False,
)
BEARER_JWT = HTTPBearer(
    scheme_name="BastionJWT",
    bearerFormat="JWT",
    description="A JWT minted from a session (POST /account/jwts).",
    auto_error=False,
)
API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="BastionAPIKey",
    description="A scoped API key (bst_...); also accepted as Authorization: Bearer.",
    auto_error=False,
)
USER_SCHEMES: tuple[Callable[..., Any], ...] = (SESSION_COOKIE, SESSION_HEADER, BEARER_JWT)
ALL_SCHEMES: tuple[Callable[..., Any], ...] = (*USER_SCHEMES, API_KEY)
_USER_MARKS = frozenset(cast(Any, s).scheme_name for s in USER_SCHEMES)
_SCOPED_MARK = API_KEY.scheme_name


def document_credentials(app: FastAPI, bastion: Bastion) -> None:
    """Show ``bastion``'s registered credential kinds in ``app``'s OpenAPI document.

    Every route guarded by Bastion's dependencies lists, as alternatives, the schemes of the
    user kinds' transports (session cookie and header, JWT, the app's own user kinds) and, where
    it takes scoped callers, the scoped kinds' (API keys, ...). ``bastion.asgi(app)`` calls it;
    an app that adds ``BastionMiddleware`` with ``app.add_middleware`` calls it itself.
    """
    original = app.openapi
    registry = bastion.credentials

    def openapi() -> dict[str, Any]:
        schema = original()
        marked = False
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "security" in operation:
                    marked = _derive(operation, registry) or marked
        if marked:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            for name in (*_USER_MARKS, _SCOPED_MARK):
                schemes.pop(name, None)
            schemes.update(registry.openapi_schemes())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def _derive(operation: dict[str, Any], registry: CredentialRegistry) -> bool:
    """Replace the marks in an operation's ``security`` with the registry's schemes."""
    names = {name for requirement in operation["security"] for name in requirement}
    if not names & (_USER_MARKS | {_SCOPED_MARK}):
        return False
    kept = [
        requirement
        for requirement in operation["security"]
        if not set(requirement) & (_USER_MARKS | {_SCOPED_MARK})
    ]
    derived = registry.scheme_names(scoped=False) if names & _USER_MARKS else []
    if _SCOPED_MARK in names:
        derived += registry.scheme_names(scoped=True)
    operation["security"] = kept + [{name: []} for name in derived]
    return True


def name_schemes(app: FastAPI, bastion: Bastion | Settings) -> None:
    """The earlier name of :func:`document_credentials`.

    Given the settings (its first form), it only renames the session cookie and header in the
    built-in schemes; given the Bastion, it shows every registered kind.
    """
    if not isinstance(bastion, Settings):
        document_credentials(app, bastion)
        return
    settings = bastion
    original = app.openapi
    names = {
        SESSION_COOKIE.scheme_name: settings.cookie_name,
        SESSION_HEADER.scheme_name: settings.session_header,
    }

    def openapi() -> dict[str, Any]:
        schema = original()
        schemes = schema.get("components", {}).get("securitySchemes", {})
        for scheme_name, name in names.items():
            if scheme_name in schemes:
                schemes[scheme_name]["name"] = name
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _documented(
    dependency: Callable[[Request], Awaitable[T]], schemes: tuple[Callable[..., Any], ...]
) -> Callable[..., Awaitable[T]]:
    """``dependency`` with ``schemes`` as sub-dependencies: its routes' OpenAPI ``security``.

    FastAPI lists each as an alternative (any one of them will do), as fastapi-users declares
    its transports; with ``auto_error=False`` they never refuse anything themselves.
    """

    async def documented(request: Request, **_: Any) -> T:
        return await dependency(request)

    parameters = [inspect.Parameter("request", _KEYWORD, annotation=Request)]
    parameters += [
        inspect.Parameter(f"bastion_{i}", _KEYWORD, default=Security(scheme))
        for i, scheme in enumerate(schemes)
    ]
    cast(Any, documented).__signature__ = inspect.Signature(parameters)
    documented.__name__ = dependency.__name__
    return documented


def _identity_dependency(optional: bool, verified: bool) -> Callable[..., Awaitable[Any]]:
    async def current_identity(request: Request) -> Identity | None:
        identity = state_of(request).identity
        if verified:
            refusal = user_refusal(identity, verified=True)
        else:
            refusal = Unauthorized() if identity.is_guest else None
        if refusal is None:
            return identity
        if optional:
            return None
        raise refusal

    return _documented(current_identity, USER_SCHEMES if verified else ALL_SCHEMES)


@overload
def current_identity(request: Request) -> Identity: ...
@overload
def current_identity(
    *, optional: Literal[False] = False, verified: bool = False
) -> Callable[..., Awaitable[Identity]]: ...
@overload
def current_identity(
    *, optional: bool, verified: bool = False
) -> Callable[..., Awaitable[Identity | None]]: ...
def current_identity(
    request: Request | None = None, *, optional: bool = False, verified: bool = False
) -> Identity | Callable[..., Awaitable[Identity | None]]:
    """Dependency factory: who sent the request, ``Depends(current_identity())``.

    Guests get 401 ``user_unauthorized``; API keys pass (a key is an identity, not a user)
    unless ``verified``, which asks for a verified user (401 for a key, 403 for an unverified
    user). ``optional=True`` gives None instead of any of these refusals.
    ``Depends(current_identity)``, the earlier form, still gives any identity, guests included.
    """
    if request is not None:
        return state_of(request).identity
    return _identity_dependency(optional, verified)


# FastAPI calls ``Depends(current_identity)`` with the request only (by keyword): it must see
# that one parameter, not the factory's options (it would take them from the query string).
cast(Any, current_identity).__signature__ = inspect.Signature(
    [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
)


@overload
def current_user(
    *, optional: Literal[False] = False, verified: bool = False
) -> Callable[..., Awaitable[User]]: ...
@overload
def current_user(
    *, optional: bool, verified: bool = False
) -> Callable[..., Awaitable[User | None]]: ...
def current_user(
    *, optional: bool = False, verified: bool = False
) -> Callable[..., Awaitable[User | None]]:
    """Dependency factory: the signed-in user's record, ``Depends(current_user())``.

    Read with ``bastion.users.get`` (async), its password hash and history blanked. Guests get
    401 ``user_unauthorized``, API keys 401 ``general_unauthorized_scope`` (a key is no user), a
    user deleted or disabled since the request began 401, and with ``verified`` an unverified
    user 403 ``user_email_not_verified``.
    ``optional=True`` gives None instead of these refusals (never instead of a 503).
    """

    async def current_user(request: Request) -> User | None:
        state = state_of(request)
        identity = state.identity
        refusal = user_refusal(identity, verified=verified)
        user: User | None = None
        if refusal is None and identity.user_id is not None:
            user = await state.bastion.users.get(identity.user_id)
            if user is None:
                refusal = Unauthorized()
            elif user.disabled:
                refusal = UserBlocked()
        if refusal is None and user is not None:
            return without_secrets(user)
        if optional:
            return None
        raise refusal or Unauthorized()

    return _documented(current_user, USER_SCHEMES)


def require(action: str, resource: str, *, scope: str | None = None) -> Callable[..., Any]:
    """Dependency: refuse the caller unless they may ``action`` on ``resource``; the identity.

    ``resource`` may name path parameters (``notes/{note_id}``). Users and guests are judged by
    the policy (none configured: ``ConfigError``), API keys by ``scope`` (none: keys refused).
    The refusal is Bastion's JSON error with no handler to register (``bastion.asgi(app)``).
    """

    async def require(request: Request) -> Identity:
        state = state_of(request)
        target = resource.format(**request.path_params)
        check_permission(state.bastion, state.identity, action, target, scope=scope)
        return state.identity

    return _documented(require, USER_SCHEMES if scope is None else ALL_SCHEMES)
