"""The worker runtime's input conversion, in process."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from engines.worker.runtime import to_frame


def test_small_batches_convert_like_pyarrow_does_and_can_be_written_to():
    batch = pa.record_batch(
        {
            "s": pa.array(["a", None, "c"], pa.large_string()),
            "t": ["x", "y", None],
            "i": pa.array([1, 2, 3], pa.int16()),
            "f": [0.5, 1.5, 2.5],
            "b": [True, False, True],
        }
    )
    df = to_frame(batch)
    pd.testing.assert_frame_equal(df, batch.to_pandas())
    df.loc[0, "f"] = 9.0  # the function may change its argument in place
    df["i"] += 1
    assert df["f"].tolist() == [9.0, 1.5, 2.5] and df["i"].tolist() == [2, 3, 4]
    assert batch.column("f").to_pylist() == [0.5, 1.5, 2.5]  # the Arrow data is untouched


def test_chunks_converted_together_are_the_frames_each_would_be_alone():
    from engines.worker.runtime import Frames

    batches = [
        pa.record_batch({"i": pa.array([1, 2], pa.int64()), "f": [0.5, None], "s": ["a", None]}),
        pa.record_batch({"i": pa.array([3], pa.int64()), "f": [1.5], "s": ["c"]}),
        pa.record_batch({"i": pa.array([4, 5, 6], pa.int64()), "f": [2.5, 3.5, None], "s": ["d", "e", "f"]}),
    ]
    frames = Frames(batches)
    assert frames._whole is not None  # floats and strings may hold nulls: converted together
    got = [frames[i] for i in range(3)]
    for df, batch in zip(got, batches, strict=True):
        pd.testing.assert_frame_equal(df, to_frame(batch))
    got[0].loc[0, "i"] = 100  # one unit's change reaches no other unit, nor a later look at its own input
    assert frames[0]["i"].tolist() == [1, 2] and got[1]["i"].tolist() == [3]


def test_chunks_where_a_null_changes_a_dtype_are_converted_one_by_one():
    from engines.worker.runtime import Frames

    batches = [pa.record_batch({"i": pa.array([1, None], pa.int64())}), pa.record_batch({"i": pa.array([3, 4])})]
    frames = Frames(batches)
    assert frames._whole is None
    assert [str(to_frame(frames[i])["i"].dtype) for i in range(2)] == ["float64", "int64"]
