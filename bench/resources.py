"""Memory and cold start: the server's peak RSS during row-apply over 1M and 5M rows (it must not grow with the
table), server start to first answer, and the first call of a script just stored."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import httpx

from bench.data import PASSWORD, USER, Store
from bench.server import running_server
from bench.workloads import Pyqd


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...), 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    import os

    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def peak_rss(
    store: Store, model_path: str, tables: list[tuple[str, int]], chunk_rows: int, log: Callable[[str], None]
) -> list[tuple[int, float, float, float]]:
    """(rows, server peak RSS MiB, largest worker peak RSS MiB, seconds), each in a freshly started server."""
    out = []
    for table, rows in tables:
        with running_server(store.database_url, data_dir=store.data_dir) as srv, Pyqd.open(srv, model_path) as pyqd:
            t = time.perf_counter()
            pyqd.score(table, chunk_rows)
            seconds = time.perf_counter() - t
            server_mb = status_kb(srv.proc.pid, "VmHWM") / 1024
            workers = [status_kb(p, "VmHWM") / 1024 for p in _descendants(srv.proc.pid)]
            out.append((rows, server_mb, max(workers, default=0.0), seconds))
            log(
                f"  {rows:,} rows: server peak RSS {server_mb:.0f} MiB, largest worker {max(workers, default=0):.0f} "
                f"MiB, {seconds:.1f} s"
            )
    return out


def cold_start(store: Store, tries: int, log: Callable[[str], None]) -> dict[str, float]:
    """Median seconds: process start → /health, → /ready (a warm worker), and a just-stored script's first and
    second calls."""
    health, ready, first, second = [], [], [], []
    for i in range(tries):
        t0 = time.perf_counter()
        with running_server(store.database_url, data_dir=store.data_dir, wait_ready=False) as srv:
            health.append(time.perf_counter() - t0)
            while httpx.get(f"{srv.url}/ready").status_code != 200:
                time.sleep(0.01)
            ready.append(time.perf_counter() - t0)
            token = srv.token(USER, PASSWORD)
            with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}) as c:
                name = f"fresh_{i}_{int(time.time() * 1000)}"
                src = f"def {name}():\n    import pandas as pd\n    return pd.DataFrame({{'x': [1, 2]}})\n"
                assert c.post("/oml/api/pyqd/v1/scripts", json={"name": name, "script": src}).status_code == 201
                for bucket in (first, second):
                    t = time.perf_counter()
                    assert c.post(f"/oml/api/py-scripts/v1/do-eval/{name}", json={}).status_code == 200
                    bucket.append(time.perf_counter() - t)
        log(
            f"  start {i + 1}: /health {health[-1]:.2f} s, /ready {ready[-1]:.2f} s, new script first call "
            f"{first[-1] * 1000:.0f} ms, second {second[-1] * 1000:.0f} ms"
        )
    return {
        "health": statistics.median(health),
        "ready": statistics.median(ready),
        "first": statistics.median(first),
        "second": statistics.median(second),
    }
