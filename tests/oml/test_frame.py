"""The transparency layer against a live server, on SQLite and PostgreSQL: each proxy operation equals the same
pandas operation on the pulled data. One server and one data set per module and backend (the operations only read).

Comparisons ignore row order (SQL has none unless sorted) and dtype details: a number column may come back as
int64 or float64 (SQLite keeps integers, PostgreSQL's NUMERIC arrives as float), and floats are compared to 1e-9.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

import oml
from server import accounts
from server.app import create_app
from server.services import Services, open_services
from server.settings import Settings
from tables.gate import MAX_NESTING, _nesting
from tests.conftest import serving

PASSWORD = "frame-user-password"
USER, OTHER = "FRAME_USER", "FRAME_OTHER"

DATA = pd.DataFrame(
    {
        "ID": list(range(1, 13)),
        "A": [1.5, -2.0, 3.25, None, 0.0, 7.5, 2.0, -1.25, 4.0, 10.0, 3.0, 5.5],
        "B": [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24],
        "S": [
            "apple",
            "banana",
            None,
            "egg_custard",
            "eggs",
            "pork_loin",
            "ground_pork",
            "tofu",
            "x",
            "apple",
            "kiwi",
            "it's",
        ],
        "F": [True, False, True, True, False, False, True, False, True, True, False, True],
    }
)


@dataclass
class Live:
    url: str
    services: Services
    backend: str


@pytest.fixture(scope="module")
def live(module_settings: Settings, worker_pool: Any) -> Iterator[Live]:
    """A server on a real socket for the module (one per backend), with two users; connected as USER."""
    yield from serve(module_settings, worker_pool)


def serve(settings: Settings, worker_pool: Any) -> Iterator[Live]:
    services = open_services(settings)
    services.pool = worker_pool
    try:
        accounts.add_user(services, USER, PASSWORD)
        accounts.add_user(services, OTHER, PASSWORD)
        with serving(create_app(services=services)) as url:
            oml.connect(url=url, username=USER, password=PASSWORD)
            try:
                yield Live(url, services, "postgresql" if settings.database_url else "sqlite")
            finally:
                oml.disconnect()
    finally:
        services.close()


@pytest.fixture(scope="module")
def df(live: Live) -> oml.DataFrame:
    return oml.create(DATA, table="FRAME_DATA")


def same(got: Any, expected: Any, sort: bool = True) -> None:
    """got (a proxy, or pulled pandas) holds the same rows as expected, in any order unless sort=False."""
    if isinstance(got, oml.DataFrame):
        got = got.pull()
    if isinstance(expected, pd.Series):
        expected = expected.to_frame()
    assert list(got.columns) == list(expected.columns)
    got, expected = _comparable(got), _comparable(expected)
    if sort:
        got = got.sort_values(list(got.columns), na_position="first", key=_sort_key).reset_index(drop=True)
        expected = expected.sort_values(list(expected.columns), na_position="first", key=_sort_key)
        expected = expected.reset_index(drop=True)
    else:
        got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False, rtol=1e-9, atol=1e-12)


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype == object and column.dropna().map(lambda v: isinstance(v, bool | np.bool_)).all():
            out[name] = column.map(lambda v: None if pd.isna(v) else bool(v)).astype(object)
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            out[name] = column.astype(float)
        elif pd.api.types.is_bool_dtype(column):
            out[name] = column.astype(object)
    return out


def _sort_key(column: pd.Series) -> pd.Series:
    return column.map(lambda v: (0, "") if pd.isna(v) else (1, str(v) if isinstance(v, str) else float(v)))


def values(got: list[Any]) -> list[Any]:
    """The values in order, missing ones (None, NaN) as None at the end."""
    present = sorted(v for v in got if not pd.isna(v))
    return present + [None] * (len(got) - len(present))


# ---- selection and filters ------------------------------------------------------------------------------------


def test_columns_dtypes_shape_and_pull(df: oml.DataFrame) -> None:
    assert df.columns == ["ID", "A", "B", "S", "F"]
    assert isinstance(df.shape, tuple) and df.shape == (12, 5) and len(df) == 12
    assert list(df.dtypes) == [oml.Float, oml.Float, oml.Float, oml.String, oml.Boolean]
    pulled = df.pull()
    assert isinstance(pulled, pd.DataFrame)
    assert pulled["F"].dtype == bool
    same(pulled, DATA)


def test_column_selection_and_rows_cols_indexing(df: oml.DataFrame) -> None:
    a = df["A"]
    assert isinstance(a, oml.Float) and isinstance(df["S"], oml.String) and isinstance(df["F"], oml.Boolean)
    assert values(a.pull()) == values(DATA["A"].tolist())
    same(df[["A", "S"]], DATA[["A", "S"]])
    same(df[:, [0, 1]], DATA.iloc[:, [0, 1]])
    same(df[:, 1:4], DATA.iloc[:, 1:4])
    same(df[df["A"] > 1, ["A", "B"]], DATA.loc[DATA["A"] > 1, ["A", "B"]])
    same(df[(df["A"] < 1.5) | (df["B"] == 24), :], DATA[(DATA["A"] < 1.5) | (DATA["B"] == 24)])
    same(df[(df["A"] > 0) & ~df["F"]], DATA[(DATA["A"] > 0) & ~DATA["F"]])
    same(df[df["S"] == "apple"], DATA[DATA["S"] == "apple"])
    assert isinstance(df[:, "ID"], oml.Float) and df[:, "ID"].pull() == DATA["ID"].tolist()
    with pytest.raises(KeyError):
        df["NOPE"]
    with pytest.raises(KeyError):
        df[["A", "NOPE"]]


def test_arithmetic_and_comparisons(df: oml.DataFrame) -> None:
    a, b, p = df["A"], df["B"], DATA
    cases = {
        "add": (a + b, p["A"] + p["B"]),
        "sub": (a - 1.5, p["A"] - 1.5),
        "rsub": (10 - a, 10 - p["A"]),
        "mul": (a * b, p["A"] * p["B"]),
        "div": (b / 4, p["B"] / 4),
        "rdiv": (1 / b, 1 / p["B"]),
        "floordiv": (a // 2, p["A"] // 2),
        "mod": (a % 3, p["A"] % 3),
        "negmod": ((-a) % 4, (-p["A"]) % 4),
        "pow": (b**2, p["B"] ** 2),
        "neg": (-a, -p["A"]),
        "abs": (abs(a), p["A"].abs()),
        "mixed": ((a + 1) * (b - 2) / 3, (p["A"] + 1) * (p["B"] - 2) / 3),
    }
    frame = df.concat({name: proxy for name, (proxy, _) in cases.items()})
    expected = pd.concat([DATA, pd.DataFrame({n: e for n, (_, e) in cases.items()})], axis=1)
    same(frame, expected)

    comparisons = {
        "gt": (a > 2, p["A"] > 2),
        "ge": (a >= 2, p["A"] >= 2),
        "lt": (b < 10, p["B"] < 10),
        "le": (b <= 10, p["B"] <= 10),
        "eq": (b == 12, p["B"] == 12),
        "ne": (b != 12, p["B"] != 12),
        "cols": (a * 4 > b, p["A"] * 4 > p["B"]),
    }
    for name, (proxy, expected_bool) in comparisons.items():
        assert isinstance(proxy, oml.Boolean)
        rows = df[proxy]
        same(rows, DATA[expected_bool.fillna(False).astype(bool)]), name


def test_isnull_notnull_and_dropna(df: oml.DataFrame) -> None:
    same(df[df["A"].isnull()], DATA[DATA["A"].isnull()])
    same(df[df["S"].notnull()], DATA[DATA["S"].notnull()])
    same(df.isnull(), DATA.isnull())
    same(df.notnull(), DATA.notnull())
    same(df.dropna(), DATA.dropna())
    same(df.dropna(how="all"), DATA.dropna(how="all"))
    same(df.dropna(subset=["A"]), DATA.dropna(subset=["A"]))
    same(df.dropna(thresh=5), DATA.dropna(thresh=5))
    assert values(df["S"].dropna().pull()) == values(DATA["S"].dropna().tolist())


def test_head_tail_and_sorting(df: oml.DataFrame) -> None:
    head = df.head(3)
    assert isinstance(head, oml.DataFrame) and len(head) == 3 and len(df.head()) == 5
    ordered = df.sort_values("B", ascending=False)
    same(ordered, DATA.sort_values("B", ascending=False), sort=False)
    same(ordered.head(4), DATA.sort_values("B", ascending=False).head(4), sort=False)
    same(ordered.tail(3), DATA.sort_values("B", ascending=False).tail(3), sort=False)
    assert isinstance(df.tail(), oml.DataFrame) and len(df.tail()) == 5
    for na_position in ("first", "last"):
        expected = DATA.sort_values(["A", "ID"], ascending=[True, False], na_position=na_position)
        same(df.sort_values(["A", "ID"], ascending=[True, False], na_position=na_position), expected, sort=False)
    assert df["B"].sort_values(ascending=False).pull() == sorted(DATA["B"], reverse=True)
    # a filter after a row limit applies to the limited rows
    top = ordered.head(6)
    same(top[top["A"] > 0], DATA.sort_values("B", ascending=False).head(6).query("A > 0"), sort=False)


def test_reshaping(df: oml.DataFrame) -> None:
    same(df.drop("S"), DATA.drop(columns="S"))
    same(df.drop(["S", "F"]), DATA.drop(columns=["S", "F"]))
    same(df.rename({"A": "alpha", "S": "text"}), DATA.rename(columns={"A": "alpha", "S": "text"}))
    same(df[["A", "B"]].rename(["x", "y"]), DATA[["A", "B"]].set_axis(["x", "y"], axis=1))
    same(df.select_types(include=[oml.Float]), DATA[["ID", "A", "B"]])
    same(df.select_types(exclude=[oml.Float, oml.Boolean]), DATA[["S"]])
    dupes = df[["S", "F"]]
    same(dupes.drop_duplicates(), DATA[["S", "F"]].drop_duplicates())
    assert len(df.drop_duplicates(subset=["F"])) == 2
    same(df.drop_duplicates(subset=["S"])[["S"]], DATA[["S"]].drop_duplicates())
    assert values(df["S"].unique().pull()) == values(DATA["S"].unique().tolist())
    with pytest.raises(ValueError):
        df.rename({"A": "B"})


def test_frame_aggregates(df: oml.DataFrame) -> None:
    count = df.count()
    assert isinstance(count, pd.Series)
    pd.testing.assert_series_equal(count, DATA.count(), check_dtype=False)
    numeric = DATA[["ID", "A", "B", "F"]].astype(float)
    pd.testing.assert_series_equal(df.sum(), numeric.sum(), check_dtype=False)
    pd.testing.assert_series_equal(df.mean(), numeric.mean(), check_dtype=False)
    pd.testing.assert_series_equal(df.std(), numeric.std(), check_dtype=False)
    assert df.max()["A"] == DATA["A"].max() and df.min()["S"] == DATA["S"].min() and bool(df.max()["F"]) is True
    pd.testing.assert_series_equal(df.nunique(), DATA.nunique(), check_dtype=False)
    assert pd.isna(df.sum(skipna=False)["A"]) and df.sum(skipna=False)["B"] == DATA["B"].sum()


def test_float_aggregates_are_python_scalars(df: oml.DataFrame) -> None:
    a, p = df["A"], DATA["A"]
    assert isinstance(a.sum(), float) and a.sum() == pytest.approx(p.sum())
    assert a.mean() == pytest.approx(p.mean())
    assert a.min() == p.min() and a.max() == p.max()
    assert a.std() == pytest.approx(p.std())
    assert a.count() == p.count() and isinstance(a.count(), int)
    assert df["S"].nunique() == DATA["S"].nunique() and df["S"].nunique(dropna=False) == DATA["S"].nunique(False)
    assert df["S"].max() == DATA["S"].max()
    assert a.mean(skipna=False) is None
    assert df["F"].sum() == DATA["F"].sum() and df["F"].mean() == pytest.approx(DATA["F"].mean())
    assert len(a) == 12 and a.head(3).count() == 3


def test_float_math(df: oml.DataFrame) -> None:
    a, b, p = df["A"], df["B"], DATA
    cases = {
        "exp": (a.exp(), np.exp(p["A"])),
        "log": (b.log(), np.log(p["B"])),
        "log2": (b.log(2), np.log2(p["B"])),
        "sqrt": (b.sqrt(), np.sqrt(p["B"])),
        "ceil": (a.ceil(), np.ceil(p["A"])),
        "floor": (a.floor(), np.floor(p["A"])),
        "round": ((a * 1.37).round(2), (p["A"] * 1.37).round(2)),
        "round0": ((a + 0.3).round(), (p["A"] + 0.3).round()),
        "abs": (a.abs(), p["A"].abs()),
    }
    frame = df[["ID"]].concat({n: proxy for n, (proxy, _) in cases.items()})
    same(frame, pd.concat([p[["ID"]], pd.DataFrame({n: e for n, (_, e) in cases.items()})], axis=1))
    # outside the domain: NULL (pandas gives NaN), never a database error
    out = df[["ID"]].concat({"log": a.log(), "sqrt": a.sqrt()}).pull().set_index("ID")
    assert out.loc[2].isna().all() and pd.isna(out.loc[5, "log"]) and out.loc[5, "sqrt"] == 0


def test_string_methods(df: oml.DataFrame) -> None:
    s, p = df["S"], DATA["S"]
    cases = {
        "len": (s.len(), p.str.len()),
        "egg": (s.count_pattern("egg"), p.str.count("egg")),
        "p": (s.count_pattern("p"), p.str.count("p")),
        "find": (s.find("pork"), p.str.find("pork")),
        "find2": (s.find("p", 2), p.str.find("p", 2)),
        "quote": (s.find("'"), p.str.find("'")),
    }
    for name, (proxy, _) in cases.items():
        assert isinstance(proxy, oml.Float), name
    frame = df[["ID"]].concat({n: proxy for n, (proxy, _) in cases.items()})
    same(frame, pd.concat([DATA[["ID"]], pd.DataFrame({n: e for n, (_, e) in cases.items()})], axis=1))
    same(df[["S"]].concat({"T": s + "!"}), pd.DataFrame({"S": p, "T": p + "!"}))
    with pytest.raises(ValueError):
        s.count_pattern("e.g")


def test_cumsum(df: oml.DataFrame) -> None:
    got = df.cumsum("B")
    expected = DATA.sort_values("B")[["ID", "A", "B", "F"]].astype(float).cumsum()
    same(got, expected, sort=False)
    same(
        df.cumsum("ID", ascending=False, skipna=False)[["A"]],
        DATA.sort_values("ID", ascending=False)[["A"]].cumsum(skipna=False),
        sort=False,
    )
    assert df["B"].cumsum().pull() == DATA["B"].sort_values().cumsum().tolist()


def test_series_append_and_frame_append(df: oml.DataFrame) -> None:
    both = df["ID"].append(df["B"])
    assert isinstance(both, oml.Float) and values(both.pull()) == values(DATA["ID"].tolist() + DATA["B"].tolist())
    x, y = df[["ID", "S"]], df[["B", "S"]]
    same(x.append(y), pd.concat([DATA[["ID", "S"]], DATA[["B", "S"]].set_axis(["ID", "S"], axis=1)]))
    assert len(x.append(x, all=False)) == 12
    with pytest.raises(ValueError):
        df[["ID", "S"]].append(df[["S", "ID"]])


def test_proxies_pickle_as_sql_text(df: oml.DataFrame) -> None:
    frame = df[df["A"] > 0].sort_values("B").head(4)[["ID", "A"]]
    data = pickle.dumps(frame)
    assert b"Connection" not in data and b"httpx" not in data
    back = pickle.loads(data)
    assert isinstance(back, oml.core.frame.DataFrame) and back.sql == frame.sql
    same(back, frame.pull(), sort=False)
    column = pickle.loads(pickle.dumps(df["A"] * 2))
    assert isinstance(column, oml.Float) and values(column.pull()) == values((df["A"] * 2).pull())
    flag = pickle.loads(pickle.dumps(df["A"] > 2))
    assert isinstance(flag, oml.Boolean) and values(flag.pull()) == values((df["A"] > 2).pull())


def test_a_chain_of_40_operations_stays_flat(df: oml.DataFrame) -> None:
    frame, expected = df, DATA.copy()
    for i in range(10):
        frame = frame[frame["B"] > i]
        expected = expected[expected["B"] > i]
        frame = frame.concat({f"C{i}": (frame["A"] + i) * 2 - frame["B"] / (i + 1)})
        expected[f"C{i}"] = (expected["A"] + i) * 2 - expected["B"] / (i + 1)
        frame = frame.rename({"A": "A2"}).rename({"A2": "A"})
        expected = expected.rename(columns={"A": "A2"}).rename(columns={"A2": "A"})
        frame = frame.sort_values("ID", ascending=bool(i % 2))
    assert _nesting(frame.sql) <= 4, frame.sql
    same(frame, expected)
    # 40 operations on one column: the expression is split over subqueries, within the gate's limit
    value, pvalue = df["A"], DATA["A"]
    for i in range(40):
        value = (value + i) * 1.01 if i % 2 else (value - 1) / 1.5
        pvalue = (pvalue + i) * 1.01 if i % 2 else (pvalue - 1) / 1.5
    deep = df[["ID"]].concat({"V": value})
    assert _nesting(deep.sql) <= MAX_NESTING
    same(deep, pd.DataFrame({"ID": DATA["ID"], "V": pvalue}))


# ---- statistics through the proxy (oml.core.stats, wired by the frame) ---------------------------------------


def test_stats_through_the_proxy_equal_pandas_on_the_pulled_data(df: oml.DataFrame) -> None:
    local = df.pull()
    numbers = df[["A", "B"]]
    described = numbers.describe()
    expected = local[["A", "B"]].describe()
    pd.testing.assert_frame_equal(
        described.astype(float), expected.astype(float), check_exact=False, rtol=1e-9, check_index_type=False
    )
    pd.testing.assert_frame_equal(
        numbers.corr(),
        local[["A", "B"]].corr(),
        check_exact=False,
        rtol=1e-9,
        check_index_type=False,
        check_column_type=False,
    )
    assert df["A"].median() == pytest.approx(local["A"].median())
    a = local["A"].dropna()
    m2, m3, m4 = (((a - a.mean()) ** k).mean() for k in (2, 3, 4))
    assert df["A"].skew() == pytest.approx(m3 / m2**1.5)  # Oracle's biased moments
    assert df["A"].kurtosis() == pytest.approx(m4 / m2**2 - 3)
    with pytest.raises(ValueError, match="skipna"):
        numbers.corr(skipna=False)


def test_crosstab_and_pivot_table_are_lazy_proxies_equal_to_pandas(df: oml.DataFrame) -> None:
    local = df.pull()
    long = df.crosstab("F")
    assert isinstance(long, oml.DataFrame)
    got = long.pull().sort_values("F").reset_index(drop=True)
    expected = local.groupby("F").size().reset_index(name="count").sort_values("F").reset_index(drop=True)
    assert got["F"].astype(bool).tolist() == expected["F"].tolist()
    assert got["count"].astype(int).tolist() == expected["count"].tolist()
    wide = df.crosstab("F", "S", pivot=True).pull()
    assert int(wide.drop(columns=["F"]).to_numpy(dtype=float, na_value=0).sum()) == len(local)
    table = df.pivot_table("F", values="B", aggfunc="mean")
    assert isinstance(table, oml.DataFrame)
    means = table.pull().sort_values("F")
    assert means.iloc[:, -1].astype(float).tolist() == pytest.approx(local.groupby("F")["B"].mean().tolist())


def test_graphics_take_a_proxy_column(df: oml.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, edges, _ = oml.graphics.hist(df["B"], bins=4)
    expected, expected_edges = np.histogram(df.pull()["B"], bins=4)
    assert list(counts) == list(expected)
    assert list(edges) == pytest.approx(list(expected_edges))
    oml.graphics.boxplot(df[["A", "B"]])
    plt.close("all")
