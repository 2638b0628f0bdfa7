"""Running a gated query on SQLite, second wall: a private in-memory connection with only the schemas the
query reads attached read-only and `query_only` on.

Plain scans of one table of the caller's own (`tables.scan`) go through ADBC (Arrow straight from C, ~6x
faster): their cost is that of the scan, and the deadline is checked between batches. Every other query goes
through `sqlite3`, where an authorizer allows reading exactly the gated tables, a progress handler stops the
query at its deadline, no string or blob may grow past MAX_VALUE_BYTES, batches are cut at BATCH_BYTES, and
double-quoted names never fall back to string literals (SQLITE_DBCONFIG_DQS_DML off)."""

from __future__ import annotations

import ctypes
import os
import sqlite3
import sys
import time
from collections.abc import Iterator

import pyarrow as pa

from tables.deadline import Deadline
from tables.errors import QueryRejected, QueryTimedOut
from tables.gate import GatedQuery
from tables.store import rows_to_batch

#: SQLite virtual-machine steps between deadline checks.
PROGRESS_STEPS = 10_000
#: Longest string or blob a query may read or make, bytes (SQLITE_LIMIT_LENGTH; SQLite's default is 1 GB).
MAX_VALUE_BYTES = 4 * 1024 * 1024
#: Longest LIKE/GLOB pattern, characters (SQLITE_LIMIT_LIKE_PATTERN_LENGTH; matching is not interruptible).
MAX_LIKE_PATTERN = 200
#: Bytes of text and blobs in one batch before it is handed on early (the sqlite3 path).
BATCH_BYTES = 64 * 1024 * 1024
#: Rows fetched at a time while a batch is filled.
FETCH_ROWS = 1024
#: Most columns a query may produce (Oracle's own limit for a table).
MAX_COLUMNS = 1000
#: Fewest rows in a batch of a plain scan, however wide its rows look.
MIN_SCAN_BATCH_ROWS = 16
#: sqlite3_db_config verb that turns double-quoted string literals in DML on or off.
SQLITE_DBCONFIG_DQS_DML = 1013
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)
#: SQLite functions a query must not call even if the gate let the name through.
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "sqlite_offset"}


def authorizer(allowed: set[tuple[str, str]], insert_into: tuple[str, str] | None = None):  # noqa: ANN201
    """Allow reading exactly the (schema, table) pairs `allowed` (and, for a materialize, inserting into the one
    table `insert_into`), selecting, and calling functions but the denied ones; deny everything else."""

    def check(action: int, arg1: str | None, arg2: str | None, db: str | None, _trigger: str | None) -> int:
        if action == sqlite3.SQLITE_READ:
            return sqlite3.SQLITE_OK if (db, arg1) in allowed else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_INSERT:
            return sqlite3.SQLITE_OK if insert_into is not None and (db, arg1) == insert_into else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        if action in _ALLOWED_ACTIONS or action == _RECURSIVE:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return check


def stream(
    paths: dict[str, str], gated: GatedQuery, caller: str, batch_rows: int, deadline: Deadline
) -> Iterator[pa.RecordBatch]:
    """Record batches of the query's rows; `paths` maps each owner the query reads to its schema file."""
    if gated.plain_scan_of(caller):
        return _stream_adbc(paths, gated, _scan_batch_rows(paths, gated, batch_rows), deadline)
    return _stream_sqlite3(paths, gated, batch_rows, deadline)


def _scan_batch_rows(paths: dict[str, str], gated: GatedQuery, batch_rows: int) -> int:
    """Rows per ADBC batch so that a batch holds about BATCH_BYTES: the schema file's size over the table's rows
    overestimates a row's width (other tables count too), which only makes batches smaller."""
    (ref,) = gated.tables
    rows = gated.row_counts.get(ref, 0)
    try:
        file_bytes = os.path.getsize(paths[ref.owner])
    except OSError:
        return MIN_SCAN_BATCH_ROWS
    row_bytes = max(1, file_bytes // max(1, rows))
    return max(MIN_SCAN_BATCH_ROWS, min(batch_rows, BATCH_BYTES // row_bytes))


def _uri(path: str) -> str:
    return f"file:{path}?mode=ro"


def _stream_adbc(
    paths: dict[str, str], gated: GatedQuery, batch_rows: int, deadline: Deadline
) -> Iterator[pa.RecordBatch]:
    import adbc_driver_manager
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    deadline.check()
    conn = adbc_sqlite.connect("file::memory:")
    try:
        cur = conn.cursor()
        for owner, path in paths.items():
            cur.execute("ATTACH DATABASE ? AS ?", (_uri(path), owner))
        cur.execute("PRAGMA query_only = ON")
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        try:
            cur.execute(gated.sql("sqlite"))
            reader = cur.fetch_record_batch()
            empty = True
            for batch in reader:
                deadline.check()  # a plain scan's batch costs a bounded scan: stopping between batches suffices
                empty = False
                yield batch
            if empty:
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        except adbc_driver_manager.Error as e:
            raise QueryRejected(f"The input query failed: {_adbc_message(e)}") from None
    finally:
        conn.close()


def _adbc_message(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(": ", 1)[-1][:300]


def _stream_sqlite3(
    paths: dict[str, str], gated: GatedQuery, batch_rows: int, deadline: Deadline
) -> Iterator[pa.RecordBatch]:
    deadline.check()
    conn = sqlite3.connect("file::memory:", uri=True, check_same_thread=False, isolation_level=None)
    try:
        set_limits(conn)
        for owner, path in paths.items():
            conn.execute("ATTACH DATABASE ? AS ?", (_uri(path), owner))
        conn.execute("PRAGMA query_only = ON")
        refuse_double_quoted_strings(conn)
        conn.set_authorizer(authorizer({(t.owner, t.name) for t in gated.tables}))
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline.at), PROGRESS_STEPS)
        try:
            cur = conn.execute(gated.sql("sqlite"))
            names = [d[0] for d in cur.description]
            first = True
            for rows in _batches(cur, batch_rows):
                first = False
                yield rows_to_batch(rows, names, [None] * len(names))
            if first:  # no rows: still tell the columns
                yield rows_to_batch([], names, [pa.null()] * len(names))
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise QueryTimedOut(deadline.seconds) from None
            raise QueryRejected(f"The input query failed: {e}") from None
        except sqlite3.DataError as e:
            if "too big" in str(e):
                raise QueryRejected(f"The input query made or read a value over {MAX_VALUE_BYTES} bytes") from None
            raise QueryRejected(f"The input query failed: {e}") from None
        except sqlite3.DatabaseError as e:
            raise QueryRejected(f"The input query failed: {e}") from None
    finally:
        conn.close()


def set_limits(conn: sqlite3.Connection) -> None:
    """The limits every connection that runs a user's query has (value sizes, LIKE patterns, columns)."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_LIKE_PATTERN)
    conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)


def _batches(cur: sqlite3.Cursor, batch_rows: int) -> Iterator[list[tuple]]:
    """Lists of at most `batch_rows` rows, cut early once their text and blobs pass BATCH_BYTES. Rows are
    fetched a few at a time, as many as the rows seen so far say fit in a sixteenth of BATCH_BYTES, so wide
    rows never arrive a thousand at once."""
    rows: list[tuple] = []
    size = 0
    fetch = 1  # the first row tells how wide rows are
    widest = 1
    while chunk := cur.fetchmany(min(fetch, batch_rows)):
        sizes = [_row_bytes(row) for row in chunk]
        rows.extend(chunk)
        size += sum(sizes)
        # The widest row seen so far sets the next fetch: rows that grow later (ORDER BY length) are not
        # fetched a thousand at once on the strength of narrow ones.
        widest = max(widest, *sizes)
        fetch = max(1, min(FETCH_ROWS, BATCH_BYTES // 16 // widest))
        if len(rows) >= batch_rows or size >= BATCH_BYTES:
            yield rows[:batch_rows]
            rows = rows[batch_rows:]
            size = sum(_row_bytes(row) for row in rows)
    if rows:
        yield rows


def _row_bytes(row: tuple) -> int:
    return sum(len(v) for v in row if v.__class__ is str or v.__class__ is bytes)


def refuse_double_quoted_strings(conn: sqlite3.Connection) -> None:
    """Make `"NAME"` always a name, never a string literal, as in Oracle and PostgreSQL: an unknown column is an
    error instead of its own name as text. Python 3.12 has `setconfig`; on 3.11 the sqlite3 handle is read from
    the connection object (its first field) and checked to be the right one before it is used."""
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:
        setconfig(SQLITE_DBCONFIG_DQS_DML, False)
    else:
        _db_config_by_handle(conn, SQLITE_DBCONFIG_DQS_DML, 0)
    try:
        conn.execute('SELECT "PYQD_NO_SUCH_COLUMN"').fetchall()
    except sqlite3.OperationalError:
        return
    raise RuntimeError("SQLite double-quoted string literals could not be turned off")


def _db_config_by_handle(conn: sqlite3.Connection, op: int, value: int) -> None:
    import _sqlite3

    if sys.version_info[:2] != (3, 11):
        raise RuntimeError("the sqlite3 handle layout is known only for Python 3.11 (3.12+ has setconfig)")
    lib = ctypes.CDLL(_sqlite3.__file__)
    # CPython 3.11's pysqlite_Connection: PyObject_HEAD (refcount, type), then `sqlite3 *db`.
    handle = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    lib.sqlite3_limit.restype = ctypes.c_int
    # The handle must be this connection's: its limits (read without changing them) are the ones set through it.
    for limit in (sqlite3.SQLITE_LIMIT_LENGTH, sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH):
        if not handle or lib.sqlite3_limit(ctypes.c_void_p(handle), limit, -1) != conn.getlimit(limit):
            raise RuntimeError("cannot reach the SQLite handle of a sqlite3 connection")
    config = lib.sqlite3_db_config
    config.restype = ctypes.c_int
    now = ctypes.c_int(-1)
    rc = config(ctypes.c_void_p(handle), ctypes.c_int(op), ctypes.c_int(value), ctypes.byref(now))
    if rc != 0 or now.value != value:
        raise RuntimeError(f"sqlite3_db_config({op}) failed: {rc}")
