"""Per-script environments over REST, in Oracle's shapes (reference §6.2, §6.3): the v1 listing of environments
and the v2 conda preloads. Environments are built by an administrator with `pyqd env create`; a call runs in one
with `envName` in its body."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engines import envs
from engines.errors import EnvironmentUnsupported, PreloadRefused
from engines.pool import WorkerPool
from engines.spec import describe
from server.deps import CurrentUser, ServicesDep
from server.errors import BadRequest
from server.routes.common import include_both_forms, json_body
from server.services import Services

v1 = APIRouter(tags=["py-scripts v1"])
v2 = APIRouter(tags=["py-scripts v2"])

EnvName = Annotated[str, Path(description="Name of a preloaded environment", max_length=64)]


def listing_item(info: envs.EnvInfo) -> dict[str, Any]:
    """One environment as Oracle lists it."""
    return {
        "size": envs.human_size(info.size),
        "name": info.name,
        "description": info.description,
        "number_of_installed_packages": len(info.packages),
        "tags": {"python": info.python, "application": "OML4PY"},
    }


class EnvList(BaseModel):
    result: dict[str, list[dict[str, Any]]] = Field(
        examples=[
            {
                "envs": [
                    {
                        "size": "1.7 GiB",
                        "name": "seaborn",
                        "description": "Python package for seaborn",
                        "number_of_installed_packages": 78,
                        "tags": {"python": "3.11", "application": "OML4PY"},
                    }
                ]
            }
        ]
    )


@v1.get("/envs", summary="List the environments scripts can run in (envName)", response_model=EnvList)
def list_envs(_: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return {"result": {"envs": [listing_item(info) for info in services.envs.list()]}}


class PreloadBody(BaseModel):
    """Oracle's preload request: the environment, and whether to preload it again when it is preloaded."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"envName": "seaborn_env"}]})

    envName: str = Field(description="The environment to keep warm workers of for an hour")
    overwrite: bool = Field(False, description="Preload again (from now) when it is preloaded already")

    @field_validator("envName")
    @classmethod
    def _name(cls, v: str) -> str:
        return envs.check_name(v)


class PreloadList(BaseModel):
    environments: list[dict[str, str]] = Field(
        examples=[
            [
                {
                    "duration": "0 hrs, 27 mins, 38 secs",
                    "expires": "Jul 31, 2025 02:37:19 UTC",
                    "created": "Jul 31, 2025 01:37:19 UTC",
                    "envName": "seaborn_env",
                }
            ]
        ]
    )


@v2.get("/preload/conda", summary="List the caller's preloaded environments", response_model=PreloadList)
def list_preloads(caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return {"environments": [p.listing() for p in services.preloads.of(caller.name)]}


@v2.post(
    "/preload/conda",
    summary="Preload an environment: keep its workers warm for an hour",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PreloadBody.model_json_schema()}},
        }
    },
)
async def preload(request: Request, caller: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    try:
        body = PreloadBody.model_validate(await json_body(request))
    except ValidationError as e:
        raise BadRequest("Invalid request: " + describe(e)) from None
    pool = _pool_of(services)
    pool.check_environment(body.envName)  # EnvironmentNotFound: 400
    try:
        item = services.preloads.add(caller.name, body.envName, overwrite=body.overwrite)
    except ValueError as e:
        raise PreloadRefused(str(e)) from None
    _hold(services, body.envName)
    return {"result": item.listing()}


@v2.delete("/preload/conda/{envName}", summary="Delete one of the caller's preloaded environments")
def delete_preload(envName: EnvName, caller: CurrentUser, services: ServicesDep) -> dict[str, str]:  # noqa: N803
    if not services.preloads.remove(caller.name, envName):
        raise PreloadRefused(f"Preloaded environment not found with name '{envName}'")
    if services.pool is not None:
        _hold(services, envName)
    return {"result": f"Preloaded environment '{envName}' deleted successfully"}


def _pool_of(services: Services) -> WorkerPool:
    """The pool that runs the verbs' environments (EnvironmentUnsupported on the Dask engine)."""
    if services.cluster is not None or services.pool is None:
        raise EnvironmentUnsupported("envName is not supported on the Dask engine")
    return services.pool


def _hold(services: Services, env: str) -> None:
    """Tell the pool how long the environment's preloads (anyone's) keep it warm."""
    assert services.pool is not None
    services.pool.hold(env, max(0.0, services.preloads.until(env) - time.time()))


def install(app: FastAPI) -> None:
    include_both_forms(app, v1, "oml", "py-scripts/v1")
    include_both_forms(app, v2, "oml", "py-scripts/v2")
