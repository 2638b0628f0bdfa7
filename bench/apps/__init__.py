"""Hand-written competitor services for the small-call benchmarks, and `launch`: run one as a subprocess on a
free port (numeric threads pinned to 1) until its /health answers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt

from bench.server import THREADS_ENV

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningApp:
    url: str
    proc: subprocess.Popen[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def bearer(key: str, subject: str = "BENCH") -> dict[str, str]:
    """An Authorization header with an HS256 token (valid for a day) signed with `key`."""
    token = jwt.encode({"sub": subject, "exp": int(time.time()) + 86_400}, key, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def launch(argv: list[str], env: dict[str, str], url: str, timeout_s: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` from the repository root; yield once GET {url}/health is 200; terminate it afterwards."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYQD_BENCH_")}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**inherited, **THREADS_ENV, "PYTHONPATH": str(REPO), **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"{' '.join(argv)} did not start (exit {proc.poll()}):\n{tail}")
                time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
