"""Apps on real HTTP servers for black-box tests: uvicorn or Werkzeug's, in a thread."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from typing import Any

import uvicorn
from werkzeug.serving import make_server


class Served:
    """One app on a free 127.0.0.1 port: WSGI apps on Werkzeug's server, ASGI ones on uvicorn.

    ``uvicorn_options`` go to ``uvicorn.Config`` as given, so no option means uvicorn's defaults
    (proxy headers on, trusting ``FORWARDED_ALLOW_IPS`` or 127.0.0.1 and ::1).
    """

    def __init__(self, app: Any, *, wsgi: bool, **uvicorn_options: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.wsgi = wsgi
        if wsgi:
            self.sock.close()
            self.werkzeug = make_server("127.0.0.1", self.port, app, threaded=True)
            self.thread = threading.Thread(target=self.werkzeug.serve_forever, daemon=True)
        else:
            config = uvicorn.Config(app, lifespan="off", log_level="warning", **uvicorn_options)
            self.uvicorn = uvicorn.Server(config)
            self.thread = threading.Thread(
                target=lambda: asyncio.run(self.uvicorn.serve(sockets=[self.sock])), daemon=True
            )
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the test server did not start")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, http.client.HTTPMessage]:
        """One request on a new connection: status, JSON body (or None) and headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("latin-1")
        return response.status, parsed, response.headers

    def connect(self) -> socket.socket:
        """A raw connection to the server, for requests http.client would not send."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self.wsgi:
            self.werkzeug.shutdown()
        else:
            self.uvicorn.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
