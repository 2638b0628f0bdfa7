"""async jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:05:05.875360
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "pyqd_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=30), nullable=False),
        sa.Column("api_version", sa.String(length=4), nullable=False),
        sa.Column("verb", sa.String(length=16), nullable=False),
        sa.Column("script_name", sa.String(length=128), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("service", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("units_done", sa.Integer(), nullable=False),
        sa.Column("units_total", sa.Integer(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("media_type", sa.String(length=64), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("body_path", sa.String(length=512), nullable=True),
        sa.Column("body_size", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pyqd_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pyqd_jobs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_pyqd_jobs_finished_at"), ["finished_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_pyqd_jobs_owner"), ["owner"], unique=False)
        batch_op.create_index(batch_op.f("ix_pyqd_jobs_status"), ["status"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("pyqd_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pyqd_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_pyqd_jobs_owner"))
        batch_op.drop_index(batch_op.f("ix_pyqd_jobs_finished_at"))
        batch_op.drop_index(batch_op.f("ix_pyqd_jobs_created_at"))

    op.drop_table("pyqd_jobs")
