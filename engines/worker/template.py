"""The worker template: a process that imports the data stack once, then forks ready workers on request.

Started by the pool with a scrubbed environment (`python -m engines.worker.template FD`). It reads requests
from its control socket: `("spawn", limits, tmp_dir)` with the worker's end of a socket pair passed as a file
descriptor (answers the child's pid), and `("status", pid)` (answers the exit status once the child is gone).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import struct
import sys

#: Largest control message, bytes.
MAX_MESSAGE = 1 << 20
_PR_SET_PDEATHSIG = 1
_statuses: dict[int, int] = {}


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _statuses[pid] = status


def send_message(sock: socket.socket, obj: object, fds: list[int] | None = None) -> None:
    data = pickle.dumps(obj)
    header = struct.pack("!I", len(data))
    if fds:
        socket.send_fds(sock, [header + data], fds)
    else:
        sock.sendall(header + data)


def recv_message(sock: socket.socket) -> tuple[object, list[int]]:
    """One length-prefixed pickled message and any file descriptors sent with it."""
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
    return pickle.loads(bytes(body)), list(fds)


def _spawn(request: tuple, fds: list[int], control: socket.socket) -> int:
    _, limits, tmp_dir = request
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _die_with_parent()
            from multiprocessing.connection import Connection

            from engines.worker.main import serve

            serve(Connection(fds[0]), limits, tmp_dir)
        finally:
            os._exit(0)
    for fd in fds:
        os.close(fd)
    return pid


def main(control_fd: int) -> None:
    # No parent-death signal here: it follows the *thread* that started us, which may end long before the
    # server does. The control socket closing (the server is gone) ends the loop below instead; the workers,
    # whose parent is this single-threaded process, die with it.
    import engines.worker.preload  # noqa: F401 - the point of the template

    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGCHLD, _reap)
    send_message(control, ("ready", os.getpid()))
    while True:
        try:
            request, fds = recv_message(control)
        except (EOFError, ConnectionError):
            return
        if not isinstance(request, tuple) or not request:
            continue
        if request[0] == "spawn":
            send_message(control, ("spawned", _spawn(request, fds, control)))
        elif request[0] == "status":
            send_message(control, ("status", _statuses.pop(request[1], None)))


if __name__ == "__main__":
    main(int(sys.argv[1]))
