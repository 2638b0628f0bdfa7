"""The parent side of the worker template: start it with a clean environment, ask it for workers."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from engines.protocol import WorkerLimits
from engines.worker.template import recv_message, send_message

#: Environment variables passed through to the template (and so to user code); nothing else is.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED")
#: One thread per numeric library in each worker: parallelism comes from running several workers.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "ARROW_NUM_THREADS": "1",
}
#: Seconds the template may take to import the data stack.
TEMPLATE_START_TIMEOUT_S = 120


class SpawnError(RuntimeError):
    """The template could not be started or could not fork a worker."""


def clean_environment(preload: str = "") -> dict[str, str]:
    """The environment of the template and workers: locale and PATH only, plus thread settings."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.update(THREAD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if preload:
        env["PYQD_WORKER_PRELOAD"] = preload
    return env


class Spawner:
    """Owns the template process; `spawn()` returns (pid, socket) of a new worker, which confines itself."""

    def __init__(self, preload: str = "") -> None:
        self._preload = preload
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "engines.worker.template", str(child.fileno())],
                pass_fds=[child.fileno()],
                env=clean_environment(self._preload),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
        finally:
            child.close()
        parent.settimeout(TEMPLATE_START_TIMEOUT_S)
        try:
            reply, _ = recv_message(parent)
        except (EOFError, OSError) as e:
            raise SpawnError(f"the worker template did not start: {e}") from e
        parent.settimeout(None)
        if not (isinstance(reply, list) and reply and reply[0] == "ready"):
            raise SpawnError(f"unexpected answer from the worker template: {reply!r}")
        self._control = parent

    def _request(self, message: list, fds: list[int] | None = None) -> object:
        if self._control is None or self._proc is None or self._proc.poll() is not None:
            self._start()
        assert self._control is not None
        try:
            send_message(self._control, message, fds)
            reply, _ = recv_message(self._control)
        except (EOFError, OSError) as e:
            self._control.close()
            self._control = None
            raise SpawnError(f"the worker template failed: {e}") from e
        return reply

    def spawn(self, limits: WorkerLimits, tmp_dir: str) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                reply = self._request(["spawn", dataclasses.asdict(limits), tmp_dir], [theirs.fileno()])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == "spawned" and type(reply[1]) is int):
            ours.close()
            raise SpawnError(f"unexpected answer from the worker template: {reply!r}")
        return reply[1], ours

    def exit_status(self, pid: int, wait_s: float = 1.0) -> int | None:
        """The raw wait status of a worker that has gone, if the template has reaped it within `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                try:
                    reply = self._request(["status", pid])
                except SpawnError:
                    return None
            status = reply[1] if isinstance(reply, list) and len(reply) == 2 and type(reply[1]) is int else None
            if status is not None or time.monotonic() > deadline:
                return status
            time.sleep(0.01)

    def close(self) -> None:
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None
            if self._proc is not None:
                if self._proc.poll() is None:
                    self._proc.send_signal(signal.SIGTERM)
                    try:
                        self._proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        self._proc.kill()
                        self._proc.wait()
                self._proc = None


def describe_status(status: int | None) -> str:
    """'killed by signal 9 (SIGKILL)' / 'exited with code 3' / 'ended'."""
    if status is None:
        return "ended"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "?"
        return f"was killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return "ended"
