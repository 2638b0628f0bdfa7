"""The five verbs over HTTP, with Oracle's documented examples and result shapes."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import change_settings, wait_for
from tests.data import iris_frame
from tests.server.support import SQLITE_ONLY

pytestmark = pytest.mark.usefixtures("engine")

RETURN_DF = """def return_df(num, scale):
    import pandas as pd
    id = list(range(0, int(num)))
    res = [i / scale for i in id]
    return pd.DataFrame({"ID": id, "RES": res})
"""


@pytest.fixture
def alice(api):
    return api.user("ALICE")


def test_do_eval_returns_a_dataframe_as_records(api, alice):
    api.script(alice, "return_df", RETURN_DF)
    r = api.run(alice, "do-eval", "return_df", {"parameters": '{"num":10,"scale":100}', "service": "LOW"})
    assert r.status_code == 200, r.text
    assert r.json() == {"result": [{"ID": i, "RES": i / 100} for i in range(10)]}


def test_index_apply_passes_1_to_times_in_order(api, alice):
    api.script(alice, "sq", "def sq(i):\n    return i * i\n")
    r = api.run(alice, "index-apply", "sq", {"times": 10, "parallelFlag": True})
    assert r.json() == {"result": [i * i for i in range(1, 11)]}


@SQLITE_ONLY
def test_index_apply_with_many_indices_fits_the_workers_answers(api, alice):
    """Tasks hold a bounded number of units: a worker's answer lists each unit in its header, which the server
    reads only up to a bound (60,000 indices once made tasks of 15,000 units, over the bound)."""
    api.script(alice, "one", "def one(i):\n    return 1\n")
    r = api.run(alice, "index-apply", "one", {"times": 60_000})
    assert r.status_code == 200, r.text
    assert r.json() == {"result": [1] * 60_000}


def test_group_apply_by_species_with_order_by(api, alice):
    api.table(alice, "IRIS", iris_frame())
    api.script(alice, "first_rows", "def first_rows(dat):\n    return dat.head(2)[['SPECIES', 'SEPAL_LENGTH']]\n")
    r = api.run(
        alice,
        "group-apply",
        "first_rows",
        {
            "input": "select * from IRIS",
            "groupBy": "SPECIES",
            "orderBy": "SEPAL_LENGTH",
            "parameters": '{"oml_input_type":"pandas.DataFrame"}',
            "parallelFlag": True,
        },
    )
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert list(result) == ["setosa", "versicolor", "virginica"]
    iris = iris_frame()
    for species, rows in result.items():
        smallest = sorted(iris[iris.SPECIES == species].SEPAL_LENGTH)[:2]
        assert [row["SEPAL_LENGTH"] for row in rows] == smallest
        assert all(row["SPECIES"] == species for row in rows)


def test_group_apply_multi_column_keys(api, alice):
    api.table(alice, "GRADE", pd.DataFrame({"GENDER": ["F", "M", "F", "M"], "YEAR": [1, 1, 2, 2], "X": [1, 2, 3, 4]}))
    api.script(alice, "total", "def total(d):\n    return int(d['X'].sum())\n")
    r = api.run(alice, "group-apply", "total", {"input": "select * from grade", "groupBy": "gender, year"})
    assert r.json() == {"result": {"F_1": 1, "F_2": 3, "M_1": 2, "M_2": 4}}


def test_row_apply_chunks_are_fresh_zero_based_frames_in_order(api, alice):
    api.table(alice, "NUMS", pd.DataFrame({"N": range(23)}))
    src = "def ids(d):\n    import pandas as pd\n    return pd.DataFrame({'IDX': list(d.index), 'N': d['N']})\n"
    api.script(alice, "ids", src)
    r = api.run(
        alice,
        "row-apply",
        "ids",
        {
            "input": "select * from nums",
            "rows": 5,
            "parallelFlag": True,
            "service": "HIGH",
            "parameters": '{"oml_input_type":"pandas.DataFrame"}',
        },
    )
    result = r.json()["result"]
    assert [row["N"] for row in result] == list(range(23))
    assert [row["IDX"] for row in result] == [i % 5 for i in range(23)]


def test_row_apply_of_non_frames_gives_one_value_per_chunk(api, alice):
    api.table(alice, "NUMS", pd.DataFrame({"N": range(10)}))
    api.script(alice, "count", "def count(d):\n    return len(d)\n")
    r = api.run(alice, "row-apply", "count", {"input": "select * from nums", "rows": 4})
    assert r.json() == {"result": [4, 4, 2]}


@pytest.mark.parametrize(
    ("input_type", "expected"),
    [("default", "ndarray float64"), ("pandas.DataFrame", "DataFrame"), ("numpy.recarray", "recarray")],
)
def test_input_types(api, alice, input_type, expected):
    api.table(alice, "T", pd.DataFrame({"A": [1, 2], "B": [0.5, 1.5]}))
    src = (
        "def kind(x):\n    name = type(x).__name__\n"
        "    return name + (' ' + str(x.dtype) if name == 'ndarray' else '')\n"
    )
    api.script(alice, "kind", src)
    r = api.run(
        alice,
        "table-apply",
        "kind",
        {"input": "select * from t", "parameters": json.dumps({"oml_input_type": input_type})},
    )
    assert r.json() == {"result": expected}


def test_default_input_with_text_columns_is_a_dataframe_and_na_omit_drops_rows(api, alice):
    api.table(alice, "T", pd.DataFrame({"A": [1.0, None, 3.0], "S": ["x", "y", None]}))
    api.script(alice, "shape", "def shape(x):\n    return [type(x).__name__, len(x)]\n")
    r = api.run(alice, "table-apply", "shape", {"input": "select * from t", "parameters": '{"oml_na_omit": true}'})
    assert r.json() == {"result": ["DataFrame", 1]}


def test_values_nan_numpy_and_timestamps_render_as_json(api, alice):
    src = """def values():
    import numpy as np, pandas as pd
    return {"f": np.float64(1.5), "i": np.int64(3), "nan": float("nan"), "arr": np.arange(3),
            "ts": pd.Timestamp("2024-01-02 03:04:05"), "frame": pd.DataFrame({"x": [np.nan, 2.0]}),
            "tuple": (1, "a"), "none": None, "flag": np.bool_(True)}
"""
    api.script(alice, "values", src)
    assert api.run(alice, "do-eval", "values").json()["result"] == {
        "f": 1.5,
        "i": 3,
        "nan": None,
        "arr": [0, 1, 2],
        "ts": "2024-01-02T03:04:05",
        "frame": [{"x": None}, {"x": 2.0}],
        "tuple": [1, "a"],
        "none": None,
        "flag": True,
    }


def test_print_never_corrupts_the_result(api, alice):
    api.script(
        alice,
        "chatty",
        "def chatty():\n    print('hello', flush=True)\n    import sys\n    sys.stderr.write('warn')\n    return [1]\n",
    )
    assert api.run(alice, "do-eval", "chatty").json() == {"result": [1]}


def test_graphics_capture_every_open_figure_as_png(api, alice):
    src = """def plots(n):
    import matplotlib.pyplot as plt
    for i in range(int(n)):
        plt.figure(i + 1)
        plt.plot([1, 2, 3], [i, i + 1, i + 4])
        plt.title(f"plot {i + 1}")
    return {"n": n}
"""
    api.script(alice, "plots", src)
    r = api.run(alice, "do-eval", "plots", {"parameters": '{"n": 2}', "graphicsFlag": True})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert [e["ID"] for e in result] == [1, 2]
    assert [e["TITLE"] for e in result] == ["plot 1", "plot 2"]
    for e in result:
        assert base64.b64decode(e["IMAGE"]).startswith(b"\x89PNG\r\n\x1a\n")
        assert json.loads(e["DATA"]) == {"n": 2}


def test_graphics_of_index_apply_are_named_by_index(api, alice):
    api.script(alice, "one", "def one(i):\n    import matplotlib.pyplot as plt\n    plt.plot([i])\n    return i\n")
    result = api.run(alice, "index-apply", "one", {"times": 3, "graphicsFlag": True}).json()["result"]
    assert [(e["NAME"], e["ID"], e["DATA"]) for e in result] == [("1", 1, "1"), ("2", 1, "2"), ("3", 1, "3")]


def test_a_script_error_is_a_400_with_the_scripts_traceback(api, alice):
    api.script(alice, "boom", "def boom():\n    x = {}\n    return x['missing']\n")
    r = api.run(alice, "do-eval", "boom")
    assert r.status_code == 400
    body = r.json()
    assert body["errorCode"] == 1030
    assert "KeyError: 'missing'" in body["errorMessage"]
    assert 'File "boom", line 3, in boom' in body["errorMessage"]
    assert "return x['missing']" in body["errorMessage"]
    assert "engines/" not in body["errorMessage"]


def test_an_unserializable_value_is_a_400_saying_so(api, alice):
    api.script(
        alice,
        "model",
        "def model():\n    from sklearn.linear_model import LinearRegression\n    return LinearRegression()\n",
    )
    r = api.run(alice, "do-eval", "model")
    assert r.status_code == 400 and r.json()["errorCode"] == 1031
    assert "LinearRegression" in r.json()["errorMessage"]


def test_unknown_script_and_bad_bodies_are_clear_errors(api, alice):
    assert api.run(alice, "do-eval", "nope").status_code == 404
    api.script(alice, "f", "def f(d):\n    return 1\n")
    for verb, body in [
        ("row-apply", {"input": "select 1 from dual"}),
        ("group-apply", {"input": "select 1 x from dual"}),
        ("index-apply", {"times": "many"}),
        ("table-apply", {}),
    ]:
        r = api.run(alice, verb, "f", body)
        assert r.status_code == 400 and r.json()["errorCode"] == 1000, (verb, r.text)
    r = api.client.post("/oml/api/py-scripts/v1/do-eval/f", headers=alice, content=b"{not json")
    assert r.status_code == 400


def test_group_by_a_missing_column_is_a_400(api, alice):
    api.table(alice, "T", pd.DataFrame({"A": [1]}))
    api.script(alice, "f", "def f(d):\n    return 1\n")
    r = api.run(alice, "group-apply", "f", {"input": "select * from t", "groupBy": "B"})
    assert r.status_code == 400


def test_both_url_forms_and_v2(api, alice):
    api.script(alice, "one", "def one():\n    return 1\n")
    for path in (
        "/oml/api/py-scripts/v1/do-eval/one",
        "/oml/api/py-scripts/v2/do-eval/one",
        "/oml/tenants/PYQD/databases/PYQD/api/py-scripts/v1/do-eval/one",
        "/oml/tenants/pyqd/databases/pyqd/api/py-scripts/v2/do-eval/one",
    ):
        assert api.client.post(path, headers=alice, json={}).json() == {"result": 1}, path
    assert (
        api.client.post(
            "/oml/tenants/OTHER/databases/PYQD/api/py-scripts/v1/do-eval/one", headers=alice, json={}
        ).status_code
        == 404
    )


def test_owner_form_needs_a_grant_and_global_scripts_run_for_everyone(api, alice):
    bob = api.user("BOB")
    api.script(alice, "mine", "def mine():\n    return 'alice'\n")
    assert api.run(bob, "do-eval", "mine", owner="ALICE").status_code == 404
    api.client.post("/oml/api/pyqd/v1/scripts/mine/grants", headers=alice, json={"user": "BOB"})
    assert api.run(bob, "do-eval", "mine", owner="ALICE").json() == {"result": "alice"}
    api.script(api.admin, "shared", "def shared():\n    return 'global'\n", isGlobal=True)
    assert api.run(bob, "do-eval", "shared").json() == {"result": "global"}
    assert api.run(bob, "do-eval", "shared", owner="PYQSYS").json() == {"result": "global"}


def test_input_queries_see_only_granted_tables(api, alice):
    bob = api.user("BOB")
    api.table(alice, "SECRET", pd.DataFrame({"V": [42]}))
    api.script(bob, "peek", "def peek(d):\n    return d.to_dict('list')\n")
    body = {"input": "select * from alice.secret", "parameters": '{"oml_input_type":"pandas.DataFrame"}'}
    r = api.run(bob, "table-apply", "peek", body)
    assert r.status_code == 400 and "does not exist" in r.json()["errorMessage"]
    missing = api.run(bob, "table-apply", "peek", {"input": "select * from alice.nothing_here"})
    assert missing.json()["errorMessage"].replace("NOTHING_HERE", "SECRET") == r.json()["errorMessage"]
    api.client.post("/oml/api/pyqd/v1/tables/SECRET/grants", headers=alice, json={"user": "BOB"})
    assert api.run(bob, "table-apply", "peek", body).json() == {"result": {"V": [42]}}
    api.client.delete("/oml/api/pyqd/v1/tables/SECRET/grants/BOB", headers=alice)
    assert api.run(bob, "table-apply", "peek", body).status_code == 400


@pytest.mark.parametrize(
    "sql",
    [
        "select * from pg_catalog.pg_authid",
        "select * from sqlite_master",
        "select * from information_schema.tables",
        "delete from alice.t",
        "with x as (delete from t returning *) select * from x",
    ],
)
def test_catalogs_and_writes_never_reach_the_database(api, alice, sql):
    api.script(alice, "f", "def f(d):\n    return 1\n")
    r = api.run(alice, "table-apply", "f", {"input": sql})
    assert r.status_code == 400 and r.json()["errorCode"] == 1020


def test_output_limit_is_oracles_error_1024(services, api, alice):
    change_settings(services, output_limit=5)
    api.script(alice, "many", "def many():\n    return list(range(6))\n")
    r = api.run(alice, "do-eval", "many")
    assert r.status_code == 400 and r.json() == {"errorCode": 1024, "errorMessage": "Output exceeds maximum length 5"}
    api.table(alice, "NUMS", pd.DataFrame({"N": range(6)}))
    api.script(alice, "same", "def same(d):\n    return d\n")
    r = api.run(
        alice,
        "row-apply",
        "same",
        {"input": "select * from nums", "rows": 3, "parameters": '{"oml_input_type":"pandas.DataFrame"}'},
    )
    assert r.json()["errorCode"] == 1024


def test_large_tables_are_read_in_batches(services, alice, api):
    from tables import query as tq

    api.table(alice, "BIG", pd.DataFrame({"N": np.arange(10_000)}))
    with services.sessions() as session:
        gated = tq.gate_query(session, services.user_data, "ALICE", "select * from big")
    batches = list(tq.stream_query(services.user_data, gated, "ALICE", timeout_s=30, batch_rows=1000))
    assert sum(b.num_rows for b in batches) == 10_000
    assert len(batches) > 1 and max(b.num_rows for b in batches) <= 5000  # PostgreSQL's driver sizes by bytes


def test_large_results_are_assembled_on_disk_streamed_and_cleaned_up(services, api, alice):
    change_settings(services, result_spill_bytes=64)
    api.table(alice, "NUMS", pd.DataFrame({"N": range(500)}))
    api.script(alice, "same", "def same(d):\n    return d\n")
    body = {
        "input": "select * from nums",
        "rows": 7,
        "parallelFlag": True,
        "service": "HIGH",
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    }
    r = api.run(alice, "row-apply", "same", body)
    assert r.status_code == 200 and [row["N"] for row in r.json()["result"]] == list(range(500))
    job = api.client.post("/oml/api/py-scripts/v2/row-apply/same", headers=alice, json={**body, "asyncFlag": True})
    location = job.headers["location"]
    wait_for(lambda: api.client.get(location, headers=alice, follow_redirects=False).status_code == 302)
    assert api.client.get(location + "/result", headers=alice).json() == r.json()
    spill = services.settings.data_dir / "spill"
    assert not spill.exists() or not list(spill.iterdir())
