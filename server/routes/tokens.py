"""Token services: OML's JSON token endpoint (+ refresh, revoke) and a standard RFC 6749 endpoint."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.auth import service as auth_service
from server.auth.errors import BadCredentials, HashingBusy, LoginThrottled, TokenInvalid
from server.auth.tokens import IssuedToken, TokenClaims
from server.deps import ServicesDep
from server.errors import BadRequest
from server.routes.common import include_both_forms, json_body
from server.services import Services

T = TypeVar("T")

router = APIRouter(tags=["token service"])
oauth_router = APIRouter(tags=["token service"])

#: RFC 6749 §5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_OML_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                        "refresh_token": {"type": "string"},
                        "token": {"type": "string"},
                    },
                    "required": ["grant_type"],
                },
                "example": {"grant_type": "password", "username": "OML_USER", "password": "..."},
            },
            "application/x-www-form-urlencoded": {
                "schema": {"$ref": "#/components/schemas/OAuth2TokenForm"},
            },
        },
    }
}


def _oml_token(issued: IssuedToken) -> JSONResponse:
    return JSONResponse(
        {"accessToken": issued.token, "expiresIn": issued.expires_in, "tokenType": "Bearer"}, headers=NO_STORE
    )


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _refresh(services: Services, token: str | None) -> IssuedToken:
    if not token:
        raise BadRequest("The refresh grant needs the current access token (refresh_token or token)")
    claims = _full_token(services, token)
    with services.sessions() as session:
        auth_service.check_session(session, claims)
    return services.signer.refresh(claims)


def _full_token(services: Services, token: str) -> TokenClaims:
    """A verified token that is not a script's (script tokens are neither refreshed nor used to revoke)."""
    claims = services.signer.decode(token)
    if claims.is_script:
        raise TokenInvalid("A script's token cannot be refreshed or revoked")
    return claims


#: Longest user name or client id kept as a throttling key (longer ones cannot exist anyway).
MAX_KEY_CHARS = 64


def _address(request: Request) -> str | None:
    """The client's address, as the server sees it (behind a proxy, configure uvicorn's forwarded headers)."""
    return request.client.host if request.client else None


def _throttled(services: Services, key: str, address: str | None, authenticate: Callable[[Session], T]) -> T:
    """`authenticate(session)`, refused at once (LoginThrottled) while `key` or the address is locked out after
    repeated failures; a failure counts against both."""
    throttle = services.login_throttle
    throttle.check(key, address)
    try:
        with services.sessions() as session:
            result = authenticate(session)
    except BadCredentials:
        throttle.failed(key, address)
        raise
    throttle.succeeded(key)
    return result


def _client_credentials(services: Services, client_id: str, secret: str, address: str | None) -> IssuedToken:
    key = "client:" + client_id[:MAX_KEY_CHARS]
    client = _throttled(services, key, address, lambda s: auth_service.authenticate_client(s, client_id, secret))
    return services.signer.issue(client.user_name, client_id=client.client_id)


def _password(services: Services, username: Any, password: Any, address: str | None) -> IssuedToken:
    """A new session for a right password (throttled per user name and address)."""
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise BadRequest("The password grant needs username and password strings")
    user = _throttled(
        services, username[:MAX_KEY_CHARS], address, lambda s: auth_service.authenticate(s, username, password)
    )
    return services.signer.issue(user.name)


@router.post("/token", summary="Get or refresh an access token (OML token service)", openapi_extra=_OML_BODY)
async def token(request: Request, services: ServicesDep) -> Response:
    """OML's JSON grants; a form-encoded body gets the standard OAuth2 answer instead (for APEX)."""
    if _is_form(request):
        return await oauth_token(request, services)
    body = await json_body(request)
    grant = body.get("grant_type")
    if grant == "password":
        return _oml_token(
            await run_in_threadpool(_password, services, body.get("username"), body.get("password"), _address(request))
        )
    if grant == "refresh_token":
        token = body.get("refresh_token") or body.get("token") or _bearer(request)
        return _oml_token(await run_in_threadpool(_refresh, services, token if isinstance(token, str) else None))
    raise BadRequest(f"Unsupported grant_type {grant!r}; use password or refresh_token")


@router.post("/token/revoke", summary="Revoke an access token and every refresh of it")
async def revoke(request: Request, services: ServicesDep) -> dict[str, str]:
    token = _bearer(request)
    if token is None:
        body = await json_body(request, required=False)
        token = body.get("token") if isinstance(body.get("token"), str) else None
    if not token:
        raise TokenInvalid("Missing bearer token")
    claims = _full_token(services, token)
    await run_in_threadpool(_revoke, services, claims)
    return {"status": "ok"}


def _revoke(services: Services, claims: TokenClaims) -> None:
    with services.sessions() as session:
        auth_service.check_session(session, claims)
        auth_service.revoke_session(session, claims, services.signer.max_age_s)
        session.commit()
    services.forget_sessions(sid=claims.sid)


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == (
        "application/x-www-form-urlencoded"
    )


def _rfc_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers={**NO_STORE, **(headers or {})}
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    return (client_id, secret) if sep else ("", "")


@oauth_router.post(
    "/oauth/token",
    summary="Standard OAuth2 token endpoint (RFC 6749): client_credentials, password, refresh_token",
    tags=["pyqd extension"],
    openapi_extra={
        "x-pyqd-extension": True,
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/OAuth2TokenForm"}}
            },
        },
    },
)
async def oauth_token(request: Request, services: ServicesDep) -> JSONResponse:
    """Form-encoded grants answering `{access_token, token_type, expires_in}`; errors per RFC 6749 §5.2."""
    raw = await request.body()
    if _is_form(request):
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        try:
            form = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return _rfc_error(400, "invalid_request", "The body must be form-encoded (or JSON)")
        if not isinstance(form, dict):
            return _rfc_error(400, "invalid_request", "The body must be form-encoded (or JSON)")
    grant = form.get("grant_type")
    try:
        if grant == "client_credentials":
            creds = _basic_credentials(request) or (str(form.get("client_id", "")), str(form.get("client_secret", "")))
            if not creds[0] or not creds[1]:
                return _rfc_error(
                    401, "invalid_client", "Client authentication failed", {"WWW-Authenticate": 'Basic realm="pyqd"'}
                )
            issued = await run_in_threadpool(_client_credentials, services, *creds, _address(request))
        elif grant == "password":
            issued = await run_in_threadpool(
                _password, services, form.get("username"), form.get("password"), _address(request)
            )
        elif grant == "refresh_token":
            issued = await run_in_threadpool(
                _refresh, services, str(form.get("refresh_token") or "") or _bearer(request)
            )
        elif not grant:
            return _rfc_error(400, "invalid_request", "The grant_type parameter is missing")
        else:
            return _rfc_error(400, "unsupported_grant_type", f"Unsupported grant_type {grant!r}")
    except BadCredentials as e:
        if grant == "client_credentials":
            return _rfc_error(401, "invalid_client", str(e), {"WWW-Authenticate": 'Basic realm="pyqd"'})
        return _rfc_error(400, "invalid_grant", str(e))
    except TokenInvalid as e:
        return _rfc_error(400, "invalid_grant", str(e))
    except LoginThrottled as e:
        # RFC 6749 has no throttling error; slow_down is the registered one (RFC 8628 §3.5).
        return _rfc_error(429, "slow_down", str(e), {"Retry-After": str(e.retry_after)})
    except HashingBusy as e:
        return _rfc_error(503, "temporarily_unavailable", str(e), {"Retry-After": str(e.retry_after)})
    except BadRequest as e:
        return _rfc_error(400, "invalid_request", str(e))
    return JSONResponse(
        {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in}, headers=NO_STORE
    )


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "omlusers", "oauth2/v1")
    app.include_router(oauth_router)
