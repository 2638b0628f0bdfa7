"""Small calls: pyqd's trivial do-eval, the seed's row-apply and scoring one record, against a hand-written
FastAPI service (PyJWT bearer check, the same work in-process) and the seed article's Flask app under
gunicorn with 2 workers; p50/p99 at concurrency 1 and 8 and requests/s, measured with wrk."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bench.apps import fastapi_predict, flask_predict
from bench.data import PASSWORD, USER
from bench.loadgen import LoadResult, run_load
from bench.server import Server
from bench.workloads import Pyqd

REGR_PREDICT = """def regr_predict(dat):
    import oml
    import pandas as pd
    regr = oml.ds.load(name="ds_regr", to_globals=False)["regr"]
    pred = regr.predict(dat[["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]])
    return pd.concat([dat[["SPECIES", "PETAL_WIDTH"]], pd.DataFrame(pred, columns=["Pred_PETAL_WIDTH"])], axis=1)
"""
PREDICT_ONE = """def predict_one(features):
    import oml
    model = oml.ds.load(name="ds_bench", to_globals=False)["model"]
    return [float(p) for p in model.predict(features)]
"""
TRIVIAL = "def trivial():\n    return 1\n"
SEED_BODY = {
    "input": "select * from IRIS",
    "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    "rows": 5,
    "parallelFlag": True,
    "service": "MEDIUM",
}
ONE_RECORD = [[0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8]]


@dataclass(frozen=True)
class Endpoint:
    system: str
    call: str
    url: str
    body: bytes
    headers: dict[str, str]


def pyqd_endpoints(pyqd: Pyqd, server: Server, iris_model_path: str) -> list[Endpoint]:
    import pickle

    import oml
    from tests.data import iris_frame

    oml.connect(url=server.url, username=USER, password=PASSWORD)
    oml.create(iris_frame(), table="IRIS")
    with open(iris_model_path, "rb") as f:
        oml.ds.save(objs={"regr": pickle.load(f)}, name="ds_regr", overwrite=True)  # noqa: S301
    oml.script.create("regr_predict", func=REGR_PREDICT, overwrite=True)
    oml.script.create("predict_one", func=PREDICT_ONE, overwrite=True)
    oml.script.create("trivial", func=TRIVIAL, overwrite=True)
    headers = dict(pyqd.client.headers)
    base = f"{server.url}/oml/api/py-scripts/v1"
    one = {"parameters": json.dumps({"features": ONE_RECORD})}
    return [
        Endpoint("pyqd", "trivial do-eval", f"{base}/do-eval/trivial", b"{}", headers),
        Endpoint("pyqd", "seed row-apply", f"{base}/row-apply/regr_predict", json.dumps(SEED_BODY).encode(), headers),
        Endpoint("pyqd", "score one record", f"{base}/do-eval/predict_one", json.dumps(one).encode(), headers),
    ]


def moved(endpoints: list[Endpoint], old_url: str, new_url: str, system: str) -> list[Endpoint]:
    """The same pyqd calls against another server of the same store."""
    return [Endpoint(system, e.call, e.url.replace(old_url, new_url), e.body, e.headers) for e in endpoints]


def app_endpoints(fastapi: object, flask: object) -> list[Endpoint]:
    body = json.dumps({"features": ONE_RECORD}).encode()
    fa, fl = fastapi, flask
    return [
        Endpoint("FastAPI + PyJWT", "trivial do-eval", f"{fa.url}/trivial", b"{}", fa.headers),  # type: ignore[attr-defined]
        Endpoint("FastAPI + PyJWT", "seed row-apply", f"{fa.url}/seed", b"{}", fa.headers),  # type: ignore[attr-defined]
        Endpoint("FastAPI + PyJWT", "score one record", f"{fa.url}/predict", body, fa.headers),  # type: ignore[attr-defined]
        Endpoint("Flask + gunicorn (2)", "score one record", f"{fl.url}/predict", body, {}),  # type: ignore[attr-defined]
    ]


def measure(
    endpoints: list[Endpoint],
    concurrencies: tuple[int, ...],
    duration_s: float,
    rounds: int,
    log: Callable[[str], None],
) -> dict[tuple[str, str, int], list[LoadResult]]:
    """Every endpoint at every concurrency, `rounds` times, the systems interleaved within each round."""
    results: dict[tuple[str, str, int], list[LoadResult]] = {}
    for e in endpoints:  # warm each one (first calls compile and cache)
        run_load(e.url, e.body, e.headers, concurrency=1, duration_s=1.0)
    for r in range(rounds):
        for c in concurrencies:
            for e in endpoints:
                res = run_load(e.url, e.body, e.headers, concurrency=c, duration_s=duration_s)
                results.setdefault((e.system, e.call, c), []).append(res)
                log(
                    f"  round {r + 1} c={c} {e.system} / {e.call}: p50 {res['p50_ms']:.1f} ms, "
                    f"p99 {res['p99_ms']:.1f} ms, {res['rps']:.0f} req/s, errors {res['errors']}"
                )
    return results


__all__ = ["fastapi_predict", "flask_predict", "measure", "pyqd_endpoints", "app_endpoints"]
