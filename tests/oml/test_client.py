"""The `oml` client against a live server: connect, tables (create/sync/pull/drop), scripts, grants, errors."""

from __future__ import annotations

import inspect
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import pytest

import oml
from server import accounts
from tests.conftest import ADMIN_PASSWORD


def add_one(x):
    """A module-level function: oml.script.create reads its source."""
    return x + 1


@pytest.fixture
def users(oml_user, services):
    """OML_USER connected; OTHER_USER exists. Returns a function that connects as either (or as ADMIN)."""
    url, user, password = oml_user
    accounts.add_user(services, "OTHER_USER", "other-user-password")
    passwords = {user: password, "OTHER_USER": "other-user-password", "ADMIN": ADMIN_PASSWORD}

    def connect_as(name: str) -> None:
        oml.connect(url=url, username=name, password=passwords[name])

    connect_as(user)
    return connect_as


# --- connect ------------------------------------------------------------------------------------------


def test_connect_forms_and_bad_credentials(oml_user):
    url, user, password = oml_user
    oml.disconnect()
    assert not oml.isconnected()
    with pytest.raises(oml.NotConnectedError):
        oml.ds.dir()

    with pytest.raises(oml.AuthenticationError) as e:
        oml.connect(url=url, username=user, password="wrong-password")
    assert e.value.status == 401 and str(e.value)
    assert isinstance(e.value, oml.ServerError)
    with pytest.raises(oml.AuthenticationError):
        oml.connect(url=url, username="NO_SUCH_USER", password=password)
    assert not oml.isconnected()

    oml.connect(url=url, username=user.lower(), password=password)  # user names ignore case
    assert oml.isconnected()
    assert oml.script.dir().empty

    host, port = urlsplit(url).hostname, urlsplit(url).port
    oml.connect(user, password, host=host, port=port)  # Oracle's positional form
    assert oml.isconnected() and oml.ds.dir().empty
    oml.connect(user=user, password=password, dsn=url, service_name="ignored", automl=True)
    assert oml.isconnected()

    token = httpx.post(
        f"{url}/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": user, "password": password}
    ).json()["accessToken"]
    oml.connect(url=url, token=token)
    assert oml.script.dir().empty
    oml.connect(url=url, token="not-a-token")
    with pytest.raises(oml.AuthenticationError):
        oml.script.dir()

    with pytest.raises(ValueError):
        oml.connect(url=url, username=user)  # no password
    with pytest.raises(ValueError):
        oml.connect(username=user, password=password)  # nowhere to connect

    oml.disconnect()
    assert not oml.isconnected()


# --- tables -------------------------------------------------------------------------------------------


def test_create_pull_and_metadata_of_a_dataframe(users):
    df = pd.DataFrame(
        {
            "ID": [1, 2, 3, 4, 5, 6],
            "SCORE": [0.5, 1.25, None, 3.0, 4.5, -1.0],
            "NAME": ["a", "b", "c", None, "e", "f"],
            "FLAG": [True, False, True, True, False, False],
        }
    )
    proxy = oml.create(df, table="SCORES")
    assert isinstance(proxy, oml.DataFrame)
    assert proxy.columns == ["ID", "SCORE", "NAME", "FLAG"]
    assert proxy.shape == (6, 4) and len(proxy) == 6
    pd.testing.assert_frame_equal(proxy.pull(), df, check_dtype=False)
    head = proxy.head(2)
    assert list(head.columns) == ["ID", "SCORE", "NAME", "FLAG"]
    assert head["ID"].tolist() == [1, 2] and head["NAME"].tolist() == ["a", "b"]
    assert len(proxy.head()) == 5

    synced = oml.sync(table="SCORES")
    assert synced.columns == proxy.columns and synced.shape == (6, 4)
    pulled = synced.pull()
    assert pulled["ID"].dtype == np.int64 and pulled["SCORE"].dtype == np.float64
    assert pulled["FLAG"].dtype == bool
    assert pd.isna(pulled.loc[2, "SCORE"]) and pd.isna(pulled.loc[3, "NAME"])


def test_create_from_tuples_and_append(users):
    proxy = oml.create([(1, "x", 0.5), (2, "y", 1.5)], table="TUPLES")
    assert proxy.columns == ["COL1", "COL2", "COL3"]
    more = oml.create([(3, "z", 2.5)], table="TUPLES", append=True)
    assert more.shape == (3, 3)
    expected = pd.DataFrame({"COL1": [1, 2, 3], "COL2": ["x", "y", "z"], "COL3": [0.5, 1.5, 2.5]})
    pd.testing.assert_frame_equal(oml.sync(table="TUPLES").pull(), expected, check_dtype=False)

    with pytest.raises(oml.InvalidRequestError, match="already exists") as e:
        oml.create([(9, "w", 9.5)], table="TUPLES")
    assert isinstance(e.value, ValueError) and e.value.status == 400
    with pytest.raises(ValueError):
        oml.create([(4, "q")], table="TUPLES", append=True)  # a column short
    assert oml.sync(table="TUPLES").shape == (3, 3)

    with pytest.raises(ValueError):
        oml.create([(1, 2), (3,)], table="RAGGED")
    with pytest.raises(TypeError):
        oml.create({"a": [1]}, table="NOT_A_FRAME")
    with pytest.raises(ValueError):
        oml.create(pd.DataFrame({"a": [1]}), table="bad name")


def test_sync_variants_and_drop(users):
    oml.create(pd.DataFrame({"A": [1]}), table="IRIS_A")
    oml.create(pd.DataFrame({"B": [2]}), table="IRIS_B")
    oml.create(pd.DataFrame({"C": [3]}), table="OTHER_T")

    found = oml.sync(table="^IRIS_", regex_match=True)
    assert sorted(found) == ["IRIS_A", "IRIS_B"]
    assert found["IRIS_B"].pull()["B"].tolist() == [2]
    assert oml.sync(schema="OML_USER", table="^OTHER", regex_match=True)["OTHER_T"].columns == ["C"]

    with pytest.raises(ValueError):
        oml.sync(view="IRIS_VIEW")
    assert oml.sync(query="select * from IRIS_A").columns == oml.sync(table="IRIS_A").columns
    with pytest.raises(oml.NotFoundError):
        oml.sync(table="NO_SUCH_TABLE")

    oml.drop(table="IRIS_A")
    with pytest.raises(oml.NotFoundError):
        oml.sync(table="IRIS_A")
    with pytest.raises(oml.NotFoundError):
        oml.drop(table="IRIS_A")
    with pytest.raises(ValueError):
        oml.drop(view="IRIS_B")
    assert sorted(oml.sync(table="IRIS", regex_match=True)) == ["IRIS_B"]


def test_sync_a_granted_table_of_another_schema(users):
    users("OTHER_USER")
    shared = pd.DataFrame({"K": [1, 2, 3], "V": ["one", "two", "three"]})
    oml.create(shared, table="SHARED")
    oml.create(pd.DataFrame({"K": [0]}), table="PRIVATE")

    users("OML_USER")
    with pytest.raises(oml.NotFoundError):
        oml.sync(schema="OTHER_USER", table="SHARED")

    users("OTHER_USER")
    oml.grant("SHARED", typ="table", user="OML_USER")

    users("OML_USER")
    proxy = oml.sync("OTHER_USER", table="SHARED")
    assert proxy.owner == "OTHER_USER" and proxy.shape == (3, 2)
    pd.testing.assert_frame_equal(proxy.pull(), shared, check_dtype=False)
    assert proxy.head(1)["V"].tolist() == ["one"]
    assert oml.sync(schema="other_user", table="SHARED").columns == ["K", "V"]
    assert sorted(oml.sync(schema="OTHER_USER", table=".", regex_match=True)) == ["SHARED"]
    with pytest.raises(oml.NotFoundError):
        oml.sync(schema="OTHER_USER", table="PRIVATE")
    with pytest.raises(oml.NotFoundError):
        oml.sync(table="SHARED")  # not in my own schema

    users("OTHER_USER")
    oml.revoke("SHARED", typ="table", user="OML_USER")
    users("OML_USER")
    with pytest.raises(oml.NotFoundError):
        oml.sync(schema="OTHER_USER", table="SHARED").pull()


# --- scripts ------------------------------------------------------------------------------------------


def test_script_from_a_function_object_loads_and_runs_locally(users):
    oml.script.create("add_one", func=add_one, description="adds one")
    loaded = oml.script.load("add_one")
    assert isinstance(loaded, oml.script.Callable)
    assert loaded(41) == 42
    assert loaded.get_source().read() == inspect.getsource(add_one)
    assert loaded.owner == "OML_USER" and loaded.name == "add_one" and loaded.description == "adds one"

    def nested_double(x):
        return 2 * x

    oml.script.create("double", func=nested_double)
    assert oml.script.load("double")(21) == 42
    assert oml.script.load("double").get_source().read().startswith("def nested_double(x):")


def test_script_from_source_and_from_a_loaded_callable(users):
    src = "def scale(x, factor=3):\n    return x * factor\n"
    oml.script.create("scale", func=src)
    loaded = oml.script.load("scale")
    assert loaded(2) == 6 and loaded(2, factor=10) == 20
    assert loaded.get_source().read() == src

    oml.script.create("scale_copy", func=loaded)
    assert oml.script.load("scale_copy").get_source().read() == src
    assert oml.script.load("scale_copy")(5) == 15

    with pytest.raises(oml.InvalidRequestError, match="already exists"):
        oml.script.create("scale", func="def scale(x):\n    return x\n")
    oml.script.create("scale", func="def scale(x):\n    return -x\n", overwrite=True)
    assert oml.script.load("scale")(4) == -4

    with pytest.raises(oml.InvalidRequestError, match="line 2") as e:
        oml.script.create("broken", func="def broken(x):\n    return (x\n")
    assert isinstance(e.value, ValueError) and e.value.status == 400 and e.value.code == 1000
    with pytest.raises(ValueError, match="function"):
        oml.script.create("nofunc", func="x = 1\n")
    with pytest.raises(TypeError):
        oml.script.create("bad", func=42)
    assert sorted(oml.script.dir()["name"]) == ["scale", "scale_copy"]


def test_script_drop_and_missing_scripts(users):
    oml.script.create("temp", func=add_one)
    oml.script.drop("temp")
    with pytest.raises(oml.NotFoundError) as e:
        oml.script.load("temp")
    assert isinstance(e.value, ValueError)
    assert e.value.status == 404 and e.value.code == 1004 and "temp" in str(e.value)
    with pytest.raises(oml.NotFoundError, match="temp"):
        oml.script.drop("temp")
    oml.script.drop("temp", silent=True)
    with pytest.raises(oml.ServerError, match="administrator") as e:
        oml.script.create("glob", func=add_one, is_global=True)
    assert e.value.status == 403

    users("ADMIN")
    oml.script.drop("temp", is_global=True, silent=True)
    oml.script.create("glob", func=add_one, is_global=True)
    with pytest.raises(oml.NotFoundError):
        oml.script.drop("glob")  # not a private script
    oml.script.drop("glob", is_global=True)
    assert oml.script.dir(sctype="global").empty


def test_script_dir_columns_per_sctype(users):
    users("ADMIN")
    oml.script.create("everyone", func="def everyone():\n    return 'all'\n", is_global=True)
    users("OTHER_USER")
    oml.script.create("theirs", func="def theirs():\n    return 'theirs'\n")
    oml.grant("theirs", typ="pyqscript", user="OML_USER")

    users("OML_USER")
    oml.script.create("mine_a", func=add_one, description="first")
    oml.script.create("mine_b", func=add_one)
    oml.grant("mine_a", typ="pyqscript", user=None)

    expected = {
        "user": (["name", "script", "description", "date"], [("mine_a",), ("mine_b",)]),
        "all": (
            ["owner", "name", "script", "description", "date"],
            [("OML_USER", "mine_a"), ("OML_USER", "mine_b"), ("OTHER_USER", "theirs"), ("PYQSYS", "everyone")],
        ),
        "global": (["owner", "name", "script", "description", "date"], [("PYQSYS", "everyone")]),
        "granted": (["owner", "name", "script", "description", "date"], [("OTHER_USER", "theirs")]),
        "grant": (["name", "grantee"], [("mine_a", "PUBLIC")]),
    }
    for sctype, (columns, rows) in expected.items():
        df = oml.script.dir(sctype=sctype)
        assert list(df.columns) == columns, sctype
        key = [c for c in ("owner", "name", "grantee") if c in df and not (c == "owner" and sctype == "grant")]
        assert [tuple(r) for r in df[key].itertuples(index=False)] == rows, sctype
    mine = oml.script.dir().set_index("name")
    assert mine.loc["mine_a", "description"] == "first" and mine.loc["mine_a", "script"] == inspect.getsource(add_one)
    assert pd.isna(mine.loc["mine_b", "description"])
    assert pd.api.types.is_datetime64_any_dtype(mine["date"])
    assert oml.script.dir(name="mine_a")["name"].tolist() == ["mine_a"]
    assert oml.script.dir(name="mine")["name"].tolist() == []
    assert oml.script.dir(name="^mine_", regex_match=True)["name"].tolist() == ["mine_a", "mine_b"]
    with pytest.raises(ValueError):
        oml.script.dir(sctype="everything")


def test_script_load_resolution_and_grants(users):
    users("ADMIN")
    oml.script.create("f", func="def f():\n    return 'global'\n", is_global=True)
    users("OTHER_USER")
    oml.script.create("f", func="def f():\n    return 'other private'\n")

    users("OML_USER")
    assert oml.script.load("f")() == "global"
    assert oml.script.load("f").owner == "PYQSYS"
    with pytest.raises(oml.NotFoundError):
        oml.script.load("f", owner="OTHER_USER")
    oml.script.create("f", func="def f():\n    return 'mine'\n")
    assert oml.script.load("f")() == "mine"
    assert oml.script.load("f", owner="PYQSYS")() == "global"

    users("OTHER_USER")
    oml.grant("f", typ="pyqscript", user="OML_USER")
    users("OML_USER")
    assert oml.script.load("f", owner="OTHER_USER")() == "other private"
    assert oml.script.load("f")() == "mine"

    users("OTHER_USER")
    oml.revoke("f", typ="pyqscript", user="OML_USER")
    users("OML_USER")
    with pytest.raises(oml.NotFoundError):
        oml.script.load("f", owner="OTHER_USER")


# --- grants and errors --------------------------------------------------------------------------------


def test_grant_and_revoke_for_every_type_and_public(users):
    oml.ds.save({"x": 1}, "ds_pub", grantable=True)
    oml.script.create("s_pub", func=add_one)
    oml.create(pd.DataFrame({"A": [1]}), table="T_PUB")
    for name, typ in [("ds_pub", "datastore"), ("s_pub", "pyqscript"), ("T_PUB", "table")]:
        oml.grant(name, typ=typ)  # user=None: every user
    assert oml.ds.dir(dstype="grant")["grantee"].tolist() == ["PUBLIC"]
    assert oml.script.dir(sctype="grant")["grantee"].tolist() == ["PUBLIC"]

    users("OTHER_USER")
    assert oml.ds.load("ds_pub", owner="OML_USER", to_globals=False) == {"x": 1}
    assert oml.script.load("s_pub", owner="OML_USER")(1) == 2
    assert oml.sync(schema="OML_USER", table="T_PUB").pull()["A"].tolist() == [1]

    users("OML_USER")
    for name, typ in [("ds_pub", "datastore"), ("s_pub", "pyqscript"), ("T_PUB", "table")]:
        oml.revoke(name, typ=typ)
    assert oml.ds.dir(dstype="grant").empty and oml.script.dir(sctype="grant").empty

    users("OTHER_USER")
    with pytest.raises(oml.NotFoundError):
        oml.ds.load("ds_pub", owner="OML_USER", to_globals=False)
    with pytest.raises(oml.NotFoundError):
        oml.script.load("s_pub", owner="OML_USER")
    with pytest.raises(oml.NotFoundError):
        oml.sync(schema="OML_USER", table="T_PUB")

    with pytest.raises(ValueError, match="typ"):
        oml.grant("ds_pub", typ="model")
    with pytest.raises(ValueError, match="typ"):
        oml.revoke("ds_pub", typ="view")
    with pytest.raises(oml.NotFoundError):
        oml.grant("no_such_ds", typ="datastore", user="OML_USER")
    users("OML_USER")
    with pytest.raises(oml.NotFoundError, match="NOBODY"):
        oml.grant("s_pub", typ="pyqscript", user="NOBODY")


def test_server_errors_carry_the_servers_message(users, live_server):
    with pytest.raises(oml.NotFoundError) as e:
        oml.ds.describe("no_such_datastore")
    assert isinstance(e.value, ValueError) and isinstance(e.value, oml.OMLError)
    assert e.value.status == 404 and e.value.code == 1004
    assert e.value.message == str(e.value)
    assert "no_such_datastore" in e.value.message and "does not exist or is not accessible" in e.value.message

    oml.ds.save({"a": 1}, "ds_dup")
    with pytest.raises(oml.InvalidRequestError) as e:
        oml.ds.save({"a": 2}, "ds_dup")
    assert e.value.code == 1009 and "ds_dup" in e.value.message and "already exists" in e.value.message

    with pytest.raises(oml.InvalidRequestError) as e:
        oml.create(pd.DataFrame({"a": [1], "A": [2]}), table="DUPCOLS")
    assert "column" in e.value.message
