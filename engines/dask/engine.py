"""The Dask engine: the `engines.workers.Workers` seam implemented on a Dask distributed cluster.

A Runner takes workers, runs tasks on them and gives them back, whichever engine it runs on. Here a "worker" is a
slot in the cluster (`RemoteWorker`), and running a task on it submits one Dask task (`engines.dask.host.run_task`)
that hands the Task to pyqd's sandboxed pool on whichever Dask worker the scheduler picks. Everything above the
seam (units, chunk order, assembly, print() capture, graphics, time limits, jobs) is the local engine's code.

- **Admission**: calls are served in arrival order, a user at a full share is passed over, as in
  `engines.pool.WorkerPool`; the capacity is the cluster's thread count as the scheduler last reported it.
- **Failures**: a Dask worker that dies mid-task has its task run again on another worker by the scheduler, once
  (`distributed.scheduler.allowed-failures` = 1, set by whoever starts the scheduler, see docs/scaling.md); a
  second death is `KilledWorker`, the call fails with a clear error. Each task's answer is taken once, in the
  Runner's order, so no chunk is lost or counted twice.
- **No pickle from the cluster**: the client is made with `deserializers=["msgpack"]` and opens none of the other
  pickles distributed's client would (`engines.dask.client`); a task answers plain bytes (checked by
  `engines.wire.read_results` as a local worker's answer is) and never raises.
- **Unreachable scheduler**: a supervisor thread keeps (re)connecting; until it is connected with at least one
  worker, `acquire` raises `ClusterUnavailable` at once (503 with Retry-After) and `problem()` says why (`/ready`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

import msgpack

from engines.channel import MAX_BLOBS, ChannelError, decode_header
from engines.dask import RELAY_PATH
from engines.dask.client import ClusterError
from engines.dask.host import (
    PLUGIN_NAME,
    PyqdHost,
    RelayAccess,
    cancel_call,
    run_partition_task,
    run_task,
)
from engines.errors import (
    Cancelled,
    ClusterUnavailable,
    EnvironmentUnsupported,
    InputQueryFailed,
    OutputTooLarge,
    PoolBusy,
)
from engines.pool import PoolSettings, RequestHandler, WorkerDied, WorkerTimedOut
from engines.pool import _user_of as user_of
from engines.protocol import Result, Task, Unit
from engines.wire import read_results
from tables.pg_partitions import Partition

log = logging.getLogger("pyqd.dask")

#: Seconds between the supervisor's looks at the connection.
SUPERVISE_S = 0.5
#: Seconds a task's answer is awaited per look (the call's deadline and a lost connection are checked between).
POLL_S = 0.25
#: What users and /ready are told while the scheduler cannot be reached (its address is for the log only).
UNREACHABLE = "the Dask scheduler cannot be reached"


@dataclass(frozen=True)
class DaskConfig:
    #: `tcp://host:8786`, or the path of a scheduler file.
    scheduler: str
    #: The URL Dask workers reach the API servers at (for scripts' `import oml`).
    api_url: str
    host: PoolSettings = PoolSettings()
    #: Most slots one user holds (None: half the cluster's threads, at least one).
    per_user: int | None = None
    connect_timeout_s: float = 5.0


class DaskWorkers:
    """The cluster as a pool of slots (see the module's docstring)."""

    #: Its workers read their row-apply input themselves, close to the data (`run_partition`).
    reads_partitions = True

    def __init__(self, config: DaskConfig) -> None:
        self.config = config
        #: Where Dask workers relay scripts' `import oml` requests (set per test run by the test fixtures).
        self.api_url = config.api_url
        self._client: Any = None
        self._capacity = 0
        self._workers = 0
        self._problem: str | None = "not connected to the Dask scheduler yet"
        self._cond = threading.Condition()
        self._held: Counter[str] = Counter()
        self._queue: deque[tuple[str, object]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cancelled_calls: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, wait_s: float = 0.0) -> None:
        """Connect in the background (the server answers at once; calls get 503 until the cluster is there); with
        `wait_s`, wait that long for a first connection."""
        self._thread = threading.Thread(target=self._supervise, name="pyqd-dask", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._problem is not None and time.monotonic() < deadline:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken client
                log.debug("closing the Dask client failed", exc_info=True)

    def problem(self) -> str | None:
        """Why calls cannot run now (None: connected, with workers)."""
        return self._problem

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "scheduler": "connected" if self._client is not None else "not connected",
                "workers": self._workers,
                "slots": self._capacity,
                "busy": sum(self._held.values()),
                "waiting": len(self._queue),
            }

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._look()
            except Exception:  # noqa: BLE001 - keep supervising; the next look retries
                log.exception("looking at the Dask cluster failed")
            self._stop.wait(SUPERVISE_S)

    def _look(self) -> None:
        client = self._client
        if client is not None and client.status != "running":
            log.warning("lost the Dask scheduler at %s (%s); reconnecting", self.config.scheduler, client.status)
            self._client = None
            self._set(0, 0, UNREACHABLE)
            try:
                client.close(timeout=1)
            except Exception:  # noqa: BLE001
                log.debug("closing the lost Dask client failed", exc_info=True)
            client = None
        if client is None:
            try:
                client = self._connect()
            except Exception as e:  # noqa: BLE001 - unreachable: say so (its address only in the log), try again
                if self._problem != UNREACHABLE:
                    log.warning("the Dask scheduler at %s cannot be reached (%s)", self.config.scheduler, e)
                self._set(0, 0, UNREACHABLE)
                return
            self._client = client
        info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
        workers = info.get("workers", {})
        slots = sum(int(w.get("nthreads", 0)) for w in workers.values())
        self._set(len(workers), slots, None if workers else "the Dask cluster has no workers")

    def _connect(self) -> Any:
        from engines.dask.client import connect

        target = self.config.scheduler
        kwargs: dict[str, Any] = dict(
            timeout=self.config.connect_timeout_s, set_as_default=False, deserializers=["msgpack"]
        )
        if "://" in target:
            client = connect(target, **kwargs)
        else:
            client = connect(scheduler_file=target, **kwargs)
        client.register_plugin(PyqdHost(self.config.host), name=PLUGIN_NAME)
        log.info("connected to the Dask scheduler at %s", target)
        return client

    def _set(self, workers: int, slots: int, problem: str | None) -> None:
        with self._cond:
            self._workers, self._capacity, self._problem = workers, slots, problem
            self._cond.notify_all()

    # -- the Workers seam ---------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return max(1, self._capacity)

    def _share(self) -> int:
        return max(1, self.config.per_user if self.config.per_user is not None else self._capacity // 2)

    def check_environment(self, env: str) -> str:
        """Per-script environments are built on the API server's disk, which the Dask workers do not share."""
        raise EnvironmentUnsupported("envName is not supported on the Dask engine")

    def acquire(
        self, user: str, n: int, timeout_s: float, cancelled: threading.Event | None = None
    ) -> Sequence[RemoteWorker]:
        """Up to `n` slots for `user`'s key; ClusterUnavailable at once while the cluster cannot run anything,
        PoolBusy after `timeout_s`, Cancelled once `cancelled` is set."""
        deadline = time.monotonic() + timeout_s
        who = user_of(user)
        ticket = (who, object())
        with self._cond:
            self._queue.append(ticket)
            try:
                while True:
                    if self._problem is not None:
                        raise ClusterUnavailable(f"Calls cannot run now: {self._problem}; retry later")
                    if cancelled is not None and cancelled.is_set():
                        raise Cancelled()
                    if self._turn() is ticket:
                        free = self._capacity - sum(self._held.values())
                        k = min(n, free, self._share() - self._held[who])
                        if k > 0:
                            self._held[who] += k
                            return [RemoteWorker(self, user) for _ in range(k)]
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolBusy()
                    self._cond.wait(min(remaining, 1.0))
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def _turn(self) -> tuple[str, object] | None:
        """The waiting caller served next: the first whose user has room."""
        for ticket in self._queue:
            if self._held[ticket[0]] < self._share():
                return ticket
        return None

    def release(self, worker: RemoteWorker, healthy: bool = True) -> None:
        with self._cond:
            if worker.released:
                return
            worker.released = True
            self._held[user_of(worker.key)] -= 1
            if self._held[user_of(worker.key)] <= 0:
                del self._held[user_of(worker.key)]
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- used by RemoteWorker -----------------------------------------------------------------------------------
    def client(self) -> Any:
        client = self._client
        if client is None:
            raise WorkerDied(self._problem or "the Dask scheduler cannot be reached")
        return client

    def cancel_call(self, call_id: str) -> None:
        """Kill the call's pyqd workers on every Dask worker (once per call)."""
        with self._cond:
            if call_id in self._cancelled_calls:
                return
            self._cancelled_calls.add(call_id)
            if len(self._cancelled_calls) > 10_000:
                self._cancelled_calls.clear()
        client = self._client
        if client is None:
            return
        try:
            client.run(cancel_call, call_id, wait=False)
        except Exception:  # noqa: BLE001 - the cluster is gone: its tasks went with it
            log.warning("could not reach the Dask workers to cancel call %s", call_id, exc_info=True)

    def relay_access(self, on_request: RequestHandler | None) -> RelayAccess | None:
        relay = getattr(on_request, "relay", None)
        if relay is None:
            return None
        access = relay()
        if access is None:
            return None
        token, read_only = access
        return RelayAccess(self.api_url.rstrip("/") + RELAY_PATH, token, read_only)


class RemoteWorker:
    """A slot of one call in the cluster: each `run` is one Dask task. (Not a `ModelWorker`: model scoring stays
    on the API server's own pool.)"""

    def __init__(self, engine: DaskWorkers, key: str) -> None:
        self.engine, self.key = engine, key
        self.killed = False
        self.released = False
        self._future: Any = None
        self._call_id: str | None = None

    def run(
        self, task: Task, data: list[bytes], timeout_s: float, on_request: RequestHandler | None = None
    ) -> list[Result]:
        answer = self._submit(run_task, task, (data,), timeout_s, on_request, "")
        return _read(answer, task)

    def run_partition(
        self, task: Task, partition: Partition, rows: int, timeout_s: float, on_request: RequestHandler | None = None
    ) -> list[Result]:
        """One partition of the call's input, read and run on a Dask worker (`engines.dask.host.run_partition`)."""
        answer = self._submit(
            run_partition_task, task, (partition, rows), timeout_s, on_request, f"p{partition.index}-"
        )
        return _read(answer, task, partition=True)

    def _submit(
        self,
        function: Callable[..., bytes],
        task: Task,
        args: tuple[Any, ...],
        timeout_s: float,
        on_request: RequestHandler | None,
        tag: str,
    ) -> Any:
        """One Dask task `function(key, task, *args, timeout_s, relay)`, and its answer before the deadline."""
        if self.killed:
            raise WorkerDied("the call was stopped")
        deadline = time.monotonic() + timeout_s
        relay = self.engine.relay_access(on_request) if task.oml else None
        client = self.engine.client()
        self._call_id = task.call_id
        self._future = future = client.submit(
            function,
            self.key,
            task,
            *args,
            timeout_s,
            relay,
            key=f"pyqd-{task.call_id}-{tag}{uuid.uuid4().hex}",
            pure=False,
        )
        try:
            return self._wait(future, deadline)
        finally:
            self._future = None

    def _wait(self, future: Any, deadline: float) -> Any:
        """The task's answer, waited for with a done-callback and an Event (never `Future.result(timeout=...)` in a
        loop: distributed's `sync` fails now and then with UnboundLocalError when several threads time out on one
        client at once), looking at the deadline, a kill and the connection between polls."""
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(min(POLL_S, max(0.0, deadline - time.monotonic()))):
            if self.killed:
                future.cancel()
                raise WorkerDied("the call was stopped")
            if time.monotonic() >= deadline:
                self.kill()
                raise WorkerTimedOut()
            if self.engine.problem() is not None and self.engine._client is None:
                raise WorkerDied(f"the Dask cluster was lost: {self.engine.problem()}")
        if self.killed:
            raise WorkerDied("the call was stopped")
        try:
            return future.result()  # done: no waiting, no timeout
        except CancelledError:
            raise WorkerDied("the task was cancelled in the Dask cluster") from None
        except Exception as e:  # noqa: BLE001 - KilledWorker, a refused pickle, a lost scheduler
            raise WorkerDied(_dask_failure(e)) from None

    def kill(self, reason: str | None = None) -> None:
        """Stop this call's tasks in the cluster (the Runner kills every worker of a call at once)."""
        self.killed = True
        future = self._future
        if future is not None:
            future.cancel()
        if self._call_id is not None:
            self.engine.cancel_call(self._call_id)


def _read(answer: Any, task: Task, partition: bool = False) -> list[Result]:
    """A task's answer, checked as a local worker's is (a partition's chunks must be named 1, 2, ... in order);
    the failure a `status` answer names, raised."""
    try:
        if not isinstance(answer, bytes):
            raise ChannelError("not bytes")
        parts = msgpack.unpackb(answer, raw=False, max_ext_len=0, max_map_len=0, max_str_len=0, max_array_len=MAX_BLOBS)
        if not (isinstance(parts, list) and len(parts) == 2 and isinstance(parts[0], bytes)):
            raise ChannelError("not [header, blobs]")
        packed, blobs = parts
        if not (isinstance(blobs, list) and all(isinstance(b, bytes) for b in blobs)):
            raise ChannelError("blobs are not bytes")
        header = decode_header(packed)
        if header["t"] == "results":
            units = task.units
            if partition:
                n = len(header["units"]) if isinstance(header.get("units"), list) else 0
                units = [Unit(str(i + 1)) for i in range(n)]
            return read_results(header, blobs, units)
        if header["t"] != "status":
            raise ChannelError(f"unexpected message {str(header['t'])[:40]!r}")
    except (ChannelError, ValueError, msgpack.UnpackException) as e:
        raise WorkerDied(f"the Dask worker's answer broke the protocol ({e})") from None
    status, message = header.get("status"), str(header.get("message", ""))[:2000]
    if status == "timeout":
        raise WorkerTimedOut()
    if status == "empty" and partition:
        return []
    if status == "input":
        raise InputQueryFailed(message or "reading the input failed")
    if status == "size":
        raise OutputTooLarge(task.output_max_bytes)
    raise WorkerDied(message or "the task failed on the Dask worker")


def _dask_failure(e: Exception) -> str:
    name = type(e).__name__
    if name == "KilledWorker" or (isinstance(e, ClusterError) and e.killed):
        return "the Dask workers running this task died (it was tried on another worker, which died too)"
    if isinstance(e, TypeError) and "deserialize" in str(e):
        return "the Dask worker answered with a pickle, which pyqd refuses"
    return f"the Dask cluster failed to run the task ({name})"


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters
