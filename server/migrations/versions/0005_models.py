"""models: OML Services' model repository and deployments

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pyqd_models",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("owner", sa.String(length=30), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("namespace", sa.String(length=50), nullable=False),
        sa.Column("model_type", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("stored_on", sa.DateTime(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("owner", "name", "version", "namespace", name="uq_pyqd_models_owner_name_version_ns"),
    )
    op.create_table(
        "pyqd_deployments",
        sa.Column("uri", sa.String(length=200), primary_key=True),
        sa.Column("model_id", sa.String(length=36), sa.ForeignKey("pyqd_models.id"), nullable=False, unique=True),
        sa.Column("deployed_by", sa.String(length=30), nullable=False),
        sa.Column("deployed_on", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pyqd_deployments")
    op.drop_table("pyqd_models")
