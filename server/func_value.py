"""Oracle's `func_value` (pyqd's `funcValue`): a call's values become the rows of a new table in the caller's
schema, and the answer describes that table (the Python client returns a proxy for it, as Oracle's returns an
`oml.DataFrame` kept in the database).

The workers render each invocation's value as one JSON object of columns (`engines.worker.results.columnar`);
the server reads that with a JSON parser, checks every value against the prototype's types (a worker is
untrusted: a value of another type is refused, not stored), and writes the table with the tables package's
store functions. Nothing is unpickled."""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson
import pyarrow as pa

from engines.assemble import Body
from engines.errors import ResultNotSerializable
from engines.extensions import FuncValue
from engines.protocol import Kind
from engines.spec import ApplyRequest
from server.db import write_session
from server.routes.tables import describe_item
from server.services import Services
from tables import service as tbl
from tables.frames import ARROW_TYPES

#: Names of result tables made without a name of the caller's: RESULT_ and 16 hex digits.
RESULT_PREFIX = "RESULT_"


def store(services: Services, caller: str, request: ApplyRequest, body: Body) -> Body:
    """Write the call's rows to the result table and answer `{"result": <table description>}`."""
    spec = request.func_value
    assert spec is not None
    try:
        data = body.read()
        _check_shape(data, body.units, len(spec.columns))
        result = orjson.loads(data)["result"]
    except (orjson.JSONDecodeError, KeyError, TypeError):  # the workers' JSON is spliced unparsed: may be anything
        raise ResultNotSerializable("A worker answered rows for the func_value table that are not JSON") from None
    finally:
        body.discard()
    table = rows_table(request.kind, result, spec)
    name = spec.table or RESULT_PREFIX + secrets.token_hex(8).upper()
    with write_session(services.sessions) as session:  # a temporary table is recorded in the metadata
        # An unnamed result is temporary, as Oracle's is (dropped with the session unless kept): the client drops
        # it at disconnect, the server after its time limit; a named one (`funcValue.table`) is permanent.
        expires = services.settings.temp_table_ttl_s if spec.table is None else None
        desc = tbl.write_table(session, services.user_data, caller, name, table, "create", expires_in_s=expires)
    data = orjson.dumps({"result": describe_item(desc, temporary=expires is not None)})
    return Body(data, None, len(data))


#: A JSON string (valid JSON's strings exactly; where the JSON is invalid the parser stops there anyway).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _check_shape(data: bytes, units: int | None, columns: int) -> None:
    """Refuse, before parsing, an answer with more objects and arrays than the rows of `units` invocations hold:
    the answer, its result, and per invocation one object of `columns` lists of plain values. A worker's JSON is
    spliced unparsed, and parsed into Python objects it could take ~36 times its size (`[{},{},...]`)."""
    if units is None:
        return
    bare = _JSON_STRING.sub(b"", data)  # brackets inside strings are text, not structure
    if bare.count(b"{") + bare.count(b"[") > 2 + units * (1 + columns):
        raise ResultNotSerializable("A worker answered rows for the func_value table that are not columns of values")


def rows_table(kind: Kind, result: Any, spec: FuncValue) -> pa.Table:
    """The rows of every invocation, in order, as one Arrow table of the prototype's columns and types."""
    if kind in ("eval", "table"):
        parts = [result]
    elif kind == "group":
        parts = list(result.values()) if isinstance(result, dict) else [None]
    else:
        parts = result if isinstance(result, list) else [None]
    schema = pa.schema([(name, ARROW_TYPES[kind_]) for name, kind_ in spec.columns.items()])
    tables = [_part(p, schema) for p in parts]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _part(part: Any, schema: pa.Schema) -> pa.Table:
    """One invocation's columns, each value checked against its column's type."""
    if not isinstance(part, dict) or list(part) != schema.names:
        raise ResultNotSerializable("A worker answered rows that do not have the func_value columns")
    lengths = {len(v) for v in part.values() if isinstance(v, list)}
    if len(lengths) > 1 or not all(isinstance(v, list) for v in part.values()):
        raise ResultNotSerializable("A worker answered columns of different lengths")
    arrays = []
    for field in schema:
        values = part[field.name]
        try:
            if pa.types.is_timestamp(field.type) or pa.types.is_date(field.type):
                if not all(v is None or isinstance(v, str) for v in values):
                    raise TypeError("not text")
                arrays.append(pa.array(values, pa.string()).cast(field.type))
            else:
                if pa.types.is_integer(field.type) and any(isinstance(v, bool | float) for v in values):
                    raise TypeError("not an integer")
                arrays.append(pa.array(values, field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
            raise ResultNotSerializable(f"Column {field.name} of the result is not {field.type}: {e}") from None
    return pa.Table.from_arrays(arrays, schema=schema)
