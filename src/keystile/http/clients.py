"""The client's address: the socket peer, or ``X-Forwarded-For`` when the
peer is a proxy we were told to trust (``KEYSTILE_TRUSTED_PROXIES``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` → networks. Raises ``ValueError`` on a bad entry."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(scope: Scope, trusted: Sequence[Network]) -> str | None:
    """Walks ``X-Forwarded-For`` from the right, past trusted proxies, to the
    first address a trusted proxy vouched for. A client cannot spoof it by
    sending its own header: only hops appended by trusted proxies count."""
    peer = scope.get("client")
    address: str | None = peer[0] if peer else None
    if not trusted or address is None or not is_trusted(address, trusted):
        return address
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            hops += [hop.strip() for hop in value.decode("latin-1").split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a malformed hop: trust nothing beyond the last good one
        address = hop
        if not is_trusted(hop, trusted):
            return hop
    return address
