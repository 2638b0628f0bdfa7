"""Tables of the table-grant store (the tables themselves live in each user's schema)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TablesBase(DeclarativeBase):
    pass


class TableGrant(TablesBase):
    """Read privilege on `owner.table_name`, to a user or to PUBLIC."""

    __tablename__ = "pyqd_table_grants"

    owner: Mapped[str] = mapped_column(String(30), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(30), primary_key=True)


class TemporaryTable(TablesBase):
    """A temporary table (`oml.push`): the server drops it once `expires_at` (UTC) has passed, unless it is made
    permanent first (the row is then deleted). A table without a row here is permanent."""

    __tablename__ = "pyqd_temp_tables"

    owner: Mapped[str] = mapped_column(String(30), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
