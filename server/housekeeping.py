"""A server's periodic chores, in a thread of their own: dropping the temporary tables that expired (clients drop
theirs when they disconnect; these are the ones a crashed client left). Several servers may sweep one database at
once: each table is dropped by exactly one of them (`tables.temporary.sweep`)."""

from __future__ import annotations

import logging
import threading

from server.db import write_session
from server.services import Services
from tables import temporary

log = logging.getLogger("pyqd.housekeeping")


class Housekeeping:
    """Runs `run_once` every `interval_s` seconds until stopped."""

    def __init__(self, services: Services, interval_s: float) -> None:
        self.services = services
        self.interval_s = max(0.05, interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pyqd-housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def run_once(self) -> int:
        """One round of chores; the temporary tables it dropped."""
        return temporary.sweep(lambda: write_session(self.services.sessions), self.services.user_data)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                dropped = self.run_once()
                if dropped:
                    log.info("dropped %d expired temporary table(s)", dropped)
            except Exception:  # noqa: BLE001 - a failed round is retried at the next one
                log.exception("housekeeping failed")
