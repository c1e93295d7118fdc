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
