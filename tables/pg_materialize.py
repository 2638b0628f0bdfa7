"""Materialize on PostgreSQL: `INSERT INTO caller.table SELECT ... FROM (gated query)`, run by PostgreSQL.

The table is made by pyqd's own database user (so it is owned like every other user table), with pyqd's column
types for the types the query gives. The user's SQL runs only as the caller's role (with per-user roles on), which
may read the caller's tables and those granted to it and, for this one statement, insert into the one table being
made: the grant is given and taken back inside the transaction, so no one ever sees it. The statement timeout is
the time left before the deadline, and computed rows pass the read path's row-size check. It is all one
transaction: a failure leaves nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from tables.deadline import Deadline
from tables.errors import QueryRejected, QueryTimedOut, TableExists
from tables.frames import SQL_TYPES
from tables.gate import GatedQuery
from tables.pg_query import _TOO_LARGE, MAX_ROW_BYTES, sql_for
from tables.pg_store import PostgresStore
from tables.result_types import OutputColumn, plan_target
from tables.store import WriteMode

#: PostgreSQL type OID → logical type; any other type is stored as text.
_OID_TYPES = {
    16: "boolean",
    17: "binary",
    20: "integer",
    21: "integer",
    23: "integer",
    700: "float",
    701: "float",
    1700: "float",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
}
#: The derived table the query is read from.
_Q = sql.Identifier("PYQD_Q")


def materialize(
    store: PostgresStore, gated: GatedQuery, caller: str, name: str, mode: WriteMode, deadline: Deadline
) -> int:
    """Write the query's rows into `caller.name` (created, replaced or appended to); the rows written."""
    deadline.check()
    store.ensure_schema(caller)
    role = store.role_for(caller)
    try:
        with store._conn() as conn:  # noqa: SLF001 - the store's own connection helper, in its package
            return _write(store, conn, gated, caller, name, mode, role, deadline)
    except psycopg.errors.QueryCanceled:
        raise QueryTimedOut(deadline.seconds) from None
    except psycopg.errors.InsufficientPrivilege:
        raise QueryRejected("The query reads a table the caller may not read") from None
    except psycopg.Error as e:
        raise QueryRejected(_message(e)) from None


def _write(
    store: PostgresStore,
    conn: Any,
    gated: GatedQuery,
    caller: str,
    name: str,
    mode: WriteMode,
    role: str | None,
    deadline: Deadline,
) -> int:
    # Serialise writers of one table (as uploads do); the lock ends with the transaction.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{caller}.{name}",))
    existing = store._columns(conn, caller, name)  # noqa: SLF001
    if mode == "create" and existing:  # checked under the lock: racing creates cannot both win
        raise TableExists(name)
    probe = GatedQuery(gated.tree.limit(0, copy=True), gated.tables).sql("postgres")
    with _as_caller(conn, role, deadline):
        description = conn.execute(probe).description
    columns = [OutputColumn(d.name, _OID_TYPES.get(d.type_code, "text")) for d in description]
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise QueryRejected(f"The query gives two columns of one name: {names}")
    plan = plan_target(columns, existing, mode, name)
    appending, types, target_name = plan.appending, plan.types, plan.name
    target = sql.Identifier(caller, target_name)
    if not appending:
        ddl = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(SQL_TYPES[types[c.name]]["postgresql"]))
            for c in columns
        )
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(target, ddl))
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM ({}) AS {}").format(
        target,
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
        sql.SQL(", ").join(
            sql.SQL("CAST({}.{} AS {})").format(
                _Q, sql.Identifier(c.name), sql.SQL(SQL_TYPES[types[c.name]]["postgresql"])
            )
            for c in columns
        ),
        # the gate's rendering of the checked query (no placeholders: it is executed without parameters)
        sql.SQL(sql_for(gated)),  # type: ignore[arg-type]
        _Q,
    )
    if role:
        conn.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(target, sql.Identifier(role)))
    with _as_caller(conn, role, deadline):
        rows = conn.execute(insert).rowcount
    if role:
        conn.execute(sql.SQL("REVOKE INSERT ON {} FROM {}").format(target, sql.Identifier(role)))
    if target_name != name:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(caller, name)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(target, sql.Identifier(name)))
    return int(rows)


@contextlib.contextmanager
def _as_caller(conn: Any, role: str | None, deadline: Deadline) -> Iterator[None]:
    """Statements of the block run as the caller's role, stopped at the deadline."""
    deadline.check()
    timeout_ms = max(1, int(deadline.remaining() * 1000))
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms)))
    if role:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    yield
    if role:
        conn.execute("RESET ROLE")
    conn.execute("SET LOCAL statement_timeout = 0")


def _message(e: psycopg.Error) -> str:
    text = str(e)
    if f'"{_TOO_LARGE}:' in text:  # the row-size check's own error (the query text may be quoted in any error)
        return f"The query made a row larger than {MAX_ROW_BYTES} bytes"
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) or (text.strip().splitlines() or [type(e).__name__])[0]
    return f"The query failed: {str(primary)[:300]}"
