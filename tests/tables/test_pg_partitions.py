"""Partitioned reads of input queries on PostgreSQL (`tables.pg_partitions`): every row of the single stream
exactly once on one snapshot, and the wall around the call's own login role, attacked with its conninfo directly
(as whoever holds a Dask worker would)."""

from __future__ import annotations

import dataclasses
import pickle
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tables import pg_partitions as pp
from tables import query as tq
from tables import service
from tables.errors import QueryRejected, QueryTimedOut
from tables.gate import GatedQuery, parse_query
from tables.pg_store import PostgresStore, default_role_prefix
from tables.sqlite_store import SqliteStore
from tests.conftest import _admin_execute, _drop_database, _drop_roles, _pg_url, wait_for

pytestmark = pytest.mark.postgres

#: Rows of the test table: a few hundred blocks, so four partitions have work each.
ROWS = 30_000


@dataclass
class Db:
    store: PostgresStore
    session: Session
    url: str

    def admin(self) -> psycopg.Connection:
        """A superuser connection to the test database (to set up data and inspect roles)."""
        return psycopg.connect(self.url, autocommit=True)

    def gate(self, caller: str, sql: str) -> GatedQuery:
        return tq.gate_query(self.session, self.store, caller, sql)

    def plan(self, caller: str, sql: str, **kw: object) -> pp.PartitionedRead | None:
        args: dict = dict(partitions=4, min_rows=1000, expires_in_s=300) | kw
        return tq.partition_query(self.store, self.gate(caller, sql), caller, **args)

    def stream(self, caller: str, sql: str) -> pa.Table:
        return pa.Table.from_batches(list(tq.stream_query(self.store, self.gate(caller, sql), caller, timeout_s=60)))


@pytest.fixture
def db(pg_template: str) -> Iterator[Db]:
    name = f"{pg_template}_p{secrets.token_hex(3)}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    engine = create_engine(_pg_url(name))
    store = PostgresStore(engine)
    session = Session(engine)
    url = make_url(_pg_url(name)).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        for user in ("ALICE", "BOB", "CAROL"):
            store.ensure_schema(user)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                'CREATE TABLE "ALICE"."BIG" AS SELECT g::bigint AS "ID", g * 0.5::float8 AS "X", '
                "'s' || g AS \"S\", g % 3 = 0 AS \"B\", timestamp '2024-01-01' + g * interval '1 minute' AS \"T\", "
                f'(g / 7.0)::numeric(12, 2) AS "N" FROM generate_series(1, {ROWS}) g'
            )
            conn.execute('CREATE TABLE "ALICE"."SMALL" AS SELECT g::bigint AS "ID" FROM generate_series(1, 10) g')
            conn.execute('CREATE TABLE "BOB"."MINE" AS SELECT g::bigint AS "ID" FROM generate_series(1, 5000) g')
            conn.execute('CREATE TABLE "CAROL"."SECRET" AS SELECT g::bigint AS "ID" FROM generate_series(1, 100) g')
        yield Db(store, session, url)
    finally:
        session.close()
        store.adbc_pool.close()
        engine.dispose()
        _drop_database(name)
        _drop_roles(default_role_prefix(name))


def read_all(plan: pp.PartitionedRead, timeout_s: float = 60) -> list[pa.Table]:
    """Every partition read in its own thread, as workers would."""

    def one(p: pp.Partition) -> pa.Table:
        batches = list(pp.read_partition(p, timeout_s=timeout_s))
        return pa.Table.from_batches(batches)

    with ThreadPoolExecutor(len(plan.partitions)) as pool:
        return list(pool.map(one, plan.partitions))


def rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*(c.to_pylist() for c in table.columns), strict=True))


def connect(p: pp.Partition) -> psycopg.Connection:
    """A session of the call's role, opened with its conninfo (password included: nothing here relies on trust)."""
    return psycopg.connect(p.conninfo, autocommit=True)


# --- every row exactly once -------------------------------------------------------------------------------------


def test_partitions_return_every_row_of_the_single_stream_exactly_once(db):
    with db.admin() as conn:
        conn.execute('DELETE FROM "ALICE"."BIG" WHERE "ID" % 7 = 0')
        conn.execute('UPDATE "ALICE"."BIG" SET "X" = -"X" WHERE "ID" % 5 = 0')  # new row versions, elsewhere
    sql = "select * from big where id < 20000 or s like 's2999%'"
    expected = db.stream("ALICE", sql)
    with db.plan("ALICE", sql) as plan:
        assert len(plan.partitions) == 4
        first, last = plan.partitions[0].sql, plan.partitions[-1].sql
        assert '"ctid" <' in first and '"ctid" >=' not in first  # the ends are open: no row is missed
        assert '"ctid" >=' in last and '"ctid" <' not in last
        parts = read_all(plan)
    assert all(t.num_rows > 0 for t in parts)
    got = pa.concat_tables(parts)
    ids = got.column("ID").to_pylist()
    assert len(ids) == len(set(ids)) == expected.num_rows
    assert rows(got) == rows(expected)
    assert not any(i % 7 == 0 for i in ids)  # deleted rows are absent
    assert all(x < 0 for i, x in zip(ids, got.column("X").to_pylist(), strict=True) if i % 5 == 0)  # updates seen
    assert all(i < 20000 or str(i).startswith("2999") for i in ids)  # the WHERE is honoured


def test_columns_and_types_are_those_of_the_single_stream(db):
    sql = 'select id, x * 2 as y, upper(s) as "u", b, t, n from big where b and id > 10'  # computed: size-checked
    expected = db.stream("ALICE", sql)
    with db.plan("ALICE", sql) as plan:
        assert all("PYQD_R" in p.sql for p in plan.partitions)
        with db.admin() as conn:  # each partition reads its own blocks, not the whole table
            for p in plan.partitions:
                assert "Tid Range Scan" in "\n".join(r[0] for r in conn.execute(f"EXPLAIN {p.sql}").fetchall())
        parts = read_all(plan)
    for part in parts:
        assert part.schema.names == expected.schema.names == ["ID", "Y", "u", "B", "T", "N"]
        assert part.schema.types == expected.schema.types
    assert expected.schema.field("N").type == pa.float64()  # NUMERIC as float, as OML's NUMBER
    assert rows(pa.concat_tables(parts)) == rows(expected)


def test_a_row_changed_after_planning_is_seen_by_no_partition(db):
    sql = "select id, x from big"
    before = db.stream("ALICE", sql)
    with db.plan("ALICE", sql) as plan:
        assert not any("PYQD_R" in p.sql for p in plan.partitions)  # a plain scan: no size check, as the stream
        with db.admin() as conn:
            assert "Tid Range Scan" in conn.execute(f"EXPLAIN {plan.partitions[1].sql}").fetchone()[0]
        with db.admin() as conn:
            conn.execute('INSERT INTO "ALICE"."BIG" ("ID", "X") SELECT g, 0 FROM generate_series(900001, 905000) g')
            conn.execute('DELETE FROM "ALICE"."BIG" WHERE "ID" <= 100')
            conn.execute('UPDATE "ALICE"."BIG" SET "X" = 12345 WHERE "ID" = 500')
        assert db.stream("ALICE", sql).num_rows == ROWS + 5000 - 100  # the single stream now sees the changes
        got = pa.concat_tables(read_all(plan))
    assert rows(got) == rows(before)


def test_a_table_granted_to_the_caller_or_to_public_is_read_in_partitions(db):
    service.grant(db.session, db.store, "ALICE", "BIG", "BOB")
    service.grant(db.session, db.store, "BOB", "MINE", None)
    db.session.commit()
    for caller, sql in (("BOB", "select id from alice.big where id > 100"), ("CAROL", "select * from bob.mine")):
        expected = db.stream(caller, sql)
        with db.plan(caller, sql, min_rows=100) as plan:
            assert rows(pa.concat_tables(read_all(plan))) == rows(expected)


def test_a_partition_is_plain_values_and_hides_its_password(db):
    with db.plan("ALICE", "select id from big") as plan:
        p = plan.partitions[0]
        password = make_url(p.conninfo).password
        assert password and len(password) == 64
        assert pickle.loads(pickle.dumps(p)) == p
        assert password not in repr(p) and password not in repr(plan)
        with db.admin() as conn:  # the statement that made the role held a SCRAM verifier, not the password
            (stored,) = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (plan.role,)).fetchone()
        assert stored.startswith("SCRAM-SHA-256$") and password not in stored
        with pytest.raises(QueryRejected) as e:
            list(pp.read_partition(dataclasses.replace(p, sql="SELECT * FROM nowhere"), timeout_s=10))
        assert password not in str(e.value)


# --- when not to partition ---------------------------------------------------------------------------------------


NOT_PARTITIONED = [
    "select count(*) from big",
    "select b, avg(x) from big group by b",
    "select median(x) from big",
    "select listagg(s, ',') within group (order by id) from big where id < 3",
    "select distinct b from big",
    "select * from big order by id",
    "select * from big where rownum <= 10",
    "select * from big fetch first 5 rows only",
    "select id, row_number() over (order by id) r from big",
    "select a.id from big a join big b on a.id = b.id",
    "select id from big, bob.mine",
    "select * from big where id in (select id from big where b)",
    "select * from (select * from big)",
    "with q as (select * from big) select * from q",
    "select id from big union all select id from big",
    "select (select max(id) from big) m from big",
]


def test_queries_that_are_not_a_filtered_projection_of_one_table_are_not_partitioned(db):
    service.grant(db.session, db.store, "BOB", "MINE", "ALICE")
    db.session.commit()
    assert [sql for sql in NOT_PARTITIONED if db.plan("ALICE", sql) is not None] == []


def test_filtered_projections_of_one_table_are_partitionable():
    for sql in (
        "select * from big",
        "select id, nvl(s, 'x') v, x * 2 from big b where b.id > 3 and (s like 'a%' or not b)",
        "select to_char(t, 'YYYY') y, round(x, 2), upper(s) from alice.big where id between 1 and 10",
        "select id from big where s in ('a', 'b') and n is not null",
    ):
        assert pp.partitionable(parse_query(sql, "ALICE")), sql
    assert not any(pp.partitionable(parse_query(sql, "ALICE")) for sql in NOT_PARTITIONED)


def test_small_tables_stores_without_roles_and_sqlite_are_not_partitioned(db, tmp_path):
    assert db.plan("ALICE", "select * from small") is None
    assert db.plan("ALICE", "select * from big", min_rows=ROWS + 1) is None
    assert db.plan("ALICE", "select * from big", partitions=1) is None
    gated = db.gate("ALICE", "select * from big")
    no_roles = PostgresStore(db.store.engine, roles=False, role_prefix=db.store.role_prefix)
    assert pp.plan_partitions(no_roles, gated, "ALICE", partitions=4, min_rows=10, expires_in_s=60) is None
    sqlite = SqliteStore(tmp_path / "schemas")
    gated = parse_query("select * from big", "ALICE")
    assert tq.partition_query(sqlite, gated, "ALICE", partitions=4, min_rows=1, expires_in_s=60) is None
    with db.admin() as conn:  # nothing was left behind by the refusals
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE '%\\_c\\_%'").fetchone() == (0,)


def test_the_planner_estimate_decides_once_the_table_is_analyzed(db):
    with db.admin() as conn:
        conn.execute('ANALYZE "ALICE"."BIG"')
    gated = db.gate("ALICE", "select * from big")
    gated = GatedQuery(gated.tree, gated.tables, gated.columns, {})  # no count from the gate: pg_class alone
    plan = pp.plan_partitions(db.store, gated, "ALICE", partitions=3, min_rows=ROWS // 2, expires_in_s=60)
    assert plan is not None and len(plan.partitions) == 3
    plan.close()
    assert pp.plan_partitions(db.store, gated, "ALICE", partitions=3, min_rows=ROWS * 2, expires_in_s=60) is None


# --- the call's role: attacks with its conninfo -----------------------------------------------------------------


def test_the_call_role_cannot_read_another_users_ungranted_table(db):
    with db.plan("ALICE", "select id from big") as plan:
        p = plan.partitions[0]
        with pytest.raises(QueryRejected, match="may not read"):
            list(pp.read_partition(dataclasses.replace(p, sql='SELECT * FROM "CAROL"."SECRET"'), timeout_s=10))
        with connect(p) as conn:
            for sql in ('SELECT * FROM "CAROL"."SECRET"', 'SELECT * FROM "BOB"."MINE"'):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
            assert conn.execute('SELECT count(*) FROM "ALICE"."BIG"').fetchone() == (ROWS,)


WRITES = [
    'INSERT INTO "ALICE"."BIG" ("ID") VALUES (-1)',
    'UPDATE "ALICE"."BIG" SET "X" = 0',
    'DELETE FROM "ALICE"."BIG"',
    'TRUNCATE "ALICE"."BIG"',
    'CREATE TABLE "ALICE"."NEW" (a int)',
    "CREATE TABLE public.new (a int)",
    "CREATE TEMP TABLE t AS SELECT 1 AS a",
    'CREATE SCHEMA "EVIL"',
    'CREATE INDEX ON "ALICE"."BIG" ("ID")',
    'ALTER TABLE "ALICE"."BIG" ADD COLUMN z int',
    'DROP TABLE "ALICE"."BIG"',
    "CREATE ROLE evil LOGIN",
    "ALTER ROLE CURRENT_USER VALID UNTIL 'infinity'",
    "ALTER ROLE CURRENT_USER CONNECTION LIMIT -1",
]


def test_the_call_role_cannot_write_even_outside_a_read_only_transaction(db):
    with db.plan("ALICE", "select id from big") as plan, connect(plan.partitions[0]) as conn:
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)  # the role alone is the wall
        for sql in WRITES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
    with db.admin() as conn:
        assert conn.execute('SELECT count(*), sum("X") FROM "ALICE"."BIG"').fetchone() == (ROWS, ROWS * (ROWS + 1) / 4)


def test_a_query_in_read_partition_cannot_write(db):
    with db.plan("ALICE", "select id from big") as plan:
        p = dataclasses.replace(
            plan.partitions[0], sql='WITH d AS (DELETE FROM "ALICE"."BIG" RETURNING *) SELECT * FROM d', role=None
        )
        with pytest.raises(QueryRejected):
            list(pp.read_partition(p, timeout_s=10))
    with db.admin() as conn:
        assert conn.execute('SELECT count(*) FROM "ALICE"."BIG"').fetchone() == (ROWS,)


def test_the_call_role_cannot_become_another_role(db):
    with db.plan("ALICE", "select id from big") as plan, connect(plan.partitions[0]) as conn:
        for target in (db.store.role_for("BOB"), db.store.role_for("CAROL"), "postgres"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(target)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET SESSION AUTHORIZATION postgres")
        conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(db.store.role_for("ALICE"))))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # ALICE's own role is no way out either
            conn.execute('SELECT * FROM "CAROL"."SECRET"')


def test_the_call_role_holds_nothing_but_the_callers_role(db):
    with db.plan("ALICE", "select id from big", expires_in_s=120) as plan, db.admin() as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit, rolcanlogin, "
            "rolconnlimit, rolvaliduntil - now() BETWEEN interval '100 seconds' AND interval '121 seconds' "
            "FROM pg_roles WHERE rolname = %s",
            (plan.role,),
        ).fetchone()
        assert row == (False, False, False, False, False, True, True, 4 + pp.CONNECTION_SLACK, True)
        member_of = conn.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (plan.role,),
        ).fetchall()
        assert member_of == [(db.store.role_for("ALICE"),)]
        assert plan.role.startswith(db.store.role_prefix + "_c_")


def test_the_call_role_opens_no_more_connections_than_its_limit(db):
    with db.plan("ALICE", "select id from big", partitions=2) as plan:
        p = plan.partitions[0]
        sessions = [connect(p) for _ in range(2 + pp.CONNECTION_SLACK)]
        try:
            with pytest.raises(psycopg.OperationalError, match="too many connections"):
                connect(p)
        finally:
            for s in sessions:
                s.close()


def test_the_call_role_does_not_outlive_close(db):
    plan = db.plan("ALICE", "select id from big")
    p = plan.partitions[0]
    password = make_url(p.conninfo).password
    session = connect(p)
    pid = session.info.backend_pid
    plan.close()
    plan.close()  # idempotent
    with db.admin() as admin:
        wait_for(lambda: admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None)
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (plan.role,)).fetchone() is None
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        connect(p)
    with pytest.raises(QueryRejected, match="Cannot connect") as e:
        list(pp.read_partition(p, timeout_s=10))
    assert password not in str(e.value)


def test_a_snapshot_grants_nothing_and_ends_with_its_call(db):
    """PostgreSQL lets any session import any exported snapshot of its database while the exporting transaction
    is open: a snapshot only fixes which row versions are seen. What may be read is the reading role's alone."""
    alices = db.plan("ALICE", "select id from big")
    with db.plan("BOB", "select id from mine", min_rows=100) as bobs:
        with_alices_snapshot = dataclasses.replace(bobs.partitions[0], snapshot=alices.partitions[0].snapshot)
        list(pp.read_partition(with_alices_snapshot, timeout_s=10))  # PostgreSQL allows the import ...
        with pytest.raises(QueryRejected, match="may not read"):  # ... which reads nothing of ALICE's
            alices_sql = dataclasses.replace(with_alices_snapshot, sql=alices.partitions[0].sql)
            list(pp.read_partition(alices_sql, timeout_s=10))
        alices.close()
        with pytest.raises(QueryRejected, match="snapshot has ended"):
            list(pp.read_partition(with_alices_snapshot, timeout_s=10))
        with pytest.raises(QueryRejected, match="Invalid snapshot"):
            pp.read_partition(dataclasses.replace(bobs.partitions[0], snapshot="1'; DROP TABLE x; --"), timeout_s=10)


def test_read_partition_stops_at_its_time_limit(db):
    with db.plan("ALICE", "select id from big") as plan:
        p = dataclasses.replace(plan.partitions[0], sql="SELECT count(*) FROM generate_series(1, 1000000000000)")
        with pytest.raises(QueryTimedOut):
            list(pp.read_partition(p, timeout_s=0.5))


def test_stale_call_roles_are_dropped_and_live_ones_kept(db):
    stale, live = db.plan("ALICE", "select id from big"), db.plan("ALICE", "select id from big")
    session = connect(stale.partitions[0])
    pid = session.info.backend_pid
    with db.admin() as admin:  # a server that died: its role's time ran out, nobody closed it
        role = psycopg.sql.Identifier(stale.role)
        admin.execute(psycopg.sql.SQL("ALTER ROLE {} VALID UNTIL '-infinity'").format(role))
        assert pp.drop_stale_call_roles(db.store) == [stale.role]
        wait_for(lambda: admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None)
    with pytest.raises(psycopg.OperationalError):  # its session was ended too
        session.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        connect(stale.partitions[0])
    assert pp.drop_stale_call_roles(db.store) == []
    assert len(pa.concat_tables(read_all(live))) == ROWS
    live.close()
    stale.close()  # a role already dropped: still fine


def test_a_database_where_user_roles_may_create_is_not_partitioned(db):
    with db.admin() as conn:
        role = psycopg.sql.Identifier(db.store.role_for("ALICE"))
        conn.execute(psycopg.sql.SQL('GRANT CREATE ON SCHEMA "ALICE" TO {}').format(role))
    assert db.plan("ALICE", "select id from big") is None
    with db.plan("BOB", "select id from mine", min_rows=100) as plan:
        assert plan is not None


def test_public_loses_temporary_tables_once_partitions_are_planned(db):
    with db.admin() as conn:
        dbname = conn.info.dbname
        assert conn.execute("SELECT has_database_privilege('public', %s, 'TEMPORARY')", (dbname,)).fetchone() == (True,)
        with db.plan("ALICE", "select id from big"):
            pass
        assert conn.execute("SELECT has_database_privilege('public', %s, 'TEMPORARY')", (dbname,)).fetchone() == (
            False,
        )


def test_readers_connect_where_the_reader_url_says_with_the_calls_role_only(db):
    dbname = make_url(db.url).database
    reader_url = f"postgresql+psycopg://someone:their-password@localhost:5432/{dbname}?sslmode=disable"
    with db.plan("ALICE", "select id from big", reader_url=reader_url) as plan:
        url = make_url(plan.partitions[0].conninfo)
        assert (url.drivername, url.host, url.port, url.database) == ("postgresql", "localhost", 5432, dbname)
        assert url.username == plan.role and url.password != "their-password"
        assert url.query["sslmode"] == "disable" and "connect_timeout" in url.query
        assert len(pa.concat_tables(read_all(plan))) == ROWS
