"""(d) pyqd's small calls hand-written in FastAPI, in-process, behind a PyJWT HS256 bearer check; served by uvicorn
with one worker process. Configured by environment variables:

- PYQD_BENCH_MODEL: pickle or joblib file of a fitted model: POST /predict (8 features, `{"features": [[..]]}`)
  and POST /score (any model, the seed article's `{"input": [f1, ..]}` or `{"input": [[..], ..]}` ->
  `{"input", "prediction"}` and, for a classifier, `"probability"`; bench.scoring)
- PYQD_BENCH_JWT_KEY: the HS256 key tokens are checked with
- PYQD_BENCH_SEED_URL, PYQD_BENCH_SEED_TABLE (default IRIS), PYQD_BENCH_SEED_SCHEMA: where the 150-row IRIS table is
  (POST /seed; without the URL there is no /seed)
- PYQD_BENCH_SEED_MODEL: pickle of the seed's LinearRegression; without it, one is fitted on IRIS at start
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Annotated, Any

import joblib
import jwt
import numpy as np
import pandas as pd
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from sklearn.linear_model import LinearRegression

from bench.apps import RunningApp, bearer, launch
from bench.server import free_port

SEED_X = ["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]


class Features(BaseModel):
    features: list[list[float]]


class SeedInput(BaseModel):
    input: list[float] | list[list[float]]


def _load(path: str) -> Any:
    return joblib.load(path)  # the benchmark's own pickle or joblib file


def regr_predict(regr: Any, dat: pd.DataFrame) -> pd.DataFrame:
    """The seed's row-apply function, unchanged."""
    pred = regr.predict(dat[SEED_X])
    return pd.concat([dat[["SPECIES", "PETAL_WIDTH"]], pd.DataFrame(pred, columns=["Pred_PETAL_WIDTH"])], axis=1)


def create_app() -> FastAPI:
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    model = _load(os.environ["PYQD_BENCH_MODEL"])
    key = os.environ["PYQD_BENCH_JWT_KEY"]

    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            jwt.decode(token, key, algorithms=["HS256"])
        except jwt.InvalidTokenError as e:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"}) from e

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    auth = [Depends(authorized)]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/trivial", dependencies=auth)
    async def trivial() -> dict[str, int]:
        return {"result": 1}

    @app.post("/predict", dependencies=auth)
    async def predict(body: Features) -> dict[str, list[float]]:
        return {"result": model.predict(body.features).tolist()}

    @app.post("/score", dependencies=auth)
    async def score(body: SeedInput) -> dict[str, Any]:
        """The seed article's /predict, validated by pydantic. `async`: CPU-bound, no thread-pool hop."""
        x = np.atleast_2d(np.asarray(body.input, dtype=float))
        if not hasattr(model, "predict_proba"):
            return {"input": body.input, "prediction": model.predict(x).tolist()}
        p = model.predict_proba(x)
        return {"input": body.input, "prediction": model.classes_[p.argmax(axis=1)].tolist(), "probability": p.tolist()}

    if url := os.environ.get("PYQD_BENCH_SEED_URL"):
        engine = sa.create_engine(url)
        table, schema = os.environ.get("PYQD_BENCH_SEED_TABLE", "IRIS"), os.environ.get("PYQD_BENCH_SEED_SCHEMA")
        table_sql = f'"{schema}"."{table}"' if schema else f'"{table}"'
        query = sa.text(f"SELECT * FROM {table_sql}")

        def read_iris() -> pd.DataFrame:
            with engine.connect() as conn:
                return pd.read_sql(query, conn)

        seed_model = os.environ.get("PYQD_BENCH_SEED_MODEL")
        iris = read_iris()
        regr = _load(seed_model) if seed_model else LinearRegression().fit(iris[SEED_X], iris["PETAL_WIDTH"])

        @app.post("/seed", dependencies=auth)
        async def seed() -> dict[str, list[dict[str, Any]]]:
            """OML's seed row-apply (rows=5) done in-process: read IRIS, score it 5 rows at a time, concatenate.
            `async` on purpose: the work is CPU-bound pandas (the read takes ~1 ms); as a plain `def` FastAPI runs it
            in its thread pool, where 8 concurrent calls fight over the GIL and throughput drops about 3x."""
            iris = read_iris()
            chunks = (iris.iloc[i : i + 5].reset_index(drop=True) for i in range(0, len(iris), 5))
            out = pd.concat([regr_predict(regr, c) for c in chunks], ignore_index=True)
            return {"result": out.to_dict(orient="records")}

    return app


@contextlib.contextmanager
def start(
    model_path: str,
    *,
    seed_url: str | None = None,
    seed_table: str = "IRIS",
    seed_schema: str | None = None,
    seed_model_path: str | None = None,
    key: str = "pyqd-bench-jwt-key-0123456789abcdef",
) -> Iterator[RunningApp]:
    """uvicorn with 1 worker on a free port; `.headers` carries a valid bearer token."""
    port = free_port()
    env = {"PYQD_BENCH_MODEL": model_path, "PYQD_BENCH_JWT_KEY": key, "PYQD_BENCH_SEED_TABLE": seed_table}
    for name, value in (("URL", seed_url), ("SCHEMA", seed_schema), ("MODEL", seed_model_path)):
        if value:
            env[f"PYQD_BENCH_SEED_{name}"] = value
    argv = [sys.executable, "-m", "uvicorn", "--factory", "bench.apps.fastapi_predict:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    with launch(argv, env, url) as proc:
        yield RunningApp(url, proc, bearer(key))
