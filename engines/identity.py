"""Which OS account user code runs as, and the limits each worker confines itself to."""

from __future__ import annotations

import logging
import os
import pwd
import sys

from engines.protocol import WorkerLimits

log = logging.getLogger("pyqd.pool")


#: Accounts "auto" tries, in order: the dedicated one `scripts/setup-venv` makes when run as root, then nobody.
AUTO_ACCOUNTS = ("pyqd-worker", "nobody")


def can_run_python_as(uid: int, gid: int) -> bool:
    """Whether that account can read what a worker imports: the standard library, the installed packages and
    our own (checked for real, in a child process that switches to the account, so ACLs count too)."""
    import numpy

    import engines

    probes = [os.__file__, numpy.__file__, os.path.join(engines.__path__[0], "__init__.py"), sys.executable]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            for path in probes:
                with open(os.path.realpath(path), "rb") as f:
                    f.read(1)
                os.listdir(os.path.dirname(os.path.realpath(path)))
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means "cannot"
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def worker_account(setting: str) -> tuple[int, int] | None:
    """(uid, gid) for workers, or None to keep the server's (then root workers drop every capability)."""
    if os.getuid() != 0 or setting == "":
        return None
    names = AUTO_ACCOUNTS if setting == "auto" else (setting,)
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if setting != "auto":
                raise ValueError(f"worker user {name!r} does not exist") from None
            continue
        if can_run_python_as(entry.pw_uid, entry.pw_gid):
            return entry.pw_uid, entry.pw_gid
        if setting != "auto":
            raise ValueError(f"worker user {name!r} cannot read the Python installation (see scripts/setup-venv)")
    log.warning(
        "workers run as root without capabilities: neither of %s can read the Python installation "
        "(run scripts/setup-venv as root to make the pyqd-worker account)",
        ", ".join(AUTO_ACCOUNTS),
    )
    return None


def worker_limits(
    *,
    memory_mb: int,
    cpu_seconds: int,
    user_setting: str,
    sandbox: bool,
    scratch_mb: int = 1024,
    max_processes: int | None = 512,
) -> WorkerLimits:
    account = worker_account(user_setting)
    return WorkerLimits(
        memory_bytes=memory_mb * 1024 * 1024 if memory_mb > 0 else None,
        cpu_seconds=cpu_seconds if cpu_seconds > 0 else None,
        uid=account[0] if account else None,
        gid=account[1] if account else None,
        sandbox=sandbox,
        file_bytes=scratch_mb * 1024 * 1024,
        max_processes=max_processes,
    )
