"""Which URLs keystile may send webhooks to (contract §13).

A webhook URL is chosen by a customer, and keystile sends requests to it
from inside the operator's network: without rules, an endpoint pointed at
``http://169.254.169.254/`` or ``http://localhost:6379/`` would make
keystile a proxy into that network (server-side request forgery, OWASP
SSRF prevention cheat sheet). So:

- the scheme is ``https`` (``http`` only with ``KEYSTILE_WEBHOOK_ALLOW_HTTP``);
- the URL carries no credentials and no fragment, and is at most 2,048
  characters;
- every address the host name resolves to must be a global unicast
  address: not loopback, private (RFC 1918, unique local), link-local
  (which holds the cloud metadata address 169.254.169.254), shared
  (100.64/10), multicast, reserved or unspecified (``0.0.0.0``, ``::``),
  including IPv4 written as a decimal or hex number and IPv4 inside IPv6
  (``::ffff:127.0.0.1``); ``KEYSTILE_WEBHOOK_ALLOW_PRIVATE`` lifts this.

The address check runs when an endpoint is created or its URL changed, and
again before every delivery, on the addresses the request is then sent to
(so a name re-pointed at a private address later is refused too).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 2.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ValueError):
    """The URL breaks a rule above; the message says which, for a 400."""


class Unresolvable(UrlRefused):
    """The host name does not resolve (now)."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allow_http: bool = False  # KEYSTILE_WEBHOOK_ALLOW_HTTP
    allow_private: bool = False  # KEYSTILE_WEBHOOK_ALLOW_PRIVATE


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL, split: where to connect and what to call the host."""

    scheme: str
    host: str  # as written, without brackets; IDNA-encoded when a name
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return bracketed if self.port == default else f"{bracketed}:{self.port}"


def check_url(url: str, policy: UrlPolicy) -> Target:
    """The syntactic rules: scheme, host, no credentials or fragment, length.

    Returns the :class:`Target`; raises :class:`UrlRefused`. Names that are
    loopback by definition (``localhost`` and ``*.localhost``, RFC 6761) are
    refused here, without asking a resolver."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise UrlRefused("must be an absolute URL without spaces or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})") from None
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in allowed:
        raise UrlRefused(
            "must use https" if not policy.allow_http else "must be an absolute http or https URL"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not contain credentials (user:password@)")
    if parts.fragment or url.endswith("#"):
        raise UrlRefused("must not contain a fragment (#)")
    if not policy.allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise UrlRefused("must not point at a loopback, private or link-local address")
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port or (443 if parts.scheme == "https" else 80),
        path=_path(parts),
    )


def _path(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one in any form a resolver
    accepts: dotted, decimal (``2130706433``), hex (``0x7f000001``),
    octal parts (``0177.0.0.1``), IPv6; else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def forbidden(address: IPAddress) -> bool:
    """True unless ``address`` is a global unicast address (IPv4 inside
    IPv6, mapped or 6to4 or NAT64, is judged as the IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden(embedded)
    return not address.is_global or address.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


async def lookup(host: str, port: int) -> list[tuple[Any, ...]]:
    """The system resolver (``getaddrinfo``, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(infos)


async def resolve(target: Target) -> list[IPAddress]:
    """The addresses ``target.host`` resolves to, in the resolver's order.

    Raises :class:`Unresolvable` when the name does not resolve within
    ``RESOLVE_TIMEOUT_SECONDS``."""
    literal = literal_address(target.host)
    if literal is not None:
        return [literal]
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await lookup(target.host, target.port)
    except (OSError, TimeoutError, UnicodeError) as exc:
        reason = str(exc) or "timeout"
        raise Unresolvable(f"the host {target.host!r} does not resolve ({reason})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"the host {target.host!r} does not resolve")
    return addresses


async def allowed_addresses(target: Target, policy: UrlPolicy) -> list[IPAddress]:
    """Resolve ``target`` and refuse it (:class:`UrlRefused`) when any of its
    addresses is forbidden (one bad address is enough: a resolver may hand
    out the others in any order)."""
    addresses = await resolve(target)
    if not policy.allow_private:
        for address in addresses:
            if forbidden(address):
                raise UrlRefused(
                    f"must not point at a loopback, private or link-local address "
                    f"({target.host} is {address})"
                )
    return addresses


async def check_destination(url: str, policy: UrlPolicy) -> Target:
    """The check of an endpoint's URL when it is created or changed: the
    syntactic rules, then the addresses when the name resolves now. A name
    that does not resolve (yet) is accepted: nothing can be sent to it, and
    every delivery checks again."""
    target = check_url(url, policy)
    literal = literal_address(target.host)
    if literal is not None:
        if not policy.allow_private and forbidden(literal):
            raise UrlRefused("must not point at a loopback, private or link-local address")
        return target
    with contextlib.suppress(Unresolvable):
        await allowed_addresses(target, policy)
    return target
