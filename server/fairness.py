"""Per-user admission of execution calls, decided in async code before a call takes a threadpool thread: one
user's calls cannot fill the server's thread pool (anyio's 40 threads), so `/health` and other users' calls
keep being served while one user floods the server with heavy queries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from server.settings import Settings


class TooManyCalls(Exception):
    """A user has as many execution calls in flight as allowed, and none finished in time (429 + Retry-After)."""

    def __init__(self, user: str, limit: int, retry_after: int = 1) -> None:
        self.user, self.limit, self.retry_after = user, limit, retry_after
        super().__init__(f"{user} already has {limit} calls running, the most allowed; retry later")


@dataclass
class _User:
    slots: asyncio.Semaphore
    #: Calls holding or waiting for a slot (the entry is dropped when it falls to 0), and calls holding one.
    users: int = 0
    running: int = 0


@dataclass
class UserSlots:
    """At most `per_user` execution calls of one user in flight in this server process; a call over it waits up
    to `wait_s` for one of the user's own calls to finish, then fails with TooManyCalls."""

    per_user: int
    wait_s: float
    _users: dict[str, _User] = field(default_factory=dict)

    def in_flight(self, user: str) -> int:
        entry = self._users.get(user)
        return 0 if entry is None else entry.running

    @asynccontextmanager
    async def hold(self, user: str, *, within_call: bool = False) -> AsyncIterator[None]:
        """Hold one of `user`'s slots for the duration of the block (none `within_call`, see `take`)."""
        slot = await self.take(user, within_call=within_call)
        try:
            yield
        finally:
            slot.release()

    async def take(self, user: str, *, within_call: bool = False) -> Slot | NoSlot:
        """One of `user`'s slots, to release (once) when the call is over; TooManyCalls if none frees in time.
        A request a script makes `within_call` (a script token: its `import oml` reading or materializing) takes
        none: the call it runs in holds the caller's slot already, and would otherwise wait on itself (with one
        call per user, for ever). The bridge and the relay bound how many requests a call can make at once."""
        if within_call:
            return NoSlot()
        entry = self._users.get(user)
        if entry is None:
            entry = self._users[user] = _User(asyncio.Semaphore(self.per_user))
        entry.users += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await entry.slots.acquire()
        except TimeoutError:
            self._leave(user, entry)
            raise TooManyCalls(user, self.per_user, retry_after=max(1, round(self.wait_s))) from None
        except BaseException:
            self._leave(user, entry)
            raise
        entry.running += 1
        return Slot(self, user, entry)

    def _leave(self, user: str, entry: _User) -> None:
        entry.users -= 1
        if entry.users == 0:
            self._users.pop(user, None)


class Slot:
    """A held slot; `release` may be called any number of times (only the first counts)."""

    def __init__(self, slots: UserSlots, user: str, entry: _User) -> None:
        self._slots, self._user, self._entry = slots, user, entry
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._entry.running -= 1
        self._entry.slots.release()
        self._slots._leave(self._user, self._entry)  # noqa: SLF001 - the slot's own pool


class NoSlot:
    """What a request made within a call holds: nothing to release."""

    def release(self) -> None:
        pass


def user_slots(state: Any, settings: Settings) -> UserSlots:
    """The app's UserSlots (made on first use, from the settings)."""
    slots = getattr(state, "user_slots", None)
    if slots is None:
        slots = state.user_slots = UserSlots(settings.user_call_limit, settings.calls_wait_s)
    return slots
