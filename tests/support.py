"""Helpers shared by the test packages."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keystile.api.pipeline import Pipeline
from keystile.keys.models import Account, Plan, Tier
from keystile.keys.validation import check_new_key
from keystile.settings import Settings

ALL_SCOPES = Settings().scope_list
VENV_BIN = Path(sys.executable).parent
STARTUP_BOUND = 120  # seconds a process the suite starts may take to answer: "it does
# start", never a performance claim (a 2-core machine at a load of 9 took over 30 s)


class FakeClock:
    """A settable clock (Unix seconds)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SecretLedger:
    """Every secret any test was given, and every log line written: at the end
    of the session no secret, nor any 16-character piece of one, may appear
    in a log line, a file, a database or a Redis value."""

    secrets: set[str] = field(default_factory=set)
    log_lines: list[str] = field(default_factory=list)
    # Stores that tests drop before the session ends (PostgreSQL databases,
    # Redis keys) are captured here first, by the fixtures that own them.
    captured: list[tuple[str, bytes]] = field(default_factory=list)
    # Every 400 body the in-process clients received: their wording is checked
    # at the end of the session (issue #12: keystile's own sentences only).
    validation_errors: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def remember(self, secret: str) -> None:
        self.secrets.add(secret)

    def remember_body(self, body: Any) -> None:
        if isinstance(body, dict):
            data = body.get("data")
            if isinstance(data, dict) and isinstance(data.get("key"), str):
                self.remember(data["key"])

    async def capture(self, response: httpx.Response) -> None:
        await response.aread()
        if response.headers.get("content-type", "").startswith("application/json"):
            with suppress(ValueError):
                body = response.json()
                self.remember_body(body)
                if response.status_code == 400 and isinstance(body, dict):
                    request = f"{response.request.method} {response.request.url.raw_path!r}"
                    self.validation_errors.append((request, body))

    def leaks_in(self, blob: bytes) -> list[str]:
        """Secrets of which ``blob`` holds any 16-character piece."""
        pieces = self._pieces()
        found: set[str] = set()
        for run in re.findall(rb"[0-9A-Za-z_]{16,}", blob):
            text = run.decode("ascii")
            for start in range(len(text) - 15):
                owner = pieces.get(text[start : start + 16])
                if owner is not None:
                    found.add(owner)
        return sorted(found)

    def _pieces(self) -> dict[str, str]:
        if getattr(self, "_cache_key", None) != len(self.secrets):
            self._piece_map = {
                secret[i : i + 16]: secret
                for secret in self.secrets
                for i in range(len(secret) - 15)
            }
            # The shared prefix ("wbk_live_" plus 7 characters) is still unique
            # per secret; nothing shorter than 16 characters is matched.
            self._cache_key = len(self.secrets)
        return self._piece_map


LEDGER = SecretLedger()

# What validation libraries say in their own words (pydantic, FastAPI, the
# json module): none of it may reach a client.
LIBRARY_WORDING = re.compile(
    r"Input should|Value error|Field required|String should|List should|Extra inputs"
    r"|valid dictionary|should be a valid|Expecting |Extra data|Unterminated|JSONDecodeError"
    r"|ensure this value|value is not a valid|Invalid \\escape|line \d+ column \d+ \(char"
)


def library_wording(body: dict[str, Any]) -> list[str]:
    """The library phrases in a 400 body's message and details."""
    error = body.get("error", {})
    texts = [str(error.get("message", ""))]
    texts += [f"{d.get('field')}: {d.get('message')}" for d in error.get("details") or []]
    return [text for text in texts if LIBRARY_WORDING.search(text)]


class LedgerLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        LEDGER.log_lines.append(self.format(record))


@dataclass
class Tenant:
    account: Account
    secret: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


async def make_tenant(
    app: Pipeline,
    *,
    plan: Plan = Plan.STANDARD,
    permissions: tuple[str, ...] = ALL_SCOPES,
    name: str = "admin",
    tier: str | None = None,
    account: Account | None = None,
) -> Tenant:
    """An account (or ``account``) and a key in it, made the way the CLI makes them."""
    services = app.services
    if account is None:
        account = await services.accounts.create("Acme", plan)
    new = check_new_key(
        name=name,
        permissions=permissions,
        description=None,
        rate_limit_tier=tier or Tier.STANDARD.value,
        expires_at=None,
        catalog=services.settings.catalog,
        now=services.keys.now(),
    )
    async with services.storage.transaction() as uow:
        issued = await services.keys.issue(uow, account.id, new, caller=None)
    LEDGER.remember(issued.secret)
    return Tenant(account=account, secret=issued.secret, key_id=issued.key.id)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error envelope, with the headers every response carries."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert response.headers["content-type"] == "application/json"
    assert_own_headers(response)
    if code == "invalid_key":
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif code == "invalid_signature":  # a leak report's (contract §14): a key would not help
        assert response.headers["www-authenticate"].startswith("Github-Public-Key-Signature")
    return dict(error)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def assert_own_headers(response: httpx.Response) -> None:
    assert _REQUEST_ID.fullmatch(response.headers["x-request-id"])
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ON_GRANIAN = os.environ.get("KEYSTILE_TEST_SERVER") == "granian"
"""The served tests run on granian (``KEYSTILE_TEST_SERVER=granian``)."""

GRANIAN_GAP = (
    "keystile's own front end on uvicorn (keystile/server/protocol.py); granian has no "
    "such limit or answers this itself (docs/deployment.md, 'On granian')"
)


def http_layer_answer(status: int, body: bytes) -> bool:
    """Whether a response was written by granian's HTTP layer (hyper) rather
    than by keystile: on granian, a request that is not HTTP/1.1 gets a bare
    400 or 431 with no §3 envelope (docs/deployment.md, 'On granian'). Tests
    of such requests then check what still holds: refused, nothing reflected."""
    return ON_GRANIAN and status in (400, 431) and not body.lstrip().startswith(b"{")


def keystile_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env["KEYSTILE_DATA_DIR"] = str(data_dir)
    # KEYSTILE_TEST_SERVER=granian runs every served test on that front end.
    if os.environ.get("KEYSTILE_TEST_SERVER"):
        env["KEYSTILE_SERVER"] = os.environ["KEYSTILE_TEST_SERVER"]
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "keystile"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class ServerURL(str):
    """A server's base URL that also knows the server's process."""

    pid: int
    process: subprocess.Popen[bytes]


def worker_pids(pid: int) -> list[int]:
    """The worker processes of the ``keystile serve`` process ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in map(int, children):
        with suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
    return workers


def resident_peak_kib(pid: int) -> int:
    """The peak resident memory (VmHWM) in KiB of ``keystile serve``'s
    process ``pid`` and its workers, summed."""
    total = 0
    for process in (pid, *worker_pids(pid)):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


@contextmanager
def serving(
    env: dict[str, str],
    *args: str,
    port: int | None = None,
    log: Path | None = None,
    open_files: tuple[int, int] | None = None,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[ServerURL]:
    """A real ``keystile serve`` process; yields its base URL (with ``.pid``).

    ``open_files`` (soft, hard) sets the process's RLIMIT_NOFILE; ``command``
    replaces this venv's ``keystile`` (another install, or one run as
    another user)."""
    port = port or free_port()
    log_file = open(log or os.devnull, "wb")  # noqa: SIM115

    def limit_files() -> None:
        assert open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

    process = subprocess.Popen(
        [*(command or [str(VENV_BIN / "keystile")]), "serve", "--port", str(port), *args],
        env=env,
        cwd=cwd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=limit_files if open_files else None,
    )
    url = ServerURL(f"http://127.0.0.1:{port}")
    url.pid = process.pid
    url.process = process
    try:
        deadline = time.monotonic() + STARTUP_BOUND
        while True:
            if process.poll() is not None:
                tail = log.read_text()[-4000:] if log else ""
                raise RuntimeError(f"keystile serve exited with {process.returncode}\n{tail}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"keystile serve did not start in {STARTUP_BOUND} s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


@contextmanager
def echoing_upstream(*uvicorn_options: str) -> Iterator[str]:
    """tests/e2e/upstream.py on a free port, its own process: answers every
    path with what it received (method, path, headers, ...) as JSON, with
    ``X-Upstream: yes``. Yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.e2e.upstream:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log", *uvicorn_options],
        cwd=Path(__file__).parents[1],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_BOUND
        while True:
            try:
                httpx.get(f"{url}/ready")
                break
            except httpx.TransportError:
                assert process.poll() is None, "the upstream exited"
                assert time.monotonic() < deadline, "upstream did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def cli_admin(env: dict[str, str], *permissions: str) -> tuple[str, str]:
    """An account and an admin key made with the CLI: (account id, secret)."""
    scopes = permissions or ("admin:api_keys", "read:contacts")
    created = run_cli("accounts", "create", "Acme", "--json", env=env)
    assert created.returncode == 0, created.stderr
    account = json.loads(created.stdout)["data"]["id"]
    flags = [flag for scope in scopes for flag in ("--permission", scope)]
    made = run_cli(
        "keys", "create", "--account", account, "--name", "admin", *flags, "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["data"]["key"]
    LEDGER.remember(secret)
    return account, secret


PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def postgres_url(database: str, port: int = PG_PORT) -> str:
    """The test server speaks no TLS: ``ssl=disable`` skips asyncpg's TLS
    probe (libpq's ``prefer``), whose future asyncpg leaves unretrieved when
    a connection attempt is cancelled during it (at a shutdown), which the
    test runner would report as an error of the test."""
    return f"postgresql://{PG_USER}@{PG_HOST}:{port}/{database}?ssl=disable"


def psql(sql: str, database: str = "test", port: int = PG_PORT) -> str:
    result = subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(port), "-U", PG_USER, "-d", database,
         "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr.strip()}")
    return result.stdout


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1].partition("?")[0]


async def count_rows(app: Pipeline, table: str) -> int:
    """Rows in ``table`` of the app's database, read behind the app's back."""
    url = app.services.settings.database
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    return int(psql(f"SELECT count(*) FROM {table}", database_name(url)).strip())


def stored_bytes(app: Pipeline) -> dict[str, bytes]:
    """Everything the app's database holds, as bytes: the SQLite files (WAL
    included), or a full dump of the PostgreSQL database."""
    url = app.services.settings.database
    if url.startswith("sqlite"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    dump = subprocess.run(
        ["pg_dump", "-h", PG_HOST, "-U", PG_USER, "--data-only", database_name(url)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return {"pg_dump": dump.stdout}


async def asgi_call(
    app: Pipeline, method: str, target: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request straight into the ASGI app, with a request target no
    HTTP client library will send (``*``, raw bytes): status, headers, body."""
    path = target.decode("latin-1")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": target, "query_string": b"",
        "root_path": "", "headers": headers if headers is not None else [(b"host", b"k.test")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return int(start["status"]), response_headers, body


@dataclass
class Operator:
    key_id: str
    secret: str

    def headers(self, account_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.secret}"}
        if account_id is not None:
            headers["Keystile-Account"] = account_id
        return headers


async def make_operator(app: Pipeline, name: str = "ops") -> Operator:
    """An operator key, made the way ``keystile operator-keys create`` makes it."""
    from keystile.keys.operators import OperatorKeys

    services = app.services
    issued = await OperatorKeys(services.storage, prefix=services.settings.key_prefix).create(name)
    LEDGER.remember(issued.secret)
    return Operator(issued.key.id, issued.secret)
