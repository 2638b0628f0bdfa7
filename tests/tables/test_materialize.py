"""Materialize: `POST .../tables/{name}` with `{"query", "append"}` makes a table of the caller's from a gated,
read-only query, written by the database (types kept, all or nothing), on SQLite and PostgreSQL."""

from __future__ import annotations

import tracemalloc
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import change_settings
from tests.tables.conftest import new_user
from tests.tables.test_tables_api import (
    ARROW_STREAM,
    TYPED,
    arrow_data,
    assert_error,
    describe,
    listing,
    parquet_bytes,
    upload,
)

EXT = "/oml/api/pyqd/v1"


def materialize(api, headers, name, query, *, append=None, params=None, **extra):
    body = {"query": query, **({"append": append} if append is not None else {}), **extra}
    return api.client.post(f"{EXT}/tables/{name}", headers=headers, params=params or {}, json=body)


def query(api, headers, sql) -> pa.Table:
    r = api.client.post(f"{EXT}/query", headers=headers, json={"query": sql})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ARROW_STREAM
    return pa.ipc.open_stream(r.content).read_all()


@pytest.fixture
def api(module_api):
    return module_api


class User(dict):
    """Bearer headers of a user, and the user's name."""

    name: str


def user(api, prefix: str) -> User:
    name, headers = new_user(api, prefix)
    u = User(headers)
    u.name = name
    return u


@pytest.fixture
def alice(api) -> User:
    """A fresh user with table TYPED (every column type, a null in each)."""
    u = user(api, "ALICE")
    assert upload(api.client, u, "TYPED", parquet_bytes(TYPED), fmt="parquet").status_code == 201
    return u


def test_a_query_becomes_a_table_with_its_rows_and_types(api, alice):
    r = materialize(api, alice, "COPY", "select * from TYPED")
    assert r.status_code == 201, r.text
    result = r.json()["result"]
    assert result["owner"] == alice.name and result["table_name"] == "COPY" and result["row_count"] == 4
    assert result["temporary"] is False
    assert [(c["name"], c["type"]) for c in result["columns"]] == [
        ("I", "integer"),
        ("F", "float"),
        ("S", "text"),
        ("B", "boolean"),
        ("T", "timestamp"),
    ]
    assert describe(api.client, alice, "COPY").json()["result"] == result
    back = arrow_data(api.client, alice, "COPY")
    assert back.equals(arrow_data(api.client, alice, "TYPED")), back.to_pylist()


def test_computed_columns_get_the_types_of_their_values(api, alice):
    sql = (
        'select I * 2 as "I2", F / 2 as "HALF", S || \'!\' as "S2", I > 0 as "POS", '
        'count(*) over () as "N", T as "WHEN" from TYPED where S is not null'
    )
    r = materialize(api, alice, "COMPUTED", sql)
    assert r.status_code == 201, r.text
    types = {c["name"]: c["type"] for c in r.json()["result"]["columns"]}
    assert types == {
        "I2": "integer",
        "HALF": "float",
        "S2": "text",
        "POS": "boolean",
        "N": "integer",
        "WHEN": "timestamp",
    }
    assert r.json()["result"]["row_count"] == 3
    got = arrow_data(api.client, alice, "COMPUTED").to_pandas().sort_values("I2").reset_index(drop=True)
    want = query(api, alice, sql).to_pandas().sort_values("I2").reset_index(drop=True)
    assert list(got["I2"]) == [-6, 2, 2**41] and list(got["S2"]) == ["ç!", "a!", "!"]
    assert list(got["POS"]) == [False, True, True]
    when = [datetime(2024, 3, 1, 0, 0, 0, 123456), datetime(2024, 1, 1, 12), datetime(1999, 12, 31)]
    assert list(got["WHEN"]) == when
    pd.testing.assert_series_equal(got["HALF"], want["HALF"].astype(float))


def test_an_empty_result_keeps_the_columns(api, alice):
    r = materialize(api, alice, "NONE", "select I, S from TYPED where 1 = 0")
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 0
    assert [(c["name"], c["type"]) for c in r.json()["result"]["columns"]] == [("I", "integer"), ("S", "text")]


def test_append_adds_rows_matching_columns_by_name(api, alice):
    assert materialize(api, alice, "ACC", "select I, S from TYPED where I = 1").status_code == 201
    r = materialize(api, alice, "ACC", "select S, I from TYPED where I < 0", append=True)
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 2
    assert arrow_data(api.client, alice, "ACC").to_pylist() == [{"I": 1, "S": "a"}, {"I": -3, "S": "ç"}]
    # appending creates the table when there is none
    assert materialize(api, alice, "FRESH", "select I from TYPED", append=True).json()["result"]["row_count"] == 4


def test_append_refuses_other_columns_or_types_and_changes_nothing(api, alice):
    assert materialize(api, alice, "ACC", "select I, S from TYPED").status_code == 201
    assert_error(materialize(api, alice, "ACC", "select I from TYPED", append=True), 400, "columns")
    assert_error(materialize(api, alice, "ACC", 'select S as "I", I as "S" from TYPED', append=True), 400, "I")
    assert describe(api.client, alice, "ACC").json()["result"]["row_count"] == 4


def test_a_table_may_append_to_itself(api, alice):
    assert materialize(api, alice, "SELF", "select I from TYPED where I is not null").status_code == 201
    r = materialize(api, alice, "SELF", "select I + 100 as I from SELF", append=True)
    assert r.status_code == 201, r.text
    assert sorted(arrow_data(api.client, alice, "SELF").column("I").to_pylist()) == [-3, 1, 97, 101, 2**40, 2**40 + 100]


def test_create_over_an_existing_table_is_refused_and_keeps_it(api, alice):
    r = materialize(api, alice, "TYPED", "select I from TYPED")
    assert_error(r, 400, "already exists")
    assert r.json()["errorCode"] == 1009
    assert describe(api.client, alice, "TYPED").json()["result"]["row_count"] == 4
    assert len(describe(api.client, alice, "TYPED").json()["result"]["columns"]) == 5


def test_replace_may_read_the_table_it_replaces(api, alice):
    r = materialize(api, alice, "TYPED", "select I, S from TYPED where I > 0", params={"mode": "replace"})
    assert r.status_code == 201, r.text
    assert arrow_data(api.client, alice, "TYPED").to_pylist() == [{"I": 1, "S": "a"}, {"I": 2**40, "S": ""}]
    assert [t["table_name"] for t in listing(api.client, alice)] == ["TYPED"]  # no staging table left behind


def test_replace_keeps_the_tables_grants(api, alice):
    bob = user(api, "BOB")
    assert api.client.post(f"{EXT}/tables/TYPED/grants", headers=alice, json={"user": bob.name}).status_code == 200
    assert materialize(api, alice, "TYPED", "select I from TYPED", params={"mode": "replace"}).status_code == 201
    assert query(api, bob, f"select * from {alice.name}.typed").num_rows == 4


def test_append_with_mode_replace_is_a_contradiction(api, alice):
    r = materialize(api, alice, "X", "select I from TYPED", append=True, params={"mode": "replace"})
    assert_error(r, 400, "contradict")


def test_unnamed_expressions_need_an_alias_as_in_oracle(api, alice):
    assert_error(materialize(api, alice, "X", "select I + 1 from TYPED"), 400, "alias")
    assert_error(materialize(api, alice, "X", "select I, I from TYPED"), 400)
    assert "X" not in [t["table_name"] for t in listing(api.client, alice)]


def test_a_granted_table_can_be_copied_into_ones_own_schema(api, alice):
    bob = user(api, "BOB")
    api.client.post(f"{EXT}/tables/TYPED/grants", headers=alice, json={"user": bob.name})
    r = materialize(api, bob, "MINE", f"select I, S from {alice.name}.TYPED where I > 0")
    assert r.status_code == 201, r.text
    assert r.json()["result"]["owner"] == bob.name
    assert arrow_data(api.client, bob, "MINE").num_rows == 2


def test_a_query_past_its_time_limit_is_stopped_and_leaves_nothing(api, alice):
    sql = "with c(x) as (select 1 as x from dual union all select x + 1 from c where x < 100000000) select x from c"
    limit = api.services.settings.query_time_limit_s
    change_settings(api.services, query_time_limit_s=0.5)
    try:
        r = materialize(api, alice, "SLOW", sql)
    finally:
        change_settings(api.services, query_time_limit_s=limit)
    assert_error(r, 400, "longer than")
    assert r.json()["errorCode"] == 1040
    assert "SLOW" not in [t["table_name"] for t in listing(api.client, alice)]


def test_a_query_that_fails_midway_leaves_no_table(api, alice):
    """The query fails on its last row, after the others were inserted: the table is not there, nor half of it."""
    big = "x" * (5 * 1024 * 1024)  # over the largest value a query may read on SQLite
    rows = pd.DataFrame({"K": [1, 2, 3], "S": ["1", "2", big if api.services.user_data.kind == "sqlite" else "n/a"]})
    api.table(alice, "SOURCE", rows)
    sql = (
        "select K, S from SOURCE order by K"
        if api.services.user_data.kind == "sqlite"
        else ("select K, to_number(S) as N from SOURCE order by K")
    )
    assert_error(materialize(api, alice, "HALF", sql), 400)
    assert "HALF" not in [t["table_name"] for t in listing(api.client, alice)]
    # and appending rows that fail leaves the table as it was
    assert materialize(api, alice, "HALF", "select K from SOURCE where K = 1").status_code == 201
    bad = (
        "select K from SOURCE where length(S) > 3"
        if api.services.user_data.kind == "sqlite"
        else ("select K from SOURCE where to_number(S) > 0")
    )
    assert_error(materialize(api, alice, "HALF", bad, append=True), 400)
    assert arrow_data(api.client, alice, "HALF").to_pylist() == [{"K": 1}]


def test_the_rows_never_pass_through_the_server(api, alice):
    """100,000 rows materialized: the server's Python allocates less than the rows would take as Python values (the
    database copies them)."""
    n = 100_000
    big = pd.DataFrame({"K": range(n), "V": [float(i) / 3 for i in range(n)], "S": ["some text value"] * n})
    api.table(alice, "BIG", big)
    tracemalloc.start()
    try:
        r = materialize(api, alice, "BIG2", 'select K, V * 2 as "V2", S from BIG where K >= 0')
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == n
    assert peak < 2.5 * 1024 * 1024, peak


#: What dbt-oracle's Python model does inside the engine (`df.materialize(table=...)`), through the script's oml.
IN_ENGINE = """def mat(table, query):
    from oml._connection import current
    try:
        r = current().request("POST", "/oml/api/pyqd/v1/tables/" + table, json={"query": query})
        return {"owner": r.json()["result"]["owner"], "rows": r.json()["result"]["row_count"]}
    except Exception as e:
        return {"error": getattr(e, "status", None)}
"""


def test_a_script_materializes_through_its_callers_oml(api, alice):
    api.script(alice, "mat", IN_ENGINE)
    params = '{"table": "DBT__DBT_TMP", "query": "select I, S from TYPED where I > 0"}'
    r = api.run(alice, "do-eval", "mat", {"parameters": params})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"owner": alice.name, "rows": 2}
    assert arrow_data(api.client, alice, "DBT__DBT_TMP").num_rows == 2
    # another owner's script run without trust may only read: it makes no table in its caller's schema
    bob = user(api, "BOB")
    assert api.client.post(f"{EXT}/scripts/mat/grants", headers=alice, json={"user": bob.name}).status_code < 300
    params = '{"table": "PLANTED", "query": "select 1 as X from dual"}'
    r = api.run(bob, "do-eval", "mat", {"parameters": params}, owner=alice.name)
    assert r.status_code == 200 and r.json()["result"] == {"error": 403}, r.text
    assert listing(api.client, bob) == []
