"""A fake breached-password service on 127.0.0.1, and the check an app would write against it.

The service plays a k-anonymity "range" API like Have I Been Pwned's: ``GET /range/ABCDE``
answers every breached SHA-1 digest starting with those five hex digits as ``SUFFIX:COUNT``
lines, so the password itself never leaves the app. Standard library only, one thread.
"""

from __future__ import annotations

import hashlib
import random
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bastion import PasswordContext, PasswordRejected


def sha1_hex(password: str) -> str:
    """The upper-case SHA-1 of ``password`` in UTF-8, as the range API spells digests."""
    return hashlib.sha1(password.encode("utf-8")).hexdigest().upper()  # SHA-1: the API's choice


class BreachService:
    """A range API on a free loopback port; ``paths`` records every request it answered."""

    def __init__(self, breached: dict[str, int]) -> None:
        self.digests = {sha1_hex(password): count for password, count in breached.items()}
        self.paths: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.paths.append(self.path)
                prefix = self.path.removeprefix("/range/")
                if len(prefix) != 5 or not all(c in "0123456789ABCDEF" for c in prefix):
                    self.send_error(400)
                    return
                lines = [
                    f"{digest[5:]}:{count}"
                    for digest, count in service.digests.items()
                    if digest.startswith(prefix)
                ]
                # Padding, like the real API: suffixes of other passwords with a count of 0.
                lines += [f"{random.getrandbits(140):035X}:0" for _ in range(3)]
                body = "\r\n".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> BreachService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class PasswordBreached(PasswordRejected):
    """The app's own error type for a password found in a breach."""

    type = "password_breached"
    default_message = "This password has appeared in a data breach. Choose another one."


# No proxy, whatever the environment says: the fake service is on 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def breach_check(base_url: str) -> Any:
    """A ``password_checks`` entry that asks the range API at ``base_url``."""

    def not_breached(password: str, context: PasswordContext) -> None:
        digest = sha1_hex(password)
        with _opener.open(f"{base_url}/range/{digest[:5]}", timeout=2) as response:
            body = response.read().decode("ascii")
        for line in body.splitlines():
            suffix, _, count = line.partition(":")
            if suffix == digest[5:] and int(count) > 0:
                raise PasswordBreached()

    return not_breached
