"""Combining proxies: `concat` (side by side), `merge` (joins), `append` (one after the other), as Oracle's
oml.DataFrame methods do, in SQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from oml.core._sql import Rel, and_all, col, ident
from oml.core.series import _Series

if TYPE_CHECKING:
    from oml.core.frame import DataFrame

#: Oracle's default suffixes for the columns of a merge (every column but the `on` keys gets one).
SUFFIXES = ("_l", "_r")
#: `how` values of merge, and the join each makes.
JOIN_SIDES = {"left": "LEFT", "right": "RIGHT", "inner": "", "full": "FULL", "outer": "FULL"}


def concat(frame: DataFrame, other: Any, auto_name: bool) -> DataFrame:
    """frame's columns, then those of `other` (an oml object, a list of them, or a dict name → object)."""
    from oml.core.frame import DataFrame

    if isinstance(other, Mapping):
        entries: list[tuple[str | None, Any]] = [(str(key), obj) for key, obj in other.items()]
    elif isinstance(other, list | tuple):
        entries = [(None, obj) for obj in other]
    else:
        entries = [(None, other)]
    rel = frame._rel
    items = list(rel.items)
    temps = frame._temps
    for key, obj in entries:
        if not isinstance(obj, DataFrame | _Series):
            raise TypeError("concat takes oml.DataFrame and oml column objects (or a list or dict of them)")
        other_rel = obj._rel
        if other_rel is not rel and other_rel.rows_key() != rel.rows_key():
            raise ValueError("concat needs objects over the same rows (columns of the same oml.DataFrame)")
        temps = temps | obj._temps
        if isinstance(obj, _Series):
            additions = [(key if key is not None else obj.name, obj._expr, obj._kind)]
        else:
            prefix = key or ""
            additions = [(prefix + n, e, k) for n, e, k in other_rel.items]
        for name, e, kind in additions:
            position = len(items) + 1
            name = name if name is not None else f"COL{position}"
            taken = {n for n, _, _ in items}
            if name in taken:
                if not auto_name:
                    raise ValueError(f"column {name!r} already exists; rename it or pass auto_name=True")
                name = f"{name}{position}"
                while name in taken:
                    name += "_"
            items.append((name, e, kind))
    return DataFrame._of(rel.project(items), temps)


def merge(
    left: DataFrame, right: DataFrame, on: Any, left_on: Any, right_on: Any, how: str, suffixes: Any
) -> DataFrame:
    """A join of two proxies; a cross join when no key is given."""
    from oml.core.frame import DataFrame

    if not isinstance(right, DataFrame):
        raise TypeError("merge takes an oml.DataFrame")
    if how not in JOIN_SIDES:
        raise ValueError("how must be 'left', 'right', 'inner' or 'full'")
    sl, sr = _suffixes(suffixes)
    if on is not None and (left_on is not None or right_on is not None):
        raise ValueError("give on, or left_on and right_on, not both")
    lkeys = _keys(left, on if on is not None else left_on)
    rkeys = _keys(right, on if on is not None else right_on)
    if len(lkeys) != len(rkeys) or (left_on is None) != (right_on is None):
        raise ValueError("left_on and right_on name as many columns")
    lrel, rrel = left._rel, right._rel
    depth = max(lrel.depth, rrel.depth) + 1
    lname, rname = f"L{depth}", f"R{depth}"
    source = exp.Subquery(this=lrel.select(), alias=exp.TableAlias(this=ident(lname)))
    joined = exp.Subquery(this=rrel.select(), alias=exp.TableAlias(this=ident(rname)))
    if lkeys:
        pairs = zip(lkeys, rkeys, strict=True)
        cond = and_all([exp.EQ(this=col(a, lname), expression=col(b, rname)) for a, b in pairs])
        side = JOIN_SIDES[how]
        join = exp.Join(this=joined, on=cond, side=side or None, kind="OUTER" if side == "FULL" else None)
    else:
        join = exp.Join(this=joined, kind="CROSS")
    items: list[tuple[str, exp.Expr, str]] = []
    shared = set(lkeys) if on is not None else set()
    for n, k in lrel.kinds.items():
        if n in shared:
            items.append((n, _key(n, lname, rname, how), k))
        else:
            items.append((n + sl, col(n, lname), k))
    for n, k in rrel.kinds.items():
        if n not in shared:
            items.append((n + sr, col(n, rname), k))
    names = [n for n, _, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("the merged columns' names collide; choose other suffixes")
    rel = Rel(source, tuple(items), (join,), depth=depth)
    return DataFrame._of(rel, left._temps | right._temps)


def append(top: DataFrame, bottom: DataFrame, all_rows: bool) -> DataFrame:
    """top's rows, then bottom's (the columns matched by position, named as top's)."""
    from oml.core.frame import DataFrame

    if not isinstance(bottom, DataFrame):
        raise TypeError("append takes an oml.DataFrame")
    tk, bk = list(top._rel.kinds.values()), list(bottom._rel.kinds.values())
    if tk != bk:
        raise ValueError("append needs the same number of columns, of the same oml types, in the same order")
    union = exp.Union(this=_member(top._rel), expression=_member(bottom._rel), distinct=not all_rows)
    depth = max(top._rel.depth, bottom._rel.depth)
    return DataFrame._of(Rel.over(union, top._rel.kinds, depth), top._temps | bottom._temps)


def _member(rel: Rel) -> exp.Select:
    """A SELECT that can stand in a UNION (no ORDER BY or row limit of its own)."""
    if rel.order or rel.limit is not None:
        return Rel.over(rel.select(), rel.kinds, rel.depth).select()
    return rel.select()


def _suffixes(suffixes: Any) -> tuple[str, str]:
    if suffixes is None:
        return SUFFIXES
    pair = list(suffixes)
    if len(pair) != 2 or not all(isinstance(s, str) for s in pair):
        raise ValueError("suffixes must be two strings")
    return pair[0], pair[1]


def _keys(frame: DataFrame, spec: Any) -> list[str]:
    if spec is None:
        return []
    return frame._names(spec if isinstance(spec, list | tuple) else [spec])


def _key(name: str, lname: str, rname: str, how: str) -> exp.Expr:
    if how in ("left", "inner"):
        return col(name, lname)
    if how == "right":
        return col(name, rname)
    return exp.Coalesce(this=col(name, lname), expressions=[col(name, rname)])
