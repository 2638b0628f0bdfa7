"""Attacks on the walls around user code, written the way a hostile script would try them, on real worker
processes: the channel to the server, sockets, escaping processes, fork bombs, disk, the pool's share."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from engines.errors import PoolBusy
from engines.pool import PoolConfig, WorkerDied, WorkerPool, remove_stale_scratch
from engines.protocol import Result, Task, Unit, WorkerLimits
from tests.conftest import wait_for


def make_pool(**config: object) -> WorkerPool:
    limits = config.pop("limits", WorkerLimits(memory_bytes=1 << 30))
    pool = WorkerPool(PoolConfig(limits=limits, **config))  # type: ignore[arg-type]
    pool.start()
    return pool


@pytest.fixture
def pool():
    p = make_pool(size=2, warm=1)
    yield p
    p.close()


def run(pool: WorkerPool, source: str, name: str, user: str = "MALLORY", **kwargs: object) -> Result:
    (worker,) = pool.acquire(user, 1, 30)
    healthy = False
    try:
        task = Task(uuid.uuid4().hex, user, name, source, "eval", [Unit("")], kwargs=kwargs)
        (result,) = worker.run(task, [], 60)
        healthy = True
        return result
    finally:
        pool.release(worker, healthy=healthy)


def value(result: Result) -> object:
    assert result.ok, result.error
    return orjson.loads(result.json)


def assert_pool_still_works(pool: WorkerPool) -> None:
    assert value(run(pool, "def ok():\n    return 'fine'\n", "ok", user="ALICE")) == "fine"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for its reaper counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# -- the channel: nothing a worker sends is unpickled --------------------------------------------------------
#: The script finds its channel's socket through the garbage collector (as the attack in issue 8 did with
#: multiprocessing's Connection) and writes a frame of its own choosing; `marker` is where the payload would
#: write if the server ever ran it (a path the worker itself cannot write to).
FORGE = """
def forge(marker, how):
    import gc, pickle, socket, struct

    class Evil:
        def __reduce__(self):
            return (eval, ("open(%r, 'w').write('pwned')" % marker,))

    evil = pickle.dumps(Evil())
    if how == "multiprocessing":  # what Connection.send would write
        frame = struct.pack("!i", len(evil)) + evil
    elif how == "pickle-header":  # our framing, a pickle where msgpack belongs
        frame = struct.pack("!II", len(evil), 0) + evil
    elif how == "ext-type":  # a msgpack extension type wrapping the pickle
        body = b"\\xc7" + bytes([len(evil) if len(evil) < 256 else 255]) + b"\\x01" + evil[:255]
        frame = struct.pack("!II", len(body), 0) + body
    elif how == "wrong-types":  # well-formed, but the fields lie
        import msgpack
        body = msgpack.packb({"t": "results", "units": [{"name": "", "ok": "yes", "value": evil}]})
        frame = struct.pack("!II", len(body), 0) + body
    elif how == "huge-header":  # asks the server to allocate 4 GiB
        frame = struct.pack("!II", 0xFFFFFFFF, 0)
    elif how == "bad-method":
        import msgpack
        body = msgpack.packb({"t": "http", "method": "CONNECT", "path": "evil:443", "headers": []})
        frame = struct.pack("!II", len(body), 1) + body + struct.pack("!Q", 0)
    for s in [o for o in gc.get_objects() if isinstance(o, socket.socket)]:
        try:
            s.sendall(frame)
        except OSError:
            pass
    return "sent"
"""


@pytest.mark.parametrize(
    "how", ["multiprocessing", "pickle-header", "ext-type", "wrong-types", "huge-header", "bad-method"]
)
def test_a_forged_message_kills_the_worker_and_runs_nothing_in_the_server(pool, tmp_path, how):
    marker = tmp_path / "pwned"
    with pytest.raises(WorkerDied, match="malformed message"):
        run(pool, FORGE, "forge", marker=str(marker), how=how)
    assert not marker.exists()
    assert_pool_still_works(pool)


# -- no sockets ----------------------------------------------------------------------------------------------
PROBE_SOCKETS = """
def probe():
    import os, socket, subprocess, sys
    tries = {
        "tcp": lambda: socket.create_connection(("127.0.0.1", 5432), timeout=2),
        "tcp6": lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
        "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 53)),
        "unix-postgres": lambda: socket.socket(socket.AF_UNIX).connect("/var/run/postgresql/.s.PGSQL.5432"),
        "unix-mariadb": lambda: socket.socket(socket.AF_UNIX).connect("/run/mysqld/mysqld.sock"),
        "socketpair": lambda: socket.socketpair(),
        "netlink": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW),
    }
    out = {}
    for name, attempt in tries.items():
        try:
            attempt()
            out[name] = "opened"
        except OSError as e:
            out[name] = e.errno
    try:
        import psycopg
        psycopg.connect("host=/var/run/postgresql user=postgres dbname=postgres connect_timeout=2")
        out["psycopg"] = "connected"
    except Exception as e:
        out["psycopg"] = type(e).__name__
    child = subprocess.run([sys.executable, "-c", "import socket; socket.socket()"], capture_output=True)
    out["child"] = child.returncode
    return out
"""


def test_no_socket_of_any_kind_can_be_opened(pool):
    import errno

    out = value(run(pool, PROBE_SOCKETS, "probe"))
    assert isinstance(out, dict)
    for kind in ("tcp", "tcp6", "udp", "unix-postgres", "unix-mariadb", "socketpair", "netlink"):
        assert out[kind] == errno.EPERM, (kind, out[kind])
    assert out["psycopg"] == "OperationalError"
    assert out["child"] != 0  # children inherit the filter
    assert_pool_still_works(pool)


def test_the_worker_holds_no_credential_and_no_server_secret(pool, monkeypatch):
    source = """
def look():
    import gc, os
    texts = [o for o in gc.get_objects() if isinstance(o, str) and o.startswith("eyJ")]
    return {"jwts": len(texts), "env": sorted(os.environ)}
"""
    out = value(run(pool, source, "look"))
    assert isinstance(out, dict)
    assert out["jwts"] == 0
    assert not [k for k in out["env"] if k.startswith("PYQD_")]


# -- processes die with their worker -------------------------------------------------------------------------
ESCAPE = """
def escape():
    import os, subprocess, sys, time
    loop = "import time\\nwhile True: time.sleep(1)"
    session = subprocess.Popen([sys.executable, "-c", loop], start_new_session=True)
    read, write = os.pipe()
    first = os.fork()
    if first == 0:  # double fork: the grandchild is orphaned at once, in a session of its own
        os.setsid()
        second = os.fork()
        if second == 0:
            while True:
                time.sleep(1)
        os.write(write, str(second).encode())
        os._exit(0)
    os.waitpid(first, 0)
    daemon = int(os.read(read, 32))
    return [session.pid, daemon]
"""


def test_processes_that_detach_die_with_their_worker(pool):
    (worker,) = pool.acquire("MALLORY", 1, 30)
    try:
        task = Task(uuid.uuid4().hex, "MALLORY", "escape", ESCAPE, "eval", [Unit("")])
        (result,) = worker.run(task, [], 60)
        pids = value(result)
        assert isinstance(pids, list) and all(not gone(p) for p in pids)
    finally:
        pool.release(worker, healthy=False)  # the worker is killed, as on a timeout or a DELETE
    for pid in pids:
        wait_for(lambda pid=pid: gone(pid), timeout=30)
    assert_pool_still_works(pool)


FORK_BOMB = """
def bomb(n):
    import os, time
    made = []
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            made.append(pid)
    except OSError as e:
        return [made, e.errno]
    return [made, None]
"""


@pytest.mark.skipif(os.getuid() != 0, reason="the process limit needs workers of their own account")
def test_a_fork_bomb_meets_the_process_limit_and_dies_with_its_worker(tmp_path):
    import errno

    from engines.identity import worker_account

    account = worker_account("auto")
    if account is None:
        pytest.skip("no unprivileged account can run Python here (scripts/setup-worker-user makes one)")
    limits = WorkerLimits(memory_bytes=1 << 30, max_processes=40, uid=account[0], gid=account[1])
    pool = make_pool(size=1, warm=0, limits=limits)
    try:
        (worker,) = pool.acquire("MALLORY", 1, 30)
        assert "nproc=40" in worker.confinement
        try:
            task = Task(uuid.uuid4().hex, "MALLORY", "bomb", FORK_BOMB, "eval", [Unit("")], kwargs={"n": 500})
            (result,) = worker.run(task, [], 60)
            made, error = value(result)  # type: ignore[misc]
        finally:
            pool.release(worker, healthy=False)
        # the limit counts every process of the account (other tests' workers too): fewer than 40 were made
        assert len(made) < 40 and error == errno.EAGAIN
        for pid in made:
            wait_for(lambda pid=pid: gone(pid), timeout=30)
    finally:
        pool.close()


# -- disk ----------------------------------------------------------------------------------------------------
FILL = """
def fill(files, mib, unlink):
    import os, sys
    block = b"x" * (1024 * 1024)
    keep = []
    for i in range(files):
        f = open(f"blob{i}", "wb")
        if unlink:
            os.unlink(f"blob{i}")
            keep.append(f)
        for _ in range(mib):
            f.write(block)
        f.flush()
        if not unlink:
            f.close()
    sys.__dict__.setdefault("_kept", []).extend(keep)  # still open after the call
    return "filled"
"""


@pytest.mark.parametrize("unlink", [False, True], ids=["files", "deleted-but-open"])
def test_a_worker_that_fills_its_scratch_space_is_stopped(unlink):
    quota = 16 * 1024 * 1024
    pool = make_pool(size=1, warm=0, scratch_bytes=quota)
    try:
        with pytest.raises(WorkerDied, match="scratch space quota"):
            run(pool, FILL, "fill", files=8, mib=4, unlink=unlink)
        assert value(run(pool, FILL, "fill", files=2, mib=4, unlink=False)) == "filled"  # within the quota
    finally:
        pool.close()


def test_scratch_dirs_of_a_dead_server_are_removed_at_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"pyqd-worker-{dead.pid}-abc"
    legacy = tmp_path / "pyqd-worker-k3j4h5"
    live = tmp_path / f"pyqd-worker-{os.getpid()}-def"
    for d in (stale, legacy, live):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "data").write_bytes(b"x" * 1000)
    other = tmp_path / "unrelated"
    other.mkdir()
    assert remove_stale_scratch(str(tmp_path)) == 2
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and other.exists()


def test_a_huge_error_message_is_clipped(pool):
    result = run(pool, "def loud():\n    raise ValueError('x' * 50_000_000)\n", "loud")
    assert not result.ok and result.error is not None
    assert len(result.error) < 70_000 and "clipped" in result.error
    assert_pool_still_works(pool)


def test_a_result_over_the_size_limit_fails_however_it_is_nested():
    pool = make_pool(size=1, warm=0)
    try:
        (worker,) = pool.acquire("MALLORY", 1, 30)
        try:
            source = "def nest():\n    return {'a': [[['x' * 1000] * 100] * 30]}\n"  # one top-level item, 3 MB
            task = Task(uuid.uuid4().hex, "MALLORY", "nest", source, "eval", [Unit("")], output_max_bytes=1024 * 1024)
            (result,) = worker.run(task, [], 60)
        finally:
            pool.release(worker)
        assert not result.ok and result.failure == "size"
    finally:
        pool.close()


# -- one user cannot take every worker -----------------------------------------------------------------------
def test_one_user_holds_at_most_its_share_and_others_are_served_past_it():
    pool = make_pool(size=4, warm=0, per_user=2)
    try:
        mine = pool.acquire("HOG", 4, 30)
        assert len(mine) == 2  # asked for 4, got the share
        waiting: dict[str, object] = {}

        def third() -> None:
            try:
                waiting["hog"] = pool.acquire("HOG", 1, 60)
            except PoolBusy as e:
                waiting["hog"] = e

        t = threading.Thread(target=third)
        t.start()
        wait_for(lambda: pool.stats()["waiting"] == 1)
        started = time.monotonic()
        (other,) = pool.acquire("ALICE", 1, 60)  # queued after HOG's third call, served first
        assert "hog" not in waiting and time.monotonic() - started < 60
        pool.release(other)
        pool.release(mine[0])
        t.join(timeout=60)
        assert isinstance(waiting["hog"], list)
        for w in [*mine[1:], *waiting["hog"]]:  # type: ignore[misc]
            pool.release(w)
    finally:
        pool.close()


# -- a worker that sends part of a frame and stops cannot hold the server past the deadline ------------------
STALL = """
def stall():
    import gc, socket, struct, time
    for s in [o for o in gc.get_objects() if isinstance(o, socket.socket)]:
        try:
            s.sendall(struct.pack("!II", 100, 0))  # a frame header that promises 100 bytes, then nothing
        except OSError:
            pass  # a socket the worker closed (the template's)
    time.sleep(3600)
"""


def test_a_half_sent_frame_ends_at_the_deadline(pool):
    from engines.pool import WorkerTimedOut

    (worker,) = pool.acquire("MALLORY", 1, 30)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            worker.run(Task(uuid.uuid4().hex, "MALLORY", "stall", STALL, "eval", [Unit("")]), [], 3)
        except BaseException as e:  # noqa: BLE001 - the test looks at what it was
            outcome.append(e)

    t = threading.Thread(target=call)
    t.start()
    t.join(timeout=120)  # without a deadline on the frame's body this never returns
    pool.release(worker, healthy=False)
    assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], WorkerTimedOut)
    assert_pool_still_works(pool)


@pytest.mark.skipif(os.getuid() != 0, reason="a network namespace of its own needs root")
def test_a_worker_sees_none_of_the_hosts_sockets(pool):
    source = "def net():\n    return open('/proc/self/net/tcp').read().splitlines()[1:]\n"
    assert value(run(pool, source, "net")) == []  # the host's listening PostgreSQL and the server are not there


def test_a_flood_of_empty_files_counts_against_the_scratch_quota():
    pool = make_pool(size=1, warm=0)
    try:
        source = "def flood(n):\n    for i in range(n):\n        open(f'f{i}', 'w').close()\n    return n\n"
        with pytest.raises(WorkerDied, match="scratch space quota"):
            run(pool, source, "flood", n=12_000)
        assert value(run(pool, source, "flood", n=100)) == 100
    finally:
        pool.close()


DEAF = """
def deaf():
    import gc, msgpack, socket, struct, time
    body = msgpack.packb({"t": "http", "method": "GET", "path": "/oml/api/pyqd/v1/datastores", "headers": []})
    frame = struct.pack("!II", len(body), 1) + body + struct.pack("!Q", 0)
    for s in [o for o in gc.get_objects() if isinstance(o, socket.socket)]:
        try:
            s.sendall(frame)  # ask for something, then never read the answer
        except OSError:
            pass
    time.sleep(3600)
"""


def test_a_worker_that_stops_reading_cannot_hold_the_server_past_the_deadline(pool):
    from engines.pool import WorkerTimedOut

    big_answer = ("http-response", 200, [], b"x" * (32 * 1024 * 1024))  # far more than a socket buffer holds
    (worker,) = pool.acquire("MALLORY", 1, 30)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            task = Task(uuid.uuid4().hex, "MALLORY", "deaf", DEAF, "eval", [Unit("")], oml=True)
            worker.run(task, [], 3, on_request=lambda message: big_answer)
        except BaseException as e:  # noqa: BLE001 - the test looks at what it was
            outcome.append(e)

    t = threading.Thread(target=call)
    t.start()
    t.join(timeout=120)  # without a deadline on sending, this never returns
    pool.release(worker, healthy=False)
    assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], WorkerTimedOut)
    assert_pool_still_works(pool)
