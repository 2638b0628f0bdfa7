"""oml.graphics.boxplot/hist: the numbers come from the database and equal matplotlib's/numpy's on the pulled data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import cbook  # noqa: E402
from sqlglot import exp  # noqa: E402

import oml  # noqa: E402
from oml import graphics  # noqa: E402
from tests.oml import test_stats  # noqa: E402
from tests.oml.test_stats import HOSTILE, Reader, Server, table  # noqa: E402

# The statistics' module fixtures: one live server per backend for this module too.
stats_server = test_stats.stats_server
run = test_stats.run

KINDS = {"A": "number", "B": "number", HOSTILE: "number", "S": "string"}


class Proxy:
    """What the frame's proxies give oml.graphics: their query, the kinds of its columns, and run."""

    def __init__(self, select: exp.Select, kinds: dict[str, str], run: Reader) -> None:
        self.relation = (select, kinds, run)

    def _relation(self) -> tuple[exp.Select, dict[str, str], Reader]:
        return self.relation


@pytest.fixture
def plotted(run: Reader, stats_server: Server) -> tuple[Proxy, pd.DataFrame]:
    if "PLOTTED" not in stats_server.tables:
        rng = np.random.default_rng(5)
        a = np.concatenate([rng.normal(0, 1, 60), [8.0, -7.5, 9.25]]).round(3)
        b = np.concatenate([rng.exponential(2, 62), [np.nan]]).round(3)
        frame = pd.DataFrame({"A": a, "B": b, HOSTILE: np.repeat([1.0, 2.0, 2.5], 21), "S": ["s"] * 63})
        stats_server.tables["PLOTTED"] = table("PLOTTED", frame)
    select = stats_server.tables["PLOTTED"]
    return Proxy(select, KINDS, run), run(select)


@pytest.fixture(autouse=True)
def figure():
    plt.figure()
    yield
    plt.close("all")


@pytest.mark.parametrize("whis", [1.5, (5, 95), 0.5])
def test_boxplot_statistics_equal_matplotlibs(plotted, whis):
    proxy, pulled = plotted
    select, kinds, run = proxy._relation()
    columns = ["A", "B", HOSTILE]
    ours = graphics._box_stats(select, kinds, run, columns, whis, autorange=False, fliers=True)
    for name, got in zip(columns, ours, strict=True):
        (want,) = cbook.boxplot_stats(pulled[name].dropna().to_numpy(), whis=whis)
        for key in ("mean", "iqr", "q1", "med", "q3", "cilo", "cihi", "whislo", "whishi"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), (name, key)
        assert sorted(got["fliers"]) == pytest.approx(sorted(want["fliers"]))
    assert len(ours[0]["fliers"]) >= 3  # the planted outliers


def test_boxplot_draws_like_oracles_example(plotted):
    proxy, pulled = plotted
    drawn = oml.graphics.boxplot(proxy, showmeans=True, meanline=True, patch_artist=True, labels=["a", "b", "c"])
    assert len(drawn["boxes"]) == 3 and len(drawn["means"]) == 3 and len(drawn["fliers"]) == 3
    assert drawn["medians"][0].get_ydata()[0] == pytest.approx(pulled["A"].median())
    assert [t.get_text() for t in plt.gca().get_xticklabels()] == ["a", "b", "c"]
    assert oml.boxplot is oml.graphics.boxplot and oml.hist is oml.graphics.hist
    drawn = oml.graphics.boxplot(proxy, vert=False, sym="", notch=True)
    assert all(len(f.get_xdata()) == 0 for f in drawn["fliers"])
    assert [t.get_text() for t in plt.gca().get_yticklabels()][:2] == ["A", "B"]


def test_hist_counts_equal_numpys(plotted):
    proxy, pulled = plotted
    values = pulled["A"].to_numpy()
    only_a = Proxy(*_only("A", proxy))
    n, bins, _ = oml.graphics.hist(only_a, bins=10, color="red", linestyle="solid", edgecolor="black")
    want_n, want_bins = np.histogram(values, bins=10)
    assert list(n) == list(want_n) and bins == pytest.approx(want_bins)

    edges = [-8, -1, 0, 0.5, 1, 9.25]
    n, bins, _ = oml.graphics.hist(only_a, bins=edges, density=True)
    assert n == pytest.approx(np.histogram(values, bins=edges, density=True)[0])

    n, _, _ = oml.graphics.hist(proxy, bins=4, range=(0, 4), cumulative=True)
    for name, counts in zip(["A", "B", HOSTILE], n, strict=True):
        want = np.cumsum(np.histogram(pulled[name].dropna(), bins=4, range=(0, 4))[0])
        assert list(counts) == list(want), name


def _only(name: str, proxy: Proxy) -> tuple[exp.Select, dict[str, str], Reader]:
    select, kinds, run = proxy._relation()
    return select, {name: kinds[name]}, run


def test_graphics_refuse_what_they_cannot_do(plotted):
    proxy, pulled = plotted
    with pytest.raises(TypeError):
        oml.graphics.hist(pulled)
    with pytest.raises(ValueError):
        oml.graphics.hist(proxy, weights=[1, 2])
    with pytest.raises(ValueError):
        oml.graphics.hist(proxy, bins="auto")
    with pytest.raises(ValueError):
        oml.graphics.boxplot(proxy, bootstrap=1000)
    select, _, run = proxy._relation()
    with pytest.raises(ValueError):
        oml.graphics.boxplot(Proxy(select, {"S": "string"}, run))
