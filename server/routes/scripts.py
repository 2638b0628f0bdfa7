"""Script repository over REST: Oracle's listings (v1, v2 typed) and pyqd's create/get/drop/grant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from repository import service as repo
from server.auth import service as auth_service
from server.deps import CurrentUser, ServicesDep, SessionDep, WriteSessionDep
from server.routes.common import EXTENSION_TAG, include_both_forms, iso_millis

v1 = APIRouter(tags=["py-scripts v1"])
v2 = APIRouter(tags=["py-scripts v2"])
ext = APIRouter(tags=[EXTENSION_TAG])

ScriptName = Annotated[str, Path(description="Name of the script in the repository", max_length=128)]


def listing_item(s: repo.ScriptInfo) -> dict[str, Any]:
    """One script as OML lists it: lower-case keys, ISO date with milliseconds."""
    item: dict[str, Any] = {
        "owner": s.owner,
        "date": iso_millis(s.updated_at),
        "name": s.name,
        "description": s.description,
        "script": s.source,
    }
    if s.grantee is not None:
        item["grantee"] = s.grantee
    return item


class ScriptList(BaseModel):
    result: list[dict[str, Any]] = Field(
        examples=[
            [
                {
                    "owner": "OML_USER",
                    "date": "2020-08-27T15:53:56.000Z",
                    "name": "return_df",
                    "description": None,
                    "script": "def return_df(num, scale):\n    ...",
                }
            ]
        ]
    )


@v1.get("/scripts", summary="List the scripts the caller can use", response_model=ScriptList)
def list_scripts_v1(caller: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return {"result": [listing_item(s) for s in repo.list_scripts(session, caller.name, "all")]}


@v2.get("/scripts", summary="List the scripts the caller can use (same as /scripts/all)", response_model=ScriptList)
def list_scripts_v2_all(caller: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return list_scripts_v1(caller, session)


@v2.get(
    "/scripts/{scriptType}",
    summary="List scripts by type: user, all, global, grant, granted",
    response_model=ScriptList,
)
def list_scripts_v2(
    caller: CurrentUser,
    session: SessionDep,
    scriptType: Annotated[repo.ScriptType, Path(description="user | all | global | grant | granted")],  # noqa: N803
) -> dict[str, Any]:
    return {"result": [listing_item(s) for s in repo.list_scripts(session, caller.name, scriptType)]}


class ScriptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(max_length=128, examples=["regr_predict"])
    script: str = Field(description="Python source defining the function", examples=["def f(x):\n    return x\n"])
    isGlobal: bool = False  # noqa: N815 - OML's request style is camelCase
    overwrite: bool = False
    description: str | None = Field(default=None, max_length=4000)


@ext.post("/scripts", status_code=201, summary="Create or replace a script (oml.script.create)")
def create_script(
    body: ScriptCreate, caller: CurrentUser, services: ServicesDep, session: WriteSessionDep
) -> dict[str, Any]:
    info = repo.create_script(
        session,
        caller.name,
        body.name,
        body.script,
        is_global=body.isGlobal,
        overwrite=body.overwrite,
        description=body.description,
        is_admin=caller.is_admin,
    )
    session.commit()
    services.forget_script(info.name)
    return {"result": listing_item(info)}


@ext.get("/scripts/{name}", summary="Get one script (oml.script.load): own, then global, or owner's if granted")
def get_script(
    name: ScriptName,
    caller: CurrentUser,
    session: SessionDep,
    owner: Annotated[str | None, Query(max_length=30)] = None,
) -> dict[str, Any]:
    return {"result": listing_item(repo.get_script(session, caller.name, name, owner))}


@ext.delete("/scripts/{name}", summary="Drop a script (oml.script.drop)")
def drop_script(
    name: ScriptName,
    caller: CurrentUser,
    services: ServicesDep,
    session: WriteSessionDep,
    is_global: Annotated[bool, Query(alias="global")] = False,
) -> dict[str, Any]:
    repo.drop_script(session, caller.name, name, is_global=is_global, is_admin=caller.is_admin)
    session.commit()
    services.forget_script(name)
    return {"result": f"script {name} dropped"}


class GrantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(default=None, max_length=30, description="Grantee; null or absent means PUBLIC")


def check_grantee(session: SessionDep, user: str | None) -> str | None:
    """The grantee must be an existing user (or None/PUBLIC for everyone)."""
    if user is None or user.upper() == "PUBLIC":
        return None
    return auth_service.get_user(session, user).name


@ext.post("/scripts/{name}/grants", summary="Grant read/execute on a private script to a user or PUBLIC")
def grant_script(
    name: ScriptName,
    caller: CurrentUser,
    services: ServicesDep,
    session: WriteSessionDep,
    body: GrantBody | None = None,
) -> dict[str, Any]:
    grantee = check_grantee(session, body.user if body else None)
    repo.grant(session, caller.name, name, grantee)
    session.commit()
    services.forget_script(name)
    return {"result": "granted"}


@ext.delete("/scripts/{name}/grants/{grantee}", summary="Revoke a script grant (grantee PUBLIC for everyone)")
def revoke_script(
    name: ScriptName,
    grantee: Annotated[str, Path(max_length=30)],
    caller: CurrentUser,
    services: ServicesDep,
    session: WriteSessionDep,
) -> dict[str, Any]:
    repo.revoke(session, caller.name, name, None if grantee.upper() == "PUBLIC" else grantee)
    session.commit()
    services.forget_script(name)
    return {"result": "revoked"}


# HEAD answers the listings' headers (Oracle lists HEAD for its GET resources).
v1.add_api_route("/scripts", list_scripts_v1, methods=["HEAD"], include_in_schema=False)
v2.add_api_route("/scripts", list_scripts_v2_all, methods=["HEAD"], include_in_schema=False)
v2.add_api_route("/scripts/{scriptType}", list_scripts_v2, methods=["HEAD"], include_in_schema=False)


def install(app: FastAPI) -> None:
    include_both_forms(app, v1, "oml", "py-scripts/v1")
    include_both_forms(app, v2, "oml", "py-scripts/v2")
    include_both_forms(app, ext, "oml", "pyqd/v1")
