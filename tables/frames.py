"""Turning uploads into Arrow tables, checking names, and mapping Arrow types to SQL types."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from tables.errors import InvalidTableData, InvalidTableName, ReservedTableName

#: Longest table or column name, in UTF-8 bytes: PostgreSQL silently truncates identifiers beyond 63.
MAX_NAME_BYTES = 63
#: Table names: an Oracle-style identifier. The case is kept (as OML's `create` keeps it).
TABLE_NAME_RE = re.compile(rf"[A-Za-z][A-Za-z0-9_$#]{{0,{MAX_NAME_BYTES - 1}}}")
#: The same rule as a JSON-Schema (ECMA-262) pattern, for the OpenAPI document.
TABLE_NAME_PATTERN = rf"^[A-Za-z][A-Za-z0-9_$#]{{0,{MAX_NAME_BYTES - 1}}}$"
#: Name prefixes the databases keep for themselves (SQLite's and PostgreSQL's catalogs) and for pyqd's own tables.
RESERVED_PREFIXES = ("sqlite_", "pg_", "pyqd_")
#: Oracle's SQL reserved words (SQL Language Reference, "Oracle SQL Reserved Words"): not valid unquoted
#: identifiers there, so a table so named could not be read by an `input` query written for Oracle.
RESERVED_WORDS = frozenset(
    """ACCESS ADD ALL ALTER AND ANY AS ASC AUDIT BETWEEN BY CHAR CHECK CLUSTER COLUMN COMMENT COMPRESS CONNECT CREATE
    CURRENT DATE DECIMAL DEFAULT DELETE DESC DISTINCT DROP ELSE EXCLUSIVE EXISTS FILE FLOAT FOR FROM GRANT GROUP HAVING
    IDENTIFIED IMMEDIATE IN INCREMENT INDEX INITIAL INSERT INTEGER INTERSECT INTO IS LEVEL LIKE LOCK LONG MAXEXTENTS
    MINUS MLSLABEL MODE MODIFY NOAUDIT NOCOMPRESS NOT NOWAIT NULL NUMBER OF OFFLINE ON ONLINE OPTION OR ORDER PCTFREE
    PRIOR PUBLIC RAW RENAME RESOURCE REVOKE ROW ROWID ROWNUM ROWS SELECT SESSION SET SHARE SIZE SMALLINT START
    SUCCESSFUL SYNONYM SYSDATE TABLE THEN TO TRIGGER UID UNION UNIQUE UPDATE USER VALIDATE VALUES VARCHAR VARCHAR2 VIEW
    WHENEVER WHERE WITH""".split()
)
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
    """The name if it is an Oracle identifier that is neither reserved nor a database's or pyqd's own."""
    if not isinstance(name, str) or not TABLE_NAME_RE.fullmatch(name):
        raise InvalidTableName(str(name))
    if name.lower().startswith(RESERVED_PREFIXES) or name.upper() in RESERVED_WORDS:
        raise ReservedTableName(name)
    return name


def check_column_names(names: list[str]) -> None:
    if len(names) > MAX_COLUMNS:
        raise InvalidTableData(f"The data has {len(names)} columns; a table has at most {MAX_COLUMNS}")
    seen: set[str] = set()
    for n in names:
        bad = not isinstance(n, str) or not 0 < len(n.encode()) <= MAX_NAME_BYTES or "\x00" in n or '"' in n
        if bad or n.lower() in seen or n in PG_SYSTEM_COLUMNS:
            raise InvalidTableName(str(n), "column")
        seen.add(n.lower())


#: PostgreSQL's system columns: a table cannot have a column of these names (names are quoted, so `CTID` can).
PG_SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})
#: Most columns of a table (Oracle's limit; SQLite's own is 2000).
MAX_COLUMNS = 1000


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
            try:
                col = col.cast(col.type.value_type)
            except (pa.ArrowInvalid, pa.ArrowCapacityError) as e:
                raise InvalidTableData(f"Column {name!r} cannot be read: {e}") from None
        kind = "text" if pa.types.is_null(col.type) else logical_type(col.type)
        target = ARROW_TYPES[kind]
        try:
            col = col.cast(target) if kind != "text" or pa.types.is_string(col.type) else to_text(col)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidTableData(f"Column {name!r} cannot be stored as {kind}: {e}") from None
        if kind == "text" and pc.any(pc.match_substring(col, "\x00")).as_py():
            # PostgreSQL text cannot hold NUL; refuse it on every backend so both behave alike.
            raise InvalidTableData(f"Column {name!r} holds a NUL character, which text columns cannot store")
        columns.append(Column(name, kind))
        arrays.append(col)
    return pa.table(arrays, names=table.column_names), columns


def to_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())])


def parse_upload(data: bytes, fmt: UploadFormat) -> pa.Table:
    """Parse CSV, Parquet or JSON records held in memory into one Arrow table, or InvalidTableData."""
    from tables.uploads import open_upload

    upload = open_upload(io.BytesIO(data), fmt)
    return pa.concat_tables([upload.schema.empty_table(), *upload.chunks()])


def normalize_columns(schema: pa.Schema) -> list[Column]:
    """The stored columns of data with this schema (what `normalize` gives every chunk of it)."""
    return normalize(schema.empty_table())[1]
