"""Cutting input data into units (one function call each) and units into tasks (one worker message each)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from engines.errors import InvalidApplyRequest
from engines.protocol import Task, Unit

#: Small chunks are sent to a worker several at a time, up to this many rows or units per task.
TASK_ROWS = 16_384
TASK_UNITS = 512
#: Most units in one task even when they carry no rows (index-apply): a worker's answer lists every unit in
#: its header, which the server reads only up to a bound (engines.wire.WORKER_MAX_HEADER).
MAX_TASK_UNITS = 4096


def combine(batches: Iterable[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch from many (types unified when the batches disagree)."""
    tables = [pa.Table.from_batches([b]) for b in batches]
    if not tables:
        raise InvalidApplyRequest("The input query returned no columns")
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    table = table.combine_chunks()
    return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)


def whole(batches: Iterable[pa.RecordBatch]) -> Iterator[Unit]:
    """table-apply: the whole input as one unit."""
    yield Unit("", data=combine(batches))


def chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[Unit]:
    """row-apply: consecutive chunks of `rows` rows (the last may be smaller), named 1, 2, ..."""
    pending: list[pa.RecordBatch] = []
    have = 0
    n = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(rows - have, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            have += take
            offset += take
            if have == rows:
                n += 1
                yield Unit(str(n), data=pending[0] if len(pending) == 1 else combine(pending))
                pending, have = [], 0
    if have:
        n += 1
        yield Unit(str(n), data=pending[0] if len(pending) == 1 else combine(pending))


def group_key(values: tuple) -> str:
    """A group's name: its value, or its values joined with '_' for several groupBy columns; null is 'null'."""
    return "_".join("null" if v is None else v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values)


def groups(batches: Iterable[pa.RecordBatch], columns: list[str]) -> Iterator[Unit]:
    """group-apply: rows arrive sorted by `columns`; each run of equal keys is one unit."""
    pending: list[pa.RecordBatch] = []
    key: tuple | None = None
    for batch in batches:
        missing = [c for c in columns if c not in batch.schema.names]
        if missing:
            raise InvalidApplyRequest(f"groupBy column(s) {', '.join(missing)} are not in the input query's columns")
        if batch.num_rows == 0:
            continue
        starts = _run_starts(batch, columns)
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else batch.num_rows
            row_key = tuple(batch.column(c)[start].as_py() for c in columns)
            if key is not None and row_key != key:
                yield Unit(group_key(key), data=combine(pending))
                pending = []
            key = row_key
            pending.append(batch.slice(start, end - start))
    if key is not None:
        yield Unit(group_key(key), data=combine(pending))


def _run_starts(batch: pa.RecordBatch, columns: list[str]) -> list[int]:
    """Row positions where the key changes within the batch (always including 0)."""
    n = batch.num_rows
    if n <= 1:
        return [0]
    changed = pa.array([False] * (n - 1))
    for c in columns:
        col = batch.column(c)
        a, b = col.slice(1), col.slice(0, n - 1)
        differs = pc.fill_null(pc.not_equal(a, b), True)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        changed = pc.or_(changed, pc.and_(differs, pc.invert(both_null)))
    return [0] + [i + 1 for i in pc.indices_nonzero(changed).to_pylist()]


def indexes(times: int) -> Iterator[Unit]:
    """index-apply: the function is called with 1..times."""
    for i in range(1, times + 1):
        yield Unit(str(i), index=i)


def per_task(
    units: Iterable[Unit], *, max_rows: int | Callable[[], int] = TASK_ROWS, max_units: int = TASK_UNITS
) -> Iterator[list[Unit]]:
    """Group consecutive units into the units of one task each: small chunks travel together. `max_rows` may be
    a callable, read as each task fills (the producer learns the input's size only as it reads)."""
    group: list[Unit] = []
    rows = 0
    for unit in units:
        limit = max_rows() if callable(max_rows) else max_rows
        if group and (rows + unit.rows > limit or len(group) >= max_units):
            yield group
            group, rows = [], 0
        group.append(unit)
        rows += unit.rows
    if group:
        yield group


def pack(template: Task, group: list[Unit]) -> tuple[Task, list[bytes]]:
    """One worker message: the task `template` with `group`'s units (their rows travel beside it as Arrow IPC,
    referred to by position)."""
    data = [unit.data for unit in group if unit.data is not None]
    positions = iter(range(len(data)))
    units = [Unit(x.name, x.index, None if x.data is None else next(positions)) for x in group]
    messages = encode(data)
    return replace(template, units=units, data_messages=len(messages)), messages


def encode(batches: list[pa.RecordBatch]) -> list[bytes]:
    """Arrow IPC streams for a task's inputs: consecutive batches with one schema share a stream."""
    messages: list[bytes] = []
    run: list[pa.RecordBatch] = []
    for b in batches:
        if run and not b.schema.equals(run[0].schema):
            messages.append(_stream(run))
            run = []
        run.append(b)
    if run:
        messages.append(_stream(run))
    return messages


def _stream(batches: list[pa.RecordBatch]) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue()
