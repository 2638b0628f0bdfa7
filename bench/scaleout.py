"""Scale-out (issue 11): `python -m bench.scaleout [--rows 1000000] [--reps 3] [--profile] [--out FILE]`.

Side by side in one run on a fresh PostgreSQL database (made here, dropped afterwards), on two tables of `rows` and
5 × `rows` rows (ID, GU: 100 uniform groups, GZ: 100 Zipf groups, F1..F3), uploaded once:

- pyqd on the local engine (a real `pyqd serve`, its own worker pool, 1 and 2 workers per call);
- pyqd on the Dask engine (`PYQD_ENGINE=dask`), a `pyqd serve` per cluster: a LocalCluster of 1 and one of 2
  single-threaded process workers on loopback, each cluster hosted in a helper process of its own so that the
  scheduler is a process apart, as in a deployment;
- the same work written by hand with `dask.dataframe` (`read_sql_table(index_col="ID", npartitions=rows // chunk)`
  + `map_partitions`) on those two clusters.

Work: "reading" (a row-apply whose function returns the chunk's length: the data path alone), "scoring" (a row-apply
that scores every row with a small scikit-learn pipeline loaded from a datastore once per worker process and
returns ID and prediction for every row), and group-apply with 100 groups, uniform and Zipf. Every run is checked
(rows counted), the variants are interleaved (order rotating), the API server's RSS is sampled (psutil, 20 Hz)
and the CPU each process group used is read before and after each run. `--profile` then records py-spy on the
Dask engine's API server (and one Dask worker) during one scoring call."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pickle
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.server import THREADS_ENV

os.environ.update(THREADS_ENV)  # before numpy is imported

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from bench import baselines as bl  # noqa: E402
from bench.data import PASSWORD, USER, Store  # noqa: E402
from bench.harness import machine, markdown_table  # noqa: E402
from bench.server import Server, pg_database, running_server  # noqa: E402

TITLE = "## Scale-out (issue 11)"
FEATURES = ["F1", "F2", "F3"]
GROUPS = 100
#: Seconds a call may take (sync calls; the server's own limit is raised to match).
CALL_LIMIT_S = 3600
#: Samples per second of the API server's RSS and of the database's backends' CPU.
SAMPLE_HZ = 10

SCORE = f"""_MODEL = []


def score(dat):
    import pandas as pd
    if not _MODEL:  # once per worker process: the compiled script's globals live as long as the process
        import oml
        _MODEL.append(oml.ds.load(name="ds_scaleout", objs=["model"], to_globals=False)["model"])
    return pd.DataFrame({{"ID": dat["ID"], "P": _MODEL[0].predict(dat[{FEATURES!r}].to_numpy())}})
"""
COUNT = "def count(dat):\n    return len(dat)\n"
FIT = """def fit(dat):
    from sklearn.linear_model import LinearRegression
    m = LinearRegression().fit(dat[["F2", "F3"]].to_numpy(), dat["F1"].to_numpy())
    return [float(m.intercept_), *(float(c) for c in m.coef_)]
"""


def log(line: str) -> None:
    print(line, flush=True)


# --- data and model ------------------------------------------------------------------------------------------


def frame(rows: int, seed: int) -> pd.DataFrame:
    """ID, GU (0..99 uniform), GZ (0..99 Zipf, a=1.3: group 0 holds ~45 %), F1..F3 (standard normal)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"ID": np.arange(rows, dtype=np.int64)})
    df["GU"] = rng.integers(0, GROUPS, rows).astype(np.int64)
    df["GZ"] = np.minimum(rng.zipf(1.3, rows) - 1, GROUPS - 1).astype(np.int64)
    for name in FEATURES:
        df[name] = rng.normal(size=rows)
    return df


def fit_model(path: str) -> Any:
    """StandardScaler + Ridge on F1..F3 (fitted on numpy, so it predicts from a plain matrix), pickled to `path`."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = frame(10_000, seed=99)[FEATURES].to_numpy()
    y = x @ np.array([0.3, 0.5, 0.2]) + 0.5
    model = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
    with open(path, "wb") as f:
        pickle.dump(model, f)
    return model


# --- clusters: a LocalCluster in a helper process --------------------------------------------------------------


def serve_cluster(n_workers: int, address_file: str) -> None:
    """Run in the helper process: a LocalCluster of `n_workers` single-threaded process workers on loopback, its
    address written to `address_file`, kept until stdin closes (so it never outlives the benchmark)."""
    import logging

    import dask
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    dask.config.set({"distributed.scheduler.allowed-failures": 1})  # as docs/scaling.md asks of a real scheduler
    with LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # a free port: another cluster on this machine may hold 8787
        env=dict(THREADS_ENV),
    ) as cluster:
        tmp = address_file + ".tmp"
        Path(tmp).write_text(cluster.scheduler_address)
        os.replace(tmp, address_file)
        sys.stdin.read()


@dataclass
class Cluster:
    workers: int
    address: str
    proc: subprocess.Popen[bytes]
    client: Any  # a distributed.Client of the benchmark's own, for the hand-written dask.dataframe variants

    def worker_pids(self) -> list[int]:
        return list(self.client.run(os.getpid).values())


@contextlib.contextmanager
def cluster(n_workers: int, work: Path, source: str | None = None) -> Iterator[Cluster]:
    """A cluster of `n_workers` in its helper process (running pyqd from checkout `source` if given)."""
    from distributed import Client

    address_file = work / f"cluster-{n_workers}.address"
    code = f"from bench.scaleout import serve_cluster; serve_cluster({n_workers}, {str(address_file)!r})"
    env = {**os.environ, **THREADS_ENV, **({"PYTHONPATH": source} if source else {})}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=env, cwd=source)
    try:
        deadline = time.monotonic() + 120
        while not address_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {n_workers}-worker cluster did not start")
            time.sleep(0.05)
        address = address_file.read_text()
        with Client(address, set_as_default=False, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
            yield Cluster(n_workers, address, proc, client)
    finally:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- measuring: CPU per process group, the API server's RSS -------------------------------------------------------


def _cpu(p: psutil.Process, children: bool = True) -> float:
    """CPU seconds of a process (and of its children it has waited for)."""
    try:
        t = p.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


#: Process groups, in report order; "other processes" is the machine's busy CPU time less the groups'.
GROUPS_CPU = ("API server", "local pyqd workers", "Dask scheduler", "Dask workers + their pyqd", "PostgreSQL", "client")
OTHERS = "other processes"


@dataclass(frozen=True)
class Processes:
    """Whose CPU a run counts: the API servers and cluster helpers (roots of their trees), and the benchmark
    database's PostgreSQL backends (found by their process title, which names the database)."""

    servers: list[int]
    clusters: list[int]
    database: str

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """pid -> (group, CPU seconds so far) for the trees, and the machine's busy CPU seconds under pid 0."""
        out: dict[int, tuple[str, float]] = {os.getpid(): ("client", _cpu(psutil.Process(), children=False))}
        for roots, own, kids in (
            (self.servers, "API server", "local pyqd workers"),
            (self.clusters, "Dask scheduler", "Dask workers + their pyqd"),
        ):
            for pid in roots:
                with contextlib.suppress(psutil.NoSuchProcess):
                    root = psutil.Process(pid)
                    out[pid] = (own, _cpu(root, children=False))
                    for child in root.children(recursive=True):
                        out[child.pid] = (kids, _cpu(child))
                    t = root.cpu_times()  # children it reaped count for its descendants' group
                    out[-pid] = (kids, t.children_user + t.children_system)
        m = psutil.cpu_times()  # Linux: guest time is counted in user already; idle, iowait and steal are not busy
        out[0] = (OTHERS, m.user + m.nice + m.system + getattr(m, "irq", 0.0) + getattr(m, "softirq", 0.0))
        return out


class Meter:
    """One run's measures: CPU per process group (trees read at the start and the end: a process that starts
    during the run counts whole, one that ends is counted by its parent once reaped), the benchmark database's
    PostgreSQL backends (sampled SAMPLE_HZ times a second: calls open short-lived connections, each counted up to
    its last sample), and the peak RSS of `server_pid`."""

    def __init__(self, procs: Processes, server_pid: int | None) -> None:
        self.procs = procs
        self.server = psutil.Process(server_pid) if server_pid else None
        self.rss_peak: float | None = None
        self.cpu: dict[str, float] = {}
        self._start: dict[int, tuple[str, float]] = {}
        self._pg_start: dict[int, float] = {}
        self._pg_last: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _backends(self) -> dict[int, float]:
        """CPU seconds of the benchmark database's backends now."""
        out = {}
        marker = f" {self.procs.database} "
        for pid in psutil.pids():
            try:
                name = self._names.get(pid)
                if name is None:
                    name = self._names[pid] = psutil.Process(pid).name()
                if name != "postgres":
                    continue
                p = psutil.Process(pid)
                if marker in " ".join(p.cmdline()) + " ":
                    out[pid] = _cpu(p, children=False)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def _sample(self) -> None:
        if self.server is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss = self.server.memory_info().rss / 2**20
                self.rss_peak = max(self.rss_peak or 0.0, rss)
        self._pg_last.update(self._backends())

    def _run(self) -> None:
        while not self._stop.wait(1 / SAMPLE_HZ):
            self._sample()

    def __enter__(self) -> Meter:
        self._start = self.procs.snapshot()
        self._pg_start = self._backends()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        end = self.procs.snapshot()
        spent = dict.fromkeys((*GROUPS_CPU, OTHERS), 0.0)
        for pid, (group, seconds) in end.items():
            spent[group] += max(0.0, seconds - self._start.get(pid, (group, 0.0))[1])
        spent["PostgreSQL"] = sum(max(0.0, t - self._pg_start.get(pid, 0.0)) for pid, t in self._pg_last.items())
        spent[OTHERS] = max(0.0, spent[OTHERS] - sum(spent[g] for g in GROUPS_CPU))
        self.cpu = spent


@dataclass
class Run:
    seconds: float
    load: float
    cpu: dict[str, float]
    rss_mib: float | None


@dataclass
class Row:
    """One variant at one size: its runs."""

    name: str
    system: str  # "local" | "Dask engine" | "dask.dataframe"
    workers: int
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def median_run(self) -> Run:
        return sorted(self.runs, key=lambda r: r.seconds)[len(self.runs) // 2]


@dataclass(frozen=True)
class Variant:
    name: str
    system: str
    workers: int
    run: Callable[[], int]  # -> rows (or groups) it produced, checked against the expected count
    server: Server | None = None


#: Times a failed call is made again (each failure is reported) before the run stops. The Dask engine fails about
#: one 1M-row call in ten here with "UnboundLocalError" (distributed's `sync` when two threads poll
#: `Future.result(timeout=...)` on one client and a gather is cancelled under them), hence more than one.
RETRIES = 3


def measure(
    variants: list[Variant], expect: int, reps: int, procs: Processes, label: str, warmup: bool, failures: list[str]
) -> dict[str, Row]:
    """`reps` rounds of every variant in a rotating order (after one warm-up each if `warmup`), every run
    checked to produce `expect` rows or groups. A call that fails is noted in `failures` and made again."""
    rows = {v.name: Row(v.name, v.system, v.workers) for v in variants}

    def attempt(v: Variant) -> tuple[float, float, Meter]:
        for tries in range(RETRIES + 1):
            load = os.getloadavg()[0]
            try:
                with Meter(procs, v.server.proc.pid if v.server else None) as meter:
                    t = time.perf_counter()
                    got = v.run()
                    seconds = time.perf_counter() - t
                if got != expect:
                    raise RuntimeError(f"{got} instead of {expect}")
                return seconds, load, meter
            except Exception as e:  # noqa: BLE001 - reported, then tried again or raised
                failures.append(f"{label} / {v.name}: {str(e)[:400]}")
                log(f"  FAILED {failures[-1]}")
                if tries == RETRIES:
                    raise
        raise AssertionError("unreachable")

    if warmup:
        for v in variants:
            attempt(v)
    for r in range(reps):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            seconds, load, meter = attempt(v)
            rows[v.name].runs.append(Run(seconds, load, meter.cpu, meter.rss_peak))
        log(f"  {label} round {r + 1}/{reps}: " + ", ".join(f"{n} {x.runs[-1].seconds:.2f}s" for n, x in rows.items()))
    return rows


# --- the variants ------------------------------------------------------------------------------------------------


class Pyqd:
    """A running `pyqd serve` and BENCH's token on it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        token = server.token(USER, PASSWORD)
        # Idle connections are dropped after 1 s, well before uvicorn closes them (5 s): a request sent on a
        # connection the server is closing fails with "Server disconnected without sending a response".
        self.http = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=CALL_LIMIT_S,
            limits=httpx.Limits(keepalive_expiry=1.0),
        )

    def call(self, verb: str, script: str, body: dict[str, Any], on_chunk: Callable[[bytes], None]) -> None:
        """POST the call, streaming the answer through `on_chunk` (the client never holds 5M rows of JSON)."""
        with self.http.stream("POST", f"/oml/api/py-scripts/v1/{verb}/{script}", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{verb} {script}: {r.status_code} {r.read()[:500]!r}")
            for chunk in r.iter_raw(1 << 20):
                on_chunk(chunk)

    def score(self, table: str, chunk: int, workers: int) -> int:
        counter = RecordCounter()
        self.call("row-apply", "score", _row_body(table, chunk, workers), counter)
        return counter.records

    def read(self, table: str, chunk: int, workers: int) -> int:
        parts: list[bytes] = []
        self.call("row-apply", "count", _row_body(table, chunk, workers), parts.append)
        return _sum_counts(json.loads(b"".join(parts)))

    def groups(self, table: str, column: str, workers: int) -> int:
        cols = ", ".join(f'"{c}"' for c in (column, *FEATURES))
        body = {
            "input": f'select {cols} from "{table}"',
            "groupBy": f'"{column}"',
            "parallelFlag": True,
            "parallel": workers,
            "service": "LOW",
            "parameters": '{"oml_input_type":"pandas.DataFrame"}',
        }
        parts: list[bytes] = []
        self.call("group-apply", "fit", body, parts.append)
        result = json.loads(b"".join(parts))
        return len(result.get("result", result))

    def close(self) -> None:
        self.http.close()


def _row_body(table: str, chunk: int, workers: int) -> dict[str, Any]:
    """A row-apply of ID, F1..F3 (what dask.dataframe reads too: its index and the features)."""
    cols = ", ".join(f'"{c}"' for c in ("ID", *FEATURES))
    return {
        "input": f'select {cols} from "{table}"',
        "rows": chunk,
        "parallelFlag": True,
        "parallel": workers,
        "service": "LOW",
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    }


def _sum_counts(payload: Any) -> int:
    """A row-apply of `count`: its chunks' lengths, however the answer nests them."""
    if isinstance(payload, dict):
        return sum(_sum_counts(v) for v in payload.values())
    if isinstance(payload, list):
        return sum(_sum_counts(v) for v in payload)
    return int(payload)


class RecordCounter:
    """Counts `"P":` in a JSON stream of {"ID": .., "P": ..} records, across chunk boundaries."""

    KEY = b'"P":'

    def __init__(self) -> None:
        self.records = 0
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        data = self._tail + chunk
        self.records += data.count(self.KEY)
        self._tail = data[-(len(self.KEY) - 1) :]  # shorter than the key: a key in it is counted next time


def _frame_of(source: bl.Source, columns: list[str], chunk: int) -> Any:
    import dask.dataframe as dd

    return dd.read_sql_table(
        source.table,
        source.url,
        index_col="ID",
        columns=columns,
        schema=source.schema,
        npartitions=max(1, source.rows // chunk),
    )


def _score_partition(part: pd.DataFrame, model_path: str) -> bytes:
    """The hand-written twin of the `score` script: the same model, the same records, as JSON."""
    model = bl.load_model(model_path)
    scored = pd.DataFrame({"ID": part.index.to_numpy(), "P": model.predict(part[FEATURES].to_numpy())})
    return bl.records_json(scored)


def dd_score(source: bl.Source, model_path: str, chunk: int, client: Any) -> int:
    """dask.dataframe: read_sql_table + map_partitions scoring, each partition's JSON gathered to the client."""
    import dask

    parts = _frame_of(source, FEATURES, chunk).to_delayed()
    blobs = client.compute([dask.delayed(_score_partition)(p, model_path) for p in parts], sync=True)
    counter = RecordCounter()
    counter(bl.splice(blobs))
    return counter.records


def dd_read(source: bl.Source, chunk: int, client: Any) -> int:
    """dask.dataframe: read_sql_table + map_partitions(len), the lengths gathered to the client."""
    lengths = client.compute(_frame_of(source, FEATURES, chunk).map_partitions(len), sync=True)
    return int(sum(lengths))


# --- setting up ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def store(work: Path) -> Iterator[Store]:
    """A fresh PostgreSQL database (dropped afterwards) with the BENCH user, and a data directory."""
    with pg_database() as url:
        data_dir = work / "data"
        data_dir.mkdir()
        s = Store(str(data_dir), url)
        os.environ["PYQD_ADMIN_PASSWORD"] = "bench-admin-" + secrets.token_hex(4)
        env = {**os.environ, "PYQD_DATA_DIR": str(data_dir), "PYQD_DATABASE_URL": url}
        subprocess.run(
            [sys.executable, "-c", "from server.cli import main; main()", "user", "add", USER, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            yield s
        finally:
            bl.dispose()


def load_tables(s: Store, sizes: list[int]) -> dict[int, bl.Source]:
    """One table per size, uploaded once, plus an index on ID for the hand-written read_sql_table's range
    queries (pyqd's own scans do not use it)."""
    import psycopg

    sources = {}
    for i, rows in enumerate(sizes):
        t = time.perf_counter()
        name = f"SCALE_{rows}"
        sources[rows] = s.load(name, frame(rows, seed=i))
        assert s.database_url is not None
        dsn = s.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE INDEX ON "{USER}"."{name}" ("ID")')
            conn.execute(f'ANALYZE "{USER}"."{name}"')
        log(f"  loaded {name}: {rows:,} rows ({time.perf_counter() - t:.1f} s)")
    return sources


def prepare(server: Server, model_path: str) -> None:
    """BENCH's model datastore and scripts (in the shared database: every server sees them)."""
    import oml

    oml.connect(url=server.url, username=USER, password=PASSWORD)
    with open(model_path, "rb") as f:
        model = pickle.load(f)  # noqa: S301 - the benchmark's own pickle
    oml.ds.save(objs={"model": model}, name="ds_scaleout", overwrite=True)
    for name, src in (("score", SCORE), ("count", COUNT), ("fit", FIT)):
        oml.script.create(name, func=src, overwrite=True)
    oml.disconnect()


def server_settings(engine: str, scheduler: str | None = None) -> dict[str, str]:
    """A server for one user's big calls: 2 workers per call at most (2 cores), no time limit in the way, room
    for 5M rows of JSON."""
    settings = {
        "PYQD_WORKERS": "2",
        "PYQD_WORKERS_PER_USER": "2",  # the default share (half the pool) would give one user 1 of 2 Dask slots
        "PYQD_SYNC_TIME_LIMIT_S": str(CALL_LIMIT_S),
        "PYQD_QUERY_TIME_LIMIT_S": str(CALL_LIMIT_S),
        "PYQD_OUTPUT_MAX_BYTES": str(2**30),
        "PYQD_ENGINE": engine,
    }
    if scheduler:
        settings["PYQD_DASK_SCHEDULER"] = scheduler
    return settings


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class Results:
    sizes: list[int]
    chunk: int
    reps: int
    rows: dict[tuple[str, int], dict[str, Row]] = field(default_factory=dict)  # (work, size) -> variant -> row
    groups: dict[str, dict[str, Row]] = field(default_factory=dict)  # "uniform" | "Zipf" -> variant -> row
    rss_hwm: dict[str, float] = field(default_factory=dict)  # server -> VmHWM at the end, MiB
    failures: list[str] = field(default_factory=list)  # calls that failed (and were made again)
    profile: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace, command: str) -> str:
    started = time.perf_counter()
    sizes = [args.rows, args.rows * args.scale]
    chunk = args.chunk or max(1_000, args.rows // 10)
    res = Results(sizes, chunk, args.reps)
    res.meta = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "others": _other_work(),
    }
    work = Path(tempfile.mkdtemp(prefix="pyqd-bench-scaleout-"))
    try:
        model_path = str(work / "model.pkl")
        fit_model(model_path)
        with contextlib.ExitStack() as stack:
            log("== PostgreSQL database, tables")
            s = stack.enter_context(store(work))
            sources = load_tables(s, sizes)
            log("== clusters and servers")
            c1 = stack.enter_context(cluster(1, work, args.source))
            c2 = stack.enter_context(cluster(2, work, args.source))
            srv = {
                key: stack.enter_context(running_server(s.database_url, s.data_dir, True, args.source, **settings))
                for key, settings in (
                    ("local", server_settings("local")),
                    ("dask1", server_settings("dask", c1.address)),
                    ("dask2", server_settings("dask", c2.address)),
                )
            }
            prepare(srv["local"], model_path)
            pq = {k: Pyqd(v) for k, v in srv.items()}
            for p in pq.values():
                stack.callback(p.close)
            database = (s.database_url or "").rsplit("/", 1)[1]
            procs = Processes([v.proc.pid for v in srv.values()], [c1.proc.pid, c2.proc.pid], database)
            for i, rows in enumerate(sizes):
                for work_kind in ("reading", "scoring"):
                    log(f"-- {work_kind}, {rows:,} rows")
                    variants = _row_variants(work_kind, pq, srv, sources[rows], chunk, model_path, [c1, c2])
                    res.rows[(work_kind, rows)] = measure(
                        variants, rows, args.reps, procs, f"{work_kind} {rows:,}", i == 0, res.failures
                    )
            for label, column in (("uniform", "GU"), ("Zipf", "GZ")):
                log(f"-- group-apply, {label}, {sizes[0]:,} rows")
                table = sources[sizes[0]].table
                variants = [
                    Variant(_name(system, w), system, w, partial(pq[key].groups, table, column, w), srv[key])
                    for key, system, w in PYQD_VARIANTS
                ]
                res.groups[label] = measure(variants, GROUPS, args.reps, procs, f"groups {label}", True, res.failures)
            res.rss_hwm = {k: _vm_hwm(v.proc.pid) for k, v in srv.items()}
            if args.profile:
                log(f"-- profile (py-spy), Dask engine, 2 workers, scoring {sizes[-1]:,} rows")
                res.profile = profile(
                    srv["dask2"].proc.pid,
                    c2.worker_pids()[0],
                    partial(pq["dask2"].score, sources[sizes[-1]].table, chunk, 2),
                    work,
                )
    finally:
        res.meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        res.meta["seconds"] = time.perf_counter() - started
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return render(res)


#: The pyqd variants: (server, system, workers per call).
PYQD_VARIANTS = (("local", "local", 1), ("local", "local", 2), ("dask1", "Dask engine", 1), ("dask2", "Dask engine", 2))


def _name(system: str, workers: int) -> str:
    return f"{system}, {_plural(workers)}"


def _row_variants(
    work_kind: str,
    pq: dict[str, Pyqd],
    srv: dict[str, Server],
    src: bl.Source,
    chunk: int,
    model_path: str,
    clusters: list[Cluster],
) -> list[Variant]:
    out = []
    for key, system, w in PYQD_VARIANTS:
        call = pq[key].read if work_kind == "reading" else pq[key].score
        out.append(Variant(_name(system, w), system, w, partial(call, src.table, chunk, w), srv[key]))
    for c in clusters:
        if work_kind == "reading":
            fn = partial(dd_read, src, chunk, c.client)
        else:
            fn = partial(dd_score, src, model_path, chunk, c.client)
        out.append(Variant(_name("dask.dataframe", c.workers), "dask.dataframe", c.workers, fn))
    return out


def _vm_hwm(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _other_work() -> str:
    """Other heavy processes now (a test suite would skew every number)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "pytest" in cmd and p.pid != os.getpid():
            found.append(f"pytest (pid {p.pid})")
    return ", ".join(found) or "none seen"


# --- profiling ----------------------------------------------------------------------------------------------


def profile(server_pid: int, worker_pid: int, call: Callable[[], int], out_dir: Path) -> str:
    """py-spy (every thread that is not idle) on the API server, and on one Dask worker with its pyqd processes,
    during one call; the shares per function (bench.scoring.summarize)."""
    from bench.scoring import summarize

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    targets = [("API server", server_pid, []), ("Dask worker", worker_pid, ["--subprocesses"])]
    recorders = []
    for label, pid, extra in targets:
        path = out_dir / f"profile-{label.replace(' ', '-').lower()}.txt"
        argv = [pyspy, "record", "-o", str(path), "--format", "raw", "--pid", str(pid), "--rate", "100"]
        recorders.append(
            (
                label,
                path,
                subprocess.Popen([*argv, "--nonblocking", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            )
        )
    time.sleep(2.0)  # attached
    t = time.perf_counter()
    call()
    seconds = time.perf_counter() - t
    out = [f"One scoring call of the larger table, {seconds:.1f} s, py-spy at 100 Hz (threads not idle):", ""]
    for label, path, proc in recorders:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        text = path.read_text() if path.exists() else ""
        summary = (
            summarize(text, top=12).replace("(GIL holders)", "(threads not idle)")
            if text
            else f"no samples ({err.decode(errors='replace')[-300:]})"
        )
        if label != "API server":
            summary = "\n".join(_relabel(line) for line in summary.splitlines())
        out += [f"#### {label}", "", "```", summary, "```", ""]
    return "\n".join(out)


def _relabel(line: str) -> str:
    """summarize() calls pyqd's processes "worker" and any other "server"; under a Dask worker, say which is which."""
    for was, now in (("server", "Dask worker"), ("worker", "pyqd processes")):
        if line.startswith(f"{was}, "):
            return now + line[len(was) :]
    if line[:1].isdigit():  # the first line: "N samples (...): worker 50.0%, server 50.0%"
        line = re.sub(r"\bworker (?=\d)", "pyqd processes ", line)
        line = re.sub(r"\bserver (?=\d)", "Dask worker ", line)
    return line


# --- the report ------------------------------------------------------------------------------------------------


def _plural(n: int) -> str:
    return f"{n} worker{'s' if n > 1 else ''}"


def _commit() -> str:
    """The measured commit: `hash` (subject), and whether the checkout had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    sha, _, subject = head.partition(" ")
    subject = subject if len(subject) <= 72 else subject[:71] + "…"
    return f"`{sha}` ({subject})" + (" with local changes" if dirty.stdout.strip() else "")


def _pick(rows: dict[str, Row], system: str, workers: int) -> Row | None:
    return next((r for r in rows.values() if r.system == system and r.workers == workers), None)


def render(res: Results) -> str:
    small, large = res.sizes
    m = res.meta
    out = [
        TITLE,
        "",
        f"`{m['command']}`, {m['date']}, {m['seconds'] / 60:.0f} min, commit {_commit()}: {machine()}",
        "",
        f"PostgreSQL, a fresh database; two tables of {small:,} and {large:,} rows × 6 columns (ID, GU: 100 uniform "
        "groups, GZ: 100 Zipf groups, F1..F3; bigint and double) uploaded once with `pyqd table load`, plus an index "
        "on ID for dask.dataframe's range queries (pyqd does not use it). Every pyqd call is a synchronous row-apply "
        f"or group-apply over HTTP on loopback to a real `pyqd serve` (`PYQD_WORKERS=2`, `PYQD_WORKERS_PER_USER=2`, "
        f"time limit {CALL_LIMIT_S} s) with `rows={res.chunk:,}`; the answer is streamed and counted, never kept by "
        f'the client. dask.dataframe: `read_sql_table(index_col="ID", npartitions=rows // {res.chunk:,})` + '
        "`map_partitions`, each partition's JSON gathered to the client. Clusters: a `LocalCluster` of 1 or 2 "
        "process workers × 1 thread on loopback, in a helper process (the scheduler is a process apart, as "
        "deployed); a Dask worker hosts one sandboxed pyqd process. **Reading**: the script returns `len(chunk)` "
        "(the data path alone). **Scoring**: a scikit-learn `StandardScaler` + `Ridge` on F1..F3, loaded from a "
        "datastore once per pyqd process (dask.dataframe: from its pickle, once per Dask worker), ID and "
        f"prediction returned for every row as JSON. {res.reps} interleaved rounds (order rotating), median and "
        "min–max; every run's rows are counted. RSS: the API server process alone, sampled at "
        f"{SAMPLE_HZ} Hz during the run (psutil).",
        "",
        f"Load average before / after: {m['load_before']} / {m['load_after']} (2 cores); other work seen at the "
        f"start: {m['others']}. Calls that failed (each made again): "
        + ("; ".join(f"`{f}`" for f in res.failures) if res.failures else "none")
        + ". The API servers' high-water RSS (VmHWM) at the end: "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in res.rss_hwm.items())
        + ".",
        "",
    ]
    header = ["rows", "system", "workers", "median s", "min–max s", "rows/s", "API server peak RSS MiB", "load"]
    for work_kind in ("reading", "scoring"):
        table = []
        for size in res.sizes:
            for r in res.rows[(work_kind, size)].values():
                rss = [x.rss_mib for x in r.runs if x.rss_mib is not None]
                table.append(
                    [
                        f"{size:,}",
                        r.system,
                        r.workers,
                        f"{r.median:.2f}",
                        f"{min(x.seconds for x in r.runs):.2f}–{max(x.seconds for x in r.runs):.2f}",
                        f"{size / r.median:,.0f}",
                        f"{max(rss):.0f}" if rss else "–",
                        f"{max(x.load for x in r.runs):.1f}",
                    ]
                )
        out += [f"### Row-apply, {work_kind}", "", markdown_table(header, table), ""]
    table = []
    for name in res.groups["uniform"]:
        u, z = res.groups["uniform"][name], res.groups["Zipf"][name]
        rss = [x.rss_mib for x in u.runs + z.runs if x.rss_mib is not None]
        table.append(
            [
                u.system,
                u.workers,
                f"{u.median:.2f} ({min(x.seconds for x in u.runs):.2f}–{max(x.seconds for x in u.runs):.2f})",
                f"{z.median:.2f} ({min(x.seconds for x in z.runs):.2f}–{max(x.seconds for x in z.runs):.2f})",
                f"{max(rss):.0f}" if rss else "–",
            ]
        )
    out += [
        f"### Group-apply, 100 groups, {small:,} rows (`LinearRegression` F2, F3 → F1 per group)",
        "",
        "Zipf: group 0 holds about 45 % of the rows, so one unit is nearly half the work.",
        "",
        markdown_table(["system", "workers", "uniform s", "Zipf s", "API server peak RSS MiB"], table),
        "",
        "### Targets",
        "",
        targets(res),
        "",
        "### Where the CPU went (the median run; CPU seconds per process group)",
        "",
        "A process group's CPU is read from `/proc` before and after the run (psutil: a process's own time, plus "
        "the time of children it reaped); PostgreSQL is the benchmark database's backends, sampled "
        f"{SAMPLE_HZ} times a second (a short-lived connection counts up to its last sample). `cores busy` = "
        f"these groups' CPU ÷ wall time; the machine has 2. `{OTHERS}`: the machine's busy CPU time "
        "(`/proc/stat`) less these groups': other work on the machine, and PostgreSQL's shared background "
        "processes (WAL writer, checkpointer).",
        "",
        cpu_table(res),
        "",
        "### What 2 cores can and cannot show",
        "",
        "Every process here shares the same 2 cores: a 2-worker run puts two Dask workers (each with its pyqd "
        "process) beside the API server, PostgreSQL, the Dask scheduler, the benchmark client and any other work "
        "on the machine (`other processes`, and the load average). The local engine's own 2/1 ratio is roughly the "
        "ceiling this machine allows any engine; a 2/1 ratio near 1 with `cores busy` well under 2 means something "
        "in the call runs one step at a time, near 2 busy cores means the machine is full. These numbers cannot "
        "show scaling across machines (more cores, more network, PostgreSQL read bandwidth shared by many "
        "readers), the cost of a real network (everything is on loopback), or the scheduler's task rate at many "
        "workers; `docs/scaling.md` models those.",
        "",
    ]
    if res.profile:
        out += ["### Profile: the Dask engine (2 workers), one scoring call", "", res.profile]
    return "\n".join(out).rstrip("\n") + "\n"


def _ratio_row(what: str, a: Row | None, b: Row | None, goal: str, met: Callable[[float], bool] | None) -> list[str]:
    if a is None or b is None:
        return [what, "–", goal, ""]
    value = a.median / b.median
    return [what, f"{value:.2f}", goal, "" if met is None else ("met" if met(value) else "missed")]


def targets(res: Results) -> str:
    small, large = res.sizes
    rows: list[list[str]] = []
    score, read = res.rows[("scoring", small)], res.rows[("reading", small)]
    for w in (2, 1):
        rows.append(
            _ratio_row(
                f"Dask engine / local, scoring {small:,} rows, time, {_plural(w)} each",
                _pick(score, "Dask engine", w),
                _pick(score, "local", w),
                "≤ 1.2" if w == 2 else "(context)",
                (lambda v: v <= 1.2) if w == 2 else None,
            )
        )
    rows.append(
        _ratio_row(
            f"Dask engine / local, reading {small:,} rows, time, 2 workers each",
            _pick(read, "Dask engine", 2),
            _pick(read, "local", 2),
            "(context)",
            None,
        )
    )
    for work_kind in ("scoring", "reading"):
        for size in res.sizes:
            got = res.rows[(work_kind, size)]
            for w in (1, 2):
                rows.append(
                    _ratio_row(
                        f"Dask engine / dask.dataframe, {work_kind} {size:,} rows, time, {_plural(w)}",
                        _pick(got, "Dask engine", w),
                        _pick(got, "dask.dataframe", w),
                        "< 1 (faster)",
                        lambda v: v < 1,
                    )
                )
    for work_kind in ("reading", "scoring"):
        for size in res.sizes:
            got = res.rows[(work_kind, size)]
            for system in ("Dask engine", "local", "dask.dataframe"):
                is_goal = system == "Dask engine"
                rows.append(
                    _ratio_row(
                        f"{system}, {work_kind} {size:,} rows: throughput 2 workers / 1 worker",
                        _pick(got, system, 1),
                        _pick(got, system, 2),
                        "≥ 1.7" if is_goal else "(context)",
                        (lambda v: v >= 1.7) if is_goal else None,
                    )
                )
    for label, got in res.groups.items():
        rows.append(
            _ratio_row(
                f"Dask engine, group-apply ({label}): throughput 2 workers / 1 worker",
                _pick(got, "Dask engine", 1),
                _pick(got, "Dask engine", 2),
                "(context)",
                None,
            )
        )
    for system, w in (("local", 0), ("Dask engine", 1), ("Dask engine", 2)):
        peaks = []
        for size in res.sizes:
            runs = [
                x.rss_mib
                for work_kind in ("reading", "scoring")
                for r in res.rows[(work_kind, size)].values()
                if r.system == system and w in (0, r.workers)  # the local server serves both; each cluster has its own
                for x in r.runs
                if x.rss_mib is not None
            ]
            peaks.append(max(runs) if runs else 0.0)
        which = "local" if not w else f"Dask engine ({_plural(w)})"
        rows.append(
            [
                f"API server ({which}): peak RSS at {large:,} rows − at {small:,} rows, MiB",
                f"{peaks[1]:.0f} − {peaks[0]:.0f} = {peaks[1] - peaks[0]:+.0f}",
                "flat (≤ 50)",
                "met" if peaks[1] - peaks[0] <= 50 else "missed",
            ]
        )
    return markdown_table(["ratio", "value", "target", ""], rows)


def cpu_table(res: Results) -> str:
    header = ["work", "rows", "system", "workers", "wall s", *GROUPS_CPU, "total", "cores busy", OTHERS]
    table = []
    for (work_kind, size), got in res.rows.items():
        for r in got.values():
            run = r.median_run
            total = sum(run.cpu[g] for g in GROUPS_CPU)
            table.append(
                [
                    work_kind,
                    f"{size:,}",
                    r.system,
                    r.workers,
                    f"{run.seconds:.2f}",
                    *(f"{run.cpu[g]:.1f}" for g in GROUPS_CPU),
                    f"{total:.1f}",
                    f"{total / run.seconds:.2f}",
                    f"{run.cpu[OTHERS]:.1f}",
                ]
            )
    return markdown_table(header, table)


def splice(doc: str, section: str, title: str = TITLE) -> str:
    """`doc` with its section `title` (up to the next `## ` heading) replaced by `section`, or `section` appended."""
    section = section.lstrip("\n")
    head, found, rest = doc.partition(title + "\n")
    if not found:
        return doc.rstrip("\n") + "\n\n" + section
    nxt = rest.find("\n## ")
    return head + section + ("\n" + rest[nxt + 1 :] if nxt >= 0 else "")


def section_of(doc: str, title: str = TITLE) -> str | None:
    """The section `title` of `doc` (up to the next `## ` heading), or None."""
    _, found, rest = doc.partition(title + "\n")
    if not found:
        return None
    nxt = rest.find("\n## ")
    return title + "\n" + (rest[: nxt + 1] if nxt >= 0 else rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="the smaller table; the larger is --scale times")
    parser.add_argument("--scale", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=0, help="rows per row-apply chunk (default: rows // 10)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy the Dask engine's server during one call")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (profiles, model)")
    parser.add_argument("--source", help="run pyqd (servers and Dask workers) from another checkout")
    parser.add_argument("--out", help="write the section into this markdown file (replacing its old one)")
    args = parser.parse_args()
    text = run(args, "python -m bench.scaleout " + " ".join(sys.argv[1:]))
    print(text, flush=True)
    if args.out:
        path = Path(args.out)
        path.write_text(splice(path.read_text() if path.exists() else "", text))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
