"""The client address behind trusted proxies (KEYSTILE_TRUSTED_PROXIES)."""

from __future__ import annotations

import pytest

from keystile.http.clients import client_address, parse_networks


def scope(peer: str, *forwarded: str) -> dict[str, object]:
    return {
        "client": (peer, 1234),
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


TRUSTED = parse_networks("10.0.0.0/8, 127.0.0.1")


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address(scope("127.0.0.1", "6.6.6.6"), ()) == "127.0.0.1"


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    assert client_address(scope("203.0.113.9", "6.6.6.6"), TRUSTED) == "203.0.113.9"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (("198.51.100.7",), "198.51.100.7"),
        (("6.6.6.6, 198.51.100.7",), "198.51.100.7"),  # a spoofed left part is ignored
        (("198.51.100.7, 10.1.2.3",), "198.51.100.7"),  # past a second trusted proxy
        (("6.6.6.6", "198.51.100.7"), "198.51.100.7"),  # several headers read as one list
        (("10.0.0.5, 10.0.0.6",), "10.0.0.5"),  # all trusted: the leftmost
        (("not-an-ip, 198.51.100.7",), "198.51.100.7"),
        (("198.51.100.7, garbage",), "127.0.0.1"),  # malformed last hop: trust nothing
        ((), "127.0.0.1"),
        (("2001:db8::1",), "2001:db8::1"),
    ],
)
def test_the_first_untrusted_hop_from_the_right(forwarded: tuple[str, ...], expected: str) -> None:
    assert client_address(scope("127.0.0.1", *forwarded), TRUSTED) == expected


def test_bad_networks_are_refused() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        parse_networks("10.0.0.0/8, banana")
