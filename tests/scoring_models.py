"""Fitted models for the scoring tests, built here from seeded data: scikit-learn estimators, their joblib bytes
(PYTHON models) and their ONNX conversions (skl2onnx), bare or in Oracle's zip with metadata.json."""

from __future__ import annotations

import functools
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


@dataclass(frozen=True)
class Fitted:
    estimator: Any
    frame: pd.DataFrame


def customers(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "AGE": rng.integers(18, 80, n).astype(np.float64),
            "INCOME": rng.normal(50, 12, n),
            "CITY": rng.choice(["Lyon", "Oslo", "Quito"], n),
        }
    )


@functools.cache
def churn_classifier() -> Fitted:
    """A pipeline with numeric and categorical columns: StandardScaler + OneHotEncoder → LogisticRegression."""
    df = customers()
    y = np.where((df.AGE > 45) ^ (df.CITY == "Oslo"), "yes", "no")
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["AGE", "INCOME"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["CITY"]),
            ]
        ),
        LogisticRegression(max_iter=500),
    )
    pipe.fit(df, y)
    return Fitted(pipe, df)


@functools.cache
def income_regressor() -> Fitted:
    """A pipeline (so ONNX gets one input per column): StandardScaler → LinearRegression."""
    df = customers()[["AGE", "INCOME"]]
    target = 3.0 * df.AGE - 0.5 * df.INCOME + 7.0
    pipe = make_pipeline(ColumnTransformer([("num", StandardScaler(), ["AGE", "INCOME"])]), LinearRegression())
    return Fitted(pipe.fit(df, target), df)


@functools.cache
def segments() -> Fitted:
    df = customers()[["AGE", "INCOME"]]
    return Fitted(KMeans(3, n_init=4, random_state=0).fit(df), df)


def joblib_bytes(estimator: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    return buf.getvalue()


@functools.cache
def classifier_onnx() -> bytes:
    """The churn pipeline in ONNX: one [N,1] input per column (float, float, string)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [
        ("AGE", FloatTensorType([None, 1])),
        ("INCOME", FloatTensorType([None, 1])),
        ("CITY", StringTensorType([None, 1])),
    ]
    return convert_sklearn(churn_classifier().estimator, initial_types=types).SerializeToString()


@functools.cache
def regressor_onnx() -> bytes:
    """The regressor in ONNX with one [N,1] float input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    types = [("AGE", FloatTensorType([None, 1])), ("INCOME", FloatTensorType([None, 1]))]
    return convert_sklearn(income_regressor().estimator, initial_types=types).SerializeToString()


@functools.cache
def kmeans_onnx() -> bytes:
    """k-means in ONNX: one [N,2] float input `X`; outputs `label` and `scores` (distances)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(segments().estimator, initial_types=[("X", FloatTensorType([None, 2]))]).SerializeToString()


def oracle_zip(onnx: bytes, metadata: dict[str, Any] | None, labels: list[str] | None = None) -> bytes:
    """Oracle's ONNX upload: a zip with model.onnx, metadata.json and, optionally, label.txt."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.onnx", onnx)
        if metadata is not None:
            z.writestr("metadata.json", json.dumps(metadata))
        if labels is not None:
            z.writestr("label.txt", "\n".join(labels) + "\n")
    return buf.getvalue()


@functools.cache
def colour_classifier() -> bytes:
    """An ONNX_IMG model: a [N,3,8,8] image (channels first) → softmax of each channel's mean × 10, so the
    dominant colour wins; zipped with metadata.json (8 × 8, RGB, scale 1/255) and label.txt (red, green, blue)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["means", "ten"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "colours",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    meta = {
        "function": "classification",
        "classificationProbOutput": "probs",
        "height": 8,
        "width": 8,
        "channel": 3,
        "inputChannel": "RGB",
        "mean": [0, 0, 0],
        "scale": [1 / 255, 1 / 255, 1 / 255],
        "inputTensorDimNames": ["batch", "channel", "height", "width"],
    }
    return oracle_zip(model.SerializeToString(), meta, ["red", "green", "blue"])


def png(colour: tuple[int, int, int], size: int = 20) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()
