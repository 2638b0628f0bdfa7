"""Column proxies, as in Oracle's OML4Py: `oml.Float` (NUMBER, BINARY_DOUBLE), `oml.String` (VARCHAR2, CLOB),
`oml.Boolean` (0, 1 and NULL), `oml.Bytes` (RAW, BLOB) and `oml.Datetime` (DATE, TIMESTAMP).

A column proxy is a query's row source (a `Rel`) and one expression over it; operators and methods build new
expressions, and nothing runs until a value is asked for (`pull`, an aggregate, `len`). Aggregates return Python
scalars; `pull()` returns a list, as Oracle's do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlglot import exp

from oml.core import _io
from oml.core._sql import (
    DIALECT,
    HIDDEN,
    MAX_NODES,
    Rel,
    as_double,
    as_number,
    col,
    lit,
    paren,
    size,
)

if TYPE_CHECKING:
    from oml.core.frame import DataFrame

#: The output name of an unnamed column (a comparison, a computed value).
VALUE_NAME = HIDDEN + "v"


class _Series:
    """What every column proxy has: its rows, its expression, its name."""

    _kind = "string"

    def __init__(self, rel: Rel, expr: exp.Expr, name: str | None, temps: frozenset[str] = frozenset()) -> None:
        if size(expr) > MAX_NODES:
            raise ValueError("the expression has grown too large; materialize() an intermediate result first")
        self._rel, self._expr, self._name, self._temps = rel, expr, name, temps

    # ---- identity -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._name

    @property
    def sql(self) -> str:
        """The query of this column (Oracle SQL)."""
        return self._frame_rel().sql()

    @property
    def columns(self) -> list[str]:
        return [self._out_name()]

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def _out_name(self) -> str:
        return self._name if self._name is not None else VALUE_NAME

    def _frame_rel(self, name: str | None = None) -> Rel:
        return self._rel.project([(name or self._out_name(), self._expr, self._kind)])

    def _relation(self) -> tuple[Any, dict[str, str], Any]:
        """A one-column relation (oml.core.stats.Relation, what oml.graphics takes)."""
        return self._to_frame()._relation()

    def _to_frame(self, name: str | None = None) -> DataFrame:
        from oml.core.frame import DataFrame

        return DataFrame._of(self._frame_rel(name), self._temps)

    def _new(self, expr: exp.Expr, cls: type[_Series] | None = None, name: Any = ...) -> Any:
        return (cls or type(self))(self._rel, expr, self._name if name is ... else name, self._temps)

    def _with_rel(self, rel: Rel) -> Any:
        """This column's values in `rel`, a query whose single output is this column."""
        return type(self)(rel, rel.expr(rel.columns[0]), self._name, self._temps)

    # ---- pickling: the SQL text, the name and the kind only ------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "sql": self._frame_rel().select().sql(dialect=DIALECT),
            "name": self._name,
            "kind": self._kind,
            "temps": sorted(self._temps),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        out = state["name"] if state["name"] is not None else VALUE_NAME
        rel = Rel.parse(state["sql"], {out: state["kind"]})
        self._rel, self._expr, self._name = rel, rel.expr(out), state["name"]
        self._temps = frozenset(state.get("temps", ()))

    # ---- combining with other columns -----------------------------------------------------------------------
    def _operand(self, other: Any) -> tuple[exp.Expr, str, str | None]:
        """`other` as a source-level expression over this column's rows, its kind and its name."""
        if isinstance(other, _Series):
            if other._rel is not self._rel and other._rel.rows_key() != self._rel.rows_key():
                raise ValueError("the columns come from different rows; take both from the same oml.DataFrame")
            return other._expr, other._kind, other._name
        if isinstance(other, _frame_class()):
            raise TypeError("cannot combine a column with an oml.DataFrame")
        return lit(other), _scalar_kind(other), self._name

    def _compare(self, other: Any, op: type[exp.Expr]) -> Boolean:
        right, kind, _ = self._operand(other)
        left = self._expr
        if self._kind == "boolean" and kind == "number":
            left = as_number(left, "boolean")
        elif kind == "boolean" and self._kind == "number":
            right = as_number(right, "boolean")
        return Boolean(self._rel, op(this=paren(left.copy()), expression=paren(right.copy())), None, self._temps)

    def __eq__(self, other: Any) -> Boolean:  # type: ignore[override]
        return self._compare(other, exp.EQ)

    def __ne__(self, other: Any) -> Boolean:  # type: ignore[override]
        return self._compare(other, exp.NEQ)

    def __lt__(self, other: Any) -> Boolean:
        return self._compare(other, exp.LT)

    def __le__(self, other: Any) -> Boolean:
        return self._compare(other, exp.LTE)

    def __gt__(self, other: Any) -> Boolean:
        return self._compare(other, exp.GT)

    def __ge__(self, other: Any) -> Boolean:
        return self._compare(other, exp.GTE)

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError("the truth value of an oml column is ambiguous; use & | ~ and filter an oml.DataFrame")

    def isnull(self) -> Boolean:
        """True where the value is missing."""
        return Boolean(self._rel, exp.Is(this=paren(self._expr.copy()), expression=exp.Null()), None, self._temps)

    def notnull(self) -> Boolean:
        """True where the value is present."""
        return ~self.isnull()

    # ---- rows ---------------------------------------------------------------------------------------------
    def head(self, n: int = 5) -> Any:
        """The first n values, as a column proxy."""
        return self._with_rel(self._frame_rel().head(n))

    def tail(self, n: int = 5) -> Any:
        """The last n values, as a column proxy."""
        return self._with_rel(self._to_frame().tail(n)._rel)

    def sort_values(self, ascending: bool = True, na_position: str = "last") -> Any:
        """The values sorted."""
        return self._with_rel(self._to_frame().sort_values(self._out_name(), ascending, na_position)._rel)

    def dropna(self) -> Any:
        """The values that are not missing."""
        return self._with_rel(self._to_frame().dropna()._rel)

    def drop_duplicates(self) -> Any:
        """Each distinct value once."""
        return self._with_rel(self._to_frame().drop_duplicates()._rel)

    def unique(self) -> Any:
        """Each distinct value once (as drop_duplicates: a column proxy)."""
        return self.drop_duplicates()

    def append(self, other: _Series, all: bool = True) -> Any:  # noqa: A002
        """This column's values followed by another column's of the same type (UNION ALL; all=False drops
        duplicates)."""
        if type(other) is not type(self):
            raise TypeError(f"can only append an {type(self).__name__} to an {type(self).__name__}")
        frame = self._to_frame().append(other._to_frame(self._out_name()), all=all)
        return self._with_rel(frame._rel)

    def concat(self, other: Any, auto_name: bool = False) -> DataFrame:
        """An oml.DataFrame of this column and the other object(s)' columns, side by side."""
        return self._to_frame().concat(other, auto_name=auto_name)

    def pull(self) -> list[Any]:
        """The values, as a Python list."""
        frame = _io.run(self._frame_rel().select(), {self._out_name(): self._kind})
        return frame.iloc[:, 0].tolist() if len(frame.columns) else []

    def tolist(self) -> list[Any]:
        """The values, as a Python list (the same as pull)."""
        return self.pull()

    def __len__(self) -> int:
        return self._to_frame().__len__()

    def __iter__(self) -> Any:
        return iter(self.pull())

    def __repr__(self) -> str:
        try:
            return repr(self._frame_preview())
        except Exception:  # noqa: BLE001 - a repr must not fail (not connected, a dropped table)
            return f"<oml.{type(self).__name__} {self._name or ''}>"

    def _frame_preview(self) -> list[Any]:
        return self.head(pd.get_option("display.max_rows") or 60).pull()

    # ---- aggregates (Python scalars) --------------------------------------------------------------------
    def _aggregate(self, build: Callable[[exp.Expr], exp.Expr], skipna: bool = True) -> Any:
        value = col(self._out_name())
        agg = build(value)
        if not skipna:
            missing = exp.LT(this=exp.Count(this=value.copy()), expression=exp.Count(this=exp.Star()))
            agg = exp.Case(ifs=[exp.If(this=missing, true=exp.Null())], default=agg)
        query = self._frame_rel().query_over(exp.Select(expressions=[exp.Alias(this=agg, alias=col("V").this)]))
        frame = _io.run(query, {"V": "number"})
        value_out = frame.iloc[0, 0] if len(frame) else None
        return None if value_out is None or pd.isna(value_out) else _py(value_out)

    def count(self) -> int:
        """The number of values that are not missing."""
        return int(self._aggregate(lambda v: exp.Count(this=v)) or 0)

    def nunique(self, dropna: bool = True) -> int:
        """The number of distinct values (missing ones counted once if dropna=False)."""
        distinct = int(self._aggregate(lambda v: exp.Count(this=exp.Distinct(expressions=[v]))) or 0)
        if not dropna and self.count() < len(self):
            distinct += 1
        return distinct

    def min(self, skipna: bool = True) -> Any:
        """The smallest value."""
        return self._extreme(exp.Min, skipna)

    def max(self, skipna: bool = True) -> Any:
        """The largest value."""
        return self._extreme(exp.Max, skipna)

    def _extreme(self, fn: type[exp.Expr], skipna: bool) -> Any:
        if self._kind == "boolean":
            value = self._aggregate(lambda v: fn(this=as_number(v, "boolean")), skipna)
            return None if value is None else bool(value)
        frame_rel = self._frame_rel()
        agg: exp.Expr = fn(this=col(self._out_name()))
        query = frame_rel.query_over(exp.Select(expressions=[exp.Alias(this=agg, alias=col("V").this)]))
        frame = _io.run(query, {"V": self._kind})
        if not len(frame) or pd.isna(frame.iloc[0, 0]):
            return None
        if not skipna and self.count() < len(self):
            return None
        return _py(frame.iloc[0, 0])

    def describe(self, percentiles: Any = None) -> Any:
        """Descriptive statistics of the column (computed in the database)."""
        return self._to_frame().describe(percentiles=percentiles).iloc[:, 0]


class Float(_Series):
    """A numeric column (NUMBER, BINARY_DOUBLE, BINARY_FLOAT)."""

    _kind = "number"

    def _number(self, other: Any) -> tuple[exp.Expr, str | None]:
        right, kind, name = self._operand(other)
        if kind not in ("number", "boolean"):
            raise TypeError("arithmetic needs numbers")
        out = self._name if name == self._name else None
        return as_number(right, kind), out

    def _arith(self, other: Any, build: Callable[[exp.Expr, exp.Expr], exp.Expr], rev: bool) -> Float:
        right, name = self._number(other)
        left = self._expr
        a, b = (right, left) if rev else (left, right)
        return Float(self._rel, build(paren(a.copy()), paren(b.copy())), name, self._temps)

    def __add__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Add(this=a, expression=b), False)

    def __radd__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Add(this=a, expression=b), True)

    def __sub__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Sub(this=a, expression=b), False)

    def __rsub__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Sub(this=a, expression=b), True)

    def __mul__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Mul(this=a, expression=b), False)

    def __rmul__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Mul(this=a, expression=b), True)

    def __truediv__(self, other: Any) -> Float:
        return self._arith(other, _divide, False)

    def __rtruediv__(self, other: Any) -> Float:
        return self._arith(other, _divide, True)

    def __floordiv__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Floor(this=_divide(a, b)), False)

    def __rfloordiv__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Floor(this=_divide(a, b)), True)

    def __mod__(self, other: Any) -> Float:
        return self._arith(other, _modulo, False)

    def __rmod__(self, other: Any) -> Float:
        return self._arith(other, _modulo, True)

    def __pow__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Pow(this=as_double(a), expression=b), False)

    def __rpow__(self, other: Any) -> Float:
        return self._arith(other, lambda a, b: exp.Pow(this=as_double(a), expression=b), True)

    def __neg__(self) -> Float:
        return self._new(exp.Neg(this=paren(self._expr.copy())))

    def __pos__(self) -> Float:
        return self

    def __abs__(self) -> Float:
        return self._new(exp.Abs(this=self._expr.copy()))

    def abs(self) -> Float:
        """The absolute values."""
        return abs(self)

    def exp(self) -> Float:
        """e to the power of each value (NULL where it would overflow a binary double)."""
        x = self._expr.copy()
        return self._new(_where(exp.LT(this=paren(x), expression=lit(709)), exp.Exp(this=as_double(x.copy()))))

    def log(self, base: float | None = None) -> Float:
        """The natural logarithm (or the logarithm to `base`); NULL where the value is not positive."""
        x = self._expr.copy()
        ln: exp.Expr = exp.Ln(this=as_double(x.copy()))
        if base is not None:
            if not base > 0 or base == 1:
                raise ValueError("base must be positive and not 1")
            ln = exp.Div(this=ln, expression=exp.Ln(this=as_double(lit(float(base)))))
        return self._new(_where(exp.GT(this=paren(x), expression=lit(0)), ln))

    def sqrt(self) -> Float:
        """The square roots; NULL where the value is negative."""
        x = self._expr.copy()
        return self._new(_where(exp.GTE(this=paren(x), expression=lit(0)), exp.Sqrt(this=as_double(x.copy()))))

    def ceil(self) -> Float:
        """The smallest integers not below the values."""
        return self._new(exp.Ceil(this=self._expr.copy()))

    def floor(self) -> Float:
        """The largest integers not above the values."""
        return self._new(exp.Floor(this=self._expr.copy()))

    def round(self, decimals: int = 0) -> Float:
        """The values rounded to `decimals` places (half away from zero, as Oracle's ROUND)."""
        number = exp.Cast(this=self._expr.copy(), to=exp.DataType.build("DECIMAL"))
        return self._new(exp.Round(this=number, decimals=lit(int(decimals))))

    def cumsum(self, ascending: bool = True, na_position: str = "last", skipna: bool = True) -> Float:
        """The cumulative sum after the values are sorted."""
        frame = self._to_frame()
        return self._with_rel(frame.cumsum(frame.columns[0], ascending, na_position, skipna)._rel)

    def sum(self, skipna: bool = True) -> float | None:
        """The sum of the values."""
        return _float(self._aggregate(lambda v: exp.Sum(this=v), skipna))

    def mean(self, skipna: bool = True) -> float | None:
        """The mean of the values."""
        return _float(self._aggregate(lambda v: exp.Avg(this=v), skipna))

    def std(self, skipna: bool = True, ddof: int = 1) -> float | None:
        """The standard deviation of the values (sample standard deviation, ddof=1)."""
        frame = self._to_frame()
        value = frame.std(skipna=skipna, ddof=ddof).iloc[0]
        return None if pd.isna(value) else float(value)

    def median(self, skipna: bool = True) -> float | None:
        """The median of the values."""
        value = self._to_frame().median(skipna=skipna).iloc[0]
        return None if pd.isna(value) else float(value)

    def kurtosis(self, skipna: bool = True) -> float | None:
        """The excess kurtosis of the values: Oracle's biased moment m4/m2**2 - 3 (pandas corrects for bias)."""
        value = self._to_frame().kurtosis(skipna=skipna).iloc[0]
        return None if pd.isna(value) else float(value)

    def skew(self, skipna: bool = True) -> float | None:
        """The skewness of the values: Oracle's biased moment m3/m2**1.5 (pandas corrects for bias)."""
        value = self._to_frame().skew(skipna=skipna).iloc[0]
        return None if pd.isna(value) else float(value)


class String(_Series):
    """A character column (VARCHAR2, CHAR, CLOB)."""

    _kind = "string"

    def __add__(self, other: Any) -> String:
        right, kind, _ = self._operand(other)
        if kind != "string":
            raise TypeError("can only concatenate strings")
        return self._new(exp.DPipe(this=paren(self._expr.copy()), expression=paren(right.copy()), safe=True))

    def __radd__(self, other: Any) -> String:
        right, kind, _ = self._operand(other)
        if kind != "string":
            raise TypeError("can only concatenate strings")
        return self._new(exp.DPipe(this=paren(right.copy()), expression=paren(self._expr.copy()), safe=True))

    def len(self) -> Float:
        """The length of each string."""
        return Float(self._rel, exp.Length(this=self._expr.copy()), self._name, self._temps)

    def count_pattern(self, pat: str, flags: int = 0) -> Float:
        """The number of (non-overlapping) occurrences of `pat` in each string. The pattern is matched as plain
        text: SQLite has no regular expressions, so regular-expression syntax is refused."""
        if not isinstance(pat, str) or not pat:
            raise ValueError("pat must be a non-empty string")
        if flags:
            raise ValueError("flags are not supported")
        if any(ch in pat for ch in r".^$*+?{}[]\|()"):
            raise ValueError("count_pattern matches plain text here; regular-expression characters are refused")
        x = self._expr
        removed = exp.func("REPLACE", x.copy(), lit(pat), lit(""), dialect="oracle")
        # Oracle's LENGTH('') is NULL ('' is NULL there): COALESCE gives 0 on every backend.
        removed_length = exp.Coalesce(this=exp.Length(this=removed), expressions=[lit(0)])
        difference = exp.Sub(this=exp.Length(this=x.copy()), expression=removed_length)
        count = exp.Div(this=paren(difference), expression=lit(len(pat)))
        return Float(self._rel, exp.Floor(this=count), self._name, self._temps)

    def find(self, sub: str, start: int = 0) -> Float:
        """The lowest index (from 0) at or after `start` where `sub` is found, -1 where it is not (str.find)."""
        if not isinstance(sub, str) or not sub:
            raise ValueError("sub must be a non-empty string")
        start = int(start)
        if start < 0:
            raise ValueError("start must be 0 or more")
        x = self._expr
        tail = x.copy() if start == 0 else exp.Substring(this=x.copy(), start=lit(start + 1))
        pos = exp.StrPosition(this=tail, substr=lit(sub))
        found = exp.Add(this=pos.copy(), expression=lit(start - 1))
        present = exp.Not(this=exp.Is(this=x.copy(), expression=exp.Null()))
        missing = exp.Case(ifs=[exp.If(this=present, true=lit(-1))])
        value = exp.Case(ifs=[exp.If(this=exp.GT(this=pos, expression=lit(0)), true=found)], default=missing)
        return Float(self._rel, value, self._name, self._temps)


class Boolean(_Series):
    """A logical column (0, 1 and NULL in the database)."""

    _kind = "boolean"

    def _logic(self, other: Any, op: type[exp.Expr]) -> Boolean:
        right, kind, _ = self._operand(other)
        if kind != "boolean":
            raise TypeError("& and | need boolean columns")
        return Boolean(self._rel, op(this=paren(self._expr.copy()), expression=paren(right.copy())), None, self._temps)

    def __and__(self, other: Any) -> Boolean:
        return self._logic(other, exp.And)

    def __or__(self, other: Any) -> Boolean:
        return self._logic(other, exp.Or)

    __rand__ = __and__
    __ror__ = __or__

    def __invert__(self) -> Boolean:
        return self._new(exp.Not(this=paren(self._expr.copy())), name=None)

    def sum(self, skipna: bool = True) -> float | None:
        """The number of True values."""
        return _float(self._aggregate(lambda v: exp.Sum(this=as_number(v, "boolean")), skipna))

    def mean(self, skipna: bool = True) -> float | None:
        """The share of True values."""
        return _float(self._aggregate(lambda v: exp.Avg(this=as_number(v, "boolean")), skipna))


class Bytes(_Series):
    """A binary column (RAW, BLOB)."""

    _kind = "bytes"

    def len(self) -> Float:
        """The length of each value, in bytes."""
        return Float(self._rel, exp.Length(this=self._expr.copy()), self._name, self._temps)


class Datetime(_Series):
    """A date or timestamp column (DATE, TIMESTAMP)."""

    _kind = "datetime"


SERIES_CLASSES: dict[str, type[_Series]] = {
    "number": Float,
    "string": String,
    "boolean": Boolean,
    "bytes": Bytes,
    "datetime": Datetime,
}


def series_of(rel: Rel, name: str, temps: frozenset[str] = frozenset()) -> _Series:
    """The column proxy of one output column of a query."""
    return SERIES_CLASSES[rel.kind(name)](rel, rel.expr(name), name, temps)


def _frame_class() -> type:
    from oml.core.frame import DataFrame

    return DataFrame


def _scalar_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if value is None:
        return "null"
    return "number"


def _divide(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    """a / b in true division; NULL where b is 0 (SQLite gives NULL, PostgreSQL and Oracle raise)."""
    # Oracle's division is true division; the gate's rewrite casts for SQLite's and PostgreSQL's integer division.
    return exp.Div(this=a, expression=exp.Nullif(this=b, expression=lit(0)))


def _modulo(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    """Python's a % b (the sign of b), as pandas; NULL where b is 0."""
    quotient = exp.Floor(this=_divide(a.copy(), b.copy()))
    return exp.Sub(this=a, expression=exp.Mul(this=paren(b), expression=quotient))


def _where(cond: exp.Expr, value: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=value)])


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
