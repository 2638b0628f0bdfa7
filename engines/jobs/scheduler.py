"""Runs async jobs: claims queued ones (up to a concurrency limit), keeps their records alive with heartbeats
and progress, stops the ones whose owners deleted them, and recovers jobs a stopped server left behind. What a
job runs is the execution service's business: the scheduler hands it the record and stores the outcome."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from engines.assemble import Body
from engines.errors import EngineFault, ExecutionError
from engines.jobs.store import JobRecord, JobStore, utcnow
from engines.runner import Progress

log = logging.getLogger("pyqd.jobs")


class Running(Protocol):
    """What the scheduler needs of a job while it runs: its progress, and a way to stop it."""

    progress: Progress

    def cancel(self) -> None: ...


#: Runs one job: hands what runs to `register` (for progress and cancellation) and returns the outcome: the
#: result body, the error, or None when the job was cancelled (it is forgotten, not answered).
JobRunner = Callable[[JobRecord, Callable[[Running], None]], Body | ExecutionError | None]


@dataclass(frozen=True)
class SchedulerConfig:
    server_id: str
    #: Jobs this server runs at once (the rest of the pool stays free for synchronous calls).
    concurrency: int = 2
    heartbeat_s: float = 5.0
    #: A running job whose server has been silent this long is recovered.
    stale_after_s: float = 30.0
    #: Runs of a job (the first and re-runs after restarts) before it is failed.
    max_attempts: int = 2
    #: Finished jobs and their results are kept this long.
    retention_s: float = 7 * 24 * 3600.0
    poll_s: float = 1.0


@dataclass
class _Running:
    record: JobRecord
    thread: threading.Thread
    runner: Running | None = None
    cancelled: bool = False


class JobScheduler:
    def __init__(self, store: JobStore, config: SchedulerConfig, run: JobRunner) -> None:
        self.store, self.config, self._run = store, config, run
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.store.recover(
            self.config.server_id, timedelta(seconds=self.config.stale_after_s), self.config.max_attempts
        )
        self._thread = threading.Thread(target=self._loop, name="pyqd-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; the jobs running here go back to the queue (another server, or the next start, runs
        them), without counting as an attempt."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            running = list(self._running.values())
        for r in running:
            if r.runner is not None:
                r.runner.cancel()
        for r in running:
            r.thread.join(timeout=30)

    def wake(self) -> None:
        """A job was submitted: look for work now."""
        self._wake.set()

    # -- cancellation --------------------------------------------------------------------------------------
    def cancel_local(self, job_id: str, wait_s: float = 30.0) -> bool:
        """Stop a job running on this server (its workers are killed) and wait until it has let go of them.
        False if the job does not run here."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return False
            running.cancelled = True
            runner = running.runner
        if runner is not None:
            runner.cancel()
        running.thread.join(timeout=wait_s)
        return True

    def running_here(self) -> int:
        with self._lock:
            return len(self._running)

    # -- the loop ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        last_maintenance = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_maintenance >= self.config.heartbeat_s:
                    self._maintain()
                    last_maintenance = time.monotonic()
                self._claim()
            except Exception:  # noqa: BLE001 - keep scheduling; the next round retries
                log.exception("job scheduling failed")
            self._wake.wait(self.config.poll_s)
            self._wake.clear()

    def _claim(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if len(self._running) >= self.config.concurrency:
                    return
            record = self.store.claim_next(self.config.server_id)
            if record is None:
                return
            thread = threading.Thread(
                target=self._execute, args=(record,), name=f"pyqd-job-{record.id[:8]}", daemon=True
            )
            with self._lock:  # started under the lock: a cancellation never finds it registered but not started
                self._running[record.id] = _Running(record, thread)
                thread.start()

    def _maintain(self) -> None:
        with self._lock:
            progress = {jid: self._progress(r) for jid, r in self._running.items()}
        for job_id in self.store.heartbeat(self.config.server_id, progress):
            self.cancel_local(job_id, wait_s=0)
        self.store.recover(
            self.config.server_id,
            timedelta(seconds=self.config.stale_after_s),
            self.config.max_attempts,
            running_here=set(progress),
        )
        self.store.purge(utcnow() - timedelta(seconds=self.config.retention_s))

    @staticmethod
    def _progress(r: _Running) -> tuple[int, int | None]:
        if r.runner is None:
            return 0, None
        return r.runner.progress.units_done, r.runner.progress.units_total

    def _register(self, job_id: str, runner: Running) -> None:
        with self._lock:
            running = self._running[job_id]
            running.runner = runner
            cancelled = running.cancelled
        if cancelled:
            runner.cancel()

    def _execute(self, record: JobRecord) -> None:
        try:
            outcome: Body | ExecutionError | None
            try:
                outcome = self._run(record, lambda running: self._register(record.id, running))
            except Exception:  # noqa: BLE001 - a fault of ours: the job fails, the scheduler lives on
                log.exception("job %s failed unexpectedly", record.id)
                outcome = EngineFault("The job failed inside pyqd; the server log has the details")
            with self._lock:
                running = self._running[record.id]
                cancelled = running.cancelled or outcome is None
                progress = self._progress(running)
            if self._stop.is_set() and not cancelled:
                self.store.requeue(record.id, self.config.server_id)
            elif cancelled or outcome is None:
                self.store.delete(record.id)
            else:
                self.store.finish(record.id, self.config.server_id, outcome, progress)
        finally:
            with self._lock:
                self._running.pop(record.id, None)
            self._wake.set()
