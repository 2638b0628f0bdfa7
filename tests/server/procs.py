"""Running the real `pyqd` command in a subprocess: one-shot commands and a server to talk to."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.conftest import wait_for

#: The installed console script next to this interpreter, else the same entry point through -c.
_SCRIPT = Path(sys.executable).parent / "pyqd"
PYQD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from server.cli import main; main()"]
#: Cheap password hashes for the subprocesses too (argon2id at its production cost takes ~0.1 s a hash).
FAST_HASHING = {"PYQD_PASSWORD_HASH_TIME_COST": "1", "PYQD_PASSWORD_HASH_MEMORY_KIB": "1024"}
#: Seconds a subprocess may take to start or finish a command: generous, because a busy 2-core CI machine
#: starting two servers at once (each importing the data stack and migrating) can take tens of seconds.
STARTUP_TIMEOUT_S = 180.0
#: A server that will run no user code needs no warm, preloaded workers (they double its start-up time).
LEAN_WORKERS = {"PYQD_WORKERS": "1", "PYQD_WARM_WORKERS": "0", "PYQD_WORKER_PRELOAD": ""}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any PYQD_* setting of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYQD_")}
    return {**env, **FAST_HASHING, **LEAN_WORKERS, **extra}


def run_pyqd(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `pyqd ARGS...` to completion (with a generous deadline) and return its output."""
    return subprocess.run(
        [*PYQD, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
        timeout=STARTUP_TIMEOUT_S,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`pyqd serve` in a subprocess, its stderr collected line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*PYQD, "serve", "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = STARTUP_TIMEOUT_S) -> re.Match[str]:
        """The first stderr line matching `pattern`, waiting for it up to `timeout` seconds."""
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                if m := rx.search(line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(
                    f"pyqd exited ({self.proc.returncode}) without printing {pattern!r}:\n{self.stderr}"
                )
            return None

        return wait_for(found, timeout=timeout)  # type: ignore[return-value]

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"pyqd exited ({self.proc.returncode}):\n{self.stderr}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=timeout, interval=0.05)

    def wait_exit(self, timeout: float = STARTUP_TIMEOUT_S) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        """End this server (and only this one): SIGTERM, then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
