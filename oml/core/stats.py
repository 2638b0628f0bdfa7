"""Statistics of the transparency layer, computed in the database (Oracle OML4Py's `describe`, `std`, `var`,
`median`, `skew`, `kurtosis`, `corr`).

Each function takes the proxy's query (`select`, a sqlglot Select in Oracle's dialect), the kinds of its columns
(`kinds`: "number", "string", "boolean", "bytes" or "datetime") and `run`, which sends one query through the read
door and answers a pandas DataFrame. Only aggregates come back: a table of any size costs a few small answers.

The SQL is portable (the gate rewrites it for SQLite and PostgreSQL): no STDDEV/MEDIAN/CORR/PERCENTILE. Moments are
centred sums (a first scan finds the means, a second sums powers of the deviations from them: as stable as the
two-pass textbook method), quantiles pick the rows at pandas' interpolation positions with `ROW_NUMBER()` (one sort
of one column per column, answering only those rows), and the last arithmetic (dividing, interpolating) happens here
on those few numbers. Plain aggregates serve all columns of a family at once; windows over the whole row set with
every column would make the database sort a wide copy of the table many times (10x slower on a million rows).

Cross tabulations and pivot tables are lazy: they answer a new query (see `oml.core._pivot`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlglot import exp

from oml.core._pivot import crosstab, pivot_table  # noqa: F401 - part of this module's API (the seam)
from oml.core._stats_sql import Kinds, Run, alias, col, count_star, fits, from_, ident, num, number, window

__all__ = [
    "Relation",
    "Run",
    "corr",
    "crosstab",
    "describe",
    "kurtosis",
    "median",
    "pivot_table",
    "skew",
    "std",
    "var",
]

#: Kinds whose statistics are numeric (booleans count as 0/1, as in Oracle's std/var/mean).
NUMERIC_KINDS = ("number", "boolean")
#: Pairs of columns per correlation query (six sums each); fewer when the query would be too long for the server.
CORR_PAIRS_PER_QUERY = 200
#: The rows of `describe` (pandas' and Oracle's order), around the percentiles and "max" of float columns.
_DESCRIBE_OTHER = ["count", "unique", "top", "freq"]
_DESCRIBE_NUMBER = ["mean", "std", "min"]


class Relation(Protocol):
    """What `oml.graphics` (and anything else computing in the database) needs of a proxy."""

    def _relation(self) -> tuple[exp.Select, Kinds, Run]:
        """The proxy's query, the kinds of its columns, and a function that runs a query through the read door."""
        ...


# --- numeric families ------------------------------------------------------------------------------------


@dataclass
class _Column:
    """The aggregates of one numeric column (sums of powers of deviations from the mean: `s2`, `s3`, `s4`)."""

    rows: int
    n: int
    mean: float
    min: float
    max: float
    s2: float = math.nan
    s3: float = math.nan
    s4: float = math.nan
    quantiles: tuple[float, ...] = ()


def _numeric(
    select: exp.Select,
    kinds: Kinds,
    run: Run,
    columns: Sequence[str],
    percentiles: Sequence[float] = (),
    moments: int = 0,
) -> dict[str, _Column]:
    """Count, mean, min, max, centred moments up to `moments` and the quantiles of `columns`.

    Plain aggregates only, so that no database sorts or widens the whole row set more than it must: one scan for
    count/mean/min/max of all columns; one scan for the centred sums, the means (just computed) as literals; and,
    for quantiles, one query per column that numbers that column's sorted values and answers only the rows at the
    interpolation ends. (Queries too long for the server are split by columns.)"""
    if not columns:
        return {}
    names = list(columns)

    def basics(chunk: Sequence[str]) -> exp.Query:
        outer: list[exp.Expression] = [alias(count_star(), "ROWS")]
        for i, name in enumerate(chunk):
            value = num(name, kinds[name])
            outer += [
                alias(exp.Count(this=value.copy()), f"N_{i}"),
                alias(exp.Avg(this=value.copy()), f"A_{i}"),
                alias(exp.Min(this=value.copy()), f"MIN_{i}"),
                alias(exp.Max(this=value.copy()), f"MAX_{i}"),
            ]
        return exp.select(*outer).from_(from_(select))

    common, per = _aggregates(run, names, basics)
    rows = int(_float(common, "ROWS", 0))
    result = {
        name: _Column(
            rows=rows,
            n=int(_float(per[name], "N", 0)),
            mean=_float(per[name], "A"),
            min=_float(per[name], "MIN"),
            max=_float(per[name], "MAX"),
        )
        for name in names
    }
    # Centred sums need a finite mean; a column without one (no values, or overflow) has no moments.
    centred = [name for name in names if result[name].n and math.isfinite(result[name].mean)]
    if moments >= 2 and centred:

        def sums(chunk: Sequence[str]) -> exp.Query:
            inner: list[exp.Expression] = []
            outer: list[exp.Expression] = []
            for i, name in enumerate(chunk):
                deviation = exp.Sub(this=num(name, kinds[name]), expression=number(result[name].mean))
                inner.append(alias(deviation, f"D{i}"))
                for power in range(2, moments + 1):
                    term: exp.Expression = col(f"D{i}")
                    for _ in range(power - 1):
                        term = exp.Mul(this=term, expression=col(f"D{i}"))
                    outer.append(alias(exp.Sum(this=term), f"S{power}_{i}"))
            return exp.select(*outer).from_(exp.select(*inner).from_(from_(select)).subquery(ident("PYQD_V")))

        _, moment_sums = _aggregates(run, centred, sums)
        for name in centred:
            for power in range(2, moments + 1):
                setattr(result[name], f"s{power}", _float(moment_sums[name], f"S{power}", 0.0))
    if percentiles:
        for name, stats in result.items():
            stats.quantiles = _quantiles(select, kinds, run, name, stats.n, percentiles)
    return result


def _aggregates(
    run: Run, columns: Sequence[str], build: Callable[[Sequence[str]], exp.Query]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Runs the one-row query `build(columns)` (whose per-column results are named `KEY_i`, i the column's index),
    split by columns while it is too long for the server; answers its other results and those of each column."""
    query = build(columns)
    if len(columns) > 1 and not fits(query):
        half = len(columns) // 2
        shared, first = _aggregates(run, columns[:half], build)
        return shared, first | _aggregates(run, columns[half:], build)[1]
    common: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {name: {} for name in columns}
    for key, value in _one_row(run(query)).items():
        head, _, index = key.rpartition("_")
        if head and index.isdigit():
            per[columns[int(index)]][head] = value
        else:
            common[key] = value
    return common, per


def _quantiles(
    select: exp.Select, kinds: Kinds, run: Run, name: str, n: int, percentiles: Sequence[float]
) -> tuple[float, ...]:
    """The quantiles of one column (pandas' linear interpolation): one sort of that column's non-null values,
    answering only the rows at floor/ceil of (n - 1) * p (0-based, in floating point as in numpy)."""
    if n == 0:
        return tuple(math.nan for _ in percentiles)
    ends = [(math.floor((n - 1) * p), math.ceil((n - 1) * p)) for p in percentiles]
    wanted = sorted({i + 1 for pair in ends for i in pair})
    value = num(name, kinds[name])
    numbered = (
        exp.select(alias(value, "V"), alias(window(exp.RowNumber(), order=[value.copy()]), "R"))
        .from_(from_(select))
        .where(exp.not_(exp.Is(this=value.copy(), expression=exp.Null())))
    )
    position = exp.In(this=col("R"), expressions=[exp.Literal.number(r) for r in wanted])
    query = exp.select(col("R"), col("V")).from_(numbered.subquery(ident("PYQD_Q"))).where(position)
    frame = run(query)
    found = {} if frame.empty else {int(r): _as_float(v) for r, v in zip(frame["R"], frame["V"], strict=True)}
    return tuple(
        _interpolate(n, p, found.get(low + 1, math.nan), found.get(high + 1, math.nan))
        for p, (low, high) in zip(percentiles, ends, strict=True)
    )


def _as_float(value: Any) -> float:
    return math.nan if value is None or value is pd.NA else float(value)


def _interpolate(n: int, p: float, low: float, high: float) -> float:
    """pandas'/numpy's linear interpolation between the values at floor and ceil of (n - 1) * p."""
    if n == 0:
        return math.nan
    h = (n - 1) * p
    t = h - math.floor(h)
    diff = high - low
    return high - diff * (1 - t) if t >= 0.5 else low + diff * t  # numpy's _lerp, exact at both ends


def _one_row(frame: pd.DataFrame) -> dict[str, Any]:
    return {} if frame.empty else {str(k): v for k, v in frame.iloc[0].items()}


def _float(row: dict[str, Any], key: str, default: float = math.nan) -> float:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return default
    return float(value)


def _columns_of(kinds: Kinds, wanted: Iterable[str]) -> list[str]:
    allowed = set(wanted)
    return [name for name, kind in kinds.items() if kind in allowed]


def _series(values: dict[str, float]) -> pd.Series:
    return pd.Series(list(values.values()), index=pd.Index(list(values.keys()), dtype=object), dtype="float64")


def std(select: exp.Select, kinds: Kinds, run: Run, ddof: int = 1, skipna: bool = True) -> pd.Series:
    """The standard deviation of each float or Boolean column (`ddof` as in pandas)."""
    return _series({k: v**0.5 for k, v in _variances(select, kinds, run, ddof, skipna).items()})


def var(select: exp.Select, kinds: Kinds, run: Run, ddof: int = 1, skipna: bool = True) -> pd.Series:
    """The variance of each float or Boolean column (`ddof` as in pandas)."""
    return _series(_variances(select, kinds, run, ddof, skipna))


def _variances(select: exp.Select, kinds: Kinds, run: Run, ddof: int, skipna: bool) -> dict[str, float]:
    stats = _numeric(select, kinds, run, _columns_of(kinds, NUMERIC_KINDS), moments=2)
    return {name: _variance(s, ddof) if skipna or s.n == s.rows else math.nan for name, s in stats.items()}


def _variance(s: _Column, ddof: int) -> float:
    return s.s2 / (s.n - ddof) if s.n > ddof else math.nan


def median(select: exp.Select, kinds: Kinds, run: Run, skipna: bool = True) -> pd.Series:
    """The median of each float column."""
    stats = _numeric(select, kinds, run, _columns_of(kinds, ["number"]), percentiles=[0.5])
    return _series({k: s.quantiles[0] if skipna or s.n == s.rows else math.nan for k, s in stats.items()})


def skew(select: exp.Select, kinds: Kinds, run: Run, skipna: bool = True) -> pd.Series:
    """The skewness of each float column: Oracle's (the biased sample skewness m3 / m2 ** 1.5, not pandas' G1)."""
    stats = _numeric(select, kinds, run, _columns_of(kinds, ["number"]), moments=3)
    return _series({k: _skew(s) if skipna or s.n == s.rows else math.nan for k, s in stats.items()})


def kurtosis(select: exp.Select, kinds: Kinds, run: Run, skipna: bool = True) -> pd.Series:
    """The excess kurtosis of each float column: Oracle's (the biased m4 / m2 ** 2 - 3, not pandas' G2)."""
    stats = _numeric(select, kinds, run, _columns_of(kinds, ["number"]), moments=4)
    return _series({k: _kurtosis(s) if skipna or s.n == s.rows else math.nan for k, s in stats.items()})


def _skew(s: _Column) -> float:
    m2 = s.s2 / s.n if s.n else 0.0
    return (s.s3 / s.n) / m2**1.5 if m2 > 0 else math.nan


def _kurtosis(s: _Column) -> float:
    m2 = s.s2 / s.n if s.n else 0.0
    return (s.s4 / s.n) / m2**2 - 3 if m2 > 0 else math.nan


# --- describe --------------------------------------------------------------------------------------------


def describe(
    select: exp.Select,
    kinds: Kinds,
    run: Run,
    percentiles: Sequence[float] | None = None,
    include: Any = None,
    exclude: Any = None,
) -> pd.DataFrame:
    """pandas' `describe`, computed in the database: count/mean/std/min/percentiles/max of float columns and
    count/unique/top/freq of the others (strings, Booleans, bytes, dates)."""
    chosen = _described_columns(kinds, include, exclude)
    ps = _percentiles(percentiles)
    numbers = [c for c in chosen if kinds[c] == "number"]
    others = [c for c in chosen if kinds[c] != "number"]
    labels = _percent_labels(ps)
    stats = _numeric(select, kinds, run, numbers, percentiles=ps, moments=2)
    columns: dict[str, dict[str, Any]] = {}
    for name in chosen:
        if name in stats:
            s = stats[name]
            row = {"count": float(s.n), "mean": s.mean, "std": _variance(s, 1) ** 0.5 if s.n > 1 else math.nan}
            row |= {"min": s.min, **dict(zip(labels, s.quantiles, strict=True)), "max": s.max}
        else:
            row = _describe_other(select, kinds[name], name, run)
        columns[name] = row
    rows = (_DESCRIBE_OTHER if others else ["count"]) + (_DESCRIBE_NUMBER + labels + ["max"] if numbers else [])
    result = pd.DataFrame({name: [columns[name].get(r, np.nan) for r in rows] for name in chosen}, index=rows)
    return result.astype("float64") if not others else result.astype(object)


def _describe_other(select: exp.Select, kind: str, name: str, run: Run) -> dict[str, Any]:
    """count, unique, top (the most frequent value; the least value on ties) and freq of one column."""
    value = col(name)
    frequency = count_star()
    query = (
        exp.select(
            alias(value, "V"),
            alias(frequency, "F"),
            alias(window(count_star()), "U"),
            alias(window(exp.Sum(this=count_star())), "C"),
        )
        .from_(from_(select))
        .where(exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        .group_by(value.copy())
        .order_by(exp.Ordered(this=frequency.copy(), desc=True), exp.Ordered(this=value.copy()))
        .limit(1)
    )
    row = _one_row(run(query))
    if not row:
        return {"count": 0, "unique": 0, "top": np.nan, "freq": np.nan}
    top = row["V"]
    if kind == "boolean" and top is not None:
        top = bool(top)
    return {"count": int(row["C"]), "unique": int(row["U"]), "top": top, "freq": int(row["F"])}


def _percentiles(percentiles: Sequence[float] | None) -> list[float]:
    ps = [0.25, 0.5, 0.75] if percentiles is None else [float(p) for p in percentiles]
    if any(not 0 <= p <= 1 for p in ps):
        raise ValueError("percentiles should all be in the interval [0, 1]")
    if 0.5 not in ps:
        ps.append(0.5)
    if len(set(ps)) != len(ps):
        raise ValueError("percentiles cannot contain duplicates")
    return sorted(ps)


def _percent_labels(ps: list[float]) -> list[str]:
    """pandas' labels ('25%', '33.3%'): as many digits as the set of percentiles needs."""
    from pandas.io.formats.format import format_percentiles

    return [str(label) for label in format_percentiles(ps)]


#: Oracle's type classes (oml.Float, oml.String, ...) and pandas/numpy spellings, by the kind they select.
_KIND_NAMES = {
    "float": "number",
    "integer": "number",
    "number": "number",
    "numeric": "number",
    "string": "string",
    "str": "string",
    "object": "string",
    "o": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "bytes": "bytes",
    "datetime": "datetime",
    "datetime64": "datetime",
    "timedelta": "datetime",
    "timezone": "datetime",
}


def _kind_of(spec: Any) -> str:
    if isinstance(spec, type) and issubclass(spec, np.number):
        return "number"
    if spec is object or spec is str:
        return "string"
    name = spec if isinstance(spec, str) else getattr(spec, "__name__", None)
    if isinstance(name, str) and name.lower() in _KIND_NAMES:
        return _KIND_NAMES[name.lower()]
    raise ValueError(f"unknown column type {spec!r} in include/exclude (use oml.Float, oml.String, ... or 'all')")


def _described_columns(kinds: Kinds, include: Any, exclude: Any) -> list[str]:
    if isinstance(include, str) and include == "all":
        if exclude is not None:
            raise ValueError("exclude must be None when include is 'all'")
        return list(kinds)
    if include is None and exclude is None:
        numbers = _columns_of(kinds, ["number"])
        return numbers or list(kinds)
    included = {_kind_of(s) for s in _as_list(include)} if include is not None else set(kinds.values())
    excluded = {_kind_of(s) for s in _as_list(exclude)} if exclude is not None else set()
    chosen = [name for name, kind in kinds.items() if kind in included and kind not in excluded]
    if not chosen:
        raise ValueError("No columns of the included types to describe")
    return chosen


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]


# --- correlation -----------------------------------------------------------------------------------------


def corr(select: exp.Select, kinds: Kinds, run: Run, method: str = "pearson", min_periods: int = 1) -> pd.DataFrame:
    """Pairwise correlation of the float and Boolean columns over the rows where both are not NULL (pandas'
    `corr`): Pearson's coefficient, or Spearman's (of average ranks)."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman' (got {method!r}; Kendall's tau is not computed)")
    names = _columns_of(kinds, NUMERIC_KINDS)
    k = len(names)
    result = pd.DataFrame(np.nan, index=pd.Index(names, dtype=object), columns=pd.Index(names, dtype=object))
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    nullable = _nullable(select, kinds, run, names) if method == "spearman" else set()
    for start in range(0, len(pairs), CORR_PAIRS_PER_QUERY):
        batch = pairs[start : start + CORR_PAIRS_PER_QUERY]
        for (i, j), r in _correlations(select, kinds, run, names, batch, method, nullable, min_periods).items():
            result.iloc[i, j] = result.iloc[j, i] = r
    return result


def _nullable(select: exp.Select, kinds: Kinds, run: Run, names: list[str]) -> set[int]:
    """The columns (by position) that have NULLs."""
    query = exp.select(
        alias(count_star(), "ROWS"), *[alias(exp.Count(this=col(n)), f"N{i}") for i, n in enumerate(names)]
    ).from_(from_(select))
    row = _one_row(run(query))
    rows = _float(row, "ROWS", 0)
    return {i for i in range(len(names)) if _float(row, f"N{i}", 0) < rows}


def _correlations(
    select: exp.Select,
    kinds: Kinds,
    run: Run,
    names: list[str],
    pairs: list[tuple[int, int]],
    method: str,
    nullable: set[int],
    min_periods: int,
) -> dict[tuple[int, int], float]:
    """One query: for each pair, the count and the sums (x, y, xx, yy, xy) over the rows where both are set, of
    the values centred on their overall mean (Pearson) or of their average ranks (Spearman)."""
    inner: dict[str, exp.Expression] = {}

    def term(i: int, j: int) -> str:
        """The alias of column i's term within pair (i, j)."""
        if method == "pearson":
            key = f"D{i}"
            if key not in inner:
                value = num(names[i], kinds[names[i]])
                inner[key] = value - window(exp.Avg(this=value.copy()))
            return key
        # Spearman ranks column i among the rows where column j is set too (pandas ranks each pair's rows).
        key = f"K{i}_{j}" if j in nullable and j != i else f"K{i}"
        if key not in inner:
            value = num(names[i], kinds[names[i]])
            part = [exp.Is(this=num(names[j], kinds[names[j]]), expression=exp.Null())] if key != f"K{i}" else []
            first = window(exp.Rank(), partition=part, order=[value.copy()])
            ties = window(count_star(), partition=[*[p.copy() for p in part], value.copy()])
            average = exp.Add(this=first, expression=exp.Div(this=exp.paren(ties - number(1)), expression=number(2)))
            inner[key] = exp.Case().when(exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())), average)
        return key

    outer: list[exp.Expression] = []
    for n, (i, j) in enumerate(pairs):
        x, y = col(term(i, j)), col(term(j, i))
        both_x = exp.Add(this=x.copy(), expression=exp.Mul(this=number(0), expression=y.copy()))  # x where y is set
        both_y = exp.Add(this=y.copy(), expression=exp.Mul(this=number(0), expression=x.copy()))
        outer += [
            alias(exp.Count(this=exp.Mul(this=x.copy(), expression=y.copy())), f"N{n}"),
            alias(exp.Sum(this=both_x.copy()), f"X{n}"),
            alias(exp.Sum(this=both_y.copy()), f"Y{n}"),
            alias(exp.Sum(this=exp.Mul(this=x.copy(), expression=y.copy())), f"XY{n}"),
            alias(exp.Sum(this=exp.Mul(this=x.copy(), expression=both_x)), f"XX{n}"),
            alias(exp.Sum(this=exp.Mul(this=y.copy(), expression=both_y)), f"YY{n}"),
        ]
    inner_select = exp.select(*[alias(e, key) for key, e in inner.items()]).from_(from_(select))
    query = exp.select(*outer).from_(inner_select.subquery(ident("PYQD_V")))
    if len(pairs) > 1 and not fits(query):
        half = len(pairs) // 2
        first = _correlations(select, kinds, run, names, pairs[:half], method, nullable, min_periods)
        return first | _correlations(select, kinds, run, names, pairs[half:], method, nullable, min_periods)
    row = _one_row(run(query))
    result = {}
    for n, pair in enumerate(pairs):
        count = _float(row, f"N{n}", 0)
        if count < max(min_periods, 1):
            result[pair] = math.nan
            continue
        sx, sy = _float(row, f"X{n}", 0), _float(row, f"Y{n}", 0)
        cov = _float(row, f"XY{n}", 0) - sx * sy / count
        vx = _float(row, f"XX{n}", 0) - sx * sx / count
        vy = _float(row, f"YY{n}", 0) - sy * sy / count
        result[pair] = max(-1.0, min(1.0, cov / math.sqrt(vx * vy))) if vx > 0 and vy > 0 else math.nan
    return result
