"""The statistics of the transparency layer (oml.core.stats), computed in the database through the read door, on
SQLite and PostgreSQL: each equals the pandas (or, where Oracle differs, Oracle's) computation on the pulled data."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
from scipy import stats as scipy_stats
from sqlglot import exp

import oml
from oml import _connection
from oml.core import _pivot, _stats_sql, stats
from server import accounts
from server.app import create_app
from server.services import open_services
from server.settings import Settings
from tests.conftest import serving

PASSWORD = "stats-user-password"
HOSTILE = "we'ird -- ;name"  # stored column names cannot hold a double quote (the server refuses them)
QUOTED = 'q"uote; --'  # ... but a query's aliases can
EVIL = 'x\'); DROP TABLE "T"; --'


class Reader:
    """The `run` of the seam: one query through POST /query, counting what comes back."""

    def __init__(self) -> None:
        self.bytes = 0
        self.queries = 0

    def __call__(self, query: exp.Query) -> pd.DataFrame:
        r = _connection.current().request(
            "POST", "/oml/api/pyqd/v1/query", json={"query": query.sql(dialect="oracle"), "limit": None}
        )
        self.bytes += len(r.content)
        self.queries += 1
        if not r.content:
            return pd.DataFrame()
        return pa.ipc.open_stream(r.content).read_all().to_pandas()


@dataclass
class Server:
    url: str
    backend: str
    tables: dict[str, exp.Select] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stats_server(module_settings: Settings, worker_pool: Any) -> Iterator[Server]:
    """One live server per backend for the module, with a user OML_USER (module scope keeps the module fast)."""
    services = open_services(module_settings)
    services.pool = worker_pool
    try:
        with serving(create_app(services=services)) as url:
            accounts.add_user(services, "OML_USER", PASSWORD)
            try:
                yield Server(url, "postgresql" if module_settings.database_url else "sqlite")
            finally:
                oml.disconnect()  # before the server stops: it need not wait for the client's idle connection
    finally:
        services.close()


@pytest.fixture
def run(stats_server: Server) -> Reader:
    oml.connect(url=stats_server.url, username="OML_USER", password=PASSWORD)
    return Reader()


def table(name: str, df: pd.DataFrame) -> exp.Select:
    """Store `df` as table `name` (replacing it) and answer the query of its proxy."""
    try:
        oml.drop(table=name)
    except oml.NotFoundError:
        pass
    oml.create(df, table=name)
    return sqlglot.parse_one(f'SELECT * FROM "{name}"', read="oracle")  # type: ignore[return-value]


def sample() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    n = 40
    x = rng.normal(10, 3, n).round(3)
    y = (2 * x + rng.normal(0, 1, n)).round(3)
    x[[3, 17]] = np.nan
    y[[5, 17, 30]] = np.nan
    return pd.DataFrame(
        {
            "ID": np.arange(n, dtype="int64"),
            "X": x,
            "Y": y,
            "Z": np.full(n, 5.0),
            HOSTILE: rng.exponential(2, n).round(2),
            "S": shuffled(["a"] * 15 + ["b"] * 10 + ["c"] * 8 + [None] * 7, rng),
            "B": shuffled([True] * 25 + [False] * 12 + [None] * 3, rng),
            "BY": pd.Series([b"x"] * 20 + [b"y"] * 15 + [b"z"] * 5, dtype=object),
        }
    ).reset_index(drop=True)


def shuffled(values: list[object], rng: np.random.Generator) -> pd.Series:
    return pd.Series([values[i] for i in rng.permutation(len(values))], dtype=object)


KINDS = {"ID": "number", "X": "number", "Y": "number", "Z": "number", HOSTILE: "number"}
KINDS |= {"S": "string", "B": "boolean", "BY": "bytes"}
NUMBERS = ["ID", "X", "Y", "Z", HOSTILE]


@pytest.fixture
def data(run: Reader, stats_server: Server) -> tuple[exp.Select, pd.DataFrame]:
    """The sample table (made once per backend) and its rows as pulled, with Oracle's types."""
    if "SAMPLE" not in stats_server.tables:
        stats_server.tables["SAMPLE"] = table("SAMPLE", sample())
    select = stats_server.tables["SAMPLE"]
    return select, typed(run(select), KINDS)


def typed(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Pulled rows with pandas' types for the kinds (SQLite hands Booleans back as 0/1)."""
    out = frame.copy()
    for name, kind in kinds.items():
        if kind == "number":
            out[name] = out[name].astype("float64")
        elif kind == "boolean":
            out[name] = pd.Series([None if pd.isna(v) else bool(v) for v in out[name]], dtype=object)
        else:
            out[name] = pd.Series([None if v is None or v is pd.NA or v != v else v for v in out[name]], dtype=object)
    return out


def close(a: object, b: object) -> bool:
    if isinstance(a, float | np.floating) or isinstance(b, float | np.floating):
        fa, fb = float(a), float(b)  # type: ignore[arg-type]
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def assert_frame_close(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.index) == list(expected.index)
    assert list(actual.columns) == list(expected.columns)
    for c in expected.columns:
        for r in expected.index:
            assert close(actual.at[r, c], expected.at[r, c]), (r, c, actual.at[r, c], expected.at[r, c])


# --- describe ---------------------------------------------------------------------------------------------


def test_describe_numbers_equals_pandas(run, data):
    select, pulled = data
    assert_frame_close(stats.describe(select, KINDS, run), pulled[NUMBERS].describe())
    got = stats.describe(select, KINDS, run, percentiles=[0.1, 1 / 3, 0.9, 0.999])
    # The median is always there, as in Oracle's (and pandas < 3's) describe
    assert_frame_close(got, pulled[NUMBERS].describe(percentiles=[0.1, 1 / 3, 0.5, 0.9, 0.999]))
    assert got.dtypes.eq("float64").all()


def test_describe_all_types_as_oracle(run, data):
    select, pulled = data
    got = stats.describe(select, KINDS, run, include="all")
    expected = pulled.describe(include="all")
    assert list(got.index) == ["count", "unique", "top", "freq", "mean", "std", "min", "25%", "50%", "75%", "max"]
    assert_frame_close(got, expected.loc[got.index, list(KINDS)])
    assert got.at["top", "S"] == "a" and got.at["freq", "S"] == 15 and got.at["count", "S"] == 33
    assert got.at["top", "B"] is True and got.at["unique", "B"] == 2 and got.at["count", "B"] == 37
    assert got.at["top", "BY"] == b"x" and got.at["freq", "BY"] == 20

    class Float:  # Oracle's type classes are matched by name (oml.Float, oml.String, ...)
        pass

    class String:
        pass

    without_floats = stats.describe(select, KINDS, run, exclude=[Float])
    assert list(without_floats.columns) == ["S", "B", "BY"]
    assert list(without_floats.index) == ["count", "unique", "top", "freq"]
    assert list(stats.describe(select, KINDS, run, include=[String]).columns) == ["S"]
    with pytest.raises(ValueError):
        stats.describe(select, KINDS, run, percentiles=[1.5])


def test_describe_of_no_rows_and_all_nulls(run):
    select = table("EMPTYISH", pd.DataFrame({"N": [np.nan, np.nan], "S": pd.Series([None, "a"], dtype=object)}))
    filtered = select.where(exp.column("S", quoted=True).is_(exp.null()))
    got = stats.describe(filtered, {"N": "number", "S": "string"}, run, include="all")
    assert got.at["count", "N"] == 0 and math.isnan(got.at["mean", "N"]) and math.isnan(got.at["50%", "N"])
    assert got.at["count", "S"] == 0 and got.at["unique", "S"] == 0


# --- moments and quantiles --------------------------------------------------------------------------------


def test_std_var_median_equal_pandas(run, data):
    select, pulled = data
    numeric = pulled[NUMBERS].assign(B=pulled["B"].astype("float64"))  # Booleans count as 0/1 in std/var
    for ddof in (0, 1):
        assert_series_close(stats.std(select, KINDS, run, ddof=ddof), numeric.std(ddof=ddof))
        assert_series_close(stats.var(select, KINDS, run, ddof=ddof), numeric.var(ddof=ddof))
    assert_series_close(stats.var(select, KINDS, run, skipna=False), numeric.var(skipna=False))
    assert_series_close(stats.median(select, KINDS, run), pulled[NUMBERS].median())
    assert_series_close(stats.median(select, KINDS, run, skipna=False), pulled[NUMBERS].median(skipna=False))


def assert_series_close(actual: pd.Series, expected: pd.Series) -> None:
    assert list(actual.index) == list(expected.index)
    for k in expected.index:
        assert close(actual[k], expected[k]), (k, actual[k], expected[k])


def test_skew_and_kurtosis_are_oracles(run, data):
    """Oracle's skew/kurtosis are the biased sample moments (its notebook: -0.683838 and -0.582684 for this
    column), not pandas' bias-corrected G1/G2."""
    select = table("ORACLE_EXAMPLE", pd.DataFrame({"numeric_col": [1, 1.4, -4, 3.145, 5, None]}))
    kinds = {"numeric_col": "number"}
    assert stats.skew(select, kinds, run)["numeric_col"] == pytest.approx(-0.683838, abs=1e-6)
    assert stats.kurtosis(select, kinds, run)["numeric_col"] == pytest.approx(-0.582684, abs=1e-6)
    assert stats.median(select, kinds, run)["numeric_col"] == pytest.approx(1.4)
    assert math.isnan(stats.skew(select, kinds, run, skipna=False)["numeric_col"])

    select, pulled = data
    columns = pulled[NUMBERS]
    expected_skew = {c: scipy_stats.skew(columns[c].dropna()) for c in NUMBERS if columns[c].std() > 0}
    expected_kurt = {c: scipy_stats.kurtosis(columns[c].dropna()) for c in NUMBERS if columns[c].std() > 0}
    got_skew, got_kurt = stats.skew(select, KINDS, run), stats.kurtosis(select, KINDS, run)
    assert list(got_skew.index) == NUMBERS and math.isnan(got_skew["Z"]) and math.isnan(got_kurt["Z"])
    for c in expected_skew:
        assert got_skew[c] == pytest.approx(expected_skew[c], rel=1e-9)
        assert got_kurt[c] == pytest.approx(expected_kurt[c], rel=1e-9)


def test_moments_stay_exact_far_from_zero(run):
    """The centred sums subtract the mean first (here a negative one, far from zero): a one-pass sum of squares
    would lose every digit of a variance of about 1 around -1e9."""
    rng = np.random.default_rng(5)
    far = pd.DataFrame({"F": -1e9 + rng.normal(0, 1, 60).round(4), "G": rng.exponential(1, 60).round(4)})
    far.loc[[4, 9], "F"] = np.nan
    select, kinds = table("FAR", far), {"F": "number", "G": "number"}
    assert_series_close(stats.var(select, kinds, run), far.var())
    assert_series_close(stats.median(select, kinds, run), far.median())
    for c in far.columns:
        values = far[c].dropna()
        assert stats.skew(select, kinds, run)[c] == pytest.approx(scipy_stats.skew(values), rel=1e-7)
        assert stats.kurtosis(select, kinds, run)[c] == pytest.approx(scipy_stats.kurtosis(values), rel=1e-7)
    assert_frame_close(
        stats.describe(select, kinds, run, percentiles=[0.01, 0.37, 0.99]),
        far.describe(percentiles=[0.01, 0.37, 0.5, 0.99]),
    )


def test_corr_equals_pandas(run, data):
    select, pulled = data
    numeric = pulled[NUMBERS].assign(B=pulled["B"].astype("float64"))
    for method in ("pearson", "spearman"):
        assert_frame_close(stats.corr(select, KINDS, run, method=method), numeric.corr(method=method))
    assert_frame_close(stats.corr(select, KINDS, run, min_periods=38), numeric.corr(min_periods=38))
    with pytest.raises(ValueError, match="kendall"):
        stats.corr(select, KINDS, run, method="kendall")


def test_many_columns_take_several_queries(run, monkeypatch):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(15, 6)).round(3), columns=[f"C{i}" for i in range(6)])
    frame.iloc[[2, 7], 1] = np.nan
    select = table("WIDE", frame)
    kinds = dict.fromkeys(frame.columns, "number")
    monkeypatch.setattr(stats, "CORR_PAIRS_PER_QUERY", 4)
    before = run.queries
    assert_frame_close(stats.corr(select, kinds, run), frame.corr())
    assert run.queries - before == 6  # 21 pairs, 4 per query

    monkeypatch.setattr(_stats_sql, "MAX_QUERY_CHARS", 2500)  # as if the columns were many: split to fit the gate
    before = run.queries
    assert_frame_close(stats.describe(select, kinds, run), frame.describe())
    assert run.queries - before >= 3
    monkeypatch.setattr(stats, "CORR_PAIRS_PER_QUERY", 100)
    before = run.queries
    assert_frame_close(stats.corr(select, kinds, run, method="spearman"), frame.corr(method="spearman"))
    assert run.queries - before >= 3


# --- crosstab and pivot_table -----------------------------------------------------------------------------

ORACLE_DOC = pd.DataFrame(  # Oracle's "Cross-Tabulate Data" example
    {
        "GENDER": ["M", "M", "F", "M", "F", "M", "F", "F", None, "F", "M", "F"],
        "HAND": ["L", "R", "R", "L", "R", None, "L", "R", "R", "R", "R", "R"],
        "SPEED": [40.5, 30.4, 60.8, 51.2, 54, 29.3, 34.1, 39.6, 46.4, 12, 25.3, 37.5],
        "ACCURACY": [0.92, 0.94, 0.87, 0.9, 0.85, 0.97, 0.96, 0.93, 0.89, 0.84, 0.91, 0.95],
    }
)
DOC_KINDS = {"GENDER": "string", "HAND": "string", "SPEED": "number", "ACCURACY": "number"}


@pytest.fixture
def doc(run: Reader, stats_server: Server) -> tuple[exp.Select, pd.DataFrame]:
    if "HANDS" not in stats_server.tables:
        stats_server.tables["HANDS"] = table("HANDS", ORACLE_DOC)
    return stats_server.tables["HANDS"], ORACLE_DOC.fillna({"GENDER": "None", "HAND": "None"})


def lazy(run: Reader, result: tuple[exp.Select, dict[str, str]]) -> pd.DataFrame:
    select, kinds = result
    frame = run(select)
    assert list(frame.columns) == list(kinds)
    return frame.fillna({c: "None" for c, k in kinds.items() if k == "string"})


def test_crosstab_long_counts_as_oracle(run, doc):
    select, local = doc
    got = lazy(run, _pivot.crosstab(select, DOC_KINDS, "GENDER", "HAND"))
    assert list(got.columns) == ["GENDER", "HAND", "count"]
    expected = local.groupby(["GENDER", "HAND"]).size()
    assert {(g, h): n for g, h, n in got.itertuples(index=False)} == expected.to_dict()
    assert got["count"].sum() == 12 and ("M", "None") in set(zip(got.GENDER, got.HAND, strict=True))

    shares = lazy(run, _pivot.crosstab(select, DOC_KINDS, "GENDER", "HAND", normalize="index"))
    for g, h, share in shares.itertuples(index=False):
        assert share == pytest.approx(expected[(g, h)] / expected[g].sum())

    medians = lazy(run, stats.crosstab(select, DOC_KINDS, ["GENDER"], values="SPEED", aggfunc="median"))
    assert list(medians.columns) == ["GENDER", "median(SPEED)"]  # Oracle's name, as in its notebooks
    assert dict(zip(medians.GENDER, medians["median(SPEED)"], strict=True)) == pytest.approx(
        local.groupby("GENDER")["SPEED"].median().to_dict()
    )
    for agg in ("std", "var", "mean", "sum", "min", "max", "count", "nunique"):
        f = lazy(run, _pivot.crosstab(select, DOC_KINDS, "HAND", "GENDER", values="SPEED", aggfunc=agg))
        expected_agg = local.groupby(["HAND", "GENDER"])["SPEED"].agg(agg)
        for h, g, v in f.itertuples(index=False):
            assert close(float(v), float(expected_agg[(h, g)])), (agg, h, g, v)


def test_crosstab_pivot_margins_normalize_as_oracle(run, doc):
    select, local = doc
    for normalize in (False, True, 0, "columns"):
        frame, kinds = _pivot.crosstab(
            select, DOC_KINDS, "GENDER", "HAND", pivot=True, margins=True, normalize=normalize, run=run
        )
        got = lazy(run, (frame, kinds)).set_index("GENDER")
        expected = pd.crosstab(local.GENDER, local.HAND, margins=True, normalize=normalize)
        expected.columns = [f"count_({c})" for c in expected.columns]
        assert list(got.index) == ["F", "M", "None", "All"][: len(expected)]  # sorted, NULL last, then All
        assert sorted(got.columns) == sorted(expected.columns)
        assert_frame_close(got.astype(float), expected.loc[got.index, got.columns].astype(float))
    plain = lazy(run, _pivot.crosstab(select, DOC_KINDS, "GENDER", "HAND", pivot=True, run=run))
    assert list(plain.columns) == ["GENDER", "count_(L)", "count_(R)", "count_(None)"]


def test_pivot_table_as_oracle(run, doc):
    select, local = doc
    got = lazy(run, stats.pivot_table(select, DOC_KINDS, "GENDER", "HAND", "SPEED", run=run)).set_index("GENDER")
    assert list(got.columns) == ["mean_SPEED_(L)", "mean_SPEED_(R)", "mean_SPEED_(None)"]
    expected = local.pivot_table(index="GENDER", columns="HAND", values="SPEED", aggfunc="mean")
    for g in got.index:
        for h in ("L", "R", "None"):
            want = expected.at[g, h] if h in expected.columns and g in expected.index else np.nan
            assert close(float(got.at[g, f"mean_SPEED_({h})"]), float(want))

    class DataFrameLike:  # Oracle passes oml.DataFrame.max etc.: the function's name chooses the aggregate
        @staticmethod
        def max() -> None: ...

        @staticmethod
        def min() -> None: ...

    both = lazy(
        run,
        _pivot.pivot_table(
            select, DOC_KINDS, "GENDER", "HAND", "SPEED", [DataFrameLike.max, DataFrameLike.min], True, run=run
        ),
    ).set_index("GENDER")
    assert list(both.index) == ["F", "M", "None", "All"]
    assert both.at["All", "max_SPEED_(All)"] == 60.8 and both.at["All", "min_SPEED_(All)"] == 12
    assert both.at["M", "max_SPEED_(L)"] == 51.2 and both.at["F", "min_SPEED_(R)"] == 12
    assert math.isnan(both.at["F", "max_SPEED_(None)"])
    assert both.at["All", "max_SPEED_(None)"] == 29.3 and both.at["M", "max_SPEED_(All)"] == 51.2

    medians = lazy(run, _pivot.pivot_table(select, DOC_KINDS, "GENDER", "HAND", aggfunc="median", run=run))
    assert "median_ACCURACY_(R)" in medians.columns and "median_SPEED_(L)" in medians.columns
    expected_median = local.groupby(["GENDER", "HAND"])[["SPEED", "ACCURACY"]].median()
    for row in medians.to_dict("records"):
        for (g, h), values in expected_median.iterrows():
            if g == row["GENDER"]:
                assert row[f"median_SPEED_({h})"] == pytest.approx(values.SPEED)
                assert row[f"median_ACCURACY_({h})"] == pytest.approx(values.ACCURACY)

    flat = lazy(run, _pivot.pivot_table(select, DOC_KINDS, "HAND", values=["SPEED"], aggfunc="std", margins=True))
    assert list(flat.columns) == ["HAND", "std_SPEED"]
    assert flat.set_index("HAND").at["All", "std_SPEED"] == pytest.approx(local.SPEED.std())


def test_crosstab_of_booleans_numbers_and_hue(run, data):
    select, pulled = data
    local = pulled.assign(S=pulled.S.fillna("None"), B=pulled.B.map({True: "True", False: "False", None: "None"}))
    got = lazy(run, _pivot.crosstab(select, KINDS, "S", "B", pivot=True, margins=True, run=run)).set_index("S")
    assert list(got.columns) == ["count_(False)", "count_(True)", "count_(None)", "count_(All)"]
    expected = pd.crosstab(local.S, local.B, margins=True)
    for s in expected.index:
        for b in expected.columns:
            assert got.at[s, f"count_({b})"] == expected.at[s, b], (s, b)

    boolean_rows = lazy(run, _pivot.crosstab(select, KINDS, "B", "S", pivot=True, margins=True, run=run))
    assert list(boolean_rows.B) == ["False", "True", "None", "All"]  # Booleans as text beside the All row

    with_hue = lazy(run, _pivot.crosstab(select, KINDS, "S", "B", hue="BY"))
    assert list(with_hue.columns) == ["S", "B", "BY", "count"]
    assert len(with_hue) == len(local.groupby(["S", "B", "BY"]).size())
    hued = lazy(run, _pivot.crosstab(select, KINDS, "S", "ID", hue="B", pivot=True, run=run))
    assert "count_(0,True)" in hued.columns or "count_(0,False)" in hued.columns  # number categories label as "0"
    assert hued.drop(columns="S").to_numpy().sum() == 40


def test_describe_dates_as_categories(run):
    when = pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-03", None])
    select = table("DATES", pd.DataFrame({"D": when, "N": [1.0, 2.0, 3.0, 4.0]}))
    got = stats.describe(select, {"D": "datetime", "N": "number"}, run, include="all")
    assert got.at["count", "D"] == 3 and got.at["unique", "D"] == 2 and got.at["freq", "D"] == 2
    assert pd.Timestamp(got.at["top", "D"]) == pd.Timestamp("2024-01-01")


def test_pivot_keeps_the_largest_categories(run, monkeypatch):
    frame = pd.DataFrame({"K": ["k"] * 10, "C": [f"c{i % 4}" for i in range(7)] + ["c0"] * 3})
    select = table("MANY", frame)
    monkeypatch.setattr(_pivot, "MAX_PIVOT_COLUMNS", 3)  # the index and two categories
    with pytest.warns(UserWarning, match="keeping the 2"):
        got = lazy(run, _pivot.crosstab(select, {"K": "string", "C": "string"}, "K", "C", pivot=True, run=run))
    assert list(got.columns) == ["K", "count_(c0)", "count_(c1)"] and got["count_(c0)"][0] == 5


def test_bad_arguments_are_clear_errors(run, doc):
    select, _ = doc
    for kwargs in (
        dict(index="NOPE"),
        dict(index="GENDER", columns="GENDER"),
        dict(index="GENDER", values="SPEED"),
        dict(index="GENDER", values="HAND", aggfunc="mean"),
        dict(index="GENDER", values="SPEED", aggfunc="mode"),
        dict(index="GENDER", columns="HAND", margins=True),
        dict(index="GENDER", columns="HAND", normalize="rows"),
        dict(index="GENDER", columns="HAND", pivot=True),  # no run to read the categories
    ):
        with pytest.raises(ValueError):
            _pivot.crosstab(select, DOC_KINDS, **kwargs)


# --- walls ------------------------------------------------------------------------------------------------


def test_hostile_names_and_values_stay_data(run):
    frame = pd.DataFrame({HOSTILE: ["a", EVIL, EVIL, "b"], "V": [1.0, 2.0, 3.0, 4.0]})
    table("HOSTILE", frame)
    # The proxy's query renames V to a name with a double quote: names are always quoted identifiers.
    select = exp.select(
        exp.column(HOSTILE, quoted=True), exp.alias_(exp.column("V", quoted=True), QUOTED, quoted=True)
    ).from_(exp.to_table('"HOSTILE"', dialect="oracle"))
    kinds = {HOSTILE: "string", QUOTED: "number"}
    got = stats.describe(select, kinds, run, include="all")
    assert got.at["top", HOSTILE] == EVIL and got.at["freq", HOSTILE] == 2 and got.at["max", QUOTED] == 4.0
    assert stats.median(select, kinds, run)[QUOTED] == 2.5
    pivoted = lazy(run, _pivot.crosstab(select, kinds, QUOTED, HOSTILE, pivot=True, margins=True, run=run))
    assert f"count_({EVIL})" in pivoted.columns and pivoted[f"count_({EVIL})"].iloc[-1] == 2
    sums = lazy(run, _pivot.pivot_table(select, kinds, HOSTILE, values=QUOTED, aggfunc="sum"))
    assert dict(zip(sums[HOSTILE], sums[f"sum_{QUOTED}"], strict=True))[EVIL] == 5.0
    assert len(run(select)) == 4  # the table is still there


# --- memory -----------------------------------------------------------------------------------------------

GENERATED_ROWS = 1_000_000


def test_large_describe_and_crosstab_stay_in_the_database(run):
    """1M rows made by the server (a recursive query): describe and a pivoted crosstab bring back a few kB."""
    generated = sqlglot.parse_one(
        f"WITH R (N) AS (SELECT 1 AS N FROM DUAL UNION ALL SELECT N + 1 FROM R WHERE N < {GENERATED_ROWS}) "
        "SELECT N, MOD(N * 7919, 1000) / 10 AS X, MOD(N, 7) AS G, MOD(N, 3) AS H FROM R",
        read="oracle",
    )
    got = stats.describe(generated, {"N": "number"}, run)  # type: ignore[arg-type]
    assert got.at["count", "N"] == GENERATED_ROWS and got.at["max", "N"] == GENERATED_ROWS
    assert got.at["50%", "N"] == pytest.approx((GENERATED_ROWS + 1) / 2)
    kinds = {"G": "number", "H": "number"}
    table_, _ = _pivot.crosstab(generated, kinds, "G", "H", pivot=True, margins=True, run=run)  # type: ignore[arg-type]
    counts = run(table_)
    assert counts.set_index("G").at["All", "count_(All)"] == GENERATED_ROWS
    assert run.bytes < 20_000, run.bytes  # the rows themselves would be several MB
