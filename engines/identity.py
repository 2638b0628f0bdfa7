"""Which OS account user code runs as, and the limits each worker confines itself to."""

from __future__ import annotations

import logging
import os
import pwd
import stat
import sys

from engines.protocol import WorkerLimits

log = logging.getLogger("pyqd.pool")


def _readable_by_others(path: str) -> bool:
    """Whether an unrelated account can reach `path` (every ancestor searchable, the directory readable)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        mode = os.stat(os.sep.join(parts[:i]) or os.sep).st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def worker_account(setting: str) -> tuple[int, int] | None:
    """(uid, gid) for workers, or None to keep the server's (then root workers drop every capability)."""
    if os.getuid() != 0 or setting == "":
        return None
    name = "nobody" if setting == "auto" else setting
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if setting != "auto":
            raise ValueError(f"worker user {name!r} does not exist") from None
        return None
    stdlib = os.path.dirname(os.__file__)
    if setting == "auto" and not all(_readable_by_others(p) for p in (stdlib, sys.prefix)):
        log.warning(
            "workers run as root without capabilities: %s cannot read the Python installation (%s)", name, stdlib
        )
        return None
    return entry.pw_uid, entry.pw_gid


def worker_limits(
    *, memory_mb: int, cpu_seconds: int, user_setting: str, sandbox: bool, connect_ports: tuple[int, ...]
) -> WorkerLimits:
    account = worker_account(user_setting)
    return WorkerLimits(
        memory_bytes=memory_mb * 1024 * 1024 if memory_mb > 0 else None,
        cpu_seconds=cpu_seconds if cpu_seconds > 0 else None,
        uid=account[0] if account else None,
        gid=account[1] if account else None,
        sandbox=sandbox,
        connect_ports=connect_ports,
    )
