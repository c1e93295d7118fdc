"""SQLAlchemy table definitions. Migrations (``migrations/versions``) create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Timestamps are integer microseconds since the Unix epoch (UTC) in both
# databases: exact, portable comparisons in SQL, no timezone surprises.

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("plan", sa.String(20), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="active"),
    sa.Column("metadata", sa.JSON, nullable=False, server_default=sa.text("'{}'")),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    # The normalised name (NFC + casefold) and whether this key still holds it.
    # Revocation and expiry (at the next create of the same name) release it.
    # Text: case folding can triple a name's length (120 × "ﬃ" → 360 characters).
    sa.Column("name_key", sa.Text, nullable=False),
    sa.Column("holds_name", sa.Boolean, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("permissions", sa.Text, nullable=False),  # space-separated scopes
    sa.Column("rate_limit_tier", sa.String(20), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
    # Contract §10 and §11 (migration 0003).
    sa.Column("metadata", sa.JSON, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("replaced_by", sa.String(40), nullable=True),
    sa.Column("rate_limit_limit", sa.BigInteger, nullable=True),
    sa.Column("rate_limit_window_seconds", sa.Integer, nullable=True),
    sa.Column("quota_limit", sa.BigInteger, nullable=True),
    sa.Column("quota_period", sa.String(10), nullable=True),
    # The counters' identity: null for the key's own id, else the id of the
    # key it was rotated from (rate limits and quotas carry over).
    sa.Column("limit_key", sa.String(40), nullable=True),
)

HOLDS_NAME = sa.text("holds_name")
ACTIVE_NAME_INDEX = "uq_api_keys_active_name"

sa.Index(
    ACTIVE_NAME_INDEX,
    api_keys.c.account_id,
    api_keys.c.name_key,
    unique=True,
    sqlite_where=HOLDS_NAME,
    postgresql_where=HOLDS_NAME,
)
sa.Index("ix_api_keys_account_created", api_keys.c.account_id, api_keys.c.created_at, api_keys.c.id)
sa.Index("ix_api_keys_account_name", api_keys.c.account_id, api_keys.c.name_key)

operator_keys = sa.Table(
    "operator_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("actor_type", sa.String(20), nullable=False),
    sa.Column("actor_id", sa.String(40), nullable=True),
    sa.Column("target_type", sa.String(40), nullable=False),
    sa.Column("target_id", sa.String(64), nullable=False),
    sa.Column("account_id", sa.String(40), nullable=True),
    sa.Column("request_id", sa.String(160), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("changes", sa.JSON, nullable=False),
)
sa.Index(
    "ix_audit_events_account_created",
    audit_events.c.account_id,
    audit_events.c.created_at,
    audit_events.c.id,
)
sa.Index("ix_audit_events_created", audit_events.c.created_at, audit_events.c.id)
sa.Index("ix_audit_events_target", audit_events.c.target_id)
sa.Index("ix_audit_events_actor", audit_events.c.actor_id)

idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
    sa.Column("account_id", sa.String(40), primary_key=True),
    sa.Column("caller_key_id", sa.String(40), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)

# Usage metering (contract §11, migration 0006). Bucket starts are Unix
# *seconds* on an hour or day boundary (an identity, not a timestamp). No
# foreign keys: keys and accounts are never deleted, and the meter's upserts
# stay one index probe each.
_COUNT_COLUMNS = ("allowed", "rate_limited", "quota_exceeded", "forbidden")


def _usage_table(name: str, start: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column(start, sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        # The key's rate-limit and quota identity (ApiKey.counter_id): quotas
        # are seeded from the rows of every key sharing it.
        sa.Column("counter_id", sa.String(40), nullable=False),
        *(sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in _COUNT_COLUMNS),
    )


usage_hourly = _usage_table("usage_hourly", "hour_start")
sa.Index("ix_usage_hourly_account", usage_hourly.c.account_id, usage_hourly.c.hour_start)
sa.Index("ix_usage_hourly_counter", usage_hourly.c.counter_id, usage_hourly.c.hour_start)
sa.Index("ix_usage_hourly_hour", usage_hourly.c.hour_start)  # the rollup finds old hours

usage_daily = _usage_table("usage_daily", "day_start")
sa.Index("ix_usage_daily_account", usage_daily.c.account_id, usage_daily.c.day_start)
sa.Index("ix_usage_daily_counter", usage_daily.c.counter_id, usage_daily.c.day_start)

# The last batch each meter (one per process) added: a batch retried after
# a commit in doubt is recognised and not added twice.
usage_writers = sa.Table(
    "usage_writers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),  # Unix microseconds
)

# Quota counters, when several workers share a host without Redis (0005).
quota_counters = sa.Table(
    "quota_counters",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("period_start", sa.BigInteger, primary_key=True),
    sa.Column("used", sa.BigInteger, nullable=False),
)

# Webhooks (contract §13, migration 0007). An event row holds the exact body
# every attempt sends; a delivery row is one event on its way to one endpoint.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # space-separated event names, or "*"
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("disabled", sa.Boolean, nullable=False),
    # AES-GCM under KEYSTILE_SECRET_KEY (idempotency.crypto.Keyring): never in clear.
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
sa.Index(
    "ix_webhook_endpoints_account_created",
    webhook_endpoints.c.account_id,
    webhook_endpoints.c.created_at,
    webhook_endpoints.c.id,
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    # Events several instances may produce (time-based, or derived from
    # traffic) carry a key that makes the second insert a no-op.
    sa.Column("dedupe_key", sa.String(200), nullable=True, unique=True),
)
sa.Index("ix_webhook_events_created", webhook_events.c.created_at)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("event_id", sa.String(40), sa.ForeignKey("webhook_events.id"), nullable=False),
    sa.Column("endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id"), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempt_count", sa.Integer, nullable=False),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    # When a pending delivery may next be attempted; while an attempt is in
    # flight, the end of its lease (a crashed sender's claim runs out).
    sa.Column("next_attempt_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
sa.Index(
    "ix_webhook_deliveries_due", webhook_deliveries.c.state, webhook_deliveries.c.next_attempt_at
)
sa.Index(
    "ix_webhook_deliveries_endpoint",
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.created_at,
    webhook_deliveries.c.id,
)
sa.Index("ix_webhook_deliveries_event", webhook_deliveries.c.event_id)
# The expiry scan (api_key.expiring / api_key.expired) reads keys by expiry.
sa.Index("ix_api_keys_expires", api_keys.c.expires_at)

# Browser console sessions (contract §16, migration 0008). The cookie holds a
# random id; the row is found by its SHA-256 digest, and the signed-in key is
# stored encrypted under the application key (bound to the row).
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_digest", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(40), nullable=True),
    sa.Column("operator", sa.Boolean, nullable=False),
    sa.Column("credential", sa.LargeBinary, nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("flash", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("last_seen_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)
