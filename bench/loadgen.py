"""HTTP load for the small-call benchmarks: latency p50/p99 and requests/s of a repeated POST with a JSON body.
Uses Debian's `wrk` (C, light on CPU) when it is on PATH or can be installed with apt-get (as root); otherwise a
small Python generator (httpx, one thread per connection), which itself costs CPU on a 2-core machine."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Literal, TypedDict

import httpx

Generator = Literal["auto", "wrk", "python"]


class LoadResult(TypedDict):
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    errors: int
    generator: str


@functools.cache
def find_wrk() -> str | None:
    """`wrk` on PATH; if missing and running as root, `apt-get install -y wrk` (updating the lists once if needed)."""
    if path := shutil.which("wrk"):
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["install", "-y", "wrk"], ["update"], ["install", "-y", "wrk"]):
            out = subprocess.DEVNULL
            subprocess.run(["apt-get", "-q", *step], env=env, check=False, timeout=300, stdout=out, stderr=out)
            if path := shutil.which("wrk"):
                return path
    return None


def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    threads: int = 1,
    generator: Generator = "auto",
) -> LoadResult:
    """POST `body` to `url` over `concurrency` keep-alive connections for about `duration_s` seconds."""
    headers = {"Content-Type": "application/json", **headers}
    wrk = find_wrk() if generator != "python" else None
    if wrk:
        return _run_wrk(wrk, url, body, headers, concurrency, duration_s, threads)
    if generator == "wrk":
        raise RuntimeError("wrk is not available")
    return _run_python(url, body, headers, concurrency, duration_s)


# --- wrk ---


def _lua_string(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in data) + '"'


def _wrk_script(body: bytes, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines += [f"wrk.headers[{_lua_string(k.encode())}] = {_lua_string(v.encode())}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return round(float(value) * _UNITS[unit], 3)


def parse_wrk(out: str) -> LoadResult:
    """Read p50/p99 from `--latency`'s distribution, Requests/sec, the request count and every kind of error."""
    pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    requests = int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1))  # type: ignore[union-attr]
    socket = re.search(r"Socket errors:(.*)$", out, re.M)
    errors = sum(int(n) for n in re.findall(r"\d+", socket.group(1))) if socket else 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return LoadResult(
        p50_ms=_ms(pct["50"]), p99_ms=_ms(pct["99"]), rps=rps, requests=requests, errors=errors, generator="wrk"
    )


def _run_wrk(
    wrk: str, url: str, body: bytes, headers: dict[str, str], concurrency: int, duration_s: float, threads: int
) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_wrk_script(body, headers))
        script.flush()
        threads = max(1, min(threads, concurrency))  # wrk needs connections >= threads
        argv = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--timeout", "30s"]
        proc = subprocess.run(
            [*argv, "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            check=True,
        )
    return parse_wrk(proc.stdout)


# --- Python fallback ---


def _run_python(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration_s: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    deadline = 0.0

    def worker() -> None:
        nonlocal errors
        mine, failed = [], 0
        with httpx.Client(headers=headers, timeout=30) as client:
            start.wait()
            while (t := time.perf_counter()) < deadline:
                try:
                    ok = client.post(url, content=body).is_success
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - t)
                failed += not ok
        with lock:
            latencies.extend(mine)
            errors += failed

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for th in pool:
        th.start()
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    start.wait()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - t0
    xs = sorted(latencies) or [float("nan")]
    return LoadResult(
        p50_ms=round(xs[(len(xs) - 1) // 2] * 1e3, 3),
        p99_ms=round(xs[int(0.99 * (len(xs) - 1))] * 1e3, 3),
        rps=round(len(latencies) / elapsed, 2),
        requests=len(latencies),
        errors=errors,
        generator="python-httpx",
    )
