"""`oml.cursor()`: a read-only DB-API 2.0 cursor over the SQL gate, and `oml.core.methods._get_conn()`."""

from __future__ import annotations

import decimal

import pandas as pd
import pytest

import oml
from oml import cursor as dbapi
from oml.core import methods
from server import accounts

ROWS = pd.DataFrame(
    {
        "ID": [1, 2, 3, 4, 5],
        "NAME": ["a", "b", "c", "x' OR '1'='1", None],
        "X": [0.5, 1.5, 2.5, 3.5, 4.5],
    }
)


@pytest.fixture
def connected(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    oml.create(ROWS, table="T")
    return oml_user


def test_pep_249_module_globals():
    assert (dbapi.apilevel, dbapi.threadsafety, dbapi.paramstyle) == ("2.0", 2, "named")
    for name in ("InterfaceError", "DatabaseError", "OperationalError", "ProgrammingError", "NotSupportedError"):
        assert issubclass(getattr(dbapi, name), dbapi.Error)
    assert issubclass(dbapi.ProgrammingError, dbapi.DatabaseError) and issubclass(dbapi.Error, oml.OMLError)
    assert issubclass(dbapi.Warning, Exception)
    assert dbapi.NUMBER == dbapi.DB_TYPE_NUMBER and dbapi.STRING == dbapi.DB_TYPE_VARCHAR
    assert dbapi.NUMBER != dbapi.DB_TYPE_VARCHAR


def test_fetching_description_rowcount_and_iteration(connected):
    cr = oml.cursor()
    assert cr.description is None and cr.rowcount == -1 and cr.arraysize == 100
    with pytest.raises(dbapi.InterfaceError, match="no query"):
        cr.fetchone()

    assert cr.execute("select ID, NAME, X from T order by ID") is cr  # cx_Oracle returns the cursor for a query
    assert [d[0] for d in cr.description] == ["ID", "NAME", "X"]
    assert cr.description[0][1] == dbapi.NUMBER and cr.description[1][1] == dbapi.STRING
    assert cr.description[2][1] == dbapi.NUMBER and all(len(d) == 7 for d in cr.description)
    assert cr.rowcount == 0  # rows fetched so far, as cx_Oracle counts
    assert cr.fetchone() == (1, "a", 0.5)
    cr.arraysize = 2
    assert cr.fetchmany() == [(2, "b", 1.5), (3, "c", 2.5)]
    assert cr.fetchmany(1) == [(4, "x' OR '1'='1", 3.5)] and cr.rowcount == 4
    assert cr.fetchall() == [(5, None, 4.5)]
    assert cr.fetchone() is None and cr.fetchmany() == [] and cr.fetchall() == [] and cr.rowcount == 5

    # executing again starts over; iteration and the context manager
    with oml.cursor() as cr2:
        names = [row[0] for row in cr2.execute("select NAME from T where ID <= 3 order by ID")]
        assert names == ["a", "b", "c"]
        count = cr2.execute("select count(*) as N, sum(X) as S from T").fetchone()
        assert count is not None and (int(count[0]), float(count[1])) == (5, 12.5)
    with pytest.raises(dbapi.InterfaceError, match="closed"):
        cr2.execute("select * from T")

    # a query without rows
    assert cr.execute("select ID from T where ID > 100").fetchall() == []
    assert cr.description is not None and [d[0] for d in cr.description] == ["ID"]
    assert cr.rowcount == 0

    # Oracle's notebook pattern: keep a cursor, run several statements, close it
    assert pd.DataFrame(cr.execute("select * from T").fetchall()).shape == (5, 3)
    cr.close()
    cr.close()  # closing twice is harmless
    with pytest.raises(dbapi.InterfaceError):
        cr.fetchall()


def test_binds_become_literals(connected):
    cr = oml.cursor()
    assert cr.execute("select ID from T where NAME = :name", {"name": "b"}).fetchall() == [(2,)]
    assert cr.execute("select ID from T where NAME = :Name", name="c").fetchall() == [(3,)]  # case-insensitive
    assert cr.execute("select ID from T where ID = :1 or ID = :2 order by ID", [1, 5]).fetchall() == [(1,), (5,)]
    assert cr.execute("select ID from T where ID between ? and ? order by ID", (2, 3)).fetchall() == [(2,), (3,)]
    assert cr.execute("select ID from T where X > :x order by ID", x=decimal.Decimal("3.5")).fetchall() == [(5,)]
    assert cr.execute("select ID from T where X < :x", x=1.0).fetchall() == [(1,)]
    assert cr.execute("select ID from T where ID = :t", t=True).fetchall() == [(1,)]  # booleans bind as 1/0
    assert cr.execute("select ID from T where NAME = :n", n=None).fetchall() == []  # = NULL matches nothing
    assert cr.execute("select ':n' as S from T where ID = :n", n=1).fetchall() == [(":n",)]  # not inside strings

    with pytest.raises(dbapi.ProgrammingError, match="no value for bind placeholder"):
        cr.execute("select ID from T where ID = :a", {"b": 1})
    with pytest.raises(dbapi.ProgrammingError, match="no bind placeholder named: B"):
        cr.execute("select ID from T where ID = :a", {"a": 1, "b": 1})
    with pytest.raises(dbapi.ProgrammingError, match="2 bind placeholder"):
        cr.execute("select ID from T where ID = :1 or ID = :2", [1])
    with pytest.raises(dbapi.NotSupportedError, match="bytes"):
        cr.execute("select ID from T where NAME = :n", n=b"a")
    with pytest.raises(dbapi.NotSupportedError, match="nan"):
        cr.execute("select ID from T where X = :x", x=float("nan"))
    with pytest.raises(dbapi.NotSupportedError):
        cr.executemany("select ID from T where ID = :1", [[1], [2]])

    # attacks: a bind value is a literal on the parse tree; quotes, comments and separators in it are data
    hostile = "x' OR '1'='1"
    assert cr.execute("select ID from T where NAME = :n", n=hostile).fetchall() == [(4,)]  # the one row named so
    for value in ("' OR 1=1 --", "'; DELETE FROM T; --", "a' UNION SELECT NAME FROM T --", "\\'; --"):
        assert cr.execute("select ID from T where NAME = :n", n=value).fetchall() == []
    # a bind stands for a value, never for a name
    for statement in ("select * from :t", "select ID as :t from T", "select :t.ID from T"):
        with pytest.raises(dbapi.ProgrammingError, match="not for a name"):
            cr.execute(statement, t="T")
    assert len(cr.execute("select * from T").fetchall()) == 5


def test_writes_and_foreign_tables_are_refused(connected, services):
    url, user, password = connected
    cr = oml.cursor()
    for statement in (
        "delete from T",
        "insert into T (ID) values (9)",
        "update T set ID = 0",
        "drop table T",
        "create table U (A number)",
        "alter table T add (G varchar2(10))",
        "begin execute immediate 'drop table T'; end;",
        "select * from T; delete from T",
        "with d as (delete from T returning *) select * from d",
    ):
        with pytest.raises(dbapi.ProgrammingError) as e:
            cr.execute(statement)
        assert str(e.value), statement
    assert cr.execute("select count(*) from T").fetchone() == (5,)

    # another user's table is not visible (as if it did not exist)
    accounts.add_user(services, "OTHER_USER", "other-user-password")
    oml.connect(url=url, username="OTHER_USER", password="other-user-password")
    oml.create(pd.DataFrame({"SECRET": [42]}), table="S")
    oml.connect(url=url, username=user, password=password)
    with pytest.raises(dbapi.ProgrammingError):
        oml.cursor().execute("select * from OTHER_USER.S")

    oml.disconnect()
    with pytest.raises(oml.NotConnectedError):
        oml.cursor()
    with pytest.raises(dbapi.InterfaceError, match="not connected"):
        cr.execute("select * from T")


def read_in_the_engine():
    import oml

    conn = oml.core.methods._get_conn()
    conn.action, conn.module = "scoring", "nightly"
    with oml.cursor() as cr:
        rows = cr.execute("select ID, NAME from T where ID <= :n order by ID", n=2).fetchall()
        refused = ""
        try:
            cr.execute("delete from T")
        except Exception as e:  # its class is checked by the test
            refused = type(e).__name__
    conn.close()
    return {"rows": [list(r) for r in rows], "refused": refused, "after": len(oml.sync(table="T").pull())}


def test_get_conn_is_a_harmless_session_handle(connected):
    # in the engine, a script's `import oml` gets the same names, reading with the caller's rights
    out = oml.do_eval(read_in_the_engine)
    assert out == {"rows": [[1, "a"], [2, "b"]], "refused": "ProgrammingError", "after": 5}

    conn = methods._get_conn()
    assert methods._get_conn() is conn  # the same object until it is closed
    for name, value in [("action", "DBT RUN OML4PY"), ("client_identifier", "dbt-1"), ("clientinfo", "host_x86_64")]:
        setattr(conn, name, value)
        assert getattr(conn, name) == value
    conn.module = "dbt-1.11"
    with pytest.raises(TypeError):
        conn.module = 3
    with pytest.raises(AttributeError):
        conn.autocommit = True  # not one of the tracing attributes
    assert conn.cursor().execute("select count(*) from T").fetchone() == (5,)
    conn.commit()
    conn.rollback()
    assert conn.ProgrammingError is dbapi.ProgrammingError

    conn.close()
    assert conn.closed and conn.action is None
    with pytest.raises(dbapi.InterfaceError):
        conn.action = "x"
    assert oml.isconnected() and oml.sync(table="T").shape == (5, 3)  # the oml connection stays open
    fresh = methods._get_conn()
    assert fresh is not conn and not fresh.closed and fresh.action is None
    oml.disconnect()
    with pytest.raises(oml.NotConnectedError):
        methods._get_conn()
