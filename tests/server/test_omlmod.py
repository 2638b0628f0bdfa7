"""OML Services over HTTP on SQLite and PostgreSQL, with real worker processes: the model → deployment →
score → delete lifecycle for ONNX and PYTHON models, Oracle's bodies, status codes and error shape."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from openapi_spec_validator import validate

from tests import scoring_models as sm
from tests.conftest import Api

MODELS = "/omlmod/v1/models"
DEPLOY = "/omlmod/v1/deployment"


def store(api: Api, headers: dict, data: bytes, name: str, kind: str, **fields: str) -> dict:
    form = {"modelName": name, "version": "1.0", "modelType": kind, **fields}
    r = api.client.post(MODELS, headers=headers, files={"modelData": ("model.bin", data)}, data=form)
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"{MODELS}/{r.json()['modelId']}")
    return r.json()


def deploy(api: Api, headers: dict, model_id: str, uri: str) -> dict:
    r = api.client.post(DEPLOY, headers=headers, json={"modelId": model_id, "uri": uri})
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"{DEPLOY}/{uri}")
    return r.json()


def score(api: Api, headers: dict, uri: str, body: dict) -> list[dict]:
    r = api.client.post(f"{DEPLOY}/{uri}/score", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()["scoringResults"]


def assert_error(r, status: int, text: str = "") -> None:  # noqa: ANN001
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == str(status)
    assert text in body["message"]


def test_onnx_classifier_lifecycle(api: Api) -> None:
    h = api.user("OML_USER")
    fitted = sm.churn_classifier()
    created = store(api, h, sm.classifier_onnx(), "churn", "ONNX", description="churn pipeline", namespace="DEMO")
    model_id = created["modelId"]
    assert re.fullmatch(r"[a-z0-9-]{32,36}", model_id)
    assert created["links"][0]["rel"] == "self"

    listed = api.client.get(MODELS, headers=h).json()
    [item] = listed["items"]
    assert item["modelId"] == model_id and item["modelName"] == "churn" and item["version"] == "1.0"
    assert item["modelType"] == "ONNX" and item["shared"] is False and item["createdBy"] == "OML_USER"
    assert item["namespace"] == "DEMO" and item["description"] == "churn pipeline"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["storedOn"])
    assert api.client.get(f"{MODELS}?modelName=churn&version=1.0&namespace=DEMO", headers=h).json()["items"]
    assert api.client.get(f"{MODELS}?namespace=OTHER", headers=h).json()["items"] == []
    assert api.client.get(f"{MODELS}/{model_id}", headers=h).json() == item

    meta = api.client.get(f"{MODELS}/{model_id}/metadata", headers=h).json()
    assert meta["modelName"] == "churn" and meta["miningFunction"] == "CLASSIFICATION" and meta["algorithm"] == "ONNX"
    assert [(a["name"], a["attributeType"]) for a in meta["attributes"]] == [
        ("AGE", "FLOAT"),
        ("INCOME", "FLOAT"),
        ("CITY", "STRING"),
    ]
    content = api.client.get(f"{MODELS}/{model_id}/content", headers=h)
    assert content.status_code == 200 and content.content == sm.classifier_onnx()

    endpoint = deploy(api, h, model_id, "churn_v1")
    assert endpoint["uri"] == "churn_v1" and endpoint["modelId"] == model_id
    details = api.client.get(f"{DEPLOY}/churn_v1", headers=h).json()
    assert details["metadata"]["miningFunction"] == "CLASSIFICATION" and details["modelName"] == "churn"
    [listed_endpoint] = api.client.get(DEPLOY, headers=h).json()["items"]
    assert listed_endpoint["uri"] == "churn_v1" and listed_endpoint["createdBy"] == "OML_USER"

    sample = fitted.frame.head(8)
    records = [{"AGE": str(r.AGE), "INCOME": str(r.INCOME), "CITY": r.CITY} for r in sample.itertuples()]
    results = score(api, h, "churn_v1", {"inputRecords": records, "topN": 1})
    assert len(results) == 8
    for row, probs in zip(results, fitted.estimator.predict_proba(sample), strict=True):
        [best] = row["classifications"]
        assert best["probability"] == pytest.approx(max(probs), abs=1e-6)
        assert best["label"] == fitted.estimator.classes_[int(np.argmax(probs))]

    assert_error(api.client.delete(f"{MODELS}/{model_id}", headers=h), 409, "deployed")
    assert_error(
        api.client.post(DEPLOY, headers=h, json={"modelId": model_id, "uri": "churn_v2"}), 409, "already deployed"
    )
    assert api.client.delete(f"{DEPLOY}/churn_v1", headers=h).status_code == 204
    assert_error(api.client.post(f"{DEPLOY}/churn_v1/score", headers=h, json={"inputRecords": records}), 404)
    assert api.client.delete(f"{MODELS}/{model_id}", headers=h).status_code == 204
    assert_error(api.client.get(f"{MODELS}/{model_id}", headers=h), 404)
    assert api.client.get(MODELS, headers=h).json()["items"] == []


def test_regression_and_clustering_endpoints(api: Api) -> None:
    h = api.user("OML_USER")
    reg = store(api, h, sm.oracle_zip(sm.regressor_onnx(), {"function": "regression"}), "income", "ONNX")
    deploy(api, h, reg["modelId"], "income")
    sample = sm.income_regressor().frame.head(5)
    got = [r["regression"] for r in score(api, h, "income", {"inputRecords": sample.to_dict("records")})]
    np.testing.assert_allclose(got, sm.income_regressor().estimator.predict(sample), rtol=1e-6, atol=1e-4)

    km = store(api, h, sm.kmeans_onnx(), "segments", "ONNX")
    deploy(api, h, km["modelId"], "segments")
    frame = sm.segments().frame.head(4)
    results = score(api, h, "segments", {"inputRecords": [{"X": [list(p)]} for p in frame.to_numpy()], "topN": 1})
    assert [r["clusters"][0]["clusterId"] for r in results] == [str(c) for c in sm.segments().estimator.predict(frame)]


def test_python_model_from_file_and_from_a_datastore(api: Api) -> None:
    h = api.user("OML_USER")
    fitted = sm.income_regressor()
    created = store(api, h, sm.joblib_bytes(fitted.estimator), "regr", "PYTHON")
    deploy(api, h, created["modelId"], "regr")
    sample = fitted.frame.head(3)
    got = [r["regression"] for r in score(api, h, "regr", {"inputRecords": sample.to_dict("records")})]
    np.testing.assert_allclose(got, fitted.estimator.predict(sample), rtol=1e-9)

    # the seed flow: a model saved in a datastore by `oml.ds.save`, deployed without downloading it
    r = api.client.post(
        "/oml/api/pyqd/v1/datastores/ds_regr",
        headers=h,
        files={"regr": ("regr", sm.joblib_bytes(fitted.estimator))},
        data={"meta": json.dumps({"overwrite": True})},
    )
    assert r.status_code in (200, 201), r.text
    r = api.client.post(
        MODELS,
        headers=h,
        json={
            "modelName": "regr_ds",
            "version": "2.0",
            "modelType": "PYTHON",
            "datastore": "ds_regr",
            "object": "regr",
        },
    )
    assert r.status_code == 201, r.text
    deploy(api, h, r.json()["modelId"], "regr_ds")
    got = [r["regression"] for r in score(api, h, "regr_ds", {"inputRecords": sample.to_dict("records")})]
    np.testing.assert_allclose(got, fitted.estimator.predict(sample), rtol=1e-9)
    missing = {"modelName": "x", "version": "1.0", "modelType": "PYTHON", "datastore": "ds_regr", "object": "nope"}
    assert_error(api.client.post(MODELS, headers=h, json=missing), 404)


def test_store_refusals(api: Api) -> None:
    h = api.user("OML_USER")
    onnx = sm.regressor_onnx()
    store(api, h, onnx, "twice", "ONNX")
    r = api.client.post(
        MODELS,
        headers=h,
        files={"modelData": ("m", onnx)},
        data={"modelName": "twice", "version": "1.0", "modelType": "ONNX"},
    )
    assert_error(r, 409, "already exists")
    cases = [
        ({"modelName": "m", "version": "1.0", "modelType": "OML"}, onnx, "in-database"),
        ({"modelName": "m", "version": "1.0", "modelType": "PMML"}, onnx, "modelType must be one of"),
        ({"modelName": "bad name", "version": "1.0", "modelType": "ONNX"}, onnx, "modelName"),
        ({"modelName": "m", "version": "one", "modelType": "ONNX"}, onnx, "version"),
        ({"modelName": "m", "version": "1.0"}, onnx, "modelType is required"),
        ({"modelName": "m", "version": "1.0", "modelType": "ONNX"}, b"PK\x03\x04corrupt", "not an ONNX model"),
        ({"modelName": "m", "version": "1.0", "modelType": "ONNX"}, b"\x00" * 100, "not an ONNX model"),
        ({"modelName": "m", "version": "1.0", "modelType": "PYTHON"}, b"not a pickle", "not a pickle"),
    ]
    for fields, data, text in cases:
        r = api.client.post(MODELS, headers=h, files={"modelData": ("m", data)}, data=fields)
        assert_error(r, 400, text)
    assert_error(
        api.client.post(MODELS, headers=h, data={"modelName": "m", "version": "1.0", "modelType": "ONNX"}), 400
    )
    assert_error(api.client.post(MODELS, headers={**h, "Content-Type": "text/plain"}, content=b"raw"), 400)
    assert [m["modelName"] for m in api.client.get(MODELS, headers=h).json()["items"]] == ["twice"]


def test_score_refusals_are_400_naming_the_column(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, sm.classifier_onnx(), "churn", "ONNX")
    deploy(api, h, created["modelId"], "churn")
    url = f"{DEPLOY}/churn/score"
    assert_error(api.client.post(url, headers=h, json={"inputRecords": []}), 400, "inputRecords is empty")
    assert_error(api.client.post(url, headers=h, json={"inputRecords": [{"AGE": "old"}]}), 400, "AGE")
    assert_error(api.client.post(url, headers=h, json={"inputRecords": [{"AGEX": 1}]}), 400, "AGEX")
    assert_error(api.client.post(url, headers=h, content=b"{oops"), 400, "not JSON")
    # the endpoint still answers
    assert score(api, h, "churn", {"inputRecords": [{"AGE": 30, "INCOME": 40, "CITY": "Oslo"}]})


def test_visibility_of_private_and_shared_models(api: Api) -> None:
    owner, other = api.user("OWNER"), api.user("OTHER")
    private = store(api, owner, sm.regressor_onnx(), "private", "ONNX")["modelId"]
    shared = store(api, owner, sm.regressor_onnx(), "shared", "ONNX", shared="true")["modelId"]
    deploy(api, owner, private, "private_ep")
    record = {"inputRecords": [{"AGE": 30, "INCOME": 40}]}
    # the other user cannot learn the private model exists
    for path in (f"{MODELS}/{private}", f"{MODELS}/{private}/metadata", f"{MODELS}/{private}/content"):
        assert_error(api.client.get(path, headers=other), 404)
    assert_error(api.client.delete(f"{MODELS}/{private}", headers=other), 404)
    assert_error(api.client.post(f"{MODELS}/{private}", headers=other, json={"namespace": "X"}), 404)
    assert_error(api.client.post(f"{DEPLOY}/private_ep/score", headers=other, json=record), 404)
    assert_error(api.client.get(f"{DEPLOY}/private_ep", headers=other), 404)
    assert_error(api.client.get(f"{DEPLOY}/private_ep/api", headers=other), 404)
    assert_error(api.client.post(DEPLOY, headers=other, json={"modelId": private, "uri": "stolen"}), 404)
    assert [m["modelId"] for m in api.client.get(MODELS, headers=other).json()["items"]] == [shared]
    assert api.client.get(DEPLOY, headers=other).json()["items"] == []
    # a shared model: others see it, deploy and score it, but only its creator changes or deletes it
    assert api.client.get(f"{MODELS}/{shared}", headers=other).status_code == 200
    assert_error(api.client.post(f"{MODELS}/{shared}", headers=other, json={"namespace": "X"}), 403)
    assert_error(api.client.delete(f"{MODELS}/{shared}", headers=other), 403)
    deploy(api, other, shared, "shared_ep")
    assert score(api, other, "shared_ep", record) == score(api, owner, "shared_ep", record)
    assert api.client.delete(f"{DEPLOY}/shared_ep", headers=owner).status_code == 204  # the model's creator may
    assert api.client.post(f"{MODELS}/{shared}", headers=owner, json={"namespace": "TEAM"}).status_code == 204
    assert api.client.get(f"{MODELS}/{shared}", headers=other).json()["namespace"] == "TEAM"


def test_no_token_gets_401_in_the_services_shape(api: Api) -> None:
    for method, path in (("get", MODELS), ("post", f"{DEPLOY}/x/score"), ("get", "/omlmod/v1"), ("get", DEPLOY)):
        assert_error(getattr(api.client, method)(path), 401)
    assert api.client.get("/omlmod/v1/api").status_code == 200


def test_versions_and_service_document(api: Api) -> None:
    h = api.user("OML_USER")
    root = api.client.get("/omlmod/", headers=h).json()
    assert root["items"][0]["version"] == "v1" and root["items"][0]["lifecycle"] == "active"
    v1 = api.client.get("/omlmod/v1", headers=h).json()
    assert v1["isLatest"] is True and {link["rel"] for link in v1["links"]} >= {"self"}
    doc = api.client.get("/omlmod/v1/api").json()
    validate(doc)
    assert doc["openapi"].startswith("3.0")
    for path in ("/v1/models", "/v1/models/{modelId}", "/v1/deployment", "/v1/deployment/{uri}/score"):
        assert path in doc["paths"]


def test_endpoint_openapi_document(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, sm.classifier_onnx(), "churn", "ONNX")
    deploy(api, h, created["modelId"], "churn")
    doc = api.client.get(f"{DEPLOY}/churn/api", headers=h).json()
    validate(doc)
    record = doc["components"]["schemas"]["InputRecord"]["properties"]
    assert {k: v["type"] for k, v in record.items()} == {"AGE": "number", "INCOME": "number", "CITY": "string"}
    op = doc["paths"]["/deployment/churn/score"]["post"]
    example = op["requestBody"]["content"]["application/json"]["example"]
    # the example request scores as it is
    assert score(api, h, "churn", example)
    answer = op["responses"]["200"]["content"]["application/json"]["example"]
    assert "classifications" in answer["scoringResults"][0]


def test_a_fifty_megabyte_model(api: Api) -> None:
    """A PYTHON model carrying 50 MB of weights stores, deploys and scores; over the limit it is a 413."""
    h = api.user("OML_USER")
    big = sm.income_regressor().estimator
    big.ballast_ = np.random.default_rng(0).random(50 * 1024 * 1024 // 8)  # incompressible
    data = sm.joblib_bytes(big)
    del big.ballast_
    assert len(data) > 50 * 1024 * 1024
    created = store(api, h, data, "heavy", "PYTHON")
    deploy(api, h, created["modelId"], "heavy")
    assert score(api, h, "heavy", {"inputRecords": [{"AGE": 20, "INCOME": 30}]})[0]["regression"] == pytest.approx(
        3 * 20 - 15 + 7
    )
    api.services.settings.model_max_bytes = 10 * 1024 * 1024
    r = api.client.post(
        MODELS,
        headers=h,
        files={"modelData": ("m", data)},
        data={"modelName": "heavy2", "version": "1.0", "modelType": "PYTHON"},
    )
    assert_error(r, 413, "limit")


def test_score_is_one_entry_per_record_in_order(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, sm.joblib_bytes(sm.income_regressor().estimator), "regr", "PYTHON")
    deploy(api, h, created["modelId"], "regr")
    frame = pd.DataFrame({"AGE": np.arange(1000, dtype=float), "INCOME": np.ones(1000)})
    got = [r["regression"] for r in score(api, h, "regr", {"inputRecords": frame.to_dict("records")})]
    np.testing.assert_allclose(got, 3 * frame.AGE - 0.5 + 7, rtol=1e-9)
