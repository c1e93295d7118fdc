"""The shipped proxy examples, end to end (contract §15, issue #16 item 2):
real nginx and Caddy (Debian packages) run examples/nginx/keystile.conf and
examples/caddy/Caddyfile, only their example addresses replaced
(bench/proxies.py), in front of the echoing upstream, asking a real
``keystile serve`` with examples/forward-auth-routes.toml. Traefik is not
run (no Debian package): its files are checked for what they say.

Under CI=true a proxy that cannot be installed fails the suite; elsewhere
its tests are skipped."""

from __future__ import annotations

import json
import os
import posixpath
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import yaml
from bench import proxies
from bench.run import installed

from keystile.http.headers import canonical_name
from tests.support import (
    LEDGER,
    ServerURL,
    cli_admin,
    echoing_upstream,
    free_port,
    keystile_env,
    run_cli,
    serving,
)
from tests.unit.test_paths import DOT_SEGMENTS, SEPARATORS

IDENTITY = ("x-keystile-key-id", "x-keystile-account-id", "x-keystile-scopes")
PROXIES = {"nginx": proxies.nginx, "caddy": proxies.caddy}


@dataclass
class Keystile:
    url: ServerURL
    admin: str
    reader: tuple[str, str]  # (key id, secret): read:contacts
    dealer: tuple[str, str]  # read:deals
    writer: tuple[str, str]  # write:contacts
    account: str
    api: str  # the echoing upstream


def require_program(name: str) -> None:
    """Install the Debian package when missing; skip when it cannot be had,
    but fail under CI=true (a missing proxy must never pass silently)."""
    if installed(name):
        return
    message = f"{name} is not installed and apt-get could not install it"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (required under CI=true)")
    pytest.skip(message)


def make_key(env: dict[str, str], account: str, name: str, *flags: str) -> tuple[str, str]:
    made = run_cli("keys", "create", "--account", account, "--name", name, *flags, "--json",
                   env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    data = json.loads(made.stdout)["data"]
    LEDGER.remember(data["key"])
    return data["id"], data["key"]


@pytest.fixture(scope="module")
def keystile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystile]:
    directory = tmp_path_factory.mktemp("forward-auth")
    env = keystile_env(
        directory / "data",
        KEYSTILE_ROUTES=str(proxies.FORWARD_AUTH_ROUTES),
        KEYSTILE_TRUSTED_PROXIES="127.0.0.1",
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
    )
    account, admin = cli_admin(env, "admin:api_keys", "read:contacts")
    reader = make_key(env, account, "reader", "--permission", "read:contacts")
    dealer = make_key(env, account, "dealer", "--permission", "read:deals")
    writer = make_key(env, account, "writer", "--permission", "write:contacts")
    with (
        echoing_upstream("--no-proxy-headers") as api,
        serving(env, log=directory / "server.log") as url,
    ):
        yield Keystile(url, admin, reader, dealer, writer, account, api)
    log = (directory / "server.log").read_text()
    assert not any(secret in log for secret in (admin, reader[1], dealer[1], writer[1]))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=sorted(PROXIES))
def proxy(
    request: pytest.FixtureRequest, keystile: Keystile, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The proxy running the shipped example: its URL."""
    name: str = request.param
    require_program(name)
    work = tmp_path_factory.mktemp(name)
    with PROXIES[name](port_of(keystile.url), port_of(keystile.api), work) as url:
        yield url


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def echoed(response: httpx.Response) -> dict[str, Any]:
    """What the upstream received; fails unless the response came from it."""
    assert response.status_code == 200, response.text
    assert response.headers.get("x-upstream") == "yes"
    body: dict[str, Any] = response.json()
    return body


def keystile_headers(echo: dict[str, Any]) -> list[tuple[str, str]]:
    """Every header the upstream received whose name an upstream could read
    as X-Keystile-* (any case, "_" for "-")."""
    return [
        (canonical_name(name.encode()).decode(), value)
        for name, value in echo["headers"]
        if canonical_name(name.encode()).startswith(b"x-keystile-")
    ]


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A refusal from the proxy, never from the upstream: the status, the
    JSON error body and X-Keystile-Error a client relies on."""
    assert response.status_code == status, (response.status_code, response.text)
    assert "x-upstream" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert response.headers["x-keystile-error"] == code
    assert not any(name in response.headers for name in IDENTITY)
    return error


class TestAllowed:
    def test_the_upstream_gets_keystiles_identity_and_the_original_request(
        self, proxy: str, keystile: Keystile
    ) -> None:
        key_id, secret = keystile.reader
        echo = echoed(httpx.get(f"{proxy}/v1/contacts/42?page=2", headers=bearer(secret)))
        assert echo["method"] == "GET"
        assert echo["raw_path"] == "/v1/contacts/42" and echo["query"] == "page=2"
        assert sorted(keystile_headers(echo)) == sorted(
            [("x-keystile-account-id", keystile.account), ("x-keystile-key-id", key_id),
             ("x-keystile-scopes", "read:contacts")]
        )  # fmt: skip
        names = [name.lower() for name, _ in echo["headers"]]
        assert "authorization" not in names  # the API gets the identity, not the key
        forwarded_for = dict(echo["headers"]).get("x-forwarded-for", "")
        assert forwarded_for.split(",")[-1].strip() == "127.0.0.1"

    def test_a_post_body_reaches_the_upstream(self, proxy: str, keystile: Keystile) -> None:
        secret = keystile.writer[1]
        echo = echoed(
            httpx.post(f"{proxy}/v1/contacts", headers=bearer(secret), content=b"x" * 5000)
        )
        assert echo["method"] == "POST" and echo["body_length"] == 5000

    def test_forged_identity_headers_never_reach_the_upstream(
        self, proxy: str, keystile: Keystile, request: pytest.FixtureRequest
    ) -> None:
        """Caddy removes every client-sent X-Keystile-* before asking keystile
        (so the request is served, with keystile's values only); nginx cannot
        remove headers by pattern, so keystile sees the dashed ones and
        refuses them (400); names with "_" nginx drops itself."""
        key_id, secret = keystile.reader
        forged = [
            ("X-Keystile-Key-Id", "key_forged"), ("x-keystile-account-id", "acct_forged"),
            ("X-KEYSTILE-SCOPES", "admin:api_keys"), ("X-Keystile-Error", "forged"),
            ("X_Keystile_Key_Id", "key_forged"), ("X-Keystile_Scopes", "admin:api_keys"),
            ("x_keystile-account-id", "acct_forged"), ("X-Keystile-Tenant", "other"),
        ]  # fmt: skip
        caddy = request.node.callspec.params["proxy"] == "caddy"
        for header in forged:
            response = httpx.get(
                f"{proxy}/v1/contacts/1", headers=[*bearer(secret).items(), header]
            )
            if caddy or "_" in header[0]:  # nginx drops names with "_" itself
                received = keystile_headers(echoed(response))
                assert sorted(received) == sorted(
                    [("x-keystile-account-id", keystile.account), ("x-keystile-key-id", key_id),
                     ("x-keystile-scopes", "read:contacts")]
                ), (header, received)  # fmt: skip
            else:
                assert_refused(response, 400, "validation_error")
        # Without a valid key, forged headers get nowhere either.
        for authorization in ([], [("Authorization", "Bearer ks_live_forged")]):
            response = httpx.get(f"{proxy}/v1/contacts/1", headers=[*authorization, *forged])
            assert_refused(response, 401 if caddy else 400,
                           "invalid_key" if caddy else "validation_error")  # fmt: skip


class TestRefused:
    def test_no_key_is_401_with_www_authenticate(self, proxy: str) -> None:
        response = httpx.get(f"{proxy}/v1/contacts/1")
        error = assert_refused(response, 401, "invalid_key")
        assert response.headers.get_list("www-authenticate") == ['Bearer realm="keystile"']
        assert error["request_id"] == response.headers["x-request-id"]

    def test_a_missing_scope_is_403(self, proxy: str, keystile: Keystile) -> None:
        response = httpx.get(f"{proxy}/v1/deals", headers=bearer(keystile.reader[1]))
        assert_refused(response, 403, "insufficient_permissions")

    def test_over_the_rate_limit_is_429_with_retry_after(
        self, proxy: str, keystile: Keystile
    ) -> None:
        _, secret = make_limited_key(keystile)
        for _ in range(2):
            echoed(httpx.get(f"{proxy}/v1/contacts", headers=bearer(secret)))
        limited = httpx.get(f"{proxy}/v1/contacts", headers=bearer(secret))
        assert_refused(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60

    def test_an_unrouted_path_is_404_and_an_unrouted_method_405(
        self, proxy: str, keystile: Keystile
    ) -> None:
        secret = keystile.reader[1]
        assert_refused(httpx.get(f"{proxy}/v1/other", headers=bearer(secret)), 404, "not_found")
        wrong = httpx.request("OPTIONS", f"{proxy}/v1/contacts", headers=bearer(secret))
        assert_refused(wrong, 405, "method_not_allowed")
        assert "GET" in wrong.headers["allow"]

    def test_client_sent_forwarded_headers_do_not_change_the_path_checked(
        self, proxy: str, keystile: Keystile
    ) -> None:
        dealer = keystile.dealer[1]
        headers = {**bearer(dealer), "X-Forwarded-Uri": "/v1/deals", "X-Forwarded-Method": "GET",
                   "X-Original-URI": "/v1/deals", "X-Original-Method": "GET"}  # fmt: skip
        response = httpx.get(f"{proxy}/v1/contacts/1", headers=headers)
        assert_refused(response, 403, "insufficient_permissions")


def make_limited_key(keystile: Keystile) -> tuple[str, str]:
    """A new read:contacts key allowed 2 requests a minute, made over the API."""
    made = httpx.post(
        f"{keystile.url}/v1/api-keys", headers=bearer(keystile.admin),
        json={"name": f"limited-{free_port()}", "permissions": ["read:contacts"],
              "rate_limit": {"limit": 2, "window_seconds": 60}},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    LEDGER.remember(data["key"])
    return data["id"], data["key"]


def raw_get(url: str, target: bytes, secret: str) -> tuple[int, dict[str, str], bytes]:
    """One GET with ``target`` sent byte for byte (no client library would)."""
    host, port = url.removeprefix("http://").split(":")
    request = (b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode()
               + b"\r\nAuthorization: Bearer " + secret.encode() + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


TRICKS = sorted(
    {f"/v1/deals/{segment}/contacts" for segment in DOT_SEGMENTS}
    | {f"/v1/deals{separator}contacts" for separator in SEPARATORS}
    | {"/v1/deals/..%2fcontacts", "/v1/deals/%2e%2e/contacts", "/v1/deals/./../contacts",
       "/v1/deals/x/../../contacts", "/v1//deals/../contacts"}
)  # fmt: skip


@pytest.mark.parametrize("path", TRICKS)
def test_path_tricks_never_reach_another_routes_scope(
    proxy: str, keystile: Keystile, path: str
) -> None:
    """A deals key and a path some server could read as /v1/contacts: refused
    (by the proxy or by keystile), or served as the deals path it is."""
    status, headers, body = raw_get(proxy, path.encode(), keystile.dealer[1])
    if status != 200:
        assert status in (400, 403, 404), (status, body)
        assert "x-upstream" not in headers
        return
    echo = json.loads(body)
    assert dict(keystile_headers(echo))["x-keystile-scopes"] == "read:deals"
    seen = posixpath.normpath(unquote(unquote(echo["raw_path"])).replace("\\", "/"))
    assert seen.startswith("/v1/deals"), (path, echo["raw_path"])


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_keystile_unreachable_fails_closed(name: str, keystile: Keystile, tmp_path: Path) -> None:
    """keystile down: nginx answers 503 service_unavailable, Caddy a 502; the
    upstream is never reached."""
    require_program(name)
    with PROXIES[name](free_port(), port_of(keystile.api), tmp_path) as url:
        response = httpx.get(f"{url}/v1/contacts", headers=bearer(keystile.reader[1]))
    assert response.status_code in (502, 503), response.text
    assert "x-upstream" not in response.headers
    if name == "nginx":
        assert_refused(response, 503, "service_unavailable")


class TestTraefikExample:
    """Shipped, not run: the files parse and say what the guide says."""

    def load(self, name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((proxies.EXAMPLES / "traefik" / name).read_text())
        return loaded

    def test_static_configuration(self) -> None:
        static = self.load("traefik.yml")
        assert static["entryPoints"]["web"]["address"] == proxies.LISTEN
        assert "forwardedHeaders" not in static["entryPoints"]["web"]
        assert static["providers"]["file"]["filename"] == "dynamic.yml"

    def test_the_router_strips_asks_keystile_then_drops_the_key(self) -> None:
        http = self.load("dynamic.yml")["http"]
        router = http["routers"]["api"]
        assert router["middlewares"] == ["keystile-strip", "keystile-auth", "keystile-drop-key"]
        middlewares = http["middlewares"]
        stripped = middlewares["keystile-strip"]["headers"]["customRequestHeaders"]
        assert stripped == dict.fromkeys(
            ["X-Keystile-Key-Id", "X-Keystile-Account-Id", "X-Keystile-Scopes", "X-Keystile-Error"],
            "",
        )
        auth = middlewares["keystile-auth"]["forwardAuth"]
        assert auth["address"] == f"http://{proxies.KEYSTILE}/v1/auth"
        assert auth["trustForwardHeader"] is False
        assert [name.lower() for name in auth["authResponseHeaders"]] == list(IDENTITY)
        spelled = re.compile(auth["authResponseHeadersRegex"])
        for name in ("X-Keystile-Key-Id", "X_keystile_key_id", "X-Keystile_scopes"):
            assert spelled.search(name), name
        assert not spelled.search("X-Forwarded-Keystile")
        assert middlewares["keystile-drop-key"]["headers"]["customRequestHeaders"] == {
            "Authorization": ""
        }
        upstreams = http["services"]["api"]["loadBalancer"]["servers"]
        assert upstreams == [{"url": f"http://{proxies.API}"}]
