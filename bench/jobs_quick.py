"""Numbers for async jobs and admission control: jobs/s for short jobs, status-poll latency, and a burst of
synchronous calls against a small pool. `python -m bench.jobs_quick [--pg]`."""

from __future__ import annotations

import statistics
import sys
import threading
import time

import httpx

from bench.quick import ms
from bench.server import pg_database, running_server


def main(database_url: str | None) -> None:
    settings = {"PYQD_WORKERS": "4", "PYQD_JOB_CONCURRENCY": "4", "PYQD_JOB_HEARTBEAT_S": "1"}
    with running_server(database_url, **settings) as srv:
        headers = srv.add_user("BENCH", "bench-pw-long-password")
        client = httpx.Client(base_url=srv.url, headers=headers, timeout=120)
        client.post("/oml/api/pyqd/v1/scripts", json={"name": "trivial", "script": "def trivial():\n    return 1\n"})
        client.post("/oml/api/py-scripts/v1/do-eval/trivial", json={})  # warm a worker

        n = 200
        t0 = time.perf_counter()
        locations = [
            client.post("/oml/api/py-scripts/v2/do-eval/trivial", json={"asyncFlag": True})
            .headers["location"]
            .split("/api/", 1)[1]
            for _ in range(n)
        ]
        submitted = time.perf_counter() - t0
        pending = set(locations)
        while pending:
            for loc in list(pending):
                if client.get(f"/oml/api/{loc}").status_code == 302:
                    pending.discard(loc)
        total = time.perf_counter() - t0
        print(
            f"{n} short async jobs: submitted at {n / submitted:.0f}/s, all finished in {total:.2f} s "
            f"({n / total:.0f} jobs/s end to end, polling included)"
        )

        poll = []
        for loc in locations[:200]:
            t = time.perf_counter()
            assert client.get(f"/oml/api/{loc}").status_code == 302
            poll.append(time.perf_counter() - t)
        print("status poll (finished job): ", ms(poll))

    burst_settings = {"PYQD_WORKERS": "2", "PYQD_WARM_WORKERS": "2", "PYQD_WORKER_WAIT_S": "1"}
    with running_server(database_url, **burst_settings) as srv:
        headers = srv.add_user("BENCH", "bench-pw-long-password")
        client = httpx.Client(base_url=srv.url, headers=headers, timeout=120)
        src = "def nap():\n    import time\n    time.sleep(0.2)\n    return 1\n"
        client.post("/oml/api/pyqd/v1/scripts", json={"name": "nap", "script": src})
        client.post("/oml/api/py-scripts/v1/do-eval/nap", json={})
        results: list[tuple[int, float]] = []
        lock = threading.Lock()

        def call() -> None:
            t = time.perf_counter()
            r = client.post("/oml/api/py-scripts/v1/do-eval/nap", json={})
            with lock:
                results.append((r.status_code, time.perf_counter() - t))

        threads = [threading.Thread(target=call) for _ in range(32)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        ok = [d for s, d in results if s == 200]
        busy = [d for s, d in results if s == 503]
        other = [s for s, _ in results if s not in (200, 503)]
        print(
            f"burst of 32 calls (0.2 s each) on 2 workers, 1 s wait: {len(ok)} x 200 "
            f"(median {statistics.median(ok):.2f} s), {len(busy)} x 503 "
            f"(median {statistics.median(busy) if busy else 0:.2f} s), other: {other}, wall {wall:.2f} s"
        )


if __name__ == "__main__":
    if "--pg" in sys.argv:
        with pg_database() as url:
            main(url)
    else:
        main(None)
