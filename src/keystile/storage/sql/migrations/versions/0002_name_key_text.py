"""api_keys.name_key becomes TEXT: case folding can triple a name's length
(120 × "ﬃ" folds to 360 characters), which overflowed VARCHAR(200) on
PostgreSQL (issue #11, item 8). SQLite does not enforce VARCHAR lengths.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("api_keys", "name_key", type_=sa.Text, existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("api_keys", "name_key", type_=sa.String(200), existing_nullable=False)
