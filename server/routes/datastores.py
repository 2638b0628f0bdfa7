"""Datastores over REST (pyqd extension): save, describe, load objects, list, delete, grant."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from datastore import service as ds
from server.db import write_session
from server.deps import CurrentUser, ServicesDep, SessionDep, WriteSessionDep
from server.errors import BadRequest
from server.routes.common import EXTENSION_TAG, include_both_forms, iso_millis
from server.routes.scripts import GrantBody, check_grantee
from server.services import Services

router = APIRouter(tags=[EXTENSION_TAG])

DsName = Annotated[str, Path(description="Datastore name", max_length=128, pattern=f"^{ds.NAME_RE.pattern}$")]
Owner = Annotated[str | None, Query(max_length=30, description="Owner, when reading another user's datastore")]
#: Most objects one save may carry.
MAX_OBJECTS_PER_SAVE = 1000


def datastore_item(info: ds.DatastoreInfo) -> dict[str, Any]:
    """A datastore as `oml.ds.dir` shows it."""
    item: dict[str, Any] = {
        "owner": info.owner,
        "datastore_name": info.name,
        "object_count": info.object_count,
        "size": info.size,
        "date": iso_millis(info.created_at),
        "description": info.description,
        "grantable": info.grantable,
    }
    if info.grantee is not None:
        item["grantee"] = info.grantee
    return item


def object_item(o: ds.ObjectInfo) -> dict[str, Any]:
    """An object as `oml.ds.describe` shows it (plus the digest loaders cache by)."""
    return {
        "object_name": o.name,
        "class": o.class_name,
        "size": o.size,
        "length": o.length,
        "row_count": o.row_count,
        "col_count": o.col_count,
        "digest": o.digest,
    }


class ObjectMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(default="object", alias="class", max_length=255)
    length: int | None = None
    row_count: int | None = None
    col_count: int | None = None


class SaveMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=4000)
    grantable: bool | None = None
    overwrite: bool = False
    append: bool = False
    objects: dict[str, ObjectMeta] = Field(default_factory=dict)


@router.get("/datastores", summary="List datastores (oml.ds.dir)")
def list_datastores(
    caller: CurrentUser, session: SessionDep, type: Annotated[ds.DatastoreType, Query()] = "user"
) -> dict[str, Any]:  # noqa: A002
    return {"result": [datastore_item(i) for i in ds.list_datastores(session, caller.name, type)]}


@router.post(
    "/datastores/{name}",
    status_code=201,
    summary="Save objects to a datastore (oml.ds.save)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "meta": {
                                "type": "string",
                                "description": "JSON: description, grantable, overwrite, "
                                "append, objects: {name: {class, length, row_count, col_count}}",
                            }
                        },
                        "additionalProperties": {
                            "type": "string",
                            "format": "binary",
                            "description": "one part per object: its pickled bytes",
                        },
                    }
                }
            },
        }
    },
)
async def save_datastore(name: DsName, request: Request, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    """Multipart body: a `meta` JSON part and one file part per object (its pickled bytes)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("Send the objects as multipart/form-data: a meta part and one file part per object")
    async with request.form(max_files=MAX_OBJECTS_PER_SAVE, max_fields=MAX_OBJECTS_PER_SAVE + 1) as form:
        # `meta` is the one plain field; a file part may be called meta too (an object named "meta").
        metas = [v for k, v in form.multi_items() if k == "meta" and isinstance(v, str)]
        if len(metas) > 1:
            raise BadRequest("Send one meta part")
        try:
            meta = SaveMeta.model_validate(orjson.loads(metas[0] if metas and metas[0] else "{}"))
        except (orjson.JSONDecodeError, ValidationError) as e:
            raise BadRequest(f"Invalid meta part: {e}") from None
        objects = []
        for key, value in form.multi_items():
            if key == "meta" and isinstance(value, str):
                continue
            if not isinstance(value, UploadFile):
                raise BadRequest(f"Part {key!r} must be a file part holding the pickled object")
            m = meta.objects.get(key, ObjectMeta())
            # The part's spooled file (on disk past 1 MiB): read one object at a time while storing it.
            objects.append(ds.ObjectIn(key, value.file, m.class_name, m.length, m.row_count, m.col_count))
        info = await run_in_threadpool(_save, services, caller.name, name, objects, meta)
    services.forget_datastore_generation()
    return {"result": datastore_item(info)}


def _save(services: Services, caller: str, name: str, objects: list[ds.ObjectIn], meta: SaveMeta) -> ds.DatastoreInfo:
    """Save in one transaction; a concurrent first save of the same name is retried once it has committed."""
    for attempt in range(3):
        try:
            with write_session(services.sessions) as session:
                return ds.save(
                    session,
                    caller,
                    name,
                    objects,
                    description=meta.description,
                    grantable=meta.grantable,
                    overwrite=meta.overwrite,
                    append=meta.append,
                    max_bytes=services.settings.datastore_max_bytes,
                )
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@router.get("/datastores/{name}", summary="Describe a datastore and its objects (oml.ds.describe)")
def describe_datastore(name: DsName, caller: CurrentUser, session: SessionDep, owner: Owner = None) -> dict[str, Any]:
    info, objects = ds.describe(session, caller.name, name, owner)
    return {"result": {**datastore_item(info), "objects": [object_item(o) for o in objects]}}


@router.get(
    "/datastores/{name}/objects/{obj}",
    summary="Load one object's pickled bytes (oml.ds.load)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 304: {}},
)
def load_object(
    name: DsName,
    obj: Annotated[str, Path(max_length=128, pattern=f"^{ds.NAME_RE.pattern}$")],
    request: Request,
    caller: CurrentUser,
    session: SessionDep,
    owner: Owner = None,
    digest: Annotated[str | None, Query(max_length=64, description="Only this version (else 409)")] = None,
) -> Response:
    info, data = ds.load_object(session, caller.name, name, obj, owner, digest)
    etag = f'"{info.digest}"'
    headers = {"ETag": etag, "X-Pyqd-Class": info.class_name}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.delete("/datastores/{name}", summary="Delete a datastore, or some of its objects (oml.ds.delete)")
def delete_datastore(
    name: DsName,
    caller: CurrentUser,
    services: ServicesDep,
    session: WriteSessionDep,
    objects: Annotated[list[str] | None, Query(description="Objects to delete; all if absent")] = None,
) -> dict[str, Any]:
    deleted = ds.delete_datastore(session, caller.name, name, objects)
    session.commit()
    services.forget_datastore_generation()
    return {"result": deleted}


@router.post("/datastores/{name}/grants", summary="Grant read on a grantable datastore to a user or PUBLIC")
def grant_datastore(
    name: DsName, caller: CurrentUser, services: ServicesDep, session: WriteSessionDep, body: GrantBody | None = None
) -> dict[str, Any]:
    ds.grant(session, caller.name, name, check_grantee(session, body.user if body else None))
    session.commit()
    services.forget_datastore_generation()
    return {"result": "granted"}


@router.delete("/datastores/{name}/grants/{grantee}", summary="Revoke a datastore grant (PUBLIC for everyone)")
def revoke_datastore(
    name: DsName,
    grantee: Annotated[str, Path(max_length=30)],
    caller: CurrentUser,
    services: ServicesDep,
    session: WriteSessionDep,
) -> dict[str, Any]:
    ds.revoke(session, caller.name, name, None if grantee.upper() == "PUBLIC" else grantee)
    session.commit()
    services.forget_datastore_generation()
    return {"result": "revoked"}


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "pyqd/v1")
