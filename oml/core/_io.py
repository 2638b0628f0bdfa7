"""Running the transparency layer's queries: the read door (`POST /oml/api/pyqd/v1/query`, Arrow back) and the
write door (tables made from a query), with the caller's own rights. Inside the engine a script's `import oml`
reaches the same routes through the bridge, so this code is the same there."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from oml import _connection
from oml._connection import PYQD
from oml.core._sql import flat_sql

#: The kind of column each stored type of a table is (see tables/frames.py SQL_TYPES).
STORED_KINDS = {
    "integer": "number",
    "float": "number",
    "boolean": "boolean",
    "text": "string",
    "timestamp": "datetime",
    "timestamptz": "datetime",
    "date": "datetime",
    "binary": "bytes",
}
#: Rows read to tell the kinds of a query's columns (SQLite tells a column's type by its values).
SAMPLE_ROWS = 100


def sql_text(query: exp.Expr | str) -> str:
    return query if isinstance(query, str) else flat_sql(query)


def fetch(query: exp.Expr | str, limit: int | None = None) -> pa.Table | None:
    """The rows of a query as an Arrow table (None when the answer has no rows and no columns)."""
    body: dict[str, Any] = {"query": sql_text(query), "limit": limit}
    r = _connection.current().request("POST", f"{PYQD}/query", json=body)
    if not r.content:
        return None
    return pa.ipc.open_stream(r.content).read_all()


def run(query: exp.Expr | str, kinds: dict[str, str] | None = None, limit: int | None = None) -> pd.DataFrame:
    """The rows of a query as pandas, each column converted to its kind (when known)."""
    table = fetch(query, limit)
    if table is None:
        return pd.DataFrame(columns=list(kinds or {}))
    return to_pandas(table, kinds or {})


def to_pandas(table: pa.Table, kinds: dict[str, str]) -> pd.DataFrame:
    """Arrow to pandas: decimals (PostgreSQL's NUMERIC) become floats, Boolean columns bool (object with None when
    they hold NULLs), numbers read as text (SQLite's mixed columns) numbers."""
    arrays = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = kinds.get(name)
        if pa.types.is_decimal(column.type):
            column = pc.cast(column, pa.float64())
        elif kind == "number" and (pa.types.is_string(column.type) or pa.types.is_null(column.type)):
            column = pc.cast(column, pa.float64())
        arrays.append(column)
    frame = pa.table(arrays, names=table.column_names).to_pandas()
    for name in frame.columns:
        if kinds.get(name) == "boolean":
            frame[name] = _booleans(frame[name])
    return frame


def _booleans(values: pd.Series) -> pd.Series:
    if values.isna().any():
        return pd.Series([None if pd.isna(v) else bool(v) for v in values], dtype=object, name=values.name)
    return values.astype(bool)


def kind_of_arrow(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return "string"


def query_kinds(sql: str) -> dict[str, str]:
    """The columns of a query and their kinds, from a few of its rows (checks the query now, as OML does)."""
    table = fetch(sql, SAMPLE_ROWS)
    if table is None:
        raise ValueError("the query returns no columns")
    # A column whose sampled values are all missing reads as text (SQLite types values, not columns).
    return {f.name: kind_of_arrow(f.type) for f in table.schema}


def describe_table(name: str, owner: str | None) -> dict[str, Any]:
    """The server's description of a table: owner, table_name, columns (name, type), row_count; 404 if unseen."""
    params = {"owner": owner} if owner else {}
    info: dict[str, Any] = _connection.current().json("GET", f"{PYQD}/tables/{quote(name, safe='')}", params=params)
    return info


def table_kinds(info: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: STORED_KINDS.get(c["type"], "string") for c in info["columns"]}


def write_query(table: str, sql: str, append: bool = False, temporary: bool = False) -> dict[str, Any]:
    """The write door: a table of the caller's made from a gated query (or rows appended to it)."""
    params = {"temporary": "true"} if temporary else {}
    info: dict[str, Any] = _connection.current().json(
        "POST",
        f"{PYQD}/tables/{quote(table, safe='')}",
        params=params,
        json={"query": sql, "append": append},
    )
    return info
