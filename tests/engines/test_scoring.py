"""Scoring with the in-process twin (`engines.inline`): the worker's model code, through the real channel
grammar, without processes. What a model answers, how inputs are coerced, and how bad input is refused."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from engines.errors import ModelFailed, ModelUnreadable, ScoreRejected
from engines.inline import InlinePool
from engines.scoring import Scorer, ScoringModel
from tests import scoring_models as sm


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(InlinePool(2))


class Loaded:
    def __init__(self, scorer: Scorer, kind: str, data: bytes) -> None:
        self.scorer, self.data = scorer, data
        self.model = ScoringModel("OML_USER", kind, hashlib.sha256(data).hexdigest())
        self.metadata = scorer.inspect(self.model, data)

    def score(self, records: list[dict] | dict, top_n: int | None = None) -> list[dict]:
        body = records if isinstance(records, dict) else {"inputRecords": records}
        if top_n is not None:
            body = {**body, "topN": top_n}
        out = self.scorer.score(self.model, "OML_USER", json.dumps(body).encode(), lambda: self.data)
        return json.loads(out)["scoringResults"]


def _records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in df.to_dict("records")
    ]


def test_onnx_classifier_matches_the_pipeline(scorer: Scorer) -> None:
    fitted = sm.churn_classifier()
    m = Loaded(scorer, "ONNX", sm.classifier_onnx())
    assert m.metadata["miningFunction"] == "CLASSIFICATION"
    assert [a["name"] for a in m.metadata["attributes"]] == ["AGE", "INCOME", "CITY"]
    sample = fitted.frame.head(25)
    results = m.score(_records(sample))
    expected = fitted.estimator.predict_proba(sample)
    classes = list(fitted.estimator.classes_)
    assert len(results) == 25
    for row, probs in zip(results, expected, strict=True):
        got = {c["label"]: c["probability"] for c in row["classifications"]}
        assert set(got) == set(classes)
        for label, p in zip(classes, probs, strict=True):
            assert got[label] == pytest.approx(p, abs=1e-6)
        ordered = [c["probability"] for c in row["classifications"]]
        assert ordered == sorted(ordered, reverse=True)


def test_top_n_cuts_and_orders_classes(scorer: Scorer) -> None:
    m = Loaded(scorer, "PYTHON", sm.joblib_bytes(sm.churn_classifier().estimator))
    row = sm.churn_classifier().frame.iloc[0]
    full = m.score([dict(row)])[0]["classifications"]
    top = m.score([dict(row)], top_n=1)[0]["classifications"]
    assert len(full) == 2 and len(top) == 1
    assert top[0] == full[0] and full[0]["probability"] >= full[1]["probability"]
    assert m.score([dict(row)], top_n=0)[0]["classifications"] == full  # Oracle's examples send 0: no cut


def test_python_classifier_matches_its_own_predictions(scorer: Scorer) -> None:
    fitted = sm.churn_classifier()
    m = Loaded(scorer, "PYTHON", sm.joblib_bytes(fitted.estimator))
    assert m.metadata["labels"] == ["no", "yes"]
    types = {a["name"]: a["attributeType"] for a in m.metadata["attributes"]}
    assert types == {"AGE": "NUMERICAL", "INCOME": "NUMERICAL", "CITY": "CATEGORICAL"}
    sample = fitted.frame.tail(30)
    results = m.score(_records(sample))
    for row, probs in zip(results, fitted.estimator.predict_proba(sample), strict=True):
        got = {c["label"]: c["probability"] for c in row["classifications"]}
        assert got["no"] == pytest.approx(probs[0], abs=1e-9)
        assert got["yes"] == pytest.approx(probs[1], abs=1e-9)


@pytest.mark.parametrize("kind", ["ONNX", "PYTHON"])
def test_regression_matches(scorer: Scorer, kind: str) -> None:
    fitted = sm.income_regressor()
    data = sm.regressor_onnx() if kind == "ONNX" else sm.joblib_bytes(fitted.estimator)
    m = Loaded(scorer, kind, data)
    assert m.metadata["miningFunction"] == "REGRESSION"
    sample = fitted.frame.head(40)
    got = [r["regression"] for r in m.score(_records(sample))]
    expected = fitted.estimator.predict(sample)
    # ONNX computes in float32: equal to the estimator's own predictions to float32 precision
    np.testing.assert_allclose(
        got, expected, rtol=1e-6 if kind == "ONNX" else 1e-12, atol=1e-4 if kind == "ONNX" else 0
    )


def test_onnx_float_model_equals_its_onnxruntime_predictions(scorer: Scorer) -> None:
    """To 1e-6, against onnxruntime run on the same float32 input here."""
    import onnxruntime as ort

    data = sm.regressor_onnx()
    sample = sm.income_regressor().frame.head(20)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {c: sample[[c]].to_numpy(np.float32) for c in ("AGE", "INCOME")}
    expected = session.run(None, feeds)[0].ravel()
    got = [r["regression"] for r in Loaded(scorer, "ONNX", data).score(_records(sample))]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_clusters_nearest_first(scorer: Scorer) -> None:
    fitted = sm.segments()
    for kind, data in (("ONNX", sm.kmeans_onnx()), ("PYTHON", sm.joblib_bytes(fitted.estimator))):
        m = Loaded(scorer, kind, data)
        assert m.metadata["miningFunction"] == "CLUSTERING"
        sample = fitted.frame.head(10)
        records = [{"X": [list(r)]} for r in sample.to_numpy()] if kind == "ONNX" else _records(sample)
        results = m.score(records, top_n=2)
        for row, label in zip(results, fitted.estimator.predict(sample), strict=True):
            clusters = row["clusters"]
            assert len(clusters) == 2
            assert clusters[0]["clusterId"] == str(label)
            assert clusters[0]["distance"] <= clusters[1]["distance"]
            assert clusters[0]["probability"] >= clusters[1]["probability"]


def test_values_as_strings_nan_and_missing_columns(scorer: Scorer) -> None:
    fitted = sm.churn_classifier()
    m = Loaded(scorer, "ONNX", sm.classifier_onnx())
    as_text = m.score([{"AGE": "52", "INCOME": " 61.5 ", "CITY": "Lyon"}])
    as_numbers = m.score([{"AGE": 52, "INCOME": 61.5, "CITY": "Lyon"}])
    assert as_text == as_numbers
    # "NaN", "", null and an absent column are all missing (the pipeline imputes them)
    missing = [
        {"AGE": "NaN", "INCOME": 40, "CITY": "Oslo"},
        {"AGE": "", "INCOME": 40, "CITY": "Oslo"},
        {"AGE": None, "INCOME": 40, "CITY": "Oslo"},
        {"INCOME": 40, "CITY": "Oslo"},
    ]
    results = m.score(missing)
    assert len(results) == 4 and all(r == results[0] for r in results)
    expected = fitted.estimator.predict_proba(pd.DataFrame({"AGE": [np.nan], "INCOME": [40.0], "CITY": ["Oslo"]}))[0]
    got = {c["label"]: c["probability"] for c in results[0]["classifications"]}
    assert got["yes"] == pytest.approx(expected[1], abs=1e-6)
    # names are matched ignoring case (OML's columns are upper case, APEX items often not)
    assert m.score([{"age": 52, "income": 61.5, "city": "Lyon"}]) == as_numbers


def test_oracle_tensor_form_and_several_rows_in_one_record(scorer: Scorer) -> None:
    m = Loaded(scorer, "ONNX", sm.classifier_onnx())
    flat = m.score([{"AGE": 30, "INCOME": 50, "CITY": "Quito"}, {"AGE": 70, "INCOME": 20, "CITY": "Oslo"}])
    tensors = m.score([{"AGE": [[30], [70]], "INCOME": [[50], [20]], "CITY": [["Quito"], ["Oslo"]]}])
    assert tensors == flat
    assert m.score([{"AGE": [["30"]], "INCOME": [[50]], "CITY": [["Quito"]]}]) == flat[:1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputRecords": []}, "inputRecords is empty"),
        ({"records": [{}]}, "inputRecords is required"),
        ({"inputRecords": [1]}, "inputRecords[0] is not an object"),
        ({"inputRecords": [{"AGE": "old", "INCOME": 1, "CITY": "Lyon"}]}, 'inputRecords[0].AGE: "old" is not a number'),
        ({"inputRecords": [{"AGE": 1, "INCOME": [1, 2], "CITY": "Lyon"}]}, "inputs hold 2 rows"),
        ({"inputRecords": [{"AGE": 1, "INCOMEE": 1}]}, "inputRecords[0].INCOMEE: the model has no such input"),
        ({"inputRecords": [{"AGE": {"x": 1}}]}, "inputRecords[0].AGE"),
        ({"inputRecords": [{"AGE": 1}], "topN": -1}, "topN must be a whole number"),
        ({"inputRecords": [{"AGE": 1}], "topN": "two"}, "topN must be a whole number"),
        ({"inputRecords": [{"AGE": 1}], "topNdetails": 3}, "topNdetails"),
        ({"inputRecords": [{"AGE": [[1], [2]], "INCOME": [[1]]}]}, "different numbers of rows"),
    ],
)
def test_bad_input_is_refused_naming_the_field(scorer: Scorer, body: dict, message: str) -> None:
    m = Loaded(scorer, "ONNX", sm.classifier_onnx())
    with pytest.raises(ScoreRejected) as e:
        m.score(body)
    assert message in str(e.value)


def test_body_that_is_not_json(scorer: Scorer) -> None:
    m = Loaded(scorer, "ONNX", sm.regressor_onnx())
    with pytest.raises(ScoreRejected, match="not JSON"):
        scorer.score(m.model, "OML_USER", b"{not json", lambda: m.data)


def test_oracle_zip_with_metadata_and_labels(scorer: Scorer) -> None:
    """A classifier whose probabilities are a plain tensor: the labels come from label.txt."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    df = sm.customers()[["AGE", "INCOME"]]
    y = (df.AGE > 40).astype(int)
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression().fit(df, y)
    onnx = convert_sklearn(
        clf, initial_types=[("input", FloatTensorType([None, 2]))], options={id(clf): {"zipmap": False}}
    ).SerializeToString()
    meta = {"function": "classification", "classificationProbOutput": "probabilities"}
    m = Loaded(scorer, "ONNX", sm.oracle_zip(onnx, meta, ["young", "old"]))
    assert m.metadata["labels"] == ["young", "old"]
    [row] = m.score([{"input": [[60, 50]]}])
    expected = clf.predict_proba(pd.DataFrame({"AGE": [60.0], "INCOME": [50.0]}))[0]
    got = {c["label"]: c["probability"] for c in row["classifications"]}
    assert got["old"] == pytest.approx(expected[1], abs=1e-6)
    assert row["classifications"][0]["label"] == ("old" if expected[1] > 0.5 else "young")


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("ONNX", b"not a model at all", "not an ONNX model"),
        ("ONNX", b"PK\x03\x04 broken zip", "not an ONNX model"),
        ("PYTHON", b"\x80\x04not a pickle", "not a pickle or joblib file"),
    ],
)
def test_unreadable_models(scorer: Scorer, kind: str, data: bytes, message: str) -> None:
    with pytest.raises(ModelUnreadable, match=message):
        scorer.inspect(ScoringModel("OML_USER", kind, hashlib.sha256(data).hexdigest()), data)


def test_zip_rules(scorer: Scorer) -> None:
    onnx = sm.regressor_onnx()
    two = sm.oracle_zip(onnx, None)
    import io
    import zipfile

    buf = io.BytesIO(two)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("other.onnx", onnx)
    with pytest.raises(ModelUnreadable, match="exactly one .onnx"):
        Loaded(scorer, "ONNX", buf.getvalue())
    with pytest.raises(ModelUnreadable, match="function must be one of"):
        Loaded(scorer, "ONNX", sm.oracle_zip(onnx, {"function": "astrology"}))
    with pytest.raises(ModelUnreadable, match="names 'nope'"):
        Loaded(scorer, "ONNX", sm.oracle_zip(onnx, {"function": "regression", "regressionOutput": "nope"}))
    assert Loaded(scorer, "ONNX", sm.oracle_zip(onnx, {"function": "REGRESSION"})).metadata["miningFunction"] == (
        "REGRESSION"
    )


def test_a_model_that_raises_fails_its_request(scorer: Scorer) -> None:
    # LinearRegression refuses NaN: a missing value reaches predict, which raises
    m = Loaded(scorer, "PYTHON", sm.joblib_bytes(sm.income_regressor().estimator))
    with pytest.raises(ModelFailed, match="Input X contains NaN"):
        m.score([{"AGE": 40}])
    assert m.score([{"AGE": 40, "INCOME": 10}])[0]["regression"] == pytest.approx(3 * 40 - 5 + 7)


def test_an_object_without_predict_is_no_model(scorer: Scorer) -> None:
    data = sm.joblib_bytes({"not": "a model"})
    with pytest.raises(ModelUnreadable, match="needs a predict method"):
        Loaded(scorer, "PYTHON", data)


def test_positional_and_named_inputs_both_match_the_estimator(scorer: Scorer) -> None:
    """A plain scikit-learn estimator gets a float matrix (fast); one that selects columns by name (a
    FunctionTransformer here) gets a DataFrame: both answer as the estimator does on the caller's columns."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    df = sm.customers()[["AGE", "INCOME"]]
    target = 2.0 * df.AGE + df.INCOME
    plain = LinearRegression().fit(df, target)
    named = make_pipeline(FunctionTransformer(lambda x: x[["INCOME", "AGE"]]), LinearRegression()).fit(df, target)
    records = [{"INCOME": 10.0, "AGE": 30.0}, {"AGE": 50, "INCOME": "20"}]
    expected = [2.0 * 30 + 10, 2.0 * 50 + 20]
    for estimator in (plain, named):
        import cloudpickle

        m = Loaded(scorer, "PYTHON", cloudpickle.dumps(estimator))
        got = [r["regression"] for r in m.score(records)]
        np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_the_answer_grammar_takes_what_the_renderers_write_and_nothing_else() -> None:
    import orjson

    from engines.scoring import check_answer
    from engines.worker.scoring import (
        classifications,
        clusters_by_distance,
        clusters_by_probability,
        features,
        regressions,
    )

    labels = ["setosa", 'quo"ted', "ünïcode", "back\\slash", "tab\there"]
    p = np.random.default_rng(0).random((50, 5))
    for results in (
        classifications(labels, p, None),
        classifications(labels, p, 2),
        regressions(np.array([1.5, np.nan, -3e-7, 1e300, 0.0])),
        clusters_by_distance([str(i) for i in range(5)], p, None),
        clusters_by_probability(labels, p, 3),
        features(p.astype(np.float32)),
        features(p),
        [{"classifications": [{"label": "x", "probability": 1.0}]}],
        [],
    ):
        check_answer(orjson.dumps({"scoringResults": results}, option=orjson.OPT_SERIALIZE_NUMPY))
    refused = [
        b"<html><script>alert(1)</script></html>",
        b'{"scoringResults":[],"x":1}',
        b'{"scoringResults":[{"regression":1.0,"x":2}]}',
        b'{"scoringResults":[{"regression":"1"}]}',
        b'{"scoringResults":[{"regression":01}]}',
        b'{"scoringResults":[{"regression":1.0}]} ',
        b'{"scoringResults":[{"classifications":[{"label":"a\\uZZZZ","probability":1.0}]}]}',
        b'{"scoringResults":[{"classifications":[{"label":"\xff\xfe","probability":1.0}]}]}',
        b'{"scoringResults":[{"classifications":[{"label":"a","probability":1.0,"z":1}]}]}',
        b'{"scoringResults":[{"clusters":[{"probability":1.0}]}]}',
    ]
    for data in refused:
        with pytest.raises(ModelFailed):
            check_answer(data)
