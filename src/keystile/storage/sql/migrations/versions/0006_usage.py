"""Usage metering (contract §11): hourly buckets per key, their daily
rollups, and the record of each meter's last batch.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COUNTS = ("allowed", "rate_limited", "quota_exceeded", "forbidden")


def _create_usage_table(name: str, start: str) -> None:
    op.create_table(
        name,
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column(start, sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("counter_id", sa.String(40), nullable=False),
        *(sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in _COUNTS),
    )
    short = name.removeprefix("usage_")
    op.create_index(f"ix_usage_{short}_account", name, ["account_id", start])
    op.create_index(f"ix_usage_{short}_counter", name, ["counter_id", start])


def upgrade() -> None:
    _create_usage_table("usage_hourly", "hour_start")
    op.create_index("ix_usage_hourly_hour", "usage_hourly", ["hour_start"])
    _create_usage_table("usage_daily", "day_start")
    op.create_table(
        "usage_writers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_writers")
    op.drop_table("usage_daily")
    op.drop_table("usage_hourly")
