"""temporary tables: which user tables the server drops on its own, and when (`oml.push`)

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-10 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pyqd_temp_tables",
        sa.Column("owner", sa.String(length=30), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "table_name"),
    )
    op.create_index("ix_pyqd_temp_tables_expires_at", "pyqd_temp_tables", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_pyqd_temp_tables_expires_at", table_name="pyqd_temp_tables")
    op.drop_table("pyqd_temp_tables")
