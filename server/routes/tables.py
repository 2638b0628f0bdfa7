"""User tables over REST (pyqd extension): upload, materialize, list, describe, read rows, drop, keep, grant.

`POST /tables/{name}` makes a table of the caller's from an upload (CSV, Parquet, JSON records) or, when the body
is a JSON object with a `query`, from the rows of that read-only query (materialize: the database copies them, no
row passes through the server). With `temporary=true` the table is temporary (`oml.push`): the server drops it
after PYQD_TEMP_TABLE_TTL_S unless `POST /tables/{name}/keep` makes it permanent first."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import IO, Annotated, Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from engines.serialize import frame_to_json
from server.auth.errors import Forbidden
from server.db import write_session
from server.deps import Caller, CurrentUser, ServicesDep, SessionDep, WriteSessionDep
from server.errors import BadRequest
from server.fairness import user_slots
from server.routes.common import EXTENSION_TAG, include_both_forms
from server.routes.scripts import GrantBody, check_grantee
from server.services import Services
from tables import service as tbl
from tables.frames import (
    ARROW_TYPES,
    MAX_NAME_BYTES,
    TABLE_NAME_PATTERN,
    UPLOAD_FORMATS,
    UploadFormat,
    check_table_name,
)
from tables.gate import MAX_SQL_CHARS
from tables.materialize import materialize_table
from tables.store import TableDescription, WriteMode
from tables.uploads import open_upload

router = APIRouter(tags=[EXTENSION_TAG])

TableName = Annotated[
    str,
    Path(
        description="Table name (case-sensitive, as created): an Oracle identifier, not a reserved word, not "
        "starting with sqlite_, pg_ or pyqd_",
        max_length=MAX_NAME_BYTES,
        pattern=TABLE_NAME_PATTERN,
    ),
]
Owner = Annotated[str | None, Query(max_length=30, description="Owner schema, when reading another user's table")]
ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: Upload bytes kept in memory before the body goes to a file on disk.
SPOOL_BYTES = 1024 * 1024
_CONTENT_TYPES: dict[str, UploadFormat] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/json": "json",
}
#: Largest JSON body read as a materialize request (`{"query": ...}`); a larger one is an upload of records.
MATERIALIZE_BODY_BYTES = 1024 * 1024
Temporary = Annotated[
    bool,
    Query(
        description="Make a temporary table (oml.push): the server drops it after PYQD_TEMP_TABLE_TTL_S unless "
        "POST /tables/{name}/keep makes it permanent (applies to a table this request makes, not to an append)"
    ),
]


class MaterializeBody(BaseModel):
    """A table from the rows of a read-only query (Oracle SQL through the gate), made in the caller's schema."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=MAX_SQL_CHARS, examples=["select * from IRIS where SPECIES = 'setosa'"])
    append: bool = Field(
        default=False,
        description="Add the rows to the table (its columns matched by name); creates it when there is none",
    )
    temporary: bool = Field(default=False, description="Make a temporary table (as the temporary query parameter)")


def describe_item(d: TableDescription, temporary: bool = False) -> dict[str, Any]:
    return {
        "owner": d.owner,
        "table_name": d.name,
        "row_count": d.row_count,
        "temporary": temporary,
        "columns": [
            {"name": c.name, "type": c.type, "sql_type": t} for c, t in zip(d.columns, d.sql_types, strict=True)
        ],
    }


@router.get("/tables", summary="List tables: user (own), all (readable), grant (granted by me), granted (to me)")
def list_tables(
    caller: CurrentUser, session: SessionDep, services: ServicesDep, type: Annotated[tbl.TableScope, Query()] = "user"
) -> dict[str, Any]:  # noqa: A002
    items = []
    for t in tbl.list_tables(session, services.user_data, caller.name, type):
        item: dict[str, Any] = {"owner": t.owner, "table_name": t.name, "temporary": t.temporary}
        if t.grantee is not None:
            item["grantee"] = t.grantee
        items.append(item)
    return {"result": items}


def _format(request: Request, fmt: str | None, filename: str | None = None) -> UploadFormat:
    if fmt:
        if fmt not in UPLOAD_FORMATS:
            raise BadRequest(f"Unknown format {fmt!r}; use csv, parquet or json")
        return fmt  # type: ignore[return-value]
    if filename and "." in filename:
        ext = filename.rsplit(".", 1)[1].lower()
        if ext in UPLOAD_FORMATS:
            return ext  # type: ignore[return-value]
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in _CONTENT_TYPES:
        return _CONTENT_TYPES[ctype]
    raise BadRequest("Say what the data is: ?format=csv|parquet|json or a matching Content-Type")


@router.post(
    "/tables/{name}",
    status_code=201,
    summary="Make a table of the caller's: upload CSV, Parquet or JSON records, or materialize a read-only query",
    description="A JSON object body with a `query` (MaterializeBody) materializes the query's rows; any other body "
    "is an upload. `mode` create fails if the table exists (errorCode 1009), replace swaps it, append adds rows.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/MaterializeBody"},
                            {"type": "array", "items": {"type": "object"}},
                        ]
                    }
                },
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
        }
    },
)
async def upload_table(
    name: TableName,
    request: Request,
    caller: CurrentUser,
    services: ServicesDep,
    mode: Annotated[WriteMode, Query(description="create (fails if it exists), replace or append")] = "create",
    format: Annotated[str | None, Query(description="csv | parquet | json")] = None,  # noqa: A002
    temporary: Temporary = False,
) -> dict[str, Any]:
    tbl_name = check_table_name(name)  # before the body is read: a bad name costs no upload
    _check_script_write(caller, mode)
    ttl = services.settings.temp_table_ttl_s
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        # Starlette spools each file part to a temporary file past 1 MiB; parse it from there.
        async with request.form(max_files=1, max_fields=1) as form:
            part = form.get("file")
            if part is None or isinstance(part, str):
                raise BadRequest("The multipart body needs a file part named 'file'")
            fmt = _format(request, format, part.filename)
            expires = ttl if temporary else None
            desc = await run_in_threadpool(_write, services, caller.name, tbl_name, part.file, fmt, mode, expires)
    else:
        fmt = _format(request, format)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=str(_spool_dir(services))) as body:
            async for piece in request.stream():
                body.write(piece)
            plan = _materialize_body(body) if fmt == "json" and format is None else None
            if plan is not None:
                if plan.append and mode == "replace":
                    raise BadRequest('"append": true and mode=replace contradict each other')
                mode = "append" if plan.append else mode
                _check_script_write(caller, mode)
                expires = ttl if (temporary or plan.temporary) else None
                async with user_slots(request.app.state, services.settings).hold(
                    caller.name, within_call=caller.claims.is_script
                ):
                    desc = await run_in_threadpool(
                        _materialize, services, caller.name, tbl_name, plan.query, mode, expires
                    )
            else:
                expires = ttl if temporary else None
                desc = await run_in_threadpool(_write, services, caller.name, tbl_name, body, fmt, mode, expires)
    # an append leaves the table as temporary (or not) as it was; a table the request made is as asked
    temp = await run_in_threadpool(_is_temporary, services, desc) if mode == "append" else expires is not None
    return {"result": describe_item(desc, temp)}


def _check_script_write(caller: Caller, mode: WriteMode) -> None:
    """A script may add tables to its caller's schema (create, append, temporary, materialize: what `oml.create`,
    `oml.push` and dbt's Python models do inside the engine), never replace one: a script's token cannot destroy
    the caller's permanent tables."""
    if caller.claims.is_script and mode == "replace":
        raise Forbidden("A script's token may create or append to tables, not replace them")


def _materialize_body(body: IO[bytes]) -> MaterializeBody | None:
    """The materialize request a JSON body holds (an object with a `query`), or None: the body is an upload."""
    size = body.tell()
    if size > MATERIALIZE_BODY_BYTES:
        return None
    body.seek(0)
    raw = body.read(size)
    body.seek(size)
    if not raw.lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"{"):
        return None
    try:
        value = orjson.loads(raw.decode("utf-8-sig", "replace"))
    except orjson.JSONDecodeError:
        return None  # the upload parser says what is wrong with it
    if not isinstance(value, dict) or "query" not in value:
        return None
    try:
        return MaterializeBody.model_validate(value)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise BadRequest(f"Invalid materialize request: {problems}") from None


def _materialize(
    services: Services, caller: str, name: str, query: str, mode: WriteMode, expires_in_s: float | None
) -> TableDescription:
    timeout_s = min(services.settings.sync_time_limit_s, services.settings.query_time_limit_s)
    with write_session(services.sessions) as session:
        return materialize_table(
            session,
            services.user_data,
            caller,
            name,
            query,
            mode,
            timeout_s=timeout_s,
            expires_in_s=expires_in_s,
        )


def _is_temporary(services: Services, desc: TableDescription) -> bool:
    with services.sessions() as session:
        return tbl.is_temporary(session, desc.owner, desc.name)


def _spool_dir(services: Services) -> FilePath:
    """Upload bodies wait in the data directory (a disk, where /tmp may be memory)."""
    path = services.settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write(
    services: Services,
    caller: str,
    name: str,
    body: IO[bytes],
    fmt: UploadFormat,
    mode: WriteMode,
    expires_in_s: float | None,
) -> TableDescription:
    upload = open_upload(body, fmt)  # reads the file once to settle the column types, chunk by chunk
    with write_session(services.sessions) as session:
        return tbl.write_table(session, services.user_data, caller, name, upload, mode, expires_in_s=expires_in_s)


@router.get("/tables/{name}", summary="Describe a table: columns, types, row count")
def describe_table(
    name: TableName, caller: CurrentUser, session: SessionDep, services: ServicesDep, owner: Owner = None
) -> dict[str, Any]:
    desc = tbl.describe_table(session, services.user_data, caller.name, name, owner)
    return {"result": describe_item(desc, tbl.is_temporary(session, desc.owner, desc.name))}


@router.get("/tables/{name}/rows", summary="A page of rows as JSON records (ORDS-style paging for APEX)")
def read_rows(
    name: TableName,
    caller: CurrentUser,
    session: SessionDep,
    services: ServicesDep,
    owner: Owner = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> Response:
    limit = min(limit, services.settings.max_page_rows)
    page, _ = tbl.read_rows(session, services.user_data, caller.name, name, owner, offset, limit + 1)
    has_more = page.num_rows > limit
    page = page.slice(0, limit)
    items = frame_to_json(page.to_pandas())
    head = f'{{"hasMore":{str(has_more).lower()},"limit":{limit},"offset":{offset},"count":{page.num_rows},"items":'
    return Response(head.encode() + items + b"}", media_type="application/json")


@router.get(
    "/tables/{name}/data",
    summary="The whole table as an Arrow IPC stream (used by oml's pull)",
    response_class=StreamingResponse,
    responses={200: {"content": {ARROW_STREAM: {}}}},
)
async def table_data(name: TableName, caller: CurrentUser, services: ServicesDep, owner: Owner = None) -> Response:
    desc, batches = await run_in_threadpool(_open_stream, services, caller.name, name, owner)
    return StreamingResponse(_arrow_stream(desc, batches), media_type=ARROW_STREAM)


def _open_stream(
    services: Services, caller: str, name: str, owner: str | None
) -> tuple[TableDescription, Iterator[pa.RecordBatch]]:
    with services.sessions() as session:
        return tbl.stream_table(session, services.user_data, caller, name, owner)


def _arrow_stream(desc: TableDescription, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """Arrow IPC stream bytes, one message at a time, so memory stays at one batch."""
    schema = pa.schema([(c.name, ARROW_TYPES[c.type]) for c in desc.columns])
    sink = io.BytesIO()

    def drain() -> bytes:
        data = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return data

    with pa.ipc.new_stream(sink, schema) as writer:
        yield drain()
        for batch in batches:
            writer.write_batch(batch.cast(schema))
            yield drain()
    yield drain()


@router.delete("/tables/{name}", summary="Drop a table of the caller's")
def drop_table(name: TableName, caller: CurrentUser, session: WriteSessionDep, services: ServicesDep) -> dict[str, Any]:
    if caller.claims.is_script and not tbl.is_temporary(session, caller.name, check_table_name(name)):
        # What `oml` drops at a script's end is its temporary tables; a stolen token drops nothing permanent.
        raise Forbidden("A script's token may drop only temporary tables")
    tbl.drop_table(session, services.user_data, caller.name, name)
    session.commit()
    return {"result": f"table {name} dropped"}


@router.post("/tables/{name}/keep", summary="Make a temporary table of the caller's permanent (oml.ds.save of a proxy)")
def keep_table(name: TableName, caller: CurrentUser, session: WriteSessionDep, services: ServicesDep) -> dict[str, Any]:
    desc = tbl.keep_table(session, services.user_data, caller.name, name)
    session.commit()
    return {"result": describe_item(desc, False)}


@router.post("/tables/{name}/grants", summary="Grant read on a table to a user or PUBLIC")
def grant_table(
    name: TableName, caller: CurrentUser, session: WriteSessionDep, services: ServicesDep, body: GrantBody | None = None
) -> dict[str, Any]:
    tbl.grant(session, services.user_data, caller.name, name, check_grantee(session, body.user if body else None))
    session.commit()
    return {"result": "granted"}


@router.delete("/tables/{name}/grants/{grantee}", summary="Revoke a table grant (PUBLIC for everyone)")
def revoke_table(
    name: TableName,
    grantee: Annotated[str, Path(max_length=30)],
    caller: CurrentUser,
    session: WriteSessionDep,
    services: ServicesDep,
) -> dict[str, Any]:
    tbl.revoke(session, services.user_data, caller.name, name, None if grantee.upper() == "PUBLIC" else grantee)
    session.commit()
    return {"result": "revoked"}


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "pyqd/v1")
    # the materialize body, which the upload route declares by $ref (it reads its body itself)
    schemas = getattr(app.state, "body_schemas", {})
    app.state.body_schemas = {**schemas, "MaterializeBody": MaterializeBody.model_json_schema()}
