"""The admin CLI (contract §1): JSON identical to the HTTP bodies, and
one-line errors with a non-zero exit status."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support import LEDGER, cli_admin, keystile_env, run_cli, serving


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # A long flush interval keeps last_used_at still while CLI and HTTP are compared.
    return keystile_env(tmp_path / "data", KEYSTILE_LAST_USED_INTERVAL_SECONDS="3600")


def ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_json_output_is_the_http_body(env: dict[str, str], tmp_path: Path) -> None:
    account = json.loads(
        ok("accounts", "create", "Acme", "--plan", "enterprise", "--json", env=env)
    )
    assert set(account["data"]) == {"id", "name", "plan", "status", "metadata", "created_at"}
    assert account["data"]["plan"] == "enterprise"
    account_id = account["data"]["id"]
    created = json.loads(
        ok(
            "keys", "create", "--account", account_id, "--name", "Admin",
            "--permission", "admin:api_keys", "--permission", "read:contacts",
            "--description", "first key", "--rate-limit-tier", "unmetered",
            "--expires-at", "2099-01-01T00:00:00Z", "--json", env=env,
        )
    )  # fmt: skip
    admin = created["data"]
    LEDGER.remember(admin["key"])
    victim = json.loads(
        ok("keys", "create", "--account", account_id, "--name", "victim",
           "--permission", "read:contacts", "--json", env=env)
    )["data"]  # fmt: skip
    LEDGER.remember(victim["key"])

    with serving(env, log=tmp_path / "server.log") as url:
        auth = {"Authorization": f"Bearer {admin['key']}"}
        http_created = httpx.post(
            f"{url}/v1/api-keys",
            # The admin expires in 2099: what it makes must not outlive it.
            json={
                "name": "via http",
                "permissions": ["read:contacts"],
                "expires_at": "2098-01-01T00:00:00Z",
            },
            headers=auth,
        )
        LEDGER.remember(http_created.json()["data"]["key"])
        assert list(http_created.json()["data"]) == list(admin)  # same fields, same order

        http_list = httpx.get(f"{url}/v1/api-keys?limit=100", headers=auth)
        cli_list = ok("keys", "list", "--account", account_id, "--json", env=env)
        assert cli_list.rstrip("\n").encode() == http_list.content

        cli_revoked = ok("keys", "revoke", victim["id"], "--json", env=env)
        http_revoked = httpx.delete(f"{url}/v1/api-keys/{victim['id']}", headers=auth)
        assert cli_revoked.rstrip("\n").encode() == http_revoked.content
        assert json.loads(cli_revoked)["data"]["status"] == "revoked"
        refused = httpx.get(
            f"{url}/v1/api-keys", headers={"Authorization": f"Bearer {victim['key']}"}
        )
        assert refused.status_code == 401

        filtered = json.loads(
            ok("keys", "list", "--account", account_id, "--status", "revoked", "--json", env=env)
        )
        assert [k["id"] for k in filtered["data"]] == [victim["id"]]


def test_human_output_is_a_table(env: dict[str, str]) -> None:
    out = ok("accounts", "create", "Acme", env=env)
    header, row = out.splitlines()
    assert header.split() == ["ID", "NAME", "PLAN", "STATUS", "CREATED_AT"]
    assert row.startswith("acc_")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "create", "--account", "acc_x"), "Missing option"),
        (("keys", "create", "--account", "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV", "--name", "x", "--permission", "read:contacts"), "No account"),
        (("keys", "revoke", "key_01ARZ3NDEKTSV4RRFFQ69G5FAV"), "No such key"),
        (("keys", "list", "--account", "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV"), "No account"),
        (("keys", "list", "--account", "a", "--limit", "0"), "--limit"),
        (("accounts", "create", "Acme", "--plan", "gold"), "--plan"),
        (("accounts", "create", "  "), "name"),
        (("frobnicate",), "No such command"),
    ],
)  # fmt: skip
def test_errors_are_one_line_on_stderr(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keystile: error:") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_validation_errors_name_every_field(env: dict[str, str]) -> None:
    account = json.loads(ok("accounts", "create", "Acme", "--json", env=env))["data"]["id"]
    result = run_cli(
        "keys", "create", "--account", account, "--name", "x",
        "--permission", "fly:rockets", "--expires-at", "yesterday", env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "permissions[0]" in result.stderr and "expires_at" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_duplicate_names_and_the_plan_rule(env: dict[str, str]) -> None:
    account = json.loads(ok("accounts", "create", "Acme", "--json", env=env))["data"]["id"]
    args = (
        "keys",
        "create",
        "--account",
        account,
        "--name",
        "one",
        "--permission",
        "read:contacts",
    )
    LEDGER.remember(json.loads(ok(*args, "--json", env=env))["data"]["key"])
    again = run_cli(*args, env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    unmetered = run_cli(*args[:-4], "--name", "two", "--permission", "read:contacts",
                        "--rate-limit-tier", "unmetered", env=env)  # fmt: skip
    assert unmetered.returncode == 1 and "enterprise" in unmetered.stderr


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    env = keystile_env(tmp_path, KEYSTILE_TIER_STANDARD="lots", KEYSTILE_KEY_PREFIX="BAD_")
    result = run_cli("migrate", env=env)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "KEYSTILE_TIER_STANDARD" in result.stderr and "KEYSTILE_KEY_PREFIX" in result.stderr


def test_purge_deletes_expired_idempotency_records(env: dict[str, str], tmp_path: Path) -> None:
    import sqlite3

    _, admin = cli_admin(env)
    with serving(env, log=tmp_path / "server.log") as url:
        response = httpx.post(
            f"{url}/v1/api-keys",
            json={"name": "x", "permissions": ["read:contacts"]},
            headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": "k"},
        )
        LEDGER.remember(response.json()["data"]["key"])
    db = Path(env["KEYSTILE_DATA_DIR"]) / "keystile.db"
    assert "purged 0 " in ok("purge", env=env)
    with sqlite3.connect(db) as conn:  # age the record past its 24 hours
        conn.execute("UPDATE idempotency_records SET expires_at = expires_at - 86400000001")
    assert "purged 1 " in ok("purge", env=env)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_records").fetchone()[0] == 0


def test_secret_key_prints_a_usable_key(env: dict[str, str]) -> None:
    from keystile.idempotency.crypto import Keyring

    Keyring.parse(ok("secret-key", env=env).strip())
