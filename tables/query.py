"""Input queries for execution: check one through the gate (grants included), then stream its rows."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from sqlalchemy.orm import Session

from tables import pg_partitions, pg_query, sqlite_query
from tables.deadline import Deadline
from tables.errors import QueryRejected
from tables.gate import GatedQuery, parse_query
from tables.pg_partitions import PartitionedRead
from tables.pg_store import PostgresStore
from tables.service import can_read
from tables.sqlite_store import SqliteStore
from tables.store import UserDataStore

#: Rows per record batch read from the database.
BATCH_ROWS = 65_536


def gate_query(session: Session, store: UserDataStore, caller: str, sql: str) -> GatedQuery:
    """The query, if it is one read-only query over tables the caller may read (else QueryRejected, which never
    tells a missing table from one the caller may not see)."""
    gated = parse_query(sql, caller)
    columns, row_counts = {}, {}
    for ref in gated.tables:
        described = store.describe(ref.owner, ref.name) if can_read(session, caller, ref.owner, ref.name) else None
        if described is None:
            raise QueryRejected(f"Table or view does not exist: {ref.owner}.{ref.name}")
        columns[ref] = frozenset(c.name for c in described.columns)
        row_counts[ref] = described.row_count
    return gated.with_columns(columns, row_counts)


def stream_query(
    store: UserDataStore, gated: GatedQuery, caller: str, *, timeout_s: float, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The query's rows as record batches, read by the database as the caller, read-only. The query stops with
    QueryTimedOut `timeout_s` seconds from now (not from the first batch asked for), whatever it does."""
    deadline = Deadline(timeout_s)
    if isinstance(store, SqliteStore):
        owners = {ref.owner for ref in gated.tables}
        return sqlite_query.stream({o: str(store.path(o)) for o in owners}, gated, caller, batch_rows, deadline)
    if isinstance(store, PostgresStore):
        return pg_query.stream(store.adbc_pool, gated, store.role_for(caller), batch_rows, deadline)
    raise TypeError(f"no query reader for {type(store).__name__}")


def partition_query(
    store: UserDataStore,
    gated: GatedQuery,
    caller: str,
    *,
    partitions: int,
    min_rows: int,
    expires_in_s: float,
    reader_url: str | None = None,
) -> PartitionedRead | None:
    """A plan to read the query in up to `partitions` parts in parallel on other machines, each read with
    `tables.pg_partitions.read_partition` (PostgreSQL with per-user roles, a filtered projection of one table of at
    least `min_rows` rows); or None: read it with `stream_query`. Close the plan when the call ends."""
    return pg_partitions.plan_partitions(
        store,
        gated,
        caller,
        partitions=partitions,
        min_rows=min_rows,
        expires_in_s=expires_in_s,
        reader_url=reader_url,
    )
