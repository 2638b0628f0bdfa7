"""What reaches a worker beside the JSON keyword arguments of a call: the caller's pickled keyword arguments
(a fitted model, a DataFrame, a proxy), a pickled function (a lambda, a function defined in a notebook) and the
columns of a `func_value` prototype. They travel inside the task's keyword arguments under `oml_` keys, which
no caller can set through `parameters` (there `oml_*` keys are controls, never keyword arguments), as base64
text: the server only checks their size and passes them on.

Threat model: a pickle runs code when it is loaded. It is loaded here, in a worker of the caller's (a worker
serves one caller only, and a call of another owner's script runs on workers of its own for that caller and
owner), with the caller's rights through the bridge. So a pickle can do nothing its sender could not already do
by sending a function to `run/...`: it is the sender's own code, running as the sender. The server never loads
it, and no other user's worker ever receives it.

Standard library and cloudpickle only: this runs in workers, and the server imports its names."""

from __future__ import annotations

import base64
import binascii
import hashlib
import platform
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Keys of a task's keyword arguments that carry pyqd's extensions (never passed to the function).
PICKLED_KWARGS = "oml_pickled_kwargs"
PICKLED_FUNC = "oml_pickled_func"
FUNC_VALUE = "oml_func_value"
RESERVED = (PICKLED_KWARGS, PICKLED_FUNC, FUNC_VALUE)
#: Unpickled functions kept per worker process (a row-apply sends its function with every task).
FUNCTION_CACHE = 16

_functions: OrderedDict[str, Callable[..., Any]] = OrderedDict()


class ArgumentError(Exception):
    """A pickled argument could not be loaded in the worker."""


class Arguments:
    """A task's keyword arguments taken apart: those for the function, the pickled function (or None) and the
    func_value columns as (name, logical type) pairs (or None)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.plain = {k: v for k, v in kwargs.items() if k not in RESERVED}
        self.pickled_kwargs: str | None = kwargs.get(PICKLED_KWARGS)
        self.pickled_func: str | None = kwargs.get(PICKLED_FUNC)
        value = kwargs.get(FUNC_VALUE)
        self.func_value: list[tuple[str, str]] | None = None if value is None else [(n, t) for n, t in value]

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the function: the JSON ones, then the unpickled ones."""
        if self.pickled_kwargs is None:
            return self.plain
        loaded = _loads(self.pickled_kwargs, "the keyword arguments")
        if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
            raise ArgumentError("the pickled keyword arguments are not a dict with str keys")
        return {**self.plain, **loaded}

    def function(self) -> Callable[..., Any] | None:
        """The pickled function, loaded once per worker process (None when the task runs source code)."""
        if self.pickled_func is None:
            return None
        key = hashlib.sha256(self.pickled_func.encode()).hexdigest()
        func = _functions.get(key)
        if func is None:
            func = _loads(self.pickled_func, "the function")
            if not callable(func):
                raise ArgumentError(f"the pickled function is a {type(func).__name__}, not a callable")
            _functions[key] = func
            while len(_functions) > FUNCTION_CACHE:
                _functions.popitem(last=False)
        else:
            _functions.move_to_end(key)
        return func


def _loads(text: str, what: str) -> Any:
    import cloudpickle

    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ArgumentError(f"{what}: not base64 text") from None
    try:
        return cloudpickle.loads(data)
    except Exception as e:  # noqa: BLE001 - anything the pickle's own code raises
        raise ArgumentError(
            f"cannot load {what} in the worker ({type(e).__name__}: {e}). The worker runs Python "
            f"{platform.python_version()}; objects pickled by another Python version, or needing a package "
            "the server does not have, cannot be loaded"
        ) from None
