"""Reading a large gated query on PostgreSQL in partitions, in parallel, from machines that hold no database
credentials of their own (Dask workers).

The API server plans: for a filtered projection of one stored table (`partitionable`), it makes a short-lived
LOGIN role for the call that is a member of the caller's NOLOGIN role (so it reads exactly what the caller may
read), opens a REPEATABLE READ READ ONLY transaction whose snapshot it exports, and cuts the table's blocks into
ctid ranges. Each `Partition` is plain values: a libpq URI with the call's role and password, the query restricted
to its ctid range, and the snapshot id. A worker reads one with `read_partition`, in its own REPEATABLE READ READ
ONLY transaction on that snapshot, so all partitions together return every row of the single-stream query exactly
once, as of the moment of planning. `PartitionedRead.close()` ends the snapshot and drops the role (and ends its
sessions); `drop_stale_call_roles` drops what a crashed server left behind.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import adbc_driver_manager
import psycopg
import pyarrow as pa
from psycopg import sql
from sqlalchemy.engine import URL, make_url
from sqlglot import exp

from tables.deadline import Deadline
from tables.errors import QueryRejected, QueryTimedOut
from tables.gate import GatedQuery, TableRef
from tables.pg_query import _TOO_LARGE, MAX_ROW_BYTES, ROW_BYTES_HINT, _message, read_batches
from tables.pg_store import PostgresStore
from tables.scan import is_plain_scan

log = logging.getLogger("pyqd.tables")

#: Connections a call's role may open beyond one per partition (a retried partition, a slow close).
CONNECTION_SLACK = 2
#: Milliseconds dropping a call role waits for a lock on what it owns (its sessions were ended just before).
DROP_LOCK_TIMEOUT_MS = 10_000
#: Seconds a reader waits for PostgreSQL to accept its connection.
CONNECT_TIMEOUT_S = 10
#: PostgreSQL 14 is the first to scan a ctid range without reading the whole table (TID Range Scan).
MIN_SERVER_VERSION = 140000
#: Rows per record batch asked of the driver (a hint: it sizes batches by bytes).
BATCH_ROWS = 65_536
#: What a call role's name holds after the store's role prefix. A user role is `<prefix>_<user name>` and user
#: names have at most 30 characters, so `c_` + 32 hex digits can never be a user's role.
_CALL_INFIX = "_c_"
#: What pg_export_snapshot() returns (e.g. 00000004-00000002-1).
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
#: Select clauses a partitionable query may have; any other (joins, GROUP BY, ORDER BY, LIMIT, ...) refuses.
_CLAUSES = frozenset({"expressions", "from_", "where"})
#: Functions the gate lets through unknown to sqlglot that compute one value from one row. Others (median,
#: listagg, rank, ...) aggregate or look at other rows; a function missing here only costs the partitioning.
# fmt: off
_ROW_FUNCTIONS = frozenset(
    {
        "nvl2", "instr", "initcap", "lpad", "rpad", "ltrim", "rtrim", "translate", "to_number", "to_char",
        "to_date", "to_timestamp", "trunc", "mod", "sign", "width_bucket", "regexp_substr", "regexp_instr",
        "regexp_count", "regexp_replace", "months_between", "add_months", "last_day", "next_day", "soundex",
        "ascii", "chr", "replace", "reverse", "abs", "ceil", "floor", "round", "power", "sqrt", "exp", "ln",
        "log", "greatest", "least", "length", "lower", "upper", "substr", "concat", "coalesce", "ifnull",
        "nullif", "date_trunc", "extract", "strftime", "julianday", "datetime", "date", "time", "printf",
        "format",
    }
)
# fmt: on


@dataclass(frozen=True)
class Partition:
    """One ctid range of a planned read: plain values, pickled to the worker that reads it."""

    index: int
    #: libpq URI with the call's own login role and its password (kept out of repr, hence out of logs).
    conninfo: str = field(repr=False)
    #: The gated query restricted to one ctid block range.
    sql: str
    #: The exported snapshot every partition of the call reads.
    snapshot: str | None
    #: The caller's NOLOGIN role, set for the query (as the single stream does).
    role: str | None = None


class PartitionedRead:
    """A planned partitioned read, held by the API server for the call: keeps the snapshot open and the call's
    role alive until `close()` (also on leaving a `with` block)."""

    def __init__(self, store: PostgresStore, role: str, snapshot_conn: psycopg.Connection, parts: list[Partition]):
        self.partitions = parts
        self.role = role
        self._store = store
        self._snapshot_conn: psycopg.Connection | None = snapshot_conn
        self._dropped = False

    def __repr__(self) -> str:
        return f"PartitionedRead(role={self.role!r}, partitions={len(self.partitions)})"

    def close(self) -> None:
        """End the snapshot's transaction and drop the call's role, ending its sessions (idempotent). Never raises
        for the database: the call's outcome stands, and a role left behind has expired by the time
        `drop_stale_call_roles` drops it."""
        conn, self._snapshot_conn = self._snapshot_conn, None
        try:
            if conn is not None:
                conn.close()  # rolls the snapshot's transaction back
        finally:
            if not self._dropped:  # a failed drop is tried again by the next close(), or by drop_stale_call_roles
                try:
                    _drop_call_role(self._store, self.role)
                    self._dropped = True
                except psycopg.Error as e:
                    log.warning("could not drop call role %s (%s); it expires by itself", self.role, e)

    def __enter__(self) -> PartitionedRead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def partitionable(gated: GatedQuery) -> bool:
    """Whether the query is a filtered projection of its one table (so it may be cut into ctid ranges):
    one SELECT of row-wise expressions FROM one table with an optional WHERE; no join, subquery, CTE, set
    operation, aggregate, window, DISTINCT, GROUP BY, ORDER BY or LIMIT."""
    tree = gated.tree
    if len(gated.tables) != 1 or not isinstance(tree, exp.Select):
        return False
    if any(value for key, value in tree.args.items() if key not in _CLAUSES):
        return False
    source = tree.args.get("from_")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or any(v for k, v in table.args.items() if k not in ("this", "db", "alias")):
        return False
    for node in tree.walk():
        if node is not tree and isinstance(node, exp.Query | exp.Subquery | exp.CTE | exp.Lateral | exp.Unnest):
            return False
        if isinstance(node, exp.Table) and node is not table:
            return False
        if isinstance(node, exp.AggFunc | exp.Window | exp.WithinGroup | exp.Filter):
            return False
        if isinstance(node, exp.Anonymous) and node.name.lower() not in _ROW_FUNCTIONS:
            return False
    return True


def plan_partitions(
    store: object,
    gated: GatedQuery,
    user: str,
    *,
    partitions: int,
    min_rows: int,
    expires_in_s: float,
    reader_url: str | None = None,
) -> PartitionedRead | None:
    """A partitioned read of a gated query for `user`, or None when the query should be read as one stream: not
    PostgreSQL with per-user roles, not a filtered projection of one table, a table under `min_rows` rows (or of
    fewer blocks than two), or a database where the call's role could write somewhere. `reader_url` gives the
    host, port, database and options readers connect to (its user and password are ignored); by default the
    store's. The call's role expires `expires_in_s` seconds from now: make it longer than the call may run."""
    if not isinstance(store, PostgresStore) or partitions < 2 or expires_in_s <= 0:
        return None
    caller_role = store.role_for(user)
    if caller_role is None or not partitionable(gated):
        return None
    ref = gated.tables[0]
    blocks = _blocks_to_read(store, ref, caller_role, min_rows, gated.row_counts.get(ref, 0))
    if blocks is None:
        return None
    ranges = _block_ranges(blocks, partitions)
    if len(ranges) < 2:
        return None
    texts = [_partition_sql(gated, low, high) for low, high in ranges]
    base = make_url(reader_url) if reader_url else store.engine.url
    password = secrets.token_hex(32)
    role = _create_call_role(store, caller_role, password, len(ranges) + CONNECTION_SLACK, expires_in_s)
    try:
        snapshot_conn, snapshot = _export_snapshot(store, expires_in_s)
    except BaseException:
        _drop_call_role(store, role)
        raise
    conninfo = _conninfo(base, role, password)
    parts = [Partition(i, conninfo, text, snapshot, caller_role) for i, text in enumerate(texts)]
    return PartitionedRead(store, role, snapshot_conn, parts)


def read_partition(p: Partition, *, batch_rows: int = BATCH_ROWS, timeout_s: float) -> Iterator[pa.RecordBatch]:
    """The partition's rows as record batches, read on its snapshot, read-only, as the caller. The read stops with
    QueryTimedOut `timeout_s` seconds from now, whatever it does."""
    deadline = Deadline(timeout_s)
    if p.snapshot is not None and not _SNAPSHOT_ID.fullmatch(p.snapshot):
        raise QueryRejected("Invalid snapshot id for an input partition")
    return _read(p, batch_rows, deadline)


def drop_stale_call_roles(store: object) -> list[str]:
    """Drop the call roles whose time ran out (left by a server that died before closing its reads), ending
    their sessions; the names dropped. Call it when a server starts, and now and then."""
    if not isinstance(store, PostgresStore) or not store.roles:
        return []
    with store._conn() as conn:
        stale = conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) AND rolcanlogin AND rolvaliduntil < now()",
            (store.role_prefix + _CALL_INFIX,),
        ).fetchall()
    dropped = []
    for (role,) in stale:
        try:  # one role that cannot go must not stop the others (nor the server's start)
            _drop_call_role(store, role)
            dropped.append(role)
        except psycopg.Error as e:
            log.warning("could not drop stale call role %s (%s)", role, e)
    return dropped


def _blocks_to_read(store: PostgresStore, ref: TableRef, caller_role: str, min_rows: int, counted: int) -> int | None:
    """The table's size in blocks, if PostgreSQL scans ctid ranges, the caller's role exists, the table is an
    ordinary one of at least `min_rows` rows (the planner's estimate, or the count the gate made), and that role
    may create nothing in the database."""
    with store._conn() as conn:
        if conn.info.server_version < MIN_SERVER_VERSION:
            return None
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (caller_role,)).fetchone() is None:
            return None
        row = conn.execute(
            "SELECT c.relkind, c.relpages, c.reltuples, "
            "pg_relation_size(c.oid) / current_setting('block_size')::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (ref.owner, ref.name),
        ).fetchone()
        if row is None or row[0] != "r":
            return None
        _, relpages, reltuples, blocks = row
        estimate = reltuples / relpages * blocks if relpages > 0 and reltuples >= 0 else 0
        if max(estimate, counted) < min_rows:
            return None
        if not _read_only_role(conn, caller_role):
            return None
    return int(blocks)


def _read_only_role(conn: psycopg.Connection, role: str) -> bool:
    """Whether `role` may create nothing in the database (no schema, no table, no temporary table). PUBLIC holds
    TEMPORARY on every database by default: take it back (pyqd's own role owns the database and keeps it)."""
    if "TEMPORARY" in _create_rights(conn, role):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('pyqd.revoke_temporary'))")
            database = sql.Identifier(conn.info.dbname)
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(database))
            except psycopg.errors.InsufficientPrivilege:
                pass
    rights = _create_rights(conn, role)
    if rights:
        log.warning(
            "input partitions are off: user roles may create objects in the database (%s); "
            "run REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC and revoke CREATE on schemas from PUBLIC",
            ", ".join(rights),
        )
    return not rights


def _create_rights(conn: psycopg.Connection, role: str) -> list[str]:
    rows = conn.execute(
        "SELECT 'TEMPORARY' WHERE has_database_privilege(%(r)s, current_database(), 'TEMPORARY') "
        "UNION ALL SELECT 'CREATE' WHERE has_database_privilege(%(r)s, current_database(), 'CREATE') "
        "UNION ALL SELECT 'CREATE ON SCHEMA ' || nspname FROM pg_namespace WHERE has_schema_privilege(%(r)s, oid, "
        "'CREATE')",
        {"r": role},
    ).fetchall()
    return [r[0] for r in rows]


def _block_ranges(blocks: int, partitions: int) -> list[tuple[int | None, int | None]]:
    """`partitions` ranges of about equal numbers of blocks [low, high); the first starts nowhere and the last ends
    nowhere, so rows in blocks added since the size was taken are read too."""
    n = min(partitions, blocks)
    if n < 2:
        return []
    bounds = [round(i * blocks / n) for i in range(1, n)]
    lows: list[int | None] = [None, *bounds]
    highs: list[int | None] = [*bounds, None]
    return list(zip(lows, highs, strict=True))


def _partition_sql(gated: GatedQuery, low: int | None, high: int | None) -> str:
    """The gated query with `ctid` in [low, high) blocks ANDed to its WHERE; with the single stream's row-size
    check around it when the query computes (`pg_query.sql_for`)."""
    tree = gated.tree.copy()
    assert isinstance(tree, exp.Select)
    ctid = exp.column("ctid", quoted=True)  # the one table's system column: a table cannot have a column of that name
    if low is not None:
        tree = tree.where(exp.GTE(this=ctid.copy(), expression=exp.Literal.string(f"({low},0)")), copy=False)
    if high is not None:
        tree = tree.where(exp.LT(this=ctid.copy(), expression=exp.Literal.string(f"({high},0)")), copy=False)
    text = GatedQuery(tree, gated.tables).sql("postgres")
    if is_plain_scan(gated.tree, gated.columns):
        return text
    size = 'pg_column_size("PYQD_R".*)'
    check = f"CASE WHEN {size} <= {MAX_ROW_BYTES} THEN TRUE ELSE CAST(('{_TOO_LARGE}:' || {size}) AS INTEGER) = 0 END"
    return f'SELECT "PYQD_R".* FROM ({text}) AS "PYQD_R" WHERE {check}'


def _create_call_role(store: PostgresStore, caller_role: str, password: str, connections: int, ttl_s: float) -> str:
    """A LOGIN role for one call: a member of the caller's role (INHERIT), nothing else; its password is sent
    as a SCRAM verifier, so the statement (which may be logged) does not hold it."""
    role = f"{store.role_prefix}{_CALL_INFIX}{secrets.token_hex(16)}"
    with store._conn() as conn:
        (until,) = conn.execute("SELECT (now() + make_interval(secs => %s))::text", (ttl_s,)).fetchone()
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                "CONNECTION LIMIT {} PASSWORD {} VALID UNTIL {} IN ROLE {}"
            ).format(
                sql.Identifier(role),
                sql.Literal(connections),
                sql.Literal(verifier),
                sql.Literal(until),
                sql.Identifier(caller_role),
            )
        )
    return role


def _export_snapshot(store: PostgresStore, ttl_s: float) -> tuple[psycopg.Connection, str]:
    """A connection in a REPEATABLE READ READ ONLY transaction, and its exported snapshot. PostgreSQL ends the
    session if it stays idle past the call role's lifetime (a server that forgot to close)."""
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    idle_ms = max(1000, int(ttl_s * 1000))
    conn = psycopg.connect(url, options=f"-c idle_in_transaction_session_timeout={idle_ms}")
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        return conn, str(row[0])
    except BaseException:
        conn.close()
        raise


def _drop_call_role(store: PostgresStore, role: str) -> None:
    """Drop a call role (if it exists) with what it owns, after ending its sessions. Any role may create large
    objects and set default privileges for itself, with no right granted, and either blocks DROP ROLE; so does
    anything it made in another database of the cluster (PUBLIC may connect to each by default). Such a role is
    disarmed instead: no login, no membership, so it reads nothing and is no longer taken for a stale one."""
    name = sql.Identifier(role)
    with store._conn() as conn:
        row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if row is None:
            return
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(name))  # no new session from here on
    _end_sessions(store, role, row[0])  # first: a session holding a lock on what the role owns would stall the drop
    try:
        with store._conn() as conn:
            conn.execute(f"SET LOCAL lock_timeout = {DROP_LOCK_TIMEOUT_MS}")
            if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(name))  # DROP OWNED needs the role's rights
            conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
            conn.execute(sql.SQL("DROP ROLE {}").format(name))
    except psycopg.errors.UndefinedObject:  # dropped meanwhile (by another server's drop_stale_call_roles)
        return
    except psycopg.errors.DependentObjectsStillExist as e:
        log.warning("call role %s owns objects in another database; disarmed, not dropped: %s", role, e)
        _disarm_call_role(store, role)


def _end_sessions(store: PostgresStore, role: str, oid: int) -> None:
    with store._conn() as conn:
        pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE usesysid = %s", (oid,)).fetchall()
        for (pid,) in pids:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            except psycopg.errors.InsufficientPrivilege:
                log.warning("cannot end the sessions of call role %s (grant pg_signal_backend)", role)
                return


def _disarm_call_role(store: PostgresStore, role: str) -> None:
    """Take a call role's login, password and memberships (what `_drop_call_role` does when DROP ROLE cannot)."""
    name = sql.Identifier(role)
    with store._conn() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(name))
        member_of = conn.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (role,),
        ).fetchall()
        for (group,) in member_of:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), name))


def _conninfo(base: URL, role: str, password: str) -> str:
    """A libpq URI: host, port, database and options of `base`, as `role` with `password`."""
    url = base.set(drivername="postgresql", username=role, password=password)
    if "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    return url.render_as_string(hide_password=False)


def _read(p: Partition, batch_rows: int, deadline: Deadline) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as adbc_pg

    deadline.check()
    secret = make_url(p.conninfo).password
    try:
        conn = adbc_pg.connect(p.conninfo)
    except adbc_driver_manager.Error as e:
        raise QueryRejected(f"Cannot connect to read an input partition: {_scrub(_detail(str(e)), secret)}") from None
    try:
        cur = conn.cursor()
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_rows * ROW_BYTES_HINT)})
        try:
            _begin(cur, p, deadline)
            cur.execute(p.sql)
            yield from read_batches(cur, deadline)
        except (adbc_driver_manager.Error, pa.ArrowException, OSError) as e:  # errors while streaming are OSError
            text = str(e)
            if "57014" in text or "statement timeout" in text:
                raise QueryTimedOut(deadline.seconds) from None
            if "invalid snapshot identifier" in text:
                raise QueryRejected("The input partition's snapshot has ended (its call is over)") from None
            raise QueryRejected(_scrub(_message(text), secret)) from None
        finally:
            cur.close()
    finally:
        conn.close()


def _begin(cur: Any, p: Partition, deadline: Deadline) -> None:
    """The transaction as the single stream's, on the call's snapshot (the driver has already begun it)."""
    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if p.snapshot is not None:
        cur.execute(f"SET TRANSACTION SNAPSHOT '{p.snapshot}'")
    cur.execute(f"SET LOCAL statement_timeout = {max(1, int(deadline.remaining() * 1000))}")
    if p.role:
        cur.execute(f'SET LOCAL ROLE "{p.role.replace(chr(34), chr(34) * 2)}"')


def _detail(text: str) -> str:
    return text.split("FATAL:", 1)[-1].strip().splitlines()[0][:300] if text.strip() else "unknown error"


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
