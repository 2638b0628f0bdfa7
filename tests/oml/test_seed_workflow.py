"""The seed workflow's first half through the `oml` client against a running server."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression

import oml

REGR_PREDICT = """def regr_predict(dat):
    import oml
    import pandas as pd
    regr = oml.ds.load(name="ds_regr", to_globals=False)["regr"]
    pred = regr.predict(dat[["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]])
    return pd.concat([dat[["SPECIES", "PETAL_WIDTH"]], pd.DataFrame(pred, columns=["Pred_PETAL_WIDTH"])], axis=1)
"""


def iris_frame() -> pd.DataFrame:
    iris = load_iris()
    df = pd.DataFrame(iris.data, columns=["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH", "PETAL_WIDTH"])
    df["SPECIES"] = [iris.target_names[t] for t in iris.target]
    return df


def test_seed_workflow_first_half(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    assert oml.isconnected()

    iris_df = iris_frame()
    proxy = oml.create(iris_df, table="IRIS")
    assert proxy.columns == list(iris_df.columns)
    pd.testing.assert_frame_equal(proxy.pull(), iris_df, check_dtype=False)

    regr = LinearRegression().fit(iris_df[["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]], iris_df["PETAL_WIDTH"])
    oml.ds.save(objs={"regr": regr}, name="ds_regr", grantable=True, overwrite=True)
    listing = oml.ds.dir()
    assert list(listing.columns) == ["datastore_name", "object_count", "size", "date", "description"]
    assert listing["datastore_name"].tolist() == ["ds_regr"]
    assert listing["object_count"].tolist() == [1]
    loaded = oml.ds.load(name="ds_regr", to_globals=False)["regr"]
    np.testing.assert_allclose(loaded.coef_, regr.coef_)

    oml.script.create("regr_predict", func=REGR_PREDICT, overwrite=True)

    # The v1 listing, called with a token from the OML token endpoint, shows it in Oracle's shape.
    token = httpx.post(
        f"{url}/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": user, "password": password}
    ).json()["accessToken"]
    r = httpx.get(
        f"{url}/oml/api/py-scripts/v1/scripts",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert r.status_code == 200
    (item,) = r.json()["result"]
    assert set(item) == {"owner", "date", "name", "description", "script"}
    assert item["owner"] == "OML_USER" and item["name"] == "regr_predict" and item["script"] == REGR_PREDICT
    assert item["description"] is None
    assert item["date"].endswith("Z") and len(item["date"]) == len("2020-08-27T15:53:56.000Z")


def test_seed_workflow_end_to_end_with_oracles_curl_command(oml_user):
    """The second half: Oracle's blog's curl command, unchanged, against the running server."""
    import json
    import shutil
    import subprocess

    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    iris_df = iris_frame()
    oml.create(iris_df, table="IRIS")
    features = ["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]
    regr = LinearRegression().fit(iris_df[features], iris_df["PETAL_WIDTH"])
    oml.ds.save(objs={"regr": regr}, name="ds_regr", grantable=True, overwrite=True)
    oml.script.create("regr_predict", func=REGR_PREDICT, overwrite=True)

    curl = shutil.which("curl")
    assert curl, "curl is needed for this test"
    token = json.loads(
        subprocess.run(
            [
                curl,
                "-s",
                "-X",
                "POST",
                "--header",
                "Content-Type: application/json",
                "--header",
                "Accept: application/json",
                "-d",
                json.dumps({"grant_type": "password", "username": user, "password": password}),
                f"{url}/omlusers/api/oauth2/v1/token",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["accessToken"]
    out = subprocess.run(
        [
            curl,
            "-s",
            "-X",
            "POST",
            "--header",
            f"Authorization: Bearer {token}",
            "--header",
            "Content-Type: application/json",
            "--header",
            "Accept: application/json",
            "-d",
            '{"input":"select * from IRIS", "parameters":"{\\"oml_input_type\\":\\"pandas.DataFrame\\"}", '
            '"rows":5, "parallelFlag":true, "service":"MEDIUM"}',
            f"{url}/oml/api/py-scripts/v1/row-apply/regr_predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)["result"]
    assert len(result) == 150
    assert all(set(row) == {"SPECIES", "PETAL_WIDTH", "Pred_PETAL_WIDTH"} for row in result)
    assert [row["SPECIES"] for row in result] == iris_df["SPECIES"].tolist()
    np.testing.assert_allclose(
        [row["Pred_PETAL_WIDTH"] for row in result], regr.predict(iris_df[features]), rtol=0, atol=1e-9
    )
