"""A worker process: confine itself, then run tasks from its pipe until told to stop or the pipe closes."""

from __future__ import annotations

import os
import resource
import sys
from multiprocessing.connection import Connection

import pyarrow as pa

from engines.protocol import Task, WorkerLimits


def serve(conn: Connection, limits: WorkerLimits, tmp_dir: str) -> None:
    """Entry point of a worker process (started from the pre-imported template)."""
    try:
        confinement = confine(limits, tmp_dir)
    except Exception as e:  # noqa: BLE001 - report why, then die: an unconfined worker must not run code
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    from engines.worker.runtime import run_task

    conn.send(("ready", os.getpid(), confinement))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if not isinstance(task, Task):
            return
        batches: list[pa.RecordBatch] = []
        for _ in range(task.data_messages):
            with pa.ipc.open_stream(conn.recv_bytes()) as reader:
                batches.extend(reader)
        try:
            results = run_task(task, batches, conn)
        except Exception:  # noqa: BLE001 - a fault of ours: report it rather than die silently
            import traceback

            from engines.protocol import UnitResult

            name = task.units[0].name if task.units else ""
            results = [
                UnitResult(
                    name, False, error="Internal error in the worker:\n" + traceback.format_exc(), failure="exception"
                )
            ]
        conn.send(results)


def confine(limits: WorkerLimits, tmp_dir: str) -> str:
    """Own process group, scrubbed environment, rlimits, no privileges, Landlock. Returns what was applied."""
    os.setpgid(0, 0)  # the pool kills the whole group, so children the user starts die too
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(dict(limits.env))
    os.environ.update({"HOME": tmp_dir, "TMPDIR": tmp_dir, "MPLCONFIGDIR": tmp_dir, "MPLBACKEND": "Agg"})
    os.chdir(tmp_dir)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    if limits.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds:
        # SIGXCPU at the soft limit ends the worker with a signal that names the cause; SIGKILL backs it up.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 10))
    from engines.worker.sandbox import SandboxUnavailable, drop_capabilities, restrict

    applied = ["rlimits"]
    if os.getuid() == 0:
        if limits.uid is not None:
            os.setgroups([])
            os.setgid(limits.gid if limits.gid is not None else limits.uid)
            os.setuid(limits.uid)
            applied.append(f"uid={limits.uid}")
        else:
            drop_capabilities()
            applied.append("uid=0-no-capabilities")
    if limits.sandbox:
        try:
            abi = restrict(_read_paths(limits), [tmp_dir, os.devnull], limits.connect_ports)
            applied.append(f"landlock-abi{abi}")
        except SandboxUnavailable:
            applied.append("no-landlock")
    return ",".join(applied)


def _read_paths(limits: WorkerLimits) -> list[str]:
    """The Python installation, system libraries and certificates, and our own importable packages."""
    import engines
    import oml

    paths = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        "/usr",
        "/lib",
        "/lib64",
        "/etc/ssl",
        "/etc/localtime",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/nsswitch.conf",
        "/etc/ld.so.cache",
        "/proc/self",
        "/dev/urandom",
        "/dev/random",
        "/sys/devices/system/cpu",
    ]
    paths += [*engines.__path__, *oml.__path__]
    paths += [p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p]
    return paths + list(limits.read_paths)
