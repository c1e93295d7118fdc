"""A real keystile process for the client's tests, and helpers around it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.support import LEDGER, ServerURL, keystile_env, run_cli, serving

from keystile_client import Client, CreatedApiKey

ALL_SCOPES = (
    "read:contacts", "write:contacts", "read:deals", "write:deals", "write:email", "write:ai",
    "admin:api_keys", "admin:webhooks", "verify:keys",
)  # fmt: skip


@dataclass
class Keystile:
    """A running ``keystile serve``: its URL, an enterprise account, that
    account's unmetered admin key holding every scope, and an operator key."""

    url: ServerURL
    env: dict[str, str]
    account: str
    admin_key: str
    operator_key: str

    def client(self, key: str | None = None, **options: Any) -> Client:
        return Client(key or self.admin_key, base_url=self.url, **options)

    def new_key(self, *permissions: str, **options: Any) -> CreatedApiKey:
        """A fresh key of the account (its secret remembered by the ledger)."""
        with self.client() as admin:
            made = admin.api_keys.create(
                f"k-{uuid.uuid4().hex[:10]}", permissions or ("read:contacts",), **options
            )
        LEDGER.remember(made.key)
        return made


def _cli_json(env: dict[str, str], *args: str) -> Any:
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["data"]


@contextmanager
def start_keystile(data_dir: Path, **settings: str) -> Iterator[Keystile]:
    """``keystile serve`` on a fresh SQLite database in ``data_dir``."""
    env = keystile_env(
        data_dir,
        KEYSTILE_WEBHOOK_ALLOW_HTTP="true",
        KEYSTILE_WEBHOOK_ALLOW_PRIVATE="true",
        KEYSTILE_AUTH_FAILURE_LIMIT="100000/minute",
        KEYSTILE_ACCESS_LOG="false",
        **settings,
    )
    account = _cli_json(env, "accounts", "create", "Acme", "--plan", "enterprise")["id"]
    scopes = [flag for scope in ALL_SCOPES for flag in ("--permission", scope)]
    admin = _cli_json(
        env, "keys", "create", "--account", account, "--name", "admin",
        "--rate-limit-tier", "unmetered", *scopes,
    )["key"]  # fmt: skip
    operator = _cli_json(env, "operator-keys", "create", "--name", "ops")["key"]
    LEDGER.remember(admin)
    LEDGER.remember(operator)
    with serving(env) as url:
        yield Keystile(url, env, account, admin, operator)


class Recording(httpx.BaseTransport):
    """A real HTTP transport that records every request it sends, and can
    drop the answers of the first ``lose`` requests matching ``method``
    (the request reached keystile; its answer is lost on the way back)."""

    def __init__(self, lose: int = 0, method: str = "POST") -> None:
        self._inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []
        self._lose = lose
        self._method = method

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self._inner.handle_request(request)
        if self._lose and request.method == self._method:
            self._lose -= 1
            response.read()
            response.close()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncRecording(httpx.AsyncBaseTransport):
    """A real asynchronous HTTP transport that counts what it sends."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def verifications(self) -> int:
        return sum(r.url.path == "/v1/keys/verify" for r in self.requests)


def load_example(name: str) -> Any:
    """A module of examples/client/ (the examples the docs point to)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[3] / "examples" / "client" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
