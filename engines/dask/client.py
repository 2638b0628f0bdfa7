"""The Dask client of an API server, made to open nothing pickled that a Dask worker wrote.

`deserializers=["msgpack"]` keeps a task's result from being unpickled, but distributed's `Client` unpickles other
things a Dask worker writes and the scheduler passes on as they are: the type of every finished task's result
(`key-in-memory`), a failed task's exception and traceback (`task-erred`), the errors of `Client.run` and of plugin
registration, and `warn` events. Any of them would let whoever holds a Dask worker process run code in every API
server, which holds the database's credentials and the signing key. Here:

- `distributed.client`'s `loads` and `clean_exception` are replaced by versions that never unpickle: a failure is
  `ClusterError` with the text the message carries (and whether the scheduler gave up on a task whose workers
  died, `KilledWorker`, read from the pickle's opcodes without running them);
- the client drops `warn` events (pickles) and `print` events.

What this does not cover: the scheduler itself. Its messages may carry pickles at the protocol level (and its
answers' errors are unpickled by `distributed.core`), so the scheduler must be as trusted as the API servers; and a
Dask worker taken over can attack the scheduler.
"""

from __future__ import annotations

import pickletools
import threading
import types
from typing import Any

from distributed import Client

#: Longest error text kept from the cluster.
MAX_TEXT = 2000
#: Event topics distributed subscribes every client to, dropped here.
DROPPED_TOPICS = frozenset({"warn", "print"})

_patched = threading.Lock()


class ClusterError(Exception):
    """A failure the Dask cluster reported, kept as text (nothing it sent is unpickled)."""

    def __init__(self, message: str, killed: bool = False) -> None:
        super().__init__(message[:MAX_TEXT])
        #: The scheduler gave the task up after the workers running it died (distributed's KilledWorker).
        self.killed = killed


class PlainClient(Client):
    """A Dask client that drops the events every client subscribes to: `warn` events carry pickles, `print` events
    are a Dask worker's text for this server's output."""

    async def _handle_event(self, topic: str, event: Any) -> None:
        if topic in DROPPED_TOPICS:
            return
        await super()._handle_event(topic, event)


def connect(*args: Any, **kwargs: Any) -> PlainClient:
    """A PlainClient, once `distributed.client` has been made to unpickle nothing (see the module's docstring)."""
    import distributed.client as dc

    with _patched:
        dc.loads = refuse_pickle  # type: ignore[assignment]
        dc.clean_exception = plain_exception  # type: ignore[assignment]
    return PlainClient(*args, **kwargs)


def refuse_pickle(data: object, *args: Any, **kwargs: Any) -> Any:
    """In place of `pickle.loads` for what the cluster sent: raises ClusterError (callers expect an error)."""
    raise ClusterError(f"the Dask cluster sent a pickle, which pyqd does not open ({describe(data)})")


def plain_exception(
    exception: object = None, traceback: object = None, **kwargs: Any
) -> tuple[type[BaseException] | None, BaseException | None, types.TracebackType | None]:
    """In place of `distributed.core.clean_exception` in the client: the exception without unpickling it, and no
    traceback. One the client made itself (an instance already) is kept."""
    if exception is None:
        return None, None, None
    if isinstance(exception, BaseException):
        return type(exception), exception, None
    text = kwargs.get("exception_text")
    killed = "KilledWorker" in globals_of(exception)
    message = text if isinstance(text, str) and text else "the Dask cluster reported a failure"
    return ClusterError, ClusterError(message, killed=killed), None


def describe(data: object) -> str:
    """What a pickle refers to, for a message: the names it would import (read from its opcodes; nothing runs)."""
    names = globals_of(data)
    return "refers to " + ", ".join(names[:5]) if names else "not a readable pickle"


def globals_of(data: object) -> list[str]:
    """The names (without their module) a pickle would import, read with pickletools: nothing runs."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(bytes(data)):
            if op.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.rsplit(" ", 1)[-1])
            elif op.name == "STACK_GLOBAL" and strings:
                names.append(strings[-1])
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a malformed pickle names nothing
        return names
    return [n[:100] for n in names]
