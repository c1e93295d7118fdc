"""keystile's configuration: environment variables with the ``KEYSTILE_`` prefix.

Built once at the edge (``keystile serve``, the CLI, a test) and passed down;
nothing reads the environment anywhere else.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from limits import RateLimitItem, parse
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keystile.http.clients import Network, parse_networks
from keystile.ratelimit.models import Limit

DEFAULT_SCOPES = (
    "read:contacts write:contacts read:deals write:deals write:email write:ai "
    "admin:api_keys admin:webhooks verify:keys"
)
ADMIN_SCOPE = "admin:api_keys"
WEBHOOKS_SCOPE = "admin:webhooks"
VERIFY_SCOPE = "verify:keys"

_PREFIX = re.compile(r"[a-z][a-z0-9]{1,15}")
_SCOPE = re.compile(r"[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*")


def parse_limit(text: str, variable: str) -> RateLimitItem:
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(
            f"{variable}={text!r} is not a rate limit like '100/10 seconds' or '30/minute'"
        ) from exc


class Settings(BaseSettings):
    """Every setting, with its environment variable ``KEYSTILE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="KEYSTILE_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path(".keystile"), description="Directory of the embedded database and generated secret."
    )
    database_url: str | None = Field(
        None,
        description="sqlite:///file.db or postgresql://user@host/db "
        "(default: SQLite in the data dir).",
    )
    database_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="Longest wait for a database connection or statement."
    )
    database_pool_size: int = Field(
        10, ge=1, le=500, description="PostgreSQL connections per process."
    )
    redis_url: str | None = Field(
        None,
        description="redis://host:port/db; shares rate limits, idempotency locks and revocations.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Comma-separated application keys (base64, 32 bytes each); the first encrypts.",
    )
    key_prefix: str = Field("wbk", description="Token prefix: keys read {prefix}_live_….")
    scopes: str = Field(DEFAULT_SCOPES, description="The scope catalog, space- or comma-separated.")
    tier_standard: str = Field("100/10 seconds", description="Rate limit of the standard tier.")
    tier_high: str = Field("1000/10 seconds", description="Rate limit of the high tier.")
    auth_failure_limit: str = Field(
        "30/minute", description="Failed authentications allowed per client address."
    )
    redis_prefix: str = Field("keystile", description="Prefix of every Redis key keystile writes.")
    redis_timeout_ms: int = Field(
        250,
        ge=1,
        le=60_000,
        description="How long a fresh connection to Redis may take before Redis counts as "
        "unreachable (then the failure mode applies).",
    )
    redis_reply_timeout_ms: int = Field(
        5000,
        ge=1,
        le=600_000,
        description="How long a request waits for a reachable Redis's reply before it is "
        "refused with 503 (never admitted).",
    )
    redis_failure_mode: Literal["open", "closed"] = Field(
        "open",
        description="When Redis is unreachable: open (limit per process) or closed (503).",
    )
    trusted_proxies: str = Field(
        "", description="Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed."
    )
    routes: Path | None = Field(None, description="The gateway's routes file (TOML).")
    secret_scanning_keys: Path | None = Field(
        None,
        description="The secret-scanning partner's public keys (GitHub's JSON format) that "
        "sign leak reports (contract §14); unset: every report is refused.",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    server: Literal["uvicorn", "granian"] = Field(
        "uvicorn", description="The HTTP front end of ``keystile serve``."
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long a request body (to keystile's own endpoints) may take.",
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long a request head may take, from its first byte to its blank line.",
    )
    http_keepalive_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How long a connection may stay open with no request in progress.",
    )
    http_max_head_bytes: int = Field(
        32_768,
        ge=1024,
        le=1_048_576,
        description="Largest request head (request line and header fields); larger is a 431.",
    )
    http_max_headers: int = Field(
        100, ge=8, le=10_000, description="Most header fields in one request; more is a 431."
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open connections per worker; past it the longest-idle one is closed.",
    )
    loop_stall_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A worker whose event loop stops for this long is killed and restarted.",
    )
    shutdown_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="How long requests in progress may run on after SIGTERM.",
    )
    key_cache_size: int = Field(
        10_000, ge=0, description="Verified keys kept in memory per process."
    )
    key_cache_ttl_seconds: float = Field(
        10.0, gt=0, description="Longest a verified key stays cached (a backstop to invalidation)."
    )
    idempotency_purge_interval_seconds: float = Field(
        600.0,
        gt=0,
        description="How often expired idempotency records (and old audit events) are deleted.",
    )
    audit_retention_days: int = Field(
        365, ge=1, le=36_500, description="How long audit events are kept (contract §12)."
    )
    test_fault_point: str | None = Field(
        None, description="Testing only: crash the process at this point (keystile.faults)."
    )
    last_used_interval_seconds: float = Field(
        10.0, gt=0, description="How often last_used_at is written."
    )
    usage_flush_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="How often metered usage is written (and at shutdown); a process killed "
        "without a graceful shutdown loses at most this much of it.",
    )
    usage_hourly_retention_days: int = Field(
        90,
        ge=1,
        le=36_500,
        description="How long hourly usage is kept; older hours are rolled up into daily totals.",
    )

    webhook_retry_hours: float = Field(
        72.0,
        gt=0,
        le=720,
        description="How long a webhook delivery is retried before it is marked failed "
        "(contract §13).",
    )
    webhook_retry_base_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Delay before a webhook delivery's first retry; it doubles with each "
        "attempt up to one hour, with jitter.",
    )
    webhook_allow_http: bool = Field(
        False, description="Allow http:// webhook URLs (https only by default)."
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook URLs resolving to loopback, private, link-local or "
        "metadata addresses (refused by default).",
    )
    webhook_concurrency: int = Field(
        8,
        ge=1,
        le=256,
        description="Webhook deliveries one process sends at once (at most a quarter of "
        "them, and at least one, to the same endpoint).",
    )
    webhook_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each process looks for webhook deliveries that are due.",
    )
    webhook_scan_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How often api_key.expiring and api_key.expired events are looked for.",
    )

    console_enabled: bool = Field(
        True, description="Serve the browser console at /console (docs/console.md)."
    )
    console_idle_minutes: int = Field(
        30,
        ge=1,
        le=1440,
        description="A console session ends after this many minutes without a request.",
    )
    console_absolute_hours: int = Field(
        12,
        ge=1,
        le=168,
        description="A console session ends this many hours after sign-in, however active.",
    )

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError(
                "KEYSTILE_KEY_PREFIX must be 2-16 lowercase letters or digits, "
                "starting with a letter"
            )
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: str) -> str:
        scopes = value.replace(",", " ").split()
        bad = [scope for scope in scopes if not _SCOPE.fullmatch(scope)]
        if not scopes or bad:
            raise ValueError(f"KEYSTILE_SCOPES must list scopes like 'read:contacts' (bad: {bad})")
        if ADMIN_SCOPE not in scopes:
            raise ValueError(f"KEYSTILE_SCOPES must include {ADMIN_SCOPE}")
        return " ".join(dict.fromkeys(scopes))

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"KEYSTILE_TRUSTED_PROXIES: {exc}") from None
        return value

    @field_validator("tier_standard", "tier_high", "auth_failure_limit")
    @classmethod
    def _check_limit(cls, value: str) -> str:
        parse_limit(value, "rate limit")
        return value

    @model_validator(mode="after")
    def _check_stall_timeout(self) -> Settings:
        # SQLite waits for another process's write lock on the event loop (up
        # to the database timeout): the watchdog must not take that for a hang.
        if self.database.startswith("sqlite") and (
            self.loop_stall_seconds <= self.database_timeout_seconds
        ):
            raise ValueError(
                "KEYSTILE_LOOP_STALL_SECONDS must be longer than "
                "KEYSTILE_DATABASE_TIMEOUT_SECONDS with SQLite, whose lock waits block the loop"
            )
        return self

    @cached_property
    def catalog(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    @cached_property
    def scope_list(self) -> tuple[str, ...]:
        return tuple(self.scopes.split())

    @cached_property
    def proxies(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    def limit(self, name: str) -> Limit:
        text: str = getattr(self, name)
        return Limit.of(parse_limit(text, f"KEYSTILE_{name.upper()}"))

    @property
    def database(self) -> str:
        """The database URL in effect (the embedded default when none is set)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'keystile.db'}"
