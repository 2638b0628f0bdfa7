"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 07:00:30.254669
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "pyqd_api_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("user_name", sa.String(length=30), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    with op.batch_alter_table("pyqd_api_clients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pyqd_api_clients_user_name"), ["user_name"], unique=False)

    op.create_table(
        "pyqd_revoked_sessions",
        sa.Column("sid", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sid"),
    )
    with op.batch_alter_table("pyqd_revoked_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pyqd_revoked_sessions_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "pyqd_users",
        sa.Column("name", sa.String(length=30), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("tokens_valid_after", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "pyqd_scripts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=30), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=30), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "name", name="uq_pyqd_scripts_owner_name"),
    )
    op.create_table(
        "pyqd_script_grants",
        sa.Column("script_id", sa.Integer(), nullable=False),
        sa.Column("grantee", sa.String(length=30), nullable=False),
        sa.ForeignKeyConstraint(["script_id"], ["pyqd_scripts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("script_id", "grantee"),
    )
    op.create_table(
        "pyqd_datastores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=30), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("grantable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "name", name="uq_pyqd_datastores_owner_name"),
    )
    op.create_table(
        "pyqd_datastore_grants",
        sa.Column("datastore_id", sa.Integer(), nullable=False),
        sa.Column("grantee", sa.String(length=30), nullable=False),
        sa.ForeignKeyConstraint(["datastore_id"], ["pyqd_datastores.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("datastore_id", "grantee"),
    )
    op.create_table(
        "pyqd_datastore_objects",
        sa.Column("datastore_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("class_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=True),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        sa.Column("col_count", sa.BigInteger(), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["datastore_id"], ["pyqd_datastores.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("datastore_id", "name"),
    )
    op.create_table(
        "pyqd_table_grants",
        sa.Column("owner", sa.String(length=30), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("grantee", sa.String(length=30), nullable=False),
        sa.PrimaryKeyConstraint("owner", "table_name", "grantee"),
    )


def downgrade() -> None:

    op.drop_table("pyqd_table_grants")
    op.drop_table("pyqd_datastore_objects")
    op.drop_table("pyqd_datastore_grants")
    op.drop_table("pyqd_datastores")
    op.drop_table("pyqd_script_grants")
    op.drop_table("pyqd_scripts")
    op.drop_table("pyqd_users")
    with op.batch_alter_table("pyqd_revoked_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pyqd_revoked_sessions_expires_at"))

    op.drop_table("pyqd_revoked_sessions")
    with op.batch_alter_table("pyqd_api_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pyqd_api_clients_user_name"))

    op.drop_table("pyqd_api_clients")
