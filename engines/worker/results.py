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
