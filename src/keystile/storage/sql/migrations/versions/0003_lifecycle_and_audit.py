"""The operator API, the key lifecycle and the audit log (contract §9-§12).

Accounts gain a status and metadata; keys gain metadata, ``disabled``,
``replaced_by``, a rate-limit override, a quota and the identity of their
counters (``limit_key``, null meaning the key's own id, so existing keys
need no backfill); new tables hold operator keys and audit events. Every
new column has a default, so a database of the previous version upgrades
in place without touching a key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_EMPTY_OBJECT = sa.text("'{}'")


def upgrade() -> None:
    op.add_column(
        "accounts", sa.Column("status", sa.String(20), nullable=False, server_default="active")
    )
    op.add_column(
        "accounts", sa.Column("metadata", sa.JSON, nullable=False, server_default=_EMPTY_OBJECT)
    )
    for column in (
        sa.Column("metadata", sa.JSON, nullable=False, server_default=_EMPTY_OBJECT),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("replaced_by", sa.String(40), nullable=True),
        sa.Column("rate_limit_limit", sa.BigInteger, nullable=True),
        sa.Column("rate_limit_window_seconds", sa.Integer, nullable=True),
        sa.Column("quota_limit", sa.BigInteger, nullable=True),
        sa.Column("quota_period", sa.String(10), nullable=True),
        sa.Column("limit_key", sa.String(40), nullable=True),
    ):
        op.add_column("api_keys", column)
    op.create_index("ix_api_keys_account_name", "api_keys", ["account_id", "name_key"])
    op.create_table(
        "operator_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("last_used_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "audit_events",
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
    op.create_index(
        "ix_audit_events_account_created", "audit_events", ["account_id", "created_at", "id"]
    )
    op.create_index("ix_audit_events_created", "audit_events", ["created_at", "id"])
    op.create_index("ix_audit_events_target", "audit_events", ["target_id"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor_id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("operator_keys")
    op.drop_index("ix_api_keys_account_name", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        for name in ("limit_key", "quota_period", "quota_limit", "rate_limit_window_seconds",
                     "rate_limit_limit", "replaced_by", "disabled", "metadata"):  # fmt: skip
            batch.drop_column(name)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("metadata")
        batch.drop_column("status")
