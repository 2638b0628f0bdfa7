"""Tables of the script repository."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class RepoBase(DeclarativeBase):
    pass


class Script(RepoBase):
    """A named function. Global scripts have owner PYQSYS and remember who created them."""

    __tablename__ = "pyqd_scripts"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_pyqd_scripts_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ScriptGrant(RepoBase):
    """Read/execute privilege on a private script, to a user or to PUBLIC."""

    __tablename__ = "pyqd_script_grants"

    script_id: Mapped[int] = mapped_column(ForeignKey("pyqd_scripts.id", ondelete="CASCADE"), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(30), primary_key=True)
