"""`oml.graphics`: Oracle's `boxplot` and `hist` of a proxy's float columns. The statistics (quartiles, whiskers,
outliers, bucket counts) are computed in the database; matplotlib draws them on the current axes, so
`plt.title(...)`/`plt.show()` work afterwards as with Oracle's.

`x` is a proxy (`oml.DataFrame`, `oml.Float`): anything with `_relation()` (see `oml.core.stats.Relation`).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
from sqlglot import exp

from oml.core._stats_sql import Kinds, Run, alias, any_of, col, count_star, from_, ident, is_null, num, number
from oml.core.stats import _numeric

__all__ = ["boxplot", "hist"]

#: Most outliers (fliers) of one column brought back and drawn; the farthest from the median are kept.
MAX_FLIERS = 10_000
#: Most buckets of a histogram (each is a branch of one CASE in the query).
MAX_BINS = 2_000


def _relation(x: Any) -> tuple[exp.Select, Kinds, Run, list[str]]:
    if not hasattr(x, "_relation"):
        raise TypeError(f"x must be an oml.DataFrame or oml.Float proxy, not {type(x).__name__}")
    select, kinds, run = x._relation()
    names = [name for name, kind in kinds.items() if kind == "number"]
    if not names:
        raise ValueError("x has no float columns to plot")
    return select, kinds, run, names


def boxplot(
    x: Any,
    notch: bool | None = None,
    sym: str | None = None,
    vert: bool | None = None,
    whis: Any = None,
    positions: Any = None,
    widths: Any = None,
    patch_artist: bool | None = None,
    bootstrap: int | None = None,
    usermedians: Any = None,
    conf_intervals: Any = None,
    meanline: bool | None = None,
    showmeans: bool | None = None,
    showcaps: bool | None = None,
    showbox: bool | None = None,
    showfliers: bool | None = None,
    boxprops: dict[str, Any] | None = None,
    labels: Any = None,
    flierprops: dict[str, Any] | None = None,
    medianprops: dict[str, Any] | None = None,
    meanprops: dict[str, Any] | None = None,
    capprops: dict[str, Any] | None = None,
    whiskerprops: dict[str, Any] | None = None,
    manage_ticks: bool = True,
    autorange: bool = False,
    zorder: float | None = None,
) -> dict[str, Any]:
    """A box and whisker plot of each float column of `x` (matplotlib's `boxplot` arguments and result)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    rc = mpl.rcParams
    select, kinds, run, names = _relation(x)
    if bootstrap or (bootstrap is None and rc["boxplot.bootstrap"]):
        raise ValueError("bootstrap is not supported: the notches use the Gaussian approximation")
    whis = rc["boxplot.whiskers"] if whis is None else whis
    flierprops = dict(flierprops or {})
    showfliers = rc["boxplot.showfliers"] if showfliers is None else showfliers
    if sym == "":
        showfliers = False
    elif sym is not None:
        flierprops["marker"] = sym
    stats = _box_stats(select, kinds, run, names, whis, autorange, bool(showfliers))
    for i, label in enumerate(labels if labels is not None else names):
        stats[i]["label"] = label
    for i, m in enumerate(usermedians if usermedians is not None else []):
        if m is not None:
            stats[i]["med"] = m
    for i, ci in enumerate(conf_intervals if conf_intervals is not None else []):
        if ci is not None:
            stats[i]["cilo"], stats[i]["cihi"] = ci
    options: dict[str, Any] = dict(
        positions=positions,
        widths=widths,
        patch_artist=rc["boxplot.patchartist"] if patch_artist is None else patch_artist,
        shownotches=rc["boxplot.notch"] if notch is None else notch,
        showmeans=rc["boxplot.showmeans"] if showmeans is None else showmeans,
        showcaps=rc["boxplot.showcaps"] if showcaps is None else showcaps,
        showbox=rc["boxplot.showbox"] if showbox is None else showbox,
        showfliers=showfliers,
        boxprops=boxprops,
        whiskerprops=whiskerprops,
        flierprops=flierprops or None,
        medianprops=medianprops,
        capprops=capprops,
        meanprops=meanprops,
        meanline=rc["boxplot.meanline"] if meanline is None else meanline,
        manage_ticks=manage_ticks,
        zorder=zorder,
    )
    vertical = rc["boxplot.vertical"] if vert is None else vert
    ax = plt.gca()
    if "orientation" in inspect.signature(ax.bxp).parameters:
        options["orientation"] = "vertical" if vertical else "horizontal"
    else:  # pragma: no cover - matplotlib before 3.10
        options["vert"] = vertical
    return dict(ax.bxp(stats, **options))


def _box_stats(
    select: exp.Select, kinds: Kinds, run: Run, names: list[str], whis: Any, autorange: bool, fliers: bool
) -> list[dict[str, Any]]:
    """matplotlib's `cbook.boxplot_stats` of each column: quartiles, whiskers, notches, mean and outliers."""
    ends = [float(w) / 100 for w in whis] if np.iterable(whis) and not isinstance(whis, str) else []
    if isinstance(whis, str):
        raise ValueError("whis must be a float or a (low, high) pair of percentiles")
    percentiles = sorted({0.25, 0.5, 0.75, 0.0, 1.0, *ends})
    quantiles = _numeric(select, kinds, run, names, percentiles=percentiles)
    result, fences = [], []
    for name in names:
        s = quantiles[name]
        q = dict(zip(percentiles, s.quantiles, strict=True))
        q1, med, q3 = q[0.25], q[0.5], q[0.75]
        iqr = q3 - q1
        if ends:
            low, high = q[ends[0]], q[ends[1]]
        elif iqr == 0 and autorange:
            low, high = q[0.0], q[1.0]
        else:
            low, high = q1 - float(whis) * iqr, q3 + float(whis) * iqr
        fences.append((low, high))
        half = 1.57 * iqr / math.sqrt(s.n) if s.n else math.nan
        stats: dict[str, Any] = {"mean": s.mean, "iqr": iqr, "q1": q1, "med": med, "q3": q3}
        stats |= {"cilo": med - half, "cihi": med + half, "whislo": math.nan, "whishi": math.nan}
        result.append(stats | {"fliers": np.array([])})
    whiskers = _whiskers(select, kinds, run, names, fences)
    for i, (name, stats) in enumerate(zip(names, result, strict=True)):
        lowest, highest = whiskers[i]
        stats["whishi"] = stats["q3"] if math.isnan(highest) or highest < stats["q3"] else highest
        stats["whislo"] = stats["q1"] if math.isnan(lowest) or lowest > stats["q1"] else lowest
        if fliers and quantiles[name].n:
            stats["fliers"] = _fliers(select, kinds, run, name, stats["whislo"], stats["whishi"], stats["med"])
    return result


def _whiskers(
    select: exp.Select, kinds: Kinds, run: Run, names: list[str], fences: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The lowest value above the low fence and the highest below the high fence, of each column (one query)."""
    selected = []
    for i, (name, (low, high)) in enumerate(zip(names, fences, strict=True)):
        v = num(name, kinds[name])
        selected.append(
            alias(exp.Min(this=exp.Case().when(exp.GTE(this=v, expression=number(low)), v.copy())), f"L{i}")
        )
        selected.append(
            alias(exp.Max(this=exp.Case().when(exp.LTE(this=v.copy(), expression=number(high)), v.copy())), f"H{i}")
        )
    frame = run(exp.select(*selected).from_(from_(select)))
    row = frame.iloc[0] if not frame.empty else {}
    return [(_float(row, f"L{i}"), _float(row, f"H{i}")) for i in range(len(names))]


def _fliers(
    select: exp.Select, kinds: Kinds, run: Run, name: str, low: float, high: float, median: float
) -> np.ndarray:
    """The values outside the whiskers (the MAX_FLIERS farthest from the median)."""
    v = num(name, kinds[name])
    outside = any_of([exp.LT(this=v.copy(), expression=number(low)), exp.GT(this=v.copy(), expression=number(high))])
    distance = exp.Abs(this=exp.Sub(this=v.copy(), expression=number(median)))
    query = (
        exp.select(alias(v, "V"))
        .from_(from_(select))
        .where(outside)
        .order_by(exp.Ordered(this=distance, desc=True))
        .limit(MAX_FLIERS)
    )
    frame = run(query)
    return np.asarray(frame["V"] if "V" in frame else [], dtype=float)


def hist(
    x: Any,
    bins: Any = 10,
    range: tuple[float, float] | None = None,  # noqa: A002 - matplotlib's and Oracle's name
    density: bool = False,
    weights: Any = None,
    cumulative: bool | float = False,
    bottom: Any = None,
    histtype: str = "bar",
    align: str = "mid",
    orientation: str = "vertical",
    rwidth: float | None = None,
    log: bool = False,
    color: Any = None,
    label: Any = None,
    stacked: bool = False,
    **kwargs: Any,
) -> tuple[Any, Any, Any]:
    """A histogram of each float column of `x` (matplotlib's `hist` arguments and result); the bucket counts are
    computed in the database with numpy's rules (equal-width buckets over `range`, the last one closed)."""
    import matplotlib.pyplot as plt

    if weights is not None:
        raise ValueError("weights is not supported: the counts are computed in the database")
    select, kinds, run, names = _relation(x)
    edges = _edges(select, kinds, run, names, bins, range)
    counts = [_bucket_counts(select, kinds, run, name, edges) for name in names]
    left = edges[:-1]
    data = left if len(names) == 1 else [left] * len(names)
    heights = counts[0] if len(names) == 1 else counts
    # matplotlib's typing wants literal strings; these are checked by matplotlib itself
    options: dict[str, Any] = {"histtype": histtype, "align": align, "orientation": orientation}
    return plt.hist(  # type: ignore[no-any-return]
        data,
        bins=list(edges),
        weights=heights,
        density=density,
        cumulative=cumulative,
        bottom=bottom,
        rwidth=rwidth,
        log=log,
        color=color,
        label=label,
        stacked=stacked,
        **options,
        **kwargs,
    )


def _edges(
    select: exp.Select, kinds: Kinds, run: Run, names: list[str], bins: Any, bounds: tuple[float, float] | None
) -> np.ndarray:
    """numpy's `histogram_bin_edges` for a number of buckets or a sequence of edges."""
    if isinstance(bins, str):
        raise ValueError("bins must be a number of buckets or a sequence of edges (estimators need the data)")
    if np.iterable(bins):
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) < 0):
            raise ValueError("bins must increase monotonically, when an array")
        if len(edges) > MAX_BINS + 1:
            raise ValueError(f"at most {MAX_BINS} bins")
        return edges
    count = int(bins)
    if not 1 <= count <= MAX_BINS:
        raise ValueError(f"bins must be between 1 and {MAX_BINS}")
    if bounds is not None:
        low, high = float(bounds[0]), float(bounds[1])
        if low > high:
            raise ValueError("max must be larger than min in range parameter")
    else:
        summary = _numeric(select, kinds, run, names)
        lows = [s.min for s in summary.values() if s.n]
        highs = [s.max for s in summary.values() if s.n]
        low, high = (min(lows), max(highs)) if lows else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, count + 1)


def _bucket_counts(select: exp.Select, kinds: Kinds, run: Run, name: str, edges: np.ndarray) -> np.ndarray:
    """How many values of one column fall in each bucket (values outside the edges are not counted)."""
    v = num(name, kinds[name])
    bucket = exp.Case().when(exp.LT(this=v.copy(), expression=number(edges[0])), exp.Null())
    for i, edge in enumerate(edges[1:-1]):
        bucket = bucket.when(exp.LT(this=v.copy(), expression=number(edge)), exp.Literal.number(i))
    bucket = bucket.when(exp.LTE(this=v.copy(), expression=number(edges[-1])), exp.Literal.number(len(edges) - 2))
    inner = exp.select(alias(bucket, "B")).from_(from_(select)).subquery(ident("PYQD_B"))
    query = (
        exp.select(alias(col("B"), "B"), alias(count_star(), "N"))
        .from_(inner)
        .where(exp.Not(this=is_null(col("B"))))
        .group_by(col("B"))
    )
    counts = np.zeros(len(edges) - 1)
    frame = run(query)
    for b, n in zip(frame.get("B", []), frame.get("N", []), strict=True):
        counts[int(b)] = n
    return counts


def _float(row: Any, key: str) -> float:
    value = row.get(key) if hasattr(row, "get") else None
    return math.nan if value is None or value != value else float(value)
