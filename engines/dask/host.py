"""The pyqd side of a Dask worker: a `WorkerPlugin` that hosts pyqd's own sandboxed worker pool, and the task
function that hands one Task to it.

A Dask worker process is shared by every user, so user code never runs in it: each Dask task takes a pyqd worker
process for the task's key (one user per process, rlimits, seccomp, Landlock, no secrets: `engines.pool`, the
same walls as on the API server) and runs the Task there. The Dask worker holds no database credential and no
signing key. A script's `import oml` reaches the API servers through `Relay`, with the call's short-lived script
token; the sandboxed process never sees the token.

What goes back to the API server is one bytes object: a msgpack array of the header and the blobs of the pyqd
worker's own `results` message (`engines.wire.results_message`), or of a `status` header when no results came
(time limit, crash, cancellation). One object, because Dask frames every item of a list on its own. The API
server checks it with the same grammar as a local worker's answer, and its Dask client accepts no pickle
(`engines.dask.engine`). A task never raises: an exception would travel pickled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import orjson
from cachetools import TTLCache
from distributed import WorkerPlugin, get_worker

from engines import units as u
from engines import wire
from engines.dask import RELAY_MEDIA_TYPE
from engines.errors import InvalidApplyRequest, PoolBusy
from engines.pool import PoolSettings, Worker, WorkerDied, WorkerPool, WorkerTimedOut
from engines.protocol import Result, Task
from tables.errors import QueryTimedOut, TablesError
from tables.pg_partitions import Partition, read_partition

log = logging.getLogger("pyqd.dask")

PLUGIN_NAME = "pyqd"
#: Seconds a cancelled call's id is remembered (tasks of it that arrive later do not start).
CANCELLED_TTL_S = 3600.0


@dataclass(frozen=True)
class RelayAccess:
    """How a Dask worker serves one call's `import oml`: the API's relay URL and the call's script token."""

    url: str
    token: str
    read_only: bool


class PyqdHost(WorkerPlugin):
    """pyqd's worker pool inside one Dask worker: as many sandboxed processes as the Dask worker has threads."""

    name = PLUGIN_NAME

    def __init__(self, limits: PoolSettings) -> None:
        self.limits = limits
        self.pool: WorkerPool | None = None
        self._lock = threading.Lock()
        #: The pyqd workers running each call's tasks here, so a cancellation can kill them.
        self._running: dict[str, set[Worker]] = {}
        self._cancelled: TTLCache[str, bool] = TTLCache(100_000, CANCELLED_TTL_S)

    def __getstate__(self) -> dict[str, Any]:
        """The plugin travels to each Dask worker as its limits only; the rest is made there."""
        return {"limits": self.limits}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limits"])  # type: ignore[misc]

    # -- plugin lifecycle (called by Dask) --------------------------------------------------------------------
    def setup(self, worker: Any = None) -> None:
        size = max(1, int(getattr(getattr(worker, "state", None), "nthreads", 0) or 1))
        # The API server shares the cluster out between users; here a call may use every process.
        self.pool = WorkerPool(self.limits.config(size, per_user=size))
        self.pool.start()

    def teardown(self, worker: Any = None) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- tasks ------------------------------------------------------------------------------------------------
    def run(self, key: str, task: Task, data: list[bytes], timeout_s: float, relay: RelayAccess | None) -> bytes:
        """The task's `results` message from a pyqd worker for `key`, or a `status` message."""

        def work(worker: Worker, deadline: float, handler: Relay | None) -> list[Result]:
            return worker.run(task, data, max(0.0, deadline - time.monotonic()), handler)

        return self._with_worker(key, task, timeout_s, relay, work)

    def run_partition(
        self, key: str, task: Task, partition: Partition, rows: int, timeout_s: float, relay: RelayAccess | None
    ) -> bytes:
        """Read one partition of the call's input here (with the call's own short-lived database role), cut it into
        chunks of `rows`, and run them on a pyqd worker for `key` a task at a time; the results of every chunk (named
        1, 2, ... within the partition), stopping at the first failure."""

        def work(worker: Worker, deadline: float, handler: Relay | None) -> list[Result]:
            results: list[Result] = []
            size = 0
            batches = read_partition(partition, timeout_s=max(0.001, deadline - time.monotonic()))
            for group in u.per_task(u.chunks(batches, rows)):
                sub, messages = u.pack(task, group)
                got = worker.run(sub, messages, max(0.0, deadline - time.monotonic()), handler)
                results.extend(got)
                size += sum(len(r.json) for r in got)
                if size > task.output_max_bytes:
                    raise _Stop("size", f"the partition's results are over {task.output_max_bytes} bytes")
                if any(not r.ok for r in got):
                    break
            if not results:
                raise _Stop("empty", "")
            return results

        return self._with_worker(key, task, timeout_s, relay, work)

    def _with_worker(
        self,
        key: str,
        task: Task,
        timeout_s: float,
        relay: RelayAccess | None,
        work: Callable[[Worker, float, Relay | None], list[Result]],
    ) -> bytes:
        """`work` on a pyqd worker for `key` (registered under the call, so a cancellation can kill it) → the
        `results` message, or a `status` message saying why there are none."""
        if self.pool is None:
            return _status("unavailable", "this Dask worker has no pyqd pool")
        if task.call_id in self._cancelled:
            return _status("cancelled", "the call was cancelled")
        deadline = time.monotonic() + timeout_s
        try:
            (worker,) = self.pool.acquire(key, 1, timeout_s)
        except PoolBusy:
            return _status("timeout", "no pyqd worker became free before the call's time limit")
        with self._lock:
            self._running.setdefault(task.call_id, set()).add(worker)
            cancelled = task.call_id in self._cancelled
        if cancelled:
            worker.kill("the call was cancelled")
        handler = Relay(relay, deadline) if relay is not None else None
        try:
            header, blobs = wire.results_message(work(worker, deadline, handler))
            return _message(header, blobs)
        except _Stop as e:
            return _status(e.status, e.message)
        except (WorkerTimedOut, QueryTimedOut):
            worker.kill("the call's time limit passed")
            return _status("timeout", "the call's time limit passed")
        except WorkerDied as e:
            if task.call_id in self._cancelled:
                return _status("cancelled", "the call was cancelled")
            return _status("died", str(e))
        except (TablesError, InvalidApplyRequest) as e:  # reading the partition failed
            return _status("input", str(e))
        finally:
            if handler is not None:
                handler.close()
            with self._lock:
                running = self._running.get(task.call_id)
                if running is not None:
                    running.discard(worker)
                    if not running:
                        del self._running[task.call_id]
            self.pool.release(worker, healthy=not worker.killed)

    def cancel(self, call_id: str) -> int:
        """Stop the call's tasks here: kill the pyqd workers running them; later ones do not start."""
        with self._lock:
            self._cancelled[call_id] = True
            workers = list(self._running.get(call_id, ()))
        for w in workers:
            w.kill("the call was cancelled")
        return len(workers)


class _Stop(Exception):
    """Ends a task early with a status (`status`, `message`)."""

    def __init__(self, status: str, message: str) -> None:
        self.status, self.message = status, message


def _message(header: dict[str, Any], blobs: list[Any]) -> bytes:
    packed: bytes = msgpack.packb([msgpack.packb(header, use_bin_type=True), [bytes(b) for b in blobs]])
    return packed


def _status(status: str, message: str) -> bytes:
    return _message({"t": "status", "status": status, "message": message}, [])


# -- the functions Dask runs ----------------------------------------------------------------------------------
def run_task(key: str, task: Task, data: list[bytes], timeout_s: float, relay: RelayAccess | None) -> bytes:
    """A Dask task: one pyqd Task on this Dask worker's pool. Never raises (an exception would go back pickled)."""
    try:
        host = _host()
        if host is None:
            return _status("unavailable", "this Dask worker does not host pyqd (the plugin is not set up)")
        return host.run(key, task, data, timeout_s, relay)
    except Exception as e:  # noqa: BLE001 - reported as a status, never raised through Dask
        log.exception("pyqd task of call %s failed on this Dask worker", getattr(task, "call_id", "?"))
        return _status("died", f"the Dask worker failed to run the task ({type(e).__name__})")


def run_partition_task(
    key: str, task: Task, partition: Partition, rows: int, timeout_s: float, relay: RelayAccess | None
) -> bytes:
    """A Dask task: one partition of a row-apply input, read and run here. Never raises. A plain function, so Dask
    runs it in one of the worker's threads: a coroutine would run on the Dask worker's event loop and, blocking for
    the whole partition, stop that worker talking to anyone (other users' tasks, cancellations, heartbeats)."""
    try:
        host = _host()
        if host is None:
            return _status("unavailable", "this Dask worker does not host pyqd (the plugin is not set up)")
        return host.run_partition(key, task, partition, rows, timeout_s, relay)
    except Exception as e:  # noqa: BLE001 - reported as a status, never raised through Dask
        log.exception("pyqd partition task of call %s failed on this Dask worker", getattr(task, "call_id", "?"))
        return _status("died", f"the Dask worker failed to run the task ({type(e).__name__})")


async def cancel_call(call_id: str, dask_worker: Any = None) -> int:
    """Run on every Dask worker by `Client.run` when a call is cancelled or runs out of time (a coroutine, so the
    client need not wait for it; killing a process takes no time). Dask hands `dask_worker` in."""
    host = _host(dask_worker)
    return host.cancel(call_id) if host is not None else 0


def host_stats(dask_worker: Any = None) -> dict[str, int]:
    """The hosted pool's counts (for readiness and tests; run by `Client.run`, which hands `dask_worker` in)."""
    host = _host(dask_worker)
    return host.pool.stats() if host is not None and host.pool is not None else {}


def _host(worker: Any = None) -> PyqdHost | None:
    plugin = (worker or get_worker()).plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, PyqdHost) else None


# -- a script's `import oml` from a Dask worker ---------------------------------------------------------------
class Relay:
    """Serves a pyqd worker's `import oml` requests by relaying them to the API servers (`server.routes.relay`),
    which check them exactly as the bridge of a local call does. The call's script token is added here; the
    sandboxed process never holds it."""

    def __init__(self, access: RelayAccess, deadline: float) -> None:
        self.access, self.deadline = access, deadline
        self._client: httpx.Client | None = None

    def __call__(self, message: tuple) -> tuple:
        _, method, path, headers, body = message
        payload = msgpack.packb([method, path, [list(h) for h in headers], body, self.access.read_only])
        remaining = max(1.0, self.deadline - time.monotonic())
        try:
            if self._client is None:
                self._client = httpx.Client(timeout=remaining, follow_redirects=False)
            r = self._client.post(
                self.access.url,
                content=payload,
                headers={"authorization": f"Bearer {self.access.token}", "content-type": RELAY_MEDIA_TYPE},
                timeout=remaining,
            )
        except httpx.HTTPError as e:
            return _error(502, 1502, f"the API server could not be reached from the Dask worker ({type(e).__name__})")
        if r.status_code != 200 or r.headers.get("content-type") != RELAY_MEDIA_TYPE:
            # The relay itself refused (an expired or revoked token, the server busy): the script sees that answer.
            kept = [(k, v) for k, v in r.headers.raw if k.lower() in (b"content-type", b"retry-after")]
            return ("http-response", r.status_code, kept, r.content)
        try:
            status, out_headers, out_body = msgpack.unpackb(r.content, raw=False, max_ext_len=0)
            return ("http-response", int(status), [(bytes(k), bytes(v)) for k, v in out_headers], bytes(out_body))
        except Exception:  # noqa: BLE001 - a malformed answer is the API server's fault; the script gets a 502
            return _error(502, 1502, "the API server's relayed answer was malformed")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _error(status: int, code: int, message: str) -> tuple:
    body = orjson.dumps({"errorCode": code, "errorMessage": message})
    return ("http-response", status, [(b"content-type", b"application/json")], body)
