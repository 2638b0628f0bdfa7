"""`oml.services` against a running server: fitted scikit-learn models to endpoints, scored with DataFrames."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

import oml
from oml import services

FEATURES = ["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH", "PETAL_WIDTH"]


def iris_frame() -> pd.DataFrame:
    iris = load_iris()
    df = pd.DataFrame(iris.data, columns=FEATURES)
    df["SPECIES"] = [iris.target_names[t] for t in iris.target]
    return df


def test_fitted_models_to_endpoints_and_back(oml_user, tmp_path):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    df = iris_frame()
    inputs = FEATURES[:3]
    regr = LinearRegression().fit(df[inputs], df["PETAL_WIDTH"])
    clf = LogisticRegression(max_iter=1000).fit(df[FEATURES], df["SPECIES"])

    # An estimator object (pickled by the client), and a joblib file from a path.
    created = services.deploy_model(regr, name="regr", uri="regr_ep", description="petal width")
    assert created["uri"] == "regr_ep"
    regr_id = created["modelId"]
    joblib.dump(clf, tmp_path / "clf.joblib")
    clf_id = services.store_model(tmp_path / "clf.joblib", name="clf", version="2.1", shared=True)
    assert services.deploy(clf_id, "clf_ep")["modelId"] == clf_id

    # A DataFrame in, a DataFrame on the same index out, equal to the models' own predictions.
    sample = df.sample(25, random_state=1)
    scored = services.score("regr_ep", sample[inputs])
    assert list(scored.index) == list(sample.index)
    np.testing.assert_allclose(scored["regression"], regr.predict(sample[inputs]), rtol=0, atol=1e-6)
    scored = services.score("clf_ep", sample[FEATURES])
    assert scored["label"].tolist() == clf.predict(sample[FEATURES]).tolist()
    probabilities = clf.predict_proba(sample[FEATURES])
    np.testing.assert_allclose(scored["probability"], probabilities.max(axis=1), rtol=0, atol=1e-6)
    first = {c["label"]: c["probability"] for c in scored["classifications"].iloc[0]}
    np.testing.assert_allclose([first[c] for c in clf.classes_], probabilities[0], rtol=0, atol=1e-6)
    # Records in, Oracle's scoringResults out; topN cuts the classes.
    results = services.score("clf_ep", sample[FEATURES].head(2).to_dict("records"), top_n=2)
    assert [len(r["classifications"]) for r in results] == [2, 2]
    # NaN goes as null (missing): this model refuses missing values, and the client raises its message.
    holey = sample[FEATURES].head(2).copy()
    holey.iloc[0, 0] = np.nan
    with pytest.raises(oml.InvalidRequestError, match="NaN"):
        services.score("clf_ep", holey)

    meta = services.model_metadata(clf_id)
    assert meta["miningFunction"] == "CLASSIFICATION"
    assert meta["labels"] == list(clf.classes_)
    assert [a["name"] for a in meta["attributes"]] == FEATURES
    api = services.endpoint_api("regr_ep")
    assert list(api["components"]["schemas"]["InputRecord"]["properties"]) == inputs
    assert services.endpoint("clf_ep")["metadata"]["modelName"] == "clf"
    assert services.model_info(clf_id)["version"] == "2.1"
    assert services.model_content(clf_id) == (tmp_path / "clf.joblib").read_bytes()
    services.set_namespace(clf_id, "IRIS")
    assert services.list_models(namespace="IRIS")["modelId"].tolist() == [clf_id]

    models = services.list_models()
    assert models[["modelName", "version", "shared", "createdBy"]].values.tolist() == [
        ["regr", "1.0", False, "OML_USER"],
        ["clf", "2.1", True, "OML_USER"],
    ]
    assert services.list_models(name="clf")["modelId"].tolist() == [clf_id]
    assert sorted(services.list_deployments()["uri"]) == ["clf_ep", "regr_ep"]

    # The server's messages, as the oml error classes.
    with pytest.raises(oml.InvalidRequestError, match="regr_ep is in use"):
        services.deploy_model(regr, name="regr2", uri="regr_ep")
    assert "regr2" not in services.list_models()["modelName"].tolist()  # not left behind
    with pytest.raises(oml.InvalidRequestError, match="needs a predict method"):
        services.store_model({"not": "a model"}, name="bad")
    with pytest.raises(oml.InvalidRequestError, match="already exists"):
        services.store_model(regr, name="regr")
    with pytest.raises(oml.InvalidRequestError, match="deployed at regr_ep"):
        services.delete_model(regr_id)

    services.undeploy("regr_ep")
    services.delete_model(regr_id)
    with pytest.raises(oml.NotFoundError, match="regr_ep does not exist"):
        services.score("regr_ep", sample[inputs])
    with pytest.raises(oml.NotFoundError):
        services.model_metadata(regr_id)
    assert services.list_deployments()["uri"].tolist() == ["clf_ep"]
    assert services.list_models()["modelId"].tolist() == [clf_id]
