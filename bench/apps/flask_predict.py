"""(e) The seed article's Flask app: load the model at start (`joblib.load`), POST /predict with JSON features;
served by gunicorn with 2 (sync) workers. Two body shapes:

- the seed article's `{"input": [f1, f2, ...]}` (one row) or `{"input": [[...], ...]}` (a batch) ->
  `{"input": <as sent>, "prediction": [...]}`, plus `"probability": [[p per class], ...]` for a classifier
  (what OML Services' score returns too);
- `{"features": ...}` (one row or a list of rows) -> `{"prediction": [...]}` (bench.small).

Configured by environment variables:

- PYQD_BENCH_MODEL: pickle or joblib file of a fitted model
- PYQD_BENCH_JWT_KEY: optional; when set, requests need an HS256 bearer token signed with it (the article has none)
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import joblib
import jwt
import numpy as np
from flask import Flask, Response, jsonify, request

from bench.apps import RunningApp, bearer, launch
from bench.server import free_port


def create_app() -> Flask:
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    model = joblib.load(os.environ["PYQD_BENCH_MODEL"])  # the benchmark's own file
    proba = hasattr(model, "predict_proba")
    key = os.environ.get("PYQD_BENCH_JWT_KEY")
    app = Flask(__name__)

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.post("/predict")
    def predict() -> Response | tuple[Response, int]:
        if key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            try:
                if scheme.lower() != "bearer":
                    raise jwt.InvalidTokenError("no bearer token")
                jwt.decode(token, key, algorithms=["HS256"])
            except jwt.InvalidTokenError:
                return jsonify(error="invalid token"), 401
        body = request.get_json(force=True)
        if "input" in body:  # the seed article's shape
            x = np.atleast_2d(np.asarray(body["input"], dtype=float))
            if proba:
                p = model.predict_proba(x)
                labels = model.classes_[p.argmax(axis=1)].tolist()
                return jsonify(input=body["input"], prediction=labels, probability=p.tolist())
            return jsonify(input=body["input"], prediction=model.predict(x).tolist())
        features = np.asarray(body["features"], dtype=float)
        return jsonify(prediction=model.predict(np.atleast_2d(features)).tolist())

    return app


@contextlib.contextmanager
def start(model_path: str, *, key: str | None = None, workers: int = 2) -> Iterator[RunningApp]:
    """gunicorn with `workers` sync workers on a free port; `.headers` carries a bearer token when `key` is set."""
    port = free_port()
    env = {"PYQD_BENCH_MODEL": model_path, **({"PYQD_BENCH_JWT_KEY": key} if key else {})}
    argv = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
    argv += ["--log-level", "warning", "bench.apps.flask_predict:create_app()"]
    url = f"http://127.0.0.1:{port}"
    with launch(argv, env, url) as proc:
        yield RunningApp(url, proc, bearer(key) if key else {})
