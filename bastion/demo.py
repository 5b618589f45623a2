"""The demo ``bastion demo`` serves: the account routes at ``/account`` on the chosen framework."""

import dataclasses
import ipaddress
import logging
import secrets
from typing import Any

from bastion.core import Bastion
from bastion.secret import mask_url, reveal
from bastion.settings import Settings

logger = logging.getLogger("bastion.demo")

FRAMEWORKS = ("starlette", "fastapi", "flask")
DEMO_IDLE_TIMEOUT = 1800

JWT_KEY_WARNING = (
    "The demo signs JWTs with a random key made for this process, because no JWT key is set "
    "(jwt_secret / BASTION_JWT_SECRET, or jwt_keys): its JWTs die with the process and no other "
    "process accepts them. This is for the demo only; configure a key of your own elsewhere."
)

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


def banner(settings: Settings, url: str, framework: str) -> str:
    """What ``bastion demo`` prints first: where it serves, on which Redis, what to try.

    The Redis URL is shown with its password masked: the banner lands in terminals and logs.
    """
    backend = (
        f"Redis at {mask_url(reveal(settings.redis_url))}"
        if settings.redis_url is not None
        else "embedded in-process Redis: development only, data lives in this process"
    )
    return USAGE.format(url=url, framework=framework, backend=backend)


def demo_settings(settings: Settings) -> Settings:
    """``settings`` as the demo runs them: a 30-minute idle timeout and a JWT key by default.

    The idle timeout is NIST SP 800-63B's at AAL2, unless the file or the environment sets one.
    The demo prints ``POST /account/jwts`` among the commands to try, so it must work on a real
    Redis too (a plain app without a key answers it with 501 ``general_jwt_disabled``): without
    a configured key it signs with a random per-process one.
    """
    if settings.session_idle_timeout is None:
        settings = dataclasses.replace(settings, session_idle_timeout=DEMO_IDLE_TIMEOUT)
    if settings.jwt_keyset:
        return settings
    logger.warning(JWT_KEY_WARNING)
    return dataclasses.replace(settings, jwt_secret=secrets.token_urlsafe(48))


def demo_bastion(settings: Settings) -> Bastion:
    """The ``Bastion`` the demo serves (see :func:`demo_settings`)."""
    return Bastion(demo_settings(settings))


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


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How the demo runs uvicorn: proxy headers only from ``trusted_proxies``, else off.

    uvicorn's defaults believe X-Forwarded-For from 127.0.0.1; Bastion reads the socket itself
    either way, but the app's ``request.client`` should not name whatever a local client wrote.
    """
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    # uvicorn parses networks strictly: 10.1.2.3/8 must reach it as 10.0.0.0/8.
    proxies = [str(ipaddress.ip_network(p, strict=False)) for p in settings.trusted_proxies]
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


def create_app(bastion: Bastion, framework: str = "starlette") -> Any:
    """The demo app on ``framework`` (ASGI for Starlette and FastAPI, WSGI for Flask).

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
        raise ValueError(f"unknown framework {framework!r}: one of {', '.join(FRAMEWORKS)}")
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
