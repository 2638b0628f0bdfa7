"""Materialize on SQLite: `INSERT INTO caller.table SELECT ... FROM (gated query)`, run by SQLite.

The connection is private and in memory, with the caller's schema file attached read-write and every other schema
the query reads attached read-only (`mode=ro`: the file cannot be written through it). Every statement that holds
the user's SQL runs under the read path's authorizer: reading exactly the gated tables, plus, for the INSERT,
inserting into the one table being made. The read path's limits, its deadline (a progress handler) and its refusal
of double-quoted strings hold too. pyqd's own statements (CREATE TABLE, DROP, RENAME of validated names) run with
no user SQL in them. It is all one transaction, taken at once (BEGIN IMMEDIATE): a failure leaves nothing.

SQLite keeps a type per value, so unless every result column is a stored column read through (whose type is
known), a first pass counts the kinds of values of each column (in SQL: one row comes back) to choose its type.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping

from tables.deadline import Deadline
from tables.errors import QueryRejected, QueryTimedOut, TableExists, TableNameClash
from tables.frames import SQL_TYPES, Column
from tables.gate import GatedQuery
from tables.result_types import Declared, OutputColumn, logical_from_values, plan_target
from tables.sqlite_query import PROGRESS_STEPS, authorizer, refuse_double_quoted_strings, set_limits
from tables.sqlite_store import _LOGICAL, BUSY_TIMEOUT_S, SqliteStore, quote
from tables.store import WriteMode

#: Bit of each kind of value in the first pass's count (`sum(DISTINCT ...)` of distinct bits is their OR).
_KIND_BITS = {"integer": 1, "real": 2, "text": 4, "blob": 8}
#: How each logical type is stored: the CAST applied to the query's values on their way in.
_CASTS = {
    "integer": "INTEGER",
    "boolean": "INTEGER",
    "float": "REAL",
    "text": "TEXT",
    "timestamp": "TEXT",
    "timestamptz": "TEXT",
    "date": "TEXT",
    "binary": None,
}
#: The derived table the query is read from.
_Q = '"PYQD_Q"'


def materialize(
    store: SqliteStore,
    gated: GatedQuery,
    caller: str,
    name: str,
    mode: WriteMode,
    deadline: Deadline,
    declared: Mapping[str, Declared],
) -> int:
    """Write the query's rows into `caller.name` (created, replaced or appended to); the rows written."""
    deadline.check()
    store.ensure_schema(caller)
    owners = {ref.owner for ref in gated.tables} | {caller}
    conn = sqlite3.connect(
        "file::memory:", uri=True, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
    )
    try:
        set_limits(conn)
        for owner in sorted(owners):
            access = "rw" if owner == caller else "ro"
            conn.execute("ATTACH DATABASE ? AS ?", (f"{store.path(owner).resolve().as_uri()}?mode={access}", owner))
        refuse_double_quoted_strings(conn)
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline.at), PROGRESS_STEPS)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = _write(conn, gated, caller, name, mode, declared)
                conn.execute("COMMIT")
            finally:
                conn.set_authorizer(None)  # the authorizer of the user's SQL would refuse the ROLLBACK
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise QueryTimedOut(deadline.seconds) from None
            if "not authorized" in str(e):
                raise QueryRejected("The query may only read the tables it names that the caller may read") from None
            raise QueryRejected(f"The query failed: {e}") from None
        except sqlite3.DatabaseError as e:
            raise QueryRejected(f"The query failed: {e}") from None
        return rows
    finally:
        conn.close()


def _write(
    conn: sqlite3.Connection,
    gated: GatedQuery,
    caller: str,
    name: str,
    mode: WriteMode,
    declared: Mapping[str, Declared],
) -> int:
    schema = quote(caller)
    clash = conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE AND name <> ?",
        (name, name),
    ).fetchone()
    if clash is not None:
        raise TableNameClash(name, clash[0])
    existing = _columns(conn, caller, name)
    if mode == "create" and existing:  # checked under the lock: racing creates cannot both win
        raise TableExists(name)
    reads = {(t.owner, t.name) for t in gated.tables}
    query = gated.sql("sqlite")
    conn.set_authorizer(authorizer(reads))
    columns = _result_columns(conn, gated, query, declared)
    plan = plan_target(columns, existing, mode, name)
    appending, types, target = plan.appending, plan.types, plan.name
    conn.set_authorizer(None)
    if not appending:
        ddl = ", ".join(f"{quote(c.name)} {SQL_TYPES[types[c.name]]['sqlite']}" for c in columns)
        conn.execute(f"CREATE TABLE {schema}.{quote(target)} ({ddl})")
    names = ", ".join(quote(c.name) for c in columns)
    values = ", ".join(_cast(f"{_Q}.{quote(c.name)}", types[c.name]) for c in columns)
    conn.set_authorizer(authorizer(reads, insert_into=(caller, target)))
    cur = conn.execute(f"INSERT INTO {schema}.{quote(target)} ({names}) SELECT {values} FROM ({query}) AS {_Q}")
    rows = cur.rowcount
    conn.set_authorizer(None)
    if target != name:
        conn.execute(f"DROP TABLE {schema}.{quote(name)}")
        conn.execute(f"ALTER TABLE {schema}.{quote(target)} RENAME TO {quote(name)}")
    return rows


def _result_columns(
    conn: sqlite3.Connection, gated: GatedQuery, query: str, declared: Mapping[str, Declared]
) -> list[OutputColumn]:
    """The query's column names (from the query itself with LIMIT 0: no row is made) and types."""
    probe = GatedQuery(gated.tree.limit(0, copy=True), gated.tables).sql("sqlite")
    names = [d[0] for d in conn.execute(probe).description]
    if len(set(names)) != len(names):
        raise QueryRejected(f"The query gives two columns of one name: {names}")
    known = [declared.get(n) for n in names]
    if all(d is not None and d.stored and d.type is not None for d in known):
        return [OutputColumn(n, d.type) for n, d in zip(names, known, strict=True) if d is not None]
    kinds = ", ".join(
        "sum(DISTINCT CASE typeof({c}) {whens} ELSE 0 END)".format(
            c=f"{_Q}.{quote(n)}", whens=" ".join(f"WHEN '{k}' THEN {bit}" for k, bit in _KIND_BITS.items())
        )
        for n in names
    )
    (row,) = conn.execute(f"SELECT {kinds} FROM ({query}) AS {_Q}").fetchall()
    columns = []
    for n, d, bits in zip(names, known, row, strict=True):
        present = {k for k, bit in _KIND_BITS.items() if int(bits or 0) & bit}
        columns.append(OutputColumn(n, logical_from_values(present, d.type if d else None)))
    return columns


def _columns(conn: sqlite3.Connection, owner: str, table: str) -> list[Column]:
    schema = quote(owner)
    exact = conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if exact is None:
        return []
    rows = conn.execute(f"PRAGMA {schema}.table_info({quote(table)})").fetchall()
    return [Column(r[1], _LOGICAL.get(str(r[2]).upper(), "text")) for r in rows]


def _cast(value: str, logical: str) -> str:
    cast = _CASTS[logical]
    return value if cast is None else f"CAST({value} AS {cast})"
