"""The load run's app: a small notes API protected by Bastion, on its public API only.

Served by ``bench/load.py`` under uvicorn (``uvicorn bench.load_app:create_app --factory``).
Settings come from ``BASTION_*`` variables (the Redis URL and timeout) and from the code below
(the route map, the policy, limits high enough that a load run is never rate limited). Every
answer echoes the identity Bastion saw, so the load script can tell a guest from a user.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters.starlette import account_routes

POLICY = Path(__file__).with_name("load_policy.csv")
NOTES = "databases/main/collections/notes"
DOC = "/databases/{db}/collections/{coll}/documents/{doc}"
DOC_RESOURCE = "databases/{db}/collections/{coll}/documents/{doc}"
ROUTES = [
    {"method": "GET", "path": "/whoami", "action": "read", "resource": "pages/whoami",
     "scope": "whoami"},
    {"method": "POST", "path": "/databases/{db}/collections/{coll}/documents", "action": "create",
     "resource": "databases/{db}/collections/{coll}", "scope": "documents.write"},
    {"method": "GET", "path": DOC, "action": "read", "resource": DOC_RESOURCE,
     "scope": "documents.read", "not_found": True},
    {"method": "PATCH", "path": DOC, "action": "update", "resource": DOC_RESOURCE,
     "scope": "documents.write"},
]  # fmt: skip
SESSION_LIMIT = 5  # small, so that log-ins past the cap happen often
UNLIMITED = 1_000_000  # the load comes from one address: no rate limit may refuse it


def settings(**overrides: Any) -> Settings:
    """The app's settings: ``BASTION_*`` variables, then the route map and policy below."""
    return Settings.load(
        policy_files=(str(POLICY),),
        routes=ROUTES,
        resources=[{"path": NOTES, "document_security": True}],
        session_limit=SESSION_LIMIT,
        rate_limit_per_email=UNLIMITED,
        rate_limit_per_ip=UNLIMITED,
        rate_limit_per_account=UNLIMITED,
        **overrides,
    )


def who(request: Request) -> dict[str, str]:
    """The identity Bastion handed the app."""
    return {"who": request.user.identity, "kind": request.user.kind}


def create_app(bastion: Bastion | None = None) -> Any:
    """The ASGI app (uvicorn's ``--factory`` calls it with no argument: settings from the env)."""
    bastion = bastion or Bastion(settings())

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(who(request))

    async def create(request: Request) -> JSONResponse:
        doc = secrets.token_hex(8)
        resource = f"{NOTES}/documents/{doc}"
        owner = f"user:{request.user.user_id}"
        # Server code grants the creator its note (Appwrite's default document permissions).
        await bastion.permissions.grant(resource, owner, "read")
        await bastion.permissions.grant(resource, owner, "update")
        return JSONResponse({"doc": doc, **who(request)}, status_code=201)

    async def read(request: Request) -> JSONResponse:
        return JSONResponse({"doc": request.path_params["doc"], **who(request)})

    async def update(request: Request) -> JSONResponse:
        return JSONResponse({"doc": request.path_params["doc"], "updated": True, **who(request)})

    return bastion.asgi(
        Starlette(
            routes=[
                Route("/whoami", whoami),
                Route("/databases/{db}/collections/{coll}/documents", create, methods=["POST"]),
                Route(DOC, read, methods=["GET"]),
                Route(DOC, update, methods=["PATCH"]),
                *account_routes(bastion),
            ],
            lifespan=bastion.lifespan,
        )
    )
