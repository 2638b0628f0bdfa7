"""One user floods a real `pyqd serve` with heavy input queries (45 at once by default, more than the server's 40
threads) while another user measures how fast `/health` and light calls answer: p50, p99 and max per call.

    python -m bench.heavy_queries [--flood 45] [--seconds 30] [--set PYQD_WORKERS=6 ...]

The heavy query is a recursive CTE that never ends on its own: the database stops it at the call's deadline
(PYQD_SYNC_TIME_LIMIT_S, 20 s here unless set). Nothing sleeps: each flood thread sends calls back to back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from bench.server import running_server

HEAVY_SQL = "with c(x) as (select 1 from dual union all select x + 1 from c) select max(x) from c"
ONE = "def one(*args, **kwargs):\n    return 1\n"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "n": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p99_ms": round(_percentile(times, 0.99) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
    }


def run(flood: int, seconds: float, settings: dict[str, str]) -> dict[str, object]:
    settings = {"PYQD_SYNC_TIME_LIMIT_S": "20", **settings}
    with running_server(**settings) as server:
        heavy, light = server.add_user("HEAVY", "heavy-password-long"), server.add_user("LIGHT", "light-password-long")
        for headers in (heavy, light):
            script = {"name": "one", "script": ONE}
            httpx.post(f"{server.url}/oml/api/pyqd/v1/scripts", headers=headers, json=script).raise_for_status()
        stop = threading.Event()
        answers: Counter[str] = Counter()
        lock = threading.Lock()

        def flood_thread() -> None:
            with httpx.Client(base_url=server.url, headers=heavy, timeout=300) as client:
                while not stop.is_set():
                    r = client.post("/oml/api/py-scripts/v1/table-apply/one", json={"input": HEAVY_SQL})
                    code = r.json().get("errorCode", "ok") if r.status_code != 200 else "ok"
                    with lock:
                        answers[f"{r.status_code}/{code}"] += 1

        threads = [threading.Thread(target=flood_thread, daemon=True) for _ in range(flood)]
        for t in threads:
            t.start()
        calls: dict[str, Callable[[httpx.Client], httpx.Response]] = {
            "health": lambda c: c.get("/health"),
            "scripts list": lambda c: c.get("/oml/api/py-scripts/v1/scripts"),
            "table-apply (1 row)": lambda c: c.post(
                "/oml/api/py-scripts/v1/table-apply/one", json={"input": "select 1 x from dual"}
            ),
            "do-eval": lambda c: c.post("/oml/api/py-scripts/v1/do-eval/one", json={}),
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        failures: Counter[str] = Counter()
        started = time.monotonic()  # measure once the flood fills the user's share (their extra calls get 429)
        while not any(k.startswith("429") for k in answers) and time.monotonic() - started < 120:
            time.sleep(0.05)
        end = time.monotonic() + seconds

        def measure(name: str) -> None:
            # One thread per kind of light call, one call at a time: a slow kind does not hide the others.
            with httpx.Client(base_url=server.url, headers=light, timeout=300) as client:
                while time.monotonic() < end:
                    began = time.monotonic()
                    r = calls[name](client)
                    times[name].append(time.monotonic() - began)
                    if r.status_code != 200:
                        with lock:
                            failures[f"{name}: {r.status_code}"] += 1

        measurers = [threading.Thread(target=measure, args=(name,)) for name in calls]
        for t in measurers:
            t.start()
        for t in measurers:
            t.join()
        stop.set()
        for t in threads:
            t.join(timeout=300)
        return {
            "flood": flood,
            "seconds": seconds,
            "settings": settings,
            "light calls": {name: _summary(ts) for name, ts in times.items()},
            "light failures": dict(failures),
            "heavy answers": dict(answers),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=45)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--set", action="append", default=[], metavar="PYQD_X=V", help="a server setting")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    print(json.dumps(run(args.flood, args.seconds, settings), indent=2))


if __name__ == "__main__":
    main()
