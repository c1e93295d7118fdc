"""Browser console sessions (contract §16): the cookie holds a random id, the
row its digest, the signed-in key encrypted under the application key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
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
    op.create_index("ix_console_sessions_expires", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("console_sessions")
