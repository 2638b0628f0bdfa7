"""Table operations: grants in the metadata store, data in the user-data store."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tables import temporary
from tables.errors import TableExists, TableNotFound
from tables.frames import check_column_names, check_table_name, normalize, normalize_columns
from tables.models import TableGrant
from tables.store import TableDescription, UserDataStore, WriteMode
from tables.uploads import Upload

#: Grantee meaning every user.
PUBLIC = "PUBLIC"
TableScope = Literal["user", "all", "grant", "granted"]
TABLE_SCOPES: tuple[str, ...] = ("user", "all", "grant", "granted")


@dataclass(frozen=True)
class TableInfo:
    owner: str
    name: str
    #: Set in `grant` listings.
    grantee: str | None = None
    #: Dropped by the server when it expires, unless made permanent (`keep_table`).
    temporary: bool = False


def can_read(session: Session, caller: str, owner: str, table: str) -> bool:
    """Whether `caller` may read `owner.table` (own, or granted to the caller or PUBLIC)."""
    if owner == caller:
        return True
    return (
        session.scalar(
            select(TableGrant.grantee)
            .where(TableGrant.owner == owner, TableGrant.table_name == table, TableGrant.grantee.in_((caller, PUBLIC)))
            .limit(1)
        )
        is not None
    )


def readable_tables(session: Session, caller: str) -> list[tuple[str, str]]:
    """Every (owner, table) another user granted to the caller (own tables are always readable)."""
    rows = session.execute(
        select(TableGrant.owner, TableGrant.table_name)
        .where(TableGrant.grantee.in_((caller, PUBLIC)), TableGrant.owner != caller)
        .distinct()
    )
    return [(o, t) for o, t in rows]


def write_table(
    session: Session,
    store: UserDataStore,
    caller: str,
    name: str,
    data: pa.Table | Upload,
    mode: WriteMode = "create",
    *,
    expires_in_s: float | None = None,
) -> TableDescription:
    """Create, replace or append to a table in the caller's schema, all or nothing. An `Upload` is written chunk
    by chunk in one transaction, so memory holds one chunk and a bad row anywhere leaves the table as it was.
    With `expires_in_s` a table this write makes (created or replaced) is temporary (see `tables.temporary`)."""
    check_table_name(name)
    chunks: Iterable[pa.Table]
    if isinstance(data, Upload):
        check_column_names(data.schema.names)
        columns = normalize_columns(data.schema)
        chunks = (normalize(chunk)[0] for chunk in data.chunks())
    else:
        table, columns = normalize(data)
        chunks = [table]
    existed = store.exists(caller, name)
    if mode == "create" and existed:
        raise TableExists(name)
    store.write(caller, name, chunks, columns, mode)
    return after_write(session, store, caller, name, mode, existed, expires_in_s)


def after_write(
    session: Session,
    store: UserDataStore,
    caller: str,
    name: str,
    mode: WriteMode,
    existed: bool,
    expires_in_s: float | None,
) -> TableDescription:
    """Bookkeeping after a write of `caller.name`: grants of a replaced table given back, and whether the table is
    temporary: a table the write made is temporary when `expires_in_s` is set, else permanent; an append to an
    existing table leaves that as it was."""
    if mode == "replace":  # a replaced table is a new table to the database: give its grants back
        for grantee in session.scalars(
            select(TableGrant.grantee).where(TableGrant.owner == caller, TableGrant.table_name == name)
        ):
            store.grant_read(caller, name, grantee)
    if not (mode == "append" and existed):
        if expires_in_s is not None:
            temporary.mark(session, caller, name, expires_in_s)
        else:
            temporary.unmark(session, caller, name)
    desc = store.describe(caller, name)
    assert desc is not None
    return desc


def _resolve(
    session: Session, store: UserDataStore, caller: str, name: str, owner: str | None
) -> tuple[str, TableDescription]:
    check_table_name(name)
    owner = (owner or caller).upper()
    if not can_read(session, caller, owner, name):
        raise TableNotFound(name, owner if owner != caller else None)
    desc = store.describe(owner, name)
    if desc is None:
        raise TableNotFound(name, owner if owner != caller else None)
    return owner, desc


def describe_table(
    session: Session, store: UserDataStore, caller: str, name: str, owner: str | None = None
) -> TableDescription:
    return _resolve(session, store, caller, name, owner)[1]


def is_temporary(session: Session, owner: str, name: str) -> bool:
    return temporary.is_temporary(session, owner, name)


def keep_table(session: Session, store: UserDataStore, caller: str, name: str) -> TableDescription:
    """Make a table of the caller's permanent (a no-op for a permanent one). The row goes first: a sweep that
    holds it is waited for, and then the table is gone (TableNotFound)."""
    check_table_name(name)
    temporary.unmark(session, caller, name)
    desc = store.describe(caller, name)
    if desc is None:
        raise TableNotFound(name)
    return desc


def read_rows(
    session: Session, store: UserDataStore, caller: str, name: str, owner: str | None, offset: int, limit: int | None
) -> tuple[pa.Table, TableDescription]:
    """A page of a readable table, in insertion order."""
    owner, desc = _resolve(session, store, caller, name, owner)
    return store.read(owner, name, offset, limit), desc


def stream_table(
    session: Session, store: UserDataStore, caller: str, name: str, owner: str | None, batch_rows: int = 65_536
) -> tuple[TableDescription, Iterator[pa.RecordBatch]]:
    owner, desc = _resolve(session, store, caller, name, owner)
    return desc, store.stream(owner, name, batch_rows)


def list_tables(session: Session, store: UserDataStore, caller: str, scope: TableScope = "user") -> list[TableInfo]:
    if scope == "grant":
        rows = session.execute(
            select(TableGrant.table_name, TableGrant.grantee)
            .where(TableGrant.owner == caller)
            .order_by(TableGrant.table_name)
        )
        existing = set(store.list_tables(caller))
        listed = [(caller, t, g) for t, g in rows if t in existing]
        temp = temporary.temporary_among(session, [(o, t) for o, t, _ in listed])
        return [TableInfo(o, t, g, (o, t) in temp) for o, t, g in listed]
    found = [] if scope == "granted" else [(caller, t) for t in store.list_tables(caller)]
    if scope != "user":
        for owner, table in sorted(readable_tables(session, caller)):
            if store.describe(owner, table) is not None:
                found.append((owner, table))
    temp = temporary.temporary_among(session, found)
    return [TableInfo(o, t, temporary=(o, t) in temp) for o, t in found]


def drop_table(session: Session, store: UserDataStore, caller: str, name: str) -> None:
    check_table_name(name)
    if not store.drop(caller, name):
        raise TableNotFound(name)
    session.execute(delete(TableGrant).where(TableGrant.owner == caller, TableGrant.table_name == name))
    temporary.unmark(session, caller, name)


def grant(session: Session, store: UserDataStore, caller: str, name: str, grantee: str | None) -> None:
    """Let `grantee` (None = PUBLIC) read the caller's table."""
    check_table_name(name)
    if store.describe(caller, name) is None:
        raise TableNotFound(name)
    grantee = (grantee or PUBLIC).upper()
    if session.get(TableGrant, (caller, name, grantee)) is None:
        try:  # a concurrent identical grant may win the race: that is the same outcome
            with session.begin_nested():
                session.add(TableGrant(owner=caller, table_name=name, grantee=grantee))
        except IntegrityError:
            pass
    store.grant_read(caller, name, grantee)


def revoke(session: Session, store: UserDataStore, caller: str, name: str, grantee: str | None) -> None:
    check_table_name(name)
    if store.describe(caller, name) is None:
        raise TableNotFound(name)
    grantee = (grantee or PUBLIC).upper()
    session.execute(
        delete(TableGrant).where(
            TableGrant.owner == caller, TableGrant.table_name == name, TableGrant.grantee == grantee
        )
    )
    session.flush()
    store.revoke_read(caller, name, grantee)


def drop_owner(session: Session, store: UserDataStore, owner: str) -> None:
    """Forget a removed user: their schema and every table grant from or to them."""
    session.execute(delete(TableGrant).where(or_(TableGrant.owner == owner, TableGrant.grantee == owner)))
    temporary.forget_owner(session, owner)
    store.drop_schema(owner)
