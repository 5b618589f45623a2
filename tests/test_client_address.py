"""The client address the limits count is the socket's, whatever the server's proxy headers say.

Black-box over real HTTP: a small account app (``tests.account_app``) on uvicorn with its
default settings (proxy headers on, trusting 127.0.0.1, so it rewrites ``scope["client"]`` from
X-Forwarded-For before Bastion runs), on uvicorn as ``bastion demo`` starts it, and on Werkzeug's
server for Flask (also behind Werkzeug's ``ProxyFix``). The test client is on 127.0.0.1, like a
process on the same host or a local proxy that passes X-Forwarded-For through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix

from bastion import Bastion, Settings
from bastion.clientip import UNKNOWN, asgi_peer, forwarded_hosts, socket_peer, wsgi_peer
from bastion.demo import uvicorn_options
from tests.account_app import create_app
from tests.servers import Served

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
EMAIL = "ada@example.com"

SERVERS = [
    ("starlette", "uvicorn"),
    ("starlette", "uvicorn-demo"),
    ("starlette", "uvicorn-wrapped"),
    ("fastapi", "uvicorn"),
    ("fastapi", "uvicorn-demo"),
    ("fastapi", "uvicorn-wrapped"),
    ("flask", "werkzeug"),
    ("flask", "werkzeug-proxyfix"),
]


class WrapsReceive:
    """An ASGI middleware outside Bastion that hands it a receive of its own.

    Bastion then cannot reach the server's connection and must judge ``scope["client"]`` alone.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped() -> Any:
            return await receive()

        await self.app(scope, wrapped, send)


@pytest.fixture
def serve(
    request: pytest.FixtureRequest, real_redis: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Start the demo app of the test's framework on the test's server, with given settings."""
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)  # uvicorn's own defaults
    framework, server = request.param
    started: list[Served] = []

    def start(**values: Any) -> tuple[Served, str]:
        settings = Settings(redis_url=real_redis, **values)
        app = create_app(Bastion(settings), framework)
        if server == "werkzeug-proxyfix":
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # outside Bastion
        elif server == "uvicorn-wrapped":
            app = WrapsReceive(app)
        options = uvicorn_options(settings) if server == "uvicorn-demo" else {}
        served = Served(app, wsgi=framework == "flask", **options)
        started.append(served)
        return served, server

    yield start
    for served in started:
        served.stop()


def log_in(served: Served, password: str, forwarded_for: str | None) -> tuple[int, Any, Any]:
    headers = {"X-Bastion-Fallback": "true"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return served.request(
        "POST", "/account/sessions", {"email": EMAIL, "password": password}, headers
    )


def session_ip(served: Served, forwarded_for: str | None = None) -> str:
    """Log in with the right password and read back the address the session recorded."""
    status, _, headers = log_in(served, PASSWORD, forwarded_for)
    assert status == 201
    token = headers["X-Bastion-Session"]
    status, body, _ = served.request("GET", "/account/sessions", None, {"X-Bastion-Session": token})
    assert status == 200
    [row] = [s for s in body["sessions"] if s["current"]]
    return str(row["ip"])


@pytest.mark.parametrize("serve", SERVERS, indirect=True, ids="-".join)
def test_forged_forwarded_for_does_not_escape_the_per_email_limit(serve: Any) -> None:
    served, server = serve()
    assert served.request("POST", "/account", {"email": EMAIL, "password": PASSWORD})[0] == 201
    # The log-in's address is the socket's, not the header's (unknown where the server hid it,
    # which a session records as no address).
    peer = "" if server == "uvicorn-wrapped" else "127.0.0.1"
    assert session_ip(served, "203.0.113.250") == peer
    statuses = [log_in(served, WRONG, f"198.51.100.{n}")[0] for n in range(40)]
    # 10 failures per (email, client IP), then refusals (the right log-in did not count).
    assert statuses == [401] * 10 + [429] * 30


@pytest.mark.parametrize("serve", SERVERS, indirect=True, ids="-".join)
def test_forwarded_for_is_believed_from_trusted_proxies_only(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.middleware")
    served, server = serve(trusted_proxies=("127.0.0.1",), rate_limit_per_email=2)
    assert served.request("POST", "/account", {"email": EMAIL, "password": PASSWORD})[0] == 201
    if server == "uvicorn-wrapped":
        # The server replaced the peer and Bastion cannot reach the socket: it cannot tell
        # whether a trusted proxy sent the header, so it believes none and says so, once.
        assert session_ip(served, "203.0.113.7") == ""  # no address recorded
        # One shared bucket: two failures, then refusals (the right log-in did not count).
        assert [log_in(served, WRONG, f"198.51.100.{n}")[0] for n in range(3)] == [401, 401, 429]
        assert caplog.text.count("cannot read the socket") == 1
        return
    assert session_ip(served, "203.0.113.7") == "203.0.113.7"
    # Each forwarded client has its own (email, IP) budget of two.
    assert [log_in(served, WRONG, f"198.51.100.{n}")[0] for n in range(5)] == [401] * 5
    assert [log_in(served, WRONG, "198.51.100.9")[0] for _ in range(3)] == [401, 401, 429]
    assert "cannot read the socket" not in caplog.text


# -- the pieces, without a server -----------------------------------------------------------------


class _Transport:
    def __init__(self, peername: Any) -> None:
        self.peername = peername

    def get_extra_info(self, name: str) -> Any:
        return self.peername if name == "peername" else None


class _Cycle:
    def __init__(self, peername: Any) -> None:
        self.transport = _Transport(peername)

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request"}


async def _plain_receive() -> dict[str, Any]:
    return {"type": "http.request"}


def test_socket_peer_reads_the_connection_behind_receive() -> None:
    assert socket_peer(_Cycle(("127.0.0.1", 5000)).receive) == "127.0.0.1"
    assert socket_peer(_Cycle(("::1", 5000, 0, 0)).receive) == "::1"
    assert socket_peer(_Cycle("").receive) == ""  # a Unix socket
    assert socket_peer(_Cycle(None).receive) is None
    assert socket_peer(_plain_receive) is None
    assert socket_peer(None) is None


@pytest.mark.parametrize(
    ("reported", "xff", "forwarded", "expected"),
    [
        ("127.0.0.1", None, None, "127.0.0.1"),
        ("127.0.0.1", b"198.51.100.7", None, "127.0.0.1"),  # not rewritten: the header's not it
        ("198.51.100.7", b"198.51.100.7", None, UNKNOWN),  # the server copied a hop
        ("198.51.100.7", b"6.6.6.6, 198.51.100.7:4711", None, UNKNOWN),
        ("2001:db8::1", b"[2001:DB8::1]:80", None, UNKNOWN),
        ("198.51.100.7", None, b'for="198.51.100.7:80";proto=https', UNKNOWN),
        ("198.51.100.7", None, b"for=192.0.2.1, for=198.51.100.7", UNKNOWN),
        ("", b"198.51.100.7", None, ""),
    ],
)
def test_asgi_peer_without_the_connection(
    reported: str, xff: bytes | None, forwarded: bytes | None, expected: str
) -> None:
    assert asgi_peer(reported, _plain_receive, xff, forwarded) == expected
    # With the connection at hand the socket decides, whatever the scope says.
    assert asgi_peer(reported, _Cycle(("10.9.8.7", 1)).receive, xff, forwarded) == "10.9.8.7"


def test_forwarded_hosts() -> None:
    assert forwarded_hosts(b" 1.2.3.4 ,, [::1]:8, 2001:db8::1 ", None) == {
        "1.2.3.4",
        "::1",
        "2001:db8::1",
    }
    assert forwarded_hosts(None, b'For="[::1]:8";by=x, for=unknown') == {"::1", "unknown"}


def test_wsgi_peer_reads_under_proxyfix() -> None:
    assert wsgi_peer({"REMOTE_ADDR": "127.0.0.1"}) == "127.0.0.1"
    rewritten = {"REMOTE_ADDR": "6.6.6.6", "werkzeug.proxy_fix.orig": {"REMOTE_ADDR": "10.0.0.1"}}
    assert wsgi_peer(rewritten) == "10.0.0.1"
    assert wsgi_peer({}) == ""


def test_the_demo_runs_uvicorn_without_proxy_headers_unless_configured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from bastion.cli import main

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    assert main(["demo", "--port", "8765"]) == 0
    monkeypatch.setenv("BASTION_TRUSTED_PROXIES", "10.1.2.3/8, ::1")
    assert main(["demo", "--port", "8765"]) == 0
    capsys.readouterr()
    assert calls[0]["proxy_headers"] is False and "forwarded_allow_ips" not in calls[0]
    # uvicorn parses networks strictly, so it gets them in their exact form.
    assert calls[1]["proxy_headers"] is True
    assert calls[1]["forwarded_allow_ips"] == ["10.0.0.0/8", "::1/128"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.binary(max_size=40), st.binary(max_size=40))
def test_asgi_peer_takes_any_header(reported: str, xff: bytes, forwarded: bytes) -> None:
    peer = asgi_peer(reported, _plain_receive, xff or None, forwarded or None)
    assert peer in (reported, UNKNOWN)
