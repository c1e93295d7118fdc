"""keystile_client.django against a real keystile, over real HTTP: the
example app of docs/client-django.md served by a threaded WSGI server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from client_support import Keystile, Recording, load_example
from keystile_client import Client
from keystile_client import django as integration
from keystile_client.verifier import SyncVerifier

django_app = load_example("django_app")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(keystile: Keystile) -> Iterator[str]:
    django_app.configure(BASE_URL=keystile.url, SERVICE_KEY=keystile.admin_key, CACHE_TTL=1)
    server = make_server("127.0.0.1", 0, django_app.wsgi_application(), _ThreadingServer, _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    integration.reset()


@pytest.fixture
def recording(keystile: Keystile) -> Iterator[Recording]:
    """The process's verifier, replaced by one whose calls are counted."""
    transport = Recording()
    integration.reset()
    integration._verifier = SyncVerifier(
        client=Client(keystile.admin_key, base_url=keystile.url, transport=transport),
        cache_ttl=60,
    )
    yield transport
    integration.reset()


def verifications(recording: Recording) -> int:
    return sum(r.url.path == "/v1/keys/verify" for r in recording.requests)


def test_middleware_and_decorator(keystile: Keystile, served: str, recording: Recording) -> None:
    reader = keystile.new_key("read:contacts", rate_limit_tier="standard")
    headers = {"Authorization": f"Bearer {reader.key}"}
    ok = httpx.get(f"{served}/contacts", headers=headers)
    assert ok.status_code == 200
    assert ok.json()["key_id"] == reader.id
    assert "x-ratelimit-remaining" in ok.headers
    refused = httpx.post(f"{served}/contacts/new", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_permissions"
    missing = httpx.get(f"{served}/contacts", headers={"X-Request-ID": "dj-1"})
    assert missing.status_code == 401
    assert missing.json()["error"] == {
        "code": "invalid_key", "message": missing.json()["error"]["message"], "request_id": "dj-1"
    }  # fmt: skip
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{served}/healthz").status_code == 200


def test_single_flight_across_threads(
    keystile: Keystile, served: str, recording: Recording
) -> None:
    caller = keystile.new_key("read:contacts")
    headers = {"Authorization": f"Bearer {caller.key}"}
    with ThreadPoolExecutor(100) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.get(f"{served}/contacts", headers=headers, timeout=30), range(100)
            )
        )
    assert {a.status_code for a in answers} == {200}
    assert verifications(recording) == 1


def test_single_flight_of_the_sync_verifier(keystile: Keystile, recording: Recording) -> None:
    """100 threads released at once on one uncached key: one verify call."""
    caller = keystile.new_key("read:contacts")
    verifier = integration.verifier()
    start = threading.Barrier(100)

    def check(_: int) -> bool:
        start.wait()
        return verifier.check(caller.key, "read:contacts").allowed

    with ThreadPoolExecutor(100) as pool:
        assert all(pool.map(check, range(100)))
    assert verifications(recording) == 1


def test_fails_closed_when_keystile_cannot_be_reached(keystile: Keystile, served: str) -> None:
    from tests.support import free_port

    integration.reset()
    integration._verifier = SyncVerifier("k", base_url=f"http://127.0.0.1:{free_port()}")
    try:
        caller = keystile.new_key("read:contacts")
        refused = httpx.get(f"{served}/contacts", headers={"Authorization": f"Bearer {caller.key}"})
    finally:
        integration.reset()
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
