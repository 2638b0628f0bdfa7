"""Tables of the table-grant store (the tables themselves live in each user's schema)."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TablesBase(DeclarativeBase):
    pass


class TableGrant(TablesBase):
    """Read privilege on `owner.table_name`, to a user or to PUBLIC."""

    __tablename__ = "pyqd_table_grants"

    owner: Mapped[str] = mapped_column(String(30), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(30), primary_key=True)
