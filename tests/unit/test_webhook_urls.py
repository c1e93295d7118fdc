"""Where keystile may send webhooks (contract §13, issue #15 items 1 and 6):
no loopback, private, link-local or metadata address however it is written,
https only, unless the operator allows it."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from keystile.webhooks import urls
from keystile.webhooks.urls import (
    UrlPolicy,
    UrlRefused,
    allowed_addresses,
    check_destination,
    check_url,
)

pytestmark = pytest.mark.anyio

STRICT = UrlPolicy()
OPEN = UrlPolicy(allow_http=True, allow_private=True)

FORBIDDEN_HOSTS = [
    "127.0.0.1",
    "127.1",  # short form
    "2130706433",  # decimal 127.0.0.1
    "0x7f000001",  # hex
    "0x7f.0.0.1",
    "0177.0.0.1",  # octal
    "017700000001",
    "0.0.0.0",
    "0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.100.100.200",  # Alibaba metadata, shared address space
    "100.64.0.1",
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[0:0:0:0:0:0:0:1]",
    "[fe80::1]",
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "[fc00::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
    "[ff02::1]",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "api.localhost",
]


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
async def test_internal_addresses_are_refused(host: str) -> None:
    with pytest.raises(UrlRefused, match="loopback, private or link-local"):
        await check_destination(f"https://{host}/hook", STRICT)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "10.1.2.3"])
async def test_the_operator_may_allow_private_addresses(host: str) -> None:
    target = await check_destination(f"http://{host}:8080/hook", OPEN)
    assert target.port == 8080 and target.path == "/hook"


async def test_a_name_resolving_to_loopback_is_refused_at_delivery_time() -> None:
    """The hosts file names 127.0.0.1 "localhost"; the resolver is asked, not a list."""
    target = check_url("https://localhost:9/x", UrlPolicy(allow_private=True))
    assert any(address.is_loopback for address in await allowed_addresses(target, OPEN))
    with pytest.raises(UrlRefused, match=r"localhost is (127\.0\.0\.1|::1)"):
        await allowed_addresses(target, STRICT)


@pytest.mark.parametrize("host", ["93.184.215.14", "8.8.8.8", "[2606:4700:4700::1111]", "1.1.1.1"])
async def test_public_addresses_are_allowed(host: str) -> None:
    target = await check_destination(f"https://{host}/events?x=1", STRICT)
    assert target.scheme == "https" and target.path == "/events?x=1"


class FakeDns:
    """A resolver whose answers the test sets (no query leaves the machine)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [
            (family[ipaddress.ip_address(a).version], socket.SOCK_STREAM, 6, "", (a, port))
            for a in self.answers[host]
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(urls, "lookup", fake)
    return fake


async def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_later(
    dns: FakeDns,
) -> None:
    """Nothing can be sent to it now, and every delivery resolves again."""
    target = await check_destination("https://hooks.example.test/in", STRICT)
    assert target.host == "hooks.example.test"
    with pytest.raises(UrlRefused, match="does not resolve"):
        await allowed_addresses(target, STRICT)


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["93.184.215.14", "10.0.0.7"], ["2606:4700::1", "::1"], ["169.254.169.254"]],
)
async def test_a_name_with_any_internal_address_is_refused(
    dns: FakeDns, answers: list[str]
) -> None:
    """One bad address is enough: a resolver may hand the others out in any order."""
    dns.answers["hooks.example.test"] = answers
    with pytest.raises(UrlRefused, match="loopback, private or link-local"):
        await check_destination("https://hooks.example.test/in", STRICT)


async def test_a_name_repointed_after_creation_is_refused_at_delivery(dns: FakeDns) -> None:
    """DNS rebinding: public when the endpoint is made, loopback at delivery."""
    dns.answers["hooks.example.test"] = ["93.184.215.14"]
    target = await check_destination("https://hooks.example.test/in", STRICT)
    dns.answers["hooks.example.test"] = ["127.0.0.1"]
    with pytest.raises(UrlRefused, match=r"hooks\.example\.test is 127\.0\.0\.1"):
        await allowed_addresses(target, STRICT)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://93.184.215.14/x", "must use https"),
        ("ftp://93.184.215.14/x", "must use https"),
        ("//93.184.215.14/x", "must use https"),
        ("https:///x", "must name a host"),
        ("https://user:pass@93.184.215.14/x", "credentials"),
        ("https://93.184.215.14/x#frag", "fragment"),
        ("https://93.184.215.14/a b", "without spaces"),
        ("https://93.184.215.14/é", "non-ASCII"),
        ("https://93.184.215.14:99999/x", "not a valid URL"),
        ("https://93.184.215.14/" + "a" * 2100, "at most 2048"),
    ],
)
def test_syntax_rules(url: str, problem: str) -> None:
    with pytest.raises(UrlRefused, match=problem):
        check_url(url, STRICT)


def test_http_only_when_allowed() -> None:
    target = check_url("http://93.184.215.14/x", UrlPolicy(allow_http=True))
    assert (target.scheme, target.port, target.host_header) == ("http", 80, "93.184.215.14")
    assert check_url("https://[2606:4700::1]:8443/", STRICT).host_header == "[2606:4700::1]:8443"
