"""Materialize: a table of the caller's made from a gated, read-only query (`oml.DataFrame.materialize`, the
tables of dbt-oracle's Python models), written by the database itself, never through Python.

The query passes the SQL gate exactly as a read does (one read-only query, only tables the caller may read), and
the database runs it as a read does (the caller's role on PostgreSQL, an authorizer that allows reading exactly
the gated tables on SQLite), with one more right: inserting into the one table being made, in the caller's own
schema. The whole write is one transaction: a failed or stopped materialize leaves no table, or the table as it
was.

Column types: PostgreSQL says what the query gives; SQLite keeps a type per value, so a first pass over the query
(in SQL: one row of counts comes back) finds the kinds of values each column holds, and the query's parse tree adds
what values cannot tell (a boolean or timestamp column read through). The table gets pyqd's usual column types
(`tables.frames.SQL_TYPES`), as an upload would.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tables import pg_materialize, sqlite_materialize
from tables.deadline import Deadline
from tables.errors import TableExists
from tables.frames import check_table_name
from tables.pg_store import PostgresStore
from tables.query import gate_query
from tables.result_types import check_named, declared_types
from tables.service import after_write
from tables.sqlite_store import SqliteStore
from tables.store import TableDescription, UserDataStore, WriteMode


def materialize_table(
    session: Session,
    store: UserDataStore,
    caller: str,
    name: str,
    sql: str,
    mode: WriteMode = "create",
    *,
    timeout_s: float,
    expires_in_s: float | None = None,
) -> TableDescription:
    """Create (or replace, or append to) table `name` of the caller's from the rows of `sql`, all or nothing.
    QueryRejected when the gate refuses the query (a table the caller may not read included), TableExists when
    creating over an existing table, QueryTimedOut past `timeout_s`."""
    check_table_name(name)
    gated = gate_query(session, store, caller, sql)
    check_named(gated.tree)
    existed = store.exists(caller, name)
    if mode == "create" and existed:
        raise TableExists(name)
    deadline = Deadline(timeout_s)
    declared = declared_types(store, gated)
    if isinstance(store, SqliteStore):
        sqlite_materialize.materialize(store, gated, caller, name, mode, deadline, declared)
    elif isinstance(store, PostgresStore):
        pg_materialize.materialize(store, gated, caller, name, mode, deadline)
    else:
        raise TypeError(f"no materialize for {type(store).__name__}")
    return after_write(session, store, caller, name, mode, existed, expires_in_s)
