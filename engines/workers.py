"""The seam between running a call and the processes that run its tasks.

A `Runner` needs only this of its workers: take some for a user's key, run a task on one (answering the
script's `import oml` requests meanwhile), kill one, give them back. `engines.pool.WorkerPool` implements it
with sandboxed local processes; `engines.inline.InlinePool` runs the same worker runtime in this process, for
fast tests of everything above the processes. Nothing above the seam knows which one runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from engines.channel import Channel
from engines.pool import RequestHandler
from engines.protocol import Result, Task
from tables.pg_partitions import Partition

T = TypeVar("T")


class Worker(Protocol):
    #: Killed (by a time limit, a cancellation, or for breaking the rules): it must not be used again.
    killed: bool

    def run(
        self, task: Task, data: list[bytes], timeout_s: float, on_request: RequestHandler | None = None
    ) -> list[Result]:
        """The task's results, one per unit, stopping at the first failure; `engines.pool.WorkerTimedOut` past
        `timeout_s`, `engines.pool.WorkerDied` when the worker died or was killed meanwhile."""
        ...

    def kill(self, reason: str | None = None) -> None: ...


class ModelWorker(Worker, Protocol):
    """A worker that also loads and scores models (`engines.scoring`): a local process, on the API server."""

    #: Digest of the model the worker has loaded (`engines.scoring`), if any.
    model: str | None

    def exchange(
        self,
        send: Callable[[Channel, float], None],
        read: Callable[[dict[str, Any], list[Any]], T],
        timeout_s: float,
    ) -> T:
        """One message (`send` writes it before the deadline it is given) and its answer, checked by `read`
        (a ChannelError there kills the worker); WorkerTimedOut or WorkerDied as for `run`."""
        ...


class PartitionWorker(Worker, Protocol):
    """A worker that reads its row-apply input itself (`Workers.reads_partitions`): the Dask engine's, close to
    the data, so the server does not read and push every row."""

    def run_partition(
        self, task: Task, partition: Partition, rows: int, timeout_s: float, on_request: RequestHandler | None = None
    ) -> list[Result]:
        """The results of `task` (a template without units) over the partition's rows cut into chunks of `rows`,
        named 1, 2, ... within the partition; as `run` for failures."""
        ...


W = TypeVar("W", bound=Worker)


class Workers(Protocol[W]):
    #: Most workers there are (a call's parallelism is capped by it).
    @property
    def size(self) -> int: ...

    #: Whether its workers are `PartitionWorker`s (a large row-apply input on PostgreSQL is then planned as
    #: partitions that the workers read, instead of streamed through the server).
    reads_partitions: bool

    def acquire(self, user: str, n: int, timeout_s: float, cancelled: threading.Event | None = None) -> Sequence[W]:
        """Up to `n` workers for the key `user` (at least one); `engines.errors.PoolBusy` after `timeout_s`,
        `engines.errors.Cancelled` once `cancelled` is set (and `wake()` was called)."""
        ...

    def release(self, worker: W, healthy: bool = True) -> None: ...

    def waiting(self) -> int:
        """Callers waiting for a worker (a running call gives workers back between tasks when this is > 0)."""
        ...

    def wake(self) -> None:
        """Wake the callers waiting in acquire(), so a cancelled one stops waiting."""
        ...
