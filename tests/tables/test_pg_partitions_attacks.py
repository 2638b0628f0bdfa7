"""The call role of a partitioned read, attacked with its conninfo (as whoever holds a Dask worker would) for what
it may do with no right granted at all: large objects, its own default privileges, locks on them, and objects in
another database of the cluster. None of it may keep the role alive, stall the call's end, or stop a server's
start (`drop_stale_call_roles`)."""

from __future__ import annotations

import secrets
import threading

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tables import pg_partitions as pp
from tests.conftest import _admin_execute, _drop_database
from tests.tables.test_pg_partitions import Db, connect, db

_ = db  # the fixture

pytestmark = pytest.mark.postgres

#: What any role may do in a database it can connect to, with no right granted: each leaves something it owns.
UNGRANTED = [
    "SELECT lo_from_bytea(0, 'planted')",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
    'ALTER DEFAULT PRIVILEGES IN SCHEMA "ALICE" GRANT SELECT ON TABLES TO PUBLIC',
]


def role_exists(db: Db, role: str) -> bool:
    with db.admin() as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def everything_owned(db: Db) -> tuple[int, int]:
    """Large objects and default privileges in the test database, whoever owns them."""
    with db.admin() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_largeobject_metadata), (SELECT count(*) FROM pg_default_acl)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def owned(db: Db, role: str) -> int:
    """Large objects and default privileges of `role` in the test database."""
    with db.admin() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_largeobject_metadata m JOIN pg_roles r ON r.oid = m.lomowner "
            "WHERE r.rolname = %(r)s) + (SELECT count(*) FROM pg_default_acl d JOIN pg_roles r ON r.oid = d.defaclrole "
            "WHERE r.rolname = %(r)s)",
            {"r": role},
        ).fetchone()
        return int(row[0]) if row else 0


def test_what_the_call_role_makes_without_a_right_goes_with_it_and_never_stalls_the_end_of_the_call(db):
    """Before: DROP ROLE failed on the role's large object or default privileges; close() raised (the call's answer
    became an error) and the role stayed for good."""
    before = everything_owned(db)
    plan = db.plan("ALICE", "select id from big")
    assert plan is not None
    holder = connect(plan.partitions[0])
    for statement in UNGRANTED:
        holder.execute(statement)
    assert owned(db, plan.role) == 3
    holder.autocommit = False  # a session that holds its large object open for writing, in a transaction
    (oid,) = holder.execute("SELECT lo_from_bytea(0, 'held')").fetchone()  # type: ignore[misc]
    holder.execute("SELECT lo_open(%s, 131072)", (oid,))
    done = threading.Event()
    closer = threading.Thread(target=lambda: (plan.close(), done.set()), daemon=True)
    closer.start()
    assert done.wait(pp.DROP_LOCK_TIMEOUT_MS / 1000 + 30), "close() stalled"
    assert not role_exists(db, plan.role)
    assert everything_owned(db) == before
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")
    holder.close()


def test_a_stale_role_that_made_things_is_dropped_and_does_not_stop_the_others(db):
    """Before: drop_stale_call_roles raised at the first such role, so every server's start failed from then on."""
    planted, plain = db.plan("ALICE", "select id from big"), db.plan("ALICE", "select id from big")
    assert planted is not None and plain is not None
    before = everything_owned(db)
    with connect(planted.partitions[0]) as conn:
        for statement in UNGRANTED:
            conn.execute(statement)
    assert owned(db, planted.role) == 3
    with db.admin() as conn:  # servers that died: the roles' time ran out, nobody closed them
        for role in (planted.role, plain.role):
            conn.execute(psycopg.sql.SQL("ALTER ROLE {} VALID UNTIL '-infinity'").format(psycopg.sql.Identifier(role)))
    assert sorted(pp.drop_stale_call_roles(db.store)) == sorted([planted.role, plain.role])
    assert not role_exists(db, planted.role) and not role_exists(db, plain.role)
    assert everything_owned(db) == before
    planted.close()
    plain.close()


def test_a_call_role_that_made_things_in_another_database_is_disarmed(db):
    """PUBLIC may connect to every database by default, so the call role may too (only pg_hba.conf keeps it out),
    and what it makes there keeps DROP ROLE from working here. It must then read nothing and log in nowhere, and no
    server may keep trying to drop it."""
    other = f"{make_url(db.url).database}_o{secrets.token_hex(2)}"
    _admin_execute(f'CREATE DATABASE "{other}"')
    try:
        plan = db.plan("ALICE", "select id from big")
        assert plan is not None
        elsewhere = make_url(plan.partitions[0].conninfo).set(database=other).render_as_string(hide_password=False)
        with psycopg.connect(elsewhere, autocommit=True) as conn:
            conn.execute("SELECT lo_from_bytea(0, 'planted elsewhere')")
        plan.close()  # does not raise
        with db.admin() as conn:
            row = conn.execute(
                "SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = %s", (plan.role,)
            ).fetchone()
            assert row == (False, True)  # still there, but disarmed
            assert not conn.execute(
                "SELECT 1 FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                (plan.role,),
            ).fetchall()
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} VALID UNTIL '-infinity'").format(psycopg.sql.Identifier(plan.role))
            )
        with pytest.raises(psycopg.OperationalError):
            connect(plan.partitions[0])
        assert pp.drop_stale_call_roles(db.store) == []  # not taken for a stale role again and again
    finally:
        _drop_database(other)


def test_the_call_role_reads_no_metadata_and_no_other_sessions_queries(db):
    """pyqd's own tables (users and password hashes, sessions, scripts, datastores, job bodies) and what other
    sessions run (the snapshot's, other calls') stay hidden from the conninfo's holder."""
    with db.admin() as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert "pyqd_users" in tables and "pyqd_job_chunks" in tables
    with db.plan("ALICE", "select id from big") as plan, connect(plan.partitions[0]) as conn:
        for table in tables:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(psycopg.sql.SQL("SELECT * FROM public.{}").format(psycopg.sql.Identifier(table)))
        others = conn.execute("SELECT query FROM pg_stat_activity WHERE usename IS DISTINCT FROM current_user")
        assert {q for (q,) in others.fetchall()} <= {"<insufficient privilege>", None}
