"""The OpenAPI 3.0 document of one scoring endpoint (`GET /omlmod/v1/deployment/{uri}/api`): its input record
with the model's real attribute names and types, an example request, and the answer's shape for the model's
function, with an example answer (what APEX's data profile discovery and Postman's import read)."""

from __future__ import annotations

from typing import Any

from models.service import DeploymentInfo

_NUMBER = {"FLOAT", "DOUBLE", "FLOAT16", "NUMERICAL"}
_INTEGER = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


def _value_schema(attribute_type: str) -> tuple[dict[str, Any], Any]:
    if attribute_type in _NUMBER:
        return {"type": "number", "format": "double" if attribute_type != "FLOAT" else "float"}, 0.0
    if attribute_type in _INTEGER:
        return {"type": "integer", "format": "int64"}, 0
    if attribute_type == "BOOL":
        return {"type": "boolean"}, False
    return {"type": "string"}, "text"


def _attribute_schema(attribute: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    schema, example = _value_schema(attribute["attributeType"])
    shape = [d for d in attribute.get("shape") or []][1:]
    if not shape:
        described = {
            **schema,
            "nullable": True,
            "description": f"{attribute['attributeType']}; a JSON value or text holding one (as APEX page items "
            "send); absent or null is missing",
        }
        return described, example
    for d in reversed(shape):
        size = d if d > 0 else 1
        schema = {"type": "array", "items": schema}
        if d > 0:
            schema.update(minItems=d, maxItems=d)
        example = [example] * size
    schema["description"] = f"a tensor of shape {shape} ({attribute['attributeType']})"
    return schema, example


def _result_schema(function: str, labels: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    if function == "REGRESSION":
        return {"type": "object", "properties": {"regression": {"type": "number", "nullable": True}}}, {
            "regression": 0.0
        }
    if function == "CLASSIFICATION":
        item = {
            "type": "object",
            "properties": {"label": {"type": "string"}, "probability": {"type": "number"}},
            "required": ["label", "probability"],
        }
        shown = labels[:2] or ["1", "0"]
        example = {"classifications": [{"label": label, "probability": round(1 / len(shown), 3)} for label in shown]}
        return {"type": "object", "properties": {"classifications": {"type": "array", "items": item}}}, example
    if function == "CLUSTERING":
        item = {
            "type": "object",
            "properties": {
                "clusterId": {"type": "string"},
                "probability": {"type": "number"},
                "distance": {"type": "number", "description": "pyqd extension: distance to the cluster's centre"},
            },
            "required": ["clusterId", "probability"],
        }
        return {"type": "object", "properties": {"clusters": {"type": "array", "items": item}}}, {
            "clusters": [{"clusterId": "0", "probability": 1.0}]
        }
    weights = {"type": "array", "items": {"type": "number", "nullable": True}}
    return {"type": "object", "properties": {"doubleWeights": weights}}, {"doubleWeights": [0.0]}


def endpoint_document(d: DeploymentInfo, server_url: str) -> dict[str, Any]:
    """The document; `server_url` is the service's base (`https://host/omlmod/v1`)."""
    m = d.model
    metadata = m.metadata
    properties: dict[str, Any] = {}
    record: dict[str, Any] = {}
    for attribute in metadata.get("attributes", []):
        properties[attribute["name"]], record[attribute["name"]] = _attribute_schema(attribute)
    function = metadata.get("miningFunction", "REGRESSION")
    result, result_example = _result_schema(function, list(metadata.get("labels") or []))
    error = {
        "description": "An error",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            }
        },
    }
    request_example = {"inputRecords": [record]}
    answer_example = {"scoringResults": [result_example]}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{m.name} {m.version} — scoring endpoint {d.uri}",
            "version": m.version,
            "description": f"Scores the {m.model_type} model {m.name} ({function.lower()}). Send one record per row "
            "in inputRecords; the answer has one scoringResults entry per row, in order. Authenticate with a "
            "bearer token (OAuth2 client credentials at /oauth/token, or the OML token endpoint).",
        },
        "servers": [{"url": server_url}],
        "security": [{"BearerAuth": []}],
        "paths": {
            f"/deployment/{d.uri}/score": {
                "post": {
                    "operationId": f"score_{d.uri}",
                    "summary": f"Score with {m.name} {m.version}",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ScoreRequest"},
                                "example": request_example,
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "One result per input row, in order",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ScoringOutputResultSet"},
                                    "example": answer_example,
                                }
                            },
                        },
                        "400": error,
                        "401": error,
                        "404": error,
                        "500": error,
                    },
                }
            }
        },
        "components": {
            "securitySchemes": {"BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "InputRecord": {"type": "object", "properties": properties, "additionalProperties": False},
                "ScoreRequest": {
                    "type": "object",
                    "required": ["inputRecords"],
                    "properties": {
                        "inputRecords": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/components/schemas/InputRecord"},
                        },
                        "topN": {"type": "integer", "minimum": 0},
                    },
                },
                "ScoringResult": result,
                "ScoringOutputResultSet": {
                    "type": "object",
                    "required": ["scoringResults"],
                    "properties": {
                        "scoringResults": {"type": "array", "items": {"$ref": "#/components/schemas/ScoringResult"}}
                    },
                },
            },
        },
    }
