"""What every response carries, routing errors, the 500 path and the
operations endpoints (contract §3, §8)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from keystile.api.app import create_app
from keystile.api.pipeline import Pipeline
from keystile.storage.base import StorageUnavailable
from tests.conftest import settings_for
from tests.support import LEDGER, Tenant, assert_error, assert_own_headers, make_tenant

pytestmark = pytest.mark.anyio


class TestRequestId:
    @pytest.mark.parametrize("supplied", ["abc", "A.b_c:d-9", "x" * 128])
    async def test_a_valid_client_id_is_echoed(
        self, client: httpx.AsyncClient, tenant: Tenant, supplied: str
    ) -> None:
        for response in (
            await client.get("/v1/api-keys", headers={**tenant.headers, "X-Request-ID": supplied}),
            await client.get("/nowhere", headers={"X-Request-ID": supplied}),
            await client.get("/healthz", headers={"X-Request-ID": supplied}),
        ):
            assert response.headers["x-request-id"] == supplied

    @pytest.mark.parametrize("supplied", ["", "x" * 129, "has space", "semi;colon", "ünï", "a/b"])
    async def test_an_invalid_client_id_is_replaced(
        self, client: httpx.AsyncClient, supplied: str
    ) -> None:
        response = await client.get("/healthz", headers=[(b"X-Request-ID", supplied.encode())])
        assert response.headers["x-request-id"].startswith("req_")
        assert response.headers["x-request-id"] != supplied

    async def test_generated_ids_are_unique(self, client: httpx.AsyncClient) -> None:
        ids = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(50)}
        assert len(ids) == 50


class TestRouting:
    async def test_an_unknown_path_is_404_with_or_without_a_key(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        assert_error(await client.get("/v2/things"), 404, "not_found")
        assert_error(await client.get("/v2/things", headers=tenant.headers), 404, "not_found")
        assert_error(
            await client.post("/v1/api-keys/x/y", headers=tenant.headers), 404, "not_found"
        )

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("PUT", "/v1/api-keys", "GET, HEAD, POST"),
            ("PUT", "/v1/accounts", "GET, HEAD, POST"),
            ("POST", "/v1/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", "DELETE, GET, HEAD, PATCH"),
            ("DELETE", "/v1/api-keys", "GET, HEAD, POST"),
            ("POST", "/healthz", "GET, HEAD"),
        ],
    )
    async def test_a_known_path_with_another_method_is_405_before_authentication(
        self, client: httpx.AsyncClient, method: str, path: str, allow: str
    ) -> None:
        response = await client.request(method, path)
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allow


class Test500:
    async def test_an_unexpected_failure_is_an_enveloped_500_without_internals(
        self,
        app: Pipeline,
        client: httpx.AsyncClient,
        tenant: Tenant,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        async def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(app.services.keys, "list", explode)
        response = await client.get("/v1/api-keys", headers=tenant.headers)
        error = assert_error(response, 500, "internal_error")
        assert "secret internal detail" not in response.text
        assert "Traceback" not in response.text
        assert error["message"] == "An internal error occurred."
        logged = [line for line in LEDGER.log_lines if error["request_id"] in line]
        assert any(
            "secret internal detail" in line for line in logged
        )  # the detail goes to the log

    async def test_an_unreachable_database_is_a_503(
        self,
        app: Pipeline,
        client: httpx.AsyncClient,
        tenant: Tenant,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        async def down(*args: object, **kwargs: object) -> None:
            raise StorageUnavailable("connection refused")

        monkeypatch.setattr(app.services.keys, "list", down)
        response = await client.get("/v1/api-keys", headers=tenant.headers)
        assert_error(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "1"


class TestOperations:
    async def test_healthz(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert_own_headers(response)

    async def test_readyz_is_ready_when_the_database_answers(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})

    async def test_readyz_is_503_when_it_does_not(
        self, app: Pipeline, client: httpx.AsyncClient
    ) -> None:
        if not app.services.settings.database.startswith("sqlite"):
            pytest.skip("PostgreSQL going away is tested with a real server (tests/e2e)")
        await app.services.storage.close()
        db = app.services.settings.data_dir / "keystile.db"
        db.rename(db.with_suffix(".gone"))  # the file is gone and its directory unwritable
        db.parent.chmod(0o500)
        try:
            response = await client.get("/readyz")
        finally:
            db.parent.chmod(0o700)
        assert_error(response, 503, "service_unavailable")

    async def test_metrics_count_requests_by_route_and_status(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        await client.get("/v1/api-keys", headers=tenant.headers)
        await client.get("/nowhere")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert 'keystile_requests_total{method="GET",route="/v1/api-keys",status="200"} 1.0' in text
        assert 'keystile_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
        assert 'keystile_key_verifications_total{outcome="VALID"}' in text
        assert "keystile_request_duration_seconds_bucket" in text

    async def test_openapi_documents_every_endpoint_and_its_errors(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        spec = response.json()
        paths = spec["paths"]
        expected = {
            ("/v1/api-keys", "post"): {"201", "400", "401", "403", "409", "413", "415", "429"},
            ("/v1/api-keys", "get"): {"200", "400", "401", "403", "429"},
            ("/v1/api-keys/{key_id}", "get"): {"200", "401", "403", "404", "429"},
            ("/v1/api-keys/{key_id}", "delete"): {"200", "401", "403", "404", "429"},
            ("/healthz", "get"): {"200"},
            ("/readyz", "get"): {"200", "503"},
            ("/metrics", "get"): {"200"},
        }
        for (path, method), statuses in expected.items():
            operation = paths[path][method]
            assert statuses <= set(operation["responses"]), (path, method)
            for status, response_doc in operation["responses"].items():
                assert "X-Request-ID" in response_doc["headers"]
                if status.startswith(("4", "5")):
                    ref = response_doc["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorEnvelope"
        create = paths["/v1/api-keys"]["post"]
        body_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert body_ref.rsplit("/", 1)[1] in spec["components"]["schemas"]
        assert create["security"] == [{"bearerAuth": []}]
        assert "ErrorEnvelope" in spec["components"]["schemas"]


class TestAccessLog:
    async def test_one_json_line_per_request_with_the_contracts_fields(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        before = len(LEDGER.log_lines)
        response = await client.get(
            "/v1/api-keys?limit=5", headers={**tenant.headers, "X-Request-ID": "trace-1"}
        )
        lines = [json.loads(line) for line in LEDGER.log_lines[before:]]
        access = [line for line in lines if line["logger"] == "keystile.access"]
        assert len(access) == 1
        entry = access[0]
        assert entry["request_id"] == "trace-1" == response.headers["x-request-id"]
        assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/v1/api-keys", 200)
        assert entry["key_id"] == tenant.key_id
        assert isinstance(entry["duration_ms"], float)
        raw = LEDGER.log_lines[before:]
        assert not any(tenant.secret in line or "Bearer" in line for line in raw)

    async def test_a_key_pasted_into_a_path_is_masked(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        before = len(LEDGER.log_lines)
        await client.get(f"/v1/api-keys/{tenant.secret}", headers=tenant.headers)
        raw = LEDGER.log_lines[before:]
        assert raw and not any(tenant.secret in line for line in raw)
        assert any("[redacted]" in line for line in raw)


class TestBodyDeadline:
    """A body that stops arriving ends in a 400 after
    ``KEYSTILE_BODY_TIMEOUT_SECONDS`` on every endpoint that reads one (the
    handler is never held); a body that arrives in pieces in time is served."""

    BOUND = 30.0  # seconds: "does not hang", never a performance claim

    @pytest.mark.parametrize(
        ("method", "path"),
        [("POST", "/v1/api-keys"), ("POST", "/v1/keys/verify"), ("PATCH", "/v1/api-keys/{key}")],
    )
    async def test_a_stalled_body_is_a_400(
        self, database_url: str, data_dir: Path, method: str, path: str
    ) -> None:
        application = create_app(settings_for(database_url, data_dir, body_timeout_seconds=0.2))
        async with application.lifespan():
            tenant = await make_tenant(application)
            path = path.format(key=tenant.key_id)
            status, body = await self._call(application, tenant, method, path, stall=True)
        assert status == 400
        error = json.loads(body)["error"]
        assert error["code"] == "validation_error"
        assert error["details"] == [{"field": "body", "message": "arrived too slowly"}]

    async def test_a_body_in_pieces_within_the_deadline_is_served(
        self, database_url: str, data_dir: Path
    ) -> None:
        application = create_app(settings_for(database_url, data_dir, body_timeout_seconds=5))
        async with application.lifespan():
            tenant = await make_tenant(application)
            status, body = await self._call(
                application, tenant, "POST", "/v1/keys/verify", stall=False
            )
        assert status == 200, body
        assert json.loads(body)["data"]["code"] == "VALID"

    async def _call(
        self, application: Pipeline, tenant: Tenant, method: str, path: str, *, stall: bool
    ) -> tuple[int, bytes]:
        """One request straight through ASGI: the first half of a JSON body,
        then (``stall``) nothing more, or the rest 50 ms later."""
        document = json.dumps({"key": tenant.secret}).encode()
        pieces = [document[: len(document) // 2], document[len(document) // 2 :]]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
            "server": ("keystile.test", 80),
            "headers": [
                (b"host", b"keystile.test"), (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {tenant.secret}".encode()),
            ],
        }  # fmt: skip
        sent: list[Message] = []

        async def receive() -> Message:
            if not pieces:
                await asyncio.Event().wait()  # the client never sends the rest
            if len(pieces) == 1:
                if stall:
                    await asyncio.Event().wait()
                await asyncio.sleep(0.05)
            return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}

        async def send(message: Message) -> None:
            sent.append(message)

        try:
            async with asyncio.timeout(self.BOUND):
                await application(scope, receive, send)
        except TimeoutError:
            pytest.fail("the handler waited for the body past its deadline")
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], b"".join(m.get("body", b"") for m in sent[1:])
