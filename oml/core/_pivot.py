"""Cross tabulations and pivot tables (Oracle's `oml.DataFrame.crosstab` and `pivot_table`) as lazy queries.

Both answer a new Select and the kinds of its columns; the frame wraps them in a proxy, so a crosstab of a large
table stays in the database until pulled. A pivot needs the categories of its `columns` first: one small query
(at most `MAX_PIVOT_COLUMNS` rows) through `run`. Above Oracle's 1000-column limit the categories with the most
rows are kept, as Oracle does (with a warning).

Naming follows Oracle's listings: the long form has a `count` column (or `median(VALUE)` for an aggregate), pivoted
columns are `count_(L)`, `mean_SPEED_(L)`, margins are labelled `All`, and NULL is a category of its own (`None`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from oml.core._stats_sql import (
    MAX_QUERY_CHARS,
    Kinds,
    Run,
    alias,
    all_of,
    any_of,
    col,
    count_star,
    from_,
    ident,
    is_null,
    num,
    number,
    window,
)

#: Most columns of a pivoted result (Oracle Database's limit on a table's columns).
MAX_PIVOT_COLUMNS = 1000
#: The label of margins (totals).
MARGINS = "All"
#: The aggregates a crosstab or pivot table computes (Oracle passes oml.DataFrame.mean etc.; names work too).
AGGREGATES = ("count", "sum", "mean", "min", "max", "median", "std", "var", "nunique")
_ON_NUMBERS = {"sum", "mean", "median", "std", "var"}
_ORDER = "PYQD_K"


@dataclass
class _Cell:
    """One output column: an aggregate over the rows of a group that match `cond`."""

    alias: str
    agg: str  # "size" counts rows; the others aggregate `value`
    value: str | None = None
    cond: exp.Expression | None = None
    part: tuple[str, ...] = ()  # the rows the windows of median/std/var see: the group and `cond`'s columns
    norm: str | None = None  # divide by the group's rows ("group"), all rows ("total") or the column's sum ("column")
    guard: bool = False  # NULL when no row matches (a pivot table's missing cell), as pandas


@dataclass
class _Member:
    """One SELECT of the result: its labels (output name -> expression) grouped by `group`."""

    labels: list[tuple[str, exp.Expression]]
    group: list[str]
    cells: list[_Cell]
    windows: dict[tuple[str, str, tuple[str, ...]], str] = field(default_factory=dict)


def crosstab(
    select: exp.Select,
    kinds: Kinds,
    index: str | list[str],
    columns: str | list[str] | None = None,
    hue: str | None = None,
    values: str | None = None,
    aggfunc: Any = None,
    pivot: bool = False,
    margins: bool = False,
    normalize: Any = False,
    *,
    run: Run | None = None,
) -> tuple[exp.Select, Kinds]:
    """Row counts (or `aggfunc` of `values`) per combination of `index`, `columns` and `hue`: one row per
    combination with a `count` column, or with `pivot=True` one row per `index` and one column per category of
    `columns` (and `hue`). `margins` adds `All` totals (pivot only); `normalize` ('all'/True, 'index'/0,
    'columns'/1) divides counts by the totals."""
    rows = _names(index, kinds, "index")
    pivots = _names(columns, kinds, "columns") + _names(hue, kinds, "hue")
    _distinct(rows + pivots)
    if (values is None) != (aggfunc is None):
        raise ValueError("values and aggfunc go together: give both or neither")
    agg = _aggregate(aggfunc) if aggfunc is not None else "size"
    if values is not None:
        _check_value(kinds, values, agg, rows + pivots)
    norm = _normalize(normalize)
    if norm and values is not None:
        raise ValueError("normalize divides counts: it cannot be used with values and aggfunc")
    name = "count" if values is None else f"{agg}({values})"
    if not pivot or not pivots:
        if margins:
            raise ValueError("margins needs pivot=True and columns")
        return _long(
            select, kinds, rows + pivots, _Cell(name, agg, values, part=tuple(rows + pivots)), rows, pivots, norm
        )
    categories = _categories(select, kinds, pivots, _need(run), MAX_PIVOT_COLUMNS - len(rows) - int(margins))
    main, total = [], []
    by_norm = {None: None, "index": "group", "columns": "column", "all": "total"}
    for combo, label in categories:
        cond = _match(pivots, combo, kinds)
        main.append(
            _Cell(f"{name}_({label})", agg, values, cond, tuple(rows + pivots), by_norm[norm], values is not None)
        )
        total.append(
            _Cell(
                f"{name}_({label})",
                agg,
                values,
                cond.copy(),
                tuple(pivots),
                "group" if norm else None,
                values is not None,
            )
        )
    if margins and norm != "index":  # pandas drops the All column of row-normalized tables (it is all 1)
        main.append(_Cell(f"{name}_({MARGINS})", agg, values, None, tuple(rows), by_norm[norm], values is not None))
        total.append(_Cell(f"{name}_({MARGINS})", agg, values, None, (), "group" if norm else None, values is not None))
    cell_kind = _cell_kind(kinds, agg, values)
    members = [_Member(_labels(rows, kinds, margins), rows, main)]
    if margins and norm != "columns":  # ... and the All row of column-normalized ones
        members.append(_Member([(r, exp.Literal.string(MARGINS)) for r in rows], [], total))
    return _query(select, kinds, members, rows, margins), _out_kinds(kinds, rows, margins, main, cell_kind)


def pivot_table(
    select: exp.Select,
    kinds: Kinds,
    index: str | list[str],
    columns: str | list[str] | None = None,
    values: str | list[str] | None = None,
    aggfunc: Any = "mean",
    margins: bool = False,
    *,
    run: Run | None = None,
) -> tuple[exp.Select, Kinds]:
    """`aggfunc` (one or a list: oml.DataFrame.mean, .median, ... or their names) of `values` (default: every
    float column not grouped) per `index`, with one column per category of `columns`, named like
    `mean_SPEED_(L)`; `margins` adds the `All` row and columns."""
    rows = _names(index, kinds, "index")
    pivots = _names(columns, kinds, "columns")
    _distinct(rows + pivots)
    aggs = [_aggregate(a) for a in (aggfunc if isinstance(aggfunc, list | tuple) else [aggfunc])]
    if values is None:
        measured = [c for c, k in kinds.items() if k == "number" and c not in rows + pivots]
    else:
        measured = _names(values, kinds, "values")
    if not measured or not aggs:
        raise ValueError("no values to aggregate: give values (float columns not in index or columns)")
    for value in measured:
        for agg in aggs:
            _check_value(kinds, value, agg, rows + pivots)
    per_category = len(aggs) * len(measured)
    categories: list[tuple[tuple[Any, ...], str]] = []
    if pivots:
        limit = (MAX_PIVOT_COLUMNS - len(rows)) // per_category - int(margins)
        categories = _categories(select, kinds, pivots, _need(run), limit)
    main, total, cell_kinds = [], [], {}
    for agg in aggs:
        for value in measured:
            stem = f"{agg}_{value}"
            names: list[tuple[str, exp.Expression | None]]
            names = [(f"{stem}_({label})", _match(pivots, combo, kinds)) for combo, label in categories]
            if not pivots:
                names = [(stem, None)]
            elif margins:
                names.append((f"{stem}_({MARGINS})", None))
            for alias_, cond in names:
                pivoted = cond is not None
                main.append(_Cell(alias_, agg, value, cond, tuple(rows + (pivots if pivoted else [])), guard=True))
                again = cond.copy() if cond is not None else None
                total.append(_Cell(alias_, agg, value, again, tuple(pivots if pivoted else []), guard=True))
                cell_kinds[alias_] = _cell_kind(kinds, agg, value)
    members = [_Member(_labels(rows, kinds, margins), rows, main)]
    if margins:
        members.append(_Member([(r, exp.Literal.string(MARGINS)) for r in rows], [], total))
    out = {r: ("string" if margins else kinds[r]) for r in rows} | cell_kinds
    return _query(select, kinds, members, rows, margins), out


# --- building ----------------------------------------------------------------------------------------------


def _long(
    select: exp.Select,
    kinds: Kinds,
    group: list[str],
    cell: _Cell,
    rows: list[str],
    pivots: list[str],
    norm: str | None,
) -> tuple[exp.Select, Kinds]:
    """One row per combination of the grouping columns (normalized within the index or the columns groups)."""
    member = _Member([(g, col(g)) for g in group], group, [cell])
    query = _member_select(select, kinds, member)
    if norm:
        over = {"index": rows, "columns": pivots, "all": []}[norm]
        expression = query.expressions[-1].this
        share = exp.Div(this=expression, expression=window(exp.Sum(this=expression.copy()), [col(c) for c in over]))
        query.expressions[-1].set("this", share)
    query = query.order_by(*[_ascending(col(g)) for g in group])
    out = {g: kinds[g] for g in group} | {cell.alias: _cell_kind(kinds, cell.agg, cell.value)}
    return _checked(query, list(out)), out


def _query(select: exp.Select, kinds: Kinds, members: list[_Member], rows: list[str], margins: bool) -> exp.Select:
    names = [name for name, _ in members[0].labels] + [c.alias for c in members[0].cells]
    if len(members) == 1:
        query = _member_select(select, kinds, members[0])
        return _checked(query.order_by(*[_ascending(col(r)) for r in rows]), names)
    parts = [_member_select(select, kinds, m, order=k) for k, m in enumerate(members)]
    union: exp.Query = parts[0]
    for part in parts[1:]:
        union = exp.union(union, part, distinct=False)
    keys = [col(_ORDER), *[col(r) for r in rows]]
    query = (
        exp.select(*[col(n) for n in names])
        .from_(union.subquery(ident("PYQD_U")))
        .order_by(*[_ascending(k) for k in keys])
    )
    return _checked(query, names)


def _member_select(select: exp.Select, kinds: Kinds, member: _Member, order: int | None = None) -> exp.Select:
    cells = [alias(_cell(c, kinds, member), c.alias) for c in member.cells]
    labels = [alias(e, name) for name, e in member.labels]
    extra = [alias(exp.Literal.number(order), _ORDER)] if order is not None else []
    source: exp.Expression = from_(select)
    if member.windows:
        raw = list(dict.fromkeys([*member.group, *(c for cell in member.cells for c in _referenced(cell))]))
        defined = [
            alias(_window(kind, value, part, kinds), name) for (kind, value, part), name in member.windows.items()
        ]
        source = exp.select(*[col(r) for r in raw], *defined).from_(source).subquery(ident("PYQD_W"))
    query = exp.select(*labels, *cells, *extra).from_(source)
    return query.group_by(*[col(g) for g in member.group]) if member.group else query


def _referenced(cell: _Cell) -> list[str]:
    names = [c.name for c in cell.cond.find_all(exp.Column)] if cell.cond is not None else []
    return names + ([cell.value] if cell.value else [])


def _window(kind: str, value: str, part: tuple[str, ...], kinds: Kinds) -> exp.Expression:
    v = num(value, kinds[value])
    partition = [col(p) for p in part]
    if kind == "rank":
        return window(exp.RowNumber(), partition, [v])
    if kind == "n":
        return window(exp.Count(this=v), partition)
    return v - window(exp.Avg(this=v.copy()), partition)  # "deviation"


def _cell(cell: _Cell, kinds: Kinds, member: _Member) -> exp.Expression:
    def when(e: exp.Expression, extra: exp.Expression | None = None) -> exp.Expression:
        conditions = [c for c in (cell.cond.copy() if cell.cond is not None else None, extra) if c is not None]
        return exp.Case().when(all_of(conditions), e) if conditions else e

    def win(kind: str) -> exp.Column:
        assert cell.value is not None
        key = (kind, cell.value, cell.part)
        return col(member.windows.setdefault(key, f"PYQD_W{len(member.windows)}"))

    one = exp.Literal.number(1)
    if cell.agg == "size":
        e: exp.Expression = exp.Count(this=when(one)) if cell.cond is not None else count_star()
    else:
        assert cell.value is not None
        v = num(cell.value, kinds[cell.value]) if cell.agg in _ON_NUMBERS else col(cell.value)
        simple: dict[str, Callable[[exp.Expression], exp.Expression]] = {
            "count": lambda x: exp.Count(this=x),
            "nunique": lambda x: exp.Count(this=exp.Distinct(expressions=[x])),
            "sum": lambda x: exp.Coalesce(this=exp.Sum(this=x), expressions=[exp.Literal.number(0)]),
            "mean": lambda x: exp.Avg(this=x),
            "min": lambda x: exp.Min(this=x),
            "max": lambda x: exp.Max(this=x),
        }
        if cell.agg in simple:
            e = simple[cell.agg](when(v))
        elif cell.agg == "median":  # the middle row, or the mean of the middle two (the rows are numbered from 1)
            half = exp.Div(this=exp.paren(exp.Add(this=win("n"), expression=one.copy())), expression=number(2))
            middle = any_of(
                [
                    exp.EQ(this=win("rank"), expression=exp.Floor(this=half)),
                    exp.EQ(this=win("rank"), expression=exp.Ceil(this=half.copy())),
                ]
            )
            e = exp.Avg(this=when(v, middle))
        else:  # std, var: the sum of squared deviations from the group's mean over n - 1
            n = exp.Count(this=when(win("deviation")))
            squares = exp.Sum(this=when(exp.Mul(this=win("deviation"), expression=win("deviation"))))
            variance = exp.Div(this=squares, expression=exp.paren(exp.Sub(this=n.copy(), expression=one.copy())))
            e = exp.Case().when(exp.GT(this=n, expression=one.copy()), variance)
            e = exp.Sqrt(this=e) if cell.agg == "std" else e
    if cell.guard and cell.cond is not None and cell.agg in ("count", "nunique", "sum", "size"):
        e = exp.Case().when(exp.GT(this=exp.Count(this=when(one.copy())), expression=exp.Literal.number(0)), e)
    if cell.norm == "group":
        e = exp.Div(this=e, expression=count_star())
    elif cell.norm == "total":
        e = exp.Div(this=e, expression=window(exp.Sum(this=count_star())))
    elif cell.norm == "column":
        e = exp.Div(this=e, expression=window(exp.Sum(this=e.copy())))
    return e


def _labels(rows: list[str], kinds: Kinds, margins: bool) -> list[tuple[str, exp.Expression]]:
    """The index columns; as text when margins add an `All` row below them."""
    return [(r, _text(r, kinds[r]) if margins else col(r)) for r in rows]


def _text(name: str, kind: str) -> exp.Expression:
    column = col(name)
    if kind == "string":
        return column
    if kind == "boolean":
        return (
            exp.Case()
            .when(column, exp.Literal.string("True"))
            .when(exp.Not(this=column.copy()), exp.Literal.string("False"))
        )
    return exp.cast(column, exp.DataType.build("varchar(4000)"))


def _categories(
    select: exp.Select, kinds: Kinds, pivots: list[str], run: Run, limit: int
) -> list[tuple[tuple[Any, ...], str]]:
    """The categories of the pivot columns (most rows first if there are too many), sorted, NULL last, with labels."""
    if limit < 1:
        raise ValueError(f"a pivot of this many values cannot stay within {MAX_PIVOT_COLUMNS} columns")
    for p in pivots:
        if kinds[p] not in ("string", "number", "boolean"):
            raise ValueError(f"cannot pivot on the {kinds[p]} column {p!r} (strings, numbers or Booleans only)")
    query = (
        exp.select(*[col(p) for p in pivots], alias(count_star(), "PYQD_N"))
        .from_(from_(select))
        .group_by(*[col(p) for p in pivots])
        .order_by(exp.Ordered(this=count_star(), desc=True), *[_ascending(col(p)) for p in pivots])
        .limit(limit + 1)
    )
    frame = run(query)
    combos = [tuple(_scalar(frame.iloc[r, k], kinds[p]) for k, p in enumerate(pivots)) for r in range(len(frame))]
    if len(combos) > limit:
        warnings.warn(
            f"the pivot has more than {limit} categories: keeping the {limit} with the most rows", stacklevel=3
        )
        combos = combos[:limit]
    combos.sort(key=lambda combo: tuple((v is None, v) for v in combo))
    return [(combo, ",".join("None" if v is None else str(v) for v in combo)) for combo in combos]


def _ascending(expression: exp.Expression) -> exp.Ordered:
    return exp.Ordered(this=expression, nulls_first=False)


def _scalar(value: Any, kind: str) -> Any:
    if value is None or (not isinstance(value, str | bytes) and bool(value != value)):  # None, NaN, NaT, NA
        return None
    value = value.item() if hasattr(value, "item") else value
    if kind == "boolean":
        return bool(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot pivot on the value {value!r}")
    return value


def _match(pivots: list[str], combo: tuple[Any, ...], kinds: Kinds) -> exp.Expression:
    """The rows of one category: each pivot column equal to its value (or NULL)."""
    tests: list[exp.Expression] = []
    for name, value in zip(pivots, combo, strict=True):
        if value is None:
            tests.append(is_null(col(name)))
        elif isinstance(value, bool):
            tests.append(exp.EQ(this=col(name), expression=exp.true() if value else exp.false()))
        elif isinstance(value, str):
            tests.append(exp.EQ(this=col(name), expression=exp.Literal.string(value)))
        else:
            tests.append(exp.EQ(this=col(name), expression=exp.Literal.number(repr(value))))
    return all_of(tests)


# --- checking arguments ------------------------------------------------------------------------------------


def _names(value: str | list[str] | tuple[str, ...] | None, kinds: Kinds, what: str) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str) or name not in kinds:
            raise ValueError(f"{what}: no column {name!r}")
    return names


def _distinct(names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise ValueError("a column can be grouped by only once (index, columns and hue must differ)")


def _aggregate(function: Any) -> str:
    name = function if isinstance(function, str) else getattr(function, "__name__", None)
    name = {"avg": "mean", "average": "mean", "size": "count"}.get(name or "", name)
    if name not in AGGREGATES:
        raise ValueError(f"aggfunc must be one of {', '.join(AGGREGATES)} (or oml.DataFrame.<name>), not {function!r}")
    return str(name)


def _check_value(kinds: Kinds, value: str, agg: str, grouped: list[str]) -> None:
    if value not in kinds:
        raise ValueError(f"values: no column {value!r}")
    if value in grouped:
        raise ValueError(f"values: {value!r} is also a grouping column")
    if agg in _ON_NUMBERS and kinds[value] not in ("number", "boolean"):
        raise ValueError(f"{agg} needs a float or Boolean column; {value!r} holds {kinds[value]} values")


def _normalize(normalize: Any) -> str | None:
    if normalize is False or normalize is None:
        return None
    if normalize is True:
        return "all"
    if isinstance(normalize, str) and normalize in ("all", "index", "columns"):
        return normalize
    if isinstance(normalize, int) and normalize in (0, 1):
        return ("index", "columns")[normalize]
    raise ValueError("normalize must be False, True, 'all', 'index', 'columns', 0 or 1")


def _need(run: Run | None) -> Run:
    if run is None:
        raise ValueError("a pivot needs run= (it reads the categories of its columns first)")
    return run


def _cell_kind(kinds: Kinds, agg: str, value: str | None) -> str:
    return kinds[value] if value is not None and agg in ("min", "max") else "number"


def _out_kinds(kinds: Kinds, rows: list[str], margins: bool, cells: list[_Cell], cell_kind: str) -> Kinds:
    return {r: ("string" if margins else kinds[r]) for r in rows} | {c.alias: cell_kind for c in cells}


def _checked(query: exp.Select, names: list[str]) -> exp.Select:
    if len(set(names)) != len(names):
        raise ValueError(f"the result would have two columns of the same name: {names}")
    if len(query.sql(dialect="oracle")) > MAX_QUERY_CHARS:
        raise ValueError("the query of this pivot is longer than the server accepts: pivot on fewer categories")
    return query
