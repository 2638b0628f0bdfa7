"""User tables on PostgreSQL: one schema per user, named exactly like the user (upper-case)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql
from sqlalchemy import Engine

from tables.errors import TableExists
from tables.frames import ARROW_TYPES, SQL_TYPES, Column
from tables.pg_query import AdbcPool
from tables.store import (
    TableDescription,
    WriteMode,
    chunks_of,
    column_values,
    empty_batch,
    rows_to_batch,
)

log = logging.getLogger("pyqd.tables")

#: information_schema data_type → logical type.
_LOGICAL = {
    "bigint": "integer",
    "integer": "integer",
    "smallint": "integer",
    "double precision": "float",
    "real": "float",
    "numeric": "float",
    "boolean": "boolean",
    "text": "text",
    "character varying": "text",
    "character": "text",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "date": "date",
    "bytea": "binary",
}


def _ident(*parts: str) -> sql.Composable:
    return sql.Identifier(*parts)


def default_role_prefix(database: str) -> str:
    """Roles are cluster-wide: tie them to the database, so two pyqd databases on one server never clash."""
    return "pyqd_" + hashlib.sha1(database.encode()).hexdigest()[:8]


class PostgresStore:
    """With `roles`, every user has a NOLOGIN role that may read its own schema and what it was granted; input
    queries run as that role (the second wall of the SQL gate). Needs CREATEROLE (or superuser); without it the
    store works, and the gate alone guards table access."""

    kind = "postgresql"

    def __init__(self, engine: Engine, *, roles: bool = True, role_prefix: str | None = None) -> None:
        self.engine = engine
        self.role_prefix = role_prefix or default_role_prefix(engine.url.database or "")
        self.roles = roles and self._can_manage_roles()
        #: ADBC connections that read input queries as Arrow.
        self.adbc_pool = AdbcPool(engine)

    def _can_manage_roles(self) -> bool:
        with self._conn() as conn:
            row = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
        if not (row and row[0]):
            log.warning("the database user cannot create roles: table grants are enforced by the SQL gate only")
            return False
        return True

    def role_for(self, user: str) -> str | None:
        """The role input queries of `user` run as (None when roles are off)."""
        return f"{self.role_prefix}_{user.lower()}" if self.roles else None

    @property
    def public_role(self) -> str:
        return f"{self.role_prefix}_public"

    def _ensure_role(self, conn, role: str) -> None:  # noqa: ANN001
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(role)))
            except psycopg.errors.DuplicateObject:  # created meanwhile by another server
                pass
        is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if not is_super:  # SET ROLE needs membership
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(_ident(role)))

    @contextlib.contextmanager
    def _conn(self) -> Iterator:
        """A raw psycopg connection from the pool; commits on success, rolls back on error."""
        raw = self.engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert conn is not None
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            raw.close()

    def ensure_schema(self, owner: str) -> None:
        with self._conn() as conn:
            # Concurrent GRANTs on one schema fail with "tuple concurrently updated": one at a time per owner.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pyqd.schema.{owner}",))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(owner)))
            role = self.role_for(owner)
            if role is None:
                return
            self._ensure_role(conn, self.public_role)
            self._ensure_role(conn, role)
            schema = _ident(owner)
            conn.execute(sql.SQL("GRANT {} TO {}").format(_ident(self.public_role), _ident(role)))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, _ident(role)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, _ident(role)))
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                    schema, _ident(role)
                )
            )

    def drop_schema(self, owner: str) -> None:
        with self._conn() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(owner)))
            role = self.role_for(owner)
            if role and conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(_ident(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(_ident(role)))

    def list_tables(self, owner: str) -> list[str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name",
                (owner,),
            ).fetchall()
        return [r[0] for r in rows]

    def _columns(self, conn, owner: str, table: str) -> list[Column]:  # noqa: ANN001
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (owner, table),
        ).fetchall()
        return [Column(name, _LOGICAL.get(dtype, "text")) for name, dtype in rows]

    def exists(self, owner: str, table: str) -> bool:
        """Whether the table exists, without counting its rows."""
        with self._conn() as conn:
            return bool(self._columns(conn, owner, table))

    def describe(self, owner: str, table: str) -> TableDescription | None:
        with self._conn() as conn:
            columns = self._columns(conn, owner, table)
            if not columns:
                return None
            (count,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(owner, table))).fetchone()
        return TableDescription(owner, table, columns, [SQL_TYPES[c.type]["postgresql"] for c in columns], int(count))

    def write(
        self, owner: str, table: str, data: pa.Table | Iterable[pa.Table], columns: list[Column], mode: WriteMode
    ) -> int:
        """Create, replace or append in one transaction: on any error (a bad chunk too) the table is as it was."""
        self.ensure_schema(owner)
        target = _ident(owner, table)
        rows = 0
        with self._conn() as conn:
            # Serialise writers of one table; the lock ends with the transaction.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{owner}.{table}",))
            existing = self._columns(conn, owner, table)
            if mode == "create" and existing:  # checked under the lock: racing creates cannot both win
                raise TableExists(table)
            appending = mode == "append" and bool(existing)
            if appending:
                columns = existing
            else:
                if existing:
                    conn.execute(sql.SQL("DROP TABLE {}").format(target))
                ddl = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(_ident(c.name), sql.SQL(SQL_TYPES[c.type]["postgresql"])) for c in columns
                )
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(target, ddl))
            names = sql.SQL(", ").join(_ident(c.name) for c in columns)
            chunks = chunks_of(data, existing if appending else None)
            if any(c.type == "binary" for c in columns):
                marks = sql.SQL(", ").join(sql.Placeholder() for _ in columns)
                insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(target, names, marks)
                with conn.cursor() as cur:
                    for chunk in chunks:
                        cur.executemany(insert, list(zip(*column_values(chunk, columns, sqlite=False), strict=True)))
                        rows += chunk.num_rows
            else:
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(target, names)
                options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    for chunk in chunks:
                        buf = io.BytesIO()
                        pa_csv.write_csv(chunk, buf, options)
                        copy.write(buf.getbuffer())
                        rows += chunk.num_rows
        return rows

    def drop(self, owner: str, table: str) -> bool:
        with self._conn() as conn:
            if not self._columns(conn, owner, table):
                return False
            conn.execute(sql.SQL("DROP TABLE {}").format(_ident(owner, table)))
        return True

    def read(self, owner: str, table: str, offset: int, limit: int | None) -> pa.Table:
        with self._conn() as conn:
            columns = self._columns(conn, owner, table)
            q = sql.SQL("SELECT * FROM {} ORDER BY ctid LIMIT %s OFFSET %s").format(_ident(owner, table))
            rows = conn.execute(q, (limit, offset)).fetchall()
        return pa.Table.from_batches([_batch(rows, columns)])

    def stream(self, owner: str, table: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        with self._conn() as conn:
            columns = self._columns(conn, owner, table)
            with conn.cursor(name="pyqd_stream") as cur:
                cur.execute(sql.SQL("SELECT * FROM {} ORDER BY ctid").format(_ident(owner, table)))
                while rows := cur.fetchmany(batch_rows):
                    yield _batch(rows, columns)

    def _grantee_role(self, grantee: str) -> str | None:
        return self.public_role if grantee == "PUBLIC" else self.role_for(grantee)

    def grant_read(self, owner: str, table: str, grantee: str) -> None:
        """Let the grantee's role (or every user's, for PUBLIC) read the table."""
        role = self._grantee_role(grantee)
        if role is None:
            return
        with self._conn() as conn:
            self._ensure_role(conn, role)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_ident(owner), _ident(role)))
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(_ident(owner, table), _ident(role)))

    def revoke_read(self, owner: str, table: str, grantee: str) -> None:
        role = self._grantee_role(grantee)
        if role is None:
            return
        with self._conn() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("REVOKE SELECT ON {} FROM {}").format(_ident(owner, table), _ident(role)))


def _batch(rows: list[tuple], columns: list[Column]) -> pa.RecordBatch:
    if not rows:
        return empty_batch(columns)
    return rows_to_batch(rows, [c.name for c in columns], [ARROW_TYPES[c.type] for c in columns])
