"""Oracle's `func_value`: a prototype DataFrame makes the call keep its result in the database (a table of the
caller's) and return an `oml.DataFrame` proxy, in all five verbs; the REST form `funcValue`; and the walls: the
server checks every value a worker sends against the prototype's types, and writes only the caller's schema."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

import oml
from engines.errors import ResultNotSerializable
from engines.extensions import FuncValue, column_type
from engines.worker.results import NotSerializable, columnar, conform
from server.func_value import rows_table
from tests.data import iris_frame


@pytest.fixture
def iris(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    return oml.create(iris_frame(), table="IRIS")


def random_red_dots():
    import pandas as pd

    return pd.DataFrame({"id": range(1, 10), "val": [x / 100 for x in range(1, 10)]})


def group_count(dat):
    import pandas as pd

    return pd.DataFrame([(dat["SPECIES"][0], dat.shape[0])], columns=["SPECIES", "CNT"])


def test_func_value_keeps_the_result_in_the_database_in_all_five_verbs(iris):
    # Oracle's notebook: do_eval(func=RandomRedDots, func_value=pd.DataFrame({"id": [0], "val": [0]})) pulls
    # id 1..9 with val 0: the prototype's integer column rounds 0.01 .. 0.09.
    res = oml.do_eval(random_red_dots, func_value=pd.DataFrame({"id": [0], "val": [0]}))
    assert isinstance(res, oml.DataFrame)
    df = res.pull()
    assert df["id"].tolist() == list(range(1, 10)) and df["val"].tolist() == [0] * 9
    exact = oml.do_eval(random_red_dots, func_value=pd.DataFrame({"id": [0], "val": [0.5]})).pull()
    assert exact["val"].tolist() == [x / 100 for x in range(1, 10)]  # floats kept exactly, not to 10 decimals
    # table_apply: a tuple is one row.
    one = oml.table_apply(
        iris, lambda d: (len(d), d["SEPAL_LENGTH"].max()), func_value=pd.DataFrame({"N": [1], "MAX": [1.0]})
    )
    assert one.pull().to_dict("records") == [{"N": 150, "MAX": 7.9}]
    # row_apply: the chunks' rows, in chunk order, in one table (Oracle's scoring example).
    proto = pd.DataFrame([("a", 1.0, 1.0)], columns=["SPECIES", "PETAL_LENGTH", "PRED"])
    scored = oml.row_apply(
        iris,
        lambda d: d[["SPECIES", "PETAL_LENGTH"]].assign(PRED=d["PETAL_LENGTH"] * 2),
        rows=40,
        func_value=proto,
        oml_input_type="pandas.DataFrame",
    ).pull()
    assert len(scored) == 150 and list(scored.columns) == ["SPECIES", "PETAL_LENGTH", "PRED"]
    np.testing.assert_allclose(scored["PRED"], scored["PETAL_LENGTH"] * 2)
    # group_apply: every group's rows in one table (Oracle's group_count example).
    counts = oml.group_apply(
        iris,
        iris[["SPECIES"]],
        group_count,
        oml_input_type="pandas.DataFrame",
        func_value=pd.DataFrame([("a", 1)], columns=["SPECIES", "CNT"]),
    ).pull()
    assert sorted(counts.itertuples(index=False, name=None)) == [("setosa", 50), ("versicolor", 50), ("virginica", 50)]
    # index_apply: a list of tuples per call, and a numpy array.
    rows = oml.index_apply(3, lambda i: [(i, f"r{i}")], func_value=pd.DataFrame({"I": [0], "S": ["x"]})).pull()
    assert rows.sort_values("I").to_dict("list") == {"I": [1, 2, 3], "S": ["r1", "r2", "r3"]}
    arr = oml.do_eval(lambda: np.arange(6).reshape(3, 2), func_value={"A": "NUMBER(5)", "B": "binary_double"}).pull()
    assert arr.to_dict("list") == {"A": [0, 2, 4], "B": [1.0, 3.0, 5.0]}


def test_func_value_over_rest_names_its_table_and_checks_the_shape(iris):
    conn = oml._connection.current()
    oml.script.create("group_count", func=group_count, overwrite=True)
    body = {
        "input": "select * from IRIS",
        "groupBy": "SPECIES",
        "parameters": '{"oml_input_type": "pandas.DataFrame"}',
        "funcValue": {"columns": {"SPECIES": "VARCHAR2(20)", "CNT": "NUMBER(10)"}, "table": "SPECIES_COUNTS"},
    }
    r = conn.request("POST", "/oml/api/py-scripts/v1/group-apply/group_count", json=body)
    desc = r.json()["result"]
    assert desc["table_name"] == "SPECIES_COUNTS" and desc["owner"] == "OML_USER" and desc["row_count"] == 3
    assert [(c["name"], c["type"]) for c in desc["columns"]] == [("SPECIES", "text"), ("CNT", "integer")]
    assert sorted(oml.sync(table="SPECIES_COUNTS").pull()["CNT"]) == [50, 50, 50]
    r = conn.request("POST", "/oml/api/py-scripts/v1/group-apply/group_count", json=body, ok=(400,))
    assert "SPECIES_COUNTS" in r.json()["errorMessage"]  # the table exists: nothing is overwritten
    body["funcValue"] = {"columns": {"SPECIES": "text"}}  # the function returns two columns
    r = conn.request("POST", "/oml/api/py-scripts/v1/group-apply/group_count", json=body, ok=(400,))
    assert r.json()["errorCode"] == 1031 and "func_value has 1 columns" in r.json()["errorMessage"]
    body["funcValue"] = {"columns": {"X": "text"}, "table": "OTHER.T"}
    r = conn.request("POST", "/oml/api/py-scripts/v1/group-apply/group_count", json=body, ok=(400,))
    assert "funcValue.table" in r.json()["errorMessage"]  # no schema-qualified name: only the caller's schema
    body.update(funcValue={"columns": {"X": "text"}}, asyncFlag=True)
    r = conn.request("POST", "/oml/api/py-scripts/v1/group-apply/group_count", json=body, ok=(400,))
    assert "synchronous" in r.json()["errorMessage"]


def test_the_server_checks_every_value_a_worker_sends():
    spec = FuncValue(columns={"N": "integer", "T": "timestamp", "S": "text"})
    good = {"N": [1, None], "T": ["2020-01-01T00:00:00.000000", None], "S": ["a", None]}
    table = rows_table("row", [good, good], spec)
    assert table.num_rows == 4 and table.schema.names == ["N", "T", "S"]
    for bad in (
        {"N": [1.5], "T": [None], "S": [None]},  # a float where an integer column is
        {"N": [True], "T": [None], "S": [None]},
        {"N": ["1"], "T": [None], "S": [None]},
        {"N": [1], "T": [5], "S": [None]},
        {"N": [1], "T": [None], "S": [7]},
        {"N": [1, 2], "T": [None], "S": [None]},  # ragged
        {"S": [None], "N": [1], "T": [None]},  # columns out of order
        {"N": [1], "T": [None]},
        [1, 2],
    ):
        with pytest.raises(ResultNotSerializable):
            rows_table("eval", bad, spec)
    assert rows_table("group", {"a": good, "b": good}, spec).num_rows == 4


def test_values_are_shaped_to_the_prototype_in_the_worker():
    cols = [("ID", "integer"), ("VAL", "float"), ("S", "text")]
    df = conform(pd.DataFrame({"a": [1.5, -2.5, None], "b": [1, None, 3], "c": ["x", None, 3]}), cols)
    # integers rounded half away from zero (as Oracle stores 1.5 in NUMBER(p)), nulls as null, text as str
    assert orjson.loads(columnar(df, cols)) == {"ID": [2, -3, None], "VAL": [1.0, None, 3.0], "S": ["x", None, "3"]}
    assert conform(None, cols).empty
    assert conform([(1, 2.0, "a"), (2, 3.0, "b")], cols)["ID"].tolist() == [1, 2]
    swapped = conform(pd.DataFrame({"S": ["a"], "ID": [1], "VAL": [0.5]}), cols)  # same names: matched by name
    assert swapped.iloc[0].tolist() == [1, 0.5, "a"]
    with pytest.raises(NotSerializable, match="must return"):
        conform({"a": 1}, cols)
    with pytest.raises(NotSerializable, match="does not fit"):
        conform(pd.DataFrame({"a": ["one"], "b": [1.0], "c": ["x"]}), cols)
    assert [column_type(t) for t in ("NUMBER", "number(10)", "NUMBER(10,2)", "VARCHAR2(20 CHAR)", "DATE")] == [
        "float",
        "integer",
        "float",
        "text",
        "date",
    ]
