"""The lookup caches on the request path (token sessions, scripts, the datastore generation, deployments), on
cachetools.

Entries live `ttl_s` seconds (PYQD_LOOKUP_CACHE_S; 0 turns caching off). The code that changes what an entry
says forgets it right after its commit (the `Services.forget_*` methods), so this server's next request already
sees the change. On PostgreSQL the same forget is published with NOTIFY and applied by every other server's
listener (server.notify), so the other servers see it within milliseconds; `ttl_s` bounds what one of them can
miss (a server that died between its commit and its NOTIFY; a listener that is reconnecting forgets everything
once it is back). On SQLite there is one host, and nothing to tell."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import Cache, TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Most entries kept (the least recently used are dropped first).
MAX_ENTRIES = 10_000


class LookupCache(Generic[K, V]):
    """A thread-safe TTL cache where forgetting also beats the loads already under way: a value read from the
    database before a change commits is not stored once the change has forgotten its key."""

    def __init__(self, ttl_s: float, maxsize: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self._items: TTLCache[K, V] | None = TTLCache(maxsize, ttl_s) if ttl_s > 0 else None
        self._lock = threading.Lock()
        #: Raised by every `forget`; a load that began under an older epoch does not store its value.
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """Read before a load, handed to `put` after it."""
        return self._epoch

    def get(self, key: K) -> V | None:
        if self._items is None:
            return None
        with self._lock:
            try:
                return self._items[key]  # (get() would look the key up twice)
            except KeyError:
                return None

    def put(self, key: K, value: V, epoch: int) -> None:
        """Keep `value` unless something was forgotten since `epoch` (it may have been read before the change)."""
        if self._items is not None:
            with self._lock:
                if epoch == self._epoch:
                    self._items[key] = value

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The cached value, or `load()`'s (kept when it returns; exceptions are not kept)."""
        epoch = self._epoch
        hit = self.get(key)
        if hit is not None:
            return hit
        value = load()
        self.put(key, value, epoch)
        return value

    def forget(self, match: Callable[[K], bool] | None = None) -> None:
        """Drop the entries whose key matches (all of them without `match`)."""
        with self._lock:
            self._epoch += 1
            if self._items is None:
                return
            if match is None:
                self._items.clear()
                return
            # Cache.__iter__ walks the plain keys: TTLCache's own iterator reads the clock once per key.
            for key in [k for k in Cache.__iter__(self._items) if match(k)]:
                try:
                    del self._items[key]
                except KeyError:  # it had expired (and is gone all the same)
                    pass

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0
