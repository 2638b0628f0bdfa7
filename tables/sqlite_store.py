"""User tables on SQLite: one database file per schema under `<data-dir>/schemas/`."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa

from tables.errors import TableExists, TableNameClash
from tables.frames import ARROW_TYPES, SQL_TYPES, Column
from tables.store import (
    TableDescription,
    WriteMode,
    chunks_of,
    column_values,
    empty_batch,
    rows_to_batch,
)

#: Declared SQL type (upper-case) → logical type, for reading tables back with their types.
_LOGICAL = {v["sqlite"]: k for k, v in SQL_TYPES.items()}
#: Seconds a writer waits for another writer of the same schema file.
BUSY_TIMEOUT_S = 30


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteStore:
    kind = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, owner: str) -> Path:
        return self.root / f"{owner}.db"

    def connect(self, owner: str, *, readonly: bool = True) -> sqlite3.Connection:
        """A connection to the owner's schema file; read-only ones cannot write even by mistake."""
        path = self.path(owner)
        if readonly:
            conn = sqlite3.connect(
                f"{path.as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only = ON")
        else:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
        return conn

    def ensure_schema(self, owner: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.path(owner).exists():
            self.connect(owner, readonly=False).close()

    def drop_schema(self, owner: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path(owner)}{suffix}").unlink()

    def list_tables(self, owner: str) -> list[str]:
        if not self.path(owner).exists():
            return []
        with contextlib.closing(self.connect(owner)) as conn:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
        return [r[0] for r in rows]

    def _columns(self, conn: sqlite3.Connection, table: str) -> list[Column]:
        # table_xinfo's name match is case-insensitive, so check the exact name first.
        exact = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if exact is None:
            return []
        rows = conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()
        return [Column(r[1], _LOGICAL.get(str(r[2]).upper(), "text")) for r in rows]

    def exists(self, owner: str, table: str) -> bool:
        """Whether the table exists (its exact name), without counting its rows."""
        return bool(self.columns(owner, table))

    def columns(self, owner: str, table: str) -> list[Column]:
        """The table's columns (none when there is no such table), without counting its rows."""
        if not self.path(owner).exists():
            return []
        with contextlib.closing(self.connect(owner)) as conn:
            return self._columns(conn, table)

    def describe(self, owner: str, table: str) -> TableDescription | None:
        if not self.path(owner).exists():
            return None
        with contextlib.closing(self.connect(owner)) as conn:
            columns = self._columns(conn, table)
            if not columns:
                return None
            (count,) = conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()
        return TableDescription(owner, table, columns, [SQL_TYPES[c.type]["sqlite"] for c in columns], int(count))

    def write(
        self, owner: str, table: str, data: pa.Table | Iterable[pa.Table], columns: list[Column], mode: WriteMode
    ) -> int:
        """Create, replace or append in one transaction: on any error (a bad chunk too) the table is as it was."""
        self.ensure_schema(owner)
        rows = 0
        with contextlib.closing(self.connect(owner, readonly=False)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # SQLite table names ignore case: "Iris" would collide with an existing "IRIS".
                clash = conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE AND name <> ?",
                    (table, table),
                ).fetchone()
                if clash is not None:
                    raise TableNameClash(table, clash[0])
                existing = self._columns(conn, table)
                if mode == "create" and existing:  # checked under the lock: racing creates cannot both win
                    raise TableExists(table)
                appending = mode == "append" and bool(existing)
                if appending:
                    columns = existing
                else:
                    if existing:
                        conn.execute(f"DROP TABLE {quote(table)}")
                    ddl = ", ".join(f"{quote(c.name)} {SQL_TYPES[c.type]['sqlite']}" for c in columns)
                    conn.execute(f"CREATE TABLE {quote(table)} ({ddl})")
                marks = ", ".join("?" for _ in columns)
                names = ", ".join(quote(c.name) for c in columns)
                insert = f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})"
                for chunk in chunks_of(data, existing if appending else None):
                    values = column_values(chunk, columns, sqlite=True)
                    conn.executemany(insert, zip(*values, strict=True))
                    rows += chunk.num_rows
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return rows

    def drop(self, owner: str, table: str) -> bool:
        if not self.path(owner).exists():
            return False
        with contextlib.closing(self.connect(owner, readonly=False)) as conn:
            if not self._columns(conn, table):
                return False
            conn.execute(f"DROP TABLE {quote(table)}")
        return True

    def read(self, owner: str, table: str, offset: int, limit: int | None) -> pa.Table:
        with contextlib.closing(self.connect(owner)) as conn:
            columns = self._columns(conn, table)
            sql = f"SELECT * FROM {quote(table)} ORDER BY rowid LIMIT ? OFFSET ?"
            rows = conn.execute(sql, (-1 if limit is None else limit, offset)).fetchall()
        return pa.Table.from_batches([_batch(rows, columns)])

    def stream(self, owner: str, table: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        with contextlib.closing(self.connect(owner)) as conn:
            columns = self._columns(conn, table)
            cur = conn.execute(f"SELECT * FROM {quote(table)} ORDER BY rowid")
            while rows := cur.fetchmany(batch_rows):
                yield _batch(rows, columns)

    # SQLite has no grants: the SQL gate and the authorizer enforce them when reading.
    def grant_read(self, owner: str, table: str, grantee: str) -> None:
        return None

    def revoke_read(self, owner: str, table: str, grantee: str) -> None:
        return None


def _batch(rows: list[tuple], columns: list[Column]) -> pa.RecordBatch:
    if not rows:
        return empty_batch(columns)
    return rows_to_batch(rows, [c.name for c in columns], [ARROW_TYPES[c.type] for c in columns])
