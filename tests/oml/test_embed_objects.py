"""Python objects as keyword arguments (a fitted model, a proxy), lambdas and notebook functions, on real workers:
cloudpickled by the client, passed through the server unread, loaded only in the caller's own worker."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import oml
from oml._arguments import function_fields, split_kwargs
from server import accounts
from tests.data import iris_frame

SQLITE = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)


@pytest.fixture
def iris(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    return oml.create(iris_frame(), table="IRIS")


def fitted() -> LinearRegression:
    iris = iris_frame()
    return LinearRegression().fit(iris[["SEPAL_LENGTH"]], iris["PETAL_WIDTH"])


def test_objects_lambdas_and_proxies_in_all_five_verbs(iris):
    model = fitted()
    small = oml.create(pd.DataFrame({"K": [1, 2, 3]}), table="SMALL")
    expected = model.predict(iris_frame()[["SEPAL_LENGTH"]])
    # do_eval: the model and a proxy as keyword arguments; the proxy's rows are read inside the worker.
    total = oml.do_eval(
        lambda model, data: float(model.predict(data.pull()[["SEPAL_LENGTH"]]).sum()), model=model, data=iris
    )
    assert total == pytest.approx(expected.sum())
    # table_apply: the data goes as the proxy's query; the model travels pickled.
    pred = oml.table_apply(iris, lambda d, model: model.predict(d[["SEPAL_LENGTH"]]), model=model,
                           oml_input_type="pandas.DataFrame")  # fmt: skip
    np.testing.assert_allclose(np.sort(pred), np.sort(expected))
    # row_apply: every chunk gets the model and can read another proxy.
    out = oml.row_apply(
        iris,
        lambda d, model, ref: pd.DataFrame({"P": model.predict(d[["SEPAL_LENGTH"]]), "K": int(ref.pull()["K"].sum())}),
        rows=60,
        model=model,
        ref=small,
        oml_input_type="pandas.DataFrame",
    )
    assert len(out) == 150 and set(out["K"]) == {6}
    np.testing.assert_allclose(np.sort(out["P"]), np.sort(expected))
    # group_apply: a tuple (not JSON) and a NumPy number arrive as themselves.
    groups = oml.group_apply(
        iris, iris[["SPECIES"]], lambda d, shape, scale: (type(shape).__name__, type(scale).__name__, len(d) * scale),
        shape=(1, 2), scale=np.float32(2), oml_input_type="pandas.DataFrame",
    )  # fmt: skip
    assert groups == {s: ("tuple", "float32", 100.0) for s in ("setosa", "versicolor", "virginica")}
    # index_apply: JSON values stay JSON (parameters), objects are pickled beside them.
    assert oml.index_apply(2, lambda i, k, ref: i * k + len(ref.pull()), k=10, ref=small, parallel=2) == [13, 23]


def test_keyword_arguments_split_into_json_and_pickles():
    plain, pickled = split_kwargs({"a": 1, "b": [1.5, "x", {"c": None}], "oml_input_type": "default", "t": (1, 2)})
    assert plain == {"a": 1, "b": [1.5, "x", {"c": None}], "oml_input_type": "default"} and pickled
    assert split_kwargs({"nan": float("nan")})[1] is not None  # JSON would turn NaN into null
    assert split_kwargs({"x": 1})[1] is None


def test_which_functions_travel_as_source_and_which_pickled():
    def plain(x):
        return x

    namespace: dict = {"__name__": "__main__", "OFFSET": 5}
    exec("def notebook(x):\n    return x + OFFSET\n", namespace)  # as a notebook cell defines it
    k = 3
    assert "script" in function_fields(plain)
    assert "pickledFunc" in function_fields(lambda x: x)
    assert "pickledFunc" in function_fields(lambda x: x * k)
    assert function_fields(namespace["notebook"])["name"] == "notebook"
    assert "pickledFunc" in function_fields(namespace["notebook"])
    assert function_fields("def f():\n    return 1\n") == {"script": "def f():\n    return 1\n"}


class _Pid:
    """Unpickles into the pid of the process that loads it."""

    def __reduce__(self):
        return (os.getpid, ())


@SQLITE
def test_notebook_functions_closures_and_the_server_never_loading_a_pickle(iris):
    namespace: dict = {"__name__": "__main__", "OFFSET": 5}
    exec("def notebook(x):\n    return x + OFFSET\n", namespace)  # a notebook's function, using its globals
    assert oml.do_eval(namespace["notebook"], x=1) == 6
    factor = 7
    assert oml.index_apply(2, lambda i: i * factor) == [7, 14]
    # The live server runs in this process: had it loaded the pickle, the value would be this process's pid.
    pid = oml.do_eval(lambda who: who, who=_Pid())
    assert isinstance(pid, int) and pid != os.getpid()
    chunks = oml.row_apply(iris, lambda d, who: who, rows=150, who=_Pid())
    assert len(chunks) == 1 and chunks[0] != os.getpid()
    conn = oml._connection.current()
    r = conn.request("POST", "/oml/api/pyqd/v1/run/do-eval", ok=(400,), json={"script": "def f():\n  return 1\n",
                     "pickledKwargs": "not base64!"})  # fmt: skip
    assert "pickledKwargs" in r.json()["errorMessage"]
    r = conn.request("POST", "/oml/api/pyqd/v1/run/do-eval", ok=(400,), json={"pickledFunc": "gARLAS4="})
    assert "not a callable" in r.json()["errorMessage"]  # the pickle of 1 is loaded by the worker, not here


@SQLITE
def test_pickled_arguments_are_bounded(iris):
    with pytest.raises(ValueError, match="datastore"):
        oml.do_eval(lambda blob: len(blob), blob=b"x" * (33 * 2**20))
    conn = oml._connection.current()
    body = {"script": "def f(**kw):\n    return 1\n", "pickledKwargs": "A" * (44 * 2**20)}
    r = conn.request("POST", "/oml/api/pyqd/v1/run/do-eval", ok=(413,), json=body)
    assert r.json()["errorCode"] == 1013 and "at most 32 MiB" in r.json()["errorMessage"]


@SQLITE
def test_a_callers_pickle_reaches_only_the_callers_workers_of_a_foreign_script(iris, oml_user, services):
    url, user, password = oml_user
    accounts.add_user(services, "AUTHOR", "author-long-password")
    oml.ds.save({"mine": 1}, name="caller_ds", overwrite=True)
    oml.connect(url=url, username="AUTHOR", password="author-long-password")
    oml.ds.save({"secret": 42}, name="author_ds", overwrite=True)
    oml.script.create("echo", func="def echo(obj=None):\n    import os\n    return {'obj': obj, 'pid': os.getpid()}\n")
    oml.grant("echo", typ="pyqscript", user=user)
    author_pid = oml.do_eval("echo")["pid"]
    oml.connect(url=url, username=user, password=password)

    def probe():
        import os

        import oml

        def can(load):
            try:
                load()
                return True
            except Exception:  # noqa: BLE001
                return False

        return {
            "pid": os.getpid(),
            "own": can(lambda: oml.ds.load(name="caller_ds", to_globals=False)),
            "authors": can(lambda: oml.ds.load(name="author_ds", owner="AUTHOR", to_globals=False)),
        }

    class Probe:
        def __reduce__(self):
            return (probe, ())

    out = oml.do_eval("echo", func_owner="AUTHOR", obj=Probe())
    seen = out["obj"]  # the author's script returned what the caller's pickle became, as JSON
    assert seen["pid"] == out["pid"] != os.getpid()
    assert seen["own"] and not seen["authors"]  # it ran as the caller, not as the script's author
    pool = services.pool
    caller_workers = {w.pid for w in pool._idle.get(f"{user}\x00AUTHOR", [])}  # noqa: SLF001
    author_workers = {w.pid for w in pool._idle.get("AUTHOR", [])}  # noqa: SLF001
    assert seen["pid"] in caller_workers and seen["pid"] not in author_workers and author_pid in author_workers
