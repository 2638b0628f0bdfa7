"""The SQL gate, first wall: one read-only query in Oracle's dialect, checked on its whole parse tree,
rewritten for the backend with every table qualified by its owner schema. The database is the second wall:
it runs the query read-only, as the caller (see `reader`).

Identifiers follow Oracle's rules (unquoted names fold to upper case, quoted names keep their case), so
`select * from iris` reads table IRIS on every backend, as it would on Oracle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from tables.errors import QueryRejected

#: Longest query accepted, characters.
MAX_SQL_CHARS = 100_000
#: Longest string literal, characters (Oracle's own limit, ORA-01704): bounds the work of one function call.
MAX_LITERAL_CHARS = 4000
#: Largest width or precision in a printf/format conversion (`%.*c` with a huge precision runs for seconds in
#: one uninterruptible call).
MAX_FORMAT_WIDTH = 1000
#: Deepest nesting of parentheses accepted (sqlglot's recursive parser overflows Python's stack near 50).
MAX_NESTING = 32
#: Statement and clause types that write, lock, change settings or are not plain queries.
FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "DML",
        "DDL",
        "Drop",
        "Alter",
        "Command",
        "Transaction",
        "Commit",
        "Rollback",
        "Set",
        "Pragma",
        "Into",
        "Lock",
        "Copy",
        "Attach",
        "Detach",
        "Use",
        "LoadData",
        "TruncateTable",
        "Grant",
        "Revoke",
        "Analyze",
        "Kill",
        "Cache",
        "Uncache",
        "Refresh",
        "Describe",
        "Show",
        "Summarize",
        "Merge",
        "Insert",
        "Update",
        "Delete",
        "Create",
        "Version",
        "Parameter",
        "Placeholder",
        "Execute",
        "ExecuteSql",
    )
    if hasattr(exp, name)
)
#: Function name prefixes and names that read files, sleep, talk to the network or change state.
FORBIDDEN_FUNCTION_PREFIXES = ("pg_", "lo_", "dblink", "sqlite_", "txid_", "dbms_", "utl_")
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "set_config",
        "current_setting",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "table_to_xml",
        "cursor_to_xml",
        "database_to_xml",
        "schema_to_xml",
        "xmlparse",
        "copy",
        "sleep",
        "benchmark",
        "randomblob",
        "zeroblob",
        "sqlite_offset",
        "unistr",
        "get_lock",
        "release_lock",
        "json_populate_record",
    }
)
#: Functions sqlglot does not know that are still plain computations (Oracle and PostgreSQL spellings).
ALLOWED_UNKNOWN_FUNCTIONS = frozenset(
    {
        "nvl2",
        "instr",
        "initcap",
        "lpad",
        "rpad",
        "ltrim",
        "rtrim",
        "translate",
        "to_number",
        "to_char",
        "to_date",
        "to_timestamp",
        "trunc",
        "mod",
        "sign",
        "width_bucket",
        "regexp_substr",
        "regexp_instr",
        "regexp_count",
        "regexp_replace",
        "months_between",
        "add_months",
        "last_day",
        "next_day",
        "soundex",
        "ascii",
        "chr",
        "replace",
        "reverse",
        "abs",
        "ceil",
        "floor",
        "round",
        "power",
        "sqrt",
        "exp",
        "ln",
        "log",
        "greatest",
        "least",
        "length",
        "lower",
        "upper",
        "substr",
        "concat",
        "coalesce",
        "ifnull",
        "nullif",
        "median",
        "stddev",
        "variance",
        "stddev_pop",
        "stddev_samp",
        "var_pop",
        "var_samp",
        "corr",
        "covar_pop",
        "covar_samp",
        "percentile_cont",
        "percentile_disc",
        "listagg",
        "string_agg",
        "group_concat",
        "row_number",
        "rank",
        "dense_rank",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "cume_dist",
        "percent_rank",
        "date_trunc",
        "extract",
        "strftime",
        "julianday",
        "datetime",
        "date",
        "time",
        "printf",
        "format",
    }
)


#: A printf conversion: flags, width, precision (SQLite's and PostgreSQL's spellings; `%%` has neither).
_FORMAT_SPEC = re.compile(r"%(?:\d+\$)?[-+ 0#,!']*(\*(?:\d+\$)?|\d+)?(?:\.(\*|\d+))?")


@dataclass(frozen=True)
class TableRef:
    owner: str
    name: str


@dataclass(frozen=True)
class GatedQuery:
    """A checked query: its tree (tables qualified with their owners), the tables it reads, and (once the tables
    were looked up) their column names."""

    tree: exp.Query
    tables: tuple[TableRef, ...]
    columns: Mapping[TableRef, frozenset[str]] = field(default_factory=dict)
    #: Rows of each table when it was looked up (sizes the batches of plain scans).
    row_counts: Mapping[TableRef, int] = field(default_factory=dict)

    def sql(self, dialect: str) -> str:
        """The query for the backend's dialect, every identifier quoted."""
        try:
            return self.tree.sql(dialect=dialect, identify=True)
        except RecursionError:
            raise QueryRejected("The input query is nested too deeply") from None

    def plain_scan_of(self, owner: str) -> bool:
        """Whether the query is a plain read of one table of `owner`'s (see `tables.scan`): its cost is then that
        of scanning the table, and it may run on a reader that can only be stopped between batches."""
        from tables.scan import is_plain_scan

        return len(self.tables) == 1 and self.tables[0].owner == owner and is_plain_scan(self.tree, self.columns)

    def with_columns(
        self, columns: Mapping[TableRef, frozenset[str]], row_counts: Mapping[TableRef, int] | None = None
    ) -> GatedQuery:
        return GatedQuery(self.tree, self.tables, columns, row_counts or {})

    def limited(self, rows: int) -> GatedQuery:
        """At most `rows` of the query's rows."""
        outer = exp.select("*").from_(self.tree.subquery("PYQD_Q")).limit(rows)
        return GatedQuery(outer, self.tables, self.columns, self.row_counts)

    def ordered_by(self, columns: list[str]) -> GatedQuery:
        """The same rows sorted by `columns` (names as the query returns them)."""
        outer = (
            exp.select("*").from_(self.tree.subquery("PYQD_Q")).order_by(*[exp.column(c, quoted=True) for c in columns])
        )
        return GatedQuery(outer, self.tables, self.columns, self.row_counts)


def column_name(text: str) -> str:
    """A column name as Oracle reads it: unquoted folds to upper case, "quoted" keeps its case."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1]
    if not text or not all(ch.isalnum() or ch in "_$#" for ch in text):
        raise QueryRejected(f"Invalid column name {text!r}")
    return text.upper()


def parse_query(sql: str, caller: str) -> GatedQuery:
    """Check `sql` is one read-only query and qualify its tables (owner = caller when not given)."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRejected("The input query is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRejected(f"The input query is longer than {MAX_SQL_CHARS} characters")
    if _nesting(sql) > MAX_NESTING:
        raise QueryRejected(f"The input query nests parentheses deeper than {MAX_NESTING} levels")
    try:
        gated = _parse(sql, caller)
        gated.sql("sqlite")  # long chains (a + a + ... + a) nest without parentheses: render once to be sure
        return gated
    except RecursionError:
        raise QueryRejected("The input query is nested too deeply") from None


def _nesting(sql: str) -> int:
    """The deepest nesting of parentheses outside string literals and quoted names."""
    depth = deepest = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _parse(sql: str, caller: str) -> GatedQuery:
    try:
        statements = [s for s in sqlglot.parse(sql, read="oracle") if s is not None]
    except (ParseError, TokenError) as e:
        raise QueryRejected(f"Cannot parse the input query: {_first_line(e)}") from None
    if len(statements) != 1:
        raise QueryRejected("The input must be exactly one query")
    tree = normalize_identifiers(statements[0], dialect="oracle")
    if not isinstance(tree, exp.Query):
        raise QueryRejected("The input must be a query (SELECT or WITH ... SELECT)")
    for node in tree.walk():
        _check_node(node)
    _rewrite_rownum(tree)
    _alias_subqueries(tree)
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    _mark_recursive(tree)
    refs: list[TableRef] = []
    for table in list(tree.find_all(exp.Table)):
        ref = _qualify(table, caller, ctes)
        if ref is not None and ref not in refs:
            refs.append(ref)
    return GatedQuery(tree, tuple(refs))


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def _check_node(node: exp.Expr) -> None:
    if isinstance(node, FORBIDDEN_NODES):
        raise QueryRejected(f"Only read-only queries are allowed (found {node.key.upper()})")
    if isinstance(node, exp.Literal) and node.is_string and len(node.this) > MAX_LITERAL_CHARS:
        raise QueryRejected(f"A string literal is longer than {MAX_LITERAL_CHARS} characters")
    if isinstance(node, exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if name.startswith(FORBIDDEN_FUNCTION_PREFIXES) or name in FORBIDDEN_FUNCTIONS:
            raise QueryRejected(f"Function {name.upper()} is not allowed in input queries")
        if isinstance(node, exp.Anonymous) and name not in ALLOWED_UNKNOWN_FUNCTIONS:
            raise QueryRejected(f"Function {name.upper()} is not allowed in input queries")
        if name in ("printf", "format"):
            _check_format(name, next(node.iter_expressions(), None))
        if isinstance(node, exp.Repeat | exp.Pad):
            _check_length(node)


def _check_format(name: str, fmt: exp.Expr | None) -> None:
    """printf/format take a literal format whose widths and precisions are small numbers (no `*`)."""
    if not isinstance(fmt, exp.Literal) or not fmt.is_string:
        raise QueryRejected(f"{name.upper()} needs a literal format string in input queries")
    for spec in _FORMAT_SPEC.finditer(fmt.this):
        width, precision = spec.group(1) or "", spec.group(2) or ""
        if "*" in width + precision or any(int(n) > MAX_FORMAT_WIDTH for n in (width, precision) if n):
            raise QueryRejected(
                f"{name.upper()} widths and precisions must be numbers up to {MAX_FORMAT_WIDTH} in input queries"
            )


def _check_length(node: exp.Repeat | exp.Pad) -> None:
    """REPEAT's count and LPAD/RPAD's length are literal numbers up to MAX_LITERAL_CHARS: a computed or huge
    one makes a value of any size in one call, which no deadline interrupts (a PostgreSQL backend reached 1.7 GB)."""
    count = node.args.get("times") if isinstance(node, exp.Repeat) else node.args.get("expression")
    name = "REPEAT" if isinstance(node, exp.Repeat) else "LPAD/RPAD"
    if not (isinstance(count, exp.Literal) and count.is_int and int(count.this) <= MAX_LITERAL_CHARS):
        raise QueryRejected(f"{name} needs a literal length up to {MAX_LITERAL_CHARS} in input queries")


def _qualify(table: exp.Table, caller: str, ctes: set[str]) -> TableRef | None:
    if not isinstance(table.this, exp.Identifier):
        raise QueryRejected("Table functions are not allowed in input queries")
    if table.catalog:
        raise QueryRejected(f"Invalid table reference {table.sql(dialect='oracle')}")
    name, owner = table.name, table.db
    if not owner and name in ctes:
        return None
    if not owner and name == "DUAL":
        _drop_dual(table)
        return None
    owner = owner or caller
    table.set("db", exp.to_identifier(owner, quoted=True))
    return TableRef(owner, name)


def _mark_recursive(tree: exp.Query) -> None:
    """Oracle's recursive subquery factoring has no RECURSIVE keyword; PostgreSQL needs it."""
    for with_ in tree.find_all(exp.With):
        for cte in with_.expressions:
            name = cte.alias_or_name
            if any(t.name == name and not t.db for t in cte.this.find_all(exp.Table)):
                with_.set("recursive", True)


def _alias_subqueries(tree: exp.Query) -> None:
    """Oracle allows `FROM (SELECT ...)` without an alias; PostgreSQL needs one."""
    for n, sub in enumerate(tree.find_all(exp.Subquery)):
        if not sub.alias and isinstance(sub.parent, exp.From | exp.Join):
            sub.set("alias", exp.TableAlias(this=exp.to_identifier(f"PYQD_S{n}", quoted=True)))


def _drop_dual(table: exp.Table) -> None:
    """`FROM DUAL` means no table at all (PostgreSQL and SQLite need no FROM)."""
    select = table.find_ancestor(exp.Select)
    source = select.args.get("from_") if select is not None else None
    if select is None or source is None or source.this is not table or select.args.get("joins"):
        raise QueryRejected("DUAL can only be used alone in a FROM clause")
    select.set("from_", None)


def _rewrite_rownum(tree: exp.Query) -> None:
    """`WHERE ROWNUM <= n` (alone or ANDed) becomes LIMIT n; any other ROWNUM is refused."""
    for col in list(tree.find_all(exp.Column)):
        if col.name != "ROWNUM" or col.table:
            continue
        cmp = col.parent
        select = col.find_ancestor(exp.Select)
        where = col.find_ancestor(exp.Where)
        limit = _rownum_limit(cmp, col)
        if (
            limit is None
            or select is None
            or where is None
            or where.parent is not select
            or select.args.get("order")
            or select.args.get("group")
        ) or cmp is None:
            raise QueryRejected("ROWNUM is supported only as WHERE ROWNUM < n or ROWNUM <= n (without ORDER BY)")
        parent = cmp.parent
        if isinstance(parent, exp.Where):
            select.set("where", None)
        elif isinstance(parent, exp.And):
            other = parent.right if parent.left is cmp else parent.left
            parent.replace(other)
        else:
            raise QueryRejected("ROWNUM is supported only as WHERE ROWNUM < n or ROWNUM <= n (without ORDER BY)")
        select.set("limit", exp.Limit(expression=exp.Literal.number(max(limit, 0))))


def _rownum_limit(cmp: exp.Expr | None, col: exp.Column) -> int | None:
    if not isinstance(cmp, exp.LT | exp.LTE | exp.GT | exp.GTE):
        return None
    left_is_col = cmp.left is col
    other = cmp.right if left_is_col else cmp.left
    if not isinstance(other, exp.Literal) or other.is_string:
        return None
    try:
        n = int(float(other.this))
    except ValueError:
        return None
    if (isinstance(cmp, exp.LTE) and left_is_col) or (isinstance(cmp, exp.GTE) and not left_is_col):
        return n
    if (isinstance(cmp, exp.LT) and left_is_col) or (isinstance(cmp, exp.GT) and not left_is_col):
        return n - 1
    return None
