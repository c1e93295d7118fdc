"""What ``python -m bench.compare --scenario NAME`` measures.

A scenario turns a running variant (its port, its key, its virtualenv) into
one wrk target: a URL, and optionally a Lua script or a header. To add one,
write a function ``(Bench, Server) -> Target`` and add it to ``SCENARIOS``;
if its requests need a scope the others do not, add the scope to
``PERMISSIONS`` (every variant's key gets all of them). A scenario that needs
a process of its own per variant (an app using the variant's client
library, say) can start it with ``run.process`` entered on
``bench.servers``, using ``server.bin`` for that variant's interpreter.
A reference scenario (``per_variant=False``) is measured once per round,
against the bench's own processes, not against a variant.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.run import lua_create, lua_forward_auth, lua_post

ROUTE_PREFIX = "/v1/contacts"
ROUTE_SCOPE = "read:contacts"
PERMISSIONS = (ROUTE_SCOPE, "verify:keys", "admin:api_keys")


@dataclass(frozen=True)
class Target:
    """One wrk target: ``script`` is a Lua file (method, body, headers),
    ``header`` one extra ``Name: value`` header."""

    url: str
    script: Path | None = None
    header: str | None = None


@dataclass(frozen=True)
class Server:
    """A variant's ``keystile serve``, ready: ``key`` holds every scope of
    ``PERMISSIONS`` on a tier that never refuses (unless the variant's
    environment says otherwise); ``bin`` is the variant's virtualenv ``bin/``;
    ``work`` a directory of its own for scripts; ``service_key`` a second key
    of the same account holding only ``verify:keys`` (no quota), the caller of
    the ``verify-service`` scenario."""

    variant: str
    port: int
    key: str
    bin: Path
    env: dict[str, str]
    work: Path
    service_key: str = ""
    pid: int = 0  # the supervisor's: its tree's CPU is the server's

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Bench:
    """What every scenario shares: the bare upstream (``bench.apps:bare``
    behind the gateway route), a scratch directory, and the exit stack the
    servers run under."""

    upstream_port: int
    work: Path
    servers: contextlib.ExitStack


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    target: Callable[[Bench, Server | None], Target]
    per_variant: bool = True


def routes_toml(upstream_port: int) -> str:
    """The gateway routes file every variant serves."""
    return (
        f'[[routes]]\nprefix = "{ROUTE_PREFIX}"\nmethods = ["GET"]\n'
        f'scope = "{ROUTE_SCOPE}"\nupstream = "http://127.0.0.1:{upstream_port}"\n'
    )


def _variant(server: Server | None) -> Server:
    if server is None:
        raise ValueError("this scenario is measured per variant")
    return server


def verify(bench: Bench, server: Server | None) -> Target:
    """``POST /v1/keys/verify`` of the caller's own key: hot, cached."""
    server = _variant(server)
    body = json.dumps({"key": server.key})
    script = lua_post(server.work / "verify.lua", body, server.key)
    return Target(f"{server.base}/v1/keys/verify", script=script)


def verify_service(bench: Bench, server: Server | None) -> Target:
    """``POST /v1/keys/verify`` of the bench key by a service key: the shape
    of a deployment (a service without a quota verifies customer keys)."""
    server = _variant(server)
    body = json.dumps({"key": server.key})
    script = lua_post(server.work / "verify-service.lua", body, server.service_key)
    return Target(f"{server.base}/v1/keys/verify", script=script)


def proxy(bench: Bench, server: Server | None) -> Target:
    """``GET /v1/contacts`` through the gateway to the bare upstream."""
    server = _variant(server)
    return Target(f"{server.base}{ROUTE_PREFIX}", header=f"Authorization: Bearer {server.key}")


def forward_auth(bench: Bench, server: Server | None) -> Target:
    """``GET /v1/auth`` as a proxy asks it about ``GET /v1/contacts/1``."""
    server = _variant(server)
    script = lua_forward_auth(server.work / "auth.lua", server.key, f"{ROUTE_PREFIX}/1")
    return Target(f"{server.base}/v1/auth", script=script)


def create(bench: Bench, server: Server | None) -> Target:
    """``POST /v1/api-keys``, a new name per request (make bench's row e):
    the write path, one committed transaction per request."""
    server = _variant(server)
    script = lua_create(server.work / "create.lua", server.key)
    return Target(f"{server.base}/v1/api-keys", script=script)


def direct(bench: Bench, server: Server | None) -> Target:
    """The bare upstream called directly: what the machine gives a request
    that does nothing, in the same rounds."""
    return Target(f"http://127.0.0.1:{bench.upstream_port}{ROUTE_PREFIX}")


SCENARIOS: dict[str, Scenario] = {
    "verify": Scenario(
        "verify", "POST /v1/keys/verify, a hot cached key (the caller's own)", verify
    ),
    "verify-service": Scenario(
        "verify-service",
        "POST /v1/keys/verify of the bench key by a service key (verify:keys, no quota)",
        verify_service,
    ),
    "proxy": Scenario("proxy", f"GET {ROUTE_PREFIX} through the gateway to a bare upstream", proxy),
    "forward-auth": Scenario(
        "forward-auth",
        f"GET /v1/auth asked about GET {ROUTE_PREFIX}/1 (contract §15)",
        forward_auth,
    ),
    "create": Scenario("create", "POST /v1/api-keys, a new name per request", create),
    "direct": Scenario(
        "direct",
        "the bare upstream called directly (reference, no keystile)",
        direct,
        per_variant=False,
    ),
}
