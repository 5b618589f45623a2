"""The client's IP address: the socket peer, or X-Forwarded-For behind a trusted proxy.

Bastion reads the socket's address itself and believes forwarded headers only from
``trusted_proxies``, whatever the server does with them. That takes care on ASGI: uvicorn's
proxy headers are on by default and trust 127.0.0.1, so its ``ProxyHeadersMiddleware`` (which
runs before any app) overwrites ``scope["client"]`` with an X-Forwarded-For hop and keeps the
original nowhere in the scope; a client on the same host, or behind a local proxy that passes
the header through, would then name its own address. :func:`asgi_peer` reads the socket from the
connection instead, and where it cannot, refuses to take a forwarded address for the peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"
"""The peer of a request whose socket address the server replaced and Bastion cannot read.

RFC 7239's word for an unknown node; it is not an address, so no proxy setting trusts it and
every such request shares one rate-limit bucket.
"""


def parse_networks(proxies: Sequence[str]) -> tuple[Network, ...]:
    """The ``trusted_proxies`` setting as networks."""
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def normal_ip(text: str) -> str:
    """``text`` as the normal form of an IPv4 or IPv6 address, or "" if it is none.

    An IPv6 zone (``fe80::1%eth0``) is dropped: it is free text of the client's system, and
    says nothing about who the client is.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ""
    return str(ipaddress.ip_address(address.packed))


def client_ip(peer: str, forwarded_for: bytes | None, trusted: tuple[Network, ...]) -> str:
    """Who sent the request: the peer, unless a trusted proxy relayed it.

    Behind trusted proxies the client is the right-most X-Forwarded-For entry that is not itself
    a trusted proxy; entries further left were written by the client and may be forged.
    """
    if not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: fall back to what the socket says
    return peer


def socket_peer(receive: object) -> str | None:
    """The socket's address of the connection an ASGI ``receive`` callable reads from.

    uvicorn's ``receive`` is a method of its request cycle (of its protocol, for WebSockets),
    which holds the asyncio transport; ``get_extra_info("peername")`` is asyncio's public way to
    ask a transport for its peer. ``""`` for a socket without an IP address (a Unix socket);
    None when no transport can be reached (another server, a middleware outside Bastion that
    wraps ``receive``, an in-process test client).
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    get_extra_info = getattr(transport, "get_extra_info", None)
    if not callable(get_extra_info):
        return None
    try:
        name = get_extra_info("peername")
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    if isinstance(name, tuple | list) and len(name) >= 2 and isinstance(name[0], str):
        return name[0]
    if isinstance(name, str | bytes):
        return ""  # a Unix socket's peer has a path (usually empty), not an address
    return None


def _same_host(value: str) -> str:
    """An address (or anything else) in one spelling, for comparing hosts."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower()


def _hop_host(hop: str) -> str:
    """The host of one forwarded hop (``1.2.3.4:80`` names ``1.2.3.4``, ``"[::1]:80"`` ``::1``)."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def forwarded_hosts(forwarded_for: bytes | None, forwarded: bytes | None) -> set[str]:
    """Every host an X-Forwarded-For or RFC 7239 ``Forwarded: for=`` header names."""
    hosts: set[str] = set()
    if forwarded_for:
        hosts.update(_hop_host(h) for h in forwarded_for.decode("latin-1").split(","))
    if forwarded:
        for element in forwarded.decode("latin-1").replace(",", ";").split(";"):
            name, _, value = element.partition("=")
            if name.strip().lower() == "for":
                hosts.add(_hop_host(value))
    return {_same_host(h) for h in hosts if h}


def asgi_peer(
    reported: str, receive: object, forwarded_for: bytes | None, forwarded: bytes | None
) -> str:
    """The socket peer of an ASGI request, whatever the server's proxy-header setting.

    ``reported`` is ``scope["client"][0]``. The connection's own address comes first. Without
    one, ``reported`` stands unless a forwarded header names it: a server's proxy-header support
    (uvicorn's, Hypercorn's, Daphne's) puts one of those hosts there, so the peer may have been
    replaced by an address the client wrote, and it is :data:`UNKNOWN` instead.
    """
    peer = socket_peer(receive)
    if peer is not None:
        return peer
    if (forwarded_for or forwarded) and _same_host(reported) in forwarded_hosts(
        forwarded_for, forwarded
    ):
        return UNKNOWN
    return reported


def wsgi_peer(environ: Mapping[str, Any]) -> str:
    """The socket peer of a WSGI request: ``REMOTE_ADDR`` as the server set it.

    Werkzeug's ``ProxyFix`` rewrites ``REMOTE_ADDR`` from X-Forwarded-For and keeps the original
    in ``werkzeug.proxy_fix.orig``; it is read from there when ProxyFix runs outside Bastion.
    """
    original = environ.get("werkzeug.proxy_fix.orig")
    if isinstance(original, Mapping) and original.get("REMOTE_ADDR"):
        return str(original["REMOTE_ADDR"])
    return str(environ.get("REMOTE_ADDR", ""))
