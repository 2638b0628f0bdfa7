"""The types of a query's result columns, for making a table of it (`tables.materialize`): their names and
logical types, what an append accepts, and what the query's parse tree tells where SQLite's values cannot."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope
from sqlglot.schema import MappingSchema

from tables.errors import InvalidTableData, QueryRejected
from tables.frames import Column, check_column_names
from tables.gate import GatedQuery
from tables.sqlite_store import SqliteStore
from tables.store import UserDataStore

#: Source logical type → the logical types of existing columns it may be appended to.
APPENDABLE: dict[str, frozenset[str]] = {
    "integer": frozenset({"integer", "float", "text"}),
    "float": frozenset({"float", "text"}),
    "boolean": frozenset({"boolean", "text"}),
    "text": frozenset({"text", "timestamp", "timestamptz", "date"}),
    "timestamp": frozenset({"timestamp", "timestamptz", "date", "text"}),
    "timestamptz": frozenset({"timestamp", "timestamptz", "date", "text"}),
    "date": frozenset({"date", "timestamp", "timestamptz", "text"}),
    "binary": frozenset({"binary"}),
}
#: sqlglot's spelling of each logical type (for typing the query's tree).
_SQLGLOT_TYPES = {
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "text": "TEXT",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "date": "DATE",
    "binary": "VARBINARY",
}


@dataclass(frozen=True)
class OutputColumn:
    """A column of the query's result: its name, and its logical type (None: no value tells, all null)."""

    name: str
    type: str | None


def check_named(tree: exp.Query) -> None:
    """Every column of the result has a name (as Oracle's CREATE TABLE AS asks: ORA-00998)."""
    for item in tree.selects:
        if not isinstance(item, exp.Alias | exp.Column | exp.Star):
            raise QueryRejected(
                f"Name the expression {item.sql(dialect='oracle')[:200]} with a column alias to make a table of it"
            )


def check_output(columns: Sequence[OutputColumn]) -> None:
    """The result's column names make a table's (InvalidTableName otherwise: duplicates, quotes, too long)."""
    if not columns:
        raise InvalidTableData("The query gives no columns")
    check_column_names([c.name for c in columns])


def appended(columns: Sequence[OutputColumn], existing: Mapping[str, str]) -> None:
    """InvalidTableData unless the result has exactly the table's columns (by name, in any order) in types that
    fit them."""
    have = sorted(existing)
    if sorted(c.name for c in columns) != have:
        raise InvalidTableData(
            f"Appended data must have the table's columns {have}; the query gives {[c.name for c in columns]}"
        )
    for c in columns:
        target = existing[c.name]
        if c.type is not None and target not in APPENDABLE[c.type]:
            raise InvalidTableData(f"Column {c.name!r} holds {c.type} values, which cannot be appended as {target}")


@dataclass(frozen=True)
class Target:
    """Where a materialize writes: into the existing table (`appending`) or a new one named `name` (the final
    name, or a staging name beside a table being replaced), with these column types."""

    appending: bool
    types: dict[str, str]
    name: str


def plan_target(columns: Sequence[OutputColumn], existing: Sequence[Column], mode: str, name: str) -> Target:
    """The target of a materialize whose result has `columns`, into table `name` (with `existing` columns, if any):
    the result must make a table's columns, and an append must fit the table's."""
    check_output(columns)
    if mode == "append" and existing:
        appended(columns, {c.name: c.type for c in existing})
        return Target(True, {c.name: c.type for c in existing}, name)
    types = {c.name: c.type or "text" for c in columns}
    # A replaced table is built beside the old one, which the query may be reading, and takes its name at the end.
    return Target(False, types, f"pyqd_stage_{secrets.token_hex(6)}" if existing and mode == "replace" else name)


@dataclass(frozen=True)
class Declared:
    """What the query's parse tree says of a result column: its logical type (None: cannot tell), and whether it
    is a stored column read through unchanged (its values then have the column's type)."""

    type: str | None
    stored: bool


def logical_from_values(kinds: set[str], declared: str | None) -> str:
    """The logical type of a SQLite result column from the kinds of values it holds ('integer', 'real', 'text',
    'blob') and the type the query's tree gives it (which tells booleans and times apart from numbers and text)."""
    if declared == "boolean" and kinds <= {"integer"}:
        return "boolean"
    if declared in ("timestamp", "timestamptz", "date") and kinds <= {"text"}:
        return declared
    if not kinds:
        return declared or "text"
    if "blob" in kinds:
        if kinds != {"blob"}:
            raise InvalidTableData("A column holds binary values mixed with other values; cast them to one type")
        return "binary"
    if "text" in kinds:
        return "text"
    if "real" in kinds:
        return "float"
    return "integer"


def declared_types(store: UserDataStore, gated: GatedQuery) -> dict[str, Declared]:
    """Result column name → what the query's parse tree says of it (best effort: where it cannot tell, the values
    decide). Only SQLite needs it: PostgreSQL knows the types of a query's columns."""
    if not isinstance(store, SqliteStore):
        return {}
    tables: dict[str, dict[str, dict[str, exp.DataType]]] = {}
    for ref in gated.tables:
        columns = store.columns(ref.owner, ref.name)
        if not columns:
            return {}
        tables.setdefault(_quoted(ref.owner), {})[_quoted(ref.name)] = {
            _quoted(c.name): exp.DataType.build(_SQLGLOT_TYPES[c.type]) for c in columns
        }
    try:
        schema = MappingSchema(cast(dict[str, object], tables), dialect="oracle")
        tree = qualify(gated.tree.copy(), schema=schema, dialect="oracle", validate_qualify_columns=False)
        tree = annotate_types(tree, schema=schema, dialect="oracle")
        scope = build_scope(tree) if isinstance(tree, exp.Select) else None
        declared = {}
        for item in tree.selects:
            target = item.this if isinstance(item, exp.Alias) else item
            source = scope.selected_sources.get(target.table) if scope and isinstance(target, exp.Column) else None
            stored = source is not None and isinstance(source[1], exp.Table)
            declared[item.alias_or_name] = Declared(_logical(item.type), stored)
        return declared
    except Exception:  # noqa: BLE001 - typing the tree is a hint; the values still decide
        return {}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _logical(t: exp.DataType | None) -> str | None:
    if t is None:
        return None
    kinds = (
        ("boolean", {exp.DataType.Type.BOOLEAN}),
        ("integer", exp.DataType.INTEGER_TYPES),
        ("float", exp.DataType.REAL_TYPES),
        ("text", exp.DataType.TEXT_TYPES),
        ("date", {exp.DataType.Type.DATE}),
        ("timestamptz", {exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMPLTZ}),
        ("timestamp", {exp.DataType.Type.TIMESTAMP, exp.DataType.Type.DATETIME}),
        ("binary", {exp.DataType.Type.VARBINARY, exp.DataType.Type.BINARY, exp.DataType.Type.BLOB}),
    )
    for logical, types in kinds:
        if t.this in types:
            return logical
    return None
