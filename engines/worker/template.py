"""The worker template: a process that imports the data stack once, then forks ready workers on request.

Started by the pool with a scrubbed environment (`python -m engines.worker.template FD`). It reads requests
from its control socket (length-prefixed msgpack arrays): `["spawn", limits, tmp_dir]` with the worker's end
of a socket pair passed as a file descriptor (answers `["spawned", pid]`), and `["status", pid]` (answers
`["status", wait status or nil]` once the child is gone). No user code ever runs here.

The template is the child subreaper of everything its workers start: a process that leaves its worker's
process group (`setsid`, a double fork) comes back to the template when its worker dies, and the template
kills every child of its own that is not a live worker. So a worker's whole process tree dies with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys

import msgpack

#: Largest control message, bytes.
MAX_MESSAGE = 1 << 20
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_statuses: dict[int, int] = {}
#: Live workers (children the template forked on request); any other child is a stray.
_workers: set[int] = set()
#: Exit statuses kept for the server to ask about (the oldest go first).
MAX_STATUSES = 4096
#: Rounds of killing strays (a stray may fork while it is being killed).
_STRAY_ROUNDS = 20


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _reap(_signum: int, _frame: object) -> None:
    gone = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in _workers:
            _workers.discard(pid)
            _statuses[pid] = status
            while len(_statuses) > MAX_STATUSES:  # statuses nobody asked for (most killed workers')
                del _statuses[next(iter(_statuses))]
            gone = True
    if gone:
        kill_strays()


def _children() -> list[int]:
    """Pids whose parent is this process."""
    me = os.getpid()
    found = []
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(name))
    return found


def kill_strays() -> None:
    """Kill (and reap) the processes that escaped a dead worker and were handed to this subreaper."""
    for _ in range(_STRAY_ROUNDS):
        strays = [pid for pid in _children() if pid not in _workers]
        if not strays:
            return
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in strays:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def send_message(sock: socket.socket, obj: object, fds: list[int] | None = None) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    header = struct.pack("!I", len(data))
    if fds:
        socket.send_fds(sock, [header + data], fds)
    else:
        sock.sendall(header + data)


def recv_message(sock: socket.socket) -> tuple[object, list[int]]:
    """One length-prefixed msgpack message and any file descriptors sent with it."""
    msg, fds, _flags, _addr = socket.recv_fds(sock, 4 + MAX_MESSAGE, 4)
    if not msg:
        raise EOFError
    buf = bytearray(msg)
    while len(buf) < 4:
        more = sock.recv(4 - len(buf))
        if not more:
            raise EOFError
        buf += more
    (size,) = struct.unpack("!I", bytes(buf[:4]))
    body = bytearray(buf[4:])
    while len(body) < size:
        more = sock.recv(size - len(body))
        if not more:
            raise EOFError
        body += more
    return msgpack.unpackb(bytes(body), raw=False, use_list=True), list(fds)


def _spawn(request: list, fds: list[int], control: socket.socket) -> int:
    from engines.protocol import WorkerLimits

    _, fields, tmp_dir = request
    fields = {
        k: tuple(map(tuple, v)) if k == "env" else tuple(v) if isinstance(v, list) else v for k, v in fields.items()
    }
    limits = WorkerLimits(**fields)  # type: ignore[arg-type]  # written by the server from a WorkerLimits
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # record the pid before its death can be reaped
    try:
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
                _die_with_parent()
                from engines.worker.main import serve

                serve(socket.socket(fileno=fds[0]), limits, tmp_dir)
            finally:
                os._exit(0)
        _workers.add(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
    for fd in fds:
        os.close(fd)
    return pid


def main(control_fd: int) -> None:
    # No parent-death signal here: it follows the *thread* that started us, which may end long before the
    # server does. The control socket closing (the server is gone) ends the loop below instead; the workers,
    # whose parent is this single-threaded process, die with it.
    import engines.worker.preload  # noqa: F401 - the point of the template

    control = socket.socket(fileno=control_fd)
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGCHLD, _reap)
    send_message(control, ["ready", os.getpid()])
    try:
        while True:
            try:
                request, fds = recv_message(control)
            except (EOFError, ConnectionError):
                return
            if not isinstance(request, list) or not request:
                continue
            if request[0] == "spawn":
                send_message(control, ["spawned", _spawn(request, fds, control)])
            elif request[0] == "status":
                send_message(control, ["status", _statuses.pop(request[1], None)])
    finally:  # the server is gone: take every worker and whatever they started along
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _workers.clear()
        kill_strays()


if __name__ == "__main__":
    main(int(sys.argv[1]))
