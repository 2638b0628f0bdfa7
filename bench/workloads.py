"""Row-apply scoring and group-apply: pyqd against pandas, joblib and Dask, on the same tables, interleaved."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from bench import baselines as bl
from bench.data import PASSWORD, USER, Store
from bench.harness import Timing, interleaved
from bench.server import Server

SCORE = f"""def score(dat):
    import oml
    import pandas as pd
    model = oml.ds.load(name="ds_bench", to_globals=False)["model"]
    return pd.DataFrame({{"ID": dat["ID"], "P": model.predict(dat[{bl.FEATURES!r}])}})
"""
FIT = f"""def fit(dat):
    from sklearn.linear_model import LinearRegression
    m = LinearRegression().fit(dat[{bl.GROUP_X!r}].to_numpy(), dat[{bl.GROUP_Y!r}].to_numpy())
    return [float(m.intercept_), *(float(c) for c in m.coef_)]
"""


@dataclass
class Pyqd:
    """A running pyqd with BENCH's scripts and model in place."""

    server: Server
    client: httpx.Client

    @classmethod
    @contextlib.contextmanager
    def open(cls, server: Server, model_path: str) -> Iterator[Pyqd]:
        import oml

        oml.connect(url=server.url, username=USER, password=PASSWORD)
        with open(model_path, "rb") as f:
            import pickle

            model = pickle.load(f)  # noqa: S301 - the benchmark's own pickle
        oml.ds.save(objs={"model": model}, name="ds_bench", overwrite=True)
        oml.script.create("score", func=SCORE, overwrite=True)
        oml.script.create("fit", func=FIT, overwrite=True)
        token = server.token(USER, PASSWORD)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=900) as client:
            yield cls(server, client)
        oml.disconnect()

    def post(self, verb: str, script: str, body: dict) -> bytes:
        r = self.client.post(f"/oml/api/py-scripts/v1/{verb}/{script}", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"{verb} {script}: {r.status_code} {r.text[:300]}")
        return r.content

    def score(self, table: str, rows: int) -> bytes:
        return self.post(
            "row-apply",
            "score",
            {
                "input": f'select * from "{table}"',
                "rows": rows,
                "parallelFlag": True,
                "service": "LOW",
                "parameters": '{"oml_input_type":"pandas.DataFrame"}',
            },
        )

    def groups(self, table: str) -> bytes:
        cols = ", ".join(f'"{c}"' for c in bl.GROUP_COLUMNS)
        return self.post(
            "group-apply",
            "fit",
            {
                "input": f'select {cols} from "{table}"',
                "groupBy": '"GRP"',
                "parallelFlag": True,
                "service": "LOW",
                "parameters": '{"oml_input_type":"pandas.DataFrame"}',
            },
        )


def _rows(payload: bytes) -> int:
    return len(json.loads(payload)["result"] if payload.startswith(b'{"result"') else json.loads(payload))


def scoring(
    pyqd: Pyqd,
    store: Store,
    table: str,
    rows: int,
    model_path: str,
    client: object,
    reps: int,
    log: Callable[[str], None],
) -> dict[str, Timing]:
    """Row-apply scoring of every row, result fetched as JSON, against the three baselines."""
    source = store.source(table, rows)
    adbc = bl.Source(source.kind, source.url, source.table, source.rows, source.schema, driver="adbc")
    variants: dict[str, Callable[[], object]] = {
        "pyqd rows=10,000": lambda: pyqd.score(table, 10_000),
        "pyqd rows=100,000": lambda: pyqd.score(table, 100_000),
        "pandas (read_sql)": lambda: bl.score_pandas(source, model_path),
        "pandas (ADBC read)": lambda: bl.score_pandas(adbc, model_path),
        "joblib 2 workers, 10,000": lambda: bl.score_joblib(source, model_path, 10_000),
        "joblib 2 workers, 100,000": lambda: bl.score_joblib(source, model_path, 100_000),
        "Dask 2 workers, 100,000": lambda: bl.score_dask(source, model_path, 100_000, client),  # type: ignore[arg-type]
    }
    for name, run in variants.items():  # all give the same rows
        assert _rows(run()) == rows, name  # type: ignore[arg-type]
    return interleaved(variants, reps=reps, warmup=0, log=log)


def groups(
    pyqd: Pyqd, store: Store, table: str, rows: int, client: object, reps: int, log: Callable[[str], None]
) -> dict[str, Timing]:
    """A regression per group (100 groups) against the three baselines."""
    source = store.source(table, rows)
    variants: dict[str, Callable[[], object]] = {
        "pyqd group-apply": lambda: pyqd.groups(table),
        "pandas groupby.apply": lambda: bl.groups_pandas(source),
        "joblib 2 workers": lambda: bl.groups_joblib(source),
        "Dask 2 workers": lambda: bl.groups_dask(source, client),  # type: ignore[arg-type]
    }
    t = time.perf_counter()
    for name, run in variants.items():
        payload = run()
        result = json.loads(payload)
        assert len(result.get("result", result)) == 100, name  # type: ignore[arg-type]
    log(f"  checked every variant gives 100 groups ({time.perf_counter() - t:.1f} s)")
    return interleaved(variants, reps=reps, warmup=0, log=log)
