"""Session helpers that code written for Oracle's `oml` calls by their `oml.core.methods` names.

dbt-oracle's Python-model scripts (its `py_script_postfix` and `py_write_table` macros) run, inside the engine:

    connection = oml.core.methods._get_conn()
    setattr(connection, "action", ...)   # also client_identifier, clientinfo, module
    ...
    oml.core.methods._get_conn().close()

In Oracle's `oml`, `_get_conn()` is the session's python-oracledb connection and those four attributes are its
end-to-end tracing values (V$SESSION's ACTION, CLIENT_IDENTIFIER, CLIENT_INFO and MODULE). pyqd has no database
session to tag: the values are kept on the object (readable, for the script's own use) and sent nowhere, and
`close()` closes only this handle, never the `oml` connection (that belongs to `oml.connect`/`oml.disconnect`,
or inside the engine to the worker, which serves the caller's next call with it).
"""

from __future__ import annotations

import weakref
from types import TracebackType
from typing import Any

from oml import cursor as _cursor
from oml._connection import Connection, current

#: The tracing attributes of a python-oracledb connection that `_get_conn()`'s object accepts.
TRACING_ATTRIBUTES = ("action", "client_identifier", "clientinfo", "module")


class SessionConnection:
    """A stand-in for the session's python-oracledb connection: tracing attributes, `cursor()` (read-only, over
    the SQL gate), `commit()`/`rollback()` (nothing to do: the cursor cannot write) and `close()`."""

    # PEP 249's optional extension: the module's exceptions as attributes of the connection.
    Warning = _cursor.Warning
    Error = _cursor.Error
    InterfaceError = _cursor.InterfaceError
    DatabaseError = _cursor.DatabaseError
    DataError = _cursor.DataError
    OperationalError = _cursor.OperationalError
    IntegrityError = _cursor.IntegrityError
    InternalError = _cursor.InternalError
    ProgrammingError = _cursor.ProgrammingError
    NotSupportedError = _cursor.NotSupportedError

    _connection: Connection
    _closed: bool
    action: str | None
    client_identifier: str | None
    clientinfo: str | None
    module: str | None

    def __init__(self, connection: Connection) -> None:
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_closed", False)
        for name in TRACING_ATTRIBUTES:
            object.__setattr__(self, name, None)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in TRACING_ATTRIBUTES:
            raise AttributeError(f"'{type(self).__name__}' object has no settable attribute '{name}'")
        self._check_open()
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {type(value).__name__}")
        object.__setattr__(self, name, value)

    @property
    def closed(self) -> bool:
        return bool(self._closed)

    def _check_open(self) -> None:
        if self._closed:
            raise _cursor.InterfaceError("the connection is closed")

    def cursor(self) -> _cursor.Cursor:
        """A read-only cursor on this session (the same as `oml.cursor()`)."""
        self._check_open()
        return _cursor.Cursor(self._connection)

    def commit(self) -> None:
        """Nothing to commit: the session cannot write through a cursor."""
        self._check_open()

    def rollback(self) -> None:
        """Nothing to roll back: the session cannot write through a cursor."""
        self._check_open()

    def close(self) -> None:
        """Close this handle (the `oml` connection stays open); `_get_conn()` then hands out a new one."""
        object.__setattr__(self, "_closed", True)
        for name in TRACING_ATTRIBUTES:
            object.__setattr__(self, name, None)

    def __enter__(self) -> SessionConnection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<oml.core.methods.SessionConnection {state} to {self._connection.url}>"


_sessions: weakref.WeakKeyDictionary[Connection, SessionConnection] = weakref.WeakKeyDictionary()


def _get_conn() -> SessionConnection:
    """The current session's connection object: the same one until it is closed (NotConnectedError when
    `oml.connect` has not been called, as for every `oml` call)."""
    connection = current()
    session = _sessions.get(connection)
    if session is None or session.closed:
        session = _sessions[connection] = SessionConnection(connection)
    return session
