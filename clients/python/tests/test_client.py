"""``Client`` against a real keystile: every resource, the errors, the
retries. Grouped by resource, as docs/api.md is."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tests.support import LEDGER, free_port

from client_support import Keystile, Recording
from keystile_client import Client, ConnectionFailed, RateLimitRule
from keystile_client import errors as e


class TestApiKeys:
    def test_create_get_update_rotate_revoke(self, keystile: Keystile) -> None:
        expires = datetime.now(UTC) + timedelta(days=3)
        with keystile.client() as client:
            made = client.api_keys.create(
                f"worker-{uuid.uuid4().hex[:8]}", ["read:contacts"], description="d",
                expires_at=expires, metadata={"team": "data"},
                rate_limit=RateLimitRule(limit=50, window_seconds=10),
            )  # fmt: skip
            LEDGER.remember(made.key)
            assert made.key.startswith("wbk_live_") and made.key not in repr(made)
            assert made.permissions == ("read:contacts",)
            assert made.rate_limit == RateLimitRule(50, 10)
            assert (
                made.expires_at is not None and abs(made.expires_at - expires).total_seconds() < 1
            )

            got = client.api_keys.get(made.id)
            assert (got.status, got.metadata, got.description) == ("active", {"team": "data"}, "d")

            changed = client.api_keys.update(made.id, description=None, disabled=True)
            assert changed.description is None and changed.status == "disabled"
            assert client.api_keys.update(made.id, disabled=False).status == "active"

            rotated = client.api_keys.rotate(made.id, grace_period_seconds=60)
            LEDGER.remember(rotated.key)
            assert rotated.id != made.id and rotated.name == made.name
            assert client.api_keys.get(made.id).replaced_by == rotated.id

            revoked = client.api_keys.revoke(rotated.id)
            assert revoked.status == "revoked" and revoked.revoked_at is not None
            assert client.api_keys.revoke(rotated.id).revoked_at == revoked.revoked_at

    def test_list_all_walks_every_page(self, keystile: Keystile) -> None:
        tag = uuid.uuid4().hex[:8]
        made = [keystile.new_key(metadata={"batch": tag}).id for _ in range(5)]
        with keystile.client() as client:
            page = client.api_keys.list(limit=2, metadata={"batch": tag})
            assert len(page.data) == 2 and page.has_more
            every = [k.id for k in client.api_keys.list_all(limit=2, metadata={"batch": tag})]
            assert every == made[::-1]  # newest first
            active = {k.id for k in client.api_keys.list_all(status="active")}
            assert set(made) <= active

    def test_verify(self, keystile: Keystile) -> None:
        made = keystile.new_key("read:contacts")
        with keystile.client() as client:
            ok = client.api_keys.verify(made.key, "read:contacts")
            assert (ok.valid, ok.code, ok.key_id) == (True, "VALID", made.id)
            assert ok.rate_limit is not None and ok.rate_limit.remaining < ok.rate_limit.limit
            denied = client.api_keys.verify(made.key, "write:deals", consume=False)
            assert (denied.valid, denied.code) == (False, "INSUFFICIENT_PERMISSIONS")
            unknown = client.api_keys.verify("wbk_live_" + "A" * 32)
            assert (unknown.code, unknown.key_id, unknown.permissions) == ("INVALID", None, ())

    def test_every_post_and_patch_carries_an_idempotency_key(self, keystile: Keystile) -> None:
        """Contract §16, verify included; ``idempotent=False`` opts a verify out."""
        made = keystile.new_key("read:contacts")
        recording = Recording()
        with keystile.client(transport=recording) as client:
            child = client.api_keys.create(f"c-{uuid.uuid4().hex[:8]}", ["read:contacts"])
            LEDGER.remember(child.key)
            client.api_keys.update(child.id, description="x")
            rotated = client.api_keys.rotate(child.id)
            LEDGER.remember(rotated.key)
            client.api_keys.verify(made.key, "read:contacts")
            client.api_keys.verify(made.key, "read:contacts", idempotent=False)
        sent = [
            (r.method, r.url.path, r.headers.get("idempotency-key")) for r in recording.requests
        ]
        changes, opted_out = sent[:-1], sent[-1]
        assert [m for m, _, _ in changes] == ["POST", "PATCH", "POST", "POST"]
        assert all(key and key.startswith("kc_") for _, _, key in changes), changes
        assert len({key for _, _, key in changes}) == 4
        assert opted_out == ("POST", "/v1/keys/verify", None)

    def test_usage_of_a_key_and_of_the_account(self, keystile: Keystile) -> None:
        made = keystile.new_key()
        with keystile.client() as client:
            buckets = client.api_keys.usage(made.id, granularity="day")
            assert len(buckets) >= 30 and all(b.allowed >= 0 for b in buckets)
            hours = client.usage.get(start=datetime.now(UTC) - timedelta(hours=2))
            assert 2 <= len(hours) <= 4 and hours[0].key_id is None
            assert isinstance(client.usage.get(group_by="key"), list)


class TestAccountsAndAudit:
    def test_operator_provisions_an_account_and_acts_for_it(self, keystile: Keystile) -> None:
        with keystile.client(keystile.operator_key) as ops:
            account = ops.accounts.create(f"Customer {uuid.uuid4().hex[:6]}", plan="standard")
            assert ops.accounts.get(account.id) == account
            suspended = ops.accounts.update(account.id, status="suspended", metadata={"a": "b"})
            assert (suspended.status, suspended.metadata) == ("suspended", {"a": "b"})
            ops.accounts.update(account.id, status="active")
            assert account.id in {a.id for a in ops.accounts.list_all(limit=1)}
        with keystile.client(keystile.operator_key, account=account.id) as acting:
            first = acting.api_keys.create("first", ["admin:api_keys"])
            LEDGER.remember(first.key)
            events = list(acting.audit_events.list_all(target_id=first.id))
            assert [ev.action for ev in events] == ["api_key.created"]
            assert events[0].actor.type == "operator_key"

    def test_audit_events_page(self, keystile: Keystile) -> None:
        made = keystile.new_key()
        with keystile.client() as client:
            client.api_keys.update(made.id, name=f"renamed-{uuid.uuid4().hex[:6]}")
            page = client.audit_events.list(target_id=made.id, action="api_key.updated")
            assert len(page.data) == 1 and "name" in page.data[0].changes


class TestWebhookEndpoints:
    def test_lifecycle(self, keystile: Keystile) -> None:
        with keystile.client() as client:
            made = client.webhook_endpoints.create(
                "http://127.0.0.1:9/hook", ["api_key.created"], description="x"
            )
            LEDGER.remember(made.secret)
            assert made.secret.startswith("whsec_") and made.secret not in repr(made)
            assert client.webhook_endpoints.get(made.id).events == ("api_key.created",)
            assert client.webhook_endpoints.update(made.id, disabled=True).disabled
            assert made.id in {w.id for w in client.webhook_endpoints.list_all()}
            assert list(client.webhook_endpoints.deliveries_all(made.id)) == []
            assert client.webhook_endpoints.delete(made.id).id == made.id
            with pytest.raises(e.NotFound):
                client.webhook_endpoints.get(made.id)


class TestErrors:
    def test_each_error_carries_the_contract_body(self, keystile: Keystile) -> None:
        with keystile.client() as client:
            with pytest.raises(e.NotFound) as missing:
                client.api_keys.get("key_01JD3ZK4Q8Y6W2N5T7V9X1B3C5")
            assert missing.value.status == 404 and missing.value.code == "not_found"
            assert missing.value.request_id and missing.value.message
            with pytest.raises(e.ValidationError) as invalid:
                client.api_keys.create("x", ["fly:rockets"])
            assert invalid.value.details[0].field == "permissions[0]"
            with pytest.raises(e.ValidationError):
                client.api_keys.list(limit=500)
        with keystile.client("wbk_live_" + "A" * 32) as stranger, pytest.raises(e.InvalidKey):
            stranger.api_keys.list()
        reader = keystile.new_key("read:contacts")
        with keystile.client(reader.key) as weak, pytest.raises(e.InsufficientPermissions):
            weak.api_keys.list()

    def test_duplicate_name_is_not_retried(self, keystile: Keystile) -> None:
        made = keystile.new_key()
        recording = Recording()
        with keystile.client(transport=recording) as client, pytest.raises(e.DuplicateName):
            client.api_keys.create(made.name, ["read:contacts"])
        assert len(recording.requests) == 1


class TestRetries:
    def test_a_retried_create_returns_the_same_secret_and_makes_one_key(
        self, keystile: Keystile
    ) -> None:
        name = f"retried-{uuid.uuid4().hex[:8]}"
        recording = Recording(lose=1)  # the first answer is lost after keystile made the key
        with keystile.client(transport=recording) as client:
            made = client.api_keys.create(name, ["read:contacts"])
            LEDGER.remember(made.key)
            sent = [r for r in recording.requests if r.method == "POST"]
            assert len(sent) == 2
            assert sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]
            same = list(client.api_keys.list_all(name=name))
            assert [k.id for k in same] == [made.id]
        with keystile.client() as client:
            replay = client.api_keys.create(
                name, ["read:contacts"], idempotency_key=sent[0].headers["idempotency-key"]
            )  # the same calling key, Idempotency-Key and body: keystile's replay
        assert (replay.id, replay.key) == (made.id, made.key)

    def test_429_is_retried_after_retry_after(self, keystile: Keystile) -> None:
        limited = keystile.new_key(
            "admin:api_keys", rate_limit_tier="standard",
            rate_limit=RateLimitRule(limit=1, window_seconds=1),
        )  # fmt: skip
        recording = Recording()
        with keystile.client(limited.key, transport=recording, deadline=10) as client:
            client.api_keys.get(limited.id)
            started = time.monotonic()
            client.api_keys.get(limited.id)  # 429, Retry-After: 1, then 200
        assert len(recording.requests) == 3
        assert time.monotonic() - started >= 0.9

    def test_a_retry_after_past_the_deadline_is_raised_at_once(self, keystile: Keystile) -> None:
        limited = keystile.new_key(
            "admin:api_keys", rate_limit=RateLimitRule(limit=1, window_seconds=60)
        )
        # Windows are aligned to the clock (docs/rate-limits.md): near a
        # minute's end Retry-After would be within the deadline, so start
        # in a window with more than the deadline left.
        left = 60 - time.time() % 60
        if left < 10:
            time.sleep(left + 0.1)
        recording = Recording()
        with keystile.client(limited.key, transport=recording, deadline=5) as client:
            client.api_keys.get(limited.id)
            started = time.monotonic()
            with pytest.raises(e.RateLimited) as refused:
                client.api_keys.get(limited.id)
        assert time.monotonic() - started < 1
        assert refused.value.retry_after is not None and refused.value.retry_after > 5
        assert len(recording.requests) == 2

    def test_connection_errors_are_retried_within_the_bounds(self) -> None:
        closed = f"http://127.0.0.1:{free_port()}"
        recording = Recording()
        with Client("k", base_url=closed, transport=recording, max_retries=3) as client:
            with pytest.raises(ConnectionFailed) as failed:
                client.api_keys.create("x", ["read:contacts"])
        assert failed.value.status is None
        assert len(recording.requests) == 4
        keys = {r.headers["idempotency-key"] for r in recording.requests}
        assert len(keys) == 1

    def test_the_deadline_bounds_connection_retries(self) -> None:
        closed = f"http://127.0.0.1:{free_port()}"
        started = time.monotonic()
        with Client("k", base_url=closed, max_retries=1000, deadline=1.0) as client:
            with pytest.raises(ConnectionFailed):
                client.health()
        assert time.monotonic() - started < 2.0


def test_health_and_ready(keystile: Keystile) -> None:
    with Client(base_url=keystile.url) as client:
        assert (client.health(), client.ready()) == ("ok", "ready")


def test_a_transport_for_tests_replaces_the_network() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {
            "error": {"code": "plan_conflict", "message": "2 unmetered keys", "request_id": "r1"}
        }
        return httpx.Response(409, json=body)

    with Client("k", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(e.PlanConflict) as conflict:
            client.accounts.update("acc_1", plan="standard")
    assert (conflict.value.status, conflict.value.request_id) == (409, "r1")
