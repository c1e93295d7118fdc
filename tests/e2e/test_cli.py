"""The admin CLI (contract §1, §9), run as users run it: JSON identical to
the HTTP bodies, aligned tables for humans, the API's defaults and its words
for the same mistake, one-line errors naming the command's help, the
version, and shell completion."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import keystile
from keystile.cli import app
from tests.support import LEDGER, VENV_BIN, cli_admin, keystile_env, run_cli, serving

ROOT = Path(__file__).parents[2]
UNKNOWN_ACCOUNT = "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV"
UNKNOWN_KEY = "key_01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # A long flush interval keeps last_used_at still while CLI and HTTP are compared.
    return keystile_env(tmp_path / "data", KEYSTILE_LAST_USED_INTERVAL_SECONDS="3600")


def ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def body(*args: str, env: dict[str, str]) -> Any:
    """The JSON a command prints with ``--json``; secrets go to the ledger."""
    document = json.loads(ok(*args, "--json", env=env))
    LEDGER.remember_body(document)
    return document


def same_bytes(cli_stdout: str, response: httpx.Response) -> bool:
    return cli_stdout.rstrip("\n").encode() == response.content


def operator_headers(secret: str, account: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if account is not None:
        headers["Keystile-Account"] = account
    return headers


def rows(table: str) -> list[dict[str, str]]:
    """A row table's cells by header, checking that every cell starts exactly
    under its header (never empty: null prints as ``-``)."""
    header, *lines = table.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    parsed = []
    for line in lines:
        for start in starts:
            assert line[start] != " " and (start == 0 or line[start - 1] == " "), (line, start)
        ends = [*starts[1:], None]
        cells = [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]
        parsed.append(dict(zip(names, cells, strict=True)))
    return parsed


def fields(table: str) -> dict[str, str]:
    """A one-object table (a field per line), checking the values line up."""
    lines = table.splitlines()
    offset = len(lines[0]) - len(lines[0].split(maxsplit=1)[1])
    for line in lines:
        assert line[offset - 1] == " " and line[offset] != " ", (line, offset)
    return {line[:offset].strip(): line[offset:] for line in lines}


# -- JSON: exactly the HTTP bodies ------------------------------------------------------


def test_accounts_json_is_the_http_body(env: dict[str, str], tmp_path: Path) -> None:
    operator = body("operator-keys", "create", "--name", "ops", env=env)["data"]
    created = body("accounts", "create", "Acme", "--plan", "enterprise", env=env)["data"]
    assert created["plan"] == "enterprise" and created["id"].startswith("acc_")

    with serving(env, log=tmp_path / "server.log") as url:
        http = httpx.Client(base_url=url, headers=operator_headers(operator["key"]))
        for number in range(21):  # 22 accounts: more than the default page of 20
            made = http.post("/v1/accounts", json={"name": f"Customer {number}"})
            assert made.status_code == 201, made.text
        assert list(made.json()["data"]) == list(created)  # same fields, same order
        suspended = made.json()["data"]["id"]
        assert http.patch(f"/v1/accounts/{suspended}", json={"status": "suspended"}).is_success

        default_page = http.get("/v1/accounts")
        assert len(default_page.json()["data"]) == 20 and default_page.json()["has_more"]
        assert same_bytes(ok("accounts", "list", "--json", env=env), default_page)

        after = default_page.json()["data"][4]["id"]
        paged = http.get("/v1/accounts", params={"limit": 3, "starting_after": after})
        cli_paged = ok("accounts", "list", "--limit", "3", "--starting-after", after, "--json",
                       env=env)  # fmt: skip
        assert same_bytes(cli_paged, paged)

        only = http.get("/v1/accounts", params={"status": "suspended"})
        assert [a["id"] for a in only.json()["data"]] == [suspended]
        assert same_bytes(ok("accounts", "list", "--status", "suspended", "--json", env=env), only)

        one = http.get(f"/v1/accounts/{created['id']}")
        assert same_bytes(ok("accounts", "get", created["id"], "--json", env=env), one)


def test_keys_json_is_the_http_body(env: dict[str, str], tmp_path: Path) -> None:
    account = body("accounts", "create", "Acme", "--plan", "enterprise", env=env)["data"]["id"]
    admin = body(
        "keys", "create", "--account", account, "--name", "Admin",
        "--permission", "admin:api_keys", "--permission", "read:contacts",
        "--description", "first key", "--rate-limit-tier", "unmetered",
        "--expires-at", "2099-01-01T00:00:00Z", env=env,
    )["data"]  # fmt: skip
    assert admin["rate_limit_tier"] == "unmetered" and admin["description"] == "first key"
    victim = body("keys", "create", "--account", account, "--name", "victim",
                  "--permission", "read:contacts", "--rate-limit", "50/10",
                  "--quota", "1000/day", env=env)["data"]  # fmt: skip
    assert victim["rate_limit"] == {"limit": 50, "window_seconds": 10}
    assert victim["quota"] == {"limit": 1000, "period": "day"}

    with serving(env, log=tmp_path / "server.log") as url:
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin['key']}"})
        for number in range(20):  # 22 keys: more than the default page of 20
            made = http.post(
                "/v1/api-keys",
                # The admin expires in 2099: what it makes must not outlive it.
                json={"name": f"worker {number}", "permissions": ["read:contacts"],
                      "expires_at": "2098-01-01T00:00:00Z"},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            LEDGER.remember(made.json()["data"]["key"])
        assert list(made.json()["data"]) == list(admin)  # same fields, same order

        default_page = http.get("/v1/api-keys")
        assert len(default_page.json()["data"]) == 20 and default_page.json()["has_more"]
        assert same_bytes(ok("keys", "list", "--account", account, "--json", env=env), default_page)

        after = default_page.json()["data"][2]["id"]
        paged = http.get("/v1/api-keys", params={"limit": 100, "starting_after": after})
        cli_paged = ok("keys", "list", "--account", account, "--limit", "100",
                       "--starting-after", after, "--json", env=env)  # fmt: skip
        assert same_bytes(cli_paged, paged)

        one = http.get(f"/v1/api-keys/{victim['id']}")
        assert same_bytes(ok("keys", "get", victim["id"], "--json", env=env), one)

        cli_revoked = ok("keys", "revoke", victim["id"], "--json", env=env)
        assert json.loads(cli_revoked)["data"]["status"] == "revoked"
        assert same_bytes(cli_revoked, http.delete(f"/v1/api-keys/{victim['id']}"))
        refused = httpx.get(
            f"{url}/v1/api-keys", headers={"Authorization": f"Bearer {victim['key']}"}
        )
        assert refused.status_code == 401

        revoked = http.get("/v1/api-keys", params={"status": "revoked"})
        assert [k["id"] for k in revoked.json()["data"]] == [victim["id"]]
        cli_filtered = ok("keys", "list", "--account", account, "--status", "revoked", "--json",
                          env=env)  # fmt: skip
        assert same_bytes(cli_filtered, revoked)


def test_operator_keys_create_list_revoke(env: dict[str, str], tmp_path: Path) -> None:
    created = body("operator-keys", "create", "--name", "Sign-up", env=env)["data"]
    assert list(created) == [
        "id", "key", "name", "created_at", "revoked_at", "last_used_at", "status",
    ]  # fmt: skip
    assert re.fullmatch(r"opk_[0-9A-HJKMNP-TV-Z]{26}", created["id"])
    assert re.fullmatch(r"wbk_root_[0-9A-Za-z]{32}", created["key"])
    assert (created["name"], created["status"], created["revoked_at"]) == (
        "Sign-up",
        "active",
        None,
    )
    other = body("operator-keys", "create", "--name", "Spare", env=env)["data"]

    listed = body("operator-keys", "list", env=env)
    assert listed["has_more"] is False
    assert [k["id"] for k in listed["data"]] == [other["id"], created["id"]]  # newest first
    assert listed["data"][1] == {k: v for k, v in created.items() if k != "key"}

    with serving(env, log=tmp_path / "server.log") as url:
        accounts = httpx.get(f"{url}/v1/accounts", headers=operator_headers(created["key"]))
        assert accounts.status_code == 200, accounts.text

        revoked = body("operator-keys", "revoke", created["id"], env=env)["data"]
        assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
        assert "key" not in revoked
        again = body("operator-keys", "revoke", created["id"], env=env)["data"]
        assert again["revoked_at"] == revoked["revoked_at"]  # idempotent
        refused = httpx.get(f"{url}/v1/accounts", headers=operator_headers(created["key"]))
        assert refused.status_code == 401
        still = httpx.get(f"{url}/v1/accounts", headers=operator_headers(other["key"]))
        assert still.status_code == 200

    statuses = {k["id"]: k["status"] for k in body("operator-keys", "list", env=env)["data"]}
    assert statuses == {created["id"]: "revoked", other["id"]: "active"}


# -- Tables for humans ------------------------------------------------------------------


def test_accounts_as_tables(env: dict[str, str]) -> None:
    made = run_cli("accounts", "create", "Acme Inc", "--plan", "enterprise", env=env)
    assert made.returncode == 0 and made.stderr == ""
    shown = fields(made.stdout)
    assert list(shown) == ["id", "name", "plan", "status", "metadata", "created_at"]
    assert shown["name"] == "Acme Inc" and shown["plan"] == "enterprise"
    assert shown["metadata"] == "-"
    assert fields(ok("accounts", "get", shown["id"], env=env)) == shown
    ok("accounts", "create", "Globex", env=env)

    listed = rows(ok("accounts", "list", env=env))
    assert [(r["ID"], r["NAME"], r["PLAN"]) for r in listed] == [
        (listed[0]["ID"], "Globex", "standard"),
        (shown["id"], "Acme Inc", "enterprise"),
    ]
    paged = run_cli("accounts", "list", "--limit", "1", env=env)
    assert [r["NAME"] for r in rows(paged.stdout)] == ["Globex"]
    assert paged.stderr.strip() == f"More accounts follow: add --starting-after {listed[0]['ID']}"


def test_keys_as_tables(env: dict[str, str]) -> None:
    account = body("accounts", "create", "Acme", env=env)["data"]["id"]
    made = run_cli(
        "keys", "create", "--account", account, "--name", "Ingestion worker",
        "--permission", "read:contacts", "--permission", "write:contacts", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == "Store the key now: it cannot be shown again."
    key = fields(made.stdout)
    LEDGER.remember(key["key"])
    assert list(key)[:3] == ["id", "key", "prefix"]
    assert key["permissions"] == "read:contacts write:contacts"  # no Python list repr
    assert (key["status"], key["expires_at"], key["disabled"]) == ("active", "-", "false")
    assert "[" not in made.stdout and "'" not in made.stdout

    shown = fields(ok("keys", "get", key["id"], env=env))
    assert "key" not in shown and shown["id"] == key["id"]
    assert {name: shown[name] for name in shown} == {
        name: key[name] for name in key if name != "key"
    }
    body("keys", "create", "--account", account, "--name", "second",
         "--permission", "read:deals", env=env)  # fmt: skip

    listed = rows(ok("keys", "list", "--account", account, env=env))
    assert [(r["NAME"], r["PERMISSIONS"]) for r in listed] == [
        ("second", "read:deals"),
        ("Ingestion worker", "read:contacts write:contacts"),
    ]
    assert set(listed[0]) == {
        "ID", "NAME", "STATUS", "PERMISSIONS", "RATE_LIMIT_TIER", "EXPIRES_AT",
        "LAST_USED_AT", "CREATED_AT",
    }  # fmt: skip

    revoked = fields(ok("keys", "revoke", key["id"], env=env))
    assert revoked["status"] == "revoked" and revoked["revoked_at"] != "-"
    paged = run_cli("keys", "list", "--account", account, "--limit", "1", env=env)
    assert [r["NAME"] for r in rows(paged.stdout)] == ["second"]
    assert paged.stderr.strip() == f"More keys follow: add --starting-after {listed[0]['ID']}"
    only = rows(ok("keys", "list", "--account", account, "--status", "revoked", env=env))
    assert [(r["ID"], r["STATUS"]) for r in only] == [(key["id"], "revoked")]

    odd = fields(
        ok("keys", "create", "--account", account, "--name", "[red]Mallory :smile:[/red]",
           "--permission", "read:deals", "--description", "line one\nline two\tend", env=env)
    )  # fmt: skip
    LEDGER.remember(odd["key"])
    assert odd["name"] == "[red]Mallory :smile:[/red]"  # no markup, no emoji
    assert odd["description"] == "line one\\nline two\\tend"  # one line per field


def test_operator_keys_as_tables(env: dict[str, str]) -> None:
    made = run_cli("operator-keys", "create", "--name", "Sign-up", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == "Store the key now: it cannot be shown again."
    key = fields(made.stdout)
    LEDGER.remember(key["key"])
    assert key["key"].startswith("wbk_root_") and key["status"] == "active"

    listed = rows(ok("operator-keys", "list", env=env))
    assert [(r["ID"], r["NAME"], r["STATUS"], r["REVOKED_AT"]) for r in listed] == [
        (key["id"], "Sign-up", "active", "-")
    ]
    revoked = fields(ok("operator-keys", "revoke", key["id"], env=env))
    assert revoked["status"] == "revoked" and "key" not in revoked


# -- Mistakes ----------------------------------------------------------------------------


def expected_line(response: httpx.Response) -> str:
    """What the CLI must print for the mistake the API answered with ``response``."""
    error = response.json()["error"]
    line = error["message"]
    if error.get("details"):
        line += " (" + "; ".join(f"{d['field']}: {d['message']}" for d in error["details"]) + ")"
    return f"keystile: error: {line}"


def test_a_mistake_reads_as_the_http_api_words_it(env: dict[str, str], tmp_path: Path) -> None:
    operator = body("operator-keys", "create", "--name", "ops", env=env)["data"]["key"]
    acc = body("accounts", "create", "Acme", env=env)["data"]["id"]
    body("keys", "create", "--account", acc, "--name", "taken", "--permission", "read:contacts",
         env=env)  # fmt: skip
    create = ["keys", "create", "--account", acc]
    long_text = "x" * 1001
    # (the command line, then the same request over HTTP: method, path, body,
    # and whether the operator acts for the account)
    mistakes: list[tuple[list[str], tuple[str, str, Any, bool]]] = [
        ([*create, "--name", "x", "--permission", "fly:rockets"],
         ("POST", "/v1/api-keys", {"name": "x", "permissions": ["fly:rockets"]}, True)),
        ([*create, "--name", "x", "--permission", "read:contacts", "--rate-limit-tier", "gold"],
         ("POST", "/v1/api-keys",
          {"name": "x", "permissions": ["read:contacts"], "rate_limit_tier": "gold"}, True)),
        ([*create, "--name", "x", "--permission", "read:contacts", "--expires-at", "yesterday"],
         ("POST", "/v1/api-keys",
          {"name": "x", "permissions": ["read:contacts"], "expires_at": "yesterday"}, True)),
        ([*create, "--name", " ", "--permission", "fly:rockets", "--permission", "read:contacts",
          "--expires-at", "2001-01-01T00:00:00Z"],
         ("POST", "/v1/api-keys", {"name": " ", "permissions": ["fly:rockets", "read:contacts"],
                                   "expires_at": "2001-01-01T00:00:00Z"}, True)),
        ([*create, "--name", "x", "--permission", "read:contacts", "--description", long_text],
         ("POST", "/v1/api-keys",
          {"name": "x", "permissions": ["read:contacts"], "description": long_text}, True)),
        ([*create, "--name", "TAKEN", "--permission", "read:contacts"],
         ("POST", "/v1/api-keys", {"name": "TAKEN", "permissions": ["read:contacts"]}, True)),
        ([*create, "--name", "x", "--permission", "read:contacts", "--rate-limit-tier",
          "unmetered"],
         ("POST", "/v1/api-keys",
          {"name": "x", "permissions": ["read:contacts"], "rate_limit_tier": "unmetered"}, True)),
        ([*create, "--name", "x", "--permission", "read:contacts", "--quota", "abc/week"],
         ("POST", "/v1/api-keys", {"name": "x", "permissions": ["read:contacts"],
                                   "quota": {"limit": "abc", "period": "week"}}, True)),
        ([*create, "--name", "x", "--permission", "read:contacts", "--rate-limit", "0/60"],
         ("POST", "/v1/api-keys", {"name": "x", "permissions": ["read:contacts"],
                                   "rate_limit": {"limit": 0, "window_seconds": 60}}, True)),
        (["keys", "list", "--account", acc, "--limit", "0"],
         ("GET", "/v1/api-keys?limit=0", None, True)),
        (["keys", "list", "--account", acc, "--limit", "101"],
         ("GET", "/v1/api-keys?limit=101", None, True)),
        (["keys", "list", "--account", acc, "--limit", "ten"],
         ("GET", "/v1/api-keys?limit=ten", None, True)),
        (["keys", "list", "--account", acc, "--status", "lost"],
         ("GET", "/v1/api-keys?status=lost", None, True)),
        (["keys", "list", "--account", acc, "--starting-after", UNKNOWN_KEY],
         ("GET", f"/v1/api-keys?starting_after={UNKNOWN_KEY}", None, True)),
        (["keys", "get", UNKNOWN_KEY], ("GET", f"/v1/api-keys/{UNKNOWN_KEY}", None, True)),
        (["keys", "get", "nonsense"], ("GET", "/v1/api-keys/nonsense", None, True)),
        (["keys", "revoke", UNKNOWN_KEY], ("DELETE", f"/v1/api-keys/{UNKNOWN_KEY}", None, True)),
        (["accounts", "create", " "], ("POST", "/v1/accounts", {"name": " "}, False)),
        (["accounts", "create", "Acme", "--plan", "gold"],
         ("POST", "/v1/accounts", {"name": "Acme", "plan": "gold"}, False)),
        (["accounts", "list", "--limit", "0"], ("GET", "/v1/accounts?limit=0", None, False)),
        (["accounts", "list", "--status", "closed"],
         ("GET", "/v1/accounts?status=closed", None, False)),
        (["accounts", "list", "--starting-after", UNKNOWN_ACCOUNT],
         ("GET", f"/v1/accounts?starting_after={UNKNOWN_ACCOUNT}", None, False)),
        (["accounts", "get", UNKNOWN_ACCOUNT],
         ("GET", f"/v1/accounts/{UNKNOWN_ACCOUNT}", None, False)),
    ]  # fmt: skip
    with serving(env, log=tmp_path / "server.log") as url:
        http = httpx.Client(base_url=url)
        expected = []
        for args, (method, path, json_body, acting) in mistakes:
            headers = operator_headers(operator, acc if acting else None)
            response = http.request(method, path, json=json_body, headers=headers)
            assert 400 <= response.status_code < 500, (path, response.text)
            expected.append((args, expected_line(response)))
        # An account that does not exist: the operator's header, the CLI's --account.
        missing = http.post(
            "/v1/api-keys",
            json={"name": "x", "permissions": ["read:contacts"]},
            headers=operator_headers(operator, UNKNOWN_ACCOUNT),
        )
        for args in (
            ["keys", "create", "--account", UNKNOWN_ACCOUNT, "--name", "x",
             "--permission", "read:contacts"],
            ["keys", "list", "--account", UNKNOWN_ACCOUNT],
        ):  # fmt: skip
            expected.append((args, expected_line(missing)))
    # None of the mistakes changes anything: the commands may run side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: run_cli(*case[0], env=env), expected))
    differences = []
    for (args, line), result in zip(expected, results, strict=True):
        assert result.returncode == 1 and result.stdout == "", (args, result)
        if result.stderr.rstrip("\n") != line:
            differences.append((args[:2], result.stderr.strip(), line))
    assert differences == []


@pytest.mark.parametrize(
    ("args", "message", "help_of"),
    [
        (("keys", "create", "--account", "acc_x"), "Missing option '--name'.", "keystile keys create"),
        (("keys", "list", "--account", "a", "--bogus"), "No such option: --bogus", "keystile keys list"),
        (("keys", "lst"), "No such command 'lst'.", "keystile keys"),
        (("accounts", "get"), "Missing argument 'ACC_ID'.", "keystile accounts get"),
        (("operator-keys", "create"), "Missing option '--name'.", "keystile operator-keys create"),
        (("operator-keys", "revoke", "a", "b"), "Got unexpected extra argument", "keystile operator-keys revoke"),
        (("frobnicate",), "No such command 'frobnicate'.", "keystile"),
    ],
)  # fmt: skip
def test_argument_errors_name_the_commands_help(
    env: dict[str, str], args: tuple[str, ...], message: str, help_of: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"keystile: error: {message}")
    assert line.endswith(f" See '{help_of} --help'.")
    assert run_cli(*help_of.split()[1:], "--help", env=env).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "create", "--account", UNKNOWN_ACCOUNT, "--name", "x", "--permission", "read:contacts"), "No such account"),
        (("keys", "revoke", UNKNOWN_KEY), "No such key"),
        (("keys", "list", "--account", UNKNOWN_ACCOUNT), "No such account"),
        (("accounts", "list", "--limit", "0"), "limit: must be at least 1"),
        (("accounts", "create", "Acme", "--plan", "gold"), "plan: must be one of: standard, enterprise"),
        (("accounts", "create", "  "), "name: must be 1 to 120 characters"),
        (("operator-keys", "create", "--name", "\x07"), "name: must not contain control characters"),
        (("operator-keys", "revoke", "opk_01ARZ3NDEKTSV4RRFFQ69G5FAV"), "No such operator key"),
    ],
)  # fmt: skip
def test_errors_are_one_line_on_stderr(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("keystile: error:") and message in line
    assert "Traceback" not in result.stderr


def test_a_group_without_a_command_shows_its_help(env: dict[str, str]) -> None:
    result = run_cli("keys", env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("Usage: keystile keys [OPTIONS] COMMAND")
    for command in ("create", "list", "get", "revoke"):
        assert re.search(rf"^  {command} ", result.stderr, flags=re.M)
    assert "keystile: error" not in result.stderr


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    env = keystile_env(tmp_path, KEYSTILE_TIER_STANDARD="lots", KEYSTILE_KEY_PREFIX="BAD_")
    result = run_cli("migrate", env=env)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "KEYSTILE_TIER_STANDARD" in line and "KEYSTILE_KEY_PREFIX" in line
    assert "Value error" not in line


# -- Version, completion, docs ------------------------------------------------------------


def test_version_is_the_package_version(env: dict[str, str]) -> None:
    result = run_cli("--version", env=env)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"keystile {keystile.__version__}\n"
    assert importlib.metadata.version("keystile") == keystile.__version__
    # One source: pyproject reads the version from the package.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "keystile.__version__"}


# Typer detects the shell the CLI runs under (the tests' parent: bash, sh,
# zsh) and then ignores a shell named on the command line; this makes it
# take the one named, so the bash cases mean bash wherever the suite runs.
NAMED_SHELL = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


def complete(words: str, env: dict[str, str]) -> list[str]:
    """What bash offers for ``words`` (the last one being typed), through the
    script ``keystile --show-completion bash`` prints, in a real bash."""
    script = run_cli("--show-completion", "bash", env={**env, **NAMED_SHELL})
    assert script.returncode == 0, script.stderr
    typed = words.split()
    session = (
        f"{script.stdout}\n"
        f"COMP_WORDS=({' '.join(typed)}); COMP_CWORD={len(typed) - 1}\n"
        '_keystile_completion keystile\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    path = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", session],
        env={**env, "PATH": path}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_shell_completion(env: dict[str, str]) -> None:
    script = run_cli("--show-completion", "bash", env={**env, **NAMED_SHELL}).stdout
    assert "complete -o default -F _keystile_completion keystile" in script
    assert complete("keystile ke", env) == ["keys"]
    assert complete("keystile operator-keys re", env) == ["revoke"]
    assert complete("keystile keys create --permission ver", env) == ["verify:keys"]
    assert complete("keystile accounts list --status s", env) == ["suspended"]


def test_install_completion_writes_the_shell_script(env: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli("--install-completion", "bash", env={**env, **NAMED_SHELL, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (
        "_KEYSTILE_COMPLETE=complete_bash" in (home / ".bash_completions/keystile.sh").read_text()
    )
    assert "keystile.sh" in (home / ".bashrc").read_text()


def _commands(group: Any, path: str) -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        sub = getattr(command, "commands", None)
        found += _commands(command, f"{path} {name}") if sub else [f"{path} {name}"]
    return found


def test_every_command_is_in_the_api_reference() -> None:
    import typer

    commands = _commands(typer.main.get_command(app), "keystile")
    assert "keystile operator-keys revoke" in commands and "keystile accounts get" in commands
    section = (ROOT / "docs/api.md").read_text().split("## The admin CLI", 1)[1].split("\n## ")[0]
    assert [c for c in commands if f"`{c}" not in section] == []
    assert "`keystile --version`" in section


# -- The other commands -------------------------------------------------------------------


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
