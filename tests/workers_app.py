"""The app the multi-worker tests serve with ``uvicorn --workers``: one module, built per worker.

Redis comes from the environment (``BASTION_REDIS_URL``, ``BASTION_REDIS_CLUSTER``, ...), as in
production; the policy file from ``WORKERS_APP_POLICY``, watched as in production (a published
version replaces it). Routes: ``POST /login`` (a log-in the app has checked itself,
``{"user": ID}``), ``GET /me``, ``GET /reports`` (the policy's rows alone), a document read
decided by the document's own permission rows, and ``GET /health``: the worker's pid, the
published policy version in force and when it came in (the time of the watcher's log line).
Every answer names the worker process (``X-Worker: PID``).
"""

from __future__ import annotations

import logging
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
    {"method": "GET", "path": "/reports", "action": "read", "resource": "reports"},
]
POLICY = "p, users, me, read\n"


class Swaps(logging.Handler):
    """When each published version came into force: the watcher's own log line, timed."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: dict[int, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("published policy version %d in force"):
            assert isinstance(record.args, tuple)
            self.at[int(str(record.args[0]))] = record.created


def create_app() -> Any:
    """Build one worker's app (``uvicorn tests.workers_app:create_app --factory``)."""
    bastion = Bastion(
        Settings.load(
            policy_files=(os.environ["WORKERS_APP_POLICY"],),
            routes=ROUTES,
            resources=[{"path": NOTES, "document_security": True}],
            unmatched_routes="allow",  # /login and /health
        )
    )
    pid = os.getpid()
    swaps = Swaps()
    watcher_log = logging.getLogger("bastion.policy")
    watcher_log.setLevel(logging.INFO)
    watcher_log.addHandler(swaps)

    async def login(request: Request) -> Response:
        new = await bastion.login(request, (await request.json())["user"])
        body = {"session": new.session.id, "evicted": list(new.evicted), "pid": pid}
        return JSONResponse(body, status_code=201)

    async def me(request: Request) -> Response:
        return JSONResponse({"user": request.user.identity, "pid": pid})

    async def document(request: Request) -> Response:
        return JSONResponse({"document": request.path_params["doc"], "pid": pid})

    async def reports(request: Request) -> Response:
        return JSONResponse({"reports": [], "pid": pid})

    async def health(request: Request) -> Response:
        published = bastion.policy_watcher.published
        return JSONResponse(
            {"pid": pid, "published": published, "since": swaps.at.get(published or 0)}
        )

    protected = bastion.asgi(
        Starlette(
            routes=[
                Route("/login", login, methods=["POST"]),
                Route("/me", me),
                Route("/reports", reports),
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
