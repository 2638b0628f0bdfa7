"""Small data sets the tests build themselves."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_iris


def iris_frame() -> pd.DataFrame:
    """The iris data with Oracle's upper-case column names (as in OML's examples)."""
    iris = load_iris()
    df = pd.DataFrame(iris.data, columns=["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH", "PETAL_WIDTH"])
    df["SPECIES"] = [str(iris.target_names[t]) for t in iris.target]
    return df
