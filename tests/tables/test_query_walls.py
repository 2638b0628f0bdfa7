"""The database's own wall: even a query the gate were fooled into passing cannot write, or read a table the
caller was not granted. These tests hand the readers queries the gate would have refused."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlglot

from tables import query as tq
from tables.errors import QueryRejected
from tables.gate import GatedQuery, TableRef


def sneak(sql: str, tables: tuple[TableRef, ...]) -> GatedQuery:
    """A 'gated' query built without the gate."""
    return GatedQuery(sqlglot.parse_one(sql, read="postgres"), tables)


@pytest.fixture
def two_users(api):
    alice, bob = api.user("ALICE"), api.user("BOB")
    api.table(alice, "SECRET", pd.DataFrame({"V": [1]}))
    api.table(bob, "MINE", pd.DataFrame({"V": [2]}))
    return api


def read(services, gated, caller="BOB"):
    return list(tq.stream_query(services.user_data, gated, caller, timeout_s=10))


def test_an_ungranted_table_is_refused_by_the_database(two_users, services):
    # BOB's query claims to read only his own table, but names ALICE's.
    gated = sneak('SELECT * FROM "ALICE"."SECRET"', (TableRef("BOB", "MINE"),))
    with pytest.raises(QueryRejected):
        read(services, gated)


def test_a_write_is_refused_by_the_database(two_users, services):
    if services.user_data.kind == "sqlite":
        gated = sneak('DELETE FROM "BOB"."MINE"', (TableRef("BOB", "MINE"),))
    else:
        gated = sneak('WITH d AS (DELETE FROM "BOB"."MINE" RETURNING *) SELECT * FROM d', (TableRef("BOB", "MINE"),))
    with pytest.raises(QueryRejected):
        read(services, gated)
    assert [b.num_rows for b in read(services, sneak('SELECT * FROM "BOB"."MINE"', (TableRef("BOB", "MINE"),)))] == [1]


def test_file_reading_functions_are_refused_by_the_database(two_users, services):
    if services.user_data.kind == "sqlite":
        gated = sneak("SELECT load_extension('/nonexistent')", ())
    else:
        gated = sneak("SELECT pg_read_file('/etc/hostname')", ())
    with pytest.raises(QueryRejected):
        read(services, gated)


def test_the_query_time_limit_stops_a_runaway_query(two_users, services):
    if services.user_data.kind == "sqlite":
        sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    else:
        sql = "SELECT count(*) FROM generate_series(1, 1000000000000)"
    with pytest.raises(QueryRejected, match="longer than"):
        list(tq.stream_query(services.user_data, sneak(sql, ()), "BOB", timeout_s=0.5))
