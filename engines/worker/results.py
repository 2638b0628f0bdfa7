"""Rendering a function's return value as JSON, the way OML's REST API shows it."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from typing import Any

import numpy as np
import orjson
import pandas as pd

from engines.serialize import frame_to_json

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC


class NotSerializable(TypeError):
    """The value (or something inside it) has no JSON rendering."""


def render(value: Any) -> tuple[bytes, bool, int]:
    """(JSON bytes, whether it was a DataFrame, its length for the output limit)."""
    if isinstance(value, pd.DataFrame):
        return frame_to_json(value), True, len(value)
    return _dumps(value), False, _length(value)


def pickled(value: Any) -> tuple[bytes, bool, int]:
    """The value itself, pickled, for the Python client (which unpickles what its own user's code made)."""
    import cloudpickle

    try:
        return cloudpickle.dumps(value), isinstance(value, pd.DataFrame), _length(value)
    except Exception as e:  # noqa: BLE001 - anything pickle refuses
        raise NotSerializable(f"The function's value cannot be pickled: {type(e).__name__}: {e}") from None


def _length(value: Any) -> int:
    if isinstance(value, list | tuple | dict | pd.Series | np.ndarray):
        return len(value)
    return 1


def _default(obj: Any) -> Any:
    if isinstance(obj, pd.DataFrame):
        return orjson.Fragment(frame_to_json(obj))
    if isinstance(obj, pd.Series):
        return orjson.Fragment(obj.to_json(orient="values", date_format="iso", double_precision=10))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):  # non-native dtypes (object, datetime64, ...)
        return obj.tolist()
    if isinstance(obj, pd.Timestamp):
        return None if pd.isna(obj) else obj.isoformat()
    if obj is pd.NaT or obj is pd.NA:
        return None
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise NotSerializable(type(obj).__qualname__)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as e:
        if isinstance(e.__cause__, NotSerializable):
            raise NotSerializable(
                f"The function returned a value that cannot be rendered as JSON (it contains a {e.__cause__}). "
                "Return a DataFrame, dict, list, str, number or bool; convert other objects first "
                "(e.g. a fitted model's attributes to a dict)"
            ) from None
        raise NotSerializable(f"The function's value cannot be rendered as JSON: {e}") from None


# -- func_value: the rows of a result table ---------------------------------------------------------------------
#: What a function may return when the call has a func_value prototype (Oracle's relational output).
ROWS_HINT = "a pandas.DataFrame, a numpy.ndarray, a tuple (one row) or a list of tuples"


def conform(value: Any, columns: list[tuple[str, str]]) -> pd.DataFrame:
    """The function's value as a DataFrame with the prototype's columns (matched by name when a DataFrame has
    the same names, else by position, and named as the prototype names them) and types: integers rounded half
    away from zero (as Oracle stores a number in an integer column), text as str, timestamps parsed.
    NotSerializable says what does not fit."""
    names = [n for n, _ in columns]
    if value is None:
        df = pd.DataFrame({n: [] for n in names})
    elif isinstance(value, pd.DataFrame):
        df = value.reset_index(drop=True)
    elif isinstance(value, np.ndarray):
        array = value.reshape(1, -1) if value.ndim == 1 else value
        if array.ndim != 2:
            raise NotSerializable(f"With func_value the function returned a {value.ndim}-dimensional array")
        df = pd.DataFrame(list(array))
    elif isinstance(value, tuple):
        df = pd.DataFrame([value])
    elif isinstance(value, list) and all(isinstance(r, tuple | list) for r in value):
        df = pd.DataFrame([tuple(r) for r in value]) if value else pd.DataFrame({n: [] for n in names})
    else:
        raise NotSerializable(f"With func_value the function must return {ROWS_HINT}, not a {type(value).__name__}")
    if len(df.columns) != len(names):
        raise NotSerializable(
            f"func_value has {len(names)} columns ({', '.join(names)}); the function returned {len(df.columns)}"
        )
    if isinstance(value, pd.DataFrame) and sorted(map(str, df.columns)) == sorted(names):
        df = df.set_axis(list(map(str, df.columns)), axis=1)[names]  # the same names: matched by name
    out = {}
    for (name, kind), col in zip(columns, (df.iloc[:, i] for i in range(len(names))), strict=True):
        try:
            out[name] = _cast(col, kind)
        except (ValueError, TypeError, OverflowError) as e:
            raise NotSerializable(f"Column {name} of the result does not fit func_value's {kind} column: {e}") from None
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _cast(col: pd.Series, kind: str) -> pd.Series:
    if kind in ("integer", "float"):
        numbers = pd.to_numeric(col.astype(object).where(col.notna(), None)).astype("float64")
        if kind == "float":
            return numbers
        rounded = np.sign(numbers) * np.floor(np.abs(numbers) + 0.5)
        return rounded.astype("Int64")
    if kind == "boolean":
        return col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else bool(v))
    if kind == "text":
        return col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))
    mixed = None if pd.api.types.is_datetime64_any_dtype(col) else "mixed"
    if kind == "timestamptz":
        return pd.to_datetime(col, utc=True, format=mixed)
    stamps = pd.to_datetime(col, format=mixed)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.dt.normalize() if kind == "date" else stamps


def columnar(df: pd.DataFrame, columns: list[tuple[str, str]]) -> bytes:
    """A conformed frame as one JSON object of column lists, exact (no rounding of floats), nulls as null:
    the server reads it with a JSON parser and writes it to the result table."""
    data: dict[str, list[Any]] = {}
    for name, kind in columns:
        col = df[name]
        present = col.notna().to_numpy()
        if kind == "timestamp":
            values = col.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").tolist()
        elif kind == "timestamptz":
            values = col.dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00").tolist()
        elif kind == "date":
            values = col.dt.strftime("%Y-%m-%d").tolist()
        elif kind == "integer":
            values = [int(v) if ok else None for v, ok in zip(col.tolist(), present, strict=True)]
        else:
            values = col.tolist()
        data[name] = [v if ok else None for v, ok in zip(values, present, strict=True)]
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
