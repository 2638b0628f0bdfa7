"""The OpenAPI document: 3.1 as FastAPI writes it, pyqd's markings, and a 3.0 rendering for older tools
(APEX's "Open API URL", older Postman importers)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from datastore.service import NAME_RE as DATASTORE_NAME_RE
from repository.service import SCRIPT_NAME_RE
from server.auth.service import USER_NAME_RE

#: Paths that need no token (everything else needs a bearer token).
PUBLIC_PREFIXES = ("/omlusers/", "/oauth/", "/health", "/ready", "/openapi")
EXTENSION_TAG = "pyqd extension"

OAUTH2_TOKEN_FORM = {
    "type": "object",
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials", "password", "refresh_token"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string", "format": "password"},
        "username": {"type": "string"},
        "password": {"type": "string", "format": "password"},
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
    },
    "required": ["grant_type"],
}


#: The OML error body every error answer carries (RFC 6749's `{"error"}` on the standard token endpoint).
OML_ERROR = {
    "type": "object",
    "properties": {"errorCode": {"type": "integer"}, "errorMessage": {"type": "string"}},
    "required": ["errorCode", "errorMessage"],
}
OAUTH2_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    "required": ["error"],
}
#: Why each error status is answered (the response descriptions).
ERROR_STATUSES = {
    400: "Invalid request: malformed body, bad parameter, or refused by a domain rule",
    401: "Missing, invalid or expired bearer token",
    403: "The caller may not do this (e.g. an administrator operation)",
    404: "No such object, or the caller may not see it",
    409: "Conflict: the object changed meanwhile, exists already, or is in use",
    413: "The request body exceeds the configured limit",
    429: "Too many requests from this user or address; retry after `Retry-After` seconds",
    500: "The worker running the user's code or model stopped (crashed, out of memory)",
    503: "The server is busy (no free worker, full queue) or stopping; retry after `Retry-After` seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "The auth scheme to use", "schema": {"type": "string"}}}
#: Path parameter name → the pattern the server checks it against (the routes' own patterns are kept).
PATH_PATTERNS = {
    "scriptName": SCRIPT_NAME_RE.pattern,
    "ownerName": USER_NAME_RE.pattern,
    "grantee": USER_NAME_RE.pattern,
    "obj": DATASTORE_NAME_RE.pattern,
}


#: OML Services' error body.
SERVICES_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}


def _public(path: str) -> bool:
    return path.startswith(PUBLIC_PREFIXES) or path == "/omlmod/v1/api"


def error_statuses(path: str, method: str, op: dict[str, Any]) -> list[int]:
    """The error statuses an operation can answer (every one is produced by server/errors.py)."""
    statuses = [400, 404]
    if not _public(path) or path.startswith(("/omlusers/", "/oauth/")):
        statuses += [401, 403]
    if path == "/ready":
        statuses.append(503)
    if method in ("post", "put", "patch"):
        statuses.append(413)
    if "/datastores/" in path:
        statuses.append(409)
    if path.startswith("/omlmod/"):
        statuses += [409, 503] if method != "get" else []
    if path.endswith("/score") and path.startswith("/omlmod/"):
        statuses += [500]
    if path.startswith(("/omlusers/", "/oauth/")) or any(
        part in path for part in ("-apply", "do-eval", "/run/", "/query", "/jobs")
    ):
        statuses += [429, 503]
    return sorted(set(statuses))


def _error_response(status: int, path: str) -> dict[str, Any]:
    oml, oauth = {"$ref": "#/components/schemas/OmlError"}, {"$ref": "#/components/schemas/OAuth2Error"}
    if path.startswith("/omlmod"):
        oml = {"$ref": "#/components/schemas/Error"}
    # The OML token endpoint also takes form-encoded grants, and answers those as RFC 6749 does.
    schema = oauth if path.startswith("/oauth/") else {"anyOf": [oml, oauth]} if path.startswith("/omlusers/") else oml
    response: dict[str, Any] = {
        "description": ERROR_STATUSES[status],
        "content": {"application/json": {"schema": schema}},
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    elif status == 401:
        response["headers"] = _WWW_AUTHENTICATE
    return response


#: Success answers whose media type FastAPI cannot see (the handler returns a plain Response).
MEDIA_TYPES = {("/metrics", "get", "200"): "text/plain"}


def _declare_errors(path: str, method: str, op: dict[str, Any]) -> None:
    """Declare the common error answers with their schema; FastAPI's 422 goes, since validation answers 400."""
    responses = op.setdefault("responses", {})
    responses.pop("422", None)
    for (p, m, ok), media_type in MEDIA_TYPES.items():
        if (p, m) == (path, method) and ok in responses:
            responses[ok]["content"] = {media_type: {"schema": {"type": "string"}}}
    for status in error_statuses(path, method, op):
        responses.setdefault(str(status), _error_response(status, path))
    for param in op.get("parameters", []):
        name = param.get("name", "")
        pattern = PATH_PATTERNS.get(name)
        if name == "name" and "/scripts/" in path:
            pattern = SCRIPT_NAME_RE.pattern
        elif name == "name" and "/admin/users/" in path:
            pattern = USER_NAME_RE.pattern
        schema = param.get("schema", {})
        if param.get("in") == "path" and pattern and "pattern" not in schema:
            schema["pattern"] = f"^{pattern}$"


def build(app: FastAPI) -> dict[str, Any]:
    """The 3.1 document with security schemes, public routes marked, and extensions flagged."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["OAuth2TokenForm"] = OAUTH2_TOKEN_FORM
    schemas["OmlError"] = OML_ERROR
    schemas["OAuth2Error"] = OAUTH2_ERROR
    schemas.setdefault("Error", SERVICES_ERROR)
    schemas.update(getattr(app.state, "body_schemas", {}))  # request bodies routes declare by $ref
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "oauth2": {
            "type": "oauth2",
            "flows": {
                "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}},
                "password": {"tokenUrl": "/oauth/token", "scopes": {}},
            },
        },
    }
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            _declare_errors(path, method, op)
            op["security"] = [] if _public(path) else [{"bearer": []}, {"oauth2": []}]
            if EXTENSION_TAG in op.get("tags", []):
                op["x-pyqd-extension"] = True
    return schema


def downgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """A 3.0.3 rendering of a 3.1 document: nullable instead of null types, single examples."""
    out = _convert(copy.deepcopy(doc))
    out["openapi"] = "3.0.3"
    return out


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _convert(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and any(o == {"type": "null"} for o in options):
            rest = [o for o in options if o != {"type": "null"}]
            node.pop(key)
            if len(rest) == 1:
                node.update({k: v for k, v in rest[0].items() if k not in node})
            else:
                node[key] = rest
            node["nullable"] = True
    if isinstance(node.get("type"), list):
        types = [t for t in node["type"] if t != "null"]
        if len(types) < len(node["type"]):
            node["nullable"] = True
        node["type"] = types[0] if types else "string"
    if node.get("type") == "null":
        node.pop("type")
        node["nullable"] = True
    # 3.0 has no content keywords: a JSON-encoded string (OML's `parameters`) is just a string there.
    node.pop("contentMediaType", None)
    node.pop("contentSchema", None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[flag] = node[bound]
            node[bound] = True
    if isinstance(node.get("examples"), list) and "schema" not in node and "content" not in node:
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node
