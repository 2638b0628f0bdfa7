"""Shared route helpers: the two OML URL spellings, JSON bodies, tenant checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request

from server.deps import SettingsDep
from server.errors import BadRequest
from server.settings import Settings

#: Tag and OpenAPI marker for everything Oracle does not have.
EXTENSION_TAG = "pyqd extension"
EXTENSION_EXTRA = {"x-pyqd-extension": True}


def check_tenant(tenant: str, database: str, settings: SettingsDep) -> None:
    """404 unless the `{tenant}`/`{database}` path segments name this server (any do with PYQD_ANY_TENANT)."""
    if settings.any_tenant:
        return
    if tenant.upper() != settings.tenant or database.upper() != settings.database:
        raise HTTPException(404, f"Unknown tenant/database {tenant}/{database}")


def include_both_forms(app: FastAPI, router: APIRouter, service: str, api: str) -> None:
    """Mount `router` under `/{service}/api/{api}` and the tenant form (the latter hidden from OpenAPI)."""
    from fastapi import Depends

    app.include_router(router, prefix=f"/{service}/api/{api}")
    app.include_router(
        router,
        prefix=f"/{service}/tenants/{{tenant}}/databases/{{database}}/api/{api}",
        dependencies=[Depends(check_tenant)],
        include_in_schema=False,
    )


async def json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest with a clear message."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("The request body must be a JSON object")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"Malformed JSON in request body: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def iso_millis(dt: Any) -> str:
    """OML's timestamp format: ISO-8601 UTC with milliseconds and Z."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def tenant_url(request: Request, settings: Settings, path: str) -> str:
    """An absolute URL in Oracle's tenant form (what Location, Content-Location and links use), on the host
    the client used unless PYQD_PUBLIC_URL says otherwise."""
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/oml/tenants/{settings.tenant}/databases/{settings.database}/api/{path.lstrip('/')}"


def get_and_head(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a GET route and the same handler for HEAD (kept out of OpenAPI, which lists it once)."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, func, methods=["GET"], **kwargs)
        router.add_api_route(
            path,
            func,
            methods=["HEAD"],
            include_in_schema=False,
            **{k: v for k, v in kwargs.items() if k not in ("summary", "responses")},
        )
        return func

    return register
