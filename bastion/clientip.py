"""The client's IP address: the socket peer, or X-Forwarded-For behind a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
