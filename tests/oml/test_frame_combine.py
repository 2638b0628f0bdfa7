"""concat, merge, split and KFold on a live server (SQLite and PostgreSQL), against pandas (and Oracle's
documented shapes: merge suffixes every non-key column, concat names by position)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest

import oml
from tests.oml.test_frame import live, same, serve  # noqa: F401 - the module's server fixture

LEFT = pd.DataFrame({"id": [1, 2, 3, 4, 5], "val": ["a", "b", "c", "d", "e"], "ch": ["p", "q", "r", "a", "b"]})
RIGHT = pd.DataFrame({"id": [2, 4, 6], "num": [3.0, 7.2, 5.0]})
DIGITS = pd.DataFrame(
    {
        "K": np.arange(600) % 10,
        "X": np.round(np.sin(np.arange(600)) * 100, 3),
        "T": [f"t{i % 37}" for i in range(600)],
    }
)

__all__ = ["live", "serve"]


@pytest.fixture(scope="module")
def tables(live):  # noqa: ANN001, ANN201, F811
    return (
        oml.create(LEFT, table="COMB_LEFT"),
        oml.create(RIGHT, table="COMB_RIGHT"),
        oml.create(DIGITS, table="DIGITS"),
    )


def test_concat_by_columns_with_lists_and_dicts(tables) -> None:  # noqa: ANN001
    left, _, _ = tables
    x, y = left[["id", "val"]], left[["ch"]]
    same(x.concat(y), LEFT[["id", "val", "ch"]])
    w = (left["id"] * 2).exp().round(2)
    same(
        y.concat({"round(exp(2*id))": w}),
        pd.concat([LEFT[["ch"]], np.exp(LEFT["id"] * 2).round(2).rename("round(exp(2*id))")], axis=1),
    )
    z = left[:, "id"]
    got = x.concat([z, w, y], auto_name=True)
    assert got.columns == ["id", "val", "id3", "id4", "ch"]
    got = x.concat(OrderedDict([("ID", z), ("New_", y)]))
    assert got.columns == ["id", "val", "ID", "New_ch"]
    flag = left["id"] > 3
    assert left.concat(flag).columns == ["id", "val", "ch", "COL4"]
    with pytest.raises(ValueError):
        x.concat(left[["id"]])
    with pytest.raises(ValueError):
        x.concat(left[left["id"] > 2][["ch"]])  # other rows


def test_merge_as_oracle(tables) -> None:  # noqa: ANN001
    left, right, _ = tables
    cross = left[["id", "val"]].merge(right)
    assert cross.columns == ["id_l", "val_l", "id_r", "num_r"] and len(cross) == 15
    expected = LEFT[["id", "val"]].merge(RIGHT, how="cross", suffixes=("_l", "_r")).set_axis(cross.columns, axis=1)
    same(cross, expected)
    on = left.merge(right, on="id", suffixes=[".l", ".r"])
    assert on.columns == ["id", "val.l", "ch.l", "num.r"]
    same(on, LEFT.merge(RIGHT, on="id", how="left").set_axis(on.columns, axis=1))
    for how in ("inner", "right", "full"):
        got = left.merge(right, on="id", how=how)
        pandas_how = "outer" if how == "full" else how
        same(got, LEFT.merge(RIGHT, on="id", how=pandas_how).set_axis(got.columns, axis=1))
    keyed = left.merge(right, left_on="id", right_on="id", how="inner")
    assert keyed.columns == ["id_l", "val_l", "ch_l", "id_r", "num_r"] and len(keyed) == 2
    # a merged proxy works like any other
    same(on[on["num.r"] > 4][["id"]], pd.DataFrame({"id": [4]}))


def test_split_by_hash(tables) -> None:  # noqa: ANN001
    _, _, digits = tables
    train, test = digits.split()
    assert isinstance(train, oml.DataFrame) and len(train) + len(test) == 600
    assert 0.6 < len(train) / 600 < 0.8
    same(train.append(test), DIGITS)
    assert train.pull().merge(test.pull()).empty  # disjoint (rows are distinct)
    again = digits.split()
    same(again[0], train.pull())  # deterministic
    other = digits.split(seed=7)
    assert set(map(tuple, other[0].pull().values)) != set(map(tuple, train.pull().values))
    four = digits.split(ratio=(0.25, 0.25, 0.25, 0.25), use_hash=False)
    assert sum(len(s) for s in four) == 600 and all(100 < len(s) < 200 for s in four)
    sample = digits.split(ratio=(0.2,))
    assert len(sample) == 1 and 60 < len(sample[0]) < 180
    by_k = digits.split(hash_cols=["K"])
    seen = [set(s["K"].drop_duplicates().pull()) for s in by_k]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(10))  # each value in one split only
    by_text = digits.split(hash_cols="T", seed=3)
    texts = [set(s["T"].drop_duplicates().pull()) for s in by_text]
    assert not texts[0] & texts[1] and len(texts[0]) > 5 and len(texts[1]) > 5
    strata = digits.split(strata_cols=["K"])
    assert [len(s) for s in strata] == [420, 180]
    assert all(sorted(s["K"].drop_duplicates().pull()) == list(range(10)) for s in strata)
    with pytest.raises(ValueError):
        digits.split(ratio=(0.8, 0.8))


def test_split_is_the_same_on_every_backend(tables) -> None:  # noqa: ANN001
    """The bucket arithmetic is exact: these counts were computed once and hold on SQLite and PostgreSQL."""
    _, _, digits = tables
    counts = [len(s) for s in digits.split(ratio=(0.5, 0.3, 0.2), seed=2024)]
    assert sum(counts) == 600
    assert counts == EXPECTED_COUNTS


EXPECTED_COUNTS = [282, 182, 136]


def test_kfold(tables) -> None:  # noqa: ANN001
    _, _, digits = tables
    folds = digits.KFold(n_splits=4)
    assert len(folds) == 4 and all(isinstance(f, tuple) and len(f) == 2 for f in folds)
    assert all(len(train) + len(test) == 600 for train, test in folds)
    assert sum(len(test) for _, test in folds) == 600
    tests = [set(map(tuple, test.pull().values)) for _, test in folds]
    assert all(not (tests[i] & tests[j]) for i in range(4) for j in range(i + 1, 4))
    with pytest.raises(ValueError):
        digits.KFold(n_splits=1)
