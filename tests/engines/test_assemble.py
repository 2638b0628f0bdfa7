"""Every result shape of OML (docs/compatibility.md, "Execution"), made by the runner and the assembler on the
in-process worker: no HTTP, no database, no worker processes. tests/server/test_execution.py checks the same
shapes over HTTP on real workers."""

from __future__ import annotations

import base64
import io
import pickle

import pandas as pd
import pyarrow as pa
import pytest

from engines.errors import OutputTooLarge, OutputTooLong, ResultNotSerializable, ScriptFailed
from engines.runner import Limits
from tests.engines.support import batches_of, make_runner, run_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FRAMES = '{"oml_input_type":"pandas.DataFrame"}'
RETURN_DF = """def f(num, scale):
    import pandas as pd
    id = list(range(0, int(num)))
    return pd.DataFrame({"ID": id, "RES": [i / scale for i in id]})
"""
SAME = "def f(d):\n    return d\n"
#: Draws one figure titled after its argument's first value (or the index), returns a small value.
PLOT = """def f(x=None):
    import matplotlib.pyplot as plt
    label = x if isinstance(x, int) else int(x["N"].iloc[0])
    plt.figure(figsize=(1, 1), dpi=10)
    plt.plot([1, 2, 3])
    plt.title(f"plot {label}")
    return label
"""


@pytest.fixture
def agg():
    """Figures drawn without a display (the inline worker draws them in this process); pyplot imported here, once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def test_do_eval_returns_the_functions_value(inline_pool):
    body = {"parameters": '{"num":10,"scale":100}'}
    assert run_json(inline_pool, "eval", RETURN_DF, body) == {"result": [{"ID": i, "RES": i / 100} for i in range(10)]}
    src = "def f():\n    import numpy as np\n    return {'a': np.int64(3), 'b': [1.5, None], 'c': float('nan')}\n"
    assert run_json(inline_pool, "eval", src) == {"result": {"a": 3, "b": [1.5, None], "c": None}}


def test_table_apply_gets_the_whole_input_and_returns_records(inline_pool):
    src = "def f(d):\n    return d.assign(M=d['N'] * 2).tail(2)\n"
    body = {"parameters": FRAMES}
    result = run_json(inline_pool, "table", src, body, batches=batches_of({"N": list(range(10))}, 3))
    assert result == {"result": [{"N": 8, "M": 16}, {"N": 9, "M": 18}]}


@pytest.mark.parametrize("batch_rows", [1, 4, 100])
def test_row_apply_splices_dataframe_records_in_chunk_order(inline_pool, batch_rows):
    src = "def f(d):\n    import pandas as pd\n    return pd.DataFrame({'IDX': list(d.index), 'N': d['N']})\n"
    body = {"rows": 5, "parallelFlag": True, "parameters": FRAMES}
    result = run_json(inline_pool, "row", src, body, batches=batches_of({"N": list(range(23))}, batch_rows))
    assert result == {"result": [{"IDX": i % 5, "N": i} for i in range(23)]}


def test_row_apply_of_scalars_gives_one_value_per_chunk(inline_pool):
    src = "def f(d):\n    return [len(d), int(d['N'].iloc[0])]\n"
    body = {"rows": 4, "parallelFlag": True, "parameters": FRAMES}
    result = run_json(inline_pool, "row", src, body, batches=batches_of({"N": list(range(10))}, 3))
    assert result == {"result": [[4, 0], [4, 4], [2, 8]]}


@pytest.mark.parametrize("batch_rows", [2, 100])
def test_a_chunk_returning_none_among_dataframes_adds_no_rows(inline_pool, batch_rows):
    src = "def f(d):\n    return None if d['N'].iloc[0] in (2, 6) else d\n"
    body = {"rows": 2, "parallelFlag": True, "parameters": FRAMES}
    result = run_json(inline_pool, "row", src, body, batches=batches_of({"N": list(range(8))}, batch_rows))
    assert result == {"result": [{"N": 0}, {"N": 1}, {"N": 4}, {"N": 5}]}


def test_row_apply_chunks_may_return_frames_of_different_columns(inline_pool):
    src = "def f(d):\n    n = int(d['N'].iloc[0])\n    return d.rename(columns={'N': 'A' if n % 2 else 'B'})\n"
    body = {"rows": 1, "parameters": FRAMES}
    result = run_json(inline_pool, "row", src, body, batches=batches_of({"N": [0, 1, 2]}))
    assert result == {"result": [{"B": 0}, {"A": 1}, {"B": 2}]}


def test_group_apply_is_keyed_by_group_in_input_order(inline_pool):
    df = pd.DataFrame({"G": ["a", "a", "b", "c", "c", "c"], "X": [1, 2, 3, 4, 5, 6]})
    body = {"groupBy": "G", "parallelFlag": True, "parameters": FRAMES}
    total = "def f(d):\n    return int(d['X'].sum())\n"
    result = run_json(inline_pool, "group", total, body, batches=batches_of(df, 4), group_columns=("G",))
    assert result == {"result": {"a": 3, "b": 3, "c": 15}}
    frames = run_json(inline_pool, "group", SAME, body, batches=batches_of(df, 4), group_columns=("G",))
    assert frames == {"result": {"a": [{"G": "a", "X": 1}, {"G": "a", "X": 2}], "b": [{"G": "b", "X": 3}],
                                 "c": [{"G": "c", "X": x} for x in (4, 5, 6)]}}  # fmt: skip


def test_group_apply_joins_several_keys_and_names_null_keys_null(inline_pool):
    df = pd.DataFrame({"GENDER": ["F", "F", "M", "M", None], "YEAR": [1, None, 1, 2, 2], "X": [1, 2, 3, 4, 5]})
    df["YEAR"] = df["YEAR"].astype("Int64")
    src = "def f(d):\n    return int(d['X'].sum())\n"
    one = run_json(
        inline_pool, "group", src, {"groupBy": "GENDER"}, batches=batches_of(df, 2), group_columns=("GENDER",)
    )
    assert one == {"result": {"F": 3, "M": 7, "null": 5}}
    two = run_json(
        inline_pool,
        "group",
        src,
        {"groupBy": "GENDER,YEAR"},
        batches=batches_of(df, 2),
        group_columns=("GENDER", "YEAR"),
    )
    assert two == {"result": {"F_1": 1, "F_null": 2, "M_1": 3, "M_2": 4, "null_2": 5}}


def test_index_apply_is_a_list_in_index_order(inline_pool):
    body = {"times": 25, "parallelFlag": True}
    assert run_json(inline_pool, "index", "def f(i):\n    return i * i\n", body) == {
        "result": [i * i for i in range(1, 26)]
    }


def test_empty_input_gives_an_empty_list_or_object(inline_pool):
    empty = pa.RecordBatch.from_pylist([], schema=pa.schema([("N", pa.int64())]))
    for batches in ([empty], []):
        assert run_json(inline_pool, "row", SAME, {"rows": 3}, batches=batches) == {"result": []}
        body = {"groupBy": "N"}
        assert run_json(inline_pool, "group", SAME, body, batches=batches, group_columns=("N",)) == {"result": {}}


def _png(entry: dict) -> dict:
    """The entry with its image checked to be a PNG and left out."""
    image = entry.pop("IMAGE")
    assert image is None or base64.b64decode(image).startswith(PNG_MAGIC)
    return entry


def test_graphics_of_do_eval_are_one_row_per_figure(inline_pool, agg):
    src = """def f(n):
    import matplotlib.pyplot as plt
    for i in range(n):
        plt.figure(figsize=(1, 1), dpi=10)
        plt.plot([i, i + 1])
        plt.title(f"plot {i + 1}")
    return {"n": n}
"""
    result = run_json(inline_pool, "eval", src, {"parameters": '{"n": 2}', "graphicsFlag": True})["result"]
    assert all(e["IMAGE"] for e in result)
    assert [_png(e) for e in result] == [
        {"DATA": '{"n":2}', "ID": 1, "TITLE": "plot 1"},
        {"DATA": '{"n":2}', "ID": 2, "TITLE": "plot 2"},
    ]
    plain = run_json(inline_pool, "eval", "def f():\n    return [1, 'a']\n", {"graphicsFlag": True})
    assert plain == {"result": [{"IMAGE": None, "DATA": '[1,"a"]', "ID": None, "TITLE": None}]}


def test_graphics_of_table_apply_are_a_list_without_names(inline_pool, agg):
    body = {"graphicsFlag": True, "parameters": FRAMES}
    result = run_json(inline_pool, "table", PLOT, body, batches=batches_of({"N": [7, 8]}))["result"]
    assert [_png(e) for e in result] == [{"DATA": "7", "ID": 1, "TITLE": "plot 7"}]


def test_graphics_of_row_and_index_apply_are_named_by_chunk_and_index(inline_pool, agg):
    # Serial: inline workers share this process's figures (real workers each have their own).
    body = {"rows": 2, "graphicsFlag": True, "parameters": FRAMES}
    rows = run_json(inline_pool, "row", PLOT, body, batches=batches_of({"N": [10, 11, 12]}))["result"]
    assert [_png(e) for e in rows] == [
        {"DATA": "10", "ID": 1, "TITLE": "plot 10", "NAME": "1"},
        {"DATA": "12", "ID": 1, "TITLE": "plot 12", "NAME": "2"},
    ]
    index = run_json(inline_pool, "index", PLOT, {"times": 2, "graphicsFlag": True})["result"]
    assert [_png(e) for e in index] == [{"DATA": str(i), "ID": 1, "TITLE": f"plot {i}", "NAME": str(i)} for i in (1, 2)]
    plain = run_json(inline_pool, "index", "def f(i):\n    return i\n", {"times": 2, "graphicsFlag": True})
    assert plain == {
        "result": [{"IMAGE": None, "DATA": str(i), "ID": None, "TITLE": None, "NAME": str(i)} for i in (1, 2)]
    }


def test_graphics_of_group_apply_are_keyed_by_group(inline_pool, agg):
    body = {"groupBy": "G", "graphicsFlag": True, "parameters": FRAMES}
    batches = batches_of({"G": ["a", "a", "b"], "N": [1, 2, 3]})
    result = run_json(inline_pool, "group", PLOT, body, batches=batches, group_columns=("G",))["result"]
    assert {k: [_png(e) for e in v] for k, v in result.items()} == {
        "a": [{"DATA": "1", "ID": 1, "TITLE": "plot 1"}],
        "b": [{"DATA": "3", "ID": 1, "TITLE": "plot 3"}],
    }


def _units(body: bytes) -> list[tuple]:
    """The pickled answer's units: (name, value, images) one after another (these tests made the pickles)."""
    stream = io.BytesIO(body)
    units = []
    while stream.tell() < len(body):
        name, value, images = pickle.load(stream)
        units.append((name, pickle.loads(value), images))
    return units


def test_pickle_results_are_one_pickled_unit_after_another(inline_pool):
    src = "def f():\n    return {'t': (1, 2), 's': {3}}\n"
    body = make_runner(inline_pool, "eval", src, {"resultFormat": "pickle"}).run().read()
    assert _units(body) == [("", {"t": (1, 2), "s": {3}}, [])]
    body = {"rows": 2, "parallelFlag": True, "resultFormat": "pickle", "parameters": FRAMES}
    units = _units(make_runner(inline_pool, "row", SAME, body, batches=batches_of({"N": [1, 2, 3]})).run().read())
    assert [name for name, _, _ in units] == ["1", "2"]
    assert [value["N"].tolist() for _, value, _ in units] == [[1, 2], [3]]


def test_pickle_results_carry_figures(inline_pool, agg):
    body = {"times": 2, "resultFormat": "pickle", "graphicsFlag": True}
    units = _units(make_runner(inline_pool, "index", PLOT, body).run().read())
    assert [(name, value, [title for _, title in images]) for name, value, images in units] == [
        ("1", 1, ["plot 1"]),
        ("2", 2, ["plot 2"]),
    ]
    assert all(png.startswith(PNG_MAGIC) for _, _, images in units for png, _ in images)


@pytest.mark.parametrize(
    ("kind", "source", "body"),
    [
        ("eval", "def f():\n    return list(range(6))\n", {}),
        ("row", SAME, {"rows": 3, "parallelFlag": True, "parameters": FRAMES}),  # 3 rows a chunk, 6 in all
        ("row", "def f(d):\n    return 1\n", {"rows": 1}),  # 6 chunks
        ("group", "def f(d):\n    return 1\n", {"groupBy": "N"}),  # 6 groups
        ("index", "def f(i):\n    return i\n", {"times": 6, "parallelFlag": True}),
    ],
)
def test_output_limit(inline_pool, kind, source, body):
    batches = batches_of({"N": list(range(6))}, 2)
    runner = make_runner(
        inline_pool, kind, source, body, batches=batches, limits=Limits(output_limit=5), group_columns=("N",)
    )
    with pytest.raises(OutputTooLong) as e:
        runner.run()
    assert type(e.value) is OutputTooLong and str(e.value) == "Output exceeds maximum length 5"


@pytest.mark.parametrize(
    ("kind", "source", "body"),
    [
        ("eval", "def f():\n    return 'x' * 200\n", {}),  # one value over the limit, refused by the worker
        ("index", "def f(i):\n    return 'x' * 10\n", {"times": 40}),  # small units, too big together
    ],
)
def test_output_size_limit(inline_pool, kind, source, body):
    with pytest.raises(OutputTooLarge) as e:
        make_runner(inline_pool, kind, source, body, limits=Limits(output_max_bytes=200)).run()
    assert str(e.value) == "Output exceeds maximum size of 200 bytes"


def test_a_script_that_raises_fails_with_its_traceback_and_print_output(inline_pool):
    src = "def f():\n    print('about to fail')\n    x = {}\n    return x['missing']\n"
    with pytest.raises(ScriptFailed) as e:
        make_runner(inline_pool, "eval", src).run()
    message = str(e.value)
    assert message.startswith("Error in script f: Traceback (most recent call last):\n")
    assert "File \"f\", line 4, in f\n    return x['missing']" in message
    assert message.endswith("KeyError: 'missing'\n--- output of print() ---\nabout to fail\n")
    assert "engines/" not in message and e.value.stdout == "about to fail\n"


def test_a_value_without_json_rendering_is_not_serializable(inline_pool):
    src = "class Model:\n    pass\n\ndef f():\n    return {'model': Model()}\n"
    with pytest.raises(ResultNotSerializable) as e:
        make_runner(inline_pool, "eval", src).run()
    assert "it contains a Model" in str(e.value)


def test_row_apply_chunks_mixing_dataframes_and_other_values_are_not_serializable(inline_pool):
    src = "def f(d):\n    return d if d['N'].iloc[0] == 0 else len(d)\n"
    body = {"rows": 2, "parameters": FRAMES}
    with pytest.raises(ResultNotSerializable) as e:
        make_runner(inline_pool, "row", src, body, batches=batches_of({"N": [0, 1, 2, 3]})).run()
    assert str(e.value) == (
        "row-apply chunks must all return DataFrames when the first one does (chunk 2 returned something else)"
    )
