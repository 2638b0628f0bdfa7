"""`oml.DataFrame`, Oracle OML4Py's proxy for a table or a query (module path `oml.core.frame.DataFrame`, as
dbt-oracle's generated scripts name it).

Every operation builds SQL (Oracle's dialect, through sqlglot) that runs in the database through the read door;
only `pull()`, aggregates and `repr` bring values back. `head`, `tail`, selections, filters, sorts, `concat`,
`merge`, `split` and the rest return new proxies, as Oracle's do. A proxy pickles as its SQL text and its columns'
names and kinds, never a connection, so it can be saved in a datastore and sent into embedded calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlglot import exp

from oml.core import _io
from oml.core._sql import DIALECT, HIDDEN, Rel, as_number, col, lit, paren, replace_this, unique_name
from oml.core.series import SERIES_CLASSES, Boolean, _Series, series_of

#: Prefix of the names of tables `materialize()` makes when given no name (temporary, as push's).
TEMP_PREFIX = "OML_TMP_"


class DataFrame:
    """A lazy proxy for rows in the database (a table, a view-like query, or a result of operations on them)."""

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
        self._temps: frozenset[str] = frozenset()
        self.__rel: Rel | None = None

    # ---- construction ---------------------------------------------------------------------------------------
    @classmethod
    def _of(
        cls,
        rel: Rel,
        temps: frozenset[str] = frozenset(),
        table: str | None = None,
        owner: str | None = None,
        query: str | None = None,
    ) -> DataFrame:
        new = cls.__new__(cls)
        new.table, new.owner, new.query = table, owner, query
        new._temps = temps
        new.__rel = rel
        return new

    @property
    def _rel(self) -> Rel:
        """The query (resolved on first use for a proxy made by name, or from an old pickle)."""
        if self.__rel is None:
            if self.table is not None:
                info = _io.describe_table(self.table, self.owner)
                self.owner = self.owner or info["owner"]
                self.__rel = Rel.table(info["table_name"], info["owner"], _io.table_kinds(info))
            else:
                assert self.query is not None
                self.__rel = Rel.parse(f"SELECT * FROM ({self.query})", _io.query_kinds(self.query))
        return self.__rel

    def _derive(self, rel: Rel, temps: frozenset[str] | None = None) -> DataFrame:
        return DataFrame._of(rel, self._temps if temps is None else temps)

    # ---- pickling ---------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "sql": self._rel.select().sql(dialect=DIALECT),
            "kinds": list(self._rel.kinds.items()),
            "table": self.table,
            "owner": self.owner,
            "temps": sorted(self._temps),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.table, self.owner = state.get("table"), state.get("owner")
        self.query = state.get("query")
        self._temps = frozenset(state.get("temps", ()))
        # Proxies pickled before the transparency layer hold only a table or a query: resolved on first use.
        self.__rel = Rel.parse(state["sql"], dict(state["kinds"])) if "sql" in state else None

    # ---- what it is -------------------------------------------------------------------------------------------
    @property
    def sql(self) -> str:
        """The query whose rows this proxy stands for (Oracle SQL, names quoted exactly)."""
        return self._rel.sql()

    @property
    def columns(self) -> list[str]:
        """The column names."""
        return self._rel.columns

    @property
    def dtypes(self) -> pd.Series:
        """The oml type of each column (oml.Float, oml.String, oml.Boolean, oml.Bytes, oml.Datetime)."""
        return pd.Series({n: SERIES_CLASSES[k] for n, k in self._rel.kinds.items()}, dtype=object)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return len(self), len(self.columns)

    def __len__(self) -> int:
        query = self._rel.query_over(exp.Select(expressions=[exp.alias_(exp.Count(this=exp.Star()), "N")]))
        return int(_io.run(query).iloc[0, 0])

    def __iter__(self) -> Any:
        return iter(self.columns)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def pull(self) -> pd.DataFrame:
        """All rows, as a local pandas.DataFrame."""
        return _io.run(self._rel.select(), self._rel.kinds)

    def __repr__(self) -> str:
        try:
            rows = pd.get_option("display.max_rows") or 60
            return repr(self.head(rows).pull())
        except Exception:  # noqa: BLE001 - a repr must not fail (not connected, a dropped table)
            where = f"{self.owner}.{self.table}" if self.table else "query"
            return f"<oml.DataFrame {where}>"

    def _repr_html_(self) -> str | None:
        try:
            rows = pd.get_option("display.max_rows") or 60
            return self.head(rows).pull()._repr_html_()  # type: ignore[operator]
        except Exception:  # noqa: BLE001
            return None

    # ---- selecting ----------------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        """`df['A']` a column proxy; `df[['A', 'B']]` columns; `df[condition]` rows; `df[rows, cols]` both, where
        rows is `:` or a condition and cols a name, a position, a list of them, or a slice of positions."""
        if isinstance(key, tuple):
            if len(key) != 2:
                raise KeyError(key)
            rows, cols = key
            frame = self if _is_all(rows) else self[rows]
            if isinstance(cols, str | int) and not isinstance(cols, bool):
                return frame[frame._names(cols)[0]]
            return frame if _is_all(cols) else frame._project(frame._names(cols))
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(key)
            return series_of(self._rel, key, self._temps)
        if isinstance(key, Boolean):
            return self._filter(key)
        if isinstance(key, list | tuple):
            return self._project(self._names(list(key)))
        raise TypeError("index an oml.DataFrame by a column name, a list of names, a condition or [rows, cols]")

    def _names(self, spec: Any) -> list[str]:
        names = self.columns
        if isinstance(spec, slice):
            return names[spec]
        items = spec if isinstance(spec, list | tuple) else [spec]
        out = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise KeyError(item)
            if isinstance(item, int):
                out.append(names[item])
            elif item in names:
                out.append(item)
            else:
                raise KeyError(item)
        if len(set(out)) != len(out):
            raise ValueError("a column is selected twice")
        return out

    def _project(self, names: Sequence[str]) -> DataFrame:
        rel = self._rel
        return self._derive(rel.project([(n, rel.expr(n), rel.kind(n)) for n in names]))

    def _filter(self, cond: Boolean) -> DataFrame:
        if cond._rel is not self._rel and cond._rel.rows_key() != self._rel.rows_key():
            raise ValueError("the condition comes from different rows; build it from this oml.DataFrame's columns")
        return self._derive(self._rel.filter(cond._expr), self._temps | cond._temps)

    def select_types(self, include: Any = None, exclude: Any = None) -> DataFrame:
        """The columns of the given oml types (include) or not of them (exclude)."""
        wanted = _kinds_of(include) if include is not None else set(_io.STORED_KINDS.values())
        unwanted = _kinds_of(exclude) if exclude is not None else set()
        return self._project([n for n, k in self._rel.kinds.items() if k in wanted and k not in unwanted])

    def head(self, n: int = 5) -> DataFrame:
        """The first n rows, as a proxy."""
        return self._derive(self._rel.head(n))

    def tail(self, n: int = 5) -> DataFrame:
        """The last n rows, as a proxy."""
        rel = self._rel.wrap() if self._rel.limit is not None else self._rel
        number = exp.Window(this=exp.RowNumber(), order=_window_order(rel.order))
        total = exp.Window(this=exp.Count(this=exp.Star()))
        rn, cnt = unique_name(HIDDEN + "rn", rel.columns), unique_name(HIDDEN + "n", rel.columns)
        outer = rel.wrap([(rn, number), (cnt, total)], keep_order=False)
        last = exp.GT(this=col(rn), expression=exp.Sub(this=col(cnt), expression=lit(max(0, int(n)))))
        outer = outer.filter(last)
        return self._derive(outer.sort([exp.Ordered(this=col(rn), desc=False, nulls_first=False)]))

    # ---- reshaping ----------------------------------------------------------------------------------------
    def drop(self, columns: Any) -> DataFrame:
        """The proxy without the given column(s)."""
        gone = set(self._names(columns))
        return self._project([n for n in self.columns if n not in gone])

    def rename(self, columns: Any) -> DataFrame:
        """Columns renamed: a dict of old name → new name, or a list of new names for all columns."""
        if isinstance(columns, dict):
            for old in columns:
                if old not in self.columns:
                    raise KeyError(old)
            names = [columns.get(n, n) for n in self.columns]
        elif isinstance(columns, list | tuple):
            if len(columns) != len(self.columns):
                raise ValueError("give one new name per column")
            names = list(columns)
        else:
            raise TypeError("columns must be a dict or a list")
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValueError("column names must be distinct non-empty strings")
        rel = self._rel
        return self._derive(rel.project([(new, e, k) for new, (_, e, k) in zip(names, rel.items, strict=True)]))

    def sort_values(self, by: Any, ascending: Any = True, na_position: str = "last") -> DataFrame:
        """The rows sorted by the given column(s)."""
        names = self._names(by)
        orders = list(ascending) if isinstance(ascending, list | tuple) else [ascending] * len(names)
        if len(orders) != len(names):
            raise ValueError("give one ascending flag per column")
        if na_position not in ("first", "last"):
            raise ValueError("na_position must be 'first' or 'last'")
        rel = self._rel
        keys = [
            exp.Ordered(this=rel.expr(n).copy(), desc=not asc, nulls_first=na_position == "first")
            for n, asc in zip(names, orders, strict=True)
        ]
        return self._derive(rel.sort(keys))

    def dropna(self, how: str = "any", thresh: int | None = None, subset: Any = None) -> DataFrame:
        """The rows without missing values: how='any' (none missing), 'all' (not all missing), or at least
        `thresh` present."""
        rel = self._rel
        names = self._names(subset) if subset is not None else self.columns
        present = [exp.Not(this=exp.Is(this=paren(rel.expr(n).copy()), expression=exp.Null())) for n in names]
        if not present:
            return self
        if thresh is not None:
            counted: exp.Expr = lit(0)
            for p in present:
                counted = exp.Add(this=counted, expression=as_number(p, "boolean"))
            cond: exp.Expr = exp.GTE(this=counted, expression=lit(int(thresh)))
        elif how == "any":
            cond = present[0]
            for p in present[1:]:
                cond = exp.And(this=cond, expression=p)
        elif how == "all":
            cond = present[0]
            for p in present[1:]:
                cond = exp.Or(this=cond, expression=p)
            cond = exp.Paren(this=cond)
        else:
            raise ValueError("how must be 'any' or 'all'")
        return self._derive(rel.filter(cond))

    def drop_duplicates(self, subset: Any = None) -> DataFrame:
        """Each distinct row once (or one row for each distinct combination of the `subset` columns)."""
        rel = self._rel.wrap() if self._rel.limit is not None else self._rel
        if subset is None:
            keep = [o for o in rel.order if any(o.this == e for _, e, _ in rel.items)]
            inner = rel.select()
            inner.set("distinct", exp.Distinct())
            inner.set("order", None)
            outer = Rel.over(inner, rel.kinds, rel.depth)
            if len(keep) == len(rel.order) and keep:
                names = [next(n for n, e, _ in rel.items if o.this == e) for o in keep]
                outer = outer.sort([replace_this(o, col(n)) for o, n in zip(keep, names, strict=True)])
            return self._derive(outer)
        names = self._names(subset)
        partition = [rel.expr(n).copy() for n in names]
        number = exp.Window(
            this=exp.RowNumber(), partition_by=partition, order=_order(rel.order) if rel.order else _order_by(partition)
        )
        rn = unique_name(HIDDEN + "rn", rel.columns)
        outer = rel.wrap([(rn, number)])
        return self._derive(outer.filter(exp.EQ(this=col(rn), expression=lit(1))))

    def isnull(self) -> DataFrame:
        """A proxy of Boolean columns: True where a value is missing."""
        rel = self._rel
        items = [(n, exp.Is(this=paren(e.copy()), expression=exp.Null()), "boolean") for n, e, _ in rel.items]
        return self._derive(rel.project(items))

    def notnull(self) -> DataFrame:
        """A proxy of Boolean columns: True where a value is present."""
        rel = self._rel
        items = [
            (n, exp.Not(this=exp.Is(this=paren(e.copy()), expression=exp.Null())), "boolean") for n, e, _ in rel.items
        ]
        return self._derive(rel.project(items))

    def cumsum(self, by: Any, ascending: bool = True, na_position: str = "last", skipna: bool = True) -> DataFrame:
        """The cumulative sums of the Float and Boolean columns after the rows are sorted by `by` (rows that tie
        on `by` are summed in no particular order)."""
        rel = self.sort_values(by, ascending, na_position)._rel
        if rel.limit is not None:
            rel = rel.wrap()
        keys = list(rel.order)
        sums: list[tuple[str, exp.Expr, str]] = []
        for n, e, k in rel.items:
            if k not in ("number", "boolean"):
                continue
            value = as_number(e, k)
            total: exp.Expr = _running(exp.Sum(this=value.copy()), keys)
            present: exp.Expr = exp.Not(this=exp.Is(this=paren(value.copy()), expression=exp.Null()))
            if not skipna:
                seen, valid = _running(exp.Count(this=exp.Star()), keys), _running(exp.Count(this=value.copy()), keys)
                present = exp.And(this=present, expression=exp.EQ(this=seen, expression=valid))
            # as pandas: a missing value stays missing (and with skipna=False, so does everything after it)
            total = exp.Case(ifs=[exp.If(this=present, true=total)])
            sums.append((f"{HIDDEN}c{len(sums)}", total, n))
        if not sums:
            raise ValueError("there are no Float or Boolean columns to sum")
        outer = rel.wrap([(h, e) for h, e, _ in sums])
        return self._derive(outer.project([(n, col(h), "number") for h, _, n in sums]))

    # ---- aggregates ---------------------------------------------------------------------------------------
    def _aggregate(self, build: Any, kinds: Sequence[str] | None, skipna: bool = True) -> pd.Series:
        rel = self._rel
        names = [n for n, k in rel.kinds.items() if kinds is None or k in kinds]
        if not names:
            return pd.Series(dtype=float)
        aggs = []
        for n in names:
            agg = build(as_number(col(n), rel.kind(n)))
            if not skipna:
                missing = exp.LT(this=exp.Count(this=col(n)), expression=exp.Count(this=exp.Star()))
                agg = exp.Case(ifs=[exp.If(this=missing, true=exp.Null())], default=agg)
            aggs.append(exp.Alias(this=agg, alias=col(n).this))
        frame = _io.run(rel.query_over(exp.Select(expressions=aggs)), {n: "number" for n in names})
        return pd.Series(frame.iloc[0].tolist() if len(frame) else [None] * len(names), index=names, dtype=float)

    def count(self, numeric_only: bool = False) -> pd.Series:
        """The number of values present in each column."""
        kinds = ("number", "boolean") if numeric_only else None
        return self._aggregate(lambda v: exp.Count(this=v), kinds).astype("int64")

    def sum(self, skipna: bool = True) -> pd.Series:
        """The sum of each Float and Boolean column."""
        return self._aggregate(lambda v: exp.Sum(this=v), ("number", "boolean"), skipna).astype(float)

    def mean(self, skipna: bool = True) -> pd.Series:
        """The mean of each Float and Boolean column."""
        return self._aggregate(lambda v: exp.Avg(this=v), ("number", "boolean"), skipna).astype(float)

    def min(self, skipna: bool = True) -> pd.Series:
        """The smallest value of each column."""
        return self._extremes(exp.Min, skipna)

    def max(self, skipna: bool = True) -> pd.Series:
        """The largest value of each column."""
        return self._extremes(exp.Max, skipna)

    def _extremes(self, fn: type[exp.Expr], skipna: bool) -> pd.Series:
        rel = self._rel
        aggs: list[exp.Expr] = []
        for n, k in rel.kinds.items():
            agg: exp.Expr = fn(this=as_number(col(n), k))
            if not skipna:
                missing = exp.LT(this=exp.Count(this=col(n)), expression=exp.Count(this=exp.Star()))
                agg = exp.Case(ifs=[exp.If(this=missing, true=exp.Null())], default=agg)
            aggs.append(exp.Alias(this=agg, alias=col(n).this))
        frame = _io.run(rel.query_over(exp.Select(expressions=aggs)), rel.kinds)
        row = frame.iloc[0].tolist() if len(frame) else [None] * len(rel.columns)
        out = [None if v is None or (isinstance(v, float) and pd.isna(v)) else v for v in row]
        return pd.Series(out, index=rel.columns, dtype=object).infer_objects()

    def nunique(self, dropna: bool = True) -> pd.Series:
        """The number of distinct values in each column."""
        return pd.Series({n: self[n].nunique(dropna) for n in self.columns}, dtype="int64")

    def std(self, skipna: bool = True, ddof: int = 1) -> pd.Series:
        """The standard deviation of each Float and Boolean column (centred in the database, then summed)."""
        rel = self._rel
        names = [n for n, k in rel.kinds.items() if k in ("number", "boolean")]
        if not names:
            return pd.Series(dtype=float)
        centred = []
        for n in names:
            value = as_number(col(n), rel.kind(n))
            mean = exp.Window(this=exp.Avg(this=value.copy()))
            centred.append(exp.Alias(this=exp.Sub(this=value, expression=mean), alias=col(n).this))
            centred.append(exp.Alias(this=as_number(col(n), rel.kind(n)), alias=col(HIDDEN + n).this))
        inner = rel.query_over(exp.Select(expressions=centred))
        outer = exp.Select(expressions=[_std_of(n, ddof, skipna) for n in names])
        outer.set("from_", exp.From(this=exp.Subquery(this=inner, alias=exp.TableAlias(this=col("S").this))))
        frame = _io.run(outer, {n: "number" for n in names})
        return pd.Series(frame.iloc[0].tolist(), index=names, dtype=float)

    # ---- the stats helper's methods (oml.core.stats) -------------------------------------------------------
    def _relation(self) -> tuple[exp.Select, dict[str, str], Any]:
        """The proxy's query, its columns' kinds and the function that runs a query (oml.core.stats.Relation,
        what oml.graphics takes)."""
        return self._rel.select(), dict(self._rel.kinds), _io.run

    def _stats(self) -> Any:
        import importlib

        return importlib.import_module("oml.core.stats")

    def describe(self, percentiles: Any = None, include: Any = None, exclude: Any = None) -> pd.DataFrame:
        """Descriptive statistics of each column, computed in the database."""
        return self._stats().describe(
            self._rel.select(), self._rel.kinds, _io.run, percentiles=percentiles,
            include=_kind_spec(include), exclude=_kind_spec(exclude),
        )  # fmt: skip

    def corr(self, method: str = "pearson", min_periods: int = 1, skipna: bool = True) -> pd.DataFrame:
        """Pairwise correlation of the Float columns."""
        if not skipna:
            raise ValueError("corr(skipna=False) is not supported: pairs with a missing value are always skipped")
        return self._stats().corr(self._rel.select(), self._rel.kinds, _io.run, method=method, min_periods=min_periods)

    def median(self, skipna: bool = True) -> pd.Series:
        """The median of each Float column."""
        return self._stats().median(self._rel.select(), self._rel.kinds, _io.run, skipna=skipna)

    def kurtosis(self, skipna: bool = True) -> pd.Series:
        """The kurtosis of each Float column."""
        return self._stats().kurtosis(self._rel.select(), self._rel.kinds, _io.run, skipna=skipna)

    def skew(self, skipna: bool = True) -> pd.Series:
        """The skewness of each Float column."""
        return self._stats().skew(self._rel.select(), self._rel.kinds, _io.run, skipna=skipna)

    def crosstab(
        self,
        index: Any,
        columns: Any = None,
        hue: Any = None,
        pivot: bool = False,
        margins: bool = False,
        **kwargs: Any,
    ) -> DataFrame:
        """A cross-tabulation of the given columns (a proxy: computed in the database)."""
        select, kinds = self._stats().crosstab(
            self._rel.select(), self._rel.kinds, index, columns=columns, hue=hue, pivot=pivot, margins=margins,
            run=_io.run, **kwargs,
        )  # fmt: skip
        return self._derive(Rel.over(select, kinds, self._rel.depth))

    def pivot_table(
        self,
        index: Any,
        columns: Any = None,
        values: Any = None,
        aggfunc: Any = "mean",
        margins: bool = False,
        **kwargs: Any,
    ) -> DataFrame:
        """A spreadsheet-style pivot table (a proxy: computed in the database). aggfunc may be a name, an
        oml.DataFrame method such as oml.DataFrame.median, or a list of them."""
        names = [_agg_name(a) for a in aggfunc] if isinstance(aggfunc, list | tuple) else _agg_name(aggfunc)
        select, kinds = self._stats().pivot_table(
            self._rel.select(), self._rel.kinds, index, columns=columns, values=values, aggfunc=names,
            margins=margins, run=_io.run, **kwargs,
        )  # fmt: skip
        return self._derive(Rel.over(select, kinds, self._rel.depth))

    # ---- combining and sampling (oml.core._combine, oml.core._sample) ----------------------------------------
    def concat(self, other: Any, auto_name: bool = False) -> DataFrame:
        """This proxy's columns side by side with another object's (a proxy, a column, a list of them, or a dict
        of name → object: a column is named by its key, a DataFrame's columns are prefixed by it)."""
        from oml.core._combine import concat

        return concat(self, other, auto_name)

    def merge(
        self,
        other: DataFrame,
        on: Any = None,
        left_on: Any = None,
        right_on: Any = None,
        how: str = "left",
        suffixes: Any = None,
    ) -> DataFrame:
        """A join with another proxy: on key columns (how='left', 'right', 'inner' or 'full'), or a cross join
        when no keys are given. Every column but the `on` keys gets a suffix (default '_l' and '_r')."""
        from oml.core._combine import merge

        return merge(self, other, on, left_on, right_on, how, suffixes)

    def append(self, other: DataFrame, all: bool = True) -> DataFrame:  # noqa: A002
        """This proxy's rows followed by another's with the same column types (UNION ALL; all=False drops
        duplicate rows). The columns keep this proxy's names."""
        from oml.core._combine import append

        return append(self, other, all)

    def split(
        self,
        ratio: Any = (0.7, 0.3),
        hash_cols: Any = None,
        seed: int = 12345,
        strata_cols: Any = None,
        use_hash: bool = True,
        nvl: Any = None,
    ) -> list[DataFrame]:
        """Split the rows into len(ratio) sets, in those proportions (a ratio summing to less than 1 samples)."""
        from oml.core._sample import split

        return split(self, ratio, hash_cols, seed, strata_cols, use_hash, nvl)

    def KFold(self, n_splits: int = 3, seed: int = 12345, hash_cols: Any = None, nvl: Any = None) -> list[tuple]:  # noqa: N802
        """n_splits (train, test) pairs of proxies: each row is in the test set of one fold."""
        from oml.core._sample import kfold

        return kfold(self, n_splits, seed, hash_cols, nvl)

    # ---- writing ------------------------------------------------------------------------------------------
    def materialize(self, table: str | None = None) -> DataFrame:
        """Store the rows as a table in your schema (a temporary one when no name is given) and return its
        proxy. The write happens in the database: no row comes to this process."""
        from oml.frame import _register_temporary

        name = table or TEMP_PREFIX + uuid.uuid4().hex[:16].upper()
        info = _io.write_query(name, self.sql, temporary=table is None)
        if table is None:
            _register_temporary(info["table_name"])
        kinds = _io.table_kinds(info)
        rel = Rel.table(info["table_name"], info["owner"], kinds)
        temps = frozenset({info["table_name"]}) if table is None else frozenset()
        return DataFrame._of(rel, temps, table=info["table_name"], owner=info["owner"])

    def _keep_temporary(self) -> list[str]:
        """The temporary tables this proxy reads (oml.ds.save makes them permanent, as Oracle keeps them)."""
        return sorted(self._temps)


def _is_all(spec: Any) -> bool:
    return isinstance(spec, slice) and spec == slice(None)


def _kinds_of(spec: Any) -> set[str]:
    items = spec if isinstance(spec, list | tuple | set) else [spec]
    kinds = set()
    for item in items:
        kind = _kind_of_type(item)
        if kind is None:
            raise ValueError(f"{item!r} is not an oml type (oml.Float, oml.String, oml.Boolean, oml.Bytes)")
        kinds.add(kind)
    return kinds


def _kind_of_type(item: Any) -> str | None:
    if isinstance(item, type) and issubclass(item, _Series):
        return item._kind
    if isinstance(item, str) and item in _io.STORED_KINDS.values():
        return item
    return None


def _kind_spec(spec: Any) -> Any:
    """describe's include/exclude for the stats helper: oml types become kind names; 'all' and None stay."""
    if spec is None or spec == "all":
        return spec
    return sorted(_kinds_of(spec))


def _agg_name(func: Any) -> str:
    if isinstance(func, str):
        return func
    name = getattr(func, "__name__", None)
    if not name:
        raise ValueError(f"{func!r} is not an aggregate function")
    return str(name)


def _order(keys: Sequence[exp.Ordered]) -> exp.Order:
    return exp.Order(expressions=[k.copy() for k in keys])


def _window_order(keys: Sequence[exp.Ordered]) -> exp.Order:
    """A window's ORDER BY: the proxy's sort keys, or ORDER BY NULL (no order; Oracle's ROW_NUMBER needs one)."""
    return _order(keys) if keys else exp.Order(expressions=[exp.Ordered(this=exp.Null(), nulls_first=False)])


def _order_by(exprs: Sequence[exp.Expr]) -> exp.Order:
    return exp.Order(expressions=[exp.Ordered(this=e.copy(), desc=False, nulls_first=False) for e in exprs])


def _running(fn: exp.Expr, keys: Sequence[exp.Ordered]) -> exp.Window:
    """fn over the rows up to this one, in the order of `keys`."""
    spec = exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")
    return exp.Window(this=fn, order=_order(keys), spec=spec)


def _std_of(name: str, ddof: int, skipna: bool) -> exp.Expr:
    d = col(name, "S")
    n = exp.Count(this=d.copy())
    var = exp.Div(
        this=exp.Sum(this=exp.Mul(this=d.copy(), expression=d.copy())),
        expression=exp.Nullif(this=exp.Sub(this=n, expression=lit(int(ddof))), expression=lit(0)),
    )
    value: exp.Expr = exp.Sqrt(this=exp.Cast(this=var, to=exp.DataType.build("DOUBLE")))
    value = exp.Case(ifs=[exp.If(this=exp.GT(this=exp.Count(this=d.copy()), expression=lit(int(ddof))), true=value)])
    if not skipna:
        missing = exp.LT(this=exp.Count(this=col(HIDDEN + name, "S")), expression=exp.Count(this=exp.Star()))
        value = exp.Case(ifs=[exp.If(this=missing, true=exp.Null())], default=value)
    return exp.Alias(this=value, alias=col(name).this)
