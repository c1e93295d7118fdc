"""The routes file: parsing with line-numbered errors, and matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from keystile.errors import ConfigurationError
from keystile.gateway.routes import GatewayRoute, load_routes, parse_routes
from keystile.settings import Settings

CATALOG = Settings().catalog
EXAMPLE = Path(__file__).parents[2] / "examples" / "routes.toml"

GOOD = """
[[routes]]
prefix = "/v1/contacts"
methods = ["GET"]
scope = "read:contacts"
upstream = "http://127.0.0.1:9001"
timeout_seconds = 30

[[routes]]
prefix = "/v1/contacts"
methods = ["POST", "PUT", "PATCH", "DELETE"]
scope = "write:contacts"
upstream = "http://127.0.0.1:9001"

[[routes]]
prefix = "/v1/contacts/export/"
methods = ["get"]
scope = "admin:webhooks"
upstream = "https://export.internal:8443/"

[[routes]]
prefix = "/"
methods = ["OPTIONS"]
scope = "read:contacts"
upstream = "http://127.0.0.1:9002"
"""


def test_matching_by_method_and_longest_prefix_on_segment_boundaries() -> None:
    table = parse_routes(GOOD, CATALOG)

    def scope_of(method: str, path: str) -> object:
        match = table.match(method, path)
        return match.scope if isinstance(match, GatewayRoute) else match

    assert scope_of("GET", "/v1/contacts") == "read:contacts"
    assert scope_of("GET", "/v1/contacts/42") == "read:contacts"
    assert scope_of("DELETE", "/v1/contacts/42") == "write:contacts"
    assert scope_of("GET", "/v1/contacts/export") == "admin:webhooks"
    assert scope_of("GET", "/v1/contacts/export/all.csv") == "admin:webhooks"
    assert (
        scope_of("POST", "/v1/contacts/export/x") == "write:contacts"
    )  # the longest prefix for POST
    # The catch-all "/" route (OPTIONS) matches every path: other methods are 405.
    assert scope_of("GET", "/v1/contactsX") == ["OPTIONS"]
    assert scope_of("GET", "/elsewhere") == ["OPTIONS"]
    assert scope_of("OPTIONS", "/anything/at/all") == "read:contacts"
    without_catch_all = parse_routes(GOOD.rsplit("[[routes]]", 1)[0], CATALOG)
    assert without_catch_all.match("GET", "/v1/contactsX") is None
    assert without_catch_all.match("GET", "/v1") is None
    # HEAD is served wherever GET is (RFC 9110 §9.3.2), by the GET route.
    assert scope_of("HEAD", "/v1/contacts") == "read:contacts"
    assert scope_of("HEAD", "/v1/contacts/export/x") == "admin:webhooks"
    assert without_catch_all.match("TRACE", "/v1/contacts") == [
        "DELETE", "GET", "HEAD", "PATCH", "POST", "PUT",
    ]  # fmt: skip


def test_prefixes_that_differ_only_in_spelling_are_the_same_route() -> None:
    text = route(prefix='"/v1/X"') + route(prefix='"/V1/%78"')
    with pytest.raises(ConfigurationError, match="GET /V1/%78 is already routed at line 2"):
        parse_routes(text, CATALOG, source="routes.toml")


def test_matching_is_in_canonical_form() -> None:
    table = parse_routes(route(prefix='"/V1/Contacts"'), CATALOG)
    assert isinstance(table.match("GET", "/v1/contacts/42"), GatewayRoute)
    assert table.match("GET", "/V1/Contacts/42") is None  # match() takes the canonical form


def test_defaults_and_normalisation() -> None:
    routes = parse_routes(GOOD, CATALOG).routes
    assert routes[1].timeout_seconds == 30.0
    assert routes[2].prefix == "/v1/contacts/export"
    assert routes[2].methods == frozenset({"GET"})
    assert routes[2].upstream == "https://export.internal:8443"
    assert [r.line for r in routes] == [2, 9, 15, 21]


def route(**fields: str) -> str:
    base = {
        "prefix": '"/v1/x"',
        "methods": '["GET"]',
        "scope": '"read:contacts"',
        "upstream": '"http://h:1"',
    }
    base.update(fields)
    body = "\n".join(f"{k} = {v}" for k, v in base.items() if v != "")
    return f"# a comment\n[[routes]]\n{body}\n"


def test_a_route_without_upstream_is_for_forward_auth_only() -> None:
    table = parse_routes(route(upstream="") + route(prefix='"/v1/y"'), CATALOG)
    assert [r.upstream for r in table.routes] == [None, "http://h:1"]
    assert [r.prefix for r in table.proxied().routes] == ["/v1/y"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[routes]\n", "invalid TOML"),
        ("[other]\nx = 1\n", "unknown top-level key 'other'"),
        (route(upstream='"ftp://h"'), ":6: route 1: upstream must be an http:// or https:// URL"),
        (route(upstream='"http://h:1/base"'), ":6: route 1: upstream must be"),
        (route(upstream='"http://h:99999"'), ":6: route 1: upstream has an invalid port"),
        (
            route(scope='"fly:rockets"'),
            ":5: route 1: scope 'fly:rockets' is not in the scope catalog",
        ),
        (route(methods='["FETCH"]'), ":4: route 1: unknown method 'FETCH'"),
        (route(methods="[]"), ":4: route 1: methods must be a non-empty list"),
        (route(prefix='"v1/x"'), ":3: route 1: prefix must be a path"),
        (route(prefix='"/v1/../admin"'), ":3: route 1: prefix must be an unambiguous path"),
        (route(prefix='"/v1/%2e%2e/admin"'), ":3: route 1: prefix must be an unambiguous path"),
        (route(prefix='"/v1;x/admin"'), ":3: route 1: prefix must be an unambiguous path"),
        (route(timeout_seconds="0"), ":7: route 1: timeout_seconds must be a number"),
        (route(timeout_seconds='"30"'), ":7: route 1: timeout_seconds must be a number"),
        (route(colour='"red"'), ":7: route 1: unknown field 'colour'"),
        (route(scope=""), ":2: route 1: missing field 'scope'"),
        (
            route() + route(methods='["POST", "GET"]'),
            ":8: route 2: GET /v1/x is already routed at line 2",
        ),
    ],
)
def test_problems_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_routes(text, CATALOG, source="routes.toml")
    assert caught.value.message.startswith("routes.toml")
    assert expected in caught.value.message, caught.value.message


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_routes(tmp_path / "nope.toml", CATALOG)


def test_the_example_covers_the_vendors_resources() -> None:
    table = load_routes(EXAMPLE, CATALOG)
    scopes = {route.scope for route in table.routes}
    assert scopes >= {
        "read:contacts", "write:contacts", "read:deals", "write:deals",
        "write:email", "write:ai", "admin:webhooks",
    }  # fmt: skip
