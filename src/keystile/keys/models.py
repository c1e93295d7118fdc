"""Domain models of accounts and keys: frozen values, no storage or wire concerns.

The key's digest deliberately is not a field of :class:`ApiKey`: what is not in
the model cannot leak into a response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Plan(StrEnum):
    STANDARD = "standard"
    ENTERPRISE = "enterprise"


class Tier(StrEnum):
    STANDARD = "standard"
    HIGH = "high"
    UNMETERED = "unmetered"


class KeyStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    DISABLED = "disabled"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class QuotaPeriod(StrEnum):
    """Calendar periods in UTC (contract §11)."""

    DAY = "day"
    MONTH = "month"


Metadata = dict[str, str]
"""Stripe's rules (contract §9): at most 50 entries, keys 1-40 characters,
values strings of at most 500 characters (checked in keys.validation)."""


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """A key's own rate limit, replacing its tier's (contract §11)."""

    limit: int  # 1..10**9 requests
    window_seconds: int  # 1..86400


@dataclass(frozen=True, slots=True)
class Quota:
    """Requests allowed per calendar period (contract §11)."""

    limit: int  # 1..10**12
    period: QuotaPeriod


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    plan: Plan
    created_at: int  # Unix microseconds
    status: AccountStatus = AccountStatus.ACTIVE
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    name: str
    description: str | None
    permissions: tuple[str, ...]
    rate_limit_tier: Tier
    expires_at: int | None  # Unix microseconds
    created_at: int
    revoked_at: int | None = None
    last_used_at: int | None = None
    metadata: Metadata = field(default_factory=dict)
    disabled: bool = False
    replaced_by: str | None = None  # the key a rotation made from this one
    rate_limit: RateLimitRule | None = None
    quota: Quota | None = None
    # The identity of the key's rate-limit and quota counters: its own id,
    # or the id of the key it was rotated from, so a rotation never resets
    # or doubles a window or a quota (contract §10).
    limit_key: str = ""
    # Read together with the key (the hot path needs both, in one lookup).
    account_suspended: bool = False

    @property
    def counter_id(self) -> str:
        """The id the rate-limit and quota counters of this key are kept under."""
        return self.limit_key or self.id

    def status(self, now: int) -> KeyStatus:
        """Revoked, then expired, then disabled (contract §10); a key expires
        at ``expires_at`` exactly."""
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        if self.disabled:
            return KeyStatus.DISABLED
        return KeyStatus.ACTIVE

    def is_inactive(self, now: int) -> bool:
        """Revoked or expired: nothing about it may change any more."""
        return self.status(now) in (KeyStatus.REVOKED, KeyStatus.EXPIRED)


@dataclass(frozen=True, slots=True)
class OperatorKey:
    """A key of the operator (contract §9): belongs to no account, never rate
    limited, acts for any account with every catalog scope."""

    id: str  # opk_ + ULID
    name: str
    created_at: int
    revoked_at: int | None = None
    last_used_at: int | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request, and for which account.

    An account key acts for its own account with its own permissions; an
    operator key acts for the account named in ``Keystile-Account`` (or for
    none, on the operator's own endpoints) with every catalog scope.
    """

    account_id: str | None
    permissions: frozenset[str]
    key: ApiKey | None = None
    operator: OperatorKey | None = None

    @property
    def is_operator(self) -> bool:
        return self.operator is not None

    @property
    def bounding_key(self) -> ApiKey | None:
        """The key whose permissions and lifetime bound what it may create
        (contract §4); operator keys (and the CLI) are unbounded."""
        return self.key


@dataclass(frozen=True, slots=True)
class NewKey:
    """A validated request to issue a key (from the API or the CLI)."""

    name: str
    permissions: tuple[str, ...]
    description: str | None = None
    rate_limit_tier: Tier = Tier.STANDARD
    expires_at: int | None = None
    metadata: Metadata = field(default_factory=dict)
    rate_limit: RateLimitRule | None = None
    quota: Quota | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created key and its plaintext secret, which exists only here."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[ApiKey]
    has_more: bool


@dataclass(frozen=True, slots=True)
class AccountPage:
    accounts: list[Account]
    has_more: bool
