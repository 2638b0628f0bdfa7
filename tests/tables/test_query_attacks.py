"""Input queries written by an attacker: each tries to outlive the call's deadline, to balloon the server's memory,
or to read a missing column as text. Each test asserts the attack failed with a clear OML error, in time, and
that the server still answers a normal call afterwards."""

from __future__ import annotations

import resource
import sqlite3
import time

import pandas as pd
import pytest

from tables import sqlite_query
from tables.deadline import Deadline
from tables.errors import QueryTimedOut
from tables.gate import parse_query
from tests.conftest import change_settings

#: Seconds a synchronous call may run in these tests; attacks must end within it plus GRACE_S.
LIMIT_S = 3.0
#: Margin for a busy 2-core machine (the attacks used to run 188 s past a 120 s limit).
GRACE_S = 15.0
ECHO = "def echo(d):\n    return d\n"
COUNT = "def count(d):\n    return int(len(d))\n"


@pytest.fixture
def alice(api):
    change_settings(api.services, sync_time_limit_s=120)  # raised to a short LIMIT_S only by the tests on time
    headers = api.user("ALICE")
    api.table(headers, "T", pd.DataFrame({"A": range(2000), "b": [f"v{i}" for i in range(2000)]}))
    api.script(headers, "echo", ECHO)
    api.script(headers, "count", COUNT)
    return headers


def run_query(api, alice, sql: str, script: str = "count"):
    started = time.monotonic()
    r = api.run(alice, "table-apply", script, {"input": sql})
    return r, time.monotonic() - started


def short_limit(api) -> None:
    change_settings(api.services, sync_time_limit_s=LIMIT_S)


def assert_healthy(api, alice) -> None:
    change_settings(api.services, sync_time_limit_s=120)
    r = api.run(alice, "table-apply", "count", {"input": "select * from t"})
    assert r.status_code == 200 and r.json() == {"result": 2000}, r.text


def assert_error(r, status: int, code: int, fragment: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errorCode", "errorMessage"} and body["errorCode"] == code, body
    assert fragment in body["errorMessage"], body


# --- the deadline -------------------------------------------------------------------------------------------


def test_a_four_way_cross_join_stops_at_the_calls_time_limit(api, alice):
    short_limit(api)
    r, took = run_query(api, alice, "select count(*) from t a, t b, t c, t d")
    assert_error(r, 400, 1040, "time limit")
    assert took < LIMIT_S + GRACE_S
    assert_healthy(api, alice)


def test_an_endless_recursive_query_stops_at_the_calls_time_limit(api, alice):
    short_limit(api)
    sql = "with c(x) as (select 1 from dual union all select x + 1 from c) select max(x) from c"
    r, took = run_query(api, alice, sql)
    assert_error(r, 400, 1040, "time limit")
    assert took < LIMIT_S + GRACE_S
    assert_healthy(api, alice)


def test_a_heavy_single_table_query_does_not_take_the_uninterruptible_reader(api, alice):
    short_limit(api)
    # The attack of issue 8: one table, heavy printf per row, once read by ADBC past every deadline.
    r, took = run_query(api, alice, "select printf('%.*c', 2000000000, 'x') from t")
    assert_error(r, 400, 1020, "PRINTF")
    sql = "select max(p) from (select format('%1000s', x.a) p from t x, t y, t z) q"  # heavy, allowed, stoppable
    r, took = run_query(api, alice, sql)
    assert_error(r, 400, 1040, "time limit")
    assert took < LIMIT_S + GRACE_S
    assert_healthy(api, alice)


def test_a_job_query_stops_at_the_jobs_timeout(api, alice):
    from tests.conftest import wait_for

    body = {"input": "select count(*) from t a, t b, t c", "asyncFlag": True, "timeout": 2}
    r = api.run(alice, "table-apply", "count", body)
    assert r.status_code == 201, r.text
    location = "/oml/api/" + r.headers["location"].split("/api/", 1)[1]
    wait_for(lambda: api.client.get(location, headers=alice).status_code == 302, timeout=LIMIT_S + GRACE_S + 10)
    assert_error(api.client.get(location + "/result", headers=alice), 400, 1040, "timeout")
    assert_healthy(api, alice)


def test_a_plain_scan_is_abandoned_between_batches_once_the_deadline_passes(api, alice, services):
    if services.user_data.kind != "sqlite":
        pytest.skip("the ADBC SQLite reader")
    with services.sessions() as session:
        from tables import query as tq

        gated = tq.gate_query(session, services.user_data, "ALICE", "select a, b from t where a >= 0")
    assert gated.plain_scan_of("ALICE")
    deadline = Deadline(60)
    batches = sqlite_query.stream({"ALICE": str(services.user_data.path("ALICE"))}, gated, "ALICE", 100, deadline)
    assert next(batches).num_rows == 100
    deadline.at = time.monotonic() - 1  # the deadline passes while the consumer works on the first batch
    with pytest.raises(QueryTimedOut):
        next(batches)


# --- memory ---------------------------------------------------------------------------------------------


def test_a_huge_computed_value_is_refused_before_it_fills_the_server(api, alice, services):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if services.user_data.kind == "sqlite":
        # 1000 × 1000 × 1000 characters = 1 GB, if nothing stopped it
        wide = "printf('%1000d', 1)"
        sql = f"select replace(replace({wide}, ' ', {wide}), ' ', {wide}) v from dual"
        fragment = "value over"
    else:  # the same 1 GB without REPEAT or a huge pad length, which the gate refuses outright
        wide = "lpad('x', 1000)"
        sql = f"select replace(replace({wide}, ' ', {wide}), ' ', {wide}) v from dual"
        fragment = "row larger than"
    r, _ = run_query(api, alice, sql, script="echo")
    assert_error(r, 400, 1020, fragment)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 300, f"the server grew by {grown_mib:.0f} MiB"
    assert_healthy(api, alice)


def test_many_large_values_are_cut_into_batches_by_bytes(tmp_path, monkeypatch):
    path = tmp_path / "ALICE.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "T" ("A" INTEGER)')
        conn.executemany('INSERT INTO "T" VALUES (?)', [(i,) for i in range(64)])
    gated = parse_query("select a, printf('%1000d', a) p from t", "ALICE")
    batches = list(sqlite_query.stream({"ALICE": str(path)}, gated, "ALICE", 65_536, Deadline(60)))
    assert sum(b.num_rows for b in batches) == 64 and len(batches) == 1
    monkeypatch.setattr(sqlite_query, "BATCH_BYTES", 10_000)
    monkeypatch.setattr(sqlite_query, "FETCH_ROWS", 4)
    batches = list(sqlite_query.stream({"ALICE": str(path)}, gated, "ALICE", 65_536, Deadline(60)))
    assert sum(b.num_rows for b in batches) == 64
    # Rows of ~1000 bytes are fetched one at a time here (a sixteenth of 10,000 bytes holds none), so a batch is
    # cut as soon as it reaches the bound: never a fetch's worth past it.
    assert [b.num_rows for b in batches] == [10] * 6 + [4]


# --- double-quoted names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        'select "NOPE" from t',  # a plain scan: would take the ADBC reader if the column existed
        'select "NOPE", upper(b) from t',  # computed: the sqlite3 reader
        'select x."NOPE" from t x, t y where x.a = y.a',
        "select a from t where \"NOPE\" = 'NOPE'",
    ],
)
def test_an_unknown_double_quoted_column_is_an_error_not_a_string(api, alice, sql):
    r, _ = run_query(api, alice, sql, script="echo")
    assert_error(r, 400, 1020)
    assert "NOPE" in r.json()["errorMessage"]
    assert_healthy(api, alice)


def test_known_double_quoted_columns_still_read_on_both_readers(api, alice):
    for sql in ('select "A", "b" from t where "A" < 2', 'select "A", upper("b") "B" from t where "A" < 2'):
        r, _ = run_query(api, alice, sql, script="echo")
        assert r.status_code == 200, r.text
        assert [row["A"] for row in r.json()["result"]] == [0, 1]


def test_double_quoted_strings_are_turned_off_on_a_python_311_connection():
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, sqlite_query.MAX_VALUE_BYTES)
    conn.execute("CREATE TABLE t (a)")
    assert conn.execute('SELECT "NOPE" FROM t UNION ALL SELECT "NOPE"').fetchall() == [("NOPE",)]
    sqlite_query.refuse_double_quoted_strings(conn)
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        conn.execute('SELECT "NOPE"')
    assert conn.execute("SELECT 'text', count(*) FROM t").fetchall() == [("text", 0)]


# --- error codes --------------------------------------------------------------------------------------


def test_a_query_that_fails_in_the_database_is_errorcode_1020(api, alice, services):
    sql = "select json_extract('{bad', '$') from dual" if services.user_data.kind == "sqlite" else "select 1/0 from t"
    r, _ = run_query(api, alice, sql)
    assert_error(r, 400, 1020, "input query failed")
    assert_healthy(api, alice)


def test_a_plain_scan_of_wide_stored_rows_comes_in_small_batches(tmp_path, monkeypatch):
    path = tmp_path / "ALICE.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "T" ("A" INTEGER, "B" TEXT)')
        conn.executemany('INSERT INTO "T" VALUES (?, ?)', [(i, "x" * 100_000) for i in range(100)])
    gated = parse_query("select a, b from t", "ALICE")
    (ref,) = gated.tables
    gated = gated.with_columns({ref: frozenset({"A", "B"})}, {ref: 100})
    assert gated.plain_scan_of("ALICE")
    monkeypatch.setattr(sqlite_query, "BATCH_BYTES", 1_000_000)
    batches = list(sqlite_query.stream({"ALICE": str(path)}, gated, "ALICE", 65_536, Deadline(60)))
    assert sum(b.num_rows for b in batches) == 100
    assert max(b.num_rows for b in batches) == sqlite_query.MIN_SCAN_BATCH_ROWS


def test_wide_rows_are_fetched_a_few_at_a_time(tmp_path):
    """Rows of 2 MiB through the sqlite3 reader: fetched a thousand at a time, the red team's version of this
    query took 2 GB of server memory in one fetch; now each batch stays within a few rows of the byte bound."""
    path = tmp_path / "ALICE.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "T" ("N" INTEGER, "V" TEXT)')
        conn.executemany('INSERT INTO "T" VALUES (?, ?)', [(i, "x" * 2097152) for i in range(40)])
    gated = parse_query("select n, v || '' as w from t", "ALICE")  # computed: not a plain scan
    rows = 0
    for batch in sqlite_query.stream({"ALICE": str(path)}, gated, "ALICE", 65_536, Deadline(120)):
        rows += batch.num_rows
        assert batch.nbytes <= sqlite_query.BATCH_BYTES + 3 * 2097152
    assert rows == 40
