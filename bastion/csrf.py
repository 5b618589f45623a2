"""Cross-site request checks: cookie-authenticated requests, and Bastion's own routes (sans-IO)."""

from __future__ import annotations

from collections.abc import Iterable

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_cross_site(
    method: str,
    scheme: str,
    headers: Iterable[tuple[bytes, bytes]],
    allowed_origins: tuple[str, ...],
    *,
    websocket: bool = False,
) -> bool:
    """Whether a request authenticated by the session cookie must be refused as cross-site.

    Safe methods pass (they must not change state); otherwise :func:`from_another_site`.
    A WebSocket handshake is a GET but is checked like an unsafe request (cross-site hijacking).
    """
    if method in SAFE_METHODS and not websocket:
        return False
    return from_another_site(scheme, headers, allowed_origins)


def from_another_site(
    scheme: str, headers: Iterable[tuple[bytes, bytes]], allowed_origins: tuple[str, ...]
) -> bool:
    """Whether the browser that sent a request says another site made it send it.

    ``Sec-Fetch-Site: cross-site`` is another site, and so is an ``Origin`` other than the
    request's own or an allowed one. Requests with neither header are not from a browser that
    could have been tricked into sending them.
    """
    fetch_site = origin = host = None
    for name, value in headers:
        if name == b"sec-fetch-site":
            fetch_site = value
        elif name == b"origin":
            origin = value
        elif name == b"host":
            host = value
    if fetch_site == b"cross-site":
        return True
    if fetch_site in (b"same-origin", b"none"):
        return False
    if origin is None:
        return False
    try:
        origin_text = origin.decode("ascii").rstrip("/").lower()
    except UnicodeDecodeError:
        return True
    if origin_text in allowed_origins:
        return False
    if host is None:
        return True
    own_host = host.decode("latin-1").lower()
    # Behind a TLS-terminating proxy the app sees http while the browser says https: an https
    # origin for the same host is the same site, never a weaker one.
    own = {f"https://{own_host}"}
    if scheme in ("http", "ws"):
        own.add(f"http://{own_host}")
    return origin_text not in own
