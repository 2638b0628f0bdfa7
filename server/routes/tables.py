"""User tables over REST (pyqd extension): upload, list, describe, read rows, drop, grant."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import IO, Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from engines.serialize import frame_to_json
from server.db import write_session
from server.deps import CurrentUser, ServicesDep, SessionDep, WriteSessionDep
from server.errors import BadRequest
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


def describe_item(d: TableDescription) -> dict[str, Any]:
    return {
        "owner": d.owner,
        "table_name": d.name,
        "row_count": d.row_count,
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
        item = {"owner": t.owner, "table_name": t.name}
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
    summary="Upload CSV, Parquet or JSON records into a table of the caller's",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
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
) -> dict[str, Any]:
    tbl_name = check_table_name(name)  # before the body is read: a bad name costs no upload
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        # Starlette spools each file part to a temporary file past 1 MiB; parse it from there.
        async with request.form(max_files=1, max_fields=1) as form:
            part = form.get("file")
            if part is None or isinstance(part, str):
                raise BadRequest("The multipart body needs a file part named 'file'")
            fmt = _format(request, format, part.filename)
            desc = await run_in_threadpool(_write, services, caller.name, tbl_name, part.file, fmt, mode)
    else:
        fmt = _format(request, format)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=str(_spool_dir(services))) as body:
            async for piece in request.stream():
                body.write(piece)
            desc = await run_in_threadpool(_write, services, caller.name, tbl_name, body, fmt, mode)
    return {"result": describe_item(desc)}


def _spool_dir(services: Services) -> FilePath:
    """Upload bodies wait in the data directory (a disk, where /tmp may be memory)."""
    path = services.settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write(
    services: Services, caller: str, name: str, body: IO[bytes], fmt: UploadFormat, mode: WriteMode
) -> TableDescription:
    upload = open_upload(body, fmt)  # reads the file once to settle the column types, chunk by chunk
    with write_session(services.sessions) as session:
        return tbl.write_table(session, services.user_data, caller, name, upload, mode)


@router.get("/tables/{name}", summary="Describe a table: columns, types, row count")
def describe_table(
    name: TableName, caller: CurrentUser, session: SessionDep, services: ServicesDep, owner: Owner = None
) -> dict[str, Any]:
    return {"result": describe_item(tbl.describe_table(session, services.user_data, caller.name, name, owner))}


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
    tbl.drop_table(session, services.user_data, caller.name, name)
    session.commit()
    return {"result": f"table {name} dropped"}


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
