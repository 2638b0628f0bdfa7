"""Moving data and the walls: push (temporary tables, dbtypes, oranumber), sync, dir, drop, materialize (the caller's
schema only), another user's tables, and hostile names and values that must not escape the SQL. On a live server,
SQLite and PostgreSQL. push and materialize use the write door (temporary tables, tables from a query)."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

import oml
from oml import frame as oml_frame
from tests.oml.test_frame import OTHER, PASSWORD, USER, live, same, serve  # noqa: F401 - the module's server fixture

__all__ = ["live", "serve"]

HOSTILE = pd.DataFrame(
    {
        "a;b": [1, 2, 3, 4],
        "x' OR 1=1 --": ["x' OR 1=1 --", "plain", "semi;colon", 'dq"uote'],
        "--c": [0.5, 1.5, None, 3.5],
        "Mixed Case": ["a", "b", "c", "d"],
    }
)


def as_user(live, name: str) -> None:  # noqa: ANN001
    oml.connect(url=live.url, username=name, password=PASSWORD)


def test_push_makes_a_temporary_table(live) -> None:  # noqa: ANN001, F811
    data = pd.DataFrame({"A": [1.0, 2.5, None], "S": ["x", None, "z"]})
    proxy = oml.push(data)
    assert isinstance(proxy, oml.DataFrame) and proxy.table.startswith("OML_TMP_")
    same(proxy, data)
    listing = {t["table_name"]: t for t in oml.core._io._connection.current().json("GET", "/oml/api/pyqd/v1/tables")}
    assert listing[proxy.table].get("temporary") is True
    typed = oml.push(
        pd.DataFrame({"N": [1, 2], "C": ["a", "b"], "R": [b"\x00", b"\x01"], "E": [None, None]}),
        dbtypes={"N": "BINARY_DOUBLE", "C": "CHAR(1)", "R": "RAW(1)", "E": "VARCHAR2(10)"},
    )
    assert list(typed.dtypes) == [oml.Float, oml.String, oml.Bytes, oml.String]
    assert typed.pull()["R"].tolist() == [b"\x00", b"\x01"]
    with pytest.raises(ValueError, match="dbtypes"):
        oml.push(pd.DataFrame({"E": [None, None]}))
    with pytest.raises(ValueError):
        oml.push(data, dbtypes={"A": "GEOMETRY"})
    assert oml.push(data, oranumber=False).shape == (3, 2)
    # the session's temporary tables are dropped at its end (oml.disconnect calls this)
    oml_frame._drop_temporary()
    with pytest.raises(oml.NotFoundError):
        oml.sync(table=proxy.table)


def test_sync_dir_drop_and_create(live) -> None:  # noqa: ANN001, F811
    created = oml.create(pd.DataFrame({"K": [1, 2, 3], "V": ["one", "two", "three"]}), table="IO_T")
    assert isinstance(created, oml.core.frame.DataFrame)
    synced = oml.sync(table="IO_T")
    same(synced, created.pull())
    assert oml.sync(schema=USER, table="IO_T").columns == ["K", "V"]
    found = oml.sync(table="^IO_", regex_match=True)
    assert list(found) == ["IO_T"] and found["IO_T"].columns == ["K", "V"]
    query = oml.sync(query='select "K" * 10 as K10, "V" from IO_T where "K" > 1')
    same(query, pd.DataFrame({"K10": [20, 30], "V": ["two", "three"]}))
    same(query[query["K10"] > 20], pd.DataFrame({"K10": [30], "V": ["three"]}))
    with pytest.raises(oml.InvalidRequestError):
        oml.sync(query="select * from NO_SUCH_TABLE")
    names = oml.dir()
    assert "created" not in names  # locals are not the workspace
    globals()["io_proxy"] = synced
    try:
        assert "io_proxy" in oml.dir()
    finally:
        del globals()["io_proxy"]
    oml.drop(table="IO_T")
    with pytest.raises(oml.NotFoundError):
        oml.sync(table="IO_T")


def test_materialize_writes_into_the_callers_schema(live) -> None:  # noqa: ANN001, F811
    base = oml.create(pd.DataFrame({"K": [1, 2, 3, 4], "X": [0.5, -1.0, 2.0, 4.0]}), table="MAT_BASE")
    positive = base[base["X"] > 0]
    derived = positive.concat({"Y": positive["X"] * 2})
    made = derived.materialize(table="MAT_OUT")
    assert made.table == "MAT_OUT" and made.owner == USER
    same(oml.sync(table="MAT_OUT"), derived.pull())
    with pytest.raises(oml.InvalidRequestError):
        derived.materialize(table="MAT_OUT")  # exists
    with pytest.raises(oml.InvalidRequestError):
        derived.materialize(table=f"{OTHER}.MAT_OUT")  # only a name in your own schema
    temporary = derived.materialize()
    assert temporary.table.startswith("OML_TMP_") and len(temporary) == 3


def test_another_users_tables_are_not_found(live) -> None:  # noqa: ANN001, F811
    as_user(live, OTHER)
    try:
        secret = oml.create(pd.DataFrame({"P": [42]}), table="SECRET")
        carried = pickle.dumps(secret[secret["P"] > 0])
    finally:
        as_user(live, USER)
    with pytest.raises(oml.NotFoundError):
        oml.sync(schema=OTHER, table="SECRET")
    stolen = pickle.loads(carried)
    with pytest.raises(oml.ServerError, match="does not exist"):
        stolen.pull()
    with pytest.raises(oml.ServerError, match="does not exist"):
        len(stolen)


def test_hostile_names_and_values_stay_in_the_sql(live) -> None:  # noqa: ANN001, F811
    df = oml.create(HOSTILE, table="HOSTILE")
    assert df.columns == list(HOSTILE.columns)
    same(df, HOSTILE)
    name, text = "a;b", "x' OR 1=1 --"
    same(df[[text, "--c"]], HOSTILE[[text, "--c"]])
    assert len(df[df[text] == "x' OR 1=1 --"]) == 1
    assert len(df[df[text] == "nothing' OR '1'='1"]) == 0
    assert len(df[df[text] == "'; DROP TABLE HOSTILE; --"]) == 0
    assert len(df[df[text] == 'dq"uote']) == 1
    same(df[df[name] > 2], HOSTILE[HOSTILE[name] > 2])
    renamed = df.rename({name: 'quo"te', "Mixed Case": "select"})
    same(renamed, HOSTILE.rename(columns={name: 'quo"te', "Mixed Case": "select"}))
    same(
        renamed.sort_values('quo"te', ascending=False)[["select"]],
        HOSTILE[["Mixed Case"]][::-1].set_axis(["select"], axis=1),
        sort=False,
    )
    same(df.concat({"it's": df["--c"] * 2})[["it's"]], (HOSTILE[["--c"]] * 2).set_axis(["it's"], axis=1))
    assert df[text].find("'").pull() == HOSTILE[text].str.find("'").tolist()
    assert sum(len(s) for s in df.split(hash_cols=[text, name])) == 4
    merged = df.merge(df, on=name, suffixes=["';--", '"'])
    assert len(merged) == 4 and f"{text}';--" in merged.columns
    with pytest.raises(ValueError):
        df[df[text] == "nul\x00"]
    assert len(oml.sync(table="HOSTILE")) == 4  # still there
