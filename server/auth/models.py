"""Tables of the identity store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class AuthBase(DeclarativeBase):
    pass


class User(AuthBase):
    """A database user: owns a schema, scripts and datastores. Names are stored upper-case."""

    __tablename__ = "pyqd_users"

    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: Tokens first issued before this instant are rejected (set on password change).
    tokens_valid_after: Mapped[datetime] = mapped_column(DateTime)


class ApiClient(AuthBase):
    """An OAuth2 client (APEX Web Credential, Postman) acting as one user."""

    __tablename__ = "pyqd_api_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    user_name: Mapped[str] = mapped_column(String(30), index=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RevokedSession(AuthBase):
    """A revoked token session: every token of the session (the first and its refreshes) is refused."""

    __tablename__ = "pyqd_revoked_sessions"

    sid: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: After this instant no token of the session can be valid, so the row may be purged.
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
