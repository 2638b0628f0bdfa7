"""docs/performance.md from a run's sections."""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness import Timing, machine, markdown_table, ratio

TARGETS = """\
Targets (issue 5, 2 cores, ratios from the same run): row-apply scoring of 1M rows ≤ 0.4 × the single pandas
process and faster than joblib and Dask on the same chunks; the seed's row-apply (rows=5 over 150 rows) p50
under 50 ms; small calls p50 within 2 ms of the hand-written FastAPI endpoint and at least the Flask/gunicorn
app's requests/s; peak RSS at 5M rows within 50 MB of that at 1M rows; first call of a new script under 150 ms
with a warm pool."""


PROFILE = """\
### Where the time goes: row-apply scoring of 1,000,000 rows (SQLite, rows=100,000, 2 workers)

Measured by timing each stage of one call in-process (the server's input reader, each worker task, the
assembly), on the commit before the data-path work (`a705932`) and after it, back to back:

| stage | before | after |
|---|---|---|
| whole call (request → last byte) | 5.3 s | 1.0 s |
| reading the input query (server, one thread) | 5.1 s | 0.8 s |
| scoring + JSON in the workers (per worker, overlapped with reading) | 0.42 s | 0.42–0.53 s |
| assembling and sending 32 MB of JSON | 0.03 s | 0.02–0.04 s |

Before, rows came from SQLite through `sqlite3` as Python tuples and were turned into Arrow column by
column in Python: five seconds of one core, holding the GIL while the workers sat idle. Now a query that scans
one table of the caller's goes through ADBC (Arrow built in C; the same for PostgreSQL, with binary COPY), the
chunks travel to the workers as Arrow IPC, each worker renders its chunk's JSON, and the server only splices
bytes into a sink that spills to disk past 8 MiB, so its memory stays flat (table above). Reading is still the
critical path (0.8 s on one core while the workers share the other); other queries (joins, other owners'
tables) take the `sqlite3` path, whose authorizer and interrupt guard them.

Small calls: the server spends about 1.5–2 ms of CPU per call (FastAPI routing and middleware, the token check,
preparing the call, pickling the task to the worker and back); the worker adds ~0.3 ms. Token sessions,
script lookups and the datastore generation are cached for `PYQD_LOOKUP_CACHE_S`, a worker keeps one `oml`
connection and its datastore metadata between calls while nothing changed, and single-worker calls run without
threads. The seed's 30 chunks are spread over two workers; each chunk costs about 1.3 ms of the script's own
pandas/scikit-learn work, which is also why the hand-written FastAPI version needs ~40 ms. One server process
tops out near 400 trivial calls/s on one core: that, not the workers, caps requests/s (gunicorn runs two
processes).
"""


def _timings(title: str, timings: dict[str, Timing], pyqd_keys: list[str]) -> str:
    best = min(timings[k].median for k in pyqd_keys)
    rows = []
    for name, t in timings.items():
        rows.append([name, f"{t.median:.2f}", t.spread, "" if name in pyqd_keys else ratio(best, t.median)])
    header = ["variant", "median s", "min–max s", "best pyqd / this"]
    return f"### {title}\n\n" + markdown_table(header, rows) + "\n"


def render(s: dict[str, Any]) -> str:
    out = [
        "# Performance",
        "",
        f"Measured {s['date']} with `scripts/bench` ({s['seconds'] / 60:.1f} min): {machine()}",
        "",
        TARGETS,
        "",
        PROFILE,
    ]
    for key, value in s.items():
        if key.startswith("scoring/"):
            backend = key.split("/")[1]
            pyqd = [k for k in value if k.startswith("pyqd")]
            out.append(
                _timings(
                    f"Row-apply scoring, {s['rows']:,} rows, {backend} (read + score + JSON; "
                    f"{s['reps']} interleaved rounds)",
                    value,
                    pyqd,
                )
            )
    for key, value in s.items():
        if key.startswith("groups/"):
            _, backend, label = key.split("/")
            out.append(
                _timings(
                    f"Group-apply, 100 groups ({label}), {s['rows']:,} rows, {backend}", value, ["pyqd group-apply"]
                )
            )
    if "small" in s:
        rows = []
        for (system, call, c), runs in s["small"].items():
            rows.append(
                [
                    call,
                    system,
                    c,
                    f"{statistics.median(r['p50_ms'] for r in runs):.1f}",
                    f"{statistics.median(r['p99_ms'] for r in runs):.1f}",
                    f"{statistics.median(r['rps'] for r in runs):.0f}",
                    sum(r["errors"] for r in runs),
                ]
            )
        rows.sort(key=lambda r: (r[0], r[2], r[1]))
        gen = next(iter(s["small"].values()))[0]["generator"]
        out.append(
            f"### Small calls (load generator: {gen}, medians of 2 rounds)\n\n"
            + markdown_table(["call", "system", "concurrency", "p50 ms", "p99 ms", "req/s", "errors"], rows)
            + "\n"
        )
    if "memory" in s:
        rows = [[f"{r:,}", f"{srv:.0f}", f"{w:.0f}", f"{sec:.1f}"] for r, srv, w, sec in s["memory"]]
        out.append(
            "### Memory (row-apply scoring, rows=100,000, SQLite; each in a fresh server)\n\n"
            + markdown_table(["rows", "server peak RSS MiB", "largest worker peak RSS MiB", "seconds"], rows)
            + "\n"
        )
    if "cold" in s:
        c = s["cold"]
        out.append(
            "### Cold start (SQLite, medians of 5 starts)\n\n"
            + markdown_table(
                ["process start → /health", "→ /ready (warm worker)", "new script: first call", "second call"],
                [
                    [
                        f"{c['health']:.2f} s",
                        f"{c['ready']:.2f} s",
                        f"{c['first'] * 1000:.0f} ms",
                        f"{c['second'] * 1000:.0f} ms",
                    ]
                ],
            )
            + "\n"
        )
    return "\n".join(out) + "\n"
