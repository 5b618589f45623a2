"""BastionMiddleware over HTTP: log-in/out, cookies, the fallback header, CSRF and Redis outages."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion import Bastion, Settings
from bastion.core import RequestState
from tests.conftest import demo_app, end_session_now, make_bastion
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
COOKIE = "__Host-bastion_session"


async def _login(client: httpx.AsyncClient, user: str = "alice", **kw: Any) -> httpx.Response:
    response = await client.post("/login", json={"user": user}, **kw)
    assert response.status_code == 201, response.text
    return response


async def test_guest_gets_guest_roles(client: httpx.AsyncClient) -> None:
    body = (await client.get("/me")).json()
    assert body == {"user": "", "session": None, "roles": ["any", "guests"], "scopes": []}


async def test_login_sets_a_host_cookie_and_authenticates(client: httpx.AsyncClient) -> None:
    response = await _login(client)
    cookie = response.headers["set-cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    assert name_value.startswith(f"{COOKIE}=alice.")
    assert sorted(attributes) == sorted(
        ["Path=/", "Max-Age=31536000", "HttpOnly", "Secure", "SameSite=Lax"]
    )
    assert "domain" not in cookie.lower()
    assert response.headers["cache-control"] == "no-store"
    assert "x-bastion-session" not in response.headers  # not asked for
    body = (await client.get("/me")).json()
    assert body["user"] == "alice"
    assert body["session"] == response.json()["session"]
    assert body["scopes"] == ["authenticated", "session"]
    assert {"any", "users", "user:alice"} <= set(body["roles"])
    assert "guests" not in body["roles"]


async def test_every_login_gets_a_new_session_and_drops_the_old(
    client: httpx.AsyncClient, bastion: Bastion
) -> None:
    first = (await _login(client)).json()["session"]
    second = (await _login(client)).json()["session"]
    assert first != second
    assert [s.id for s in await bastion.sessions.list("alice")] == [second]


async def test_fallback_header_on_request_and_in_use(client: httpx.AsyncClient) -> None:
    response = await _login(client, headers={"X-Bastion-Fallback": "true"})
    token = response.headers["x-bastion-session"]
    client.cookies.clear()
    body = (await client.get("/me", headers={"X-Bastion-Session": token})).json()
    assert body["user"] == "alice"
    # Header-borne credentials carry no ambient authority: CSRF checks do not apply.
    cross = await client.post(
        "/change",
        headers={
            "X-Bastion-Session": token,
            "Sec-Fetch-Site": "cross-site",
            "Origin": "https://evil",
        },
    )
    assert cross.status_code == 200 and cross.json()["user"] == "alice"


async def test_logout_revokes_and_clears(client: httpx.AsyncClient, bastion: Bastion) -> None:
    token = (await _login(client, headers={"X-Bastion-Fallback": "1"})).headers["x-bastion-session"]
    response = await client.post("/logout")
    assert response.status_code == 204
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert await bastion.sessions.list("alice") == []
    client.cookies.clear()
    replay = await client.get("/me", headers={"X-Bastion-Session": token})
    assert replay.status_code == 401
    assert replay.json()["type"] == "user_session_invalid"


async def test_revoked_or_evicted_cookie_is_401_and_cleared(
    backend: str, request: pytest.FixtureRequest
) -> None:
    bastion = make_bastion(backend, request, session_limit=1)
    transport = httpx.ASGITransport(demo_app(bastion))
    async with (
        httpx.AsyncClient(transport=transport, base_url="https://t") as old,
        httpx.AsyncClient(transport=transport, base_url="https://t") as new,
    ):
        await _login(old)
        await _login(new)  # cap 1: evicts old's session
        response = await old.get("/me")
        assert response.status_code == 401
        assert response.json() == {
            "code": 401,
            "type": "user_session_invalid",
            "message": (
                "The session is invalid, expired or revoked. Log in again to get a new session."
            ),
        }
        assert response.headers["content-type"] == "application/json"
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert (await new.get("/me")).json()["user"] == "alice"


async def test_starlette_requires_works(bastion: Bastion) -> None:
    @requires("authenticated", status_code=401)
    async def private(request: Request) -> Response:
        return JSONResponse({"user": request.user.display_name})

    app = bastion.asgi(Starlette(routes=[Route("/private", private)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://t") as c:
        assert (await c.get("/private")).status_code == 401
        new = await bastion.sessions.create("carol")
        ok = await c.get("/private", headers={"X-Bastion-Session": new.token})
        assert ok.json() == {"user": "carol"}


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("POST", {"Sec-Fetch-Site": "cross-site"}, 403),
        ("POST", {"Origin": "https://evil.example"}, 403),
        ("POST", {"Origin": "null"}, 403),
        ("POST", {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.testserver"}, 403),
        ("PUT", {"Origin": "http://testserver:8080"}, 403),
        ("DELETE", {"Sec-Fetch-Site": "cross-site", "Origin": "https://testserver"}, 403),
        ("PATCH", {"Origin": "https://app.example.com"}, 200),  # in allowed_origins
        ("POST", {"Origin": "https://testserver"}, 200),
        ("POST", {"Sec-Fetch-Site": "same-origin"}, 200),
        ("POST", {}, 200),  # no browser metadata: not a forged browser request
        ("GET", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 200),
        ("HEAD", {"Sec-Fetch-Site": "cross-site"}, 200),
    ],
)
async def test_csrf_on_cookie_requests(
    backend: str, request: pytest.FixtureRequest, method: str, headers: dict[str, str], status: int
) -> None:
    bastion = make_bastion(backend, request, allowed_origins=("https://app.example.com",))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://testserver"
    ) as client:
        await _login(client)
        response = await client.request(method, "/change", headers=headers)
        assert response.status_code == status
        if status == 403:
            assert response.json()["type"] == "general_cross_site_request"
            assert "set-cookie" not in response.headers  # the session stays valid


async def test_csrf_accepts_https_origin_behind_a_tls_proxy(bastion: Bastion) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(demo_app(bastion)), base_url="http://testserver"
    ) as client:
        new = await bastion.sessions.create("alice")
        client.cookies.set(COOKIE, new.token, domain="testserver")
        response = await client.post("/change", headers={"Origin": "https://testserver"})
        assert response.status_code == 200


MALFORMED_COOKIES = [
    "",
    " ",
    "alice",
    "alice..",
    "a" * 5000,
    "alice.AAAAAAAAAAAAAAAAAAAAAA",
    "alice.AAAAAAAAAAAAAAAAAAAAAA.BBBB",
    "alice.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 43,  # right shape, no such session
    "alice:AAAAAAAAAAAAAAAAAAAAAA:" + "B" * 43,
    "alice.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 43 + "\n",
    "alice.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 42 + "=",
    "alice.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 42 + "é",
    "{alice}.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 43,
    '"alice.AAAAAAAAAAAAAAAAAAAAAA.' + "B" * 43 + '"',
    "../../alice.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 43,
    "%61lice.AAAAAAAAAAAAAAAAAAAAAA." + "B" * 43,
]


@pytest.mark.parametrize("value", MALFORMED_COOKIES)
async def test_malformed_cookie_is_401(client: httpx.AsyncClient, value: str) -> None:
    raw = f"{COOKIE}={value}".encode()
    response = await client.get("/me", headers=[(b"cookie", raw)])
    assert response.status_code == 401
    assert response.json()["type"] == "user_session_invalid"


@pytest.mark.parametrize("value", MALFORMED_COOKIES[1:])
async def test_malformed_fallback_header_is_401(client: httpx.AsyncClient, value: str) -> None:
    raw = value.encode("utf-8").replace(b"\n", b"")
    response = await client.get("/me", headers=[(b"x-bastion-session", raw)])
    assert response.status_code == 401


async def test_foreign_user_id_and_expired_session_are_401(
    client: httpx.AsyncClient, bastion: Bastion
) -> None:

    alice = (await bastion.sessions.create("alice")).token
    bob = (await bastion.sessions.create("bob")).token
    _, sid, secret = alice.rsplit(".", 2)
    for forged in (f"bob.{sid}.{secret}", f"alice.{bob.split('.')[1]}.{secret}"):
        response = await client.get("/me", headers={"cookie": f"{COOKIE}={forged}"})
        assert response.status_code == 401
    end_session_now(bastion.sync.redis, "alice", sid)
    expired = await client.get("/me", headers={"cookie": f"{COOKIE}={alice}"})
    assert expired.status_code == 401
    assert (await client.get("/me", headers={"cookie": f"{COOKIE}={bob}"})).status_code == 200


async def test_conflicting_duplicates_are_401(client: httpx.AsyncClient, bastion: Bastion) -> None:
    good = (await bastion.sessions.create("alice")).token
    other = (await bastion.sessions.create("bob")).token
    two_cookies = await client.get("/me", headers={"cookie": f"{COOKIE}={good}; {COOKIE}={other}"})
    assert two_cookies.status_code == 401
    two_headers = await client.get(
        "/me", headers=[(b"x-bastion-session", good.encode()), (b"x-bastion-session", b"x")]
    )
    assert two_headers.status_code == 401
    same_twice = await client.get("/me", headers={"cookie": f"{COOKIE}={good}; {COOKIE}={good}"})
    assert same_twice.json()["user"] == "alice"


async def test_other_cookies_do_not_matter(client: httpx.AsyncClient) -> None:
    for header in ["theme=dark", "bastion_session=x", f"x{COOKIE}=junk", "=;;;==", "é=é"]:
        response = await client.get("/me", headers=[(b"cookie", header.encode())])
        assert response.status_code == 200 and response.json()["user"] == ""


async def test_redis_outage_is_503_then_recovers(redis_server: RedisServer) -> None:
    server = RedisServer().start()
    restarted = RedisServer(server.port)  # the same port, started once the outage is seen
    try:
        bastion = Bastion(Settings(redis_url=server.url, redis_timeout=0.5))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://t"
        ) as client:
            await _login(client)
            assert (await client.get("/me")).json()["user"] == "alice"
            server.stop()
            down = await client.get("/me")
            assert down.status_code == 503
            assert down.json()["type"] == "service_unavailable"
            assert "set-cookie" not in down.headers  # the session is not thrown away
            refused = await client.post("/login", json={"user": "bob"})
            assert refused.status_code == 503
            assert refused.json()["type"] == "service_unavailable"
            # Guests need no Redis: they are served (authorization comes later) - never as a user.
            client.cookies.clear()
            assert (await client.get("/me")).json()["user"] == ""
            restarted.start()
            await _login(client)
            assert (await client.get("/me")).json()["user"] == "alice"
    finally:
        server.cleanup()
        restarted.cleanup()


async def test_app_can_read_state_and_non_http_scopes_pass(bastion: Bastion) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    wrapped = bastion.asgi(app)
    await wrapped({"type": "lifespan"}, None, None)
    assert seen[-1] == {"type": "lifespan"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(wrapped), base_url="https://t") as c:
        await c.get("/")
    assert isinstance(seen[-1]["bastion"], RequestState)
    assert seen[-1]["user"].kind == "guest"


async def _websocket(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "wss",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "subprotocols": [],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 443),
    }
    inbox = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websocket_checks_origin_for_cookies(bastion: Bastion) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"user": websocket.user.identity})
        await websocket.close()

    app = bastion.asgi(Starlette(routes=[WebSocketRoute("/ws", echo)]))
    token = (await bastion.sessions.create("alice")).token
    cookie = (b"cookie", f"{COOKIE}={token}".encode())
    accepted = await _websocket(app, [cookie, (b"origin", b"https://testserver")])
    assert [m["type"] for m in accepted] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert accepted[1]["text"] == '{"user":"alice"}'
    for headers in (
        [cookie, (b"origin", b"https://evil.example")],
        [(b"cookie", b"%s=junk" % COOKIE.encode())],
    ):
        refused = await _websocket(app, headers)
        assert refused == [{"type": "websocket.close", "code": 1008}]


async def test_errors_raised_inside_a_raw_asgi_app_are_rendered(bastion: Bastion) -> None:
    from bastion.errors import ServiceUnavailable

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ServiceUnavailable()

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(bastion.asgi(app)), base_url="https://t"
    ) as client:
        response = await client.get("/")
        assert response.status_code == 503
        assert response.json()["type"] == "service_unavailable"


def test_login_outside_the_middleware_is_a_clear_error(bastion: Bastion) -> None:
    with pytest.raises(RuntimeError, match="not installed"):
        asyncio.run(bastion.login({"type": "http", "headers": []}, "alice"))
