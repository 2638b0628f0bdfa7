"""Small builders of portable Oracle-dialect SQL for `oml.core.stats`, `oml.core._pivot` and `oml.graphics`: names
are always quoted identifiers and values always literals made by sqlglot, never text pasted into SQL."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import pandas as pd
from sqlglot import exp

#: Runs one query through the read door (`POST /oml/api/pyqd/v1/query`) and answers its rows.
Run = Callable[[exp.Query], pd.DataFrame]
#: Column name -> "number", "string", "boolean", "bytes" or "datetime".
Kinds = dict[str, str]
#: The alias of the proxy's query inside the statistics' queries.
SOURCE = "PYQD_T"
#: Longest query the server accepts, characters (the gate's limit).
MAX_QUERY_CHARS = 100_000


def fits(query: exp.Query) -> bool:
    """Whether the server accepts a query this long (statistics of many columns split into several queries)."""
    return len(query.sql(dialect="oracle")) <= MAX_QUERY_CHARS


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def col(name: str) -> exp.Column:
    return exp.column(ident(name))


def alias(expression: exp.Expression, name: str) -> exp.Alias:
    return exp.Alias(this=expression, alias=ident(name))


def from_(select: exp.Select) -> exp.Subquery:
    """The proxy's query as the source of another query."""
    return select.subquery(ident(SOURCE))


def count_star() -> exp.Count:
    return exp.Count(this=exp.Star())


def is_null(expression: exp.Expression) -> exp.Is:
    return exp.Is(this=expression, expression=exp.Null())


def all_of(conditions: Sequence[exp.Expression]) -> exp.Expression:
    """`a AND b AND ...`"""
    return functools.reduce(lambda a, b: exp.And(this=a, expression=b), conditions)


def any_of(conditions: Sequence[exp.Expression]) -> exp.Expression:
    """`(a OR b OR ...)`, in parentheses so that it can stand inside an AND."""
    return exp.paren(functools.reduce(lambda a, b: exp.Or(this=a, expression=b), conditions))


def number(value: float) -> exp.Expression:
    """A float literal that reads back as the same double (Python's repr is the shortest exact form)."""
    return exp.Literal.number(repr(float(value)))


def num(name: str, kind: str) -> exp.Expression:
    """A column as a double: Booleans as 1.0/0.0 (PostgreSQL cannot cast them to double; SQLite stores 1/0)."""
    column = col(name)
    if kind == "boolean":
        one, zero = exp.Literal.number("1.0"), exp.Literal.number("0.0")
        return exp.Case().when(column, one).when(exp.Not(this=column.copy()), zero)
    return exp.cast(column, exp.DataType.build("double"))


def window(
    function: exp.Expression, partition: Sequence[exp.Expression] = (), order: Sequence[exp.Expression] = ()
) -> exp.Window:
    """`function OVER (PARTITION BY ... ORDER BY ...)`; ascending order puts NULLs last, as Oracle does."""
    args: dict[str, object] = {"this": function}
    if partition:
        args["partition_by"] = [p.copy() for p in partition]
    if order:
        args["order"] = exp.Order(expressions=[exp.Ordered(this=o.copy(), nulls_first=False) for o in order])
    return exp.Window(**args)
