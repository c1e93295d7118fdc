"""Leak reports end to end (contract §14, issue #15 item 5): real
``keystile serve`` processes. A report to instance A revokes the key on
every worker of instance B at once (the revocation feed, not a cache TTL);
an invalid public-keys file stops start-up with one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from keystile.idempotency.crypto import generate_key
from tests.e2e.test_lifecycle_scaled_out import bearer, in_force_on, new_key, warm
from tests.partner import REPORTS, Partner
from tests.support import LEDGER, VENV_BIN, cli_admin, free_port, keystile_env, serving

Instances = tuple[str, str, dict[str, str], Partner]


@pytest.fixture
def instances(
    tmp_path: Path, postgres_database: str, redis_url: str, redis_prefix: str
) -> Iterator[Instances]:
    partner = Partner()
    env = keystile_env(
        tmp_path / "unused",
        KEYSTILE_DATABASE_URL=postgres_database,
        KEYSTILE_REDIS_URL=redis_url,
        KEYSTILE_REDIS_PREFIX=redis_prefix,
        KEYSTILE_SECRET_KEY=generate_key(),
        KEYSTILE_TIER_STANDARD="100000/10 seconds",
        # A long TTL: the test must see the revocation feed, not the TTL.
        KEYSTILE_KEY_CACHE_TTL_SECONDS="300",
        KEYSTILE_SECRET_SCANNING_KEYS=str(partner.write_keys(tmp_path / "github-keys.json")),
    )
    _, admin = cli_admin(env, "admin:api_keys", "read:contacts")
    with ExitStack() as stack:
        a = stack.enter_context(serving(env, "--workers", "2", log=tmp_path / "a.log"))
        b = stack.enter_context(serving(env, "--workers", "2", log=tmp_path / "b.log"))
        yield a, b, bearer(admin), partner
    for name in ("a.log", "b.log"):
        log = (tmp_path / name).read_bytes()
        assert b'"status": 500' not in log and b"Traceback" not in log, log[-2000:]
        assert not LEDGER.leaks_in(log), "a reported token is in the server's log"


def test_a_report_to_a_revokes_the_key_at_once_on_b(instances: Instances) -> None:
    a, b, admin, partner = instances
    key = new_key(a, admin)
    warm(b, key["key"], 403)  # both of B's workers hold the key, valid, in their caches
    body, headers = partner.report(key["key"])
    response = httpx.post(f"{a}{REPORTS}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"token_raw": key["key"], "token_type": "keystile_api_key", "label": "true_positive"}
    ]
    in_force_on(b, key["key"], 403, lambda r: r.status_code == 401)
    again = httpx.post(f"{b}{REPORTS}", content=body, headers=headers)
    assert [item["label"] for item in again.json()] == ["false_positive"]
    got = httpx.get(f"{b}/v1/api-keys/{key['id']}", headers=admin)
    assert got.json()["data"]["status"] == "revoked"


def test_an_unsigned_report_is_refused_by_a_real_server(instances: Instances) -> None:
    a, _, admin, partner = instances
    key = new_key(a, admin)
    body, headers = partner.report(key["key"])
    del headers["Github-Public-Key-Signature"]
    response = httpx.post(f"{a}{REPORTS}", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert httpx.get(f"{a}/v1/api-keys/x", headers=bearer(key["key"])).status_code == 403


@pytest.mark.parametrize("content", ["{not json", '{"public_keys": []}', None])
def test_an_invalid_keys_file_stops_start_up_with_one_line(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "github-keys.json"
    if content is not None:
        path.write_text(content)
    env = keystile_env(tmp_path / "data", KEYSTILE_SECRET_SCANNING_KEYS=str(path))
    result = subprocess.run(
        [str(VENV_BIN / "keystile"), "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "KEYSTILE_SECRET_SCANNING_KEYS" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
