"""Idempotency records keep the SHA-256 of the client's Idempotency-Key, not
the value: a client may send anything in it, a secret included. The records
of the last 24 hours are converted in place, so their replays keep working.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_records = sa.table(
    "idempotency_records",
    sa.column("account_id", sa.String),
    sa.column("caller_key_id", sa.String),
    sa.column("idempotency_key", sa.String),
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_records.c.account_id, _records.c.caller_key_id, _records.c.idempotency_key)
    ).all()
    for account_id, caller_key_id, value in rows:
        bind.execute(
            _records.update()
            .where(
                _records.c.account_id == account_id,
                _records.c.caller_key_id == caller_key_id,
                _records.c.idempotency_key == value,
            )
            .values(idempotency_key=hashlib.sha256(value.encode()).hexdigest())
        )


def downgrade() -> None:
    # A digest cannot be turned back into the value: the records are dropped
    # (they only serve replays for 24 hours).
    op.execute(_records.delete())
