"""User and API-client management for administrators (pyqd extension)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from server import accounts
from server.auth import service as auth_service
from server.auth.models import ApiClient, User
from server.db import write_session
from server.deps import AdminUser, ServicesDep, SessionDep, WriteSessionDep
from server.routes.common import EXTENSION_TAG, include_both_forms, iso_millis

router = APIRouter(prefix="/admin", tags=[EXTENSION_TAG])
UserName = Annotated[str, Path(max_length=30)]


def user_item(u: User) -> dict[str, Any]:
    return {"name": u.name, "admin": u.is_admin, "created": iso_millis(u.created_at)}


def client_item(c: ApiClient) -> dict[str, Any]:
    return {"client_id": c.client_id, "name": c.name, "user": c.user_name, "created": iso_millis(c.created_at)}


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=30, examples=["OML_USER"])
    password: str = Field(max_length=1024, description="At least PYQD_PASSWORD_MIN_LENGTH (12) characters")
    admin: bool = False


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024, description="At least PYQD_PASSWORD_MIN_LENGTH (12) characters")


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, examples=["apex"])
    user: str = Field(max_length=30)


@router.get("/users", summary="List users")
def list_users(_: AdminUser, session: SessionDep) -> dict[str, Any]:
    return {"result": [user_item(u) for u in auth_service.list_users(session)]}


@router.post("/users", status_code=201, summary="Create a user (and its schema)")
async def create_user(body: UserCreate, _: AdminUser, services: ServicesDep) -> dict[str, Any]:
    user = await run_in_threadpool(accounts.add_user, services, body.name, body.password, is_admin=body.admin)
    return {"result": user_item(user)}


@router.put("/users/{name}/password", summary="Set a user's password (their existing tokens stop working)")
async def set_password(name: UserName, body: PasswordChange, _: AdminUser, services: ServicesDep) -> dict[str, Any]:
    await run_in_threadpool(accounts.set_password, services, name, body.password)
    return {"result": "password changed"}


@router.delete("/users/{name}", summary="Remove a user and everything they own")
def remove_user(name: UserName, admin: AdminUser, services: ServicesDep) -> dict[str, Any]:
    accounts.remove_user(services, name, removed_by=admin.name)
    return {"result": f"user {name.upper()} removed"}


@router.get("/clients", summary="List API clients")
def list_clients(_: AdminUser, session: SessionDep) -> dict[str, Any]:
    return {"result": [client_item(c) for c in auth_service.list_clients(session)]}


@router.post("/clients", status_code=201, summary="Register an API client; the secret is shown only here")
async def create_client(body: ClientCreate, _: AdminUser, services: ServicesDep) -> dict[str, Any]:
    def create() -> dict[str, Any]:
        with write_session(services.sessions) as session:
            client, secret = auth_service.create_client(session, body.name, body.user)
            return {**client_item(client), "client_secret": secret}

    return {"result": await run_in_threadpool(create)}


@router.delete("/clients/{client_id}", summary="Remove an API client (its tokens stop working)")
def remove_client(
    client_id: Annotated[str, Path(max_length=64)], _: AdminUser, services: ServicesDep, session: WriteSessionDep
) -> dict[str, Any]:
    auth_service.remove_client(session, client_id)
    session.commit()
    services.forget_sessions(client_id=client_id)
    return {"result": "client removed"}


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "pyqd/v1")
