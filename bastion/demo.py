"""The demo ``bastion demo`` serves: the account routes at ``/account`` on the chosen framework."""

from typing import Any

from bastion.core import Bastion

FRAMEWORKS = ("starlette", "fastapi", "flask")

USAGE = """\
Bastion demo on {url}  ({framework}, {backend})

  # sign up, then log in (X-Bastion-Fallback asks for the token in a header, for curl)
  curl -s -X POST {url}/account -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "password": "correct horse battery staple"}}'
  curl -si -X POST {url}/account/sessions -H 'X-Bastion-Fallback: true' \\
       -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "password": "correct horse battery staple"}}'
  # then send the token from the X-Bastion-Session response header:
  curl -s {url}/account -H 'X-Bastion-Session: <token>'
  curl -s {url}/account/sessions -H 'X-Bastion-Session: <token>'
  curl -s -X POST {url}/account/jwts -H 'X-Bastion-Session: <token>'
  curl -si -X DELETE {url}/account/sessions/current -H 'X-Bastion-Session: <token>'
"""


def _home(identity: Any) -> dict[str, Any]:
    return {
        "bastion": "demo",
        "you": identity.identity or "guest",
        "roles": sorted(identity.roles),
        "routes": [
            "POST /account",
            "POST /account/sessions",
            "GET /account",
            "GET /account/sessions",
            "DELETE /account/sessions/current",
            "POST /account/jwts",
            "PATCH /account/password",
        ],
    }


def create_app(bastion: Bastion, framework: str = "starlette") -> Any:
    """The demo app on ``framework`` (ASGI for Starlette and FastAPI, WSGI for Flask)."""
    if framework == "flask":
        from flask import Flask

        from bastion.adapters.flask import current_identity, init_app

        flask_app = Flask("bastion-demo")
        init_app(flask_app, bastion)
        flask_app.add_url_rule("/", "home", lambda: _home(current_identity()))
        return flask_app
    if framework == "fastapi":
        from fastapi import FastAPI, Request

        from bastion.adapters.fastapi import account_router

        fast = FastAPI(title="Bastion demo")
        fast.include_router(account_router(bastion))

        @fast.get("/")
        async def home(request: Request) -> dict[str, Any]:
            return _home(bastion.identity(request))

        return bastion.asgi(fast)
    if framework != "starlette":
        raise ValueError(f"unknown framework {framework!r}: one of {', '.join(FRAMEWORKS)}")
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from bastion.adapters.starlette import account_routes, exception_handlers

    async def starlette_home(request: StarletteRequest) -> JSONResponse:
        return JSONResponse(_home(bastion.identity(request)))

    return bastion.asgi(
        Starlette(
            routes=[Route("/", starlette_home), *account_routes(bastion)],
            exception_handlers=exception_handlers,
        )
    )
