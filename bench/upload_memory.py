"""Peak server memory of a table upload: a real `pyqd serve`, a large CSV/JSON/Parquet file uploaded from disk,
the server's RSS before and its peak (VmHWM, reset just before the upload) after, from /proc/PID/status.

    .venv/bin/python -m bench.upload_memory [--mb 200] [--formats csv,parquet,json] [--pg]

Each format runs on a fresh server, so each peak is that upload's own. Prints one line per format.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from bench.resources import status_kb
from bench.server import pg_database, running_server


def status_mib(pid: int, field: str = "VmHWM") -> float:
    return status_kb(pid, field) / 1024


def reset_peak(pid: int) -> None:
    """Start the peak (VmHWM) again from the current RSS (Linux: 5 > /proc/PID/clear_refs; needs the right)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def make_table(mb: int) -> pa.Table:
    """About `mb` MB of CSV: an id, two floats, a short text and a date per row (~50 bytes a row)."""
    rows = mb * 1024 * 1024 // 50
    rng = np.random.default_rng(1)
    return pa.table(
        {
            "ID": np.arange(rows, dtype=np.int64),
            "X": rng.random(rows),
            "Y": rng.normal(size=rows),
            "NAME": pa.array(np.char.add("name-", (np.arange(rows) % 9973).astype(str))),
            "DAY": pa.array(np.datetime64("2020-01-01") + (np.arange(rows) % 1000).astype("timedelta64[D]")),
        }
    )


def write_file(table: pa.Table, fmt: str, path: Path) -> None:
    if fmt == "csv":
        pa_csv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path, row_group_size=100_000)
    else:  # a JSON array of records, written a slice at a time
        with path.open("w") as f:
            f.write("[")
            for i, batch in enumerate(table.to_batches(max_chunksize=50_000)):
                text = batch.to_pandas().to_json(orient="records", date_format="iso")[1:-1]
                f.write(("," if i else "") + text)
            f.write("]")


def measure(fmt: str, path: Path, database_url: str | None) -> str:
    with running_server(database_url, wait_ready=False, PYQD_WORKERS="1", PYQD_WARM_WORKERS="0") as server:
        headers = server.add_user("BENCH", "bench-password-123")
        pid = server.proc.pid
        # A small upload first, so the parsers and drivers are loaded before the baseline is taken.
        small = httpx.post(
            f"{server.url}/oml/api/pyqd/v1/tables/WARM?format=csv", headers=headers, content=b"a,b\n1,x\n"
        )
        small.raise_for_status()
        reset_peak(pid)
        base = status_mib(pid, "VmRSS")
        t0 = time.monotonic()
        with path.open("rb") as f:
            r = httpx.post(
                f"{server.url}/oml/api/pyqd/v1/tables/BIG?format={fmt}", headers=headers, content=f, timeout=1800
            )
        took = time.monotonic() - t0
        r.raise_for_status()
        peak = status_mib(pid)
        rows = r.json()["result"]["row_count"]
    size = path.stat().st_size / 1024 / 1024
    return (
        f"{fmt:8s} file {size:7.1f} MiB  rows {rows:>9d}  server peak RSS {peak:7.1f} MiB "
        f"(baseline {base:6.1f}, growth {peak - base:7.1f} MiB = {(peak - base) / size:4.2f}x the file)  {took:5.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--formats", default="csv,parquet,json")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    table = make_table(args.mb)
    with tempfile.TemporaryDirectory(prefix="pyqd-upload-") as tmp:
        for fmt in args.formats.split(","):
            path = Path(tmp) / f"data.{fmt}"
            write_file(table, fmt, path)
            with pg_database() if args.pg else contextlib.nullcontext() as url:
                print(measure(fmt, path, url), flush=True)
            os.unlink(path)


if __name__ == "__main__":
    main()
