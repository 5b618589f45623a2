"""The demo app ``bastion demo`` serves: log in as a user id, see who you are, manage sessions."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.adapters.starlette import exception_handlers
from bastion.core import Bastion
from bastion.errors import BadRequest, BastionError, Unauthorized

USAGE = """\
Bastion demo on {url}  ({backend})

  # log in as "alice" (the demo trusts the user id; real apps check a password first)
  curl -si -X POST {url}/login -H 'X-Bastion-Fallback: true' -d '{{"user": "alice"}}'
  # then send the token from the X-Bastion-Session response header (or use the cookie):
  curl -s {url}/me -H 'X-Bastion-Session: <token>'
  curl -s {url}/sessions -H 'X-Bastion-Session: <token>'
  curl -si -X POST {url}/logout -H 'X-Bastion-Session: <token>'
"""


def _error(exc: BastionError) -> Response:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def create_app(bastion: Bastion) -> Any:
    """The demo Starlette app, wrapped in Bastion's middleware."""

    async def home(request: Request) -> Response:
        identity = bastion.identity(request)
        return JSONResponse(
            {
                "bastion": "demo",
                "you": identity.user_id or "guest",
                "roles": sorted(identity.roles),
                "routes": [
                    "POST /login",
                    "GET /me",
                    "GET /sessions",
                    "DELETE /sessions/{id}",
                    "POST /logout",
                ],
            }
        )

    async def login(request: Request) -> Response:
        try:
            body = await request.json()
            user_id = body["user"]
            if not isinstance(user_id, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(BadRequest('Send a JSON body like {"user": "alice"}.'))
        try:
            new = await bastion.login(request, user_id)
        except ValueError as exc:
            return _error(BadRequest(str(exc)))
        return JSONResponse(
            {
                "user": user_id,
                "session": new.session.to_dict(current_id=new.session.id),
                "evicted": list(new.evicted),
            },
            status_code=201,
        )

    async def me(request: Request) -> Response:
        identity = bastion.identity(request)
        if identity.user_id is None:
            return _error(Unauthorized())
        return JSONResponse(
            {
                "user": identity.user_id,
                "session": identity.session_id,
                "roles": sorted(identity.roles),
            }
        )

    async def sessions(request: Request) -> Response:
        identity = bastion.identity(request)
        if identity.user_id is None:
            return _error(Unauthorized())
        found = await bastion.sessions.list(identity.user_id)
        return JSONResponse(
            {
                "total": len(found),
                "sessions": [s.to_dict(current_id=identity.session_id) for s in found],
            }
        )

    async def revoke(request: Request) -> Response:
        identity = bastion.identity(request)
        if identity.user_id is None:
            return _error(Unauthorized())
        await bastion.sessions.revoke(identity.user_id, request.path_params["session_id"])
        return Response(status_code=204)

    async def logout(request: Request) -> Response:
        await bastion.logout(request)
        return Response(status_code=204)

    app = Starlette(
        exception_handlers=exception_handlers,
        routes=[
            Route("/", home),
            Route("/login", login, methods=["POST"]),
            Route("/me", me),
            Route("/sessions", sessions),
            Route("/sessions/{session_id}", revoke, methods=["DELETE"]),
            Route("/logout", logout, methods=["POST"]),
        ],
    )
    return bastion.asgi(app)
