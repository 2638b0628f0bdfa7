"""Async jobs (reference §5): status (202 while running, 302 with Content-Location when done — never a
Location header, which `requests` would follow), result, delete; v2 also lists the caller's jobs."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engines.errors import JobNotFound, JobNotReady, stored_error
from engines.jobs import LISTED_STATUS, JobRecord, JobStatus, JobStore
from engines.service import call_of
from server import execution
from server.deps import Caller, CurrentUser, ServicesDep
from server.routes.common import get_and_head, include_both_forms, tenant_url
from server.services import Services

router = APIRouter(tags=["async jobs"])
v2_only = APIRouter(tags=["async jobs"])
JobId = Annotated[str, Path(description="The job id from the Location header", max_length=64)]
#: Oracle's status text while a job is queued or running.
STILL_RUNNING = "job is still running"


def _store(services: Services) -> JobStore:
    assert services.execution is not None
    return services.execution.jobs


def _job(services: Services, caller: Caller, job_id: str) -> JobRecord:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(job_id) from None
    record = _store(services).get(job_id, caller.name)
    if record is None:
        raise JobNotFound(job_id)
    return record


def created_date(dt: datetime) -> str:
    """Oracle's newer format: '2026-01-26 20:35:22 UTC'."""
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def elapsed_time(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _result_url(request: Request, services: Services) -> str:
    version = "v1" if "/py-scripts/v1/" in request.url.path else "v2"
    return tenant_url(request, services.settings, f"py-scripts/{version}/jobs/{request.path_params['jobId']}/result")


def _progress(r: JobRecord) -> dict[str, Any]:
    return {"done": r.units_done, "total": r.units_total}


@get_and_head(
    router,
    "/jobs/{jobId}",
    summary="Job status: 202 while running, 302 when done",
    responses={
        202: {"description": "Queued or running"},
        302: {"description": "Finished, failed or timed out; see Content-Location"},
    },
)
def job_status(jobId: JobId, request: Request, caller: CurrentUser, services: ServicesDep) -> Response:  # noqa: N803
    record = _job(services, caller, jobId)
    if record.status.done:
        # Content-Location only: a Location header would make `requests` (dbt-oracle) follow the redirect.
        return Response(status_code=302, headers={"Content-Location": _result_url(request, services)})
    body = {
        "createdDate": created_date(record.created_at),
        "status": STILL_RUNNING,
        "elapsedTime": elapsed_time(record.elapsed()),
        "jobId": record.id,
        "state": record.status.value,
        "progress": _progress(record),
    }
    return JSONResponse(body, status_code=202)


@get_and_head(
    router,
    "/jobs/{jobId}/result",
    summary="Job result: what the synchronous call would have answered (404 until the job is done)",
)
def job_result(jobId: JobId, request: Request, caller: CurrentUser, services: ServicesDep) -> Response:  # noqa: N803
    record = _job(services, caller, jobId)
    if record.error_type is not None:
        raise stored_error(record.error_type, record.error or "The job failed")
    body = _store(services).result(jobId) if record.status.done else None
    if body is None:
        raise JobNotReady(jobId)
    media_type = execution.media_type(call_of(record).request)
    if isinstance(body, bytes):
        return Response(body, media_type=media_type)
    # A large result, streamed from the metadata database a piece at a time (any server answers it).
    headers = {"Content-Length": str(body.size)}
    if request.method == "HEAD":
        return Response(media_type=media_type, headers=headers)
    return StreamingResponse(iter(body), media_type=media_type, headers=headers)


@router.delete("/jobs/{jobId}", summary="Stop a job (its workers are killed) and delete it")
def delete_job(jobId: JobId, caller: CurrentUser, services: ServicesDep) -> dict[str, str]:  # noqa: N803
    record = _job(services, caller, jobId)
    assert services.execution is not None and services.execution.scheduler is not None
    if record.status == JobStatus.RUNNING and not services.execution.scheduler.cancel_local(jobId):
        _store(services).request_cancel(jobId, caller.name)  # its server stops and deletes it
    else:
        _store(services).delete(jobId)
    return {"result": "job deleted successfully"}


@v2_only.get("/jobs", summary="The caller's async jobs")
def list_jobs(caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return {
        "result": [
            {
                "createdDate": created_date(r.created_at),
                "job_id": r.id,
                "status": LISTED_STATUS[r.status],
                "elapsedTime": elapsed_time(r.elapsed()),
                "progress": _progress(r),
            }
            for r in _store(services).list_for(caller.name)
        ]
    }


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "py-scripts/v1")
    include_both_forms(app, router, "oml", "py-scripts/v2")
    include_both_forms(app, v2_only, "oml", "py-scripts/v2")
