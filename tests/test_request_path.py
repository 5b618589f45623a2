"""The path the policy sees is the path the app routes, on Starlette, FastAPI and Flask.

Each app has the route map's routes, an app route under the account prefix, the account routes
and a catch-all serving a static folder, as a real app with a single-page front end would.
The black-box tests send raw request targets over real HTTP (uvicorn, Werkzeug's server) on a
real redis-server; the property test sends generated targets in-process, built the way those
servers build the ASGI scope and the WSGI environ, and checks that whatever the route map
decided is what the framework dispatched, or that the request was refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import pytest
from fastapi import FastAPI
from flask import Flask, send_from_directory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from werkzeug.test import EnvironBuilder

from bastion import Bastion, Settings
from bastion.adapters import fastapi as fastapi_adapter
from bastion.adapters import flask as flask_adapter
from bastion.adapters import starlette as starlette_adapter
from bastion.errors import BadRequest
from bastion.requestpath import canonical_path, wsgi_path
from tests import servers
from tests.conftest import make_bastion

FRAMEWORKS = ["starlette", "fastapi", "flask"]

ROUTES = [
    {"method": "GET", "path": "/admin/stats", "action": "read", "resource": "admin/stats"},
    {"method": "GET", "path": "/docs/{doc}", "action": "read", "resource": "docs/{doc}"},
    {"method": "GET", "path": "/buckets/{bucket}/files/{file}", "action": "read",
     "resource": "buckets/{bucket}/files/{file}"},
]  # fmt: skip
# The app's endpoint name for each route template (what the framework dispatched to).
ENDPOINTS = {
    "/admin/stats": "admin",
    "/docs/{doc}": "doc",
    "/buckets/{bucket}/files/{file}": "file",
}
POLICY = """\
p, label:admin, admin/stats, read
p, users, docs/*, read
p, any, buckets/public/files/*, read
g, user:root, label:admin
"""
OPEN_POLICY = "p, any, *, read\n"


def static_folder(root: Path) -> Path:
    """Files a catch-all serves, one of them shadowed by a mapped route."""
    folder = root / "static"
    (folder / "admin").mkdir(parents=True)
    (folder / "account").mkdir()
    (folder / "payroll.txt").write_text("salaries")
    (folder / "admin" / "stats").write_text("shadowed")
    (folder / "account" / "billing.txt").write_text("invoices")
    return folder


def build_bastion(
    backend: str, request: pytest.FixtureRequest, root: Path, policy: str, unmatched: str
) -> Bastion:
    policy_file = root / "policy.csv"
    policy_file.write_text(policy)
    checked = Settings.from_mapping(
        {
            "policy_files": [str(policy_file)],
            "routes": ROUTES,
            "unmatched_routes": unmatched,
            "policy_reload_interval": 0,
        }
    )
    fields = ("policy_files", "routes", "unmatched_routes", "policy_reload_interval")
    return make_bastion(backend, request, **{name: getattr(checked, name) for name in fields})


def asgi_app(framework: str, bastion: Bastion, folder: Path) -> Any:
    """The Starlette or FastAPI app, wrapped by Bastion."""

    def answer(name: str, **params: str) -> Response:
        return JSONResponse({"endpoint": name, **params})

    if framework == "fastapi":
        fast = FastAPI()
        fast.get("/admin/stats")(lambda: answer("admin"))
        fast.get("/docs/{doc}")(lambda doc: answer("doc", doc=doc))
        fast.get("/buckets/{bucket}/files/{file}")(
            lambda bucket, file: answer("file", bucket=bucket, file=file)
        )
        fast.get("/account/billing")(lambda: answer("billing"))
        fast.include_router(fastapi_adapter.account_router(bastion))
        fast.mount("/", StaticFiles(directory=folder))
        return bastion.asgi(fast)

    def named(name: str) -> Any:
        async def view(request: Request) -> Response:
            return answer(name, **request.path_params)

        return view

    return bastion.asgi(
        Starlette(
            routes=[
                Route("/admin/stats", named("admin")),
                Route("/docs/{doc}", named("doc")),
                Route("/buckets/{bucket}/files/{file}", named("file")),
                Route("/account/billing", named("billing")),
                *starlette_adapter.account_routes(bastion),
                Mount("/", StaticFiles(directory=folder)),
            ],
            exception_handlers=starlette_adapter.exception_handlers,
        )
    )


def flask_app(bastion: Bastion, folder: Path) -> Flask:
    """The Flask app with Bastion installed."""
    app = Flask("paths", static_folder=None)

    @app.get("/admin/stats")
    def admin() -> Any:
        return {"endpoint": "admin"}

    @app.get("/docs/<doc>")
    def doc(doc: str) -> Any:
        return {"endpoint": "doc", "doc": doc}

    @app.get("/buckets/<bucket>/files/<file>")
    def file(bucket: str, file: str) -> Any:
        return {"endpoint": "file", "bucket": bucket, "file": file}

    @app.get("/account/billing")
    def billing() -> Any:
        return {"endpoint": "billing"}

    @app.get("/<path:rest>")
    def everything_else(rest: str) -> Any:
        return send_from_directory(folder, rest)

    flask_adapter.init_app(app, bastion)
    return app


# -- the canonical path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/account/../payroll.txt", "/a/./b", "/..", "/.", "..", "/a/..", "/a/b/\x00", "/a\x1b[0m",
     "//admin", "/admin//stats", "/admin/stats//", "//"],
)  # fmt: skip
def test_dot_and_empty_segments_and_control_characters_are_refused(path: str) -> None:
    with pytest.raises(BadRequest):
        canonical_path(path)


@pytest.mark.parametrize("path", ["/", "/a/b", "/a/b/", "/a.b/.c/..d/...", "/a%2e%2e/b", "*"])
def test_other_paths_are_kept_as_they_are(path: str) -> None:
    assert canonical_path(path) == path


def test_wsgi_paths_are_read_back_as_utf8() -> None:
    assert wsgi_path("/app", "/caf\u00c3\u00a9") == "/app/caf\u00e9"
    with pytest.raises(BadRequest):
        wsgi_path("", "/\u00ff")


# -- over real HTTP ----------------------------------------------------------------------------


class Served(servers.Served):
    """One framework's app on its real server."""

    def __init__(self, framework: str, bastion: Bastion, folder: Path) -> None:
        flask = framework == "flask"
        app = flask_app(bastion, folder) if flask else asgi_app(framework, bastion, folder)
        super().__init__(app, wsgi=flask)
        self.framework = framework

    def get(self, target: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Send ``target`` exactly as written (http.client does not normalise it)."""
        status, body, _ = self.request("GET", target, None, headers)
        return status, body


@pytest.fixture(params=FRAMEWORKS)
def served(
    request: pytest.FixtureRequest, real_redis: str, tmp_path: Path
) -> Iterator[tuple[Served, Bastion]]:
    bastion = build_bastion("redis-server", request, tmp_path, POLICY, unmatched="authenticated")
    server = Served(str(request.param), bastion, static_folder(tmp_path))
    yield server, bastion
    server.stop()


def test_a_guest_cannot_reach_a_route_through_the_account_prefix(
    served: tuple[Served, Bastion],
) -> None:
    server, _ = served
    assert server.get("/payroll.txt")[0] == 401
    for target in (
        "/account/../payroll.txt",
        "/account/%2e%2e/payroll.txt",
        "/account/%2E%2e/payroll.txt",
        "/account/.%2e/payroll.txt",
        "/docs/%2e%2e",
        "/buckets/public/files/./x",
    ):
        status, body = server.get(target)
        assert (status, body["type"]) == (400, "general_bad_request"), target
    # An app route under the account prefix is the app's, and the route map decides it.
    assert server.get("/account/billing")[0] == 401
    assert server.get("/account/billing.txt")[0] == 401
    # The account routes Bastion mounted still answer for themselves.
    status, body = server.get("/account")
    assert (status, body["type"]) == (401, "user_unauthorized")
    assert server.get("/buckets/public/files/a.txt") == (
        200,
        {"endpoint": "file", "bucket": "public", "file": "a.txt"},
    )


def test_encoded_static_segments_are_judged_as_the_app_routes_them(
    served: tuple[Served, Bastion],
) -> None:
    server, bastion = served
    alice = {"X-Bastion-Session": bastion.sync.sessions.create("alice").token}
    root = {"X-Bastion-Session": bastion.sync.sessions.create("root").token}
    for target in ("/admin/stats", "/%61dmin/stats", "/adm%69n/st%61ts", "/%61%64%6d%69%6e/stats"):
        assert server.get(target, alice)[0] == 403, target
        assert server.get(target, root) == (200, {"endpoint": "admin"}), target
    # Repeated slashes are refused (the frameworks route them differently); a trailing slash
    # is judged as the route without it, whatever the framework then serves for it.
    for target in ("//admin/stats", "//admin//stats", "/admin//stats"):
        status, body = server.get(target, root)
        if server.framework == "flask" and target == "//admin/stats":
            # Werkzeug's server itself turns a leading "//x" into "/x" (PATH_INFO): that is
            # the path Flask routes, and so the one the route map judges.
            assert (status, body) == (200, {"endpoint": "admin"})
            assert server.get(target, alice)[0] == 403
            continue
        assert (status, body["type"]) == (400, "general_bad_request"), target
    assert server.get("/admin/stats/", alice)[0] == 403
    assert server.get("/admin/stats/", root)[0] in (200, 307, 404)
    assert server.get("/docs/%72eadme", alice) == (200, {"endpoint": "doc", "doc": "readme"})


# -- generated paths, in-process ---------------------------------------------------------------


class Decisions(logging.Handler):
    """Collects the route map's decisions (route and resource) from the decision log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(record.bastion_decision)  # type: ignore[attr-defined]


def call_asgi(app: Any, raw: str) -> tuple[int, bytes]:
    """One GET as uvicorn builds its scope: ``path`` decoded once, ``raw_path`` as sent."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "https", "path": unquote(raw), "raw_path": raw.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1),
        "server": ("t", 443),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    bodies = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()  # the client stays connected until the response is sent
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def call_wsgi(app: Flask, raw: str) -> tuple[int, bytes]:
    """One GET as Werkzeug's server builds its environ (``PATH_INFO`` decoded, as latin-1)."""
    environ = EnvironBuilder(base_url="https://t/").get_environ()
    environ["PATH_INFO"] = unquote_to_bytes(raw).decode("latin-1")
    environ["RAW_URI"] = environ["REQUEST_URI"] = raw
    out: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc=None: out.append(status)))
    return int(out[0].split()[0]), body


SEGMENTS = st.one_of(
    st.sampled_from(["admin", "stats", "docs", "buckets", "files", "account", "sessions",
                     "billing", "payroll.txt", "public", "readme", "a.b", ".", "..", ""]),
    st.text(alphabet="abcAB09-_~.:@+%/ ", min_size=1, max_size=6),
)  # fmt: skip
TEMPLATES = st.sampled_from(
    ["/admin/stats", "/docs/{}", "/buckets/{}/files/{}", "/account", "/account/sessions",
     "/account/billing", "/payroll.txt", "/{}", "/{}/{}", "/account/{}/{}"]
)  # fmt: skip


@st.composite
def request_targets(draw: st.DrawFn) -> str:
    """A request target: a template filled with ids, then encoded, cased and slashed at random."""
    template = draw(TEMPLATES)
    path = template.format(*(draw(SEGMENTS) for _ in range(template.count("{}"))))
    out = []
    for char in path:
        how = draw(st.sampled_from(["keep"] * 6 + ["lower", "upper", "case"]))
        if char == "/" and how == "case":
            out.append("//")
        elif char in "% " or (char not in "/" and how in ("lower", "upper")):
            escape = f"%{ord(char):02x}"
            out.append(escape.upper() if how == "upper" else escape)
        elif how == "case":
            out.append(char.swapcase())
        else:
            out.append(char)
    target = "".join(out)
    return target + "/" if draw(st.booleans()) and draw(st.booleans()) else target


def expected_resource(endpoint: dict[str, str]) -> tuple[str, str]:
    """The route and resource the route map must have picked for what the app dispatched."""
    template = next(t for t, name in ENDPOINTS.items() if name == endpoint["endpoint"])
    route = next(r for r in ROUTES if r["path"] == template)
    return template, route["resource"].format(**endpoint)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_generated_paths_are_judged_as_the_framework_dispatches_them(
    framework: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Everything is allowed, so every request the route map does not refuse reaches the app.
    bastion = build_bastion("fakeredis", request, tmp_path, OPEN_POLICY, unmatched="allow")
    folder = static_folder(tmp_path)
    if framework == "flask":
        wsgi = flask_app(bastion, folder)

        def call(raw: str) -> tuple[int, bytes]:
            return call_wsgi(wsgi, raw)
    else:
        asgi = asgi_app(framework, bastion, folder)

        def call(raw: str) -> tuple[int, bytes]:
            return call_asgi(asgi, raw)

    decisions = Decisions()
    log = logging.getLogger("bastion.decisions")
    log.addHandler(decisions)
    log.setLevel(logging.DEBUG)
    seen: dict[str, int] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=request_targets())
    def check(raw: str) -> None:
        decisions.events.clear()
        status, body = call(raw)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        refused = status == 400 and answer and answer.get("type") == "general_bad_request"
        if refused and not decisions.events:
            seen["refused"] = seen.get("refused", 0) + 1
            return  # refused before the route map, or an id the grammar refuses
        if isinstance(answer, dict) and answer.get("endpoint") in ENDPOINTS.values():
            # A mapped endpoint answered: the route map judged exactly that route and resource.
            assert decisions.events, raw
            event = decisions.events[-1]
            assert (event["route"], event["resource"]) == expected_resource(answer), raw
            seen["mapped"] = seen.get("mapped", 0) + 1
        elif status == 401 and isinstance(answer, dict) and answer.get("code") == 401:
            # Only the account routes refuse a guest here: the route map left them alone.
            assert not decisions.events, raw
            seen["account"] = seen.get("account", 0) + 1
        else:
            # The catch-all, the app's own routes, a redirect or a 404: judged as unmatched, or
            # (a trailing "/") as the route without it, which is the name the catch-all serves.
            assert decisions.events, raw
            route = decisions.events[-1]["route"]
            if route is not None:
                path = unquote(raw)
                assert path.endswith("/"), raw
                without = bastion.authorizer.target("GET", path[:-1])
                assert without is not None and without.route.path == route, raw
                assert without.resource == decisions.events[-1]["resource"], raw
                seen["trailing"] = seen.get("trailing", 0) + 1
            seen["unmatched"] = seen.get("unmatched", 0) + 1

    try:
        check()
    finally:
        log.removeHandler(decisions)
        log.setLevel(logging.NOTSET)
    # The generator reached every kind of outcome, so the property was tested on each.
    assert {"refused", "mapped", "account", "unmatched"} <= set(seen), seen
