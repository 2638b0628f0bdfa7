"""Temporary tables (`oml.push`): which tables of a schema go away on their own, and when.

A temporary table is an ordinary table of its owner's schema plus a row in `pyqd_temp_tables` with the instant it
expires. Clients drop their temporary tables when they disconnect; the server drops the ones left behind (a client
that crashed) once they expire (`sweep`), unless they were made permanent first (`keep`, which deletes the row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tables.models import TableGrant, TemporaryTable
from tables.store import UserDataStore

#: Expired tables dropped per sweep (the next sweep takes the rest).
SWEEP_BATCH = 500


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def mark(session: Session, owner: str, name: str, expires_in_s: float) -> None:
    """Make `owner.name` temporary, expiring `expires_in_s` seconds from now (from now again if it already was)."""
    expires_at = utcnow() + timedelta(seconds=expires_in_s)
    row = session.get(TemporaryTable, (owner, name))
    if row is not None:
        row.expires_at = expires_at
        session.flush()
        return
    try:  # a concurrent mark of the same table may win the race: then update its row
        with session.begin_nested():
            session.add(TemporaryTable(owner=owner, table_name=name, expires_at=expires_at))
    except IntegrityError:
        row = session.get(TemporaryTable, (owner, name))
        if row is not None:
            row.expires_at = expires_at
            session.flush()


def unmark(session: Session, owner: str, name: str) -> bool:
    """Make `owner.name` permanent; whether it was temporary."""
    deleted = session.execute(
        delete(TemporaryTable).where(TemporaryTable.owner == owner, TemporaryTable.table_name == name)
    )
    session.flush()
    return bool(getattr(deleted, "rowcount", 0))


def is_temporary(session: Session, owner: str, name: str) -> bool:
    return session.get(TemporaryTable, (owner, name)) is not None


def temporary_among(session: Session, tables: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (owner, table) pairs are temporary."""
    pairs = list(tables)
    if not pairs:
        return set()
    owners = sorted({o for o, _ in pairs})
    rows = session.execute(
        select(TemporaryTable.owner, TemporaryTable.table_name).where(TemporaryTable.owner.in_(owners))
    )
    wanted = set(pairs)
    return {(o, t) for o, t in rows if (o, t) in wanted}


def forget_owner(session: Session, owner: str) -> None:
    session.execute(delete(TemporaryTable).where(TemporaryTable.owner == owner))
    session.flush()


def sweep(
    write_session: Callable[[], AbstractContextManager[Session]],
    store: UserDataStore,
    now: datetime | None = None,
) -> int:
    """Drop the temporary tables that expired before `now` (with their grants); how many were dropped.

    Each table goes in a metadata transaction of its own that first deletes its row, on condition that it is still
    expired: a table made permanent (or pushed again) meanwhile is left alone, and of several servers sweeping at
    once only one drops it. The row stays locked until the table is gone, so a `keep` racing the sweep waits and
    then finds no table, rather than answering for a table about to vanish."""
    now = now or utcnow()
    with write_session() as session:
        due = session.execute(
            select(TemporaryTable.owner, TemporaryTable.table_name)
            .where(TemporaryTable.expires_at < now)
            .order_by(TemporaryTable.expires_at)
            .limit(SWEEP_BATCH)
        ).all()
    dropped = 0
    for owner, name in due:
        with write_session() as session:
            claimed = session.execute(
                delete(TemporaryTable).where(
                    TemporaryTable.owner == owner,
                    TemporaryTable.table_name == name,
                    TemporaryTable.expires_at < now,
                )
            )
            if not getattr(claimed, "rowcount", 0):
                continue
            session.execute(delete(TableGrant).where(TableGrant.owner == owner, TableGrant.table_name == name))
            if store.drop(owner, name):
                dropped += 1
    return dropped
