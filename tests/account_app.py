"""A small app for tests: who am I at ``/`` and the account routes, on each framework.

(It was ``bastion demo``'s app before the demo served the notes example.)
"""

from typing import Any

from bastion import Bastion

FRAMEWORKS = ("starlette", "fastapi", "flask")


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
    """The app on ``framework`` (ASGI for Starlette and FastAPI, WSGI for Flask).

    Bastion is closed at shutdown: by the ASGI lifespan, or at exit for Flask (``init_app``).
    """
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

        # Bastion's connections and policy watcher stop when the server shuts down.
        fast = FastAPI(title="Bastion demo", lifespan=bastion.lifespan)
        fast.include_router(account_router(bastion))

        @fast.get("/")
        async def home(request: Request) -> dict[str, Any]:
            return _home(bastion.identity(request))

        return bastion.asgi(fast)
    if framework != "starlette":
        raise ValueError(f"unknown framework {framework!r}")
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from bastion.adapters.starlette import account_routes

    async def starlette_home(request: StarletteRequest) -> JSONResponse:
        return JSONResponse(_home(bastion.identity(request)))

    return bastion.asgi(
        Starlette(
            routes=[Route("/", starlette_home), *account_routes(bastion)],
            lifespan=bastion.lifespan,
        )
    )
