"""HTTP for every error: one table decides the status and OML errorCode of each domain error (by its class,
looked up along the MRO), and one function builds the OML error body."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from datastore import errors as ds
from engines import errors as eng
from models import errors as mdl
from repository import errors as repo
from server import fairness
from server.auth import errors as auth
from tables import errors as tbl

log = logging.getLogger("pyqd")


@dataclass(frozen=True)
class ErrorCode:
    status: int
    code: int


#: errorCode values (docs/compatibility.md lists them). 1024 and 1026 are Oracle's own.
INVALID_PARAMETER = ErrorCode(400, 1000)
UNAUTHORIZED = ErrorCode(401, 1001)
FORBIDDEN = ErrorCode(403, 1003)
NOT_FOUND = ErrorCode(404, 1004)
METHOD_NOT_ALLOWED = ErrorCode(405, 1005)
ALREADY_EXISTS = ErrorCode(400, 1009)
CHANGED = ErrorCode(409, 1010)
CONFLICT = ErrorCode(409, 1011)
TOO_LARGE = ErrorCode(413, 1013)
INVALID_QUERY = ErrorCode(400, 1020)
OUTPUT_TOO_LONG = ErrorCode(400, 1024)
SCRIPT_ERROR = ErrorCode(400, 1030)
NOT_SERIALIZABLE = ErrorCode(400, 1031)
TIME_LIMIT = ErrorCode(400, 1040)
CANCELLED = ErrorCode(400, 1041)
WORKER_CRASHED = ErrorCode(500, 1050)
MODEL_UNREADABLE = ErrorCode(400, 1060)
SCORE_REJECTED = ErrorCode(400, 1061)
MODEL_FAILED = ErrorCode(400, 1062)
JOB_ABANDONED = ErrorCode(500, 1051)
TOO_MANY_REQUESTS = ErrorCode(429, 1429)
INTERNAL = ErrorCode(500, 1500)
BAD_GATEWAY = ErrorCode(502, 1502)
BUSY = ErrorCode(503, 1503)

#: Domain error class → HTTP status and errorCode, looked up along the class's MRO: each package's base class
#: has a row, so a new error answers as its base does until it needs a line of its own.
ERROR_TABLE: dict[type[Exception], ErrorCode] = {
    auth.AuthError: INVALID_PARAMETER,
    auth.BadCredentials: UNAUTHORIZED,
    auth.TokenInvalid: UNAUTHORIZED,
    auth.Forbidden: FORBIDDEN,
    auth.UserExists: ALREADY_EXISTS,
    auth.UserNotFound: NOT_FOUND,
    auth.ClientNotFound: NOT_FOUND,
    auth.LoginThrottled: TOO_MANY_REQUESTS,
    auth.HashingBusy: BUSY,
    repo.RepositoryError: INVALID_PARAMETER,
    repo.ScriptNotFound: NOT_FOUND,
    repo.ScriptExists: ALREADY_EXISTS,
    repo.NotScriptOwner: FORBIDDEN,
    ds.DatastoreError: INVALID_PARAMETER,
    ds.DatastoreNotFound: NOT_FOUND,
    ds.ObjectNotFound: NOT_FOUND,
    ds.ObjectChanged: CHANGED,
    ds.DatastoreExists: ALREADY_EXISTS,
    ds.DatastoreTooLarge: TOO_LARGE,
    tbl.TablesError: INVALID_PARAMETER,
    tbl.TableNotFound: NOT_FOUND,
    tbl.TableExists: ALREADY_EXISTS,
    tbl.QueryRejected: INVALID_QUERY,
    tbl.QueryTimedOut: TIME_LIMIT,
    eng.ExecutionError: INTERNAL,
    eng.InvalidApplyRequest: INVALID_PARAMETER,
    eng.InputQueryFailed: INVALID_QUERY,
    eng.ScriptFailed: SCRIPT_ERROR,
    eng.ResultNotSerializable: NOT_SERIALIZABLE,
    eng.OutputTooLong: OUTPUT_TOO_LONG,
    eng.TimeLimitExceeded: TIME_LIMIT,
    eng.Cancelled: CANCELLED,
    eng.WorkerCrashed: WORKER_CRASHED,
    eng.JobAbandoned: JOB_ABANDONED,
    eng.PoolBusy: BUSY,
    eng.JobQueueFull: BUSY,
    eng.UserJobQueueFull: TOO_MANY_REQUESTS,
    eng.JobError: NOT_FOUND,
    eng.ScoringError: SCORE_REJECTED,
    eng.ModelUnreadable: MODEL_UNREADABLE,
    eng.ModelFailed: MODEL_FAILED,
    mdl.ModelsError: INVALID_PARAMETER,
    mdl.ModelNotFound: NOT_FOUND,
    mdl.DeploymentNotFound: NOT_FOUND,
    mdl.ModelExists: CONFLICT,
    mdl.ModelDeployed: CONFLICT,
    mdl.AlreadyDeployed: CONFLICT,
    mdl.UriTaken: CONFLICT,
    mdl.NotModelOwner: FORBIDDEN,
    mdl.ModelTooLarge: TOO_LARGE,
    fairness.TooManyCalls: TOO_MANY_REQUESTS,
}


class BadRequest(Exception):
    """Malformed request that no domain package could judge (bad JSON, wrong field types)."""


class PayloadTooLarge(Exception):
    """A request body over the configured limit."""


ERROR_TABLE[BadRequest] = INVALID_PARAMETER
ERROR_TABLE[PayloadTooLarge] = TOO_LARGE


def lookup(exc: BaseException) -> ErrorCode | None:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return None


#: Longest errorMessage sent, in UTF-8 bytes (note included): a script can raise an exception with a message of
#: any size, and the answer must not carry it whole.
MAX_ERROR_MESSAGE_BYTES = 64 * 1024


def clip_message(message: str, limit: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    """The message, or its start plus a note saying it was clipped, in at most `limit` UTF-8 bytes."""
    if len(message) <= limit // 4:  # at most 4 bytes a character: short enough without encoding
        return message
    data = message.encode("utf-8", "replace")
    if len(data) <= limit:
        return message
    note = f"\n[pyqd: message clipped; it was {len(data)} bytes, the first ones are shown]"
    head = data[: limit - len(note.encode())].decode("utf-8", "ignore")
    return head + note


def oml_body(code: int, message: str) -> bytes:
    """The one place OML error bodies are built: `{"errorCode", "errorMessage"}`, the message clipped."""
    return orjson.dumps({"errorCode": code, "errorMessage": clip_message(message)})


def services_body(status: int, message: str) -> bytes:
    """The one place OML Services error bodies are built: `{"code", "message"}`, the code being the HTTP status
    (Oracle publishes the shape, not the codes: docs/compatibility.md)."""
    return orjson.dumps({"code": str(status), "message": clip_message(message)})


#: Paths answered in OML Services' error shape.
SERVICES_PREFIX = "/omlmod"


def error_body(path: str, status: int, code: int, message: str) -> bytes:
    """The error body in the shape of the API the path belongs to."""
    if path == SERVICES_PREFIX or path.startswith(SERVICES_PREFIX + "/"):
        return services_body(status, message)
    return oml_body(code, message)


def oml_error(status: int, code: int, message: str, headers: dict[str, str] | None = None, path: str = "") -> Response:
    body = error_body(path, status, code, message)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _headers(ec: ErrorCode, exc: Exception) -> dict[str, str] | None:
    if ec.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if ec.status in (429, 503):
        return {"Retry-After": str(getattr(exc, "retry_after", 1))}
    return None


async def _domain_error(request: Request, exc: Exception) -> Response:
    ec = lookup(exc)
    if ec is None:  # pragma: no cover - registered only for mapped classes
        return await _unexpected(request, exc)
    return oml_error(ec.status, ec.code, str(exc), _headers(ec, exc), request.url.path)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return oml_error(400, INVALID_PARAMETER.code, "Invalid request: " + "; ".join(parts), path=request.url.path)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = {401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: TOO_LARGE}.get(
        exc.status_code, ErrorCode(exc.status_code, 1000 + exc.status_code % 1000)
    )
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"Resource not found: {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"Method {request.method} not allowed here; use {', '.join(allowed)}"
    return oml_error(exc.status_code, code.code, detail, headers or None, request.url.path)


#: Methods a 405's `Allow` may name.
HTTP_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path answers (Starlette's 405 names only the first route that matched)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("Unexpected error on %s %s", request.method, request.url.path)
    return oml_error(500, INTERNAL.code, "Internal server error; the server log has the details", path=request.url.path)


def install(app: FastAPI) -> None:
    """Register the handlers: domain errors by table, validation errors as 400, the rest as OML 500."""
    for cls in ERROR_TABLE:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
