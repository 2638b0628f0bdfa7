"""PYTHON models (pyqd's own type): a pickled or joblib estimator, unpickled here in a sandboxed
worker and never in the server.

Anything with `predict` scores. What it predicts is read from the estimator: `predict_proba` and `classes_` make
it a classifier (classifications with probabilities), a clusterer (`_estimator_type == "clusterer"`) answers
clusters (by `predict_proba`, else by `transform`'s distances), anything else a regression (or, when `predict`
answers text, a classification with the predicted label only). Its inputs are `feature_names_in_` (one
attribute per column, handed over as a DataFrame), else `n_features_in_` columns named x0, x1, ... (a 2-D array).
A column is CATEGORICAL when an encoder of the estimator (OneHotEncoder, OrdinalEncoder...) reads it with text
categories, else NUMERICAL.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from engines.worker.scoring import (
    Attribute,
    ModelFailed,
    ModelUnreadable,
    classifications,
    clusters_by_distance,
    clusters_by_probability,
    regressions,
)

#: sklearn estimator class prefixes → OML Services' algorithm names.
ALGORITHMS = {
    "RandomForest": "RANDOM_FOREST",
    "ExtraTrees": "RANDOM_FOREST",
    "DecisionTree": "DECISION_TREE",
    "LogisticRegression": "GENERALIZED_LINEAR_MODEL",
    "LinearRegression": "GENERALIZED_LINEAR_MODEL",
    "Ridge": "GENERALIZED_LINEAR_MODEL",
    "Lasso": "GENERALIZED_LINEAR_MODEL",
    "ElasticNet": "GENERALIZED_LINEAR_MODEL",
    "SGD": "GENERALIZED_LINEAR_MODEL",
    "SVC": "SUPPORT_VECTOR_MACHINES",
    "SVR": "SUPPORT_VECTOR_MACHINES",
    "LinearSVC": "SUPPORT_VECTOR_MACHINES",
    "KMeans": "K_MEANS",
    "MiniBatchKMeans": "K_MEANS",
    "GaussianMixture": "EXPECTATION_MAXIMIZATION",
    "GaussianNB": "NAIVE_BAYES",
    "MultinomialNB": "NAIVE_BAYES",
    "MLP": "NEURAL_NETWORK",
    "XGB": "XGBOOST",
}


def load_estimator(data: bytes) -> Any:
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - unpickling runs the pickle's own code: anything can happen
        raise ModelUnreadable(f"not a pickle or joblib file that loads here: {type(e).__name__}: {e}") from None


class PythonModel:
    def __init__(self, data: bytes) -> None:
        model = load_estimator(data)
        if not callable(getattr(model, "predict", None)):
            raise ModelUnreadable(f"a PYTHON model needs a predict method; {type(model).__name__} has none")
        self.model = model
        names = getattr(model, "feature_names_in_", None)
        categorical = _categorical_columns(model)
        if names is not None:
            self.names: list[str] | None = [str(n) for n in names]
            self.attributes = [
                Attribute(n, categorical.get(n, "NUMERICAL"), ())
                for n in self.names  # type: ignore[union-attr]
            ]
        else:
            count = getattr(model, "n_features_in_", None)
            if not isinstance(count, int | np.integer) or count <= 0:
                raise ModelUnreadable(
                    "the estimator has neither feature_names_in_ nor n_features_in_: fit it on a DataFrame"
                )
            self.names = None
            self.attributes = [Attribute(f"x{i}", "NUMERICAL", ()) for i in range(int(count))]
        # Only a ColumnTransformer (or code of the user's) reads columns by name: a scikit-learn estimator or
        # pipeline without one gets a float matrix in feature_names_in_'s order, which skips building a DataFrame
        # and scikit-learn's checks of it (about 0.7 ms a call, most of a one-record score).
        self.plain = all(a.attribute_type == "NUMERICAL" for a in self.attributes) and _positional(model)
        if self.plain and self.names is not None:
            import warnings

            warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self.function, self.labels = self._function()
        self.metadata = self._describe()

    def _function(self) -> tuple[str, list[str] | None]:
        kind = _estimator_type(self.model)
        classes = getattr(self.model, "classes_", None)
        if kind == "clusterer":
            return "clustering", None
        if classes is not None and callable(getattr(self.model, "predict_proba", None)):
            return "classification", [_label(c) for c in classes]
        if kind == "classifier":
            return "classification", None if classes is None else [_label(c) for c in classes]
        return "regression", None

    def _describe(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "miningFunction": self.function.upper(),
            "algorithm": _algorithm(self.model),
            "attributes": [a.describe() for a in self.attributes],
            "estimator": f"{type(self.model).__module__}.{type(self.model).__qualname__}"[:200],
        }
        if self.labels is not None:
            meta["labels"] = self.labels
        return meta

    def _frame(self, columns: dict[str, np.ndarray], rows: int) -> Any:
        if self.names is None or self.plain:
            return np.column_stack([columns[a.name] for a in self.attributes]).astype(np.float64)
        import pandas as pd

        return pd.DataFrame({n: columns[n] for n in self.names}, index=pd.RangeIndex(rows), copy=False)

    def score(self, columns: dict[str, np.ndarray], rows: int, top_n: int | None) -> list[dict[str, Any]]:
        x = self._frame(columns, rows)
        m = self.model
        if self.function == "classification":
            if self.labels is not None and callable(getattr(m, "predict_proba", None)):
                return classifications(self.labels, _matrix(m.predict_proba(x), rows, len(self.labels)), top_n)
            return [{"classifications": [{"label": _label(p), "probability": 1.0}]} for p in _rows(m.predict(x), rows)]
        if self.function == "clustering":
            if callable(getattr(m, "predict_proba", None)):
                probs = np.asarray(m.predict_proba(x))
                return clusters_by_probability([str(i) for i in range(probs.shape[1])], probs, top_n)
            if callable(getattr(m, "transform", None)):
                dist = np.asarray(m.transform(x))
                return clusters_by_distance([str(i) for i in range(dist.shape[1])], dist, top_n)
            return [{"clusters": [{"clusterId": _label(p), "probability": 1.0}]} for p in _rows(m.predict(x), rows)]
        predictions = _rows(m.predict(x), rows)
        if predictions.dtype.kind in "OUS":
            return [{"classifications": [{"label": _label(p), "probability": 1.0}]} for p in predictions]
        return regressions(predictions)


def _rows(values: Any, rows: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0 or len(array) != rows:
        raise ModelFailed(f"predict answered {array.shape} for {rows} rows")
    return array


def _matrix(values: Any, rows: int, classes: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (rows, classes):
        raise ModelFailed(f"predict_proba answered shape {list(array.shape)}, not {rows} × {classes}")
    return array


def _label(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _estimator_type(model: Any) -> str | None:
    try:
        from sklearn.base import is_classifier, is_clusterer, is_regressor
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return getattr(model, "_estimator_type", None)
    try:
        if is_classifier(model):
            return "classifier"
        if is_regressor(model):
            return "regressor"
        if is_clusterer(model):
            return "clusterer"
    except Exception:  # noqa: BLE001 - a foreign estimator's tags may raise
        pass
    return getattr(model, "_estimator_type", None)


def _algorithm(model: Any) -> str:
    last = model
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        last = steps[-1][1]
    name = type(last).__name__
    for prefix, algorithm in ALGORITHMS.items():
        if name.startswith(prefix):
            return algorithm
    return "PYTHON"


def _categorical_columns(model: Any) -> dict[str, str]:
    """Columns an encoder of the estimator reads with text categories → "CATEGORICAL"."""
    found: dict[str, str] = {}
    for transformer, columns in _column_transformers(model):
        encoder = _encoder(transformer)
        categories = getattr(encoder, "categories_", None) if encoder is not None else None
        if categories is None or not isinstance(columns, list | tuple | np.ndarray):
            continue
        for column, cats in zip(columns, categories, strict=False):
            if isinstance(column, str) and np.asarray(cats).dtype.kind in "OUS":
                found[column] = "CATEGORICAL"
    return found


def _positional(model: Any, depth: int = 0) -> bool:
    """Whether the estimator reads its input by position only: scikit-learn's own classes, in pipelines or not,
    with no ColumnTransformer or FunctionTransformer (which may select columns by name)."""
    if depth > 5:
        return False
    cls = type(model)
    if not cls.__module__.startswith("sklearn.") or cls.__name__ in ("ColumnTransformer", "FunctionTransformer"):
        return False
    steps = getattr(model, "steps", None)
    if steps is not None:
        return all(_positional(step[1], depth + 1) for step in steps if step[1] not in (None, "passthrough"))
    return not hasattr(model, "transformers_")


def _column_transformers(model: Any, depth: int = 0) -> list[tuple[Any, Any]]:
    if depth > 5:
        return []
    out: list[tuple[Any, Any]] = []
    for step in getattr(model, "steps", None) or []:
        out += _column_transformers(step[1], depth + 1)
    for item in getattr(model, "transformers_", None) or []:
        if isinstance(item, tuple) and len(item) >= 3:
            out.append((item[1], item[2]))
    return out


def _encoder(transformer: Any) -> Any:
    if hasattr(transformer, "categories_"):
        return transformer
    for step in getattr(transformer, "steps", None) or []:
        if hasattr(step[1], "categories_"):
            return step[1]
    return None
