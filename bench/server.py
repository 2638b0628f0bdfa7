"""Start a real `pyqd serve` (SQLite or PostgreSQL) in a temporary data directory for benchmarks."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

ADMIN_PASSWORD = "bench-admin-password"
#: One thread per numeric library everywhere: comparisons stay fair on 2 cores.
THREADS_ENV = {
    k: "1"
    for k in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: str
    database_url: str | None

    def token(self, user: str, password: str) -> str:
        r = httpx.post(
            f"{self.url}/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": user, "password": password},
        )
        r.raise_for_status()
        return r.json()["accessToken"]

    def add_user(self, name: str, password: str) -> dict[str, str]:
        admin = {"Authorization": f"Bearer {self.token('ADMIN', ADMIN_PASSWORD)}"}
        r = httpx.post(
            f"{self.url}/oml/api/pyqd/v1/admin/users", headers=admin, json={"name": name, "password": password}
        )
        if r.status_code not in (201, 400):
            r.raise_for_status()
        return {"Authorization": f"Bearer {self.token(name, password)}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one benchmark run (dropped afterwards)."""
    import psycopg

    dsn = os.environ.get("PYQD_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"pyqd_bench_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    try:
        yield (
            f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:"
            f"{info.get('port', 5432)}/{name}"
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pyqd\\_%%'").fetchall():
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f'DROP ROLE "{role}"')


@contextlib.contextmanager
def running_server(
    database_url: str | None = None,
    data_dir: str | None = None,
    wait_ready: bool = True,
    source: str | None = None,
    **settings: str,
) -> Iterator[Server]:
    """`pyqd serve` on a free port (in `data_dir`, or a temporary one removed afterwards); waits until /health
    answers and, with `wait_ready`, until /ready (a worker is warm). `source`: run another pyqd checkout."""
    own_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="pyqd-bench-")
    port = free_port()
    env = {
        **os.environ,
        **THREADS_ENV,
        "PYQD_DATA_DIR": data_dir,
        "PYQD_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PYQD_PORT": str(port),
        "PYQD_LOG_LEVEL": "warning",
        **settings,
    }
    if database_url:
        env["PYQD_DATABASE_URL"] = database_url
    if source:
        env["PYTHONPATH"] = source
    proc = subprocess.Popen(
        [sys.executable, "-c", "from server.cli import main; main()", "serve"],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        path = "/ready" if wait_ready else "/health"
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pyqd did not start")
            time.sleep(0.02)
        yield Server(url, proc, data_dir, database_url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if own_dir:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
