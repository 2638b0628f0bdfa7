"""Tables of the datastore store. Object bytes live in the database so a save is one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column


class DatastoreBase(DeclarativeBase):
    pass


class Datastore(DatastoreBase):
    __tablename__ = "pyqd_datastores"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_pyqd_datastores_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    grantable: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class DatastoreObject(DatastoreBase):
    """One pickled object with what `describe` shows of it (computed by the saving client)."""

    __tablename__ = "pyqd_datastore_objects"

    datastore_id: Mapped[int] = mapped_column(ForeignKey("pyqd_datastores.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    row_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    col_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: sha256 of `data`: lets loaders cache objects across calls.
    digest: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))


class DatastoreGrant(DatastoreBase):
    __tablename__ = "pyqd_datastore_grants"

    datastore_id: Mapped[int] = mapped_column(ForeignKey("pyqd_datastores.id", ondelete="CASCADE"), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(30), primary_key=True)


class DatastoreGeneration(DatastoreBase):
    """One counter, raised by every change to any datastore or grant: while it stays the same, what a worker
    learned about datastores is still true (it need not ask again)."""

    __tablename__ = "pyqd_datastore_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
