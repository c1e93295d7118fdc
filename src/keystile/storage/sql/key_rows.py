"""Reading a key row: the columns and the mapping to :class:`ApiKey`,
shared by every repository that returns keys."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keystile.keys.models import AccountStatus, ApiKey, Quota, QuotaPeriod, RateLimitRule, Tier
from keystile.storage.sql.tables import accounts, api_keys

KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.name,
    api_keys.c.description,
    api_keys.c.permissions,
    api_keys.c.rate_limit_tier,
    api_keys.c.expires_at,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
    api_keys.c["metadata"],
    api_keys.c.disabled,
    api_keys.c.replaced_by,
    api_keys.c.rate_limit_limit,
    api_keys.c.rate_limit_window_seconds,
    api_keys.c.quota_limit,
    api_keys.c.quota_period,
    api_keys.c.limit_key,
)

# The key of a digest, its account's status and the digest as stored: the
# per-request lookup of a key that is not cached (``find_by_digest``).
KEY_BY_DIGEST = (
    sa.select(*KEY_COLUMNS, api_keys.c.digest, accounts.c.status.label("account_status"))
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.digest == sa.bindparam("digest"))
)


def key_from_row(row: Any, account_suspended: bool = False) -> ApiKey:
    """``row``: the columns of :data:`KEY_COLUMNS` as attributes (a SQLAlchemy
    row, or the namespace ``storage.sql.lookups`` makes of an asyncpg row)."""
    rate_limit = None
    if row.rate_limit_limit is not None and row.rate_limit_window_seconds is not None:
        rate_limit = RateLimitRule(int(row.rate_limit_limit), int(row.rate_limit_window_seconds))
    quota = None
    if row.quota_limit is not None and row.quota_period is not None:
        quota = Quota(int(row.quota_limit), QuotaPeriod(row.quota_period))
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        description=row.description,
        permissions=tuple(row.permissions.split()),
        rate_limit_tier=Tier(row.rate_limit_tier),
        expires_at=row.expires_at,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        metadata=dict(row.metadata or {}),
        disabled=bool(row.disabled),
        replaced_by=row.replaced_by,
        rate_limit=rate_limit,
        quota=quota,
        limit_key=row.limit_key or "",
        account_suspended=account_suspended,
    )


def key_with_digest(row: Any) -> tuple[ApiKey, str]:
    """A row of :data:`KEY_BY_DIGEST`: the key, its account's suspension
    read into ``account_suspended``, and the stored digest."""
    suspended = row.account_status == AccountStatus.SUSPENDED.value
    return key_from_row(row, suspended), row.digest


def mutable_key_fields(key: ApiKey) -> dict[str, Any]:
    """The columns a key's lifecycle may change (contract §10)."""
    return {
        "name": key.name,
        "description": key.description,
        "permissions": " ".join(key.permissions),
        "rate_limit_tier": key.rate_limit_tier.value,
        "expires_at": key.expires_at,
        "metadata": dict(key.metadata),
        "disabled": key.disabled,
        "replaced_by": key.replaced_by,
        "rate_limit_limit": key.rate_limit.limit if key.rate_limit else None,
        "rate_limit_window_seconds": key.rate_limit.window_seconds if key.rate_limit else None,
        "quota_limit": key.quota.limit if key.quota else None,
        "quota_period": key.quota.period.value if key.quota else None,
    }
