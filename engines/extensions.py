"""pyqd's extension fields of the execution request bodies (`engines.spec`), beyond Oracle's: `funcValue` (Oracle's
`func_value` of the Python API and relational OUT_FMT of the SQL API: the values become rows of a table) and the
pickled arguments of the Python client (`pickledKwargs`, `pickledFunc`: base64 text the server checks for size and
form and passes on unread; `engines.worker.arguments` loads it in the caller's worker)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from tables.errors import TablesError
from tables.frames import MAX_COLUMNS, check_column_names, check_table_name

#: Most bytes of pickled data (keyword arguments and function together) one call may send; larger objects go
#: through a datastore (`oml.ds.save`, then `oml.ds.load` inside the function).
MAX_PICKLED_BYTES = 32 * 1024 * 1024
#: func_value column types: pyqd's logical types, and Oracle's SQL spellings (OUT_FMT's relational form).
_ORACLE_TYPES = {
    "integer": "integer", "int": "integer", "smallint": "integer", "bigint": "integer",
    "float": "float", "binary_double": "float", "binary_float": "float", "double": "float", "real": "float",
    "double precision": "float", "number": "float", "numeric": "float", "decimal": "float",
    "text": "text", "varchar2": "text", "nvarchar2": "text", "varchar": "text", "char": "text", "nchar": "text",
    "clob": "text", "nclob": "text", "string": "text",
    "boolean": "boolean", "bool": "boolean",
    "timestamp": "timestamp", "datetime": "timestamp",
    "timestamptz": "timestamptz", "timestamp with time zone": "timestamptz",
    "date": "date",
}  # fmt: skip
_SQL_TYPE_RE = re.compile(r"\s*([a-z][a-z0-9_ ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?(?:byte|char)?\s*\))?\s*", re.I)


def column_type(spelling: str) -> str:
    """The logical type of a func_value column (`integer`, `float`, `boolean`, `text`, `timestamp`,
    `timestamptz`, `date`) from its pyqd or Oracle spelling: NUMBER(p) and NUMBER(p,0) are integer, NUMBER and
    NUMBER(p,s) float, VARCHAR2(n) text, TIMESTAMP(n) timestamp. ValueError for anything else."""
    m = _SQL_TYPE_RE.fullmatch(spelling) if isinstance(spelling, str) else None
    base = " ".join(m.group(1).lower().split()) if m else ""
    if base not in _ORACLE_TYPES:
        raise ValueError(f"unknown column type {spelling!r}: use integer, float, boolean, text, timestamp, date")
    kind = _ORACLE_TYPES[base]
    if base in ("number", "numeric", "decimal") and m and m.group(2) and int(m.group(3) or 0) == 0:
        return "integer"
    return kind


class FuncValue(BaseModel):
    """pyqd's form of Oracle's `func_value` (the Python API) and relational OUT_FMT (the SQL API): the function's
    values become rows of a new table in the caller's schema, with these columns."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(
        min_length=1,
        max_length=MAX_COLUMNS,
        description="The result's columns in order, name → type (integer, float, boolean, text, timestamp, "
        'timestamptz, date, or Oracle\'s NUMBER, VARCHAR2(n), BINARY_DOUBLE, ...), e.g. {"ID": "NUMBER(10)"}',
    )
    table: str | None = Field(None, description="The table to create (default: a new name, returned)")

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        try:
            check_column_names(list(v))
        except TablesError as e:
            raise ValueError(str(e)) from None
        return {name: column_type(t) for name, t in v.items()}

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_table_name(v)
            except TablesError as e:
                raise ValueError(str(e)) from None
        return v


def _base64(value: str | None) -> str | None:
    """Base64 text (checked, not kept decoded): the server never loads what it carries."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) % 4 or not _BASE64_RE.fullmatch(value):
        raise ValueError("must be base64 text")
    return value


_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
Pickled = Annotated[str | None, BeforeValidator(_base64)]
