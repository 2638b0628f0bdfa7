"""Operational endpoints: `/health` (alive), `/ready` (database and workers usable), `/metrics` (Prometheus,
for administrators: scrape with an API client's credentials through `/oauth/token`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from server.deps import AdminUser, ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    # async: answered on the event loop, never waiting for a thread (those may all be busy with user calls)
    return {"status": "ok"}


READINESS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "database": {"type": "string"},
        "workers": {"anyOf": [{"type": "object"}, {"type": "string"}]},
        "cluster": {"type": "object", "description": "With PYQD_ENGINE=dask: the cluster (`status` names a problem)"},
    },
    "required": ["status", "database", "workers"],
}


@router.get(
    "/ready",
    summary="Readiness: the metadata store answers and workers can run code",
    responses={
        200: {"description": "Ready", "content": {"application/json": {"schema": READINESS}}},
        503: {"description": "Not ready (what fails is named)", "content": {"application/json": {"schema": READINESS}}},
    },
)
def ready(
    services: ServicesDep,
    cluster: Annotated[
        bool,
        Query(
            description="With PYQD_ENGINE=dask, whether an unreachable cluster makes the server not ready (a load "
            "balancer asks with false: the cluster is shared, and logins and scripts still work without it)"
        ),
    ] = True,
) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        with services.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"failing: {type(e).__name__}"
    pool = services.pool
    stats = pool.stats() if pool is not None else None
    # Workers exist, or none are kept warm (PYQD_WARM_WORKERS=0) and one starts on the first call.
    usable = stats is not None and (
        stats["fresh"] + stats["idle"] + stats["busy"] + stats["starting"] > 0 or services.settings.warm_workers == 0
    )
    checks["workers"] = stats if stats is not None else "not started"
    if services.cluster is not None:
        problem = services.cluster.problem()
        checks["cluster"] = {"status": problem or "ok", **services.cluster.stats()}
        usable = usable and (problem is None or not cluster)
    ok = checks["database"] == "ok" and usable
    return JSONResponse({"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics (administrators)")
def metrics(request: Request, _: AdminUser) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def install(app: FastAPI) -> None:
    app.include_router(router)
