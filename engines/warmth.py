"""How many fresh workers the pool keeps ready for each per-script environment, sized by use.

An environment starts with none. Each call that finds no ready worker of its environment raises the number by one,
up to the pool's `warm` setting (at least one); a preload (`POST /py-scripts/v2/preload/conda`) keeps at least one
until it expires. An environment with no call for the pool's idle timeout, and no preload, goes back to none (the
pool retires its fresh workers). The pool holds its lock around every call here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Demand:
    #: Fresh workers to keep ready.
    want: int = 0
    #: When a call last asked for the environment (monotonic seconds; never: minus infinity).
    last_used: float = float("-inf")
    #: Until when a preload keeps it warm (monotonic seconds).
    held_until: float = float("-inf")


class EnvWarmth:
    def __init__(self, cap: int, idle_timeout_s: float) -> None:
        #: Most fresh workers kept ready for one environment.
        self.cap = max(1, cap)
        self.idle_timeout_s = idle_timeout_s
        self._demand: dict[str, _Demand] = {}

    def used(self, env: str, short: bool, now: float | None = None) -> None:
        """A call for `env` took workers; `short`: it found too few ready (keep one more ready from now on)."""
        d = self._demand.setdefault(env, _Demand())
        d.last_used = time.monotonic() if now is None else now
        if short:
            d.want = min(self.cap, d.want + 1)

    def hold(self, env: str, seconds: float, now: float | None = None) -> None:
        """Keep at least one worker of `env` ready for `seconds` from now (0: end the hold)."""
        now = time.monotonic() if now is None else now
        d = self._demand.setdefault(env, _Demand())
        d.held_until = now + seconds if seconds > 0 else float("-inf")

    def wanted(self, env: str, now: float | None = None) -> int:
        """Fresh workers to keep ready for `env` now."""
        d = self._demand.get(env)
        if d is None:
            return 0
        now = time.monotonic() if now is None else now
        held = 1 if d.held_until > now else 0
        used = d.want if now - d.last_used < self.idle_timeout_s else 0
        return max(held, used)

    def active(self) -> list[str]:
        """The environments with any demand recorded (wanted or not)."""
        return list(self._demand)

    def forget_idle(self, now: float | None = None) -> list[str]:
        """Drop the environments that want no worker now (their demand starts again from none); returns them."""
        now = time.monotonic() if now is None else now
        idle = [env for env in self._demand if self.wanted(env, now) == 0]
        for env in idle:
            del self._demand[env]
        return idle

    def forget(self, env: str) -> None:
        """The environment is gone: no demand for it."""
        self._demand.pop(env, None)

    def snapshot(self, now: float | None = None) -> dict[str, int]:
        now = time.monotonic() if now is None else now
        return {env: self.wanted(env, now) for env in self._demand}
