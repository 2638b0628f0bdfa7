"""Moving data between Python and the database, as Oracle's OML4Py: `oml.create` (a persistent table),
`oml.push` (a temporary table), `oml.sync` (a proxy of a table or a query), `oml.drop`, `oml.dir`. The proxy class
itself is `oml.core.frame.DataFrame` (re-exported here as before)."""

from __future__ import annotations

import atexit
import inspect
import io
import re
import uuid
import weakref
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot.errors import ParseError

from oml import _connection
from oml._connection import PYQD, Connection
from oml.core import _io
from oml.core._sql import DIALECT, Rel
from oml.core.frame import TEMP_PREFIX, DataFrame
from oml.core.series import _Series
from oml.errors import NotFoundError

__all__ = ["DataFrame", "create", "push", "sync", "drop", "dir"]

#: Oracle type names given in `dbtypes`, and the Arrow type the column is stored as.
_DBTYPES: list[tuple[re.Pattern[str], pa.DataType]] = [
    (re.compile(r"^(INTEGER|INT|SMALLINT|NUMBER\s*\(\s*\d+\s*(,\s*0\s*)?\))$"), pa.int64()),
    (re.compile(r"^(NUMBER|FLOAT|BINARY_(DOUBLE|FLOAT)|DECIMAL|NUMERIC|REAL|DOUBLE PRECISION)\b.*$"), pa.float64()),
    (re.compile(r"^(N?VARCHAR2?|N?CHAR|N?CLOB|LONG)\b.*$"), pa.string()),
    (re.compile(r"^(RAW|BLOB|LONG RAW)\b.*$"), pa.binary()),
    (re.compile(r"^(DATE|TIMESTAMP)\b.*$"), pa.timestamp("us")),
    (re.compile(r"^BOOLEAN$"), pa.bool_()),
]

#: Temporary tables pushed through each connection, dropped at exit (and by oml.disconnect, see _drop_temporary).
_temporary: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()


def create(x: Any, table: str, oranumber: bool = True, dbtypes: Any = None, append: bool = False) -> DataFrame:
    """Store `x` (a pandas.DataFrame, or a list of equal-size tuples) as a persistent table in your schema and
    return its proxy (append=True adds the rows to an existing table and ignores dbtypes)."""
    return _upload(x, table, oranumber, None if append else dbtypes, mode="append" if append else "create")


def push(x: Any, oranumber: bool = True, dbtypes: Any = None) -> DataFrame:
    """Store `x` as a temporary table and return its proxy. The table is dropped at the end of the session
    (oml.disconnect, the end of the process, or the server's time limit) unless a proxy of it is saved in a
    datastore."""
    name = TEMP_PREFIX + uuid.uuid4().hex[:16].upper()
    proxy = _upload(x, name, oranumber, dbtypes, mode="create", temporary=True)
    _register_temporary(proxy.table or name)
    return proxy


def _upload(x: Any, table: str, oranumber: bool, dbtypes: Any, mode: str, temporary: bool = False) -> DataFrame:
    if not isinstance(oranumber, bool):
        raise TypeError("oranumber must be True or False")
    buf = io.BytesIO()
    pq.write_table(_to_arrow(x, dbtypes), buf)
    params = {"mode": mode, "format": "parquet"}
    if temporary:
        params["temporary"] = "true"
    info = _connection.current().json(
        "POST",
        f"{PYQD}/tables/{quote(table, safe='')}",
        params=params,
        content=buf.getvalue(),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    rel = Rel.table(info["table_name"], info["owner"], _io.table_kinds(info))
    temps = frozenset({info["table_name"]}) if temporary else frozenset()
    return DataFrame._of(rel, temps, table=info["table_name"], owner=info["owner"])


def _to_arrow(x: Any, dbtypes: Any = None) -> pa.Table:
    if isinstance(x, pd.DataFrame):
        frame = x
    elif isinstance(x, list) and x and all(isinstance(r, tuple) for r in x):
        width = len(x[0])
        if any(len(r) != width for r in x):
            raise ValueError("all tuples must have the same size")
        frame = pd.DataFrame(x, columns=[f"COL{i + 1}" for i in range(width)])
    else:
        raise TypeError("x must be a pandas.DataFrame or a list of equal-size tuples")
    types = _dbtypes(dbtypes, [str(c) for c in frame.columns])
    arrays, names = [], []
    for name in frame.columns:
        column = frame[name]
        target = types.get(str(name))
        try:
            array = pa.array(column, from_pandas=True)
            if target is not None:
                array = _cast(array, target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as e:
            raise ValueError(f"column {name!r} cannot be stored as {target or 'its type'}: {e}") from None
        if pa.types.is_null(array.type) and len(array):
            raise ValueError(f"column {name!r} has no values to tell its type: give its type in dbtypes")
        arrays.append(array)
        names.append(str(name))
    return pa.table(arrays, names=names)


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_string(target) and not pa.types.is_string(array.type):
        return pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())
    return array.cast(target)


def _dbtypes(dbtypes: Any, names: list[str]) -> dict[str, pa.DataType]:
    if dbtypes is None:
        return {}
    if isinstance(dbtypes, dict):
        pairs = list(dbtypes.items())
    elif isinstance(dbtypes, list | tuple):
        if len(dbtypes) != len(names):
            raise ValueError("dbtypes as a list gives one type per column")
        pairs = list(zip(names, dbtypes, strict=True))
    else:
        raise TypeError("dbtypes must be a dict of column → SQL type, or a list of SQL types")
    out = {}
    for name, text in pairs:
        if str(name) not in names:
            raise ValueError(f"dbtypes names {name!r}, which is not a column")
        spelled = " ".join(str(text).upper().split())
        target = next((t for pattern, t in _DBTYPES if pattern.match(spelled)), None)
        if target is None:
            raise ValueError(f"unsupported database type {text!r} for column {name!r}")
        out[str(name)] = target
    return out


def sync(
    schema: str | None = None,
    regex_match: bool = False,
    table: str | None = None,
    view: str | None = None,
    query: str | None = None,
) -> DataFrame | dict[str, DataFrame]:
    """A proxy for an existing table or query (or, with regex_match, a dict of proxies of every matching table)."""
    if view is not None:
        raise ValueError("pyqd has no views; use table= or query=")
    if query is not None:
        if schema is not None:
            raise ValueError("schema cannot be combined with query")
        if table is not None:
            raise ValueError("give one of table, view and query")
        kinds = _io.query_kinds(query)  # runs the query now: a bad one fails here, as in OML
        try:
            tree = sqlglot.parse_one(query, read=DIALECT)
        except ParseError as e:
            raise ValueError(f"cannot read the query: {e}") from None
        return DataFrame._of(Rel.over(tree, kinds), query=query)  # type: ignore[arg-type]
    if table is None:
        raise ValueError("give table= (or query=)")
    owner = schema.upper() if schema else None
    if regex_match:
        scope = {"type": "all"} if owner else {"type": "user"}
        items = _connection.current().json("GET", f"{PYQD}/tables", params=scope)
        return {
            i["table_name"]: DataFrame(i["table_name"], i["owner"])
            for i in items
            if re.search(table, i["table_name"]) and (owner is None or i["owner"] == owner)
        }
    info = _io.describe_table(table, owner)
    rel = Rel.table(info["table_name"], info["owner"], _io.table_kinds(info))
    return DataFrame._of(rel, table=info["table_name"], owner=info["owner"])


def drop(table: str | None = None, view: str | None = None, model: str | None = None) -> None:
    """Drop a table of yours."""
    if view is not None or model is not None:
        raise ValueError("pyqd has no views or in-database models; use table=")
    if table is None:
        raise ValueError("give table=")
    _connection.current().json("DELETE", f"{PYQD}/tables/{quote(table, safe='')}")
    _forget_temporary(table)


def dir() -> list[str]:  # noqa: A001 - Oracle's name
    """The names of the oml objects (proxies) in the caller's workspace."""
    frame = inspect.currentframe()
    caller = frame.f_back if frame is not None else None
    names = caller.f_globals if caller is not None else {}
    return sorted(n for n, v in names.items() if isinstance(v, DataFrame | _Series) and not n.startswith("_"))


def _register_temporary(table: str) -> None:
    conn = _connection.current()
    _temporary.setdefault(conn, set()).add(table)


def _forget_temporary(table: str) -> None:
    conn = _connection.current_or_none()
    if conn is not None and conn in _temporary:
        _temporary[conn].discard(table)


def _drop_temporary(conn: Connection | None = None) -> None:
    """Drop the temporary tables pushed through a connection (the current one by default). oml.disconnect
    (cleanup=True) calls this before closing the connection; the process's exit does too."""
    conn = conn or _connection.current_or_none()
    if conn is None:
        return
    for table in sorted(_temporary.pop(conn, set())):
        try:
            conn.json("DELETE", f"{PYQD}/tables/{quote(table, safe='')}")
        except NotFoundError:
            pass  # dropped already (or kept and dropped by its owner)
        except Exception:  # noqa: BLE001 - best effort: the server's time limit drops it anyway
            pass


def _drop_all_temporary() -> None:
    for conn in list(_temporary.keys()):
        _drop_temporary(conn)


atexit.register(_drop_all_temporary)
