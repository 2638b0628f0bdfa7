"""Turning uploads into Arrow tables, checking names, and mapping Arrow types to SQL types."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tables.errors import InvalidTableData, InvalidTableName

#: Longest table or column name, in UTF-8 bytes: PostgreSQL silently truncates identifiers beyond 63.
MAX_NAME_BYTES = 63
#: Table names: an Oracle-style identifier. The case is kept (as OML's `create` keeps it).
TABLE_NAME_RE = re.compile(rf"[A-Za-z][A-Za-z0-9_$#]{{0,{MAX_NAME_BYTES - 1}}}")
UploadFormat = Literal["csv", "parquet", "json"]
UPLOAD_FORMATS: tuple[str, ...] = ("csv", "parquet", "json")

#: Logical column types and their SQL spelling per backend.
SQL_TYPES: dict[str, dict[str, str]] = {
    "integer": {"sqlite": "INTEGER", "postgresql": "BIGINT"},
    "float": {"sqlite": "REAL", "postgresql": "DOUBLE PRECISION"},
    "boolean": {"sqlite": "BOOLEAN", "postgresql": "BOOLEAN"},
    "text": {"sqlite": "TEXT", "postgresql": "TEXT"},
    "timestamp": {"sqlite": "TIMESTAMP", "postgresql": "TIMESTAMP"},
    "timestamptz": {"sqlite": "TIMESTAMPTZ", "postgresql": "TIMESTAMPTZ"},
    "date": {"sqlite": "DATE", "postgresql": "DATE"},
    "binary": {"sqlite": "BLOB", "postgresql": "BYTEA"},
}
#: Arrow type each logical type reads back as.
ARROW_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "text": pa.string(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "binary": pa.binary(),
}


@dataclass(frozen=True)
class Column:
    name: str
    #: One of SQL_TYPES' keys.
    type: str


def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not TABLE_NAME_RE.fullmatch(name):
        raise InvalidTableName(str(name))
    return name


def check_column_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        bad = not isinstance(n, str) or not 0 < len(n.encode()) <= MAX_NAME_BYTES or "\x00" in n or '"' in n
        if bad or n.lower() in seen:
            raise InvalidTableName(str(n), "column")
        seen.add(n.lower())


def logical_type(t: pa.DataType) -> str:
    """The logical SQL type for an Arrow type (anything unusual is stored as text)."""
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    return "text"


def normalize(table: pa.Table) -> tuple[pa.Table, list[Column]]:
    """Cast an uploaded table to the types we store, and describe its columns."""
    check_column_names(table.column_names)
    if table.num_columns == 0:
        raise InvalidTableData("The data has no columns")
    columns, arrays = [], []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        kind = "text" if pa.types.is_null(col.type) else logical_type(col.type)
        target = ARROW_TYPES[kind]
        try:
            col = col.cast(target) if kind != "text" or pa.types.is_string(col.type) else _to_text(col)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidTableData(f"Column {name!r} cannot be stored as {kind}: {e}") from None
        if kind == "text" and pc.any(pc.match_substring(col, "\x00")).as_py():
            # PostgreSQL text cannot hold NUL; refuse it on every backend so both behave alike.
            raise InvalidTableData(f"Column {name!r} holds a NUL character, which text columns cannot store")
        columns.append(Column(name, kind))
        arrays.append(col)
    return pa.table(arrays, names=table.column_names), columns


def _to_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())])


def parse_upload(data: bytes, fmt: UploadFormat) -> pa.Table:
    """Parse CSV, Parquet or JSON records into an Arrow table, or InvalidTableData."""
    try:
        if fmt == "csv":
            return pa_csv.read_csv(io.BytesIO(data))
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data))
        records = orjson.loads(data)
        if isinstance(records, dict) and isinstance(records.get("items"), list):
            records = records["items"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise InvalidTableData("JSON data must be a list of records (objects)")
        if not records:
            raise InvalidTableData("JSON data has no records")
        return pa.Table.from_pylist(records)
    except InvalidTableData:
        raise
    except (pa.ArrowException, orjson.JSONDecodeError, ValueError, TypeError, OSError) as e:
        raise InvalidTableData(f"Cannot read the {fmt} data: {e}") from None
