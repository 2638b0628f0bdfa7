"""The app factory: routes, error mapping, limits, lifespan (stores opened, admin bootstrapped)."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from server import errors, openapi
from server.accounts import ADMIN_NAME, bootstrap_admin
from server.bridge import AppBridge
from server.execution import open_execution
from server.limits import BodyLimit
from server.metrics import Metrics
from server.routes import (
    admin,
    datastores,
    envs,
    execution,
    jobs,
    meta,
    omlmod,
    omlmod_models,
    queries,
    relay,
    scripts,
    tables,
    tokens,
    versions,
)
from server.scoring import open_scorer
from server.services import Services, make_cluster, make_pool, open_services
from server.settings import Settings
from tables.pg_partitions import drop_stale_call_roles

API_DESCRIPTION = """\
pyqd speaks the OML4Py REST API for Embedded Python Execution (Oracle Machine Learning for Python).
Get a token from `/omlusers/api/oauth2/v1/token` (OML JSON grants) or `/oauth/token` (standard OAuth2),
then send it as `Authorization: Bearer <token>`. Every path also answers in the tenant form
`/oml/tenants/{tenant}/databases/{database}/api/...`. Operations tagged *pyqd extension* are not in Oracle's API.
"""


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """Build the app; the stores open in the lifespan unless `services` are handed in."""
    settings = settings or (services.settings if services else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        svc = services or open_services(settings)
        password = bootstrap_admin(svc)
        if password:
            print(
                f"pyqd: created administrator {ADMIN_NAME} with password: {password}\n"
                "pyqd: (shown once; set PYQD_ADMIN_PASSWORD to choose it)",
                file=sys.stderr,
                flush=True,
            )
        # database roles of partitioned reads whose server died before it dropped them (they have expired)
        await run_in_threadpool(drop_stale_call_roles, svc.user_data)
        own_pool = svc.pool is None
        if own_pool:
            svc.pool = make_pool(svc.settings)
            svc.pool.start()  # in the background: the server answers at once, calls wait for a first worker
        own_cluster = svc.cluster is None and svc.settings.engine == "dask"
        if own_cluster:
            svc.cluster = make_cluster(svc.settings)
            svc.cluster.start()  # in the background: until it is connected, calls answer 503 and /ready says why
        svc.bridge = AppBridge(app, max_answer=svc.settings.output_max_bytes)
        svc.bridge.start()
        svc.execution = open_execution(svc, observe=app.state.metrics.observe_execution)
        svc.scorer = open_scorer(svc)
        assert svc.execution.scheduler is not None
        svc.execution.scheduler.start()
        svc.start_listening()  # other servers' cache invalidations (PostgreSQL)
        app.state.services = svc
        # A server process (one that opened its own stores) freezes what start-up made: the collector no longer
        # rescans it for every request's garbage (a 1,000-row score answer's check made ~10,000 objects; frozen, the
        # server's CPU per such call fell 5.4 → 3.7 ms). Not for apps handed their services (tests): a full
        # collection per app start in a big test process costs more than it saves.
        if own:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            svc.stop_listening()
            if own:
                gc.unfreeze()
            assert svc.execution.scheduler is not None
            svc.execution.scheduler.stop()
            svc.execution = None
            svc.scorer = None
            svc.bridge.close()
            svc.bridge = None
            if own_cluster and svc.cluster is not None:
                await run_in_threadpool(svc.cluster.close)
                svc.cluster = None
            if own_pool and svc.pool is not None:
                await run_in_threadpool(svc.pool.close)
                svc.pool = None
            if own:
                svc.close()

    app = FastAPI(
        title="pyqd", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    errors.install(app)
    # The hot paths first: routes are matched in order (no paths overlap): OML Services' one score route (each
    # candidate before it costs a scope copy and a regex), then the execution verbs.
    omlmod.install_score(app)
    for module in (execution, omlmod, meta, tokens, versions, scripts, jobs, datastores, tables, queries, relay, admin):
        module.install(app)
    envs.install(app)
    for module in (omlmod_models,):
        module.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.state.metrics = Metrics(lambda: getattr(app.state, "services", None))
    app.add_middleware(versions.deprecation_headers)  # type: ignore[arg-type]
    app.add_middleware(app.state.metrics.middleware)  # type: ignore[arg-type]
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/openapi-3.0.json", include_in_schema=False)
    def openapi_30() -> dict[str, Any]:
        """The same document rendered as OpenAPI 3.0.3, for tools that do not read 3.1."""
        return openapi.downgrade(app.openapi())

    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if not app.openapi_schema:
        app.openapi_schema = openapi.build(app)
    return app.openapi_schema
