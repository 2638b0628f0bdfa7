"""Cutting input into units: chunk sizes, group boundaries across batches, tasks, IPC encoding."""

from __future__ import annotations

import pyarrow as pa

from engines import units as u


def batches_of(values: list, size: int, **extra: list) -> list[pa.RecordBatch]:
    table = pa.table({"x": values, **extra})
    return table.to_batches(max_chunksize=size)


def test_chunks_have_rows_rows_across_batch_boundaries():
    pieces = list(u.chunks(batches_of(list(range(23)), 7), 5))
    assert [p.name for p in pieces] == ["1", "2", "3", "4", "5"]
    assert [p.rows for p in pieces] == [5, 5, 5, 5, 3]
    assert [v for p in pieces for v in p.data.column("x").to_pylist()] == list(range(23))


def test_groups_split_on_key_changes_even_inside_and_across_batches():
    keys = ["a", "a", "a", "b", "b", None, None, "c"]
    pieces = list(u.groups(batches_of(list(range(8)), 3, k=keys), ["k"]))
    assert [p.name for p in pieces] == ["a", "b", "null", "c"]
    assert [p.data.column("x").to_pylist() for p in pieces] == [[0, 1, 2], [3, 4], [5, 6], [7]]


def test_multi_column_group_keys_join_with_underscore():
    pieces = list(u.groups(batches_of([1, 2, 3], 10, g=["M", "M", "F"], y=[2020, 2021, 2021]), ["g", "y"]))
    assert [p.name for p in pieces] == ["M_2020", "M_2021", "F_2021"]


def test_tasks_carry_small_chunks_together():
    pieces = list(u.chunks(batches_of(list(range(100)), 100), 5))
    tasks = list(u.per_task(pieces, max_rows=40))
    assert [len(b) for b in tasks] == [8, 8, 4]


def test_encode_shares_a_stream_per_schema():
    a = pa.record_batch({"x": [1, 2]})
    b = pa.record_batch({"x": [1.5]})
    messages = u.encode([a, a, b])
    assert len(messages) == 2
    got = [batch for m in messages for batch in pa.ipc.open_stream(m)]
    assert [g.num_rows for g in got] == [2, 2, 1]


def test_combine_unifies_types():
    out = u.combine([pa.record_batch({"x": [1]}), pa.record_batch({"x": pa.array([None], pa.null())})])
    assert out.column("x").to_pylist() == [1, None]


def test_small_batches_convert_like_pyarrow_does():
    import pandas as pd

    from engines.worker.runtime import to_frame

    batch = pa.record_batch(
        {
            "i": pa.array([1, None, 3], pa.int64()),
            "f": [0.5, None, 2.0],
            "b": [True, None, False],
            "s": ["x", None, "z"],
            "j": pa.array([1, 2, 3], pa.int32()),
        }
    )
    pd.testing.assert_frame_equal(to_frame(batch), batch.to_pandas())
    stamped = pa.record_batch({"t": pa.array([0, 1], pa.timestamp("us"))})
    pd.testing.assert_frame_equal(to_frame(stamped), stamped.to_pandas())
