"""Table proxies: `oml.create`, `oml.sync`, `oml.drop`, and `oml.DataFrame` with `.pull()`."""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from oml import _connection
from oml._connection import PYQD


class DataFrame:
    """A proxy for a table (or a query) in the database; `.pull()` brings its rows into a local pandas DataFrame.

    Proxies are what the apply functions take as `data`; `proxy[["A", "B"]]` selects columns (e.g. the `index`
    of `group_apply`)."""

    def __init__(
        self,
        table: str | None = None,
        owner: str | None = None,
        columns: list[str] | None = None,
        row_count: int | None = None,
        *,
        query: str | None = None,
    ) -> None:
        if (table is None) == (query is None):
            raise ValueError("a proxy has a table or a query")
        self.table, self.owner, self.query = table, owner, query
        self._columns = columns
        self._row_count = row_count

    @property
    def sql(self) -> str:
        """The query whose rows this proxy stands for (Oracle SQL, names quoted exactly)."""
        if self.query is not None:
            return self.query
        assert self.table is not None
        owner = f"{_quote(self.owner)}." if self.owner else ""
        return f"SELECT * FROM {owner}{_quote(self.table)}"

    def _path(self) -> str:
        return f"{PYQD}/tables/{quote(self.table or '', safe='')}"

    def _params(self) -> dict[str, str]:
        return {"owner": self.owner} if self.owner else {}

    def _describe(self) -> dict[str, Any]:
        info = _connection.current().json("GET", self._path(), params=self._params())
        self._columns = [c["name"] for c in info["columns"]]
        self._row_count = info["row_count"]
        self.owner = self.owner or info["owner"]
        return info

    def _query(self, sql: str, limit: int | None = None) -> pd.DataFrame:
        body: dict[str, Any] = {"query": sql, "limit": limit}
        r = _connection.current().request("POST", f"{PYQD}/query", json=body)
        if not r.content:
            return pd.DataFrame()
        return pa.ipc.open_stream(r.content).read_all().to_pandas()

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            if self.query is not None:
                self._columns = list(self._query(self.query, limit=0).columns)
            else:
                self._describe()
        return list(self._columns or [])

    @property
    def shape(self) -> tuple[int, int]:
        if self.query is not None:
            count = int(self._query(f"SELECT COUNT(*) AS N FROM ({self.query})").iloc[0, 0])
            return count, len(self.columns)
        info = self._describe()
        return info["row_count"], len(info["columns"])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, columns: str | list[str]) -> DataFrame:
        """A proxy for some of the columns."""
        cols = [columns] if isinstance(columns, str) else list(columns)
        select = ", ".join(_quote(c) for c in cols)
        return DataFrame(query=f"SELECT {select} FROM ({self.sql})", columns=cols)

    def pull(self) -> pd.DataFrame:
        """All rows, with their stored types (streamed as Arrow)."""
        if self.query is not None:
            return self._query(self.query)
        r = _connection.current().request("GET", f"{self._path()}/data", params=self._params())
        return pa.ipc.open_stream(r.content).read_all().to_pandas()

    def head(self, n: int = 5) -> pd.DataFrame:
        if self.query is not None:
            return self._query(self.query, limit=n)
        r = _connection.current().request("GET", f"{self._path()}/rows", params={**self._params(), "limit": n})
        return pd.DataFrame(r.json()["items"], columns=self.columns)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "owner": self.owner,
            "query": self.query,
            "_columns": self._columns,
            "_row_count": None,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("query", None)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        if self.query is not None:
            return f"<oml.DataFrame query={self.query!r}>"
        owner = f"{self.owner}." if self.owner else ""
        return f"<oml.DataFrame {owner}{self.table}>"


def _quote(name: str | None) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _to_arrow(x: Any) -> pa.Table:
    if isinstance(x, pd.DataFrame):
        return pa.Table.from_pandas(x, preserve_index=False)
    if isinstance(x, list) and x and all(isinstance(r, tuple) for r in x):
        width = len(x[0])
        if any(len(r) != width for r in x):
            raise ValueError("all tuples must have the same size")
        return pa.Table.from_pandas(
            pd.DataFrame(x, columns=[f"COL{i + 1}" for i in range(width)]), preserve_index=False
        )
    raise TypeError("x must be a pandas.DataFrame or a list of equal-size tuples")


def create(x: Any, table: str, oranumber: bool = True, dbtypes: Any = None, append: bool = False) -> DataFrame:
    """Store `x` as a persistent table in your schema and return its proxy (append=True adds rows)."""
    buf = io.BytesIO()
    pq.write_table(_to_arrow(x), buf)
    info = _connection.current().json(
        "POST",
        f"{PYQD}/tables/{quote(table, safe='')}",
        params={"mode": "append" if append else "create", "format": "parquet"},
        content=buf.getvalue(),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    return DataFrame(info["table_name"], info["owner"], [c["name"] for c in info["columns"]], info["row_count"])


def sync(
    schema: str | None = None,
    regex_match: bool = False,
    table: str | None = None,
    view: str | None = None,
    query: str | None = None,
) -> DataFrame | dict[str, DataFrame]:
    """A proxy for an existing table (or, with regex_match, a dict of proxies for every matching table)."""
    if view is not None:
        raise ValueError("pyqd has no views; use table=")
    if query is not None:
        if schema is not None:
            raise ValueError("schema cannot be combined with query")
        proxy = DataFrame(query=query)
        proxy.columns  # noqa: B018 - checks the query now, as OML does
        return proxy
    if table is None:
        raise ValueError("give table=")
    if regex_match:
        items = _connection.current().json("GET", f"{PYQD}/tables", params={"type": "all"})
        owner = schema.upper() if schema else None
        return {
            i["table_name"]: DataFrame(i["table_name"], i["owner"])
            for i in items
            if re.search(table, i["table_name"]) and (owner is None or i["owner"] == owner)
        }
    proxy = DataFrame(table, schema.upper() if schema else None)
    proxy._describe()
    return proxy


def drop(table: str | None = None, view: str | None = None, model: str | None = None) -> None:
    """Drop a persistent table of yours."""
    if view is not None or model is not None:
        raise ValueError("pyqd has no views or in-database models; use table=")
    if table is None:
        raise ValueError("give table=")
    _connection.current().json("DELETE", f"{PYQD}/tables/{quote(table, safe='')}")
