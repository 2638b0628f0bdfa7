"""The in-process twin of the worker pool: the same worker runtime (`engines.worker.runtime.run_task`), run in a
thread of this process instead of a sandboxed process, behind the same seam (`engines.workers`).

For fast tests of everything above the processes (the runner's ordering, cancellation and time limits, the
assembler's shapes, jobs) and nothing else: there is no sandbox, no separate memory, and a task that runs past
its time limit is abandoned (its thread finishes on its own), not killed. `print()` capture swaps the
process's `sys.stdout`, so tasks running at once may see each other's output (and leave `sys.stdout` swapped);
matplotlib's figures are the process's too, so graphics are right only for tasks run one at a time. A script's
`import oml` is not served (it has no channel).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyarrow as pa

from engines.channel import Channel, ChannelError, ChannelTimeout
from engines.errors import Cancelled, PoolBusy
from engines.pool import RequestHandler, WorkerDied, WorkerTimedOut
from engines.protocol import Result, Task

T = TypeVar("T")


class InlineWorker:
    def __init__(self) -> None:
        self.user: str | None = None
        self.model: str | None = None
        self.killed = False
        self.tasks = 0
        self._stop = threading.Event()

    def run(
        self, task: Task, data: list[bytes], timeout_s: float, on_request: RequestHandler | None = None
    ) -> list[Result]:
        from engines.worker.runtime import run_task

        if self.killed:
            raise WorkerDied("the worker was killed")
        self.tasks += 1
        batches: list[pa.RecordBatch] = []
        for message in data:
            with pa.ipc.open_stream(message) as reader:
                batches.extend(reader)
        done = threading.Event()
        out: list[list[Result] | BaseException] = []

        def work() -> None:
            try:
                out.append(run_task(task, batches))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                out.append(e)
            done.set()

        threading.Thread(target=work, name="pyqd-inline-worker", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._stop.is_set():
                raise WorkerDied("the worker was killed")
            if time.monotonic() >= deadline:
                self.kill()
                raise WorkerTimedOut()
        if self.killed:
            raise WorkerDied("the worker was killed")
        result = out[0]
        if isinstance(result, BaseException):
            raise WorkerDied(f"the worker failed: {result!r}")
        return result

    def exchange(
        self,
        send: Callable[[Channel, float], None],
        read: Callable[[dict[str, Any], list[Any]], T],
        timeout_s: float,
    ) -> T:
        """One model message through a real channel (a socket pair), answered by the worker's own handler in a
        thread of this process."""
        from engines.worker.main import handle_model_message

        if self.killed:
            raise WorkerDied("the worker was killed")
        self.tasks += 1
        ours, theirs = socket.socketpair()
        server, worker = Channel(ours), Channel(theirs)

        def work() -> None:
            try:
                header, blobs = worker.recv()
                handle_model_message(worker, header, blobs)
            except (OSError, EOFError):
                pass

        threading.Thread(target=work, name="pyqd-inline-model", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        try:
            send(server, deadline)
            header, blobs = server.recv(deadline)
            return read(header, blobs)
        except ChannelTimeout:
            self.kill()
            raise WorkerTimedOut() from None
        except ChannelError as e:
            self.kill()
            raise WorkerDied(f"the worker sent a malformed message ({e})") from None
        finally:
            server.close()
            worker.close()

    def kill(self, reason: str | None = None) -> None:
        self.killed = True
        self._stop.set()


class InlinePool:
    """`size` inline workers; a worker serves one key (user) until it is given back, and a killed one is
    replaced by a fresh one."""

    #: Its workers take their input from the server (see `engines.workers.PartitionWorker`).
    reads_partitions = False

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._idle = [InlineWorker() for _ in range(size)]
        self._busy: set[InlineWorker] = set()
        self._waiting = 0
        self._cond = threading.Condition()

    @property
    def size(self) -> int:
        return self._size

    def acquire(
        self, user: str, n: int, timeout_s: float, cancelled: threading.Event | None = None
    ) -> Sequence[InlineWorker]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._waiting += 1
            try:
                while not self._idle:
                    if cancelled is not None and cancelled.is_set():
                        raise Cancelled()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolBusy()
                    self._cond.wait(remaining)
                got = [self._idle.pop() for _ in range(min(n, len(self._idle)))]
                for w in got:
                    w.user = user
                    self._busy.add(w)
                return got
            finally:
                self._waiting -= 1

    def release(self, worker: InlineWorker, healthy: bool = True) -> None:
        with self._cond:
            self._busy.discard(worker)
            self._idle.append(worker if healthy and not worker.killed else InlineWorker())
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return self._waiting

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def busy(self) -> int:
        with self._cond:
            return len(self._busy)
