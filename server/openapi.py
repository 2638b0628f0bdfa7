"""The OpenAPI document: 3.1 as FastAPI writes it, pyqd's markings, and a 3.0 rendering for older tools
(APEX's "Open API URL", older Postman importers)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

#: Paths that need no token (everything else needs a bearer token).
PUBLIC_PREFIXES = ("/omlusers/", "/oauth/", "/health", "/ready", "/metrics", "/openapi")
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


def build(app: FastAPI) -> dict[str, Any]:
    """The 3.1 document with security schemes, public routes marked, and extensions flagged."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["OAuth2TokenForm"] = OAUTH2_TOKEN_FORM
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
        for op in item.values():
            if not isinstance(op, dict):
                continue
            op["security"] = [] if path.startswith(PUBLIC_PREFIXES) else [{"bearer": []}, {"oauth2": []}]
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
