"""Attacks on the write door (materialize and uploads, temporary or not): nothing is written outside the caller's
own schema, whatever the name, parameters or body say; a query that writes, or reads what the caller may not read,
is refused and leaves nothing; and the database itself refuses what a fooled gate would let through."""

from __future__ import annotations

import time
from urllib.parse import quote

import psycopg
import pytest
import sqlglot

from tables import pg_materialize, sqlite_materialize
from tables.deadline import Deadline
from tables.errors import QueryRejected
from tables.gate import GatedQuery, TableRef
from tests.tables.test_materialize import User, materialize, user
from tests.tables.test_tables_api import TYPED, arrow_data, assert_error, listing, parquet_bytes, upload

EXT = "/oml/api/pyqd/v1"


@pytest.fixture
def api(module_api):
    return module_api


def make_pair(api) -> tuple[User, User]:
    """MALLORY (the attacker, with table MINE) and BOB (the victim, with table SECRET)."""
    mallory, bob = user(api, "MALLORY"), user(api, "BOB")
    assert upload(api.client, bob, "SECRET", parquet_bytes(TYPED), fmt="parquet").status_code == 201
    assert upload(api.client, mallory, "MINE", parquet_bytes(TYPED), fmt="parquet").status_code == 201
    return mallory, bob


@pytest.fixture
def pair(api) -> tuple[User, User]:
    return make_pair(api)


@pytest.fixture(scope="module")
def shared_pair(module_api) -> tuple[User, User]:
    """One pair for the many attacks that must change nothing (each checks that nothing changed)."""
    return make_pair(module_api)


def push(api, who, name: str, data: bytes = b"A\n1\n", **params: str):
    """Upload CSV as a temporary table (what `oml.push` does)."""
    params = {"format": "csv", "temporary": "true", **params}
    return api.client.post(f"{EXT}/tables/{name}", headers=who, params=params, content=data)


def tables_of(api, who: User) -> list[str]:
    return [t["table_name"] for t in listing(api.client, who)]


def untouched(api, mallory: User, bob: User) -> None:
    assert tables_of(api, bob) == ["SECRET"]
    assert arrow_data(api.client, bob, "SECRET").num_rows == 4
    assert tables_of(api, mallory) == ["MINE"]


HOSTILE_NAMES = [
    "{bob}.T",
    "{bob}.SECRET",
    '"{bob}"."T"',
    "T;DROP TABLE SECRET",
    "T--",
    "../{bob}/T",
    "T%00",
    "T'",
    "sqlite_master",
    "pg_class",
    "pyqd_stage_x",
    "PYQD_TEMP_TABLES",
    "SELECT",
    "A" * 64,
    "A" * 10_000,
    "Tä",
    " T",
    "1T",
]


@pytest.mark.parametrize("raw", HOSTILE_NAMES)
def test_hostile_table_names_are_refused_and_write_nothing(api, shared_pair, raw):
    mallory, bob = shared_pair
    name = raw.format(bob=bob.name)
    path = f"{EXT}/tables/{quote(name, safe='')}"
    for r in (
        api.client.post(path, headers=mallory, json={"query": "select * from MINE"}),
        api.client.post(path, headers=mallory, params={"format": "csv", "temporary": "true"}, content=b"A\n1\n"),
        api.client.post(f"{path}/keep", headers=mallory),
        api.client.delete(path, headers=mallory),
    ):
        assert r.status_code in (400, 404, 405), (name, r.status_code, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
    untouched(api, mallory, bob)


def test_owner_parameters_and_body_fields_never_redirect_a_write(api, pair):
    mallory, bob = pair
    # an `owner` parameter is not a parameter of writes: the table lands in the caller's schema
    body = {"query": "select I from MINE"}
    r = api.client.post(f"{EXT}/tables/T1", headers=mallory, params={"owner": bob.name}, json=body)
    assert r.status_code == 201 and r.json()["result"]["owner"] == mallory.name, r.text
    params = {"owner": bob.name, "format": "csv"}
    r = api.client.post(f"{EXT}/tables/T2", headers=mallory, params=params, content=b"A\n1\n")
    assert r.status_code == 201 and r.json()["result"]["owner"] == mallory.name, r.text
    r = push(api, mallory, "T3", owner=bob.name)
    assert r.status_code == 201 and r.json()["result"]["owner"] == mallory.name, r.text
    # fields a materialize body does not have are refused, not ignored
    for extra in ({"owner": bob.name}, {"schema": bob.name}, {"table": f"{bob.name}.T"}, {"mode": "replace"}):
        r = materialize(api, mallory, "T4", "select I from MINE", **extra)
        assert_error(r, 400, "Invalid materialize request")
    # the victim's name as a table name is just a name in the caller's schema
    r = materialize(api, mallory, bob.name, "select I from MINE")
    assert r.status_code == 201 and r.json()["result"]["owner"] == mallory.name
    assert tables_of(api, bob) == ["SECRET"]
    assert sorted(tables_of(api, mallory)) == sorted(["MINE", "T1", "T2", "T3", bob.name])


def test_a_query_reading_what_the_caller_may_not_read_is_refused_and_leaves_nothing(api, pair):
    mallory, bob = pair
    for sql in (
        f"select * from {bob.name}.SECRET",
        f'select * from "{bob.name}"."SECRET"',
        f"select I from MINE where I in (select I from {bob.name}.SECRET)",
        f"with s as (select * from {bob.name}.SECRET) select * from s",
        f"select m.I from MINE m join {bob.name}.SECRET s on m.I = s.I",
        "select * from NOSUCH",
        "select * from PYQD.PYQD_TABLE_GRANTS",
        "select * from pyqd_temp_tables",
        "select * from sqlite_master",
        "select * from information_schema.tables",
        "select * from pg_catalog.pg_tables",
    ):
        for mode in ({}, {"mode": "replace"}):
            r = materialize(api, mallory, "STOLEN", sql, params=mode)
            assert r.status_code == 400, (sql, r.text)
            assert r.json()["errorCode"] in (1020, 1000), r.text
        r = materialize(api, mallory, "MINE", sql, append=True)
        assert r.status_code == 400, (sql, r.text)
    untouched(api, mallory, bob)
    assert arrow_data(api.client, mallory, "MINE").num_rows == 4


WRITES = [
    "insert into MINE (I) values (1)",
    "update MINE set I = 0",
    "delete from MINE",
    "drop table MINE",
    "create table X as select * from MINE",
    "truncate table MINE",
    "with d as (delete from MINE returning *) select * from d",
    "select * from MINE; drop table MINE",
    "merge into MINE m using MINE s on (m.I = s.I) when matched then update set m.F = 0",
    "grant select on MINE to public",
    "alter table MINE add (Z number)",
    "select * from MINE for update",
    "select set_config('role', 'postgres', false) as x from dual",
    "select pg_read_file('/etc/passwd') as x from dual",
    "select load_extension('x') as x from dual",
    "begin; select 1 as x from dual; commit",
]


@pytest.mark.parametrize("sql", WRITES)
def test_a_query_that_writes_is_refused_and_changes_nothing(api, shared_pair, sql):
    mallory, bob = shared_pair
    for r in (materialize(api, mallory, "W", sql), materialize(api, mallory, "MINE", sql, append=True)):
        assert r.status_code == 400, (sql, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
    untouched(api, mallory, bob)
    assert arrow_data(api.client, mallory, "MINE").num_rows == 4


def test_a_temporary_table_of_one_user_is_invisible_to_another(api, pair):
    mallory, bob = pair
    r = push(api, bob, "PUSHED", parquet_bytes(TYPED), format="parquet")
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    assert "PUSHED" not in tables_of(api, mallory)
    assert all(t["table_name"] != "PUSHED" for t in listing(api.client, mallory, "all"))
    assert api.client.get(f"{EXT}/tables/PUSHED", headers=mallory, params={"owner": bob.name}).status_code == 404
    assert api.client.get(f"{EXT}/tables/PUSHED/data", headers=mallory, params={"owner": bob.name}).status_code == 404
    assert materialize(api, mallory, "COPY", f"select * from {bob.name}.PUSHED").status_code == 400
    r = api.client.post(f"{EXT}/query", headers=mallory, json={"query": f"select * from {bob.name}.PUSHED"})
    assert r.status_code == 400
    # keep and drop act on the caller's own table of that name (there is none), never on BOB's
    assert api.client.post(f"{EXT}/tables/PUSHED/keep", headers=mallory).status_code == 404
    assert api.client.delete(f"{EXT}/tables/PUSHED", headers=mallory).status_code == 404
    r = api.client.get(f"{EXT}/tables/PUSHED", headers=bob)
    assert r.status_code == 200 and r.json()["result"]["temporary"] is True


# -- the database's own wall: a gate fooled into passing a query -------------------------------------------------
def sneak(sql: str, tables: tuple[TableRef, ...]) -> GatedQuery:
    """A 'gated' query built without the gate (as if it had been fooled)."""
    return GatedQuery(sqlglot.parse_one(sql, read="postgres"), tables)


def backend_materialize(api, gated: GatedQuery, caller: str, name: str) -> None:
    store = api.services.user_data
    if store.kind == "sqlite":
        sqlite_materialize.materialize(store, gated, caller, name, "create", Deadline(30), {})
    else:
        pg_materialize.materialize(store, gated, caller, name, "create", Deadline(30))


def test_the_database_refuses_an_ungranted_read_a_fooled_gate_let_through(api, pair):
    mallory, bob = pair
    # MALLORY's query claims to read only her own table, but names BOB's
    claimed = (TableRef(mallory.name, "MINE"),)
    for sql in (
        f'SELECT * FROM "{bob.name}"."SECRET"',
        f'SELECT "I" FROM "{mallory.name}"."MINE" UNION ALL SELECT "I" FROM "{bob.name}"."SECRET"',
    ):
        with pytest.raises(QueryRejected):
            backend_materialize(api, sneak(sql, claimed), mallory.name, "STOLEN")
    untouched(api, mallory, bob)


def test_the_database_refuses_functions_a_fooled_gate_let_through(api, pair):
    mallory, bob = pair
    sql = (
        "SELECT load_extension('/nonexistent') AS x"
        if api.services.user_data.kind == "sqlite"
        else ("SELECT pg_read_file('/etc/hostname') AS x")
    )
    with pytest.raises(QueryRejected):
        backend_materialize(api, sneak(sql, ()), mallory.name, "STOLEN")
    untouched(api, mallory, bob)


def test_the_callers_role_keeps_no_write_right_after_a_materialize(api, pair):
    if api.services.user_data.kind != "postgresql":
        pytest.skip("PostgreSQL roles")
    mallory, _ = pair
    store = api.services.user_data
    role = store.role_for(mallory.name)
    assert role is not None
    assert materialize(api, mallory, "MADE", "select I from MINE").status_code == 201
    assert materialize(api, mallory, "MINE", "select * from MINE", params={"mode": "replace"}).status_code == 201
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        for table in ("MADE", "MINE"):
            privileges = conn.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = %s AND table_schema = %s AND table_name = %s",
                (role, mallory.name, table),
            ).fetchall()
            assert [p for (p,) in privileges] == ["SELECT"], (table, privileges)
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s", (mallory.name, table)
            ).fetchone()
            assert owner is not None and owner[0] != role


# -- script tokens -------------------------------------------------------------------------------------------------
def script_token(api, who: User, *, read_only: bool = False) -> dict[str, str]:
    signer = api.services.signer
    claims = signer.decode(who["Authorization"].split(" ", 1)[1])
    token = signer.issue_script(claims, "call-1", expires_at=time.time() + 600, read_only=read_only).token
    return {"Authorization": f"Bearer {token}"}


def test_a_script_token_may_add_tables_but_not_replace_or_drop_permanent_ones(api, pair):
    mallory, bob = pair
    script = script_token(api, mallory)
    # what `oml.create`, `oml.push` and dbt's materialize do inside the engine
    assert upload(api.client, script, "CREATED", b"A\n1\n", fmt="csv").status_code == 201
    assert upload(api.client, script, "CREATED", b"A\n2\n", fmt="csv", mode="append").status_code == 201
    assert materialize(api, script, "DBT__DBT_TMP", "select I, S from MINE").status_code == 201
    r = push(api, script, "PUSHED")
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    assert api.client.delete(f"{EXT}/tables/PUSHED", headers=script).status_code == 200  # its own temporary table
    # never destroying a permanent table
    for r in (
        upload(api.client, script, "MINE", b"A\n1\n", fmt="csv", mode="replace"),
        materialize(api, script, "MINE", "select I from MINE", params={"mode": "replace"}),
        api.client.delete(f"{EXT}/tables/MINE", headers=script),
        api.client.delete(f"{EXT}/tables/NOSUCH", headers=script),
    ):
        assert r.status_code == 403 and r.json()["errorCode"] == 1003, r.text
    assert arrow_data(api.client, mallory, "MINE").num_rows == 4
    # nor granting (the one way out of the caller's schema)
    assert api.client.post(f"{EXT}/tables/MINE/grants", headers=script, json={"user": bob.name}).status_code == 403
    # and like the caller, it writes only into the caller's schema
    r = materialize(api, script, "STOLEN", f"select * from {bob.name}.SECRET")
    assert r.status_code == 400
    assert sorted(tables_of(api, mallory)) == ["CREATED", "DBT__DBT_TMP", "MINE"]
    assert tables_of(api, bob) == ["SECRET"]


def test_a_read_only_script_token_writes_nothing(api, pair):
    mallory, bob = pair
    reader = script_token(api, bob, read_only=True)  # another owner's script, run by BOB without trust
    assert push(api, bob, "TMP").status_code == 201
    for r in (
        upload(api.client, reader, "NEW", b"A\n1\n", fmt="csv"),
        materialize(api, reader, "NEW", "select * from SECRET"),
        push(api, reader, "NEW"),
        api.client.post(f"{EXT}/tables/TMP/keep", headers=reader),
        api.client.delete(f"{EXT}/tables/TMP", headers=reader),
        materialize(api, reader, "SECRET", "select * from SECRET", append=True),
    ):
        assert r.status_code == 403 and r.json()["errorCode"] == 1003, r.text
    assert sorted(tables_of(api, bob)) == ["SECRET", "TMP"]
    assert api.client.get(f"{EXT}/tables/TMP", headers=bob).json()["result"]["temporary"] is True
    assert arrow_data(api.client, bob, "SECRET").num_rows == 4
    # reading still works
    assert api.client.get(f"{EXT}/tables", headers=reader).status_code == 200
