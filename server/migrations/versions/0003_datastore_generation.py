"""datastore generation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:07:39.420184
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pyqd_datastore_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO pyqd_datastore_generation (id, value) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("pyqd_datastore_generation")
