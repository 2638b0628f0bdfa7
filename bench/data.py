"""The benchmark tables and model: generated here, loaded into pyqd (through the `pyqd table load` command),
and shared with the baselines, which read the very same tables."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LinearRegression

from bench.baselines import FEATURES, Source

USER, PASSWORD = "BENCH", "bench-password"
#: Groups in the group-apply tables.
GROUPS = 100


def frame(rows: int, *, skewed: bool = False, seed: int = 0) -> pd.DataFrame:
    """ID, GRP (0..99, uniform or Zipf-skewed), F1..F8 (standard normal)."""
    rng = np.random.default_rng(seed)
    if skewed:
        grp = np.minimum(rng.zipf(1.3, rows) - 1, GROUPS - 1)
    else:
        grp = rng.integers(0, GROUPS, rows)
    df = pd.DataFrame({"ID": np.arange(rows, dtype=np.int64), "GRP": grp.astype(np.int64)})
    for name in FEATURES:
        df[name] = rng.normal(size=rows)
    return df


def fit_model(df: pd.DataFrame, path: str) -> LinearRegression:
    """A regression of a synthetic target on F1..F8, fitted on 10,000 rows, pickled to `path`."""
    head = df.head(10_000)
    y = head[FEATURES].to_numpy() @ np.linspace(0.1, 0.8, len(FEATURES)) + 0.5
    model = LinearRegression().fit(head[FEATURES], y)
    with open(path, "wb") as f:
        pickle.dump(model, f)
    return model


@dataclass
class Store:
    """Where a pyqd server keeps its data, as the CLI and the baselines address it."""

    data_dir: str
    database_url: str | None

    def cli(self, *args: str) -> None:
        env = {**os.environ, "PYQD_DATA_DIR": self.data_dir}
        if self.database_url:
            env["PYQD_DATABASE_URL"] = self.database_url
        subprocess.run(
            [sys.executable, "-c", "from server.cli import main; main()", *args],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def load(self, name: str, df: pd.DataFrame) -> Source:
        """Put `df` in BENCH's schema as table `name` (replacing it); the baselines' view of it."""
        with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f.name)
            self.cli("table", "load", f.name, "--table", name, "--owner", USER, "--mode", "replace")
        return self.source(name, len(df))

    def source(self, name: str, rows: int) -> Source:
        if self.database_url:
            url = self.database_url
            return Source("postgresql", url, name, rows, schema=USER)
        return Source("sqlite", f"sqlite:///{self.data_dir}/schemas/{USER}.db", name, rows)
