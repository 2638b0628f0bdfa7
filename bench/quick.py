"""Quick latency numbers for the execution path (a subset of the full suite): trivial do-eval, the seed's
row-apply (rows=5 over 150 rows), and a row-apply scoring 1,000,000 rows. `python -m bench.quick [--pg]`."""

from __future__ import annotations

import statistics
import sys
import time

import httpx
import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

import oml
from bench.server import pg_database, running_server
from bench.small import REGR_PREDICT
from tests.data import iris_frame

SCORE = """def score(dat):
    import oml
    import pandas as pd
    model = oml.ds.load(name="ds_big", to_globals=False)["model"]
    cols = ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"]
    return pd.DataFrame({"ID": dat["ID"], "P": model.predict(dat[cols])})
"""


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs) * 1000:.1f} ms, p99 {xs[int(0.99 * (len(xs) - 1))] * 1000:.1f} ms (n={len(xs)})"


def main(database_url: str | None) -> None:
    with running_server(database_url) as srv:
        headers = srv.add_user("BENCH", "bench-pw-long-password")
        oml.connect(url=srv.url, username="BENCH", password="bench-pw-long-password")
        client = httpx.Client(base_url=srv.url, headers=headers, timeout=600)
        oml.script.create("trivial", func="def trivial():\n    return 1\n", overwrite=True)
        iris = iris_frame()
        oml.create(iris, table="IRIS")
        regr = LinearRegression().fit(iris[["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]], iris["PETAL_WIDTH"])
        oml.ds.save(objs={"regr": regr}, name="ds_regr", overwrite=True)
        oml.script.create("regr_predict", func=REGR_PREDICT, overwrite=True)

        def trivial() -> None:
            assert client.post("/oml/api/py-scripts/v1/do-eval/trivial", json={}).json() == {"result": 1}

        seed_body = {
            "input": "select * from IRIS",
            "parameters": '{"oml_input_type":"pandas.DataFrame"}',
            "rows": 5,
            "parallelFlag": True,
            "service": "MEDIUM",
        }

        def seed() -> None:
            r = client.post("/oml/api/py-scripts/v1/row-apply/regr_predict", json=seed_body)
            assert len(r.json()["result"]) == 150

        timed(trivial, 20)
        timed(seed, 5)
        print("trivial do-eval:      ", ms(timed(trivial, 200)))
        print("seed row-apply:       ", ms(timed(seed, 50)))

        rng = np.random.default_rng(0)
        n = 1_000_000
        big = pd.DataFrame({"ID": np.arange(n), "GRP": rng.integers(0, 100, n)})
        for i in range(1, 9):
            big[f"F{i}"] = rng.normal(size=n)
        t = time.perf_counter()
        oml.create(big, table="BIG")
        print(f"load 1M rows:          {time.perf_counter() - t:.1f} s")
        model = LinearRegression().fit(big[[f"F{i}" for i in range(1, 9)]].head(10_000), rng.normal(size=10_000))
        oml.ds.save(objs={"model": model}, name="ds_big", overwrite=True)
        oml.script.create("score", func=SCORE, overwrite=True)
        body = {
            "input": "select * from BIG",
            "rows": 100_000,
            "parallelFlag": True,
            "service": "HIGH",
            "parameters": '{"oml_input_type":"pandas.DataFrame"}',
        }

        def score() -> None:
            r = client.post("/oml/api/py-scripts/v1/row-apply/score", json=body)
            assert r.status_code == 200, r.text[:300]
            assert len(r.json()["result"]) == n

        print("row-apply 1M rows:    ", ", ".join(f"{x:.2f} s" for x in timed(score, 3)))
        oml.disconnect()


if __name__ == "__main__":
    if "--pg" in sys.argv:
        with pg_database() as url:
            main(url)
    else:
        main(None)
