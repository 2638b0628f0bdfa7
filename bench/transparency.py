"""Transparency layer (issue 12): `python -m bench.transparency [--rows 1000000] [--reps 3] [--profile] [--out FILE]`.

`describe()` and `crosstab()` of a table of `rows` rows through pyqd's lazy proxy (`oml.sync(table=...)`), side by
side in one run with what a notebook user would do without it, on SQLite and on PostgreSQL:

- `pull()` + pandas: the columns needed brought into the notebook, then pandas `describe()` / `groupby().size()`;
- pandas `read_sql` (through SQLAlchemy, and through an ADBC connection), then pandas;
- DuckDB: over an Arrow table read with ADBC (the read timed apart: "incl. read" and "query only"), and, when the
  `duckdb-extensions` wheels of the `sqlite_scanner`/`postgres_scanner` extensions are installed, straight on the
  SQLite file / the PostgreSQL table (the duckdb wheel alone cannot: it downloads those extensions at first use).

Every run is a fresh subprocess (the notebook), so its peak RSS is its own; it reports the operation's wall time,
its RSS before and its high-water mark after (VmHWM, reset just before the operation), the bytes its TCP sockets
received (tcp_info) and the bytes it read from files (`rchar`), the proxy's HTTP requests, and its CPU. The parent
samples the API server's RSS and the CPU of the server and of PostgreSQL's backends. Every result is checked against
pandas on the generated frame. Runs are interleaved (order rotating), after one warm-up round."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server import THREADS_ENV

os.environ.update(THREADS_ENV)  # before numpy is imported

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TITLE = "## Transparency layer (issue 12)"
TABLE = "TRANSP"
#: describe(): the numeric columns (pandas' and Oracle's default); crosstab(): index and columns.
NUMERIC = ["ID", "N1", "N2", "N3", "N4", "I1"]
CROSS = ["S_SMALL", "S_MED"]
STATS = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
OPS = ("describe", "crosstab")
#: Contenders: key -> label, in report order.
CONTENDERS = {
    "pyqd": "pyqd proxy",
    "pull": "`pull()` + pandas",
    "sqlalchemy": "`read_sql` (SQLAlchemy) + pandas",
    "adbc": "`read_sql` (ADBC) + pandas",
    "duckdb_arrow": "DuckDB on an ADBC Arrow read",
    "duckdb_scan": "DuckDB scanner on the file / table",
}
#: The extension that reads each backend from DuckDB.
SCANNERS = {"sqlite": "sqlite_scanner", "postgresql": "postgres_scanner"}
#: Seconds a child may take.
CHILD_LIMIT_S = 900
#: Samples per second of the API server's RSS (bench.scaleout.Meter's rate).
SAMPLE_HZ = 10


def log(line: str) -> None:
    print(line, flush=True)


# --- data ----------------------------------------------------------------------------------------------------------


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """ID; N1..N4 doubles (N2 10 % NULL, N4 30 % NULL); I1 integers 0..999; S_SMALL 5 letters (5 % NULL); S_MED
    200 codes, Zipf-like (C000 most frequent)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"ID": np.arange(rows, dtype=np.int64)})
    df["N1"] = rng.normal(size=rows)
    df["N2"] = np.where(rng.random(rows) < 0.10, np.nan, rng.normal(10.0, 3.0, rows))
    df["N3"] = rng.exponential(2.0, rows)
    df["N4"] = np.where(rng.random(rows) < 0.30, np.nan, rng.uniform(-100.0, 100.0, rows))
    df["I1"] = rng.integers(0, 1000, rows, dtype=np.int64)
    small = np.array(list("ABCDE"), dtype=object)[rng.integers(0, 5, rows)]
    small[rng.random(rows) < 0.05] = None
    df["S_SMALL"] = small
    codes = np.array([f"C{i:03d}" for i in range(200)], dtype=object)
    df["S_MED"] = codes[np.minimum(rng.zipf(1.2, rows) - 1, 199)]
    return df


def reference(df: pd.DataFrame) -> dict[str, Any]:
    """What every contender must answer, from pandas on the generated frame."""
    return {"describe": describe_json(df[NUMERIC].describe()), "crosstab": crosstab_json(_counts(df))}


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per (S_SMALL, S_MED), NULL a category of its own (as in Oracle's crosstab listings)."""
    return df.groupby(CROSS, dropna=False).size().reset_index(name="count")


def describe_json(d: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {str(c): {str(s): float(d.loc[s, c]) for s in d.index} for c in d.columns}


def crosstab_json(d: pd.DataFrame) -> list[list[Any]]:
    """[[index value, column value, count], ...] sorted; `d` has the two key columns then the count (last column)."""
    keys, count = list(d.columns[:2]), d.columns[-1]
    rows = [[_key(a), _key(b), int(n)] for a, b, n in zip(d[keys[0]], d[keys[1]], d[count], strict=True)]
    return sorted(rows, key=lambda r: (str(r[0]), str(r[1])))


def _key(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def check(op: str, got: Any, want: Any) -> str:
    """ "" when `got` matches the reference, else what differs (briefly)."""
    if op == "describe":
        problems = []
        for col in NUMERIC:
            g, w = got.get(col), want[col]
            if g is None:
                problems.append(f"{col} missing")
                continue
            for stat in STATS:
                if stat not in g:
                    problems.append(f"{col}.{stat} missing")
                elif not np.isclose(g[stat], w[stat], rtol=1e-6, atol=1e-9):
                    problems.append(f"{col}.{stat} {g[stat]:.10g} ≠ {w[stat]:.10g}")
        extra = sorted(set(got) - set(NUMERIC))
        if extra:
            problems.append(f"extra columns {extra}")
        return "; ".join(problems[:6]) + (f" (+{len(problems) - 6} more)" if len(problems) > 6 else "")
    g = {(a, b): n for a, b, n in got}
    w = {(a, b): n for a, b, n in want}
    if g == w:
        return ""
    missing, surplus = set(w) - set(g), set(g) - set(w)
    wrong = [k for k in set(g) & set(w) if g[k] != w[k]]
    return (
        f"{len(g)} cells, expected {len(w)}: {len(missing)} missing, {len(surplus)} extra "
        f"(e.g. {sorted(surplus, key=str)[:2]}), {len(wrong)} wrong counts"
    )


# --- the child: one contender, one operation, one fresh process ------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


#: Offset of `tcpi_bytes_received` (u64) in Linux's `struct tcp_info` (linux/tcp.h, kernel >= 4.1).
TCPI_BYTES_RECEIVED = 128


def _tcp_received() -> int:
    """Bytes this process's open TCP sockets have received (payload, HTTP headers included): `tcpi_bytes_received`
    of each socket. recv() does not count in rchar, so this is how the wire is measured."""
    import socket
    import struct

    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            if len(info) >= TCPI_BYTES_RECEIVED + 8:
                total += struct.unpack_from("Q", info, TCPI_BYTES_RECEIVED)[0]
        except OSError:
            pass  # not TCP
        finally:
            s.close()
    return total


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def duckdb_describe_sql(relation: str) -> str:
    """pandas' describe() in DuckDB SQL: count, mean, std (n-1), min, max, and the linear quartiles (one sort per
    column: `quantile_cont` with a list)."""
    parts = []
    for c in NUMERIC:
        q = _quote(c)
        for stat, expr in (
            ("count", f"count({q})"),
            ("mean", f"avg({q})"),
            ("std", f"stddev_samp({q})"),
            ("min", f"min({q})"),
            ("max", f"max({q})"),
        ):
            parts.append(f'CAST({expr} AS DOUBLE) AS "{c}|{stat}"')
        parts.append(f'quantile_cont({q}, [0.25, 0.5, 0.75]) AS "{c}|quartiles"')
    return f"SELECT {', '.join(parts)} FROM {relation}"


def duckdb_crosstab_sql(relation: str) -> str:
    a, b = map(_quote, CROSS)
    return f"SELECT {a}, {b}, count(*) AS n FROM {relation} GROUP BY 1, 2"


def _duckdb_result(op: str, rel: Any) -> Any:
    if op == "describe":
        row = rel.fetchall()[0]
        out: dict[str, dict[str, float]] = {}
        for name, value in zip(rel.columns, row, strict=True):
            col, stat = name.split("|")
            if stat == "quartiles":
                out.setdefault(col, {}).update({k: float(v) for k, v in zip(("25%", "50%", "75%"), value, strict=True)})
            else:
                out.setdefault(col, {})[stat] = float(value)
        return out
    return crosstab_json(rel.df())


def _pandas_op(op: str, df: pd.DataFrame) -> Any:
    if op == "describe":
        return describe_json(df.describe())
    return crosstab_json(_counts(df))


@dataclass
class Prepared:
    """A contender ready to run: `work()` does the timed operation and returns its result (JSON-able)."""

    work: Callable[[], Any]
    extra: dict[str, Any] = field(default_factory=dict)  # per-run details the work fills in (split times, ...)


def _select(spec: dict[str, Any], columns: list[str]) -> str:
    table = (f"{_quote(spec['schema'])}." if spec.get("schema") else "") + _quote(TABLE)
    return f"SELECT {', '.join(map(_quote, columns))} FROM {table}"


def _adbc(spec: dict[str, Any]) -> Any:
    """An autocommit ADBC connection to the benchmark database (as bench.baselines makes them)."""
    if spec["backend"] == "sqlite":
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        return adbc_sqlite.connect(spec["sqlite_path"], autocommit=True)
    import adbc_driver_postgresql.dbapi as adbc_pg

    return adbc_pg.connect(spec["sa_url"].replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _prepare(spec: dict[str, Any]) -> Prepared:
    """Imports, connections and one tiny query done before the measurement (a notebook has them already)."""
    op, key = spec["op"], spec["contender"]
    columns = NUMERIC if op == "describe" else CROSS
    if key in ("pyqd", "pull"):
        return _prepare_proxy(spec, op, key, columns)
    sql = _select(spec, columns)
    if key == "sqlalchemy":
        import sqlalchemy as sa

        engine = sa.create_engine(spec["sa_url"])
        conn = engine.connect()
        pd.read_sql(sa.text(sql + " LIMIT 1"), conn)
        return Prepared(lambda: _pandas_op(op, pd.read_sql(sa.text(sql), conn)))
    if key == "adbc":
        adbc = _adbc(spec)
        pd.read_sql(sql + " LIMIT 1", adbc)
        return Prepared(lambda: _pandas_op(op, pd.read_sql(sql, adbc)))
    import duckdb

    duck = duckdb.connect(config={"autoinstall_known_extensions": False})
    if key == "duckdb_arrow":
        return _prepare_duckdb_arrow(spec, op, sql, duck)
    assert key == "duckdb_scan"
    duck.execute(f"LOAD {SCANNERS[spec['backend']]}")
    if spec["backend"] == "sqlite":
        duck.execute(f"ATTACH '{spec['sqlite_path']}' AS src (TYPE sqlite, READ_ONLY)")
        relation = f"src.{_quote(TABLE)}"
    else:
        duck.execute(f"ATTACH '{spec['pg_dsn']}' AS src (TYPE postgres, READ_ONLY)")
        relation = f"src.{_quote(spec['schema'])}.{_quote(TABLE)}"
    duck.sql(f"SELECT * FROM {relation} LIMIT 1").fetchall()
    sql_d = duckdb_describe_sql(relation) if op == "describe" else duckdb_crosstab_sql(relation)
    return Prepared(lambda: _duckdb_result(op, duck.sql(sql_d)))


def _prepare_proxy(spec: dict[str, Any], op: str, key: str, columns: list[str]) -> Prepared:
    """The pyqd proxy itself, or its `pull()` then pandas; every HTTP request it sends is recorded."""
    import httpx

    import oml

    sent: list[httpx.Response] = []
    original = httpx.Client.send

    def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        t = time.perf_counter()
        r = original(self, request, **kw)
        r.extensions["bench_seconds"] = time.perf_counter() - t
        sent.append(r)
        return r

    httpx.Client.send = send  # type: ignore[method-assign]
    oml.connect(url=spec["url"], username=spec["user"], password=spec["password"])
    proxy = oml.sync(table=TABLE)
    assert isinstance(proxy, oml.DataFrame)
    proxy[columns].head(1)  # the first query (imports of the Arrow reader, a warm connection)
    with contextlib.suppress(ImportError):
        import oml.core  # noqa: F401 - the stats helpers, imported before the measurement
    extra: dict[str, Any] = {}

    def work() -> Any:
        sent.clear()
        if key == "pyqd":
            result = proxy.describe() if op == "describe" else proxy.crosstab(CROSS[0], CROSS[1]).pull()
            out = describe_json(result) if op == "describe" else crosstab_json(result)
        else:
            out = _pandas_op(op, proxy[columns].pull())
        extra["http_requests"] = len(sent)
        extra["http_bytes_in"] = sum(r.num_bytes_downloaded for r in sent)
        extra["http_bytes_out"] = sum(len(r.request.content) for r in sent)
        extra["http_seconds"] = sum(r.extensions["bench_seconds"] for r in sent)
        extra["requests"] = [
            [r.request.url.path.rsplit("/", 1)[-1], round(r.extensions["bench_seconds"], 4), r.num_bytes_downloaded]
            for r in sent
        ]
        extra["sql"] = [json.loads(r.request.content)["query"] for r in sent if r.request.url.path.endswith("/query")]
        return out

    return Prepared(work, extra)


def _prepare_duckdb_arrow(spec: dict[str, Any], op: str, sql: str, duck: Any) -> Prepared:
    """ADBC reads the columns into an Arrow table, DuckDB queries it; the two parts are timed apart."""
    adbc = _adbc(spec)
    with adbc.cursor() as cur:
        cur.execute(sql + " LIMIT 1")
        cur.fetch_arrow_table()
    extra: dict[str, Any] = {}

    def work() -> Any:
        t = time.perf_counter()
        with adbc.cursor() as cur:
            cur.execute(sql)
            arrow = cur.fetch_arrow_table()
        t_read = time.perf_counter()
        duck.register("t", arrow)
        out = _duckdb_result(op, duck.sql(duckdb_describe_sql("t") if op == "describe" else duckdb_crosstab_sql("t")))
        extra["read_seconds"] = t_read - t
        extra["query_seconds"] = time.perf_counter() - t_read
        extra["arrow_bytes"] = arrow.nbytes
        duck.unregister("t")
        return out

    return Prepared(work, extra)


def _pyspy_self(path: str) -> subprocess.Popen[bytes]:
    """py-spy recording this process (threads not idle, 100 Hz) into `path`, attached when this returns."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [pyspy, "record", "-o", path, "--format", "raw", "--pid", str(os.getpid()), "--rate", "100"]
    proc = subprocess.Popen([*argv, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)  # attached
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one operation in this (fresh) process and measure it (and py-spy it, given `pyspy`: a file)."""
    prepared = _prepare(spec)
    recorder = _pyspy_self(spec["pyspy"]) if spec.get("pyspy") else None
    gc.collect()
    rss_before = _status_kb("VmRSS")
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS: the peak below is the operation's own
    rchar, tcp, cpu = _rchar(), _tcp_received(), _cpu_self()
    t = time.perf_counter()
    result = prepared.work()
    seconds = time.perf_counter() - t
    out = {
        "seconds": seconds,
        "cpu": _cpu_self() - cpu,
        "rchar": _rchar() - rchar,
        "tcp_in": _tcp_received() - tcp,
        "rss_before_kb": rss_before,
        "hwm_kb": _status_kb("VmHWM"),
        "result": result,
        **prepared.extra,
    }
    if recorder is not None:
        _stop(recorder)
    return out


# --- the parent: servers, runs, measures ----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    load: float
    out: dict[str, Any]
    server_cpu: float
    pg_cpu: float
    server_rss_mib: float | None


@dataclass
class Row:
    backend: str
    op: str
    contender: str
    runs: list[Run] = field(default_factory=list)
    mismatch: str = ""
    error: str = ""

    def median(self, pick: Callable[[Run], float] = lambda r: r.seconds) -> float:
        return statistics.median(pick(r) for r in self.runs)

    def spread(self, pick: Callable[[Run], float] = lambda r: r.seconds) -> str:
        values = [pick(r) for r in self.runs]
        return f"{min(values):.2f}–{max(values):.2f}"


@dataclass
class Target:
    """One backend's server and table, as the children address them."""

    backend: str
    url: str
    server_pid: int
    sa_url: str
    schema: str | None
    sqlite_path: str | None
    pg_dsn: str | None
    database: str


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    code = f"import json, sys; from bench.transparency import child; print(json.dumps(child({spec!r})))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=CHILD_LIMIT_S,
        env={**os.environ, **THREADS_ENV},
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spec(t: Target, op: str, contender: str, rows: int) -> dict[str, Any]:
    from bench.data import PASSWORD, USER

    return {
        "op": op,
        "contender": contender,
        "backend": t.backend,
        "rows": rows,
        "url": t.url,
        "user": USER,
        "password": PASSWORD,
        "sa_url": t.sa_url,
        "schema": t.schema,
        "sqlite_path": t.sqlite_path,
        "pg_dsn": t.pg_dsn,
    }


def measure_op(
    t: Target, op: str, contenders: list[str], rows: int, reps: int, want: Any, log: Callable[[str], None]
) -> dict[str, Row]:
    """A warm-up round, then `reps` rounds in a rotating order; a contender that fails is reported, not retried."""
    from bench.scaleout import Meter, Processes

    out = {c: Row(t.backend, op, c) for c in contenders}
    procs = Processes([t.server_pid], [], t.database)

    def once(c: str, keep: bool) -> None:
        row = out[c]
        if row.error:
            return
        load = os.getloadavg()[0]
        try:
            with Meter(procs, t.server_pid) as meter:
                got = run_child(_spec(t, op, c, rows))
        except Exception as e:  # noqa: BLE001 - reported in the section
            row.error = str(e)[:300]
            log(f"  {t.backend} {op} {c}: FAILED {row.error}")
            return
        mismatch = check(op, got.pop("result"), want)
        if mismatch and not row.mismatch:
            row.mismatch = mismatch
            log(f"  {t.backend} {op} {c}: WRONG ANSWER {mismatch}")
        if keep:
            server = meter.cpu.get("API server", 0.0) + meter.cpu.get("local pyqd workers", 0.0)
            row.runs.append(Run(got["seconds"], load, got, server, meter.cpu.get("PostgreSQL", 0.0), meter.rss_peak))

    for c in contenders:
        once(c, keep=False)
    for r in range(reps):
        for c in contenders[r % len(contenders) :] + contenders[: r % len(contenders)]:
            once(c, keep=True)
        log(
            f"  {t.backend} {op} round {r + 1}/{reps}: "
            + ", ".join(f"{c} {out[c].runs[-1].seconds:.2f}s" for c in contenders if out[c].runs)
        )
    return out


def scanner_available(backend: str) -> str:
    """ "" if DuckDB can load `backend`'s scanner without downloading it, else why not."""
    try:
        import duckdb
    except ImportError:
        return "duckdb is not installed"
    name = SCANNERS[backend]
    duck = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        duck.execute(f"LOAD {name}")
        return ""
    except duckdb.Error:
        pass
    try:
        from duckdb_extensions import import_extension  # type: ignore[import-not-found]

        import_extension(name, con=duck)  # INSTALL from the wheel's file into ~/.duckdb (no network)
        duck.execute(f"LOAD {name}")  # LOAD checks DuckDB's signature of the binary
        return ""
    except (ImportError, ModuleNotFoundError):
        return f"no local `{name}` (the duckdb wheel downloads it from DuckDB's site at first use)"
    except Exception as e:  # noqa: BLE001 - a version mismatch, a bad signature: reported
        return f"`{name}` from `duckdb-extensions` failed to load: {str(e)[:200]}"


# --- setting up -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def target(backend: str, df: pd.DataFrame, work: Path, source: str | None) -> Iterator[Target]:
    """A store (SQLite in `work`, or a fresh PostgreSQL database), BENCH with the table, and a `pyqd serve`."""
    from bench import baselines as bl
    from bench.data import PASSWORD, USER, Store
    from bench.server import pg_database, running_server

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database()) if backend == "postgresql" else None
        data_dir = work / backend
        data_dir.mkdir()
        store = Store(str(data_dir), url)
        os.environ["PYQD_ADMIN_PASSWORD"] = "bench-admin-" + secrets.token_hex(4)
        env = {**os.environ, "PYQD_DATA_DIR": str(data_dir), **({"PYQD_DATABASE_URL": url} if url else {})}
        subprocess.run(
            [sys.executable, "-c", "from server.cli import main; main()", "user", "add", USER, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        t = time.perf_counter()
        src = store.load(TABLE, df)
        if url:
            import psycopg

            dsn = url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"ANALYZE {_quote(USER)}.{_quote(TABLE)}")
        log(f"  {backend}: loaded {len(df):,} rows ({time.perf_counter() - t:.1f} s)")
        stack.callback(bl.dispose)
        settings = {"PYQD_SYNC_TIME_LIMIT_S": "3600", "PYQD_QUERY_TIME_LIMIT_S": "3600"}
        srv = stack.enter_context(running_server(url, str(data_dir), True, source, **settings))
        pg_dsn = database = None
        if url:
            from sqlalchemy import make_url

            u = make_url(url)
            pg_dsn = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
            database = u.database
        sqlite_path = None if url else src.url.removeprefix("sqlite:///")
        yield Target(backend, srv.url, srv.proc.pid, src.url, src.schema, sqlite_path, pg_dsn, database or "<sqlite>")


# --- profiling ------------------------------------------------------------------------------------------------------


def profile(t: Target, op: str, rows: int, work: Path, contender: str = "pyqd") -> str:
    """py-spy (threads not idle, 100 Hz) on the API server during one notebook process (its connect, sync and 1-row
    query, then the call) and on the notebook during the call alone; the shares per function
    (bench.scoring.summarize), and the proxy's HTTP requests with their times."""
    from bench.scoring import summarize

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    server_raw, client_raw = work / f"server-{t.backend}-{op}.txt", work / f"client-{t.backend}-{op}.txt"
    rec = subprocess.Popen(
        [pyspy, "record", "-o", str(server_raw), "--format", "raw", "--pid", str(t.server_pid), "--rate", "100"]
        + ["--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2.0)  # attached
    from bench.scaleout import Meter, Processes

    try:
        with Meter(Processes([t.server_pid], [], t.database), t.server_pid) as meter:
            got = run_child({**_spec(t, op, contender, rows), "pyspy": str(client_raw)})
    finally:
        _stop(rec)
    server_cpu = meter.cpu.get("API server", 0.0) + meter.cpu.get("local pyqd workers", 0.0)
    out = [
        f"#### {t.backend}, `{op}`: {got['seconds']:.2f} s in the notebook, {got['http_requests']} HTTP request(s) "
        f"({got['http_seconds']:.2f} s waiting on them); CPU during the notebook's life: API server "
        f"{server_cpu:.1f} s" + (f", PostgreSQL {meter.cpu.get('PostgreSQL', 0.0):.1f} s" if t.pg_dsn else ""),
        "",
        "Requests (last path segment, seconds, bytes received): "
        + ", ".join(f"`{p}` {s:.2f} s {_bytes(b)}" for p, s, b in got.get("requests", [])),
        "",
    ]
    for sql in got.get("sql", []):
        shown = sql if len(sql) <= 700 else sql[:700] + f" … ({len(sql):,} characters)"
        out += ["The query the proxy sent (Oracle dialect, before the gate's rewrite):", "", "```sql", shown, "```", ""]
        if t.pg_dsn:
            out += ["`EXPLAIN (ANALYZE, BUFFERS)` of it on PostgreSQL (sqlglot's PostgreSQL form; nodes, sorts):"]
            out += ["", "```", explain(t, sql), "```", ""]
    for label, path in (("API server", server_raw), ("notebook", client_raw)):
        text = path.read_text() if path.exists() else ""
        summary = summarize(text, top=10) if text else "no samples"
        summary = summary.replace("(GIL holders)", "(threads not idle)")
        summary = re.sub(r"^server, ", f"{label}, ", summary, flags=re.M).replace("): server ", f"): {label} ")
        out += [f"{label}:", "", "```", summary, "```", ""]
    return "\n".join(out)


def explain(t: Target, sql: str, keep: int = 30) -> str:
    """The plan's nodes with their actual times and sort methods, then JIT and execution time."""
    import psycopg
    import sqlglot

    pg_sql = sqlglot.transpile(sql, read="oracle", write="postgres")[0]
    dsn = t.sa_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            lines = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + pg_sql).fetchall()]  # type: ignore[call-overload]
    except psycopg.Error as e:
        return f"EXPLAIN failed: {str(e)[:300]}"
    nodes = [line for i, line in enumerate(lines) if i == 0 or any(w in line for w in ("->", "Sort Method"))]
    tail = [line for line in lines if line.lstrip().startswith(("JIT", "Timing", "Execution Time"))]
    return "\n".join(nodes[:keep] + (["…"] if len(nodes) > keep else []) + tail)


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Results:
    rows: int
    reps: int
    table: dict[tuple[str, str], dict[str, Row]] = field(default_factory=dict)  # (backend, op) -> contender -> row
    notes: dict[str, str] = field(default_factory=dict)  # backend -> why a contender was left out
    profile: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace, command: str) -> str:
    started = time.perf_counter()
    res = Results(args.rows, args.reps)
    res.meta = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "others": _other_work(),
    }
    df = frame(args.rows)
    want = reference(df)
    work = Path(tempfile.mkdtemp(prefix="pyqd-bench-transparency-"))
    try:
        for backend in args.backends.split(","):
            log(f"== {backend}")
            contenders = [c for c in CONTENDERS if c != "duckdb_scan"]
            why = scanner_available(backend)
            if why:
                res.notes[backend] = why
            else:
                contenders.append("duckdb_scan")
            with target(backend, df, work, args.source) as t:
                for op in OPS:
                    res.table[(backend, op)] = measure_op(t, op, contenders, args.rows, args.reps, want[op], log)
                if args.profile:
                    for op in OPS:
                        rows = res.table[(backend, op)]
                        if rows["pyqd"].runs and rows["pull"].runs and rows["pyqd"].median() > rows["pull"].median():
                            log(f"-- profile {backend} {op}")
                            res.profile += profile(t, op, args.rows, work) + "\n"
    finally:
        res.meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        res.meta["seconds"] = time.perf_counter() - started
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return render(res)


def _other_work() -> str:
    from bench.scaleout import _other_work as other

    return other()


# --- the report -----------------------------------------------------------------------------------------------------


def _mib(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def _bytes(b: float) -> str:
    """Decimal units, so that 7 kB does not read as 0.0 MB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:,.1f} {unit}"
    return f"{b:,.0f} B"


def _versions() -> str:
    from importlib import metadata

    out = []
    for pkg in ("duckdb", "duckdb-extensions", "sqlalchemy", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{pkg} {metadata.version(pkg)}")
    return ", ".join(out)


def _part(name: str) -> Callable[[Run], float]:
    """A run's split time `name` (read_seconds, query_seconds)."""

    def pick(r: Run) -> float:
        return float(r.out[name])

    return pick


def time_table(rows: dict[str, Row]) -> str:
    from bench.harness import markdown_table

    base = rows.get("pyqd")
    pyqd_median = base.median() if base and base.runs else None
    table = []
    for key, row in rows.items():
        label = CONTENDERS[key]
        if row.error or not row.runs:
            table.append([label, "failed", "", "", "", row.error or "no run"])
            continue
        ratio = f"{pyqd_median / row.median():.2f}" if pyqd_median else "–"
        answer = "as pandas" if not row.mismatch else f"**differs**: {row.mismatch}"
        table.append(
            [label, f"{row.median():.2f}", row.spread(), ratio, f"{max(r.load for r in row.runs):.1f}", answer]
        )
        if key == "duckdb_arrow":
            for part, name in (("read_seconds", "  ↳ ADBC read to Arrow"), ("query_seconds", "  ↳ DuckDB query only")):
                pick = _part(part)
                ratio = f"{pyqd_median / row.median(pick):.2f}" if pyqd_median else "–"
                table.append([name, f"{row.median(pick):.2f}", row.spread(pick), ratio, "", ""])
    return markdown_table(["contender", "median s", "min–max s", "pyqd / this", "load", "answer"], table)


def resource_table(rows: dict[str, Row]) -> str:
    from bench.harness import markdown_table

    table = []
    for key, row in rows.items():
        if not row.runs:
            continue
        run = sorted(row.runs, key=lambda r: r.seconds)[len(row.runs) // 2]  # the median run
        o = run.out
        growth = max(o["hwm_kb"] - o["rss_before_kb"] for o in (r.out for r in row.runs))
        http = f"{_bytes(o['http_bytes_in'])} ({o['http_requests']})" if "http_bytes_in" in o else "–"
        uses_server = key in ("pyqd", "pull")
        table.append(
            [
                CONTENDERS[key],
                _mib(o["rss_before_kb"]),
                _mib(max(r.out["hwm_kb"] for r in row.runs)),
                f"{growth / 1024:,.0f}",
                _bytes(o["tcp_in"]),
                http,
                _bytes(o["rchar"]),
                f"{run.server_rss_mib:,.0f}" if run.server_rss_mib and uses_server else "–",
                f"{o['cpu']:.2f}",
                f"{run.server_cpu:.2f}" if uses_server else "–",
                f"{run.pg_cpu:.2f}",
            ]
        )
    header = [
        "contender",
        "notebook RSS before MiB",
        "peak MiB",
        "growth MiB (max)",
        "TCP in",
        "of which HTTP bodies (requests)",
        "files read",
        "API server peak RSS MiB",
        "CPU s notebook",
        "API server",
        "PostgreSQL",
    ]
    return markdown_table(header, table)


def summary_table(res: Results) -> str:
    """One line per backend and operation: the proxy against pull() + pandas and against the fastest contender."""
    from bench.harness import markdown_table

    table = []
    for (backend, op), rows in res.table.items():
        p, pull = rows.get("pyqd"), rows.get("pull")
        if not p or not p.runs or not pull or not pull.runs:
            continue
        others = [(r.median(), CONTENDERS[k]) for k, r in rows.items() if k != "pyqd" and r.runs]
        best_s, best = min(others)
        mid = sorted(p.runs, key=lambda r: r.seconds)[len(p.runs) // 2]
        mid_pull = sorted(pull.runs, key=lambda r: r.seconds)[len(pull.runs) // 2]

        def growth(row: Row) -> str:
            return f"{max(r.out['hwm_kb'] - r.out['rss_before_kb'] for r in row.runs) / 1024:,.0f}"

        table.append(
            [
                backend,
                f"`{op}`",
                f"{p.median():.2f}",
                f"{pull.median():.2f}",
                f"{p.median() / pull.median():.2f}",
                f"{best} {best_s:.2f}",
                f"{p.median() / best_s:.2f}",
                f"{growth(p)} / {growth(pull)}",
                f"{_bytes(mid.out['tcp_in'])} / {_bytes(mid_pull.out['tcp_in'])}",
                f"{mid.server_cpu + mid.pg_cpu:.1f}",
            ]
        )
    header = [
        "backend",
        "operation",
        "pyqd s",
        "`pull()` + pandas s",
        "pyqd / pull",
        "fastest other (s)",
        "pyqd / fastest",
        "notebook RSS growth MiB, pyqd / pull",
        "TCP in, pyqd / pull",
        "pyqd: server + database CPU s",
    ]
    return markdown_table(header, table)


def _busy(res: Results) -> str:
    loads = [r.load for rows in res.table.values() for row in rows.values() for r in row.runs]
    if not loads or max(loads) <= 2.5:
        return ""
    return (
        f" **The machine was busy** (other sessions' test suites on the same 2 cores): the 1-minute load average was "
        f"{min(loads):.1f}–{max(loads):.1f} during the runs, so wall times are longer than on an idle machine; the "
        "interleaving spreads that over every contender, and the CPU seconds below are the steadier measure."
    )


def render(res: Results) -> str:
    from bench.harness import machine
    from bench.scaleout import _commit

    m = res.meta
    out = [
        TITLE,
        "",
        f"`{m['command']}`, {m['date']}, {m['seconds'] / 60:.0f} min, commit {_commit()}: {machine()} {_versions()}.",
        "",
        f"One table `{TABLE}` of {res.rows:,} rows uploaded with `pyqd table load` into BENCH's schema: ID (bigint), "
        "N1..N4 (double; N2 10 % NULL, N4 30 % NULL), I1 (bigint 0..999), S_SMALL (5 letters, 5 % NULL), S_MED "
        "(200 codes, Zipf-like); on PostgreSQL a fresh database (ANALYZEd), on SQLite the store's schema file. "
        f"`describe` = the 6 numeric columns' count, mean, std, min, quartiles, max; `crosstab` = counts of "
        f"(S_SMALL, S_MED), about 1,000 cells. **pyqd proxy**: `oml.sync(table='{TABLE}').describe()` and "
        f".crosstab('S_SMALL', 'S_MED').pull()` over HTTP on loopback to a real `pyqd serve`. **`pull()` + "
        "pandas**: `proxy[cols].pull()` of the columns the operation needs, then `DataFrame.describe()` or "
        "`groupby([...], dropna=False).size()` (pandas' fastest crosstab; `pd.crosstab` is slower; NULL is a category "
        "of its own, as in Oracle's crosstab listings and pyqd's). **`read_sql`**: "
        "`pandas.read_sql` of the same columns through SQLAlchemy or an ADBC connection (bench.baselines), then "
        "pandas. **DuckDB on an ADBC Arrow read**: the columns read into an Arrow table by ADBC (timed apart), then "
        "one DuckDB query (`quantile_cont`, `stddev_samp`, ...; `GROUP BY`); DuckDB uses its own threads (2 here), "
        "everything else is pinned to one. **DuckDB scanner**: DuckDB's `sqlite_scanner` / `postgres_scanner` "
        "reading the SQLite file / the PostgreSQL table itself; the duckdb wheel alone cannot (it downloads them at "
        "first use, and this machine reaches no site but the package registries), so these rows run only with "
        "the third-party `duckdb-extensions` wheels of DuckDB's own extension binaries (DuckDB checks their "
        "signature at `LOAD`)."
        + (" Left out here: " + "; ".join(f"{b}: {why}" for b, why in res.notes.items()) + "." if res.notes else ""),
        "",
        f"Each run is a fresh Python process (the notebook): imports, connections and one 1-row query first, then "
        f"the timed operation. {res.reps} interleaved rounds after a warm-up round (order rotating), median and "
        "min–max; `pyqd / this` < 1 means the proxy is faster. Every answer is checked against pandas on the "
        "generated frame (`answer`).",
        "",
        f"Load average before / after: {m['load_before']} / {m['load_after']} (2 cores); other work seen at the "
        f"start: {m['others']}." + _busy(res),
        "",
        "### Summary",
        "",
        summary_table(res),
        "",
    ]
    for backend in dict.fromkeys(b for b, _ in res.table):
        out += [f"### {backend}", ""]
        for op in OPS:
            rows = res.table.get((backend, op))
            if rows:
                out += [f"#### `{op}`", "", time_table(rows), "", resource_table(rows), ""]
    out += [
        "### Reading the resource tables",
        "",
        "The median run's numbers, from the notebook process itself: its RSS once ready, its high-water RSS (VmHWM, "
        "reset just before the operation) and the largest growth over the runs. `TCP in`: what the notebook's TCP "
        "sockets received during the operation (`tcpi_bytes_received`: the proxy's HTTP responses with headers, "
        "PostgreSQL's wire protocol); `HTTP bodies` counts the proxy's response bodies as received; `files read`: "
        "`rchar` of /proc/self/io, bytes read() from files (SQLite's pages, from the page cache). The API "
        f"server's RSS is sampled at {SAMPLE_HZ} Hz; CPU seconds of the API server (SQLite runs in it) and of the "
        "benchmark database's PostgreSQL backends come from /proc (bench.scaleout.Meter).",
        "",
    ]
    if res.profile:
        out += ["### Where the proxy's time goes (py-spy, one call)", "", res.profile]
    return "\n".join(out).rstrip("\n") + "\n"


def splice(doc: str, section: str) -> str:
    from bench.scaleout import splice as splice_in

    return splice_in(doc, section, TITLE)


def section_of(doc: str) -> str | None:
    from bench.scaleout import section_of as of

    return of(doc, TITLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--profile", action="store_true", help="py-spy a proxy call that is slower than pull()")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (profiles)")
    parser.add_argument("--source", help="run the pyqd server from another checkout")
    parser.add_argument("--out", help="write the section into this markdown file (replacing its old one)")
    args = parser.parse_args()
    text = run(args, "python -m bench.transparency " + " ".join(sys.argv[1:]))
    print(text, flush=True)
    if args.out:
        path = Path(args.out)
        path.write_text(splice(path.read_text() if path.exists() else "", text))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
