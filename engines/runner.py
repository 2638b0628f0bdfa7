"""The Runner: runs one Call. It cuts the input into units, runs them on the caller's workers with a bounded
number of tasks in flight, and assembles OML's result. Knows nothing of HTTP; a job is just another caller."""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pyarrow as pa

from engines import units as u
from engines.assemble import Assembler, Body, Sink
from engines.errors import (
    Cancelled,
    ExecutionError,
    InvalidApplyRequest,
    OutputTooLarge,
    OutputTooLong,
    ResultNotSerializable,
    ScriptFailed,
    TimeLimitExceeded,
    WorkerCrashed,
)
from engines.pool import RequestHandler, WorkerDied, WorkerTimedOut
from engines.protocol import Result, Task, Unit
from engines.spec import Call
from engines.workers import PartitionWorker, Worker, Workers
from tables.errors import TablesError
from tables.pg_partitions import Partition, PartitionedRead

#: Verbs whose single-worker calls run without producer/consumer threads (they read no rows, or all at once).
INLINE_KINDS = ("eval", "index", "table")
#: One worker message: its place in the call's order, the task, and its input (Arrow IPC messages, or a partition
#: of the input query that the worker reads itself).
Item = tuple[int, Task, "list[bytes] | Partition"]
#: Task messages waiting per worker: enough to keep it busy, few enough to bound memory.
QUEUE_DEPTH_PER_WORKER = 2
_STOP = object()


@dataclass(frozen=True)
class Limits:
    """The server's bounds on every call (from its settings)."""

    sync_time_limit_s: float = 120.0
    #: An input query's own limit (a call's query also has no more than the call's remaining time).
    query_time_limit_s: float = 600.0
    #: Largest result length (rows of a DataFrame, items of a list), per unit and in all.
    output_limit: int = 10_000_000
    #: Largest result, bytes (OML's JSON or the pickles), checked by the worker and while assembling.
    output_max_bytes: int = 256 * 1024**2
    #: How long a synchronous call waits for a free worker (a job waits as long as its time limit).
    worker_wait_s: float = 30.0
    #: A row-apply input of at least this many rows is read by the workers themselves, in partitions, when the
    #: engine's workers can (`Workers.reads_partitions`: the Dask engine on PostgreSQL).
    partition_min_rows: int = 200_000
    #: Where those workers connect to read (host, port, database; None: the server's own database).
    reader_url: str | None = None
    #: Results over `spill_bytes` go to a temporary file in `spill_dir` instead of memory.
    spill_dir: str | None = None
    spill_bytes: int = 8 * 1024 * 1024


@dataclass
class Progress:
    units_done: int = 0
    #: Known for index-apply and do-eval/table-apply up front, else once all input has been read.
    units_total: int | None = None
    stdout: list[str] = field(default_factory=list)


class Runner:
    """Runs one Call: `run()` (blocking) cuts its input into units, sends them to the caller's workers in tasks
    with a bounded number in flight, and assembles the results in order; `cancel()` from another thread stops
    it and kills its workers."""

    def __init__(
        self,
        pool: Workers[Any],
        call: Call,
        limits: Limits,
        *,
        call_id: str,
        time_limit_s: float,
        is_job: bool = False,
        batches: Iterable[pa.RecordBatch] | None = None,
        group_columns: tuple[str, ...] = (),
        on_request: RequestHandler | None = None,
        generation: str = "",
        partitions: PartitionedRead | None = None,
    ) -> None:
        self.pool, self.call, self.limits, self._batches, self._on_request = pool, call, limits, batches, on_request
        #: A row-apply input the workers read themselves, a partition per task (`engines.workers.PartitionWorker`).
        self._partitions = partitions
        #: Chunks handed on so far (partitions number their chunks from 1; the call numbers them on).
        self._chunks = 0
        self.call_id, self.time_limit_s, self.is_job = call_id, time_limit_s, is_job
        self.group_columns, self.generation = group_columns, generation
        self.dop = call.request.degree_of_parallelism(pool.size)
        self.progress = Progress()
        self._lock = threading.Lock()
        self._failure: ExecutionError | None = None
        self._stopping = threading.Event()
        self._workers: list[Worker] = []
        self._deadline = time.monotonic() + time_limit_s
        self._active = 0
        self._pending: dict[int, list[Result]] = {}
        self._next_seq = 0
        self._task_rows = u.TASK_ROWS
        #: Signalled when results are handed on in order (the producer waits so as not to run too far ahead).
        self._advanced = threading.Condition(self._lock)
        #: Seconds spent waiting for workers, and running on them.
        self.acquire_wait_s = 0.0
        self.run_s = 0.0

    # -- public ----------------------------------------------------------------------------------------
    def run(self) -> Body:
        """The `result` value (OML's JSON, or pickles for the Python client), or an ExecutionError."""
        try:
            return self._run()
        finally:
            if self._partitions is not None:
                self._partitions.close()  # the snapshot ends and the call's database role goes

    def _run(self) -> Body:
        req = self.call.request
        started = time.monotonic()
        wait_s = self.time_limit_s if self.is_job else self.limits.worker_wait_s
        workers = self.pool.acquire(self.call.worker_key, self.dop, wait_s, self._stopping)
        self.acquire_wait_s = time.monotonic() - started
        running = time.monotonic()
        with self._lock:
            self._workers = list(workers)
            if self._stopping.is_set():  # cancelled while waiting for workers
                self._kill_all()
        sink = Sink(self.limits.spill_dir, self.limits.spill_bytes)
        self._assembler = Assembler(
            req.kind,
            sink,
            graphics=req.graphics,
            result_format=req.result_format,
            output_limit=self.limits.output_limit,
            output_max_bytes=self.limits.output_max_bytes,
        )
        if len(workers) == 1 and req.kind in INLINE_KINDS:
            # One worker, and the input (if any) is read whole: no threads, no queue; tasks run here in order.
            self._active = 1
            try:
                self._produce(None, workers[0])
            finally:
                self._release(workers[0])
            return self._finish(sink, running)
        tasks: queue.Queue[object] = queue.Queue(maxsize=len(workers) * QUEUE_DEPTH_PER_WORKER)
        self._active = len(workers)
        threads = [threading.Thread(target=self._serve, args=(w, tasks), daemon=True) for w in workers]
        for t in threads:
            t.start()
        try:
            self._produce(tasks)
        finally:
            for _ in threads:
                self._put(tasks, _STOP, force=True)
            for t in threads:
                t.join()
        return self._finish(sink, running)

    def _finish(self, sink: Sink, running: float) -> Body:
        self.run_s = time.monotonic() - running
        if self._partitions is not None:
            self.progress.units_total = self._chunks
        if self._failure is not None:
            sink.discard()
            raise self._failure
        return self._assembler.finish()

    def cancel(self) -> None:
        self._fail(Cancelled())
        self.pool.wake()  # it may still be waiting for workers

    # -- producer --------------------------------------------------------------------------------------
    def _units(self) -> Iterator[Unit]:
        req = self.call.request
        if req.kind == "eval":
            self.progress.units_total = 1
            return iter([Unit("")])
        if req.kind == "index":
            assert req.times is not None
            self.progress.units_total = req.times
            return u.indexes(req.times)
        assert self._batches is not None
        if req.kind == "table":
            self.progress.units_total = 1
            return u.whole(self._batches)
        batches = self._peek_first(iter(self._batches))
        if req.kind == "row":
            assert req.rows is not None
            return u.chunks(batches, req.rows)
        return u.groups(batches, list(self.group_columns))

    def _peek_first(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Look at the first batch to size tasks: a small input (all of it in the first batch) is spread over
        every worker instead of travelling to one worker in one message."""
        first = next(batches, None)
        if first is not None:
            spread = max(1, min(self.dop, os.cpu_count() or 1))  # more pieces than cores only add messages
            self._task_rows = max(1, min(u.TASK_ROWS, math.ceil(first.num_rows / spread)))
            yield first
        yield from batches

    def _rows_per_task(self) -> int:
        return self._task_rows

    def _template(self) -> Task:
        """The call's task without units: every worker message is it with some units."""
        req = self.call.request
        return Task(
            call_id=self.call_id,
            user=self.call.user,
            script_name=self.call.script_name,
            source=self.call.source,
            kind=req.kind,
            units=[],
            kwargs=req.kwargs,
            input_type=req.input_type,
            na_omit=req.na_omit,
            graphics=req.graphics,
            oml=self._on_request is not None,
            datastore_generation=self.generation,
            result_format=req.result_format,
            output_limit=self.limits.output_limit,
            output_max_bytes=self.limits.output_max_bytes,
        )

    def _tasks(self) -> Iterator[Item]:
        """The call's worker messages, in order, made as the input is read."""
        req = self.call.request
        template = self._template()
        if self._partitions is not None:  # the workers read the input themselves, one partition per task
            for part in self._partitions.partitions:
                yield part.index, template, part
            return
        max_units = u.TASK_UNITS
        if req.kind == "index" and req.times:
            max_units = max(1, min(u.MAX_TASK_UNITS, math.ceil(req.times / (self.dop * 4))))
        count = 0
        for seq, group in enumerate(u.per_task(self._units(), max_units=max_units, max_rows=self._rows_per_task)):
            count += len(group)
            task, messages = u.pack(template, group)
            yield seq, task, messages
        self.progress.units_total = count

    def _produce(self, tasks: queue.Queue[object] | None, worker: Worker | None = None) -> None:
        """Feed the tasks to the worker threads through `tasks` (or, with `worker`, run them here, in order)."""
        try:
            for seq, task, messages in self._tasks():
                if self._stopping.is_set():
                    return
                if worker is not None:
                    self._run_task(worker, (seq, task, messages))
                    continue
                assert tasks is not None
                if not self._wait_for_turn(seq, window=max(4, 4 * self.dop)):
                    return
                if not self._put(tasks, (seq, task, messages)):
                    return
        except ExecutionError as e:
            self._fail(e)
        except TablesError as e:  # reading the input failed (e.g. the database refused the query)
            self._fail(InvalidApplyRequest(str(e)))
        except BaseException:
            self._stopping.set()
            raise

    def _wait_for_turn(self, seq: int, window: int) -> bool:
        """Wait while task `seq` would run more than `window` tasks ahead of the results handed on (an early
        finisher's results wait in memory for a slow predecessor); False once the call is stopping."""
        with self._advanced:
            while seq - self._next_seq >= window and not self._stopping.is_set():
                if not self._advanced.wait(timeout=max(0.0, self._deadline - time.monotonic())):
                    if time.monotonic() > self._deadline:
                        self._failure = self._failure or TimeLimitExceeded(self.time_limit_s, job=self.is_job)
                        self._stopping.set()
                        self._kill_all()
            return not self._stopping.is_set()

    def _put(self, tasks: queue.Queue[object], item: object, force: bool = False) -> bool:
        """Queue a task, waiting while the workers are busy; False once the call is stopping."""
        while True:
            if self._stopping.is_set() and not force:
                return False
            try:
                tasks.put(item, timeout=0.05)
                return True
            except queue.Full:
                if force and self._stopping.is_set():
                    _drain(tasks)
                if time.monotonic() > self._deadline:
                    self._fail(TimeLimitExceeded(self.time_limit_s, job=self.is_job))

    # -- consumers -------------------------------------------------------------------------------------
    def _serve(self, worker: Worker, tasks: queue.Queue[object]) -> None:
        """One worker's loop; it gives its worker back early when other callers wait and it is not the last."""
        try:
            while True:
                item = tasks.get()
                if item is _STOP:
                    return
                if self._stopping.is_set():
                    continue
                self._run_task(worker, cast(Item, item))
                if self.pool.waiting() and self._leave_early():
                    return
        finally:
            self._release(worker)

    def _release(self, worker: Worker) -> None:
        with self._lock:  # once given back it may serve another call: never kill it for this one
            if worker in self._workers:
                self._workers.remove(worker)
        self.pool.release(worker, healthy=not worker.killed)

    def _leave_early(self) -> bool:
        with self._lock:
            if self._active <= 1 or self._stopping.is_set():
                return False
            self._active -= 1
            return True

    def _run_task(self, worker: Worker, item: Item) -> None:
        seq, task, payload = item
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise WorkerTimedOut()
            if isinstance(payload, Partition):
                rows = self.call.request.rows or 1
                reader = cast(PartitionWorker, worker)
                results = reader.run_partition(task, payload, rows, remaining, self._on_request)
            else:
                results = worker.run(task, payload, remaining, self._on_request)
        except WorkerTimedOut:
            self._fail(TimeLimitExceeded(self.time_limit_s, job=self.is_job))
            return
        except ExecutionError as e:  # a partition's input could not be read, or its results are too big
            self._fail(e)
            return
        except WorkerDied as e:
            if not self._stopping.is_set():
                self._fail(
                    WorkerCrashed(
                        f"{e}; the worker was replaced. Script {self.call.script_name} may "
                        "have crashed the interpreter, exited, or run out of memory"
                    )
                )
            return
        failed = next((r for r in results if not r.ok), None)
        if failed is not None:
            self._fail(_unit_error(failed, self.limits.output_limit, self.limits.output_max_bytes))
            return
        with self._lock:
            self.progress.units_done += len(results)
            self.progress.stdout.extend(r.stdout for r in results if r.stdout)
            self._pending[seq] = results
            try:  # hand results to the assembler in order; only the out-of-order ones wait in memory
                while self._next_seq in self._pending:
                    for r in self._pending.pop(self._next_seq):
                        if self._partitions is not None:
                            self._chunks += 1
                            r = replace(r, name=str(self._chunks))
                        self._assembler.add(r)
                    self._next_seq += 1
                self._advanced.notify_all()
            except ExecutionError as e:
                self._failure = self._failure or e
                self._stopping.set()
                self._advanced.notify_all()

    def _fail(self, error: ExecutionError) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
            self._stopping.set()
            self._advanced.notify_all()
            if isinstance(error, TimeLimitExceeded | Cancelled):
                self._kill_all()

    def _kill_all(self) -> None:
        """Kill the workers this call still holds (the caller holds the lock)."""
        for w in list(self._workers):
            if not w.killed:
                w.kill()


def _drain(q: queue.Queue[object]) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def _unit_error(r: Result, output_limit: int, output_max_bytes: int) -> ExecutionError:
    if r.failure == "output":
        return OutputTooLong(output_limit)
    if r.failure == "size":
        return OutputTooLarge(output_max_bytes)
    if r.failure == "serialize":
        return ResultNotSerializable(r.error or "The value cannot be rendered as JSON")
    message = r.error or "The script failed"
    if r.stdout:
        message += "\n--- output of print() ---\n" + r.stdout[-4000:]
    return ScriptFailed(message, r.stdout)
