"""Reading an OML execution request body (reference §3.2, §4) into plain, validated values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from engines.errors import InvalidApplyRequest
from engines.protocol import InputType, Kind

#: Most parallel workers each service level may use (Oracle: LOW 2, MEDIUM 4, HIGH 8). TP runs serially.
SERVICE_DOP = {"LOW": 2, "MEDIUM": 4, "HIGH": 8, "TP": 1, "TPURGENT": 8}
INPUT_TYPES: tuple[str, ...] = ("default", "pandas.DataFrame", "numpy.recarray")
#: Bounds on `rows` and `times`.
MAX_ROWS = 100_000_000
MAX_TIMES = 1_000_000
#: The verbs as they appear in URLs.
VERBS: dict[str, Kind] = {
    "do-eval": "eval",
    "table-apply": "table",
    "row-apply": "row",
    "group-apply": "group",
    "index-apply": "index",
}


@dataclass(frozen=True)
class ApplyRequest:
    kind: Kind
    #: Keyword arguments for the user's function (the non-`oml_` keys of `parameters`).
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_type: InputType = "default"
    na_omit: bool = False
    graphics: bool = False
    input: str | None = None
    rows: int | None = None
    #: Column names as written in the request (the gate applies Oracle's case rules).
    group_by: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    times: int | None = None
    parallel: bool = False
    requested_dop: int | None = None
    service: str = "LOW"
    async_flag: bool = False
    timeout: int | None = None
    #: pyqd extension `resultFormat`: "json" (OML's) or "pickle" (the Python client's).
    result_format: str = "json"

    def degree_of_parallelism(self, pool_size: int) -> int:
        """Workers to use: 1 unless parallel; else `parallel` (or the service default), capped by the
        service level and the pool."""
        if not self.parallel:
            return 1
        cap = SERVICE_DOP[self.service]
        return max(1, min(self.requested_dop or cap, cap, pool_size))


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidApplyRequest(f"{key} must be true or false")


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidApplyRequest(f"{key} must be an integer")
    if not low <= value <= high:
        raise InvalidApplyRequest(f"{key} must be between {low} and {high}")
    return value


def _columns(body: dict[str, Any], key: str) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        raise InvalidApplyRequest(f"{key} must be a comma-separated list of column names")
    cols = tuple(p.strip() for p in parts if p.strip())
    if not cols:
        raise InvalidApplyRequest(f"{key} names no column")
    return cols


def parameters(body: dict[str, Any]) -> dict[str, Any]:
    """`parameters` (or OML's doc-typo `parameter`): a JSON string holding an object (an object is accepted too)."""
    raw = body.get("parameters", body.get("parameter"))
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidApplyRequest(f"parameters must be a JSON object encoded as a string: {e}") from None
    if not isinstance(raw, dict):
        raise InvalidApplyRequest('parameters must be a JSON object encoded as a string, e.g. "{\\"num\\":10}"')
    return raw


def parse_request(kind: Kind, body: dict[str, Any]) -> ApplyRequest:
    """Validate an execution request body for one verb; InvalidApplyRequest says what is wrong."""
    params = parameters(body)
    controls = {k: v for k, v in params.items() if k.startswith("oml_")}
    kwargs = {k: v for k, v in params.items() if not k.startswith("oml_")}
    input_type = controls.get("oml_input_type", "default")
    if input_type not in INPUT_TYPES:
        raise InvalidApplyRequest(f"oml_input_type must be one of {', '.join(INPUT_TYPES)}")
    # First-class body fields win over their oml_* twins inside parameters (reference §4).
    merged = {
        "graphicsFlag": controls.get("oml_graphics_flag"),
        "parallelFlag": controls.get("oml_parallel_flag"),
        "service": controls.get("oml_service_level"),
        "asyncFlag": controls.get("oml_async_flag"),
    }
    merged.update({k: v for k, v in body.items() if v is not None})
    service = merged.get("service") or "LOW"
    if not isinstance(service, str) or service.upper() not in SERVICE_DOP:
        raise InvalidApplyRequest(f"service must be one of {', '.join(SERVICE_DOP)}")
    if body.get("envName"):
        raise InvalidApplyRequest("envName is not supported: pyqd runs scripts in the server's Python environment")
    req: dict[str, Any] = {}
    if kind in ("table", "row", "group"):
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise InvalidApplyRequest("input (a SQL query) is required")
        req["input"] = text
    if kind == "row":
        req["rows"] = _int(body, "rows", 1, MAX_ROWS)
        if req["rows"] is None:
            raise InvalidApplyRequest("rows is required for row-apply")
    if kind == "group":
        req["group_by"] = _columns(body, "groupBy")
        if not req["group_by"]:
            raise InvalidApplyRequest("groupBy is required for group-apply")
        req["order_by"] = _columns(body, "orderBy")
    if kind == "index":
        req["times"] = _int(body, "times", 1, MAX_TIMES)
        if req["times"] is None:
            raise InvalidApplyRequest("times is required for index-apply")
    dop = merged.get("parallel")
    requested = None
    if isinstance(dop, bool):
        parallel = dop or _bool(merged, "parallelFlag")
    else:
        requested = _int(merged, "parallel", 1, 1024)
        parallel = _bool(merged, "parallelFlag") or (requested or 0) > 1
    result_format = body.get("resultFormat") or "json"
    if result_format not in ("json", "pickle"):
        raise InvalidApplyRequest("resultFormat must be json or pickle")
    return ApplyRequest(
        result_format=result_format,
        kind=kind,
        kwargs=kwargs,
        input_type=input_type,
        na_omit=_bool(controls, "oml_na_omit"),
        graphics=_bool(merged, "graphicsFlag"),
        parallel=parallel,
        requested_dop=requested,
        service=service.upper(),
        async_flag=_bool(merged, "asyncFlag"),
        timeout=_int(body, "timeout", 1, 43200),
        **req,
    )
