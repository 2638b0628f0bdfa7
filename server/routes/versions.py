"""Version metadata (reference §2.4): `/py-scripts`, `/py-scripts/v1`, `/py-scripts/v2`; and the deprecation
headers every v1 answer carries (RFC 9745 `Deprecation`, RFC 8594 `Sunset`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.spec import VERBS
from server.deps import CurrentUser, ServicesDep
from server.routes.common import get_and_head, include_both_forms, tenant_url

router = APIRouter(tags=["py-scripts versions"])

#: When v1 was marked deprecated (Oracle publishes no date; pyqd's choice), and its sunset (Oracle's).
V1_DEPRECATED_EPOCH = 1759276800  # 2025-10-01T00:00:00Z
V1_SUNSET = "Tue, 31 Mar 2026 00:00:00 GMT"
V1_LIFECYCLE = "DEPRECATED@2026-03-31"
_V1_HEADERS = ((b"deprecation", f"@{V1_DEPRECATED_EPOCH}".encode()), (b"sunset", V1_SUNSET.encode()))


def _children(version: str) -> list[str]:
    paths = ["scripts"]
    if version == "v2":
        paths += ["scripts/{scriptType}", "jobs"]
    for verb in VERBS:
        paths += [f"{verb}/{{scriptName}}", f"{verb}/{{scriptName}}/{{ownerName}}"]
    return paths + ["jobs/{jobId}", "jobs/{jobId}/result"]


def version_document(request: Request, services: ServicesDep, version: str) -> dict[str, Any]:
    settings = services.settings
    links = [{"rel": "self", "href": tenant_url(request, settings, f"py-scripts/{version}")}]
    links += [
        {"rel": "child", "href": tenant_url(request, settings, f"py-scripts/{version}/{p}")} for p in _children(version)
    ]
    return {
        "version": version,
        "isLatest": version == "v2",
        "lifecycle": "ACTIVE" if version == "v2" else V1_LIFECYCLE,
        "links": links,
    }


@get_and_head(router, "", summary="Metadata of every version of the API")
def all_versions(request: Request, _: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return {
        "items": [version_document(request, services, v) for v in ("v1", "v2")],
        "links": [{"rel": "self", "href": tenant_url(request, services.settings, "py-scripts")}],
    }


@get_and_head(router, "/v1", summary="Metadata of v1 (deprecated)")
def v1(request: Request, _: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return version_document(request, services, "v1")


@get_and_head(router, "/v2", summary="Metadata of v2")
def v2(request: Request, _: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return version_document(request, services, "v2")


def deprecation_headers(app: ASGIApp) -> ASGIApp:
    """Add Deprecation, Sunset and a successor link to every answer under `/py-scripts/v1`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if "/py-scripts/v1" not in path or not (path.endswith("/py-scripts/v1") or "/py-scripts/v1/" in path):
            await app(scope, receive, send)
            return
        successor = path.split("/py-scripts/v1", 1)[0] + "/py-scripts/v2"

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    *_V1_HEADERS,
                    (b"link", f'<{successor}>; rel="successor-version"'.encode()),
                ]
            await send(message)

        await app(scope, receive, add)

    return wrapped


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "py-scripts")
