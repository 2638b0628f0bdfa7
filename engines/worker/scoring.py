"""Scoring in a worker: load a stored model once (ONNX with onnxruntime, PYTHON by unpickling it, here in the
sandbox and never in the server), then score OML Services' `{"inputRecords": [...], "topN": n}` bodies into
`{"scoringResults": [...]}`, one entry per input row, in order.

An input record maps each model input (an attribute) to a value. A value is a JSON number or a string (APEX sends
page items as strings, Oracle's examples send "NaN"), coerced to the input's type; an absent or null value is
missing (NaN for numbers). Oracle's tensor form is accepted too: the value of an input is then the input's tensor
with its batch dimension (`{"age": [["35"]]}`, `{"float_input": [[1.0, 2.0, ...]]}`), and a record holding
several rows gives several results. Anything that cannot be coerced is refused with a message naming the record
and the attribute (`BadInput`, a 400 for the caller).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

#: Most input rows one score request may carry.
MAX_ROWS = 1_000_000


class BadInput(Exception):
    """The request does not fit the model (the caller's fault: 400)."""


class ModelFailed(Exception):
    """The model raised while scoring, or answered something that cannot be read (400, naming the error)."""


class ModelUnreadable(Exception):
    """The stored bytes are not a model of the declared type (400 when storing)."""


#: How a value is coerced: attributeType → kind.
FLOAT_TYPES = {"FLOAT": np.float32, "DOUBLE": np.float64, "NUMERICAL": np.float64, "FLOAT16": np.float16}
INT_TYPES = {
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
STRING_TYPES = {"STRING", "CATEGORICAL", "TEXT"}


@dataclass(frozen=True)
class Attribute:
    """One model input as a caller names it."""

    name: str
    #: OML Services' attributeType (FLOAT, DOUBLE, INT64, STRING, BOOL; NUMERICAL, CATEGORICAL for PYTHON).
    attribute_type: str
    #: The input's shape without the batch dimension: () for one value per row; (4,) for a row of 4 features;
    #: (3, 224, 224) for an image.
    shape: tuple[int, ...] = ()

    @property
    def dtype(self) -> Any:
        if self.attribute_type in FLOAT_TYPES:
            return FLOAT_TYPES[self.attribute_type]
        if self.attribute_type in INT_TYPES:
            return INT_TYPES[self.attribute_type]
        if self.attribute_type == "BOOL":
            return np.bool_
        return object

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "attributeType": self.attribute_type}
        if self.shape:
            out["shape"] = [-1, *self.shape]
        return out


class LoadedModel(Protocol):
    attributes: list[Attribute]
    #: OML Services' ModelMetadata, without modelName (the server adds it).
    metadata: dict[str, Any]

    def score(self, columns: dict[str, np.ndarray], rows: int, top_n: int | None) -> list[dict[str, Any]]:
        """One scoring result per row, from one array per attribute (rows first)."""
        ...


# -- the messages ---------------------------------------------------------------------------------------
_loaded: dict[tuple[str, str], LoadedModel] = {}
#: Models kept loaded at once (a worker serves one model; the in-process twin serves several).
KEEP_LOADED = 4


def load(kind: str, digest: str, data: bytes) -> dict[str, Any]:
    """Load a model (kept for later score requests); its metadata. ModelUnreadable when it is not one."""
    _loaded.pop((kind, digest), None)
    model = _read(kind, data)
    while len(_loaded) >= KEEP_LOADED:
        _loaded.pop(next(iter(_loaded)))
    _loaded[kind, digest] = model
    import gc

    gc.collect()
    gc.freeze()  # the libraries' and the model's objects: scoring's many small allocations no longer rescan them
    return model.metadata


def _read(kind: str, data: bytes) -> LoadedModel:
    if kind in ("ONNX", "ONNX_IMG"):
        from engines.worker.onnx_model import OnnxModel

        return OnnxModel(data, image=kind == "ONNX_IMG")
    if kind == "PYTHON":
        from engines.worker.python_model import PythonModel

        return PythonModel(data)
    raise ModelUnreadable(f"unknown model type {kind}")


def score(kind: str, digest: str, body: bytes, images: list[bytes] | None = None) -> bytes:
    """Score a request body against the loaded model: `{"scoringResults": [...]}` as JSON bytes."""
    model = _loaded.get((kind, digest))
    if model is None:
        raise ModelUnreadable("the model is not loaded")
    records, top_n = parse_request(body, images, model)
    columns, rows = to_columns(records, model.attributes, getattr(model, "decode_image", None))
    try:
        results = model.score(columns, rows, top_n)
    except (BadInput, ModelFailed):
        raise
    except Exception as e:  # noqa: BLE001 - whatever the model raises is reported, never raised
        raise ModelFailed(f"the model failed: {type(e).__name__}: {e}") from None
    if len(results) != rows:
        raise ModelFailed(f"the model returned {len(results)} results for {rows} rows")
    return orjson.dumps({"scoringResults": results}, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_request(
    body: bytes, images: list[bytes] | None, model: LoadedModel
) -> tuple[list[dict[str, Any]], int | None]:
    """The input records and topN of a score request (or of an uploaded image, for image models)."""
    if images is not None:
        if len(model.attributes) != 1:
            raise BadInput("imageData needs a model with one image input")
        return [{model.attributes[0].name: image} for image in images], None
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadInput(f"the body is not JSON: {e}") from None
    if not isinstance(request, dict):
        raise BadInput("the body must be a JSON object with inputRecords")
    records = request.get("inputRecords")
    if not isinstance(records, list):
        raise BadInput("inputRecords is required: a list of records (attribute name → value)")
    if not records:
        raise BadInput("inputRecords is empty: send at least one record")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadInput(f"inputRecords[{i}] is not an object of attribute name → value")
    top_n = _count(request, "topN")
    details = _count(request, "topNdetails")
    if details:
        raise BadInput("topNdetails: prediction details are available for OML models only, not ONNX or PYTHON")
    return records, top_n or None


def _count(request: dict[str, Any], key: str) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"{key} must be a whole number of at least 1")
    return value


# -- coercion -------------------------------------------------------------------------------------------
def to_columns(
    records: list[dict[str, Any]],
    attributes: list[Attribute],
    decode_image: Callable[[Any, Attribute], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """One array per attribute (rows first), and the number of rows."""
    fast = _plain_columns(records, attributes)
    if fast is not None:
        return fast, len(records)
    known = {a.name for a in attributes}
    by_upper = {a.name.upper(): a.name for a in attributes}
    values: dict[str, list[Any]] = {a.name: [] for a in attributes}
    rows = 0
    for i, record in enumerate(records):
        if len(record) > len(known) or not known.issuperset(record):
            record = _rename(record, i, known, by_upper)
        n = _rows_in(record, attributes, i)
        for a in attributes:
            value = record.get(a.name)
            where = f"inputRecords[{i}].{a.name}"
            if value is None:
                values[a.name].extend(_missing(a, where) for _ in range(n))
            elif a.shape:
                values[a.name].extend(_tensor_rows(value, a, where, n, decode_image))
            elif isinstance(value, list):
                flat = _column_rows(value, where, n)
                values[a.name].extend(_coerce(v, a, f"{where}[{j}]") for j, v in enumerate(flat))
            elif n == 1:
                values[a.name].append(_coerce(value, a, where))
            else:
                raise BadInput(f"{where}: one value, but the record's other inputs hold {n} rows")
        rows += n
        if rows > MAX_ROWS:
            raise BadInput(f"more than {MAX_ROWS} input rows in one request")
    columns = {}
    for a in attributes:
        column = values[a.name]
        if a.shape:
            columns[a.name] = np.stack(column) if column else np.empty((0, *a.shape), dtype=a.dtype)
        else:
            columns[a.name] = np.array(column, dtype=a.dtype)
    return columns, rows


def _plain_columns(records: list[dict[str, Any]], attributes: list[Attribute]) -> dict[str, np.ndarray] | None:
    """The common case without per-value work: every record names exactly the attributes, every value a JSON
    number for a float input. None when anything else is seen (the general path then coerces and explains)."""
    if not attributes or any(a.shape or a.attribute_type not in FLOAT_TYPES for a in attributes):
        return None
    known = {a.name for a in attributes}
    if not all(r.keys() == known for r in records):
        return None
    columns = {}
    for a in attributes:
        name = a.name
        values = [r[name] for r in records]
        if not all(type(v) is float or type(v) is int for v in values):
            return None
        columns[name] = np.array(values, dtype=a.dtype)
    return columns


def _rename(record: dict[str, Any], i: int, known: set[str], by_upper: dict[str, str]) -> dict[str, Any]:
    """The record with its names matched to the attributes (ignoring case, as OML's columns are upper case);
    BadInput naming the first that is no input of the model."""
    out = {}
    for key, value in record.items():
        name = key if key in known else by_upper.get(str(key).upper())
        if name is None:
            raise BadInput(
                f"inputRecords[{i}].{str(key)[:100]}: the model has no such input; its inputs are "
                + ", ".join(sorted(known))[:2000]
            )
        out[name] = value
    return out


def _rows_in(record: dict[str, Any], attributes: list[Attribute], i: int) -> int:
    """How many rows a record holds: 1, or the batch size of Oracle's tensor form (the same for every input)."""
    n = None
    for a in attributes:
        value = record.get(a.name)
        if not isinstance(value, list):
            continue
        if a.shape:
            if _depth(value) <= len(a.shape):
                continue  # one row without its batch dimension
            count = len(value)
        else:
            count = len(value)
        if n is not None and count != n:
            raise BadInput(f"inputRecords[{i}]: its inputs hold different numbers of rows ({n} and {count})")
        n = count
    if n == 0:
        raise BadInput(f"inputRecords[{i}]: an input holds no rows")
    return 1 if n is None else n


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        depth += 1
        value = value[0]
    return depth + (1 if isinstance(value, list) else 0)


def _column_rows(value: list[Any], where: str, n: int) -> list[Any]:
    """Oracle's `[["3"], ["1"]]` (or `["3", "1"]`): one value per row."""
    out = []
    for j, row in enumerate(value):
        if isinstance(row, list):
            if len(row) != 1:
                raise BadInput(f"{where}[{j}]: one value per row expected, got {len(row)}")
            row = row[0]
        out.append(row)
    return out


def _tensor_rows(
    value: Any, a: Attribute, where: str, n: int, decode_image: Callable[[Any, Attribute], np.ndarray] | None
) -> list[np.ndarray]:
    if isinstance(value, str):
        if decode_image is None:
            raise BadInput(f"{where}: a tensor of shape {list(a.shape)} expected, got a string")
        return [decode_image(value, a)]
    if isinstance(value, bytes) and decode_image is not None:
        return [decode_image(value, a)]
    try:
        array = np.asarray(value, dtype=np.float64 if a.dtype is object else a.dtype)
    except (ValueError, TypeError) as e:
        raise BadInput(f"{where}: not a tensor of {a.attribute_type} values: {str(e)[:200]}") from None
    if array.ndim == len(a.shape):
        array = array[np.newaxis]
    expected = tuple(d for d in a.shape)
    if array.ndim != len(expected) + 1 or any(d > 0 and d != s for d, s in zip(expected, array.shape[1:], strict=True)):
        raise BadInput(f"{where}: shape {list(array.shape)} does not fit the input's shape {[-1, *a.shape]}")
    return list(array)


def _missing(a: Attribute, where: str) -> Any:
    if a.shape:
        raise BadInput(f"{where} is required: the model's input is a tensor of shape {[-1, *a.shape]}")
    if a.attribute_type in FLOAT_TYPES:
        return math.nan
    if a.attribute_type in STRING_TYPES:
        return None if a.attribute_type == "CATEGORICAL" else ""
    raise BadInput(f"{where} is required: the model's input is {a.attribute_type}, which has no missing value")


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _coerce(value: Any, a: Attribute, where: str) -> Any:
    t = a.attribute_type
    if value is None:
        return _missing(a, where)
    if t in FLOAT_TYPES:
        if type(value) is float or type(value) is int:
            return value
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return math.nan
            if "_" not in text:  # Python's float() also reads "1_000"; a number in text does not
                try:
                    return float(text)
                except ValueError:
                    pass
        raise BadInput(f"{where}: {_show(value)} is not a number (the input is {t})")
    if t in STRING_TYPES:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        raise BadInput(f"{where}: {_show(value)} is not a text value (the input is {t})")
    if t in INT_TYPES:
        number: Any = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if type(number) is int:
            info = np.iinfo(INT_TYPES[t])  # type: ignore[type-var]
            if info.min <= number <= info.max:
                return number
            raise BadInput(f"{where}: {_show(value)} is out of range for {t}")
        raise BadInput(f"{where}: {_show(value)} is not a whole number (the input is {t})")
    if t == "BOOL":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise BadInput(f"{where}: {_show(value)} is not true or false (the input is BOOL)")
    raise BadInput(f"{where}: the model's input type {t} is not supported")


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode() if not isinstance(value, bytes) else "<bytes>"
    except TypeError:  # nested deeper than orjson renders
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


# -- results --------------------------------------------------------------------------------------------
def classifications(labels: list[str], probabilities: np.ndarray, top_n: int | None) -> list[dict[str, Any]]:
    """Per row: `{"classifications": [{label, probability}]}`, most probable first, cut to topN."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    k = len(labels) if top_n is None else min(top_n, len(labels))
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :k]
    probs = np.take_along_axis(matrix, order, axis=1).tolist()
    names = np.asarray(labels, dtype=object)[order].tolist()
    return [
        {"classifications": [{"label": n, "probability": p} for n, p in zip(ns, ps, strict=True)]}
        for ns, ps in zip(names, probs, strict=True)
    ]


def clusters_by_probability(ids: list[str], probabilities: np.ndarray, top_n: int | None) -> list[dict[str, Any]]:
    out = []
    k = len(ids) if top_n is None else min(top_n, len(ids))
    for row in np.asarray(probabilities, dtype=np.float64):
        order = np.argsort(-row, kind="stable")[:k]
        out.append({"clusters": [{"clusterId": ids[j], "probability": float(row[j])} for j in order]})
    return out


def clusters_by_distance(ids: list[str], distances: np.ndarray, top_n: int | None) -> list[dict[str, Any]]:
    """Per row: the clusters nearest first, each with its distance and, as OML's `probability`, its share of
    the inverse distances (1 for a row exactly at a centre)."""
    out = []
    k = len(ids) if top_n is None else min(top_n, len(ids))
    for row in np.abs(np.asarray(distances, dtype=np.float64)):
        if np.any(row == 0):
            weights = (row == 0).astype(np.float64)
        else:
            weights = 1.0 / row
        weights = weights / weights.sum()
        order = np.argsort(row, kind="stable")[:k]
        out.append(
            {
                "clusters": [
                    {"clusterId": ids[j], "probability": float(weights[j]), "distance": float(row[j])} for j in order
                ]
            }
        )
    return out


def regressions(values: np.ndarray) -> list[dict[str, Any]]:
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if flat.shape[1] != 1:
        raise ModelFailed(f"a regression answers one value per row, the model answered {flat.shape[1]}")
    return [{"regression": _number(v)} for v in flat[:, 0]]


def features(values: np.ndarray) -> list[dict[str, Any]]:
    array = np.asarray(values)
    key = "floatWeights" if array.dtype == np.float32 else "doubleWeights"
    flat = array.reshape(len(array), -1).astype(np.float64)
    return [{key: [_number(v) for v in row]} for row in flat]


def _number(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None
