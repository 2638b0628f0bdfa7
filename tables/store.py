"""Where user tables live: the interface both backends implement, and the shared value conversions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import pyarrow as pa

from tables.errors import InvalidTableData
from tables.frames import ARROW_TYPES, Column

WriteMode = Literal["create", "replace", "append"]
WRITE_MODES: tuple[str, ...] = ("create", "replace", "append")


@dataclass(frozen=True)
class TableDescription:
    owner: str
    name: str
    columns: list[Column]
    #: The backend's own spelling of each column type.
    sql_types: list[str]
    row_count: int


class UserDataStore(Protocol):
    """One schema per user; every method takes already-checked names."""

    kind: str

    def ensure_schema(self, owner: str) -> None: ...
    def drop_schema(self, owner: str) -> None: ...
    def list_tables(self, owner: str) -> list[str]: ...
    def exists(self, owner: str, table: str) -> bool: ...
    def describe(self, owner: str, table: str) -> TableDescription | None: ...
    def write(
        self, owner: str, table: str, data: pa.Table | Iterable[pa.Table], columns: list[Column], mode: WriteMode
    ) -> int: ...
    def drop(self, owner: str, table: str) -> bool: ...
    def read(self, owner: str, table: str, offset: int, limit: int | None) -> pa.Table: ...
    def stream(self, owner: str, table: str, batch_rows: int) -> Iterator[pa.RecordBatch]: ...
    def grant_read(self, owner: str, table: str, grantee: str) -> None: ...
    def revoke_read(self, owner: str, table: str, grantee: str) -> None: ...


#: Rows turned into Python values at a time for a DB-API insert (bounds the memory a chunk costs there).
INSERT_ROWS = 10_000


def chunks_of(data: pa.Table | Iterable[pa.Table], existing: list[Column] | None) -> Iterator[pa.Table]:
    """The data as tables of at most INSERT_ROWS rows, aligned to `existing` columns when appending."""
    for chunk in [data] if isinstance(data, pa.Table) else data:
        if existing is not None:
            chunk = align_for_append(existing, chunk)
        for batch in chunk.to_batches(max_chunksize=INSERT_ROWS):
            yield pa.Table.from_batches([batch])


def rows_to_batch(rows: list[tuple], names: list[str], types: list[pa.DataType | None]) -> pa.RecordBatch:
    """Build a record batch from DB-API rows; a None type means infer it from the values."""
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = []
    for values, t in zip(cols, types, strict=True):
        arrays.append(_array(list(values), t))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _array(values: list, t: pa.DataType | None) -> pa.Array:
    if t is not None:
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            if any(isinstance(v, str) for v in values):  # SQLite keeps these as ISO text
                return pa.array(values, pa.string()).cast(t)
        elif pa.types.is_boolean(t):
            values = [None if v is None else bool(v) for v in values]
        return pa.array(values, t)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if all(v is None or isinstance(v, int | float) for v in values):
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def empty_batch(columns: list[Column]) -> pa.RecordBatch:
    schema = pa.schema([(c.name, ARROW_TYPES[c.type]) for c in columns])
    return pa.RecordBatch.from_pylist([], schema=schema)


def column_values(data: pa.Table, columns: list[Column], sqlite: bool) -> list[list]:
    """Python values per column, ready for DB-API `executemany` (SQLite gets ISO text for times)."""
    out = []
    for col, c in zip(data.columns, columns, strict=True):
        values = col.to_pylist()
        if sqlite and c.type in ("timestamp", "timestamptz", "date"):
            values = [
                None if v is None else v.isoformat(sep=" ") if c.type != "date" else v.isoformat() for v in values
            ]
        out.append(values)
    return out


def align_for_append(existing: list[Column], data: pa.Table) -> pa.Table:
    """Reorder and cast appended data to the table's columns, or InvalidTableData."""
    have = [c.name for c in existing]
    if sorted(have) != sorted(data.column_names):
        raise InvalidTableData(f"Appended data must have the table's columns {have}; got {data.column_names}")
    arrays = []
    for c in existing:
        try:
            arrays.append(data.column(c.name).cast(ARROW_TYPES[c.type]))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidTableData(f"Column {c.name!r} cannot be appended as {c.type}: {e}") from None
    return pa.table(arrays, names=have)
