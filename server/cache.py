"""A small time-bounded cache for hot lookups (token sessions, scripts) on the request path.

Entries live `ttl_s` seconds. Changes made through this server clear the cache at once; with several servers a
change made on another one is seen within `ttl_s` (docs/compatibility.md says so)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

#: Most entries kept (the oldest are dropped first).
MAX_ENTRIES = 10_000


class TTLCache(Generic[V]):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._items: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            hit = self._items.get(key)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self.ttl_s else None

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl_s > 0:
            with self._lock:
                if len(self._items) >= MAX_ENTRIES:
                    self._items.pop(next(iter(self._items)))
                self._items[key] = (time.monotonic(), value)

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value, or `load()`'s (cached when it returns; exceptions are not cached)."""
        now = time.monotonic()
        if self.ttl_s > 0:
            with self._lock:
                hit = self._items.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        value = load()
        if self.ttl_s > 0:
            with self._lock:
                if len(self._items) >= MAX_ENTRIES:
                    self._items.pop(next(iter(self._items)))
                self._items[key] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
