"""Baselines without pyqd: the same row scoring and per-group fitting done end to end (read + compute + JSON) by
one pandas process, by joblib/loky workers and by a Dask LocalCluster. Pure functions returning the JSON bytes;
the numeric thread pins (OMP_NUM_THREADS=1 ...) must be set by the caller before numpy is imported."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from joblib import Parallel, delayed
from sklearn.linear_model import LinearRegression

from bench.server import THREADS_ENV

if TYPE_CHECKING:
    from dask.distributed import Client

FEATURES = [f"F{i}" for i in range(1, 9)]
SCORE_COLUMNS = ["ID", *FEATURES]
GROUP_COLUMNS = ["GRP", *FEATURES]
GROUP_X, GROUP_Y = FEATURES[1:], "F1"  # per group: LinearRegression of F2..F8 -> F1


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Source:
    """A benchmark table: `url` is an SQLAlchemy URL, `table`/`schema` are case-sensitive (quoted) names.
    `driver` picks how pandas reads it: through SQLAlchemy (the classic route) or an ADBC connection (Arrow,
    several times faster); Dask's read_sql_table always goes through SQLAlchemy."""

    kind: Literal["sqlite", "postgresql"]
    url: str
    table: str
    rows: int
    schema: str | None = None
    driver: Literal["sqlalchemy", "adbc"] = "sqlalchemy"

    @property
    def qualified(self) -> str:
        return f"{quote(self.schema)}.{quote(self.table)}" if self.schema else quote(self.table)

    def select(self, columns: Sequence[str], ids: tuple[int, int] | None = None) -> str:
        """SELECT columns [WHERE lo <= ID < hi]"""
        sql = f"SELECT {', '.join(map(quote, columns))} FROM {self.qualified}"
        return sql + (f' WHERE "ID" >= {int(ids[0])} AND "ID" < {int(ids[1])}' if ids else "")


# --- per-process caches and the work itself (run in the parent and in joblib/Dask workers) ---

_engines: dict[str, sa.Engine] = {}
_adbc: dict[str, Any] = {}


def _engine(url: str) -> sa.Engine:
    if url not in _engines:
        _engines[url] = sa.create_engine(url)
    return _engines[url]


def _adbc_connection(source: Source) -> Any:
    """One autocommit ADBC connection per process and database (a PostgreSQL connect costs ~50 ms)."""
    if source.url not in _adbc:
        url = sa.make_url(source.url)
        if source.kind == "sqlite":
            import adbc_driver_sqlite.dbapi as adbc_sqlite

            _adbc[source.url] = adbc_sqlite.connect(url.database, autocommit=True)
        else:
            import adbc_driver_postgresql.dbapi as adbc_pg

            uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
            _adbc[source.url] = adbc_pg.connect(uri, autocommit=True)
    return _adbc[source.url]


def dispose() -> None:
    """Close this process's cached engines and connections (e.g. before dropping the database)."""
    for engine in _engines.values():
        engine.dispose()
    for conn in _adbc.values():
        conn.close()
    _engines.clear()
    _adbc.clear()


@functools.cache
def _cached_model(path: str, mtime_ns: int) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - the benchmark's own pickle


def load_model(path: str) -> Any:
    """The pickled model, loaded once per process (reloaded if the file changes)."""
    return _cached_model(path, os.stat(path).st_mtime_ns)


def query(source: Source, sql: str) -> pd.DataFrame:
    if source.driver == "adbc":
        return pd.read_sql(sql, _adbc_connection(source))
    with _engine(source.url).connect() as conn:
        return pd.read_sql(sa.text(sql), conn)


def read(source: Source, columns: Sequence[str], ids: tuple[int, int] | None = None) -> pd.DataFrame:
    return query(source, source.select(columns, ids))


def predict(model: Any, ids: np.ndarray, features: pd.DataFrame) -> pd.DataFrame:
    x = features if hasattr(model, "feature_names_in_") else features.to_numpy()
    return pd.DataFrame({"ID": ids, "P": model.predict(x)})


def records_json(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="records").encode()


def splice(arrays: Sequence[bytes]) -> bytes:
    """Concatenate JSON arrays into one array without re-parsing them."""
    return b"[" + b",".join(a[1:-1] for a in arrays if len(a) > 2) + b"]"


def fit_coefficients(x: np.ndarray, y: np.ndarray) -> list[float]:
    """[intercept, coef(F2) .. coef(F8)]"""
    m = LinearRegression().fit(x, y)
    return [float(m.intercept_), *(float(c) for c in m.coef_)]


def fit_frame(frame: pd.DataFrame) -> list[float]:
    return fit_coefficients(frame[GROUP_X].to_numpy(), frame[GROUP_Y].to_numpy())


def groups_json(coefficients: dict[Any, list[float]]) -> bytes:
    return json.dumps({str(int(g)): c for g, c in sorted(coefficients.items())}).encode()


# --- (a) one pandas process ---


def score_pandas(source: Source, model_path: str) -> bytes:
    df = read(source, SCORE_COLUMNS)
    return records_json(predict(load_model(model_path), df["ID"].to_numpy(), df[FEATURES]))


def groups_pandas(source: Source) -> bytes:
    fits = read(source, GROUP_COLUMNS).groupby("GRP").apply(fit_frame)
    return groups_json(fits.to_dict())


# --- (b) joblib/loky: the executor persists between calls, so the first call also starts the workers ---


def _score_chunk(source: Source, model_path: str, lo: int, hi: int) -> bytes:
    df = read(source, SCORE_COLUMNS, (lo, hi))
    return records_json(predict(load_model(model_path), df["ID"].to_numpy(), df[FEATURES]))


def id_range(source: Source) -> tuple[int, int]:
    """MIN and MAX of ID: chunks are ID ranges of `chunk_rows` (exact for dense IDs)."""
    row = query(source, f'SELECT MIN("ID") AS "LO", MAX("ID") AS "HI" FROM {source.qualified}').iloc[0]
    return int(row["LO"]), int(row["HI"])


def score_joblib(source: Source, model_path: str, chunk_rows: int, n_jobs: int = 2) -> bytes:
    lo, hi = id_range(source)
    tasks = (delayed(_score_chunk)(source, model_path, a, a + chunk_rows) for a in range(lo, hi + 1, chunk_rows))
    return splice(Parallel(n_jobs=n_jobs)(tasks))


def groups_joblib(source: Source, n_jobs: int = 2) -> bytes:
    """Read once in the parent; one task per group, largest first (so a skewed group does not come last)."""
    groups = sorted(read(source, GROUP_COLUMNS).groupby("GRP"), key=lambda g: -len(g[1]))
    tasks = (delayed(fit_coefficients)(f[GROUP_X].to_numpy(), f[GROUP_Y].to_numpy()) for _, f in groups)
    fits = Parallel(n_jobs=n_jobs)(tasks)
    return groups_json({g: c for (g, _), c in zip(groups, fits, strict=True)})


def joblib_warmup(n_jobs: int = 2) -> None:
    """Start loky's reusable workers (time this separately, like the Dask cluster start)."""
    Parallel(n_jobs=n_jobs)(delayed(os.getpid)() for _ in range(2 * n_jobs))


# --- (c) Dask LocalCluster ---


@contextlib.contextmanager
def dask_cluster(n_workers: int = 2) -> Iterator[Client]:
    """A LocalCluster of single-threaded worker processes; time entering it to get the cluster start time."""
    from dask.distributed import Client, LocalCluster

    # P2P shuffles (groupby.apply) log a WARNING at every start and end: not news here.
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None, env=dict(THREADS_ENV)
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _dask_frame(source: Source, columns: list[str], chunk_rows: int) -> Any:
    import dask.dataframe as dd

    return dd.read_sql_table(
        source.table,
        source.url,
        index_col="ID",
        columns=columns,
        schema=source.schema,
        npartitions=max(1, source.rows // chunk_rows),
    )


def _predict_partition(part: pd.DataFrame, model_path: str) -> pd.DataFrame:
    return predict(load_model(model_path), part.index.to_numpy(), part[FEATURES])


def score_dask(source: Source, model_path: str, chunk_rows: int, client: Client) -> bytes:
    import dask

    meta = pd.DataFrame({"ID": pd.Series(dtype="int64"), "P": pd.Series(dtype="float64")})
    scored = _dask_frame(source, FEATURES, chunk_rows).map_partitions(_predict_partition, model_path, meta=meta)
    parts = [dask.delayed(records_json)(p) for p in scored.to_delayed()]
    return splice(client.compute(parts, sync=True))


def groups_dask(source: Source, client: Client, chunk_rows: int = 100_000) -> bytes:
    grouped = _dask_frame(source, GROUP_COLUMNS, chunk_rows).groupby("GRP")
    fits = client.compute(grouped.apply(fit_frame, meta=("coef", "object")), sync=True)
    return groups_json(fits.to_dict())
