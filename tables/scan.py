"""Which queries are plain scans: reads whose cost is that of scanning one table, and whose values are the
stored ones. Only those may run on a reader that cannot be interrupted inside a batch (ADBC SQLite), since
nothing in them can make one batch take long or make a value larger than what the table holds.

A plain scan is `SELECT` of `*` or of the table's own columns (optionally aliased) from one table, with
optionally a WHERE made of comparisons between those columns and literals (=, <>, <, <=, >, >=, IS [NOT]
NULL, IN (literals), BETWEEN, AND, OR, NOT), an ORDER BY of columns and a LIMIT/OFFSET of literals; or
`SELECT *` from a plain scan, sorted by its columns or limited (what group-apply and `/query` wrap around
the input). Anything else (a function call, arithmetic, LIKE, a subquery elsewhere, a join, DISTINCT,
GROUP BY, a window, a CTE) is not, and goes to the reader with a progress handler. A sort of stored values
costs about a scan (n log n; SQLite's sorter spills to temporary files). Every column must be a column of the
table: an unknown double-quoted name would otherwise read as a string literal on a connection whose
double-quoted-string mode cannot be turned off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlglot import exp

#: Clauses a plain scan may have besides its select list and FROM.
_CLAUSES = frozenset({"expressions", "from_", "where", "order", "limit", "offset", "kind"})
#: Nodes a plain scan's WHERE may contain.
_CONDITION_NODES: tuple[type[exp.Expression], ...] = (
    exp.Where,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Paren,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.Null,
    exp.Boolean,
    exp.Literal,
    exp.Neg,
    exp.In,
    exp.Between,
    exp.Column,
    exp.Identifier,
    exp.Tuple,
)


def is_plain_scan(tree: exp.Expr, columns: Mapping[Any, frozenset[str]]) -> bool:
    """Whether `tree` is a plain scan of its one table, whose column names are the one entry of `columns`."""
    if not isinstance(tree, exp.Select) or len(columns) != 1:
        return False
    known = {c.casefold() for c in next(iter(columns.values()))}  # SQLite matches column names ignoring case
    if any(v for k, v in tree.args.items() if k not in _CLAUSES) or tree.args.get("kind"):
        return False
    if not _literal_limits(tree):
        return False
    source = tree.args.get("from_")
    if source is not None and isinstance(source.this, exp.Subquery):
        return _is_plain_wrapper(tree, source.this, columns, known)
    if source is None or not isinstance(source.this, exp.Table) or source.this.args.get("joins"):
        return False
    table = source.this
    if any(table.args.get(k) for k in ("laterals", "pivots", "hints", "sample", "version", "when", "only")):
        return False
    names = {table.name.casefold(), table.alias_or_name.casefold()}
    for item in tree.expressions:
        target = item.this if isinstance(item, exp.Alias) else item
        if isinstance(target, exp.Star):
            continue
        if not _known_column(target, known, names):
            return False
    where = tree.args.get("where")
    if where is not None:
        for node in where.walk():
            if not isinstance(node, _CONDITION_NODES):
                return False
            if isinstance(node, exp.Column) and not _known_column(node, known, names):
                return False
            if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest")):
                return False
    return _ordered_by_columns(tree, known, names)


def _is_plain_wrapper(
    tree: exp.Select, sub: exp.Subquery, columns: Mapping[Any, frozenset[str]], known: set[str]
) -> bool:
    """`SELECT * FROM (plain scan) [ORDER BY its columns] [LIMIT n]`."""
    inner = sub.this
    if tree.args.get("where") or not all(isinstance(e, exp.Star) for e in tree.expressions):
        return False
    if not isinstance(inner, exp.Select) or not is_plain_scan(inner, columns):
        return False
    outputs = {e.alias_or_name.casefold() for e in inner.expressions if not isinstance(e, exp.Star)}
    if any(isinstance(e, exp.Star) for e in inner.expressions):
        outputs |= known
    return _ordered_by_columns(tree, outputs, {sub.alias_or_name.casefold()})


def _ordered_by_columns(tree: exp.Select, names: set[str], tables: set[str]) -> bool:
    order = tree.args.get("order")
    if order is None:
        return True
    return all(
        _known_column(o.this if isinstance(o, exp.Ordered) else o, names, tables) for o in order.expressions
    ) and not any(order.args.get(k) for k in order.args if k != "expressions")


def _literal_limits(tree: exp.Select) -> bool:
    for clause in ("limit", "offset"):
        node = tree.args.get(clause)
        if node is not None and not all(isinstance(n, exp.Limit | exp.Offset | exp.Literal) for n in node.walk()):
            return False
    return True


def _known_column(node: exp.Expr, known: set[str], tables: set[str]) -> bool:
    if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
        return False
    if node.args.get("db") or node.args.get("catalog"):
        return False
    if node.table and node.table.casefold() not in tables:
        return False
    return node.name.casefold() in known
