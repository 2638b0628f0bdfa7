"""A query's deadline: fixed when the query is prepared, so time spent waiting for a worker counts too."""

from __future__ import annotations

import time

from tables.errors import QueryTimedOut


class Deadline:
    """`seconds` from now (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def check(self) -> None:
        """QueryTimedOut once the deadline has passed."""
        if self.passed():
            raise QueryTimedOut(self.seconds)
