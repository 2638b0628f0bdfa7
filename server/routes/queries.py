"""Reading the rows of an input query (pyqd extension): what `oml.sync(query=...).pull()` uses."""

from __future__ import annotations

import io
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from server.deps import CurrentUser, ServicesDep
from server.fairness import NoSlot, Slot, user_slots
from server.routes.common import EXTENSION_TAG, include_both_forms
from server.services import Services
from tables import query as tq

router = APIRouter(tags=[EXTENSION_TAG])
ARROW_STREAM = "application/vnd.apache.arrow.stream"


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=100_000, examples=["select * from IRIS where SPECIES = 'setosa'"])
    limit: int | None = Field(default=None, ge=0, description="At most this many rows")


@router.post(
    "/query",
    summary="The rows of a read-only query, as an Arrow IPC stream (through the SQL gate)",
    response_class=StreamingResponse,
    responses={200: {"content": {ARROW_STREAM: {}}}},
)
async def run_query(body: QueryBody, request: Request, caller: CurrentUser, services: ServicesDep) -> StreamingResponse:
    # The read counts as one of the caller's calls until its last byte is sent (see server.fairness); the slot
    # is released when the body ends, when the response is over (also if the client left before the body began),
    # and at the latest when the body is collected.
    slot = await user_slots(request.app.state, services.settings).take(caller.name, within_call=caller.claims.is_script)
    try:
        batches = await run_in_threadpool(_open, services, caller.name, body)
        first = await run_in_threadpool(next, batches, None)  # errors of the query become 400s before streaming
    except BaseException:
        slot.release()
        raise
    chunks = _released(slot, _stream(first, batches))
    weakref.finalize(chunks, slot.release)
    return StreamingResponse(chunks, media_type=ARROW_STREAM, background=BackgroundTask(slot.release))


async def _released(slot: Slot | NoSlot, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
    finally:
        slot.release()


def _open(services: Services, caller: str, body: QueryBody) -> Iterator[pa.RecordBatch]:
    with services.sessions() as session:
        gated = tq.gate_query(session, services.user_data, caller, body.query)
    if body.limit is not None:
        gated = gated.limited(body.limit)
    timeout_s = min(services.settings.sync_time_limit_s, services.settings.query_time_limit_s)
    return tq.stream_query(services.user_data, gated, caller, timeout_s=timeout_s)


def _stream(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    if first is None:
        return
    sink = io.BytesIO()
    schema = first.schema
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in _chain(first, rest):
            writer.write_batch(batch if batch.schema.equals(schema) else _cast(batch, schema))
            yield _take(sink)
    yield _take(sink)


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Inferred types can differ between batches (SQLite); fall back to text for those columns.
        arrays: list[Any] = [
            c if c.type == f.type else c.cast(pa.string()) for c, f in zip(batch.columns, schema, strict=True)
        ]
        return pa.RecordBatch.from_arrays(
            arrays, schema=pa.schema([(f.name, a.type) for f, a in zip(schema, arrays, strict=True)])
        )


def _take(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "pyqd/v1")
