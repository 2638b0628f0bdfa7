"""OML Services (`/omlmod`): version metadata, the service's OpenAPI document, deployments (a uri bound to a
model), scoring and each endpoint's own OpenAPI document. Models are in `server/routes/omlmod_models.py`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from models import service as models_service
from models.service import DeploymentInfo
from server import openapi
from server.db import write_session
from server.deps import CurrentUser, ServicesDep
from server.errors import BadRequest
from server.fairness import user_slots
from server.omlmod_openapi import endpoint_document
from server.routes.common import iso_millis
from server.routes.omlmod_models import base_url, metadata_of, self_link
from server.routes.omlmod_schemas import (
    ApiVersion,
    ApiVersionCollection,
    CreatedEndpoint,
    DeploymentEndpointCollection,
    EndpointParam,
    EndpointWithDetails,
    ScoreParam,
    ScoringOutputResultSet,
    created,
    errors,
)
from server.scoring import score as score_request
from server.services import Services

router = APIRouter(prefix="/omlmod", tags=["OML Services"])
#: The score route alone: the app matches it before every other route (it is the hot path of APEX pages).
score_router = APIRouter(prefix="/omlmod", tags=["OML Services"])

#: Most images one multipart score request may carry.
MAX_IMAGES = 64


def _version(request: Request, services: Services) -> dict[str, Any]:
    base = base_url(request, services)
    return {
        "version": "v1",
        "isLatest": True,
        "lifecycle": "active",
        "links": [{"rel": "self", "href": base}, {"rel": "describedby", "href": f"{base}/api"}],
    }


@router.get("/", summary="Metadata of every version of OML Services", responses={200: {"model": ApiVersionCollection}})
def all_versions(request: Request, _: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    root = base_url(request, services).rsplit("/", 1)[0]
    return {"items": [_version(request, services)], "links": [{"rel": "self", "href": f"{root}/"}]}


@router.get("/v1", summary="Metadata of OML Services v1", responses={200: {"model": ApiVersion}})
def v1(request: Request, _: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return _version(request, services)


@router.get("/v1/api", summary="The OpenAPI 3.0 document of OML Services", responses={200: {"description": "OpenAPI"}})
def service_document(request: Request, services: ServicesDep) -> dict[str, Any]:
    whole = request.app.openapi()
    paths = {p[len("/omlmod") :]: item for p, item in whole.get("paths", {}).items() if p.startswith("/omlmod/")}
    doc = {
        "openapi": whole.get("openapi", "3.1.0"),
        "info": {
            "title": "OML Services APIs (pyqd)",
            "version": "1.0.0",
            "description": "Oracle Machine Learning Services' model repository, deployment and scoring, served by "
            "pyqd. modelType PYTHON and the JSON store body are pyqd extensions.",
        },
        "servers": [{"url": base_url(request, services).rsplit("/", 1)[0]}],
        "paths": paths,
        "components": whole.get("components", {}),
        "security": [{"bearer": []}],
    }
    return openapi.downgrade(doc)


# -- deployments ---------------------------------------------------------------------------------------
def deployment_item(request: Request, services: Services, d: DeploymentInfo) -> dict[str, Any]:
    m = d.model
    item: dict[str, Any] = {
        "modelId": m.id,
        "deployedOn": iso_millis(d.deployed_on),
        "uri": d.uri,
        "links": self_link(f"{base_url(request, services)}/deployment/{d.uri}"),
        "modelName": m.name,
        "version": m.version,
        "modelType": m.model_type,
        "createdBy": m.owner,
        "shared": m.shared,
        "deployedBy": d.deployed_by,
    }
    if m.description is not None:
        item["description"] = m.description
    if m.namespace:
        item["namespace"] = m.namespace
    return item


@router.post(
    "/v1/deployment",
    status_code=201,
    summary="Create a scoring endpoint for a model (its creator's, or a shared one)",
    responses={
        201: created(CreatedEndpoint, "Created; Location is the endpoint's URL"),
        **errors(400, 401, 403, 404, 409),
    },
)
def create_endpoint(param: EndpointParam, request: Request, caller: CurrentUser, services: ServicesDep) -> Response:
    with write_session(services.sessions) as session:
        d = models_service.deploy(session, caller.name, param.modelId, param.uri)
    services.forget_deployments()
    href = f"{base_url(request, services)}/deployment/{d.uri}"
    body = {"modelId": d.model.id, "deployedOn": iso_millis(d.deployed_on), "uri": d.uri, "links": self_link(href)}
    return Response(orjson.dumps(body), status_code=201, media_type="application/json", headers={"Location": href})


@router.get(
    "/v1/deployment",
    summary="List the endpoints visible to the caller",
    responses={200: {"model": DeploymentEndpointCollection}, **errors(400, 401)},
)
def list_endpoints(
    request: Request,
    caller: CurrentUser,
    services: ServicesDep,
    modelName: str | None = None,  # noqa: N803 - Oracle's name
    version: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    with services.sessions() as session:
        found = models_service.list_deployments(session, caller.name, modelName, version, namespace)
    return {
        "items": [deployment_item(request, services, d) for d in found],
        "links": self_link(f"{base_url(request, services)}/deployment"),
    }


@router.get(
    "/v1/deployment/{uri}",
    summary="An endpoint, with its model's metadata",
    responses={200: {"model": EndpointWithDetails}, **errors(400, 401, 404)},
)
def get_endpoint(uri: str, request: Request, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    with services.sessions() as session:
        d = models_service.get_deployment(session, caller.name, uri)
    return {**deployment_item(request, services, d), "metadata": metadata_of(d.model)}


@router.delete(
    "/v1/deployment/{uri}",
    status_code=204,
    summary="Remove an endpoint (the model's creator or the endpoint's)",
    responses={204: {"description": "Removed"}, **errors(401, 403, 404)},
)
def delete_endpoint(uri: str, caller: CurrentUser, services: ServicesDep) -> Response:
    with write_session(services.sessions) as session:
        models_service.undeploy(session, caller.name, uri)
    services.forget_deployments()
    return Response(status_code=204)


@score_router.post(
    "/v1/deployment/{uri}/score",
    summary="Score records (or images) with an endpoint's model",
    response_class=Response,
    responses={200: {"model": ScoringOutputResultSet}, **errors(400, 401, 404, 429, 500, 503)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ScoreParam.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["imageData"],
                        "properties": {"imageData": {"type": "string", "format": "binary"}},
                    }
                },
            },
        }
    },
)
async def score(uri: str, request: Request, caller: CurrentUser, services: ServicesDep) -> Response:
    images: list[bytes] | None = None
    body = b""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        images = []
        async with request.form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES) as form:
            for key, value in form.multi_items():
                if key != "imageData" or not isinstance(value, UploadFile):
                    raise BadRequest("A multipart score request holds imageData file parts only")
                images.append(await value.read())
        if not images:
            raise BadRequest("Send at least one imageData part")
    else:
        body = await request.body()
    # one of the caller's call slots (server/fairness.py): one user's requests cannot fill the thread pool
    async with user_slots(request.app.state, services.settings).hold(caller.name):
        out = await run_in_threadpool(score_request, services, caller.name, uri, body, images)
    return Response(out, media_type="application/json")


@router.get(
    "/v1/deployment/{uri}/api",
    summary="The OpenAPI 3.0 document of one endpoint: its inputs, an example, its answer",
    responses={200: {"description": "OpenAPI 3.0 document"}, **errors(400, 401, 404)},
)
def endpoint_api(uri: str, request: Request, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    with services.sessions() as session:
        d = models_service.get_deployment(session, caller.name, uri)
    return endpoint_document(d, base_url(request, services))


def install_score(app: FastAPI) -> None:
    app.include_router(score_router)


def install(app: FastAPI) -> None:
    app.include_router(router)
