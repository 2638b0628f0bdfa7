"""`oml.services`: OML Services from Python: store a fitted model, deploy it at a uri, score records with it.

import oml
from oml import services
oml.connect(url="http://127.0.0.1:8000", username="OML_USER", password="...")
services.deploy_model(regr, name="regr", uri="regr")      # a fitted estimator, pickled here
services.score("regr", X_test)                             # a DataFrame in, a DataFrame out

Each function is one REST call of Oracle's OML Services API (`/omlmod/v1`, docs/models.md has the table).
Errors raise the `oml` error classes with the server's message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pandas as pd

from oml import _connection

#: OML Services' base path.
OMLMOD = "/omlmod/v1"
#: File suffixes stored as ONNX unless `type` says otherwise; other files are PYTHON pickles.
ONNX_SUFFIXES = (".onnx", ".zip")
MODEL_COLUMNS = [
    "modelId",
    "modelName",
    "version",
    "namespace",
    "modelType",
    "shared",
    "createdBy",
    "storedOn",
    "description",
]
DEPLOYMENT_COLUMNS = [
    "uri",
    "modelId",
    "modelName",
    "version",
    "namespace",
    "modelType",
    "shared",
    "createdBy",
    "deployedBy",
    "deployedOn",
    "description",
]


def _call(method: str, path: str, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> httpx.Response:
    """An authenticated request; an error answer (`{"code", "message"}`) raises the matching oml error."""
    return _connection.current().request(method, path, ok=ok, **kwargs)


def _model_bytes(model: Any, type: str | None) -> tuple[bytes, str, str]:  # noqa: A002 - the API's name
    """(the bytes to upload, their file name, the model type) for a path, bytes, an ONNX proto or an estimator."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        kind = type or ("ONNX" if path.suffix.lower() in ONNX_SUFFIXES else "PYTHON")
        return path.read_bytes(), path.name, kind
    if isinstance(model, bytes | bytearray):
        return bytes(model), "model", type or "PYTHON"
    if callable(getattr(model, "SerializeToString", None)) and type in (None, "ONNX", "ONNX_IMG"):
        return model.SerializeToString(), "model.onnx", type or "ONNX"  # an onnx.ModelProto
    import cloudpickle  # classes defined in a notebook travel by value

    return cloudpickle.dumps(model), "model.pkl", type or "PYTHON"


def store_model(
    model: Any,
    name: str,
    version: str = "1.0",
    type: str | None = None,  # noqa: A002 - the API's name
    namespace: str | None = None,
    description: str | None = None,
    shared: bool = False,
) -> str:
    """Store a model (storeModel) and return its modelId. `model` is a fitted estimator (pickled here, stored as
    PYTHON), a file path (`.onnx`/`.zip` stored as ONNX, else PYTHON) or the bytes of one; `type` overrides."""
    data, filename, kind = _model_bytes(model, type.upper() if type else None)
    fields = {"modelName": name, "version": version, "modelType": kind, "shared": "true" if shared else "false"}
    if namespace:
        fields["namespace"] = namespace
    if description is not None:
        fields["description"] = description
    files = {"modelData": (filename, data, "application/octet-stream")}
    return str(_call("POST", f"{OMLMOD}/models", data=fields, files=files).json()["modelId"])


def deploy(model_id: str, uri: str) -> dict[str, Any]:
    """Create a scoring endpoint at `uri` for a stored model (createEndpoint): `{"modelId", "uri", ...}`."""
    return dict(_call("POST", f"{OMLMOD}/deployment", json={"modelId": model_id, "uri": uri}).json())


def deploy_model(
    model: Any,
    name: str,
    uri: str,
    version: str = "1.0",
    type: str | None = None,  # noqa: A002 - the API's name
    namespace: str | None = None,
    description: str | None = None,
    shared: bool = False,
) -> dict[str, Any]:
    """Store a model and deploy it at `uri` in one go (the model is deleted again if the deploy fails)."""
    model_id = store_model(model, name, version, type, namespace, description, shared)
    try:
        return deploy(model_id, uri)
    except Exception:
        delete_model(model_id)
        raise


def score(uri: str, records: pd.DataFrame | list[dict[str, Any]], top_n: int | None = None) -> Any:
    """Score records with the endpoint at `uri` (scoreModel): a list of dicts gives the `scoringResults` list; a
    DataFrame gives a DataFrame on its index (`regression`; `label`/`probability` of the top class with the whole
    `classifications` list; `clusterId`/`probability` with `clusters`)."""
    frame = records if isinstance(records, pd.DataFrame) else None
    rows = frame.to_dict("records") if frame is not None else list(records)
    body: dict[str, Any] = {"inputRecords": rows}
    if top_n is not None:
        body["topN"] = top_n
    # orjson sends NaN as null (missing) and numpy scalars as numbers
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    path = f"{OMLMOD}/deployment/{quote(uri, safe='')}/score"
    results = _call("POST", path, content=content, headers={"Content-Type": "application/json"}).json()[
        "scoringResults"
    ]
    if frame is None:
        return results
    return pd.DataFrame([_flat(r) for r in results], index=frame.index)


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    """One result as columns: its plain values, and of each list its first (most probable) entry's values."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.update(value[0])
        out[key] = value
    return out


def _filters(name: str | None, version: str | None, namespace: str | None) -> dict[str, str]:
    given = {"modelName": name, "version": version, "namespace": namespace}
    return {k: v for k, v in given.items() if v is not None}


def list_models(name: str | None = None, version: str | None = None, namespace: str | None = None) -> pd.DataFrame:
    """The models you see, yours and shared ones (getAllModels), one row each."""
    items = _call("GET", f"{OMLMOD}/models", params=_filters(name, version, namespace)).json()["items"]
    return pd.DataFrame(items, columns=MODEL_COLUMNS)


def list_deployments(name: str | None = None, version: str | None = None, namespace: str | None = None) -> pd.DataFrame:
    """The endpoints you see (getDeploymentEndpoints), one row each."""
    items = _call("GET", f"{OMLMOD}/deployment", params=_filters(name, version, namespace)).json()["items"]
    return pd.DataFrame(items, columns=DEPLOYMENT_COLUMNS)


def model_info(model_id: str) -> dict[str, Any]:
    """A model's information (getModelById)."""
    return dict(_call("GET", f"{OMLMOD}/models/{quote(model_id, safe='')}").json())


def model_metadata(model_id: str) -> dict[str, Any]:
    """A model's metadata (getMetadata): miningFunction, algorithm, attributes, labels, ..."""
    return dict(_call("GET", f"{OMLMOD}/models/{quote(model_id, safe='')}/metadata").json())


def model_content(model_id: str) -> bytes:
    """A model's bytes, as stored (getModelContent)."""
    return _call("GET", f"{OMLMOD}/models/{quote(model_id, safe='')}/content").content


def set_namespace(model_id: str, namespace: str) -> None:
    """Move a model of yours to another namespace (updateNamespace)."""
    _call("POST", f"{OMLMOD}/models/{quote(model_id, safe='')}", json={"namespace": namespace})


def endpoint(uri: str) -> dict[str, Any]:
    """An endpoint with its model's metadata (getEndpointByUri)."""
    return dict(_call("GET", f"{OMLMOD}/deployment/{quote(uri, safe='')}").json())


def endpoint_api(uri: str) -> dict[str, Any]:
    """The endpoint's OpenAPI 3.0 document (getModelAPI)."""
    return dict(_call("GET", f"{OMLMOD}/deployment/{quote(uri, safe='')}/api").json())


def undeploy(uri: str) -> None:
    """Remove the endpoint at `uri` (deleteEndpointByUri); the model stays stored."""
    _call("DELETE", f"{OMLMOD}/deployment/{quote(uri, safe='')}")


def delete_model(model_id: str) -> None:
    """Delete a stored model (deleteModelByID); undeploy it first."""
    _call("DELETE", f"{OMLMOD}/models/{quote(model_id, safe='')}")
