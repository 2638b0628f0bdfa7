"""`oml`: pyqd's client package, with Oracle OML4Py's names, so notebook code ports unchanged.

import oml
oml.connect(url="http://127.0.0.1:8000", username="OML_USER", password="...")
oml.create(iris_df, table="IRIS")
oml.ds.save(objs={"regr": regr}, name="ds_regr", grantable=True, overwrite=True)
oml.script.create("regr_predict", func=source, overwrite=True)
oml.services.deploy_model(regr, name="regr", uri="regr")   # OML Services: a scoring endpoint
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from oml import core, cursor, ds, graphics, script, services
from oml._connection import PYQD, Connection, current, set_current
from oml.core.series import Boolean, Bytes, Datetime, Float, String
from oml.embed import DataImage, Job, check_embed, do_eval, group_apply, index_apply, row_apply, table_apply
from oml.errors import (
    AuthenticationError,
    ExecutionError,
    InvalidRequestError,
    NotConnectedError,
    NotFoundError,
    OMLError,
    ServerBusyError,
    ServerError,
)
from oml.frame import DataFrame, create, dir, drop, push, sync
from oml.graphics import boxplot, hist
from oml.script import export_script, import_script

__all__ = [
    "connect",
    "disconnect",
    "isconnected",
    "script",
    "ds",
    "services",
    "graphics",
    "boxplot",
    "hist",
    "grant",
    "revoke",
    "create",
    "sync",
    "drop",
    "push",
    "dir",
    "cursor",
    "core",
    "DataFrame",
    "Float",
    "String",
    "Boolean",
    "Bytes",
    "Datetime",
    "DataImage",
    "Job",
    "do_eval",
    "table_apply",
    "row_apply",
    "group_apply",
    "index_apply",
    "check_embed",
    "import_script",
    "export_script",
    "OMLError",
    "ServerError",
    "AuthenticationError",
    "NotFoundError",
    "InvalidRequestError",
    "ExecutionError",
    "ServerBusyError",
    "NotConnectedError",
]


def connect(
    user: str | None = None,
    password: str | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    url: str | None = None,
    username: str | None = None,
    dsn: str | None = None,
    token: str | None = None,
    verify: bool | str = True,
    **kwargs: Any,
) -> None:
    """Connect to a pyqd server: `url` (or `dsn`, or `host`+`port`), and `username` (or `user`) with `password`,
    or an access `token`. Oracle's other arguments (sid, service_name, automl, ...) are accepted and ignored."""
    url = url or dsn or (f"http://{host}:{port or 8000}" if host else None)
    set_current(None)  # a failed connect leaves no connection behind (not the previous user's)
    set_current(Connection(url or "", username or user, password, token, verify=verify))


def disconnect(cleanup: bool = True) -> None:
    """Close the connection; with cleanup (the default) the temporary tables made by `oml.push` (and
    `materialize()` without a name) through it are dropped first, as Oracle drops them at the session's end."""
    if cleanup:
        from oml.frame import _drop_temporary

        _drop_temporary()
    set_current(None)


def isconnected(check_automl: bool = False) -> bool:
    try:
        current()
    except NotConnectedError:
        return False
    return True


_GRANT_PATHS = {"datastore": "datastores", "pyqscript": "scripts", "table": "tables"}


def grant(name: str, typ: str = "datastore", user: str | None = None) -> None:
    """Grant read (and run, for scripts) on your datastore, script (`pyqscript`) or table to `user`
    (None = every user)."""
    if typ not in _GRANT_PATHS:
        raise ValueError("typ must be 'datastore', 'pyqscript' or 'table'")
    current().json("POST", f"{PYQD}/{_GRANT_PATHS[typ]}/{quote(name, safe='')}/grants", json={"user": user})


def revoke(name: str, typ: str = "datastore", user: str | None = None) -> None:
    """Take back a grant (user None = the grant to every user)."""
    if typ not in _GRANT_PATHS:
        raise ValueError("typ must be 'datastore', 'pyqscript' or 'table'")
    grantee = quote(user or "PUBLIC", safe="")
    current().json("DELETE", f"{PYQD}/{_GRANT_PATHS[typ]}/{quote(name, safe='')}/grants/{grantee}")
