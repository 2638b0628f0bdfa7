"""Users and API clients: create, authenticate, list, remove; token sessions."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from server.auth.errors import (
    BadCredentials,
    ClientNotFound,
    InvalidName,
    PasswordTooShort,
    TokenInvalid,
    UserExists,
    UserNotFound,
)
from server.auth.models import ApiClient, RevokedSession, User
from server.auth.throttle import HashGate, default_hash_concurrency
from server.auth.tokens import TokenClaims

#: User names: an Oracle-style identifier, stored and shown upper-case.
USER_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,29}")
#: Names that mean something else (global owner, grant-to-all, database internals).
RESERVED_USER_NAMES = frozenset({"PYQSYS", "PUBLIC", "SYS", "SYSTEM", "INFORMATION_SCHEMA", "MAIN", "TEMP"})

_hasher = PasswordHash.recommended()
_dummy_hash: str | None = None
#: Bounds the argon2 computations running at once (each needs its full memory cost).
hash_gate = HashGate(default_hash_concurrency())


def configure_password_hashing(time_cost: int, memory_kib: int, concurrency: int = 0) -> None:
    """Set the argon2 cost of new hashes (existing hashes keep verifying with their own parameters) and how
    many run at once (0: one per core)."""
    global _hasher, _dummy_hash, hash_gate
    _hasher = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib),))
    _dummy_hash = None
    slots = concurrency or default_hash_concurrency()
    if slots != hash_gate.slots:
        hash_gate = HashGate(slots)


def _hash(password: str) -> str:
    with hash_gate.slot():
        return _hasher.hash(password)


def _verify(password: str, hashed: str) -> bool:
    with hash_gate.slot():
        return _hasher.verify(password, hashed)


def check_password_rule(password: str, min_length: int) -> None:
    """PasswordTooShort unless the password has at least `min_length` characters."""
    if not isinstance(password, str) or len(password) < min_length:
        raise PasswordTooShort(min_length)


def _verify_nothing(password: str) -> None:
    """Spend a verification's time when the user does not exist, so timing does not reveal which names exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hash(secrets.token_hex(16))
    _verify(password, _dummy_hash)


def utcnow() -> datetime:
    """Naive UTC now (the metadata store keeps naive UTC timestamps on every backend)."""
    return datetime.now(UTC).replace(tzinfo=None)


#: The epoch as a naive UTC datetime, for exact millisecond arithmetic.
_EPOCH = datetime(1970, 1, 1)


def _to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of a naive UTC datetime (exact, no float rounding)."""
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _tokens_valid_from_now() -> datetime:
    """Now, cut to the millisecond: token sessions record their start in milliseconds."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def normalize_user_name(name: str) -> str:
    """Upper-case a user name after checking it against the naming rules."""
    if not isinstance(name, str) or not USER_NAME_RE.fullmatch(name):
        raise InvalidName(str(name), "a letter, then letters, digits or _ (at most 30 characters)")
    upper = name.upper()
    if upper in RESERVED_USER_NAMES or upper.startswith(("PG_", "SQLITE_")):
        raise InvalidName(name, "the name is reserved")
    return upper


def create_user(session: Session, name: str, password: str, *, is_admin: bool = False, min_length: int = 0) -> User:
    name = normalize_user_name(name)
    check_password_rule(password, min_length)
    if session.get(User, name) is not None:
        raise UserExists(name)
    now = _tokens_valid_from_now()
    user = User(
        name=name,
        password_hash=_hash(password),
        is_admin=is_admin,
        created_at=now,
        # Refuses tokens of an earlier user of the same name (removed, then the name given again).
        tokens_valid_after=now,
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, name: str) -> User:
    user = session.get(User, name.upper()) if isinstance(name, str) else None
    if user is None:
        raise UserNotFound(str(name).upper())
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def set_password(session: Session, name: str, password: str, *, min_length: int = 0) -> None:
    """Change a password; every token issued before now stops working."""
    check_password_rule(password, min_length)
    user = get_user(session, name)
    user.password_hash = _hash(password)
    # Sessions record their start in milliseconds: one begun in this same millisecond stays valid.
    user.tokens_valid_after = _tokens_valid_from_now()
    session.flush()


def remove_user(session: Session, name: str) -> None:
    """Delete the account and its API clients (the caller drops the user's objects)."""
    user = get_user(session, name)
    session.execute(delete(ApiClient).where(ApiClient.user_name == user.name))
    session.delete(user)
    session.flush()


def authenticate(session: Session, name: str, password: str) -> User:
    """The user whose password this is, or BadCredentials."""
    user = session.get(User, name.upper()) if isinstance(name, str) and USER_NAME_RE.fullmatch(name) else None
    if user is None:
        _verify_nothing(password)
        raise BadCredentials()
    if not _verify(password, user.password_hash):
        raise BadCredentials()
    return user


def create_client(session: Session, name: str, user_name: str) -> tuple[ApiClient, str]:
    """Register an API client for a user; returns the client and its secret (shown once)."""
    user = get_user(session, user_name)
    secret = secrets.token_urlsafe(32)
    client = ApiClient(
        client_id=secrets.token_urlsafe(12),
        name=name,
        user_name=user.name,
        secret_hash=_hash(secret),
        created_at=utcnow(),
    )
    session.add(client)
    session.flush()
    return client, secret


def list_clients(session: Session, user_name: str | None = None) -> list[ApiClient]:
    q = select(ApiClient).order_by(ApiClient.user_name, ApiClient.name)
    if user_name:
        q = q.where(ApiClient.user_name == user_name.upper())
    return list(session.scalars(q))


def remove_client(session: Session, client_id: str) -> None:
    client = session.get(ApiClient, client_id)
    if client is None:
        raise ClientNotFound(client_id)
    session.delete(client)
    session.flush()


def authenticate_client(session: Session, client_id: str, secret: str) -> ApiClient:
    client = session.get(ApiClient, client_id) if client_id else None
    if client is None:
        _verify_nothing(secret)
        raise BadCredentials("Invalid client credentials")
    if not _verify(secret, client.secret_hash):
        raise BadCredentials("Invalid client credentials")
    return client


def revoke_session(session: Session, claims: TokenClaims, max_age_s: int) -> None:
    """Refuse every token of this session from now on."""
    if session.get(RevokedSession, claims.sid) is None:
        expires = datetime.fromtimestamp(claims.first_issued_at + max_age_s, UTC).replace(tzinfo=None)
        session.add(RevokedSession(sid=claims.sid, expires_at=expires))
        session.flush()


def purge_revoked(session: Session) -> int:
    """Forget revocations of sessions whose tokens have all expired anyway."""
    result = session.execute(delete(RevokedSession).where(RevokedSession.expires_at < utcnow()))
    return result.rowcount if isinstance(result, CursorResult) else 0


def check_session(session: Session, claims: TokenClaims) -> User:
    """The user a verified token speaks for, unless the session was revoked or superseded."""
    user = session.get(User, claims.user)
    if user is None:
        raise TokenInvalid()
    if claims.first_issued_ms < _to_ms(user.tokens_valid_after):
        raise TokenInvalid("The access token was issued before a password change")
    if claims.client_id is not None and session.get(ApiClient, claims.client_id) is None:
        raise TokenInvalid()
    if session.get(RevokedSession, claims.sid) is not None:
        raise TokenInvalid("The access token has been revoked")
    return user
