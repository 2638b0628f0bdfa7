"""A pool of warm worker processes. A worker runs one user's code only: once given to a user it is never
handed to another user; it is killed instead, and a fresh one takes its place."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from engines.errors import PoolBusy
from engines.protocol import Task, UnitResult, WorkerLimits
from engines.spawner import Spawner, SpawnError, describe_status

log = logging.getLogger("pyqd.pool")

#: Answers a worker's ("http", method, path, headers, body) with ("http-response", status, headers, body).
RequestHandler = Callable[[tuple], tuple]

#: Seconds between maintenance rounds (refill warm workers, retire idle ones).
MAINTENANCE_INTERVAL_S = 0.5
#: Seconds a new worker may take to confine itself and say it is ready.
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PoolConfig:
    #: Most worker processes at once.
    size: int = 4
    #: Fresh (unassigned) workers kept ready.
    warm: int = 2
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    #: Extra modules the template imports (comma list).
    preload: str = ""
    #: Idle seconds after which a user's worker is retired (to make room for fresh ones).
    idle_timeout_s: float = 300.0
    #: Tasks after which a worker is replaced (bounds leaks in long-lived workers).
    max_tasks: int = 10_000


class WorkerDied(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class WorkerTimedOut(Exception):
    pass


class Worker:
    """A handle on one worker process."""

    def __init__(self, pid: int, conn: Connection, tmp_dir: str, confinement: str, pool: WorkerPool) -> None:
        self.pid, self.conn, self.tmp_dir, self.confinement = pid, conn, tmp_dir, confinement
        self.user: str | None = None
        self.tasks = 0
        self.last_used = time.monotonic()
        self.killed = False
        #: The process died or its pipe broke: it must not be used again.
        self.broken = False
        self._pool = pool

    def run(
        self,
        task: Task,
        data: list[bytes],
        timeout_s: float,
        on_request: RequestHandler | None = None,
    ) -> list[UnitResult]:
        """Send a task (and its Arrow IPC messages) and wait for its results, answering the requests the
        script's `import oml` makes meanwhile with `on_request`; WorkerTimedOut or WorkerDied otherwise."""
        self.tasks += 1
        deadline = time.monotonic() + timeout_s
        try:
            self.conn.send(task)
            for message in data:
                self.conn.send_bytes(message)
            while True:
                if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                    raise WorkerTimedOut()
                reply = self.conn.recv()
                if isinstance(reply, tuple) and reply and reply[0] == "http":
                    answer = on_request(reply) if on_request else ("http-response", 503, [], b"")
                    self.conn.send(answer)
                    continue
                return reply
        except (EOFError, OSError, BrokenPipeError):
            self.broken = True
            if self.killed:
                raise WorkerDied("the worker was stopped") from None
            status = self._pool.spawner.exit_status(self.pid)
            raise WorkerDied(f"the worker process {describe_status(status)}") from None

    def cpu_seconds(self) -> float:
        """CPU time the worker process has used so far (0 when it cannot be read)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill(self) -> None:
        """Kill the worker and everything it started."""
        self.killed = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.conn.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


class WorkerPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.spawner = Spawner(config.preload)
        self._cond = threading.Condition()
        self._fresh: list[Worker] = []
        self._idle: dict[str, list[Worker]] = defaultdict(list)
        self._busy: set[Worker] = set()
        self._starting = 0
        self._closed = False
        #: Callers waiting in acquire(), in arrival order.
        self._queue: deque[object] = deque()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, wait: bool = False) -> None:
        """Start the template and the warm workers in the background (with `wait`, return once one is ready)."""
        if wait:
            self._add_fresh()
        self._thread = threading.Thread(target=self._maintain, name="pyqd-pool", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = self._fresh + [w for ws in self._idle.values() for w in ws] + list(self._busy)
            self._fresh, self._idle, self._busy = [], defaultdict(list), set()
            self._cond.notify_all()
        for w in workers:
            w.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.spawner.close()

    # -- counts ----------------------------------------------------------------------------------------
    def _total(self) -> int:
        return len(self._fresh) + sum(len(v) for v in self._idle.values()) + len(self._busy) + self._starting

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "size": self.config.size,
                "busy": len(self._busy),
                "fresh": len(self._fresh),
                "idle": sum(len(v) for v in self._idle.values()),
                "starting": self._starting,
                "waiting": len(self._queue),
            }

    # -- spawning --------------------------------------------------------------------------------------
    def _spawn(self) -> Worker:
        tmp_dir = tempfile.mkdtemp(prefix="pyqd-worker-")
        limits = self.config.limits
        if limits.uid is not None and os.getuid() == 0:
            os.chown(tmp_dir, limits.uid, limits.gid if limits.gid is not None else limits.uid)
        try:
            pid, conn = self.spawner.spawn(limits, tmp_dir)
        except Exception:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        try:
            if not conn.poll(READY_TIMEOUT_S):
                raise SpawnError("a new worker did not become ready in time")
            hello = conn.recv()
        except (EOFError, OSError) as e:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise SpawnError(f"a new worker died while starting: {e}") from e
        if hello[0] != "ready":
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise SpawnError(f"a new worker could not confine itself: {hello[1]}")
        return Worker(pid, conn, tmp_dir, hello[2], self)

    def _add_fresh(self) -> None:
        with self._cond:
            if self._closed or self._total() >= self.config.size:
                return
            self._starting += 1
        try:
            worker = self._spawn()
        except Exception:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._starting -= 1
            if self._closed:
                worker.kill()
                return
            self._fresh.append(worker)
            self._cond.notify_all()

    def _maintain(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                need = len(self._fresh) + self._starting < self.config.warm and self._total() < self.config.size
                stale = self._stale_idle() if len(self._fresh) + self._starting < self.config.warm else None
            try:
                if stale is not None:
                    stale.kill()
                if need or stale is not None:
                    self._add_fresh()
                    continue
            except Exception:  # noqa: BLE001 - keep maintaining; acquire reports spawn errors to callers
                log.exception("could not start a worker")
            with self._cond:
                self._cond.wait(MAINTENANCE_INTERVAL_S)

    def _stale_idle(self) -> Worker | None:
        """An idle worker of some user past the idle timeout, removed from the pool (caller kills it)."""
        now = time.monotonic()
        for workers in self._idle.values():
            for w in workers:
                if now - w.last_used > self.config.idle_timeout_s:
                    workers.remove(w)
                    return w
        return None

    # -- acquire / release -----------------------------------------------------------------------------
    def acquire(self, user: str, n: int, timeout_s: float) -> list[Worker]:
        """Up to `n` workers for `user` (at least one), waiting at most `timeout_s` for the first. Callers are
        served in arrival order; PoolBusy when none became free in time."""
        deadline = time.monotonic() + timeout_s
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                got: list[Worker] = []
                evict: list[Worker] = []
                spawn = 0
                with self._cond:
                    if self._closed:
                        raise PoolBusy()
                    if self._queue[0] is ticket:
                        got, spawn, evict = self._reserve(user, n)
                for w in evict:
                    w.kill()
                for _ in range(spawn):
                    new: Worker | None = None
                    try:
                        new = self._spawn()
                    except Exception:
                        log.exception("could not start a worker")
                    with self._cond:
                        self._starting -= 1
                        if new is not None:
                            new.user = user
                            self._busy.add(new)
                            got.append(new)
                        self._cond.notify_all()
                if got:
                    return got
                with self._cond:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolBusy()
                    self._cond.wait(min(remaining, 1.0))
        finally:
            with self._cond:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def _reserve(self, user: str, n: int) -> tuple[list[Worker], int, list[Worker]]:
        """Under the lock: the user's idle workers, then fresh ones, then room to start (evicting other users'
        idle workers if needed). Returns (taken, to start, to kill)."""
        got = self._idle[user][-n:]
        del self._idle[user][len(self._idle[user]) - len(got) :]
        while len(got) < n and self._fresh:
            got.append(self._fresh.pop(0))
        spawn = min(n - len(got), self.config.size - self._total())
        evict: list[Worker] = []
        if len(got) + spawn < n:
            evict = self._evictable(user, n - len(got) - spawn)
            spawn += len(evict)
        self._starting += spawn
        for w in got:
            w.user = user
            self._busy.add(w)
        return got, spawn, evict

    def waiting(self) -> int:
        """Callers waiting for a worker (a running call gives workers back between tasks when this is > 0)."""
        with self._cond:
            return len(self._queue)

    def _evictable(self, user: str, n: int) -> list[Worker]:
        """Up to `n` idle workers of other users, least recently used first, taken out of the pool."""
        others = sorted((w for u, ws in self._idle.items() if u != user for w in ws), key=lambda w: w.last_used)
        chosen = others[:n]
        for w in chosen:
            self._idle[w.user or ""].remove(w)
        return chosen

    def release(self, worker: Worker, healthy: bool = True) -> None:
        """Give a worker back: kept for its user if healthy, else killed (a fresh one replaces it)."""
        retire = (
            not healthy
            or worker.killed
            or worker.broken
            or worker.tasks >= self.config.max_tasks
            or worker.cpu_seconds() > 0.75 * (self.config.limits.cpu_seconds or float("inf"))
        )
        with self._cond:
            self._busy.discard(worker)
            if not retire and not self._closed:
                worker.last_used = time.monotonic()
                self._idle[worker.user or ""].append(worker)
            self._cond.notify_all()
        if retire:
            worker.kill()
