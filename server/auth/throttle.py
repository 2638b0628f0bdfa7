"""Login throttling and bounded password hashing.

`LoginThrottle` counts failed logins per user name and per client address. Past a threshold each further
failure locks the key out for exponentially longer (base × 2^(failures − threshold), capped); while a key is
locked every login for it is refused at once, right password or not, without hashing anything. Failures are
forgotten after a quiet window, and a success clears its user's count (not its address's: one valid account
must not reset an address that guesses at others).

`HashGate` bounds how many argon2 computations run at once (each takes `memory_kib` of memory) and how many
wait for a slot; a request that would wait too long or join too long a queue is refused with a 503 at once.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from server.auth.errors import HashingBusy, LoginThrottled

#: Keys remembered at most (user names and addresses); past it, keys whose lockout is over are forgotten
#: first, then the oldest, so a spray of made-up names cannot grow memory without bound.
MAX_KEYS = 100_000


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


@dataclass(frozen=True)
class ThrottleConfig:
    user_max_failures: int = 5
    address_max_failures: int = 20
    lockout_s: float = 2.0
    lockout_max_s: float = 900.0
    failure_window_s: float = 900.0


class LoginThrottle:
    """Failed logins per user and per address (thread-safe, in this process's memory)."""

    def __init__(self, config: ThrottleConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], _Record] = {}

    def _keys(self, user: str, address: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("user", user.upper()), self.config.user_max_failures)]
        if address:
            keys.append((("addr", address), self.config.address_max_failures))
        return keys

    def check(self, user: str, address: str | None) -> None:
        """LoginThrottled while the user or the address is locked out."""
        now = self._clock()
        with self._lock:
            wait = 0.0
            for key, _ in self._keys(user, address):
                rec = self._records.get(key)
                if rec is not None and rec.locked_until > now:
                    wait = max(wait, rec.locked_until - now)
        if wait > 0:
            raise LoginThrottled(math.ceil(wait))

    def failed(self, user: str, address: str | None) -> None:
        """Count a wrong password (or client secret) for the user and the address."""
        now, c = self._clock(), self.config
        with self._lock:
            for key, threshold in self._keys(user, address):
                rec = self._records.get(key)
                if rec is None:
                    self._make_room(now)
                    rec = self._records[key] = _Record()
                elif now - rec.last_failure > c.failure_window_s and rec.locked_until <= now:
                    rec.failures = 0
                rec.failures += 1
                rec.last_failure = now
                if rec.failures >= threshold:
                    exponent = min(rec.failures - threshold, 30)
                    rec.locked_until = now + min(c.lockout_s * 2**exponent, c.lockout_max_s)

    def succeeded(self, user: str) -> None:
        """A right password: the user's count starts again (the address's does not)."""
        with self._lock:
            self._records.pop(("user", user.upper()), None)

    def _make_room(self, now: float) -> None:
        if len(self._records) < MAX_KEYS:
            return
        window = self.config.failure_window_s
        for key in [k for k, r in self._records.items() if r.locked_until <= now and now - r.last_failure > window]:
            del self._records[key]
        if len(self._records) >= MAX_KEYS:
            oldest = sorted(self._records.items(), key=lambda kv: kv[1].last_failure)[: MAX_KEYS // 2]
            for key, _ in oldest:
                del self._records[key]


#: Requests allowed to wait for a hashing slot, per slot.
WAITERS_PER_SLOT = 4
#: Seconds a request waits for a hashing slot before it is refused.
HASH_WAIT_S = 5.0


def default_hash_concurrency() -> int:
    """One argon2 computation per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class HashGate:
    """At most `slots` password hashes at once and `slots × WAITERS_PER_SLOT` waiting; HashingBusy beyond."""

    def __init__(self, slots: int, wait_s: float = HASH_WAIT_S) -> None:
        self.slots = max(1, slots)
        self.wait_s = wait_s
        self._sem = threading.BoundedSemaphore(self.slots)
        self._lock = threading.Lock()
        self._queued = 0
        #: Most hashes seen running at once (for tests and metrics).
        self.peak = 0
        self._running = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._queued >= self.slots * (1 + WAITERS_PER_SLOT):
                raise HashingBusy()
            self._queued += 1
        try:
            if not self._sem.acquire(timeout=self.wait_s):
                raise HashingBusy()
            try:
                with self._lock:
                    self._running += 1
                    self.peak = max(self.peak, self._running)
                yield
            finally:
                with self._lock:
                    self._running -= 1
                self._sem.release()
        finally:
            with self._lock:
                self._queued -= 1
