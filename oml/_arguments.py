"""How the apply functions send what is not JSON: keyword arguments that are Python objects (a fitted model, a
DataFrame, a proxy), functions without usable source (lambdas, closures, functions defined in a notebook), and
Oracle's `func_value` prototype.

Objects and such functions are cloudpickled into the call (base64 body fields `pickledKwargs`, `pickledFunc`);
the server passes them on unread and only the caller's own worker loads them. JSON values stay in `parameters`,
as Oracle's REST API sends them, and functions with source travel as source (robust across Python versions)."""

from __future__ import annotations

import base64
import datetime as dt
import inspect
import math
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from oml.script import SCRIPT_NAME_RE

#: Most bytes of pickled data a call may send (the server's limit, engines.extensions.MAX_PICKLED_BYTES).
MAX_PICKLED_BYTES = 32 * 1024 * 1024


def is_json(value: Any) -> bool:
    """Whether `value` travels as JSON unchanged: None, bool, int, finite float, str, and lists and dicts (str
    keys) of those. Anything else (a tuple, a NumPy number, a model) is pickled, so the function gets it as it was."""
    try:
        return _is_json(value)
    except RecursionError:
        return False


def _is_json(v: Any) -> bool:
    if v is None or type(v) in (bool, str, int):
        return True
    if type(v) is float:
        return math.isfinite(v)
    if type(v) is list:
        return all(_is_json(x) for x in v)
    if type(v) is dict:
        return all(type(k) is str and _is_json(x) for k, x in v.items())
    return False


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the JSON keyword arguments and `oml_*` controls, the others cloudpickled as base64 or None)."""
    plain = {k: v for k, v in kwargs.items() if k.startswith("oml_") or is_json(v)}
    objects = {k: v for k, v in kwargs.items() if k not in plain}
    return plain, (_pickle(objects, "keyword arguments") if objects else None)


def function_fields(func: Any) -> dict[str, Any]:
    """The body fields of a function run without a repository entry: `script` (its source) and `name`, or
    `pickledFunc` when source cannot carry it (a lambda, a closure, no source, or a notebook function that uses
    the notebook's globals)."""
    if isinstance(func, str):
        return {"script": func}
    name = getattr(func, "__name__", "")
    name = name if SCRIPT_NAME_RE.fullmatch(name) else "func"
    if isinstance(func, types.FunctionType) and not _needs_pickle(func):
        try:
            return {"script": textwrap.dedent(inspect.getsource(func)), "name": name}
        except (OSError, TypeError):
            pass
    if not callable(func):
        raise TypeError("func must be a function, a string holding a function definition, or an oml.script.Callable")
    return {"pickledFunc": _pickle(func, "function"), "name": name}


def _needs_pickle(func: types.FunctionType) -> bool:
    if func.__name__ == "<lambda>" or func.__closure__:
        return True
    if func.__module__ == "__main__":  # a notebook's function: its source alone cannot see the notebook's names
        return any(name in func.__globals__ for name in _names(func.__code__))
    return False


def _names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _pickle(obj: Any, what: str) -> str:
    import cloudpickle

    try:
        data = cloudpickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - whatever refuses to pickle
        raise TypeError(f"the {what} cannot be pickled to send to the server: {type(e).__name__}: {e}") from None
    if len(data) > MAX_PICKLED_BYTES:
        raise ValueError(
            f"the pickled {what} are {len(data) / 2**20:.1f} MiB; a call may send at most "
            f"{MAX_PICKLED_BYTES // 2**20} MiB. Save large objects in a datastore (oml.ds.save) and load them "
            "inside the function (oml.ds.load)"
        )
    return base64.b64encode(data).decode()


def func_value_field(prototype: Any) -> dict[str, Any]:
    """The `funcValue` field for Oracle's `func_value`: a pandas DataFrame whose columns (names and dtypes) the
    result takes, or a dict of column name → type (`integer`, `float`, `text`, ... or Oracle's NUMBER, ...)."""
    if isinstance(prototype, dict):
        return {"columns": {str(k): str(v) for k, v in prototype.items()}}
    if isinstance(prototype, pd.DataFrame):
        return {"columns": {str(name): _kind(prototype[name], str(name)) for name in prototype.columns}}
    raise TypeError("func_value must be a pandas.DataFrame prototype (or a dict of column name → type)")


def _kind(col: pd.Series, name: str) -> str:
    t = col.dtype
    if pd.api.types.is_bool_dtype(t):
        return "boolean"
    if pd.api.types.is_integer_dtype(t):
        return "integer"
    if pd.api.types.is_float_dtype(t):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(t):
        return "timestamptz" if getattr(t, "tz", None) is not None else "timestamp"
    sample = next((v for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))), None)
    if isinstance(sample, bool | np.bool_):
        return "boolean"
    if isinstance(sample, int | np.integer):
        return "integer"
    if isinstance(sample, float | np.floating):
        return "float"
    if isinstance(sample, dt.datetime):
        return "timestamptz" if sample.tzinfo is not None else "timestamp"
    if isinstance(sample, dt.date):
        return "date"
    if sample is None or isinstance(sample, str):
        return "text"
    raise TypeError(f"func_value column {name!r} holds {type(sample).__name__} values, which no table column stores")
