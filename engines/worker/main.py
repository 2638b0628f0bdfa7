"""A worker process: confine itself, then run tasks from its channel until the channel closes."""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import sys

import pyarrow as pa

from engines import wire
from engines.channel import Channel, ChannelClosed
from engines.protocol import Result, WorkerLimits

_PR_SET_CHILD_SUBREAPER = 36
_CLONE_NEWNET = 0x40000000
_PR_SET_DUMPABLE = 4


def serve(sock: socket.socket, limits: WorkerLimits, tmp_dir: str) -> None:
    """Entry point of a worker process (forked from the pre-imported template)."""
    channel = Channel(sock)
    try:
        confinement = confine(limits, tmp_dir)
    except Exception as e:  # noqa: BLE001 - report why, then die: an unconfined worker must not run code
        channel.send({"t": "failed", "error": f"{type(e).__name__}: {e}"})
        return
    from engines.worker.runtime import run_task

    channel.send({"t": "ready", "pid": os.getpid(), "confinement": confinement})
    while True:
        try:
            header, blobs = channel.recv()
        except (ChannelClosed, OSError):
            return
        if header["t"] in ("model", "score"):
            handle_model_message(channel, header, blobs)
            continue
        if header["t"] != "task":
            return
        task, messages = wire.read_task(header, blobs)
        batches: list[pa.RecordBatch] = []
        for message in messages:
            with pa.ipc.open_stream(message) as reader:
                batches.extend(reader)
        try:
            results = run_task(task, batches, channel)
        except Exception:  # noqa: BLE001 - a fault of ours: report it rather than die silently
            import traceback

            name = task.units[0].name if task.units else ""
            results = [
                Result(
                    name, False, error="Internal error in the worker:\n" + traceback.format_exc(), failure="exception"
                )
            ]
        wire.send_results(channel, results)


def handle_model_message(channel: Channel, header: dict, blobs: list) -> None:
    """Load a model (`model`) or score with it (`score`), answering `model-info` or `scored` with the request's
    sequence number."""
    import orjson

    from engines.worker import scoring

    seq, kind, digest = header["seq"], header["kind"], header["digest"]
    if header["t"] == "model":
        try:
            metadata = scoring.load(kind, digest, bytes(blobs[0]))
        except scoring.ModelUnreadable as e:
            wire.send_model_info(channel, seq, None, str(e))
        except Exception as e:  # noqa: BLE001 - loading runs a pickle's own code
            wire.send_model_info(channel, seq, None, f"the model cannot be loaded: {type(e).__name__}: {e}")
        else:
            wire.send_model_info(channel, seq, orjson.dumps(metadata), None)
        return
    images = [bytes(b) for b in blobs] if header.get("images") else None
    try:
        body = scoring.score(kind, digest, bytes(blobs[0]) if images is None else b"", images)
    except scoring.BadInput as e:
        wire.send_scored(channel, seq, None, "input", str(e))
    except Exception as e:  # noqa: BLE001 - the model raised, or its answer cannot be rendered
        message = str(e) if isinstance(e, scoring.ModelFailed) else f"the model failed: {type(e).__name__}: {e}"
        wire.send_scored(channel, seq, None, "model", message)
    else:
        limit = header["max_bytes"]
        if len(body) > limit:
            wire.send_scored(channel, seq, None, "size", f"Output exceeds maximum size of {limit} bytes")
        else:
            wire.send_scored(channel, seq, body)


def confine(limits: WorkerLimits, tmp_dir: str) -> str:
    """Own process group, scrubbed environment, rlimits, no privileges, Landlock, seccomp, then the per-script
    environment's packages first on sys.path. Returns what was applied."""
    # Opened while the worker may still read anything: its own account need not reach the data directory.
    env_fd = os.open(limits.env_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if limits.env_dir else None
    os.setpgid(0, 0)  # the pool kills the whole group, so children the user starts die too
    # Orphans of the user's processes stay below this worker while it lives; when it dies they go to the
    # template (a subreaper too), which kills them.
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
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
    from engines.worker.sandbox import SandboxUnavailable, deny_sockets, drop_capabilities, restrict

    applied = ["rlimits"]
    if os.getuid() == 0 and limits.sandbox and _own_network():
        applied.append("netns")
    if os.getuid() == 0:
        if limits.uid is not None:
            os.setgroups([])
            os.setgid(limits.gid if limits.gid is not None else limits.uid)
            os.setuid(limits.uid)
            applied.append(f"uid={limits.uid}")
        else:
            drop_capabilities()
            applied.append("uid=0-no-capabilities")
    if limits.max_processes and os.getuid() != 0:
        # Counted per account: it bounds a fork bomb (root ignores it, so it only applies with its own uid).
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        applied.append(f"nproc={limits.max_processes}")
    if limits.sandbox:
        try:
            abi = restrict(_read_paths(limits), [tmp_dir, os.devnull], (), () if env_fd is None else (env_fd,))
            applied.append(f"landlock-abi{abi}")
        except SandboxUnavailable:
            applied.append("no-landlock")
        deny_sockets()
        applied.append("seccomp-no-sockets")
    # Not dumpable: no other process of the same account may read its memory or take its descriptors.
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    if env_fd is not None:
        use_environment(env_fd)
        applied.append("env")
    return ",".join(applied)


def use_environment(fd: int) -> None:
    """Put a per-script environment's packages (an open directory) first on sys.path, processing its `.pth` files
    as site-packages does. Runs once confined: a `.pth` file may run code. The directory is reached through the
    descriptor, not its path: the data directory above it stays closed to the worker's account, and the worker
    keeps the build it started with even if the environment is rebuilt meanwhile."""
    import importlib
    import site

    path = f"/proc/self/fd/{fd}"
    sys.path.insert(0, path)
    site.addsitedir(path)  # already on sys.path: only its .pth files are read
    importlib.invalidate_caches()


def _own_network() -> bool:
    """Move into a network namespace of its own (only a loopback device, down): no route anywhere even before
    seccomp, and /proc/self/net no longer shows the host's sockets and traffic. Needs CAP_SYS_ADMIN (root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(_CLONE_NEWNET) == 0


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
        "/etc/ld.so.cache",
        "/proc/self",
        "/dev/urandom",
        "/dev/random",
        "/sys/devices/system/cpu",
    ]
    paths += [*engines.__path__, *oml.__path__]
    paths += [p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p]
    return paths + list(limits.read_paths)
