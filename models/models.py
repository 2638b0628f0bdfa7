"""Tables of the model repository. A model's bytes live in the database, so a store is one transaction and
every server of a cluster sees them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column


class ModelsBase(DeclarativeBase):
    pass


class StoredModel(ModelsBase):
    __tablename__ = "pyqd_models"
    __table_args__ = (
        UniqueConstraint("owner", "name", "version", "namespace", name="uq_pyqd_models_owner_name_version_ns"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(50))
    version: Mapped[str] = mapped_column(String(16))
    #: "" when the model has none.
    namespace: Mapped[str] = mapped_column(String(50), default="")
    model_type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    stored_on: Mapped[datetime] = mapped_column(DateTime)
    size: Mapped[int] = mapped_column(BigInteger)
    #: sha256 of `data`: a worker that loaded these bytes need not load them again.
    digest: Mapped[str] = mapped_column(String(64))
    #: OML Services' ModelMetadata as JSON, read from the model by a sandboxed worker when it was stored.
    metadata_json: Mapped[str] = mapped_column(Text)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))


class Deployment(ModelsBase):
    __tablename__ = "pyqd_deployments"

    uri: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("pyqd_models.id"), unique=True)
    #: Who created the endpoint (the model's creator, or anyone for a shared model).
    deployed_by: Mapped[str] = mapped_column(String(30))
    deployed_on: Mapped[datetime] = mapped_column(DateTime)
