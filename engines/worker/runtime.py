"""Running a task's units: build the function once per process, convert each unit's input as OML does,
call it with print() and figures captured apart, and render the value as JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from engines.channel import Channel
from engines.protocol import Image, Result, Task, Unit
from engines.serialize import frame_to_json
from engines.wire import MAX_STDOUT_CHARS, clip
from engines.worker.arguments import ArgumentError, Arguments
from engines.worker.results import NotSerializable, columnar, conform, pickled, render

#: What the worker's `oml` connection sends as its token: the server ignores it and attaches the caller's
#: identity to the requests that come through this worker's channel (user code never holds a credential).
CHANNEL_TOKEN = "channel"

_functions: dict[str, Callable[..., Any]] = {}
_connection_call: str | None = None
_generation: str | None = None
_oml_connection: Any = None


def function_for(name: str, source: str) -> Callable[..., Any]:
    """The script's function, compiled once per worker process and source version."""
    from oml.script import compile_function

    key = hashlib.sha256(f"{name}\0{source}".encode()).hexdigest()
    func = _functions.get(key)
    if func is None:
        func = _functions[key] = compile_function(name, source)
    return func


def connect_oml(enabled: bool, call_id: str, generation: str, channel: Channel | None) -> None:
    """Point the script's `import oml` at the server, as the caller, through the worker's channel. The
    connection lives as long as the worker (which serves one user only); the datastore metadata it has seen is
    kept while the server's datastore generation stays the same."""
    global _connection_call, _oml_connection, _generation
    if not enabled or channel is None or call_id == _connection_call:
        return
    import oml._connection as conn
    from engines.worker.bridge import BRIDGE_URL, ChannelTransport

    if _oml_connection is None:
        _oml_connection = conn.Connection(
            BRIDGE_URL, token=CHANNEL_TOKEN, cache_metadata=True, transport=ChannelTransport(channel)
        )
    _oml_connection.use_token(CHANNEL_TOKEN, keep_metadata=generation == _generation)
    conn.set_current(_oml_connection)  # the script may have replaced it during an earlier call
    _connection_call, _generation = call_id, generation


#: Batches up to this many rows are converted column by column (pyarrow's converter has a fixed cost of about
#: 0.2 ms, which dominates tiny chunks such as rows=5).
SMALL_BATCH_ROWS = 2048


def _simple(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


@functools.cache
def _str_dtype() -> Any:
    """The dtype pandas gives a column of Python strings when it is not object (pandas 3's string dtype), else
    None. Asked on first use, not at import: a pandas 3 string column is Arrow memory, and Arrow's first
    allocation reserves about 1 GiB of address space (mimalloc), which counts against the worker's RLIMIT_AS."""
    dtype = pd.Series(["a"]).dtype
    return None if dtype == np.dtype(object) else dtype


def to_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    """A pandas DataFrame with a 0-based index; the same as `batch.to_pandas()`, faster for small batches."""
    if batch.num_rows > SMALL_BATCH_ROWS or not all(_simple(f.type) for f in batch.schema):
        return batch.to_pandas()
    columns: dict[str, Any] = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if _is_string(col.type) and _str_dtype() is not None:
            columns[name] = pd.array(col, dtype=_str_dtype())  # straight from Arrow, not through Python strings
        else:  # a copy of its own (the user's function may write to it), so pandas need not copy again
            columns[name] = col.to_numpy(zero_copy_only=False, writable=True)
    return pd.DataFrame(columns, index=pd.RangeIndex(batch.num_rows), copy=False)


def to_input(batch: pa.RecordBatch | pd.DataFrame, input_type: str, na_omit: bool) -> Any:
    """A fresh argument per unit, 0-based index, as OML hands it to the function (from the unit's batch, or from
    its frame already made by `Frames`)."""
    df = to_frame(batch) if isinstance(batch, pa.RecordBatch) else batch
    if na_omit:
        df = df.dropna().reset_index(drop=True)
    if input_type == "pandas.DataFrame":
        return df
    if input_type == "numpy.recarray":
        return df.to_records(index=False)
    if len(df.columns) and all(
        pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in df.dtypes
    ):
        return df.to_numpy(dtype=np.float64)
    return df


class Frames:
    """The units' input frames. Small batches of one schema are converted together and sliced: the same frames
    (each with its own 0-based index; pandas copies on write, so a function that changes its argument changes
    no other), at a fraction of pandas' fixed cost per frame (about 0.2 ms), which dominates chunks of a few
    rows. Only where no null could give a column another dtype in one chunk than in all (an int column with a
    null is float64 in that chunk alone)."""

    def __init__(self, batches: list[pa.RecordBatch]) -> None:
        self._batches = batches
        self._whole: pd.DataFrame | None = None
        self._starts: list[int] = []
        if len(batches) > 1 and _convert_together(batches):
            rows = 0
            for b in batches:
                self._starts.append(rows)
                rows += b.num_rows
            combined = pa.Table.from_batches(batches).combine_chunks().to_batches()
            self._whole = to_frame(combined[0]) if len(combined) == 1 else pa.Table.from_batches(batches).to_pandas()

    def __getitem__(self, i: int) -> pa.RecordBatch | pd.DataFrame:
        if self._whole is None:
            return self._batches[i]
        start = self._starts[i]
        return self._whole.iloc[start : start + self._batches[i].num_rows].reset_index(drop=True)


def _convert_together(batches: list[pa.RecordBatch]) -> bool:
    schema = batches[0].schema
    if not all(_simple(f.type) for f in schema):
        return False
    for b in batches:
        if b.num_rows > SMALL_BATCH_ROWS or not b.schema.equals(schema):
            return False
        for col in b.columns:
            if col.null_count and not (pa.types.is_floating(col.type) or _is_string(col.type)):
                return False
    return True


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def run_task(task: Task, batches: list[pa.RecordBatch], channel: Channel | None = None) -> list[Result]:
    """Run every unit in order; stop at the first failure (the whole call fails, as in OML)."""
    connect_oml(task.oml, task.call_id, task.datastore_generation, channel)
    first = task.units[0].name if task.units else ""
    arguments = Arguments(task.kwargs)
    try:  # the caller's own pickles, loaded here in the caller's worker (engines.worker.arguments)
        kwargs = arguments.kwargs()
        func = arguments.function()
    except ArgumentError as e:
        return [Result(first, False, error=f"Error in script {task.script_name}: {e}", failure="exception")]
    if func is None:
        try:
            func = function_for(task.script_name, task.source)
        except Exception as e:  # noqa: BLE001 - the user's module-level code failed
            return [Result(first, False, error=_format(e, task.script_name), failure="exception")]
    # row-apply DataFrames are rendered together at the end: one JSON encoding for many small chunks.
    plain = task.kind == "row" and task.result_format == "json" and not task.graphics
    frames: dict[int, pd.DataFrame] | None = {} if plain and arguments.func_value is None else None
    call = _Call(func, kwargs, arguments.func_value)
    results = []
    inputs = Frames(batches)
    for position, unit in enumerate(task.units):
        result = _run_unit(task, unit, position, call, inputs, frames)
        results.append(result)
        if not result.ok:
            return results
    if frames:
        _render_frames(results, frames)
    return _within_size(task, results)


def _within_size(task: Task, results: list[Result]) -> list[Result]:
    """The results, or a failure when together they are bigger than the output size limit."""
    total = 0
    for i, r in enumerate(results):
        total += len(r.json) + sum(len(img.png) for img in r.images)
        if total > task.output_max_bytes:
            message = f"Output exceeds maximum size of {task.output_max_bytes} bytes"
            return [*results[:i], Result(r.name, False, stdout=r.stdout, error=message, failure="size")]
    return results


def _render_frames(results: list[Result], frames: dict[int, pd.DataFrame]) -> None:
    """JSON for the deferred DataFrames: all at once when they share columns and types (the records of the
    concatenation are the concatenation of the records), else one by one."""
    first = next(iter(frames.values()))
    columns, dtypes = list(first.columns), first.dtypes
    uniform = all(list(df.columns) == columns and df.dtypes.equals(dtypes) for df in frames.values())
    if uniform and len(frames) > 1:
        data = frame_to_json(pd.concat(list(frames.values()), ignore_index=True))
        for n, i in enumerate(frames):
            results[i] = dataclasses.replace(results[i], json=data if n == 0 else b"[]")
    else:
        for i, df in frames.items():
            results[i] = dataclasses.replace(results[i], json=frame_to_json(df))


@dataclasses.dataclass(frozen=True)
class _Call:
    """What every unit of a task calls: the function, its keyword arguments, and the func_value columns."""

    func: Callable[..., Any]
    kwargs: dict[str, Any]
    func_value: list[tuple[str, str]] | None = None


def _run_unit(
    task: Task,
    unit: Unit,
    position: int,
    call: _Call,
    inputs: Frames,
    frames: dict[int, pd.DataFrame] | None = None,
) -> Result:
    args: list[Any] = []
    if unit.batch is not None:
        args.append(to_input(inputs[unit.batch], task.input_type, task.na_omit))
    elif task.kind == "index":
        args.append(unit.index)
    out = io.StringIO()
    plt = _pyplot() if task.graphics else None
    if plt is not None:
        plt.close("all")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            value = call.func(*args, **call.kwargs)
        images = _figures() if task.graphics else []
    except Exception as e:  # noqa: BLE001 - any error of the user's code is reported, never raised
        _close_figures()
        return Result(unit.name, False, stdout=_clip(out), error=_format(e, task.script_name), failure="exception")
    _close_figures()
    if call.func_value is not None:
        return _rows(task, unit, value, call.func_value, _clip(out))
    if frames is not None and isinstance(value, pd.DataFrame):
        if len(value) > task.output_limit:
            return Result(
                unit.name,
                False,
                stdout=_clip(out),
                failure="output",
                error=f"Output exceeds maximum length {task.output_limit}",
            )
        frames[position] = value
        return Result(unit.name, True, b"", True, len(value), images, _clip(out))
    try:
        data, is_frame, length = pickled(value) if task.result_format == "pickle" else render(value)
    except NotSerializable as e:
        return Result(unit.name, False, stdout=_clip(out), error=str(e), failure="serialize")
    if task.result_format == "pickle":
        return Result(unit.name, True, data, is_frame, length, images, _clip(out))
    if length > task.output_limit:
        return Result(
            unit.name,
            False,
            stdout=_clip(out),
            failure="output",
            error=f"Output exceeds maximum length {task.output_limit}",
        )
    return Result(unit.name, True, data, is_frame, length, images, _clip(out))


def _rows(task: Task, unit: Unit, value: Any, columns: list[tuple[str, str]], stdout: str) -> Result:
    """A unit's value as rows of the func_value table: columns of JSON, exact."""
    try:
        frame = conform(value, columns)
        data = columnar(frame, columns)
    except NotSerializable as e:
        return Result(unit.name, False, stdout=stdout, error=str(e), failure="serialize")
    rows = len(frame)
    if rows > task.output_limit:
        return Result(
            unit.name,
            False,
            stdout=stdout,
            failure="output",
            error=f"Output exceeds maximum length {task.output_limit}",
        )
    return Result(unit.name, True, data, False, rows, [], stdout)


def _clip(out: io.StringIO) -> str:
    return clip(out.getvalue(), MAX_STDOUT_CHARS)


def _format(exc: BaseException, script_name: str) -> str:
    """The exception and the traceback from the user's script down (our own frames left out)."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = list(tb.stack)
    first = next((i for i, f in enumerate(frames) if f.filename == script_name), len(frames))
    tb.stack = traceback.StackSummary.from_list(frames[first:])
    return clip(f"Error in script {script_name}: " + "".join(tb.format()).rstrip())


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    return plt


def _figures() -> list[Image]:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    for num in plt.get_fignums():
        fig = plt.figure(num)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else None
        if not title and fig.axes:
            title = fig.axes[0].get_title() or None
        images.append(Image(buf.getvalue(), title))
    return images


def _close_figures() -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
