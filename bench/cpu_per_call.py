"""CPU per small call: `python -m bench.cpu_per_call [--seconds 5] [--only trivial,seed,one] [--hold]`.

Starts `pyqd serve` (SQLite), puts the small-call scripts in place (as `bench.small` does), and for each call
runs wrk at concurrency 1 and 8 while reading the CPU time of the server process and of its descendants (the
worker template and the workers) from /proc. On a machine shared with other work, wall-clock numbers are
noisy; CPU per request is not (much). With `--hold` it prints the pids and waits, for py-spy."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import tempfile
import threading
import time

from bench.server import THREADS_ENV

os.environ.update(THREADS_ENV)

from bench.loadgen import run_load  # noqa: E402
from bench.server import running_server  # noqa: E402
from bench.small import ONE_RECORD, PREDICT_ONE, REGR_PREDICT, SEED_BODY, TRIVIAL  # noqa: E402


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _threads(pid: int) -> dict[int, int]:
    """Nanoseconds each live thread of a process has run (the scheduler's exact count, not clock ticks, which
    charge whole ticks to whoever runs when one strikes: far off for processes that wake for a few µs)."""
    out: dict[int, int] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except OSError:
            continue
    return out


class CpuMeter:
    """CPU seconds of a process and of its descendants while the meter runs: every thread is read every
    `interval` seconds, so threads that start and end meanwhile (thread pools, replaced workers) count too."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root, self.interval = root, interval
        self._last: dict[tuple[int, int], int] = {}
        self.own = self.kids = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _descendants(self) -> set[int]:
        parents = {int(n): _ppid(int(n)) for n in os.listdir("/proc") if n.isdigit()}
        found, frontier = set(), {self.root}
        while frontier:
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
            found |= frontier
        return found

    def _sample(self, first: bool = False) -> None:
        for pid in {self.root, *self._descendants()}:
            for tid, ns in _threads(pid).items():
                before = self._last.get((pid, tid), None if first else 0)
                self._last[(pid, tid)] = ns
                if before is not None and ns > before:
                    if pid == self.root:
                        self.own += (ns - before) / 1e9
                    else:
                        self.kids += (ns - before) / 1e9

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def setup(url: str, headers_for: object, iris_model: str) -> dict[str, tuple[str, bytes]]:
    from sklearn.linear_model import LinearRegression

    import oml
    from bench.data import fit_model, frame
    from tests.data import iris_frame

    oml.connect(url=url, username="BENCH", password="bench-password-long")
    iris = iris_frame()
    oml.create(iris, table="IRIS")
    regr = LinearRegression().fit(iris[["SEPAL_LENGTH", "SEPAL_WIDTH", "PETAL_LENGTH"]], iris["PETAL_WIDTH"])
    oml.ds.save(objs={"regr": regr}, name="ds_regr", overwrite=True)
    with tempfile.TemporaryDirectory() as d:
        fit_model(frame(10_000), os.path.join(d, "m.pkl"))
        with open(os.path.join(d, "m.pkl"), "rb") as f:
            oml.ds.save(objs={"model": pickle.load(f)}, name="ds_bench", overwrite=True)  # noqa: S301
    oml.script.create("trivial", func=TRIVIAL, overwrite=True)
    oml.script.create("regr_predict", func=REGR_PREDICT, overwrite=True)
    oml.script.create("predict_one", func=PREDICT_ONE, overwrite=True)
    base = f"{url}/oml/api/py-scripts/v1"
    one = json.dumps({"parameters": json.dumps({"features": ONE_RECORD})}).encode()
    return {
        "trivial": (f"{base}/do-eval/trivial", b"{}"),
        "seed": (f"{base}/row-apply/regr_predict", json.dumps(SEED_BODY).encode()),
        "one": (f"{base}/do-eval/predict_one", one),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", default="trivial,seed,one")
    parser.add_argument("--conc", default="1,8")
    parser.add_argument("--hold", action="store_true", help="print the pids and wait (for py-spy)")
    parser.add_argument("--source", help="another pyqd checkout to run")
    args = parser.parse_args()
    with running_server(source=args.source) as srv:
        headers = srv.add_user("BENCH", "bench-password-long")
        calls = setup(srv.url, headers, "")
        for name in args.only.split(","):
            url, body = calls[name]
            run_load(url, body, headers, concurrency=1, duration_s=1.0)  # warm
        if args.hold:
            print(
                json.dumps({"server": srv.proc.pid, "headers": headers, "calls": {k: v[0] for k, v in calls.items()}})
            )
            print("holding; Ctrl-C (or SIGTERM) to stop", flush=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return
        for name in args.only.split(","):
            url, body = calls[name]
            for c in (int(x) for x in args.conc.split(",")):
                with CpuMeter(srv.proc.pid) as meter:
                    res = run_load(url, body, headers, concurrency=c, duration_s=args.seconds)
                n = max(1, res["requests"])
                print(
                    f"{name:8} c={c}: p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, {res['rps']:.0f} req/s, "
                    f"errors {res['errors']}; CPU/request: server {1e6 * meter.own / n:.0f} us, "
                    f"workers {1e6 * meter.kids / n:.0f} us",
                    flush=True,
                )


if __name__ == "__main__":
    main()
