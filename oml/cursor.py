"""`oml.cursor()`: a read-only DB-API 2.0 (PEP 249) cursor over pyqd's read door.

Oracle's `oml.cursor()` returns a cx_Oracle cursor on the session's database connection. pyqd has no general SQL
door: this cursor sends each statement to `POST /oml/api/pyqd/v1/query`, where the SQL gate lets through one
read-only query (Oracle dialect) on tables the caller may read, and reads the rows back as Arrow. DDL, DML and
PL/SQL blocks are refused by the gate and raise ProgrammingError. Bind parameters (`:name`, `:1`, `?`) are turned
into SQL literals on the parsed statement (sqlglot), never pasted into the text.

Errors (PEP 249), all also `oml.OMLError`:

    Warning                    never raised (PEP 249 asks for the name)
    Error
    ├── InterfaceError         the cursor or the `oml` connection is closed, or no query has run
    └── DatabaseError
        ├── DataError          never raised
        ├── OperationalError   time limit, server busy, bad or expired credentials, server unreachable
        ├── IntegrityError     never raised (nothing is written)
        ├── InternalError      the server failed
        ├── ProgrammingError   the gate refused the statement (not one query, unknown table, syntax) or its binds
        └── NotSupportedError  a value with no SQL literal (bytes, dates, NaN), executemany, callproc
"""

from __future__ import annotations

import decimal
import numbers
import re
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from oml._connection import PYQD, Connection, current
from oml.errors import OMLError, ServerError

apilevel = "2.0"
#: Threads may share the module and the `oml` connection, not a cursor.
threadsafety = 2
#: cx_Oracle's style: `:name` (also `:1` positional, and `?`).
paramstyle = "named"

#: Default rows per fetchmany(), as cx_Oracle's cursors.
DEFAULT_ARRAYSIZE = 100
#: errorCodes of the server's answers that are about time, not about the statement (server/errors.py).
_TIME_CODES = frozenset({1040, 1041})
#: Where a placeholder would stand for a name rather than a value.
_NAME_NODES = (exp.Table, exp.Column, exp.Identifier, exp.Dot)
#: How a bind name may be spelled after its colon when unquoted.
_BIND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_$#]*|[0-9]+")


class Warning(Exception):  # PEP 249's name; shadows the builtin in this module only
    """Important warnings (PEP 249); pyqd raises none."""


class Error(OMLError):
    """Base of the cursor's errors (PEP 249)."""


class InterfaceError(Error):
    """The cursor or the connection is closed, or there is no result to fetch."""


class DatabaseError(Error):
    """The server refused or failed the statement."""


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    """Not the statement's fault: time limit, busy server, credentials, network."""


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    """The statement or its parameters are wrong, or are not one read-only query."""


class NotSupportedError(DatabaseError):
    """Something a read-only cursor over the SQL gate cannot do."""


class DbType:
    """A column's type in `description` (as python-oracledb's DB_TYPE_* objects)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<DbType {self.name}>"


DB_TYPE_NUMBER = DbType("DB_TYPE_NUMBER")
DB_TYPE_BINARY_DOUBLE = DbType("DB_TYPE_BINARY_DOUBLE")
DB_TYPE_VARCHAR = DbType("DB_TYPE_VARCHAR")
DB_TYPE_RAW = DbType("DB_TYPE_RAW")
DB_TYPE_DATE = DbType("DB_TYPE_DATE")
DB_TYPE_TIMESTAMP = DbType("DB_TYPE_TIMESTAMP")
DB_TYPE_TIMESTAMP_TZ = DbType("DB_TYPE_TIMESTAMP_TZ")
DB_TYPE_INTERVAL_DS = DbType("DB_TYPE_INTERVAL_DS")
DB_TYPE_BOOLEAN = DbType("DB_TYPE_BOOLEAN")


class _TypeGroup:
    """PEP 249's type objects: equal to each type code of their group."""

    def __init__(self, *members: DbType) -> None:
        self.members = members

    def __eq__(self, other: object) -> bool:
        return other in self.members or other is self

    def __hash__(self) -> int:
        return id(self)


STRING = _TypeGroup(DB_TYPE_VARCHAR)
BINARY = _TypeGroup(DB_TYPE_RAW)
NUMBER = _TypeGroup(DB_TYPE_NUMBER, DB_TYPE_BINARY_DOUBLE, DB_TYPE_BOOLEAN)
DATETIME = _TypeGroup(DB_TYPE_DATE, DB_TYPE_TIMESTAMP, DB_TYPE_TIMESTAMP_TZ)
ROWID = _TypeGroup()

Description = tuple[str, DbType, int | None, int | None, int | None, int | None, bool]


class Cursor:
    """A read-only cursor: `execute` one query, then `fetchone`/`fetchmany`/`fetchall` or iterate.

    `execute` reads the whole result (as Arrow, which is compact) and rows become tuples as they are fetched;
    for results too large for memory use a proxy, `oml.sync(query=...)`. `rowcount` is the number of rows
    fetched so far, as cx_Oracle counts it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._closed = False
        self._table: pa.Table | None = None
        self._position = 0
        self.arraysize = DEFAULT_ARRAYSIZE
        self.description: list[Description] | None = None
        self.rowcount = -1

    # -- running a statement

    def execute(self, statement: str, parameters: Any = None, **keyword_parameters: Any) -> Cursor:
        """Run one read-only query (Oracle SQL), with optional bind values; returns the cursor."""
        self._check_open()
        if not isinstance(statement, str):
            raise ProgrammingError("the statement must be a string")
        if keyword_parameters:
            if parameters is not None:
                raise ProgrammingError("give bind values either as parameters or as keyword arguments, not both")
            parameters = keyword_parameters
        sql = statement if parameters is None else bind(statement, parameters)
        self._table, self._position, self.description, self.rowcount = None, 0, None, -1
        table = self._run(sql)
        self._table, self.rowcount = table, 0
        self.description = _describe(table.schema) if table is not None else None
        return self

    def _run(self, sql: str) -> pa.Table | None:
        if self._connection.http.is_closed:
            raise InterfaceError("not connected: the oml connection was closed (oml.disconnect)")
        try:
            r = self._connection.request("POST", f"{PYQD}/query", json={"query": sql, "limit": None})
        except ServerError as e:
            raise _database_error(e) from e
        except httpx.HTTPError as e:
            raise OperationalError(f"cannot reach the server: {e}") from e
        if not r.content:
            return None  # the read door sends nothing for a result without rows or columns
        return pa.ipc.open_stream(r.content).read_all()

    def executemany(self, statement: str, seq_of_parameters: Any) -> None:
        raise NotSupportedError("executemany is for writes; the cursor is read-only (run execute once per query)")

    def callproc(self, name: str, parameters: Any = None) -> Any:
        raise NotSupportedError("stored procedures cannot run through pyqd's read-only cursor")

    def setinputsizes(self, *args: Any, **kwargs: Any) -> None:
        """Accepted and ignored (values become literals of their own type)."""

    def setoutputsize(self, size: int, column: int | None = None) -> None:
        """Accepted and ignored."""

    # -- fetching

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._fetch(1)
        return rows[0] if rows else None

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        """The next `size` rows (default `arraysize`); fewer, or none, at the end."""
        n = self.arraysize if size is None else size
        if n < 0:
            raise ProgrammingError("size must not be negative")
        return self._fetch(n)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """All remaining rows."""
        return self._fetch(None)

    def _fetch(self, n: int | None) -> list[tuple[Any, ...]]:
        self._check_open()
        if self.rowcount < 0:
            raise InterfaceError("no query has been executed")
        table = self._table
        if table is None:
            return []
        end = table.num_rows if n is None else min(table.num_rows, self._position + n)
        part = table.slice(self._position, end - self._position)
        self._position = end
        self.rowcount = end
        return list(zip(*(column.to_pylist() for column in part.columns), strict=True))

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    # -- closing

    def close(self) -> None:
        """Forget the result; the cursor cannot be used again."""
        self._closed, self._table, self.description = True, None, None

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")

    def __enter__(self) -> Cursor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<oml.cursor {'closed' if self._closed else 'open'} on {self._connection.url}>"


def cursor() -> Cursor:
    """A read-only DB-API 2.0 cursor on the current connection (Oracle's `oml.cursor()`)."""
    return Cursor(current())


class _CallableModule(types.ModuleType):
    """`oml.cursor` is this module and Oracle's function at once: `oml.cursor()` makes a cursor, while
    `oml.cursor.ProgrammingError` & co. are PEP 249's module-level names (as `oracledb.ProgrammingError`)."""

    def __call__(self) -> Cursor:
        return cursor()


sys.modules[__name__].__class__ = _CallableModule  # the data model's documented way to customize a module


# -- binding


def bind(statement: str, parameters: Any) -> str:
    """`statement` with each bind placeholder replaced by its value as an SQL literal, built on sqlglot's parse
    tree (Oracle dialect). `parameters` is a mapping (`:name` binds, names case-insensitive unless quoted) or a
    sequence (one value per placeholder, in the order they appear, as Oracle binds by position)."""
    spans = _placeholders(statement)
    names = [name for _, _, name in spans]
    values = _values_for(names, parameters)
    text, last = [], 0
    for i, (start, end, _) in enumerate(spans):
        text.append(statement[last:start])
        text.append(f':"{_canonical(i)}"')  # a name of our own: no user text reaches the parser here
        last = end + 1
    text.append(statement[last:])
    try:
        trees = sqlglot.parse("".join(text), read="oracle")
    except (ParseError, TokenError) as e:
        raise ProgrammingError(f"cannot read the statement to bind its values: {e}") from None
    if len(trees) != 1 or trees[0] is None:
        raise ProgrammingError("the statement must be exactly one query")
    tree = trees[0]
    for node in list(tree.find_all(exp.Placeholder, exp.Parameter)):
        index = _index_of(node)
        if index is None:
            raise ProgrammingError(f"unsupported bind syntax: {node.sql(dialect='oracle')}")
        if isinstance(node.parent, _NAME_NODES) or node.arg_key == "alias":
            raise ProgrammingError("a bind value stands for a value, not for a name (table, column or alias)")
        node.replace(_literal(values[index]))
    return tree.sql(dialect="oracle")


def _placeholders(statement: str) -> list[tuple[int, int, str | None]]:
    """(start, end inclusive, name) of each bind placeholder, in text order; name None for `?`."""
    try:
        tokens = sqlglot.Dialect.get_or_raise("oracle").tokenize(statement)
    except TokenError as e:
        raise ProgrammingError(f"cannot read the statement to bind its values: {e}") from None
    spans: list[tuple[int, int, str | None]] = []
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.PLACEHOLDER and token.text == "?":
            spans.append((token.start, token.end, None))
        elif token.token_type == TokenType.COLON and i + 1 < len(tokens):
            name = tokens[i + 1]
            if name.start != token.end + 1:
                continue
            if name.token_type == TokenType.IDENTIFIER:  # :"Quoted" keeps its case
                spans.append((token.start, name.end, '"' + name.text))
            elif _BIND_NAME.fullmatch(name.text):
                spans.append((token.start, name.end, name.text.upper()))
    return spans


def _values_for(names: list[str | None], parameters: Any) -> list[Any]:
    if isinstance(parameters, Mapping):
        named = [name for name in names if name is not None]
        if len(named) != len(names):
            raise ProgrammingError("'?' placeholders take a sequence of values, not a mapping")
        given = {_key(k): v for k, v in parameters.items()}
        missing = sorted({n.lstrip('"') for n in named if n not in given})
        if missing:
            raise ProgrammingError(f"no value for bind placeholder(s): {', '.join(missing)}")
        unused = sorted(k.lstrip('"') for k in given.keys() - set(named))
        if unused:
            raise ProgrammingError(f"no bind placeholder named: {', '.join(unused)}")
        return [given[n] for n in named]
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        if len(parameters) != len(names):
            raise ProgrammingError(
                f"the statement has {len(names)} bind placeholder(s); {len(parameters)} value(s) given"
            )
        return list(parameters)
    raise ProgrammingError("parameters must be a mapping (for :name binds) or a sequence (by position)")


def _key(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ProgrammingError(f"bind names must be non-empty strings, not {name!r}")
    name = name.removeprefix(":")
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        return '"' + name[1:-1]
    return name.upper() if _BIND_NAME.fullmatch(name) else '"' + name


def _canonical(i: int) -> str:
    return f"PYQD_BIND_{i}"


def _index_of(node: exp.Expression) -> int | None:
    if not isinstance(node, exp.Placeholder):
        return None
    match = re.fullmatch(r"PYQD_BIND_([0-9]+)", str(node.name))
    return int(match.group(1)) if match else None


def _literal(value: Any) -> exp.Expression:
    """`value` as an SQL literal node."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Literal.number(int(value))  # Oracle SQL has no booleans: 1 and 0, as NUMBER columns hold them
    if isinstance(value, numbers.Integral):
        return exp.Literal.number(int(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise NotSupportedError(f"cannot bind {value}: SQL has no literal for it")
        return exp.Literal.number(format(value, "f"))
    if isinstance(value, numbers.Real):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise NotSupportedError(f"cannot bind {number}: SQL has no literal for it")
        return exp.Literal.number(repr(number))
    if isinstance(value, str):
        return exp.Literal.string(value)
    raise NotSupportedError(
        f"cannot bind a value of type {type(value).__name__}: pyqd binds None, bool, int, float, Decimal and str"
    )


# -- results and errors


def _describe(schema: pa.Schema) -> list[Description]:
    return [_column(field) for field in schema]


def _column(field: pa.Field) -> Description:
    t = field.type
    precision: int | None = None
    scale: int | None = None
    if pa.types.is_boolean(t):
        code = DB_TYPE_BOOLEAN
    elif pa.types.is_integer(t):
        code, scale = DB_TYPE_NUMBER, 0
    elif pa.types.is_decimal(t):
        code, precision, scale = DB_TYPE_NUMBER, t.precision, t.scale
    elif pa.types.is_floating(t):
        code = DB_TYPE_BINARY_DOUBLE
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        code = DB_TYPE_RAW
    elif pa.types.is_date(t):
        code = DB_TYPE_DATE
    elif pa.types.is_timestamp(t):
        code = DB_TYPE_TIMESTAMP_TZ if t.tz else DB_TYPE_TIMESTAMP
    elif pa.types.is_duration(t):
        code = DB_TYPE_INTERVAL_DS
    else:
        code = DB_TYPE_VARCHAR
    return (field.name, code, None, None, precision, scale, field.nullable)


def _database_error(e: ServerError) -> DatabaseError:
    """The PEP 249 error for a refusal of the read door."""
    message = e.message
    if e.status >= 500 and e.status != 503:
        return InternalError(message)
    if e.status in (401, 429, 503) or e.code in _TIME_CODES:
        return OperationalError(message)
    return ProgrammingError(message)
