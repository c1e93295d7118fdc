"""Webhook delivery end to end (contract §13, issue #15 items 3 and 6):
real keystile processes send to a real receiver process
(``webhook_receiver.py``) on loopback, which fails, redirects, hangs, is
down and comes back; keystile is SIGKILLed after a commit; two instances
share PostgreSQL. Signatures are checked with an HMAC written here from the
contract's words, and with ``keystile.webhooks.verify_signature``."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from keystile.webhooks import verify_signature
from tests.support import (
    LEDGER,
    cli_admin,
    free_port,
    keystile_env,
    run_cli,
    serving,
)

REPO = Path(__file__).parents[2]
FAST = {
    "KEYSTILE_WEBHOOK_ALLOW_HTTP": "true",
    "KEYSTILE_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "KEYSTILE_WEBHOOK_POLL_SECONDS": "0.1",
    "KEYSTILE_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "KEYSTILE_WEBHOOK_SCAN_SECONDS": "0.5",
}
SCOPES = ("admin:api_keys", "admin:webhooks", "read:contacts")


@contextmanager
def receiver(port: int | None = None) -> Iterator[str]:
    """The receiver process on ``port``; yields its base URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.e2e.webhook_receiver:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), "the receiver did not start")
        yield url
    finally:
        process.kill()  # not terminate: uvicorn would wait for the slow requests
        process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(condition: Callable[[], Any], message: str, seconds: float = 45) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def received(url: str, prefix: str = "/") -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(f"{url}/_requests", timeout=5).json()
    return [r for r in records if r["path"].startswith(prefix)]


class Api:
    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {secret}"}

    def endpoint(self, target: str, events: list[str] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/v1/webhook-endpoints",
            json={"url": target, "events": events or ["*"]},
            headers=self.headers,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        LEDGER.remember(data["secret"])
        return data

    def key(self, **body: Any) -> dict[str, Any]:
        payload = {"name": f"k-{uuid.uuid4().hex[:8]}", "permissions": ["read:contacts"], **body}
        response = httpx.post(
            f"{self.url}/v1/api-keys", json=payload, headers=self.headers, timeout=30
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        LEDGER.remember(data["key"])
        return data

    def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.url}/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=100",
            headers=self.headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


def contract_signature(body: bytes, secret: str, timestamp: str) -> str:
    """Contract §13, read literally (an implementation independent of keystile's)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def check_signed(record: dict[str, Any], secret: str) -> dict[str, Any]:
    """The request is signed as §13 says; returns its parsed body."""
    body = record["body"].encode()
    header = record["headers"]["keystile-signature"]
    fields = dict(item.split("=", 1) for item in header.split(","))
    assert set(fields) == {"t", "v1"}
    assert abs(int(fields["t"]) - record["start"]) < 60
    assert hmac.compare_digest(fields["v1"], contract_signature(body, secret, fields["t"]))
    assert verify_signature(body, header, secret)
    event: dict[str, Any] = json.loads(body)
    assert record["headers"]["keystile-event-id"] == event["id"]
    assert record["headers"]["content-type"] == "application/json"
    return event


def test_a_delivery_is_signed_and_survives_a_rotation_of_the_application_key(
    tmp_path: Path,
) -> None:
    old, new = generate_key(), generate_key()
    env = keystile_env(tmp_path / "data", KEYSTILE_SECRET_KEY=old, **FAST)
    _, admin = cli_admin(env, *SCOPES)
    with receiver() as hooks:
        with serving(env) as url:
            api = Api(url, admin)
            endpoint = api.endpoint(f"{hooks}/ok/a")
            key = api.key()
            [record] = wait_for(lambda: received(hooks), "nothing was delivered")
            event = check_signed(record, endpoint["secret"])
            assert set(event) == {"id", "type", "created_at", "account_id", "data"}
            assert event["type"] == "api_key.created" and event["data"]["object"]["id"] == key["id"]
            assert "key" not in event["data"]["object"]
            [delivery] = wait_for(
                lambda: [d for d in api.deliveries(endpoint["id"]) if d["state"] != "pending"],
                "the delivery was not settled",
            )
            assert (delivery["event_id"], delivery["state"]) == (event["id"], "succeeded")
            assert (delivery["attempt_count"], delivery["last_status_code"]) == (1, 200)
        # The application key is rotated (issue #3): the signing secret,
        # encrypted under the old key, still signs.
        env["KEYSTILE_SECRET_KEY"] = f"{new},{old}"
        with serving(env) as url:
            revoked = httpx.delete(
                f"{url}/v1/api-keys/{key['id']}", headers=Api(url, admin).headers, timeout=30
            )
            assert revoked.status_code == 200
            records = wait_for(lambda: received(hooks)[1:], "nothing after the rotation")
            assert check_signed(records[0], endpoint["secret"])["type"] == "api_key.revoked"


def test_failing_redirecting_and_slow_receivers(tmp_path: Path) -> None:
    env = keystile_env(tmp_path / "data", **FAST)
    _, admin = cli_admin(env, *SCOPES)
    with receiver() as hooks, serving(env) as url:
        api = Api(url, admin)
        slow = api.endpoint(f"{hooks}/slow/s")
        failing = api.endpoint(f"{hooks}/fail/f")
        redirecting = api.endpoint(f"{hooks}/redirect/r")
        fine = api.endpoint(f"{hooks}/ok/o")
        started = time.time()
        api.key()
        # The healthy receiver is served while the slow one holds its attempt.
        [ok] = wait_for(lambda: received(hooks, "/ok/o"), "the healthy endpoint waited")
        assert ok["start"] - started < 10
        assert httpx.get(f"{url}/v1/api-keys", headers=api.headers, timeout=5).status_code == 200
        failed = wait_for(
            lambda: [d for d in api.deliveries(failing["id"]) if d["attempt_count"] >= 3],
            "a failing receiver was not retried",
        )
        assert (failed[0]["state"], failed[0]["last_status_code"]) == ("pending", 500)
        assert failed[0]["next_attempt_at"] is not None
        bounced = wait_for(
            lambda: [d for d in api.deliveries(redirecting["id"]) if d["attempt_count"] >= 1],
            "the redirecting receiver was not tried",
        )
        assert bounced[0]["last_status_code"] == 302 and "redirect" in bounced[0]["last_error"]
        assert received(hooks, "/ok/r") == []  # the redirect was not followed
        timed_out = wait_for(
            lambda: [d for d in api.deliveries(slow["id"]) if d["attempt_count"] >= 1],
            "the slow receiver's attempt never ended",
        )
        assert timed_out[0]["state"] == "pending" and "timed out" in timed_out[0]["last_error"]
        assert api.deliveries(fine["id"])[0]["state"] == "succeeded"


def test_a_receiver_down_then_up_gets_every_event(tmp_path: Path) -> None:
    env = keystile_env(tmp_path / "data", **FAST)
    _, admin = cli_admin(env, *SCOPES)
    port = free_port()
    with serving(env) as url:
        api = Api(url, admin)
        endpoint = api.endpoint(f"http://127.0.0.1:{port}/ok/late")
        keys = [api.key()["id"] for _ in range(3)]
        wait_for(
            lambda: all(d["attempt_count"] >= 2 for d in api.deliveries(endpoint["id"])),
            "the deliveries were not retried while the receiver was down",
        )
        assert all(d["last_status_code"] is None for d in api.deliveries(endpoint["id"]))
        with receiver(port) as hooks:
            records = wait_for(
                lambda: (r := received(hooks)) and len({x["body"] for x in r}) == 3 and r,
                "the receiver did not get every event after it came back",
            )
            objects = {json.loads(r["body"])["data"]["object"]["id"] for r in records}
            assert objects == set(keys)
            wait_for(
                lambda: {d["state"] for d in api.deliveries(endpoint["id"])} == {"succeeded"},
                "the deliveries were not marked succeeded",
            )


def test_deliveries_fail_once_the_retry_window_closes(tmp_path: Path) -> None:
    env = keystile_env(tmp_path / "data", **FAST, KEYSTILE_WEBHOOK_RETRY_HOURS="0.0005")
    _, admin = cli_admin(env, *SCOPES)
    with serving(env) as url:
        api = Api(url, admin)
        endpoint = api.endpoint(f"http://127.0.0.1:{free_port()}/ok/never")
        api.key()
        [delivery] = wait_for(
            lambda: [d for d in api.deliveries(endpoint["id"]) if d["state"] == "failed"],
            "the delivery was never marked failed",
        )
        assert delivery["next_attempt_at"] is None and delivery["attempt_count"] >= 1


def test_the_event_arrives_when_keystile_is_killed_right_after_the_commit(
    tmp_path: Path,
) -> None:
    """SIGKILL between the commit and the first attempt: the event was
    written with the key, so the worker that replaces it sends it."""
    env = keystile_env(tmp_path / "data", **FAST)
    _, admin = cli_admin(env, *SCOPES)
    with receiver() as hooks:
        with serving(env) as url:
            Api(url, admin).endpoint(f"{hooks}/ok/k")
        env["KEYSTILE_TEST_FAULT_POINT"] = "idempotency.after_commit"
        with serving(env) as url:
            with pytest.raises(httpx.TransportError):
                httpx.post(
                    f"{url}/v1/api-keys",
                    json={"name": "nightly", "permissions": ["read:contacts"]},
                    headers={**Api(url, admin).headers, "Idempotency-Key": "crash-1"},
                    timeout=30,
                )
            [record] = wait_for(lambda: received(hooks), "the committed event never arrived")
            assert json.loads(record["body"])["type"] == "api_key.created"


def test_two_instances_on_postgresql_never_send_one_attempt_twice(
    tmp_path: Path, postgres_database: str
) -> None:
    env = keystile_env(
        tmp_path / "data",
        KEYSTILE_DATABASE_URL=postgres_database,
        KEYSTILE_SECRET_KEY=generate_key(),
        **FAST,
    )
    _, admin = cli_admin(env, *SCOPES)
    with receiver() as hooks, serving(env) as first, serving(env) as second:
        Api(first, admin).endpoint(f"{hooks}/sleepy/pg")
        apis = [Api(first, admin), Api(second, admin)]
        keys = {apis[i % 2].key()["id"] for i in range(20)}
        records = wait_for(
            lambda: (r := received(hooks)) and len({x["body"] for x in r}) == 20 and r,
            "not every event arrived",
            seconds=90,
        )
        time.sleep(1)  # a duplicate attempt would show up now
        records = received(hooks)
    by_event: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        by_event[record["headers"]["keystile-event-id"]].append(
            (record["start"], record.get("end", record["start"]))
        )
    assert {json.loads(r["body"])["data"]["object"]["id"] for r in records} == keys
    counts = Counter({event: len(spans) for event, spans in by_event.items()})
    assert max(counts.values()) == 1, counts.most_common(3)


def test_time_based_and_cli_events(tmp_path: Path) -> None:
    """api_key.expired from the background scan; a revocation made with the
    CLI is announced like one made over HTTP."""
    env = keystile_env(tmp_path / "data", **FAST)
    _, admin = cli_admin(env, *SCOPES)
    with receiver() as hooks, serving(env) as url:
        api = Api(url, admin)
        api.endpoint(f"{hooks}/ok/t", events=["api_key.expired", "api_key.revoked"])
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
        expiring = api.key(expires_at=soon)
        other = api.key()
        revoked = run_cli("keys", "revoke", other["id"], env=env)
        assert revoked.returncode == 0, revoked.stderr
        records = wait_for(lambda: len(received(hooks)) >= 2 and received(hooks), "no events")
        events = sorted(
            (json.loads(r["body"])["type"], json.loads(r["body"])["data"]["object"]["id"])
            for r in records
        )
        assert events == sorted(
            [("api_key.expired", expiring["id"]), ("api_key.revoked", other["id"])]
        )


def test_the_receiver_example_of_the_docs_works_as_written(tmp_path: Path) -> None:
    """docs/webhooks.md's receiver, run unchanged but for its port: a signed
    event is accepted (204), a tampered or unsigned one refused (400)."""
    text = (REPO / "docs" / "webhooks.md").read_text()
    code = text.split("A whole receiver", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(code.replace('("", 8000)', f'("127.0.0.1", {port})'))
    secret = "whsec_" + uuid.uuid4().hex
    env = {"WHSEC": secret, "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/"
        event = {"id": "evt_1", "type": "api_key.revoked", "data": {"object": {"id": "key_1"}}}
        body = json.dumps(event).encode()
        now = str(int(time.time()))
        good = f"t={now},v1={contract_signature(body, secret, now)}"
        for _ in range(100):
            try:
                accepted = httpx.post(url, content=body, headers={"Keystile-Signature": good})
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert accepted.status_code == 204
        tampered = httpx.post(url, content=body + b" ", headers={"Keystile-Signature": good})
        unsigned = httpx.post(url, content=body)
        assert (tampered.status_code, unsigned.status_code) == (400, 400)
    finally:
        process.kill()
        out, _ = process.communicate(timeout=10)
    assert out.decode().splitlines() == ["api_key.revoked key_1"]
