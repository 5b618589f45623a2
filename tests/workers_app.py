"""The app the multi-worker tests serve with ``uvicorn --workers``: one module, built per worker.

Redis comes from the environment (``BASTION_REDIS_URL``, ``BASTION_REDIS_CLUSTER``, ...), as in
production; the policy file from ``WORKERS_APP_POLICY``. Routes: ``POST /login`` (a log-in the
app has checked itself, ``{"user": ID}``), ``GET /me``, and a document read decided by the
document's own permission rows. Every answer names the worker process (``X-Worker: PID``).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters.starlette import exception_handlers

NOTES = "databases/main/collections/notes"
ROUTES = [
    {
        "method": "GET",
        "path": "/databases/{db}/collections/{coll}/documents/{doc}",
        "action": "read",
        "resource": "databases/{db}/collections/{coll}/documents/{doc}",
        "not_found": True,
    },
    {"method": "GET", "path": "/me", "action": "read", "resource": "me"},
]
POLICY = "p, users, me, read\n"


def create_app() -> Any:
    """Build one worker's app (``uvicorn tests.workers_app:create_app --factory``)."""
    bastion = Bastion(
        Settings.load(
            policy_files=(os.environ["WORKERS_APP_POLICY"],),
            routes=ROUTES,
            resources=[{"path": NOTES, "document_security": True}],
            policy_reload_interval=0,
            unmatched_routes="allow",  # /login and /health
        )
    )
    pid = os.getpid()

    async def login(request: Request) -> Response:
        new = await bastion.login(request, (await request.json())["user"])
        body = {"session": new.session.id, "evicted": list(new.evicted), "pid": pid}
        return JSONResponse(body, status_code=201)

    async def me(request: Request) -> Response:
        return JSONResponse({"user": request.user.identity, "pid": pid})

    async def document(request: Request) -> Response:
        return JSONResponse({"document": request.path_params["doc"], "pid": pid})

    async def health(request: Request) -> Response:
        return JSONResponse({"pid": pid})

    protected = bastion.asgi(
        Starlette(
            routes=[
                Route("/login", login, methods=["POST"]),
                Route("/me", me),
                Route("/databases/{db}/collections/{coll}/documents/{doc}", document),
                Route("/health", health),
            ],
            exception_handlers=exception_handlers,
            lifespan=bastion.lifespan,
        )
    )
    header = (b"x-worker", str(pid).encode())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        """Bastion's middleware and the app, every answer marked with the worker's pid."""

        async def marked(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await protected(scope, receive, marked)

    return app
