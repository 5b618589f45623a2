"""Request bodies of the account routes are bounded on the wire, over real servers.

Each framework's app runs on a real server in a thread (uvicorn for Starlette and FastAPI,
Werkzeug's for Flask) on a real redis-server; the requests are raw HTTP over a socket, so the
body can lie about its length or keep growing. The server shares this process, so its memory
is read from ``/proc/self/statm`` while a body is sent.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette

from bastion import Bastion, Settings
from bastion.adapters import fastapi as fastapi_adapter
from bastion.adapters import flask as flask_adapter
from bastion.adapters import starlette as starlette_adapter
from tests import servers

FRAMEWORKS = ["starlette", "fastapi", "flask"]
LIMIT = 65_536  # the default max_body_size
MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def account_app(framework: str, bastion: Bastion) -> Any:
    """An app with the account routes only, as each framework mounts them."""
    if framework == "flask":
        app = Flask("limits")
        flask_adapter.init_app(app, bastion)
        return app
    if framework == "fastapi":
        fast = FastAPI()
        fast.include_router(fastapi_adapter.account_router(bastion))
        return bastion.asgi(fast)
    return bastion.asgi(
        Starlette(
            routes=starlette_adapter.account_routes(bastion),
            exception_handlers=starlette_adapter.exception_handlers,
        )
    )


class Served(servers.Served):
    """The account routes of one framework on its real server."""

    def __init__(self, framework: str, bastion: Bastion) -> None:
        super().__init__(account_app(framework, bastion), wsgi=framework == "flask")
        self.framework = framework


@pytest.fixture(params=FRAMEWORKS)
def served(request: pytest.FixtureRequest, real_redis: str) -> Iterator[Served]:
    bastion = Bastion(Settings(redis_url=real_redis, jwt_secret="j" * 40))
    server = Served(str(request.param), bastion)
    yield server
    server.stop()


def head(length: int | None = None, path: str = "/account/sessions") -> bytes:
    """A log-in request's head: with Content-Length, or chunked when ``length`` is None."""
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one response (framed by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65_536)
        if not more:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += more
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        more = sock.recv(65_536)
        if not more:
            break
        body += more
    return status, headers, json.loads(body[:length]) if length else None


def padded(value: dict[str, str], size: int) -> bytes:
    """``value`` as JSON, padded with spaces to exactly ``size`` bytes."""
    text = json.dumps(value).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


def exchange(server: Served, request: bytes) -> tuple[int, dict[str, str], Any]:
    with server.connect() as sock:
        sock.sendall(request)
        return read_response(sock)


class Resident:
    """The most this process held in RAM while it was watched (sampled every 2 ms)."""

    def __init__(self) -> None:
        self.start = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)

    def __enter__(self) -> Resident:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_a_huge_content_length_is_refused_before_the_body_is_read(served: Served) -> None:
    # 200 MB announced, 40 bytes sent: an answer now means nothing waited for (or read) the rest.
    with served.connect() as sock:
        sock.settimeout(5)
        sock.sendall(head(200 * MB) + b'{"email": "ada@example.com", "password"')
        status, headers, body = read_response(sock)
    assert status == 413, body
    assert body == {
        "code": 413,
        "type": "general_payload_too_large",
        "message": f"The request body is larger than {LIMIT} bytes.",
    }
    assert headers["content-type"] == "application/json"


def test_bodies_up_to_the_limit_are_read_and_one_byte_more_is_not(served: Served) -> None:
    at_limit = padded({"email": "ada@example.com"}, LIMIT)
    status, _, body = exchange(served, head(LIMIT) + at_limit)
    assert (status, body["message"]) == (400, "Missing required field 'password'.")
    over = padded({"email": "ada@example.com"}, LIMIT + 1)
    status, _, body = exchange(served, head(LIMIT + 1) + over)
    assert (status, body["type"]) == (413, "general_payload_too_large")
    # The same two bodies, chunked (no length announced): judged as they are read.
    pieces = [at_limit[i : i + 10_000] for i in range(0, LIMIT, 10_000)]
    status, _, body = exchange(served, head() + b"".join(map(chunk, pieces)) + chunk(b""))
    assert (status, body["message"]) == (400, "Missing required field 'password'.")
    pieces = [over[i : i + 10_000] for i in range(0, LIMIT + 1, 10_000)]
    status, _, body = exchange(served, head() + b"".join(map(chunk, pieces)) + chunk(b""))
    assert (status, body["type"]) == (413, "general_payload_too_large")


def test_a_chunked_body_that_keeps_growing_is_cut_off_at_the_limit(served: Served) -> None:
    total = 50 * MB
    block = chunk(b" " * 65_536)
    # One request first, so the server's own first-use allocations are not counted.
    exchange(served, head(2) + b"{}")
    sent = 0
    with served.connect() as sock, Resident() as memory:
        sock.sendall(head() + chunk(b"{"))
        while sent < total:
            # Stop sending as soon as the answer is there, as a browser would.
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(block)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 65_536
        else:
            sock.sendall(chunk(b"}") + chunk(b""))
        status, _, body = read_response(sock)
    print(
        f"\n{served.framework}: {sent / MB:.1f} MB sent of {total // MB} MB before the answer; "
        f"RSS {memory.start / MB:.0f} MB before, peak +{memory.growth / MB:.1f} MB"
    )
    assert (status, body["type"]) == (413, "general_payload_too_large")
    # The server answered long before the upload ended: it stopped reading at the limit (what
    # was sent after it sat in socket buffers, or was drained by the server and dropped).
    assert sent < total // 2
    # And it never held the body: far less than the 50 MB sent.
    assert memory.growth < 20 * MB


def test_max_body_size_is_a_setting(real_redis: str) -> None:
    bastion = Bastion(Settings(redis_url=real_redis, max_body_size=16_384))
    server = Served("starlette", bastion)
    try:
        status, _, body = exchange(server, head(16_385) + padded({}, 16_385))
        assert (status, body["message"]) == (413, "The request body is larger than 16384 bytes.")
        status, _, body = exchange(server, head(16_384) + padded({}, 16_384))
        assert (status, body["message"]) == (400, "Missing required field 'email'.")
    finally:
        server.stop()
