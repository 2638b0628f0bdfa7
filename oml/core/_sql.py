"""SQL building for the transparency layer: `Rel`, one flat SELECT in Oracle's dialect built from sqlglot
expressions, and the helpers that keep it flat.

A `Rel` is always *plain*: `SELECT <row-wise items> FROM <source> [JOIN ...] [WHERE ...] [ORDER BY ...]
[FETCH FIRST n ROWS ONLY]`. Its items, conditions and sort keys are expressions over the columns of its FROM
clause ("source level"). Operations on a proxy inline their expressions into the same SELECT where SQL allows
(projections, filters, sorts), and wrap the query in a subquery only where it must (a filter after a row limit,
DISTINCT, window functions, aggregates). An expression that grows too deep is split over a subquery (`_stage`), so
the SQL stays within the gate's nesting limit however long the chain of operations.

User values only ever enter as literals built by sqlglot; names only as quoted identifiers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.eliminate_subqueries import eliminate_subqueries

DIALECT = "oracle"
#: The kinds of column the stats seam speaks of; each maps to an oml series class.
KINDS = ("number", "string", "boolean", "bytes", "datetime")
#: Tallest expression tree kept in one SELECT (sqlglot nodes; about half as many parentheses).
MAX_HEIGHT = 24
#: Height of the pieces a too-tall expression is cut into (`_stage`).
STAGE_HEIGHT = 20
#: Most nodes in one expression: past this, a binary operation on series refuses (x*x*x... doubles each time).
MAX_NODES = 20_000
#: Most nested subqueries written as such; deeper ones are written as WITH clauses (see `flat_sql`).
MAX_SUBQUERY_DEPTH = 12
#: Prefix of the hidden columns a subquery carries for the query around it.
HIDDEN = "__oml_"

Item = tuple[str, exp.Expr, str]


def ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    """A quoted column reference (optionally qualified by a quoted table alias)."""
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def lit(value: object) -> exp.Expr:
    """A SQL literal for a Python value (strings are escaped by sqlglot; nothing is pasted)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Literal.number(int(value))
    if isinstance(value, int):
        return exp.Literal.number(value) if value >= 0 else exp.Neg(this=exp.Literal.number(-value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be used in a database expression")
        text = repr(abs(value))
        return exp.Literal.number(text) if value >= 0 else exp.Neg(this=exp.Literal.number(text))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings with NUL characters cannot be used in database expressions")
        return exp.Literal.string(value)
    try:
        import numpy as np

        if isinstance(value, np.bool_):
            return lit(bool(value))
        if isinstance(value, np.integer):
            return lit(int(value))
        if isinstance(value, np.floating):
            return lit(float(value))
    except ImportError:  # pragma: no cover - numpy comes with pandas
        pass
    raise TypeError(f"a {type(value).__name__} cannot be used in a database expression")


def paren(e: exp.Expr) -> exp.Expr:
    """`e` in parentheses unless it is an atom."""
    if isinstance(e, exp.Column | exp.Literal | exp.Paren | exp.Null | exp.Func | exp.Identifier):
        return e
    return exp.Paren(this=e)


def as_number(e: exp.Expr, kind: str) -> exp.Expr:
    """A boolean expression as 1/0/NULL (Oracle's Boolean columns hold 0 and 1), others unchanged."""
    if kind != "boolean":
        return e
    return exp.Case(
        ifs=[
            exp.If(this=paren(e.copy()), true=exp.Literal.number(1)),
            exp.If(this=exp.Not(this=paren(e.copy())), true=exp.Literal.number(0)),
        ]
    )


def as_double(e: exp.Expr) -> exp.Expr:
    """`e` as a binary double: the same IEEE arithmetic on every backend (PostgreSQL would use exact NUMERIC)."""
    return exp.Cast(this=e, to=exp.DataType.build("DOUBLE"))


def conjuncts(e: exp.Expr) -> list[exp.Expr]:
    """The top-level AND terms of a condition."""
    if isinstance(e, exp.And):
        return conjuncts(e.left) + conjuncts(e.right)
    if isinstance(e, exp.Paren) and isinstance(e.this, exp.And):
        return conjuncts(e.this)
    return [e]


def and_all(conds: Sequence[exp.Expr]) -> exp.Expr:
    out = paren(conds[0].copy())
    for c in conds[1:]:
        out = exp.And(this=out, expression=paren(c.copy()))
    return out


def height(e: exp.Expr) -> int:
    return 1 + max((height(c) for c in e.iter_expressions()), default=0)


def size(e: exp.Expr) -> int:
    return sum(1 for _ in e.walk())


def has_window_or_agg(e: exp.Expr) -> bool:
    return any(isinstance(n, exp.Window | exp.AggFunc) for n in e.walk())


def _alias(e: exp.Expr, name: str) -> exp.Expr:
    if isinstance(e, exp.Column) and not e.table and e.name == name and e.this.quoted:
        return e.copy()
    return exp.Alias(this=e.copy(), alias=ident(name))


def unique_name(base: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    n, name = 1, f"{base}1"
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


@dataclass(frozen=True, eq=False)
class Rel:
    """One plain SELECT (see the module docstring) and the kind of each output column."""

    source: exp.Expr
    items: tuple[Item, ...]
    joins: tuple[exp.Expr, ...] = ()
    where: tuple[exp.Expr, ...] = ()
    order: tuple[exp.Ordered, ...] = ()
    limit: int | None = None
    #: Subquery depth of `source` (names the next subquery's alias).
    depth: int = 0
    _sql: list[str] = field(default_factory=list, repr=False)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def table(cls, name: str, owner: str | None, kinds: dict[str, str]) -> Rel:
        source = exp.Table(this=ident(name), db=ident(owner) if owner else None)
        return cls(source, tuple((c, col(c), k) for c, k in kinds.items()))

    @classmethod
    def over(cls, query: exp.Query, kinds: dict[str, str], depth: int = 0) -> Rel:
        """`SELECT "c", ... FROM (query) "Qn"`: a plain Rel over any query with the given output columns."""
        alias = f"Q{depth + 1}"
        source = exp.Subquery(this=query, alias=exp.TableAlias(this=ident(alias)))
        return cls(source, tuple((c, col(c), k) for c, k in kinds.items()), depth=depth + 1)

    @classmethod
    def parse(cls, sql: str, kinds: dict[str, str]) -> Rel:
        """The Rel of SQL text (a pickled proxy's, or a user's query): taken apart when it is plain, else wrapped."""
        tree = sqlglot.parse_one(sql, read=DIALECT)
        if not isinstance(tree, exp.Query):
            raise ValueError("a proxy's SQL must be a query")
        plain = _decompose(tree, kinds)
        return plain if plain is not None else cls.over(tree, kinds, _depth_of(tree))

    # ---- reading ------------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return [n for n, _, _ in self.items]

    @property
    def kinds(self) -> dict[str, str]:
        return {n: k for n, _, k in self.items}

    def expr(self, name: str) -> exp.Expr:
        for n, e, _ in self.items:
            if n == name:
                return e
        raise KeyError(name)

    def kind(self, name: str) -> str:
        return self.kinds[name]

    def select(self, hidden: Sequence[tuple[str, exp.Expr]] = ()) -> exp.Select:
        """The SELECT, with `hidden` extra (name, source-level expression) columns at the end."""
        projections = [_alias(e, n) for n, e, _ in self.items] + [_alias(e, n) for n, e in hidden]
        s = exp.Select(expressions=projections)
        s.set("from_", exp.From(this=self.source.copy()))
        if self.joins:
            s.set("joins", [j.copy() for j in self.joins])
        if self.where:
            s.set("where", exp.Where(this=and_all(self.where)))
        if self.order:
            s.set("order", exp.Order(expressions=[o.copy() for o in self.order]))
        if self.limit is not None:
            s.set("limit", exp.Limit(expression=exp.Literal.number(self.limit)))
        return s

    def sql(self) -> str:
        """The query's Oracle SQL text (subqueries as a flat chain of WITH clauses: see `flat_sql`)."""
        if not self._sql:
            self._sql.append(flat_sql(self.select()))
        return self._sql[0]

    def rows_key(self) -> str:
        """What decides the rows (not the columns): proxies with the same key can be combined column-wise."""
        s = exp.Select(expressions=[exp.Literal.number(1)])
        s.set("from_", exp.From(this=self.source.copy()))
        if self.joins:
            s.set("joins", [j.copy() for j in self.joins])
        if self.where:
            s.set("where", exp.Where(this=and_all(self.where)))
        if self.limit is not None:
            s.set("limit", exp.Limit(expression=exp.Literal.number(self.limit)))
            if self.order:
                s.set("order", exp.Order(expressions=[o.copy() for o in self.order]))
        return s.sql(dialect=DIALECT)

    # ---- operations (all take source-level expressions) ----------------------------------------------------
    def project(self, items: Sequence[Item]) -> Rel:
        """The same rows with other columns."""
        return _fit(replace(self, items=tuple(items), _sql=[]))

    def filter(self, cond: exp.Expr) -> Rel:
        """The rows where `cond` holds."""
        if self.limit is not None or has_window_or_agg(cond):
            name = unique_name(HIDDEN + "f", self.columns)
            outer = self.wrap([(name, cond)])
            return replace(outer, where=(col(name),), _sql=[])
        return _fit(replace(self, where=(*self.where, *conjuncts(cond)), _sql=[]))

    def sort(self, keys: Sequence[exp.Ordered]) -> Rel:
        """The same rows in another order."""
        if self.limit is not None or any(has_window_or_agg(k) for k in keys):
            names = [unique_name(HIDDEN + f"s{i}_", self.columns) for i in range(len(keys))]
            outer = self.wrap([(n, k.this) for n, k in zip(names, keys, strict=True)], keep_order=False)
            order = tuple(replace_this(k, col(n)) for n, k in zip(names, keys, strict=True))
            return replace(outer, order=order, _sql=[])
        return _fit(replace(self, order=tuple(keys), _sql=[]))

    def head(self, n: int) -> Rel:
        n = max(0, int(n))
        return replace(self, limit=n if self.limit is None else min(n, self.limit), _sql=[])

    def wrap(self, hidden: Sequence[tuple[str, exp.Expr]] = (), keep_order: bool = True) -> Rel:
        """`SELECT <outputs> FROM (self + hidden columns) "Qn"`, in the same order: the sort keys travel as hidden
        columns. The hidden columns can be used by the caller (filters, sorts) but are not outputs."""
        hidden = list(hidden)
        order: list[exp.Ordered] = []
        if keep_order:
            for o in self.order:
                match = next((n for n, e, _ in self.items if e == o.this), None)
                if match is None:
                    match = unique_name(HIDDEN + "o", [*self.columns, *(h for h, _ in hidden)])
                    hidden.append((match, o.this))
                order.append(replace_this(o, col(match)))
        outer = Rel.over(self.select(hidden), {**self.kinds, **{h: "number" for h, _ in hidden}}, self.depth)
        return replace(outer, items=outer.items[: len(self.items)], order=tuple(order))

    def query_over(self, build: exp.Select) -> exp.Select:
        """`build` (a SELECT with no FROM) reading this query as subquery "Q": for aggregates and windows."""
        alias = f"Q{self.depth + 1}"
        build.set("from_", exp.From(this=exp.Subquery(this=self.select(), alias=exp.TableAlias(this=ident(alias)))))
        return build


def flat_sql(query: exp.Expr) -> str:
    """Oracle SQL for a query. Past MAX_SUBQUERY_DEPTH nested subqueries (SQLite's parser overflows at about 16),
    they become common table expressions: a chain of operations then nests no deeper than one of them."""
    if subquery_depth(query) <= MAX_SUBQUERY_DEPTH:
        return query.sql(dialect=DIALECT)
    try:
        flat = eliminate_subqueries(query.copy())
    except Exception:  # noqa: BLE001 - a shape the rule does not handle: the nested form is still valid SQL
        flat = query
    return flat.sql(dialect=DIALECT)


def subquery_depth(query: exp.Expr) -> int:
    """How deep subqueries nest in a query."""
    deepest = 0
    for sub in query.find_all(exp.Subquery):
        depth, node = 1, sub.parent
        while node is not None:
            depth += isinstance(node, exp.Subquery)
            node = node.parent
        deepest = max(deepest, depth)
    return deepest


def replace_this(o: exp.Ordered, this: exp.Expr) -> exp.Ordered:
    new = o.copy()
    new.set("this", this)
    return new


def _fit(rel: Rel) -> Rel:
    """The Rel, split over a subquery where an expression is too tall for one SELECT."""
    exprs = [e for _, e, _ in rel.items] + list(rel.where) + [o.this for o in rel.order]
    if all(height(e) <= MAX_HEIGHT for e in exprs):
        return rel
    return _fit(_stage(rel))


def _stage(rel: Rel) -> Rel:
    """Move the lower parts of tall expressions into a subquery's columns: the outer expressions refer to them."""
    inner: dict[str, tuple[str, exp.Expr]] = {}  # SQL text -> (hidden name, expression)

    def hide(node: exp.Expr) -> exp.Expr:
        key = node.sql(dialect=DIALECT)
        if key not in inner:
            inner[key] = (f"{HIDDEN}h{len(inner) + 1}", node.copy())
        return col(inner[key][0])

    def cut(node: exp.Expr) -> exp.Expr:
        if not any(isinstance(n, exp.Column) for n in node.walk()):
            return node.copy()
        if height(node) <= STAGE_HEIGHT or isinstance(node, exp.Column):
            return hide(node)
        new = node.copy()
        for key, value in list(new.args.items()):
            if isinstance(value, exp.Expr):
                new.set(key, cut(node.args[key]))
            elif isinstance(value, list):
                new.set(key, [cut(v) if isinstance(v, exp.Expr) else v for v in node.args[key]])
        return new

    shallow = tuple(w for w in rel.where if height(w) <= MAX_HEIGHT)
    items = [(n, cut(e), k) for n, e, k in rel.items]
    where = [cut(w) for w in rel.where if height(w) > MAX_HEIGHT]
    order = [replace_this(o, cut(o.this)) for o in rel.order]
    projections = [_alias(e, n) for n, e in inner.values()]
    s = exp.Select(expressions=projections or [exp.Literal.number(1)])
    s.set("from_", exp.From(this=rel.source.copy()))
    if rel.joins:
        s.set("joins", [j.copy() for j in rel.joins])
    if shallow:
        s.set("where", exp.Where(this=and_all(shallow)))
    alias = f"Q{rel.depth + 1}"
    source = exp.Subquery(this=s, alias=exp.TableAlias(this=ident(alias)))
    return Rel(source, tuple(items), (), tuple(where), tuple(order), rel.limit, rel.depth + 1)


def _depth_of(tree: exp.Expr) -> int:
    depth = 0
    for sub in tree.find_all(exp.Subquery):
        alias = sub.alias
        if alias.startswith("Q") and alias[1:].isdigit():
            depth = max(depth, int(alias[1:]))
    return depth


def _decompose(tree: exp.Query, kinds: dict[str, str]) -> Rel | None:
    """A plain SELECT taken apart into a Rel (None when it is not plain)."""
    if not isinstance(tree, exp.Select):
        return None
    blocked = ("with_", "distinct", "group", "having", "qualify", "windows", "offset", "connect", "pivots", "laterals")
    if any(tree.args.get(k) for k in blocked):
        return None
    source = tree.args.get("from_")
    if source is None or len(tree.expressions) != len(kinds):
        return None
    items: list[Item] = []
    for projection, (name, kind) in zip(tree.expressions, kinds.items(), strict=True):
        if projection.alias_or_name != name or isinstance(projection, exp.Star):
            return None
        e = projection.this if isinstance(projection, exp.Alias) else projection
        if has_window_or_agg(e):
            return None
        items.append((name, e, kind))
    where = tree.args.get("where")
    conds = tuple(conjuncts(where.this)) if where is not None else ()
    if any(has_window_or_agg(c) for c in conds):
        return None
    order = tuple(tree.args["order"].expressions) if tree.args.get("order") else ()
    limit_node = tree.args.get("limit")
    limit: int | None = None
    if limit_node is not None:
        count = limit_node.args.get("count") if isinstance(limit_node, exp.Fetch) else limit_node.expression
        if not isinstance(count, exp.Literal) or not count.is_int:
            return None
        limit = int(count.this)
    joins = tuple(tree.args.get("joins") or ())
    return Rel(source.this, tuple(items), joins, conds, order, limit, _depth_of(tree))
