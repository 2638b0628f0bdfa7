"""Hostile scripts and bodies against issue 12's execution surfaces (`funcValue`, `pickledKwargs`/`pickledFunc`,
`envName`), through the REST API: a clean error in OML's shape, nothing written or loaded where it must not be,
and the next call works."""

from __future__ import annotations

import io
import tracemalloc

import pandas as pd
import pytest

from tests.conftest import own_pool_api
from tests.server.test_worker_attacks import assert_next_call_works

#: A script that rewrites its own worker's func_value rendering: the worker is the script's, so what the server
#: gets as the rows of the result table is whatever the script chooses.
FORGE_ROWS = """def forge(payload):
    import engines.worker.runtime as rt
    rt.columnar = lambda df, columns: payload.encode()
    return (1,)
"""


@pytest.mark.parametrize(
    "payload",
    [
        "{",  # not JSON at all: spliced unparsed into the answer
        '{"A": [1e400]}',  # a number orjson refuses (infinity)
        '{"A": [NaN]}',
        '{"A": ' + "[" * 2000 + "]" * 2000 + "}",  # past the JSON parser's depth limit
    ],
)
def test_a_forged_func_value_answer_is_a_clean_error_and_writes_no_table(api, payload):
    mallory = api.user("MALLORY")
    api.script(mallory, "forge", FORGE_ROWS)
    body = {"parameters": {"payload": payload}, "funcValue": {"columns": {"A": "float"}, "table": "FORGED"}}
    r = api.run(mallory, "do-eval", "forge", body)
    assert r.status_code == 400, r.text
    assert r.json()["errorCode"] == 1031 and "func_value" in r.json()["errorMessage"]
    tables = api.client.get("/oml/api/pyqd/v1/tables", headers=mallory).json()
    assert "FORGED" not in str(tables)
    assert_next_call_works(api, mallory)


@pytest.fixture
def small_output_api(sqlite_settings):
    with own_pool_api(sqlite_settings, workers=2, warm_workers=1, output_max_bytes=8 * 1024 * 1024) as api:
        yield api


def test_a_func_value_answer_cannot_make_the_server_build_millions_of_objects(small_output_api):
    # 6 MiB of `{},` inside a column list: within the output size limit, but parsed into Python objects it takes
    # ~36 times its size in the server (9 GB for the default 256 MiB limit). The server must refuse the shape
    # before it parses, not after.
    api = small_output_api
    mallory = api.user("MALLORY")
    source = """def bomb(n):
    import engines.worker.runtime as rt
    rt.columnar = lambda df, columns: b'{"A": [' + b",".join([b"{}"] * n) + b"]}"
    return (1,)
"""
    api.script(mallory, "bomb", source)
    n = 2_000_000
    body = {"parameters": {"n": n}, "funcValue": {"columns": {"A": "float"}}}
    tracemalloc.start()
    try:
        r = api.run(mallory, "do-eval", "bomb", body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 400 and r.json()["errorCode"] == 1031, r.text
    size = 3 * n + 8
    assert peak < 8 * size, f"the server held {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB answer"
    assert_next_call_works(api, mallory)


@pytest.mark.parametrize("name", ["ctid", "xmin", "tableoid", "CTID", "oid", "rowid", "_rowid_"])
def test_a_column_named_like_a_system_column_is_a_clean_answer(api, name):
    # PostgreSQL refuses a column named like one of its system columns: that was a 500 (funcValue, uploads).
    mallory = api.user("MALLORY")
    api.script(mallory, "one", "def one():\n    return ('x',)\n")
    r = api.run(mallory, "do-eval", "one", {"funcValue": {"columns": {name: "text"}, "table": "SYS_COLS"}})
    assert r.status_code in (200, 400), r.text
    buf = io.BytesIO()
    pd.DataFrame({name: ["x"]}).to_parquet(buf)
    r = api.client.post(
        "/oml/api/pyqd/v1/tables/SYS_UP?mode=replace&format=parquet", headers=mallory, content=buf.getvalue()
    )
    assert r.status_code in (201, 400), r.text
    assert_next_call_works(api, mallory)
