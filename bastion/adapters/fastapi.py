"""FastAPI helpers: the account routes as an ``APIRouter`` with a documented OpenAPI schema.

The endpoints read the raw body and hand it to the same account service as Starlette and Flask,
so errors keep Bastion's JSON contract (not FastAPI's 422 format); the request and response
models below exist for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from bastion.account import BODIES
from bastion.adapters.starlette import serve_account
from bastion.core import state_of
from bastion.identity import Identity

if TYPE_CHECKING:
    from bastion.core import Bastion


class Body(BaseModel):
    """A request body of the account routes: JSON, and no field but the documented ones."""

    model_config = ConfigDict(extra="forbid")


class SignUp(Body):
    """Body of ``POST /account``."""

    email: str = Field(examples=["ada@example.com"])
    password: str = Field(min_length=8, max_length=256)
    name: str | None = None
    phone: str | None = Field(default=None, examples=["+15551234567"])


class LogIn(Body):
    """Body of ``POST /account/sessions``."""

    email: str
    password: str


class PasswordChange(Body):
    """Body of ``PATCH /account/password``."""

    password: str = Field(min_length=8, max_length=256)
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
                "content": {"application/json": {"schema": body.model_json_schema()}},
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


def current_identity(request: Request) -> Identity:
    """Dependency: who sent the request (``Depends(current_identity)``)."""
    return state_of(request).identity


def require(
    action: str, resource: str, *, scope: str | None = None
) -> Callable[[Request], Identity]:
    """Dependency refusing the caller unless they may ``action`` on ``resource``.

    ``resource`` may name path parameters (``notes/{note_id}``); API keys need ``scope``.
    Register ``exception_handlers`` from :mod:`bastion.adapters.starlette` on the app so the
    refusal keeps Bastion's JSON body.
    """

    def dependency(request: Request) -> Identity:
        state = state_of(request)
        state.bastion.require(
            state.identity, action, resource.format(**request.path_params), scope=scope
        )
        return state.identity

    return dependency
