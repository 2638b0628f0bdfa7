"""OML Services' model repository (`/omlmod/v1/models`): store, list, get, change namespace, delete, metadata,
content. A store has the model read by a sandboxed worker of its owner first (`server.scoring.store_model`)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from datastore import service as ds
from models import service as models_service
from models.errors import InvalidModelRequest
from models.service import ModelInfo, NewModel
from server.db import write_session
from server.deps import CurrentUser, ServicesDep
from server.errors import BadRequest
from server.fairness import user_slots
from server.routes.common import iso_millis, json_body
from server.routes.omlmod_schemas import (
    CreateModelResponse,
    DatastoreModelParam,
    ModelMetadata,
    ModelResponse,
    ModelResponseCollection,
    UpdateNamespaceParam,
    created,
    errors,
)
from server.scoring import store_model
from server.services import Services

router = APIRouter(prefix="/omlmod/v1", tags=["OML Services: models"])

#: Form fields of a model upload, besides modelData.
FORM_FIELDS = ("modelName", "version", "modelType", "description", "shared", "namespace")


def base_url(request: Request, services: Services) -> str:
    return (services.settings.public_url or str(request.base_url)).rstrip("/") + "/omlmod/v1"


def self_link(href: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": href}]


def model_item(request: Request, services: Services, m: ModelInfo) -> dict[str, Any]:
    item: dict[str, Any] = {
        "modelId": m.id,
        "modelName": m.name,
        "version": m.version,
        "modelType": m.model_type,
        "shared": m.shared,
        "createdBy": m.owner,
        "storedOn": iso_millis(m.stored_on),
        "links": self_link(f"{base_url(request, services)}/models/{m.id}"),
    }
    if m.description is not None:
        item["description"] = m.description
    if m.namespace:
        item["namespace"] = m.namespace
    return item


def metadata_of(m: ModelInfo) -> dict[str, Any]:
    return {"modelName": m.name, **m.metadata}


def shared_flag(value: object) -> bool:
    """Oracle's rule: false when absent, null or "false" (any case); anything else is true."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str) and value.strip().lower() == "false")


def _text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be text")
    return value


def new_model(fields: dict[str, Any]) -> NewModel:
    for field in ("modelName", "version", "modelType"):
        if fields.get(field) in (None, ""):
            raise InvalidModelRequest(f"{field} is required")
    return NewModel(
        name=_text(fields["modelName"], "modelName") or "",
        version=_text(fields["version"], "version") or "",
        model_type=(_text(fields["modelType"], "modelType") or "").upper(),
        namespace=_text(fields.get("namespace"), "namespace") or "",
        description=_text(fields.get("description"), "description"),
        shared=shared_flag(fields.get("shared")),
    )


@router.get(
    "/models",
    summary="List the models visible to the caller (its own and shared ones)",
    responses={200: {"model": ModelResponseCollection}, **errors(400, 401)},
)
def list_models(
    request: Request,
    caller: CurrentUser,
    services: ServicesDep,
    modelName: Annotated[str | None, Query()] = None,  # noqa: N803 - Oracle's name
    version: Annotated[str | None, Query()] = None,
    namespace: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    with services.sessions() as session:
        found = models_service.list_models(session, caller.name, modelName, version, namespace)
    return {
        "items": [model_item(request, services, m) for m in found],
        "links": self_link(f"{base_url(request, services)}/models"),
    }


@router.post(
    "/models",
    status_code=201,
    summary="Store a model: multipart modelData (ONNX zip or .onnx, or a PYTHON pickle/joblib file)",
    description="Multipart form with `modelData` (file), `modelName`, `version`, `modelType` (ONNX, ONNX_IMG, "
    "or PYTHON, a pyqd extension), `description`, `shared` and `namespace`. pyqd extension: a JSON body "
    "(DatastoreModelParam) stores an estimator kept in a datastore as a PYTHON model.",
    responses={
        201: created(CreateModelResponse, "Stored; Location is the model's URL"),
        **errors(400, 401, 404, 409, 413, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["modelData", "modelName", "version", "modelType"],
                        "properties": {
                            "modelData": {"type": "string", "format": "binary"},
                            "modelName": {"type": "string", "pattern": "^[a-zA-Z0-9_]{1,50}$"},
                            "version": {"type": "string", "example": "1.0"},
                            "modelType": {"type": "string", "enum": ["ONNX", "ONNX_IMG", "PYTHON", "OML"]},
                            "description": {"type": "string", "maxLength": 4000},
                            "shared": {"type": "boolean"},
                            "namespace": {"type": "string", "pattern": "^[a-zA-Z0-9_]{0,50}$"},
                        },
                    }
                },
                "application/json": {"schema": DatastoreModelParam.model_json_schema()},
            },
        }
    },
)
async def store(request: Request, caller: CurrentUser, services: ServicesDep) -> Response:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        new, data = await _from_form(request, services)
    elif ctype.startswith("application/json"):
        new, data = await _from_datastore(request, caller.name, services)
    else:
        raise BadRequest("Send the model as multipart/form-data (modelData and the fields), or a JSON body")
    async with user_slots(request.app.state, services.settings).hold(caller.name):
        info = await run_in_threadpool(store_model, services, caller.name, new, data)
    href = f"{base_url(request, services)}/models/{info.id}"
    body = orjson.dumps({"modelId": info.id, "links": self_link(href)})
    return Response(body, status_code=201, media_type="application/json", headers={"Location": href})


async def _from_form(request: Request, services: Services) -> tuple[NewModel, bytes]:
    limit = services.settings.model_max_bytes
    async with request.form(max_files=4, max_fields=len(FORM_FIELDS) + 4) as form:
        fields: dict[str, Any] = {}
        data: bytes | None = None
        for key, value in form.multi_items():
            if key == "modelData":
                if data is not None:
                    raise BadRequest("Send one modelData part")
                if isinstance(value, UploadFile):
                    data = await value.read(limit + 1)
                else:
                    data = value.encode()
            elif key in FORM_FIELDS:
                if isinstance(value, UploadFile):
                    fields[key] = (await value.read(8192)).decode("utf-8", "replace")
                else:
                    fields[key] = value
            else:
                raise BadRequest(
                    f"Unknown form field {key[:100]!r}; the fields are modelData, {', '.join(FORM_FIELDS)}"
                )
    new = new_model(fields)
    models_service.check_new(new)  # a bad field is named before a missing file
    if data is None:
        raise InvalidModelRequest("modelData is required: the model file")
    return new, data  # read up to one byte past the limit: store_model refuses it


async def _from_datastore(request: Request, caller: str, services: Services) -> tuple[NewModel, bytes]:
    body = await json_body(request)
    if str(body.get("modelType", "")).upper() == models_service.OML_TYPE:  # Oracle's in-database import
        models_service.check_new(NewModel("", "", models_service.OML_TYPE))  # raises UnsupportedModelType
    try:
        param = DatastoreModelParam.model_validate(body)
    except ValidationError as e:
        raise BadRequest(
            "A JSON body stores a datastore object as a PYTHON model: "
            + "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        ) from None
    new = new_model(param.model_dump())
    models_service.check_new(new)  # before reading the object

    def read() -> bytes:
        with services.sessions() as session:
            return ds.load_object(session, caller, param.datastore, param.object, param.owner)[1]

    return new, await run_in_threadpool(read)


@router.get(
    "/models/{modelId}",
    summary="A model's information",
    responses={200: {"model": ModelResponse}, **errors(400, 401, 404)},
)
def get_model(modelId: str, request: Request, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:  # noqa: N803
    with services.sessions() as session:
        return model_item(request, services, models_service.get_model(session, caller.name, modelId))


@router.post(
    "/models/{modelId}",
    status_code=204,
    summary="Change a model's namespace (its creator only)",
    responses={204: {"description": "Changed"}, **errors(400, 401, 403, 404, 409)},
)
def update_namespace(
    modelId: str,  # noqa: N803
    param: UpdateNamespaceParam,
    caller: CurrentUser,
    services: ServicesDep,
) -> Response:
    with write_session(services.sessions) as session:
        models_service.set_namespace(session, caller.name, modelId, param.namespace)
    services.forget_deployments()
    return Response(status_code=204)


@router.delete(
    "/models/{modelId}",
    status_code=204,
    summary="Delete a model (its creator only; 409 while it is deployed)",
    responses={204: {"description": "Deleted"}, **errors(401, 403, 404, 409)},
)
def delete_model(modelId: str, caller: CurrentUser, services: ServicesDep) -> Response:  # noqa: N803
    with write_session(services.sessions) as session:
        models_service.delete_model(session, caller.name, modelId)
    services.forget_deployments()
    return Response(status_code=204)


@router.get(
    "/models/{modelId}/metadata",
    summary="A model's metadata (function, algorithm, attributes, outputs, labels)",
    responses={200: {"model": ModelMetadata}, **errors(400, 401, 404)},
)
def get_metadata(modelId: str, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:  # noqa: N803
    with services.sessions() as session:
        return metadata_of(models_service.get_model(session, caller.name, modelId))


@router.get(
    "/models/{modelId}/content",
    summary="A model's bytes, as stored",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **errors(401, 404),
    },
)
def get_content(modelId: str, caller: CurrentUser, services: ServicesDep) -> Response:  # noqa: N803
    with services.sessions() as session:
        data = models_service.model_data(session, caller.name, modelId)
    return Response(data, media_type="application/octet-stream")


def install(app: FastAPI) -> None:
    app.include_router(router)
