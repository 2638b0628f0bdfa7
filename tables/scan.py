"""Which queries are plain scans: reads whose cost is that of scanning one table, and whose values are the
stored ones. Only those may run on a reader that cannot be interrupted inside a batch (ADBC SQLite), since
nothing in them can make one batch take long or make a value larger than what the table holds.

A plain scan is `SELECT` of `*` or of the table's own columns (optionally aliased) from one table, with
optionally a WHERE made of comparisons between those columns and literals (=, <>, <, <=, >, >=, IS [NOT]
NULL, IN (literals), BETWEEN, AND, OR, NOT) and a LIMIT/OFFSET of literals. Anything else (a function call,
arithmetic, LIKE, a subquery, a join, DISTINCT, GROUP BY, ORDER BY, a window, a CTE) is not, and goes to the
reader with a progress handler. Every column must be a column of the table: an unknown double-quoted name
would otherwise read as a string literal on a connection whose double-quoted-string mode cannot be turned off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlglot import exp

#: Clauses a plain scan may have besides its select list and FROM.
_CLAUSES = frozenset({"expressions", "from_", "where", "limit", "offset", "kind"})
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
    source = tree.args.get("from_")
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
