"""Dependencies every route reads like types: the services, sessions and the calling user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.auth import service as auth_service
from server.auth.errors import Forbidden, TokenInvalid
from server.auth.tokens import TokenClaims
from server.bridge import is_read
from server.db import WRITE_OPTION
from server.services import Services
from server.settings import Settings


async def get_services(request: Request) -> Services:
    # async: a plain function dependency would cost every request a thread hop (~0.1 ms of server CPU)
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """A read session, closed after the request."""
    with services.sessions() as session:
        yield session


def get_write_session(services: ServicesDep) -> Iterator[Session]:
    """A session that holds the write lock (SQLite) from the start; the handler commits, errors roll back."""
    with services.sessions() as session:
        session.connection(execution_options={WRITE_OPTION: True})
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]

_bearer = HTTPBearer(auto_error=False, description="An access token from the OML token endpoint or /oauth/token")


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request."""

    name: str
    is_admin: bool
    claims: TokenClaims


#: The only routes a script token opens (module.function of the endpoint): what `import oml` inside a script
#: needs for the caller's own (or granted) objects. Everything else, admin and token routes, script
#: create/drop, execution, grants, refuses it. Deny by default: a new route is closed to scripts until it is
#: added here.
# Not granting or revoking: a granted script run by its victim could otherwise hand the victim's datastores to
# its author (the one way out of the caller's schema that `import oml` would offer).
# Tables: a script may add to its caller's schema (`oml.create`, `oml.push`, `materialize`, as dbt-oracle's
# Python models do in the engine), make its temporary tables permanent and drop them, but neither replace nor
# drop a permanent table (server.routes.tables checks the token for those). A read-only token (another owner's
# script) writes nothing at all (`current_user` refuses it every non-read).
SCRIPT_ROUTES = frozenset(
    {
        "server.routes.datastores.list_datastores",
        "server.routes.datastores.save_datastore",
        "server.routes.datastores.describe_datastore",
        "server.routes.datastores.load_object",
        "server.routes.datastores.delete_datastore",
        "server.routes.scripts.list_scripts_v1",
        "server.routes.scripts.list_scripts_v2_all",
        "server.routes.scripts.list_scripts_v2",
        "server.routes.scripts.get_script",
        "server.routes.tables.list_tables",
        "server.routes.tables.describe_table",
        "server.routes.tables.read_rows",
        "server.routes.tables.table_data",
        "server.routes.tables.upload_table",
        "server.routes.tables.keep_table",
        "server.routes.tables.drop_table",
        "server.routes.queries.run_query",
        # a Dask worker relaying the script's requests, which the bridge then checks against this list again
        "server.routes.relay.relay",
    }
)


#: The relay takes a read-only token's requests and has the bridge keep them read-only (`server.routes.relay`).
RELAY = "server.routes.relay.relay"


def endpoint_name(request: Request) -> str | None:
    """module.function of the endpoint the request was routed to."""
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    return f"{endpoint.__module__}.{endpoint.__name__}" if endpoint is not None else None


async def current_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Verify the bearer token (signature, expiry, revocation, password changes) → the caller. A session that
    checked out is trusted for `PYQD_LOOKUP_CACHE_S` without asking the database again (a revocation, password
    change or removal made through this server forgets it at once: `Services.forget_sessions`). A script token is
    accepted only on SCRIPT_ROUTES, and never speaks as an administrator."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise TokenInvalid("Missing bearer token")
    claims = services.signer.decode(credentials.credentials)
    if claims.is_script and endpoint_name(request) not in SCRIPT_ROUTES:
        raise Forbidden("A script's token cannot be used for this operation")
    if claims.read_only and not is_read(request.method, request.url.path) and endpoint_name(request) != RELAY:
        raise Forbidden("A script of another owner may only read (the caller can trust it with trustPickle)")
    key = claims.session_key
    epoch = services.auth_cache.epoch
    cached: Caller | None = services.auth_cache.get(key)
    if cached is not None:
        return cached
    caller = await run_in_threadpool(_check, services, claims)
    services.auth_cache.put(key, caller, epoch)
    return caller


def _check(services: Services, claims: TokenClaims) -> Caller:
    with services.sessions() as session:
        user = auth_service.check_session(session, claims)
        return Caller(user.name, user.is_admin and not claims.is_script, claims)


CurrentUser = Annotated[Caller, Depends(current_user)]


def admin_user(caller: CurrentUser) -> Caller:
    if not caller.is_admin:
        raise Forbidden()
    return caller


AdminUser = Annotated[Caller, Depends(admin_user)]
