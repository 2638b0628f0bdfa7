"""`oml.do_eval` & co. from Python: repository scripts, plain functions and source strings, real objects back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import oml
from tests.data import iris_frame


@pytest.fixture
def connected(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    return oml.create(iris_frame(), table="IRIS")


def fit(dat):
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(dat[["SEPAL_LENGTH"]], dat["PETAL_WIDTH"])


def test_table_apply_returns_the_fitted_model_itself(connected):
    model = oml.table_apply(connected, fit, oml_input_type="pandas.DataFrame")
    assert isinstance(model, LinearRegression)
    iris = iris_frame()
    expected = LinearRegression().fit(iris[["SEPAL_LENGTH"]], iris["PETAL_WIDTH"])
    np.testing.assert_allclose(model.coef_, expected.coef_)


def test_do_eval_with_a_repository_script_and_kwargs(connected):
    oml.script.create("scale", func="def scale(x, k=2):\n    return x * k\n", overwrite=True)
    assert oml.do_eval("scale", x=4, k=3) == 12
    assert oml.do_eval(oml.script.load("scale"), x=5) == 10


def test_row_apply_concatenates_frames_from_a_query(connected):
    src = "def tag(d):\n    d['N'] = len(d)\n    return d[['SPECIES', 'N']]\n"
    out = oml.row_apply(
        "select * from IRIS where SPECIES = 'setosa'", src, rows=20, parallel=2, oml_input_type="pandas.DataFrame"
    )
    assert isinstance(out, pd.DataFrame) and len(out) == 50
    assert out["N"].tolist() == [20] * 40 + [10] * 10


def test_group_apply_by_a_column_proxy(connected):
    counts = oml.group_apply(
        connected, connected[["SPECIES"]], "def n(d):\n    return len(d)\n", oml_input_type="pandas.DataFrame"
    )
    assert counts == {"setosa": 50, "versicolor": 50, "virginica": 50}


def test_index_apply_and_graphics(connected):
    assert oml.index_apply(3, lambda_free_square, parallel=True) == [1, 4, 9]
    src = "def plot():\n    import matplotlib.pyplot as plt\n    plt.plot([1, 2])\n    plt.title('Dots')\n"
    src += "    return 'drawn'\n"
    image = oml.do_eval(src, graphics=True)
    assert isinstance(image, oml.embed._DataImage)  # Oracle's class name, and its attribute names
    assert image.dat == image.data == "drawn" and repr(image) == repr("drawn")
    assert image.img[0].startswith(b"\x89PNG") and image.title == ["Dots"]


def lambda_free_square(i):
    return i * i


def test_sync_query_proxies_pull_and_shape(connected):
    proxy = oml.sync(query="select species, count(*) as n from iris group by species")
    assert proxy.columns == ["SPECIES", "N"]
    assert proxy.shape == (3, 2)
    assert sorted(proxy.pull()["N"].tolist()) == [50, 50, 50]
    with pytest.raises(oml.InvalidRequestError, match="must be a query"):
        oml.sync(query="delete from iris")


def test_script_errors_surface_with_the_servers_message(connected):
    with pytest.raises(oml.InvalidRequestError, match="ZeroDivisionError"):
        oml.do_eval("def bad():\n    return 1 / 0\n")
