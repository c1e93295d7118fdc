"""The gateway with real processes (issue #6): an upstream API started on a
free port, keystile in front of it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.http.headers import UNTRUSTED, canonical_name
from tests.e2e.upstream import pattern
from tests.support import (
    LEDGER,
    ServerURL,
    cli_admin,
    echoing_upstream,
    free_port,
    http_layer_answer,
    keystile_env,
    resident_peak_kib,
    run_cli,
    serving,
)
from tests.unit.test_paths import DOT_SEGMENTS, SEPARATORS

REPO = Path(__file__).parents[2]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    # report the real peer: the pool tests read its port
    with echoing_upstream("--timeout-keep-alive", "1", "--no-proxy-headers") as url:
        yield url


def routes_file(directory: Path, upstream: str) -> Path:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = directory / "routes.toml"
    path.write_text(
        f"""
[[routes]]
prefix = "/v1/contacts"
methods = ["GET"]
scope = "read:contacts"
upstream = "{upstream}"

[[routes]]
prefix = "/v1/contacts"
methods = ["POST", "PUT", "PATCH", "DELETE"]
scope = "write:contacts"
upstream = "{upstream}"

[[routes]]
prefix = "/v1/deals"
methods = ["GET"]
scope = "read:deals"
upstream = "{upstream}"

[[routes]]
prefix = "/v1/deals/sleep"
methods = ["GET"]
scope = "read:deals"
upstream = "{upstream}"
timeout_seconds = 1

[[routes]]
prefix = "/v1/down"
methods = ["GET"]
scope = "read:contacts"
upstream = "{dead}"

[[routes]]
prefix = "/files"
methods = ["GET", "POST", "HEAD"]
scope = "read:contacts"
upstream = "{upstream}"
timeout_seconds = 60
"""
    )
    return path


@pytest.fixture(scope="module")
def gateway(
    upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerURL, dict[str, str], dict[str, str]]]:
    directory = tmp_path_factory.mktemp("gateway")
    env = keystile_env(
        directory / "data",
        KEYSTILE_ROUTES=str(routes_file(directory, upstream)),
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
    )
    account, reader = cli_admin(env, "read:contacts", "read:deals")
    made = run_cli("keys", "create", "--account", account, "--name", "writer",
                   "--permission", "write:contacts", "--json", env=env)  # fmt: skip
    writer = json.loads(made.stdout)["data"]["key"]
    LEDGER.remember(writer)
    with serving(env, log=directory / "server.log") as url:
        yield url, {"Authorization": f"Bearer {reader}"}, {"Authorization": f"Bearer {writer}"}
    log = (directory / "server.log").read_text()
    assert reader not in log and writer not in log


def raw_get(url: str, target: str, authorization: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def echo(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def headers_of(data: dict[str, Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in data["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


class TestRouting:
    @pytest.mark.parametrize(
        ("method", "path", "forwarded"),
        [
            ("GET", "/v1/contacts", "/v1/contacts"),
            ("GET", "/v1/contacts/42", "/v1/contacts/42"),
            ("GET", "/v1/contacts/42/notes/", "/v1/contacts/42/notes/"),
            ("GET", "/v1/deals/sleep/0", "/v1/deals/sleep/0"),  # the longest prefix
            ("GET", "/v1/deals/7", "/v1/deals/7"),
        ],
    )
    def test_forwarded_with_the_full_original_path(
        self, gateway: Any, method: str, path: str, forwarded: str
    ) -> None:
        url, reader, _ = gateway
        assert echo(httpx.request(method, url + path, headers=reader))["path"] == forwarded

    def test_prefixes_match_on_segment_boundaries_only(self, gateway: Any) -> None:
        url, reader, _ = gateway
        for path in ("/v1/contactsX", "/v1/contacts-export", "/v1", "/v2/contacts"):
            response = httpx.get(url + path, headers=reader)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"

    def test_unknown_paths_are_404_with_or_without_a_key(self, gateway: Any) -> None:
        url, reader, _ = gateway
        assert httpx.get(f"{url}/nothing/here").status_code == 404
        assert httpx.get(f"{url}/nothing/here", headers=reader).status_code == 404

    def test_another_method_is_405_before_authentication(self, gateway: Any) -> None:
        url, _, _ = gateway
        response = httpx.put(f"{url}/v1/deals/1")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_authentication_rate_limit_and_scope(self, gateway: Any) -> None:
        url, reader, writer = gateway
        missing = httpx.get(f"{url}/v1/contacts")
        assert (missing.status_code, missing.json()["error"]["code"]) == (401, "invalid_key")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        denied = httpx.post(f"{url}/v1/contacts", headers=reader, json={})
        assert (denied.status_code, denied.json()["error"]["code"]) == (
            403,
            "insufficient_permissions",
        )
        assert "x-ratelimit-remaining" in denied.headers
        allowed = httpx.post(f"{url}/v1/contacts", headers=writer, json={"a": 1})
        assert echo(allowed)["method"] == "POST"
        assert int(allowed.headers["x-ratelimit-limit"]) == 100000

    def test_keystiles_own_endpoints_still_answer(self, gateway: Any) -> None:
        url, reader, _ = gateway
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/v1/api-keys", headers=reader).status_code == 403

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/contacts/../api-keys",
            "/v1/contacts/./x",
            "/v1/contacts/a%2Fb",
            "/v1/contacts/a%5Cb",
            *(f"/v1/contacts/{segment}/deals" for segment in DOT_SEGMENTS),
            *(f"/v1/contacts{separator}deals" for separator in SEPARATORS),
        ],
    )
    def test_paths_an_upstream_could_resolve_elsewhere_are_refused(
        self, gateway: Any, path: str
    ) -> None:
        url, reader, _ = gateway
        # Sent raw: HTTP clients (httpx included) would normalise the dots away.
        status, body = raw_get(url, path, reader["Authorization"])
        assert status == 400, (path, body)
        if not http_layer_answer(status, body):  # granian refuses a space in a path itself
            assert json.loads(body)["error"]["code"] == "validation_error"

    @pytest.mark.parametrize("path", ["/V1/CONTACTS/1", "/v1/%63ontacts/1", "/V1/Contacts/"])
    def test_every_spelling_of_a_route_is_that_route(self, gateway: Any, path: str) -> None:
        url, _, writer = gateway  # the writer holds write:contacts only
        status, body = raw_get(url, path, writer["Authorization"])
        assert status == 403, (path, body)
        assert json.loads(body)["error"]["code"] == "insufficient_permissions"


class TestHeaders:
    def test_request_headers(self, gateway: Any) -> None:
        url, reader, _ = gateway
        response = httpx.get(
            f"{url}/v1/contacts/9?b=2&a=1&a=3",
            headers={
                **reader,
                "X-Custom": "kept",
                "X-Keystile-Key-Id": "key_spoofed",
                "X-Keystile-Scopes": "admin:everything",
                "X-Forwarded-For": "6.6.6.6",
                "X-Request-ID": "trace-77",
                "Connection": "keep-alive, X-Drop-Me",
                "X-Drop-Me": "hop",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Idempotency-Key": "forwarded-untouched",
            },
        )
        data = echo(response)
        seen = headers_of(data)
        assert data["query"] == "b=2&a=1&a=3"
        assert seen["x-custom"] == ["kept"]
        assert "authorization" not in seen
        for hop in ("x-drop-me", "keep-alive", "te", "connection"):
            assert hop not in seen or seen.get("connection") != ["keep-alive, X-Drop-Me"], hop
        assert "x-drop-me" not in seen and "keep-alive" not in seen and "te" not in seen
        assert seen["x-keystile-scopes"] == ["read:contacts read:deals"]
        assert seen["x-keystile-key-id"][0].startswith("key_") and seen["x-keystile-key-id"] != [
            "key_spoofed"
        ]
        assert seen["x-keystile-account-id"][0].startswith("acc_")
        assert seen["x-forwarded-for"] == ["127.0.0.1"]  # the client's own claim is not passed on
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-request-id"] == ["trace-77"] == [response.headers["x-request-id"]]
        assert seen["idempotency-key"] == ["forwarded-untouched"]

    @pytest.mark.parametrize(
        "name", sorted({n.decode() for n in UNTRUSTED - {b"host", b"authorization"}})
    )
    def test_no_spelling_of_an_untrusted_header_crosses(self, gateway: Any, name: str) -> None:
        url, reader, _ = gateway
        spellings = {name, name.upper(), name.title(), name.replace("-", "_"),
                     name.replace("-", "_").upper(), name.title().replace("-", "_")}  # fmt: skip
        sent = [(spelling, "forged") for spelling in sorted(spellings)]
        sent += [("X_Keystile_Scopes", "admin:webhooks"), ("x-KEYSTILE-key_id", "key_forged")]
        # Framing headers go only in their underscore spellings (the client
        # library frames the request itself).
        framing = {b"connection", b"transfer-encoding", b"upgrade"}
        headers = [(n, v) for n, v in sent if "_" in n or canonical_name(n.encode()) not in framing]
        response = httpx.get(f"{url}/v1/contacts/1", headers=[*reader.items(), *headers])
        forwarded = echo(response)["headers"]
        assert not [(n, v) for n, v in forwarded if v in ("forged", "admin:webhooks", "key_forged")]
        scopes = [v for n, v in forwarded if canonical_name(n.encode()) == b"x-keystile-scopes"]
        assert scopes == ["read:contacts read:deals"]

    def test_response_headers(self, gateway: Any) -> None:
        url, reader, _ = gateway
        response = httpx.get(f"{url}/v1/contacts", headers=reader)
        assert response.headers["x-upstream"] == "yes"
        assert response.headers["cache-control"] == "private, max-age=30"  # the upstream's, kept
        assert "x-content-type-options" not in response.headers
        assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
        assert response.headers["x-request-id"] != "set-by-upstream"
        assert response.headers.get_list("x-ratelimit-limit") == ["100000"]

    def test_upstream_statuses_pass_through(self, gateway: Any) -> None:
        url, reader, _ = gateway
        for status in (201, 404, 500, 503):
            response = httpx.get(f"{url}/v1/contacts/status/{status}", headers=reader)
            assert response.status_code == status
            assert response.headers["x-upstream"] == "yes"


class TestUpstreamFailures:
    def test_refused_is_502(self, gateway: Any) -> None:
        url, reader, _ = gateway
        response = httpx.get(f"{url}/v1/down", headers=reader)
        assert (response.status_code, response.json()["error"]["code"]) == (502, "bad_gateway")
        assert response.headers["x-request-id"] == response.json()["error"]["request_id"]

    def test_slower_than_the_timeout_is_504(self, gateway: Any) -> None:
        url, reader, _ = gateway
        started = time.monotonic()
        response = httpx.get(f"{url}/v1/deals/sleep/3", headers=reader, timeout=10)
        assert (response.status_code, response.json()["error"]["code"]) == (504, "gateway_timeout")
        assert time.monotonic() - started < 2.5


class TestStreaming:
    def test_a_100_mb_download_streams_through(self, gateway: Any) -> None:
        url, reader, _ = gateway
        httpx.get(f"{url}/files/bytes/{MB}", headers=reader)  # warm up
        before = resident_peak_kib(url.pid)
        digest = hashlib.sha256()
        size = 0
        with httpx.stream(
            "GET", f"{url}/files/bytes/{100 * MB}", headers=reader, timeout=60
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(100 * MB)
            for chunk in response.iter_raw():
                digest.update(chunk)
                size += len(chunk)
        assert size == 100 * MB
        assert digest.hexdigest() == hashlib.sha256(pattern(100 * MB)).hexdigest()
        grown = resident_peak_kib(url.pid) - before
        assert grown < 30 * 1024, f"keystile's peak memory grew by {grown} KiB"

    def test_a_100_mb_upload_streams_through(self, gateway: Any) -> None:
        url, reader, _ = gateway
        before = resident_peak_kib(url.pid)
        block = bytes(range(256)) * 4096  # 1 MiB

        def body() -> Iterator[bytes]:
            for _ in range(100):
                yield block

        response = httpx.post(f"{url}/files/upload", headers=reader, content=body(), timeout=60)
        data = echo(response)
        assert data["body_length"] == 100 * MB
        assert data["body_sha256"] == hashlib.sha256(block * 100).hexdigest()
        grown = resident_peak_kib(url.pid) - before
        assert grown < 30 * 1024, f"keystile's peak memory grew by {grown} KiB"

    def test_a_fixed_length_upload_keeps_its_content_length(self, gateway: Any) -> None:
        url, reader, _ = gateway
        data = echo(httpx.post(f"{url}/files/upload", headers=reader, content=b"x" * 1000))
        assert headers_of(data)["content-length"] == ["1000"]
        assert "transfer-encoding" not in headers_of(data)


class TestConcurrency:
    def test_concurrent_requests_each_get_their_own_answer(self, gateway: Any) -> None:
        url, reader, _ = gateway

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, headers=reader, timeout=30) as http:
                return await asyncio.gather(
                    *(http.get(f"/v1/contacts/{n}?n={n}") for n in range(200))
                )

        for n, response in enumerate(asyncio.run(run())):
            data = echo(response)
            assert (data["path"], data["query"]) == (f"/v1/contacts/{n}", f"n={n}")

    def test_a_pooled_connection_the_upstream_closed_is_replaced(self, gateway: Any) -> None:
        url, reader, _ = gateway
        first = echo(httpx.get(f"{url}/v1/contacts", headers=reader))["client_port"]
        time.sleep(1.5)  # the upstream closes idle connections after 1 s
        second = httpx.get(f"{url}/v1/contacts", headers=reader)
        assert echo(second)["client_port"] != first

    def test_head_requests(self, gateway: Any) -> None:
        url, reader, _ = gateway
        routed_by_get = httpx.head(f"{url}/v1/contacts", headers=reader)  # RFC 9110 §9.3.2
        assert (routed_by_get.status_code, routed_by_get.content) == (200, b"")
        for _ in range(3):  # no connection may be left expecting the body HEAD does not send
            head = httpx.head(f"{url}/files/bytes/1000", headers=reader)
            assert head.status_code == 200
            assert head.headers["content-length"] == "1000"
            assert head.content == b""
            assert httpx.get(f"{url}/files/bytes/10", headers=reader).content == bytes(range(10))

    def test_the_connection_pool_is_reused(self, gateway: Any) -> None:
        url, reader, _ = gateway
        with httpx.Client(base_url=url, headers=reader) as http:
            ports = {echo(http.get("/v1/contacts"))["client_port"] for _ in range(20)}
        assert len(ports) == 1, f"20 sequential requests used {len(ports)} upstream connections"


def test_an_invalid_routes_file_stops_start_up_naming_the_line(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[routes]]\nprefix = "/v1/x"\nmethods = ["GET"]\nscope = "read:contacts"\nupstream = "ftp://x"\n'
    )
    env = keystile_env(tmp_path / "data", KEYSTILE_ROUTES=str(routes))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "keystile"), "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{routes}:5: route 1: upstream must be an http:// or https:// URL" in lines[0]
