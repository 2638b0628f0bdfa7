"""Embedded Python execution from Python, with Oracle's signatures: `do_eval`, `table_apply`, `row_apply`,
`group_apply`, `index_apply`. `func` may be a repository script name, a Python function, a string holding a
`def`, or a Callable from `oml.script.load`; functions, lambdas and strings run without a repository entry.
Keyword arguments go to the function: JSON values as JSON, Python objects (a fitted model, a DataFrame, a proxy)
cloudpickled and loaded only in your own worker; `oml_*` ones are controls (`oml_async_flag=True` returns a
`Job`, `oml_timeout` sets its time limit). `func_value=<prototype DataFrame>` (Oracle's) keeps the result in the
database: the call returns an `oml.DataFrame` proxy of a new table with the prototype's columns. Results of your
own scripts and functions come back as the Python objects the function returned; results of other owners'
scripts (global or granted) come back as JSON values, because unpickling would run their code here, unless you
pass `oml_trust_pickle=True`."""

from __future__ import annotations

import io
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import cloudpickle
import httpx
import orjson
import pandas as pd

from oml import _connection
from oml._arguments import func_value_field, function_fields, split_kwargs
from oml._connection import PY_SCRIPTS, PYQD
from oml.errors import ServerError
from oml.frame import DataFrame
from oml.script import SCRIPT_NAME_RE
from oml.script import Callable as ScriptCallable


class DataImage:
    """What a call with `graphics=True` returns (Oracle's `oml.embed.data_image._DataImage`): the function's
    value (`.dat`, also `.data`) and the images it drew (`.img`, PNG bytes, with their `.title`s)."""

    def __init__(self, data: Any, images: list[tuple[bytes, str | None]]) -> None:
        #: The function's value (Oracle's attribute name).
        self.dat = data
        #: PNG bytes of each figure, in order.
        self.img = [png for png, _ in images]
        #: Each figure's title (its suptitle, else its first axes' title), None when it has none.
        self.title = [title for _, title in images]

    @property
    def data(self) -> Any:
        return self.dat

    @property
    def titles(self) -> list[str | None]:
        return self.title

    def _repr_png_(self) -> bytes | None:
        return self.img[0] if self.img else None

    def _ipython_display_(self) -> None:
        """In a notebook: every image, then the value (as Oracle's notebooks show it)."""
        from IPython.display import Image, display

        for png in self.img:
            display(Image(data=png, format="png"))
        display(self.dat)

    def __repr__(self) -> str:
        return repr(self.dat)


#: Oracle's class name.
_DataImage = DataImage


def _parallel(parallel: Any) -> dict[str, Any]:
    if parallel is None or parallel is False or parallel == 0:
        return {}
    if parallel is True:
        return {"parallelFlag": True}
    if isinstance(parallel, int) and parallel > 0:
        return {"parallelFlag": True, "parallel": parallel}
    raise ValueError("parallel must be None, a bool or a positive int")


def _input(data: Any) -> str:
    """The input query: a proxy's (it runs in the database; no rows pass through the notebook), or a query."""
    if isinstance(data, str):
        return data
    sql = getattr(data, "sql", None)
    if isinstance(sql, str):
        return sql
    raise TypeError("data must be an oml.DataFrame proxy (oml.sync / oml.create / oml.push) or a query string")


def _columns(spec: Any, what: str) -> str:
    if isinstance(spec, str):
        cols = [spec]
    elif isinstance(spec, list | tuple) and all(isinstance(c, str) for c in spec):
        cols = list(spec)
    elif isinstance(getattr(spec, "columns", None), list | tuple | pd.Index):
        cols = [str(c) for c in spec.columns]
    else:
        raise TypeError(f"{what} must be an oml.DataFrame of the columns, a column name, or a list of names")
    return ", ".join('"' + c.replace('"', '""') + '"' for c in cols)


Units = list[tuple[str, Any, list[tuple[bytes, str | None]]]]
#: Content type of pickled answers (the server's `resultFormat: "pickle"`).
PICKLE_MEDIA_TYPE = "application/x-python-pickle"


def _run(
    verb: str,
    func: Any,
    func_owner: str | None,
    graphics: bool,
    kwargs: dict[str, Any],
    fields: dict[str, Any],
    shape: Callable[[Units], Any],
) -> Any:
    """Call the verb; the shaped result, a proxy of the result table with `func_value`, or a Job when
    `oml_async_flag=True` was given."""
    async_flag = bool(kwargs.pop("oml_async_flag", False))
    timeout = kwargs.pop("oml_timeout", None)
    trust_pickle = kwargs.pop("oml_trust_pickle", False) is True
    func_value = kwargs.pop("func_value", None)
    plain, pickled = split_kwargs(kwargs)
    body: dict[str, Any] = {
        **fields,
        "parameters": orjson.dumps(plain).decode(),
        "graphicsFlag": bool(graphics),
        "resultFormat": "pickle",
    }
    if pickled is not None:
        body["pickledKwargs"] = pickled
    if func_value is not None:
        if async_flag:
            raise ValueError("func_value works with synchronous calls only (not with oml_async_flag)")
        body["funcValue"] = func_value_field(func_value)
        body["resultFormat"] = "json"
    if async_flag:
        body["asyncFlag"] = True
        if timeout is not None:
            body["timeout"] = int(timeout)
    if trust_pickle:
        body["trustPickle"] = True
    if isinstance(func, ScriptCallable):
        func, func_owner = func.name, func_owner or func.owner
    if isinstance(func, str) and SCRIPT_NAME_RE.fullmatch(func):
        if func_owner and func_owner.upper() != _connection.current().username and not trust_pickle:
            body["resultFormat"] = "json"  # another owner's script: its values, never its pickles
        path = f"{PY_SCRIPTS}/v2/{verb}/{quote(func, safe='')}"
        if func_owner:
            path += f"/{quote(func_owner, safe='')}"
    else:
        body.update(function_fields(func))
        path = f"{PYQD}/run/{verb}"
    r = _connection.current().request("POST", path, json=body)
    if async_flag:
        return Job(r.headers["location"], shape)
    if func_value is not None:
        table = r.json()["result"]
        return DataFrame(table=table["table_name"], owner=table["owner"])
    return _answer(r, shape)


def _answer(r: httpx.Response, shape: Callable[[Units], Any]) -> Any:
    """The call's value: unpickled only when the server sent pickles (own scripts and functions, or opted in);
    another owner's script answers OML's JSON, returned as its `result` value."""
    if r.headers.get("content-type", "").split(";")[0].strip() != PICKLE_MEDIA_TYPE:
        return r.json()["result"]
    return shape(_units(r.content))


def _units(content: bytes) -> Units:
    """The units of a pickled answer: one pickled (name, pickled value, images) after another."""
    stream = io.BytesIO(content)
    units = []
    while stream.tell() < len(content):
        name, value, images = pickle.load(stream)
        units.append((name, cloudpickle.loads(value), images))
    return units


class Job:
    """An async call (`oml_async_flag=True`): `status()`, `result()`, `cancel()`, `wait()`."""

    def __init__(self, location: str, shape: Callable[[Units], Any]) -> None:
        #: The job's status URL (its last path segment is the job id).
        self.location = location
        self.id = location.rstrip("/").rsplit("/", 1)[-1]
        self._shape = shape

    def status(self) -> dict[str, Any]:
        """{'state': QUEUED|RUNNING|DONE, 'progress': {'done', 'total'}, ...}"""
        r = _connection.current().request("GET", self.location, ok=(202, 302), follow_redirects=False)
        if r.status_code == 302:
            return {"state": "DONE", "jobId": self.id}
        return r.json()

    def done(self) -> bool:
        return self.status()["state"] == "DONE"

    def result(self) -> Any:
        """The function's result; raises the server's error if the job failed, NotFoundError until it is done."""
        r = _connection.current().request("GET", f"{self.location}/result")
        return _answer(r, self._shape)

    def cancel(self) -> None:
        """Stop the job (its workers are killed) and delete it."""
        _connection.current().request("DELETE", self.location)

    def wait(self, timeout: float | None = None, interval: float = 0.5, progress: bool | None = None) -> Any:
        """Poll until the job is done and return its result; shows a progress bar on a terminal."""
        show = sys.stderr.isatty() if progress is None else progress
        bar = None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                st = self.status()
                if st["state"] == "DONE":
                    return self.result()
                if show:
                    bar = _advance(bar, self.id, st["progress"])
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} is still {st['state'].lower()}")
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.close()

    def __repr__(self) -> str:
        return f"<oml.Job {self.id}>"


def _advance(bar: Any, job_id: str, progress: dict[str, Any]) -> Any:
    from tqdm import tqdm

    done, total = progress["done"], progress["total"]
    if bar is None:
        bar = tqdm(total=total, desc=f"job {job_id[:8]}", unit="call")
    if total is not None and bar.total != total:
        bar.total = total
    bar.update(done - bar.n)
    return bar


def _value(unit: tuple[str, Any, list[tuple[bytes, str | None]]], graphics: bool) -> Any:
    _, value, images = unit
    return DataImage(value, images) if graphics else value


def do_eval(func: Any, func_owner: str | None = None, graphics: bool = False, **kwargs: Any) -> Any:
    """Run `func` with no input data."""
    return _run("do-eval", func, func_owner, graphics, kwargs, {}, lambda units: _value(units[0], graphics))


def table_apply(data: Any, func: Any, func_owner: str | None = None, graphics: bool = False, **kwargs: Any) -> Any:
    """Run `func` on all rows of `data` at once."""
    return _run(
        "table-apply",
        func,
        func_owner,
        graphics,
        kwargs,
        {"input": _input(data)},
        lambda units: _value(units[0], graphics),
    )


def row_apply(
    data: Any,
    func: Any,
    func_owner: str | None = None,
    rows: int = 1,
    parallel: Any = None,
    graphics: bool = False,
    **kwargs: Any,
) -> Any:
    """Run `func` on chunks of `rows` rows; DataFrame results are concatenated, others listed per chunk."""

    def shape(units: Units) -> Any:
        values = [_value(u, graphics) for u in units]
        if not graphics and values and all(isinstance(v, pd.DataFrame) for v in values):
            return pd.concat(values, ignore_index=True)
        return values

    return _run(
        "row-apply",
        func,
        func_owner,
        graphics,
        kwargs,
        {"input": _input(data), "rows": rows, **_parallel(parallel)},
        shape,
    )


def group_apply(
    data: Any,
    index: Any,
    func: Any,
    func_owner: str | None = None,
    parallel: Any = None,
    orderby: Any = None,
    graphics: bool = False,
    **kwargs: Any,
) -> Any:
    """Run `func` once per group of the `index` columns; a dict keyed by group (values joined with '_')."""
    fields = {"input": _input(data), "groupBy": _columns(index, "index"), **_parallel(parallel)}
    if orderby is not None:
        fields["orderBy"] = _columns(orderby, "orderby")
    return _run(
        "group-apply",
        func,
        func_owner,
        graphics,
        kwargs,
        fields,
        lambda units: {u[0]: _value(u, graphics) for u in units},
    )


def index_apply(
    times: int, func: Any, func_owner: str | None = None, parallel: Any = None, graphics: bool = False, **kwargs: Any
) -> Any:
    """Run `func(i)` for i in 1..times; a list in index order."""
    return _run(
        "index-apply",
        func,
        func_owner,
        graphics,
        kwargs,
        {"times": times, **_parallel(parallel)},
        lambda units: [_value(u, graphics) for u in units],
    )


def check_embed() -> bool:
    """True when the server runs embedded Python execution for you (Oracle's check that it is set up); False
    when it answers without it. Raises NotConnectedError without a connection."""
    try:
        doc = _connection.current().request("GET", f"{PY_SCRIPTS}/v2").json()
    except ServerError:
        return False
    links = [link.get("href", "") for link in doc.get("links", []) if isinstance(link, dict)]
    return any("/do-eval/" in href for href in links)
