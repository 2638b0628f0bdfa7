"""Oracle's `func_value` (pyqd's `funcValue`): a call's values become the rows of a new table in the caller's
schema, and the answer describes that table (the Python client returns a proxy for it, as Oracle's returns an
`oml.DataFrame` kept in the database).

The workers render each invocation's value as one JSON object of columns (`engines.worker.results.columnar`);
the server reads that with a JSON parser, checks every value against the prototype's types (a worker is
untrusted: a value of another type is refused, not stored), and writes the table with the tables package's
store functions. Nothing is unpickled."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import pyarrow as pa

from engines.assemble import Body
from engines.errors import ResultNotSerializable
from engines.extensions import FuncValue
from engines.protocol import Kind
from engines.spec import ApplyRequest
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
        result = orjson.loads(body.read())["result"]
    finally:
        body.discard()
    table = rows_table(request.kind, result, spec)
    name = spec.table or RESULT_PREFIX + secrets.token_hex(8).upper()
    with services.sessions() as session:  # creating a table changes no metadata (grants): a read session
        # TODO(lead): a temporary table once the tables store has them (the writes branch: `temporary=true`).
        desc = tbl.write_table(session, services.user_data, caller, name, table, "create")
    data = orjson.dumps({"result": describe_item(desc)})
    return Body(data, None, len(data))


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
