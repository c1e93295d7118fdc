"""Domain models of accounts and keys: frozen values, no storage or wire concerns.

The key's digest deliberately is not a field of :class:`ApiKey`: what is not in
the model cannot leak into a response.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    plan: Plan
    created_at: int  # Unix microseconds


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

    def status(self, now: int) -> KeyStatus:
        """Revocation wins over expiry; a key expires at ``expires_at`` exactly."""
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        return KeyStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class NewKey:
    """A validated request to issue a key (from the API or the CLI)."""

    name: str
    permissions: tuple[str, ...]
    description: str | None = None
    rate_limit_tier: Tier = Tier.STANDARD
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created key and its plaintext secret, which exists only here."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[ApiKey]
    has_more: bool
