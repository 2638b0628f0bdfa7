"""A pool of warm worker processes. A worker runs one user's code only: once given to a user it is never
handed to another user; it is killed instead, and a fresh one takes its place."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from engines import wire
from engines.channel import Channel, ChannelError, ChannelTimeout
from engines.envs import SITE_DIR, EnvStore, env_of
from engines.errors import Cancelled, EnvironmentNotFound, PoolBusy
from engines.identity import worker_limits
from engines.protocol import Result, Task, WorkerLimits
from engines.spawner import Spawner, SpawnError, describe_status
from engines.warmth import EnvWarmth

log = logging.getLogger("pyqd.pool")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: Answers a worker's ("http", method, path, headers, body) with ("http-response", status, headers, body).
RequestHandler = Callable[[tuple], tuple]
T = TypeVar("T")

#: Seconds between maintenance rounds (refill warm workers, retire idle ones).
MAINTENANCE_INTERVAL_S = 0.5
#: Seconds a new worker may take to confine itself and say it is ready.
READY_TIMEOUT_S = 30.0
#: Seconds between checks of busy workers' scratch directories against their quota.
SCRATCH_CHECK_INTERVAL_S = 0.2
#: Seconds between readings of a worker's CPU time when it is given back (to retire it before its CPU limit).
CPU_CHECK_INTERVAL_S = 1.0
#: What a file or directory in a scratch directory counts at least, bytes (an empty one still takes an inode).
SCRATCH_ENTRY_BYTES = 4096
#: Most files and directories a scratch directory may hold.
SCRATCH_MAX_ENTRIES = 10_000
#: Prefix of workers' scratch directories; the server's pid follows, so a restart finds a dead server's ones.
SCRATCH_PREFIX = "pyqd-worker-"


@dataclass(frozen=True)
class PoolConfig:
    #: Most worker processes at once.
    size: int = 4
    #: Fresh (unassigned) workers kept ready.
    warm: int = 2
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    #: Extra modules the template imports (comma list).
    preload: str = ""
    #: Idle seconds after which a user's worker is retired (to make room for fresh ones).
    idle_timeout_s: float = 300.0
    #: Tasks after which a worker is replaced (bounds leaks in long-lived workers).
    max_tasks: int = 10_000
    #: Most workers one user holds at once (None: half the pool, at least one), so others always get some.
    per_user: int | None = None
    #: Largest total size of a worker's scratch directory, bytes (the worker is killed when it grows past it).
    scratch_bytes: int = 1024**3
    #: Largest message a worker may send (its results for one task), bytes.
    max_message_bytes: int = 2 * 1024**3
    #: Where per-script environments live (`engines.envs`); None: a call naming one is refused.
    envs_dir: str | None = None

    @property
    def user_share(self) -> int:
        return max(1, self.per_user if self.per_user is not None else self.size // 2)


@dataclass(frozen=True)
class PoolSettings:
    """A pool's settings as plain values, before the machine it runs on is known: a Dask worker gets them from the
    API server and makes its pool with them (the worker account's uid is looked up where the pool runs)."""

    memory_mb: int = 2048
    cpu_seconds: int = 0
    user_setting: str = "auto"
    sandbox: bool = True
    scratch_mb: int = 1024
    max_processes: int = 512
    warm: int = 1
    preload: str = ""
    max_message_bytes: int = 2 * 1024**3

    def config(self, size: int, per_user: int | None) -> PoolConfig:
        return PoolConfig(
            size=size,
            warm=min(self.warm, size),
            limits=worker_limits(
                memory_mb=self.memory_mb,
                cpu_seconds=self.cpu_seconds,
                user_setting=self.user_setting,
                sandbox=self.sandbox,
                scratch_mb=self.scratch_mb,
                max_processes=self.max_processes or None,
            ),
            preload=self.preload,
            per_user=per_user,
            scratch_bytes=self.scratch_mb * 1024 * 1024,
            max_message_bytes=self.max_message_bytes,
        )


class WorkerDied(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class WorkerTimedOut(Exception):
    pass


class Worker:
    """A handle on one worker process."""

    def __init__(self, pid: int, channel: Channel, tmp_dir: str, confinement: str, pool: WorkerPool) -> None:
        self.pid, self.channel, self.tmp_dir, self.confinement = pid, channel, tmp_dir, confinement
        self.user: str | None = None
        #: The per-script environment it runs in ("" for none), and the build's packages it was confined to.
        self.env = ""
        self.site: str | None = None
        #: Digest of the model this worker has loaded (`engines.scoring`), if any.
        self.model: str | None = None
        self.tasks = 0
        self.last_used = time.monotonic()
        self.killed = False
        #: Why the pool killed it, when that is the worker's own fault (told to the caller).
        self.kill_reason: str | None = None
        #: The process died or its channel broke: it must not be used again.
        self.broken = False
        self._pool = pool
        self._cpu_checked = 0.0
        #: Guards `_running` against kill() from another thread: a channel in use is shut down (the reader sees
        #: end of file), never closed under it (its descriptor number could be reused meanwhile).
        self._lock = threading.Lock()
        self._running = False
        #: /proc/PID/fd of the worker, opened once: a look at its open files then skips the path walk through
        #: /proc, and can never land on another process that got the pid later. Closed (under `_fd_lock`) by kill.
        self._fd_lock = threading.Lock()
        self._fd_dir: int | None = _open_fd_dir(pid)

    def run(
        self,
        task: Task,
        data: list[bytes],
        timeout_s: float,
        on_request: RequestHandler | None = None,
    ) -> list[Result]:
        """Send a task (and its Arrow IPC messages) and wait for its results, answering the requests the
        script's `import oml` makes meanwhile with `on_request`; WorkerTimedOut or WorkerDied otherwise. A
        message that breaks the channel's grammar kills the worker (WorkerDied)."""

        def talk(deadline: float) -> list[Result]:
            wire.send_task(self.channel, task, data, deadline)
            while True:
                header, blobs = self.channel.recv(deadline)  # ChannelTimeout once the deadline passes
                if header["t"] == "http":
                    method, path, headers, body = wire.read_request(header, blobs)
                    answer = on_request(("http", method, path, headers, body)) if on_request else None
                    _, status, out_headers, out_body = answer or ("http-response", 503, [], b"")
                    wire.send_response(self.channel, status, out_headers, out_body, deadline)
                    continue
                if header["t"] == "results":
                    results = wire.read_results(header, blobs, task.units)
                    self._check_scratch()
                    return results
                raise ChannelError(f"unexpected message {header['t'][:40]!r}")

        return self._talk(talk, timeout_s)

    def exchange(
        self,
        send: Callable[[Channel, float], None],
        read: Callable[[dict[str, Any], list[Any]], T],
        timeout_s: float,
    ) -> T:
        """One message and its answer (`send` writes it, `read` checks the answer: a ChannelError there kills the
        worker); WorkerTimedOut or WorkerDied as for `run`."""

        def talk(deadline: float) -> T:
            send(self.channel, deadline)
            header, blobs = self.channel.recv(deadline)
            return read(header, blobs)

        return self._talk(talk, timeout_s)

    def _talk(self, talk: Callable[[float], T], timeout_s: float) -> T:
        self.tasks += 1
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self.killed:
                raise self._stopped()
            self._running = True
        try:
            return talk(deadline)
        except ChannelTimeout:
            raise WorkerTimedOut() from None
        except ChannelError as e:
            log.warning("worker %s broke the channel's rules (%s); killing it", self.pid, e)
            self.kill(f"sent a malformed message ({e})")
            raise self._stopped() from None
        except (EOFError, OSError):
            self.broken = True
            if self.killed:
                raise self._stopped() from None
            status = self._pool.spawner.exit_status(self.pid)
            raise WorkerDied(f"the worker process {describe_status(status)}") from None
        finally:
            with self._lock:
                self._running = False
                if self.killed:
                    self.channel.close()

    def cpu_seconds(self) -> float:
        """CPU time the worker process has used so far (0 when it cannot be read)."""
        try:
            fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY)
            try:
                fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
            finally:
                os.close(fd)
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            return 0.0

    def near_cpu_limit(self, limit_s: int | None) -> bool:
        """Whether the worker has used more than 3/4 of its lifetime CPU limit (read at most every
        CPU_CHECK_INTERVAL_S: RLIMIT_CPU stops it anyway; this only retires it before it gets there)."""
        if not limit_s:
            return False
        now = time.monotonic()
        if now - self._cpu_checked < CPU_CHECK_INTERVAL_S:
            return False
        self._cpu_checked = now
        return self.cpu_seconds() > 0.75 * limit_s

    def scratch_bytes(self) -> int:
        """Bytes the worker holds on disk: its scratch directory, plus files it deleted but keeps open. Every
        entry counts at least SCRATCH_ENTRY_BYTES (empty files take inodes); past SCRATCH_MAX_ENTRIES entries
        the count stops and says "over any quota", so one scan stays cheap however many files there are."""
        with self._fd_lock:
            total = _open_deleted_bytes(self._fd_dir) if self._fd_dir is not None else 0
        stack = [self.tmp_dir]
        seen = 0
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > SCRATCH_MAX_ENTRIES:
                            return 1 << 62
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                                total += SCRATCH_ENTRY_BYTES
                            else:
                                blocks = entry.stat(follow_symlinks=False).st_blocks * 512
                                total += max(blocks, SCRATCH_ENTRY_BYTES)
                        except OSError:
                            continue
            except OSError:
                continue
        return total

    def _check_scratch(self) -> None:
        """Kill the worker (the task fails) if what it left on disk is over its quota."""
        quota = self._pool.config.scratch_bytes
        if quota and self.scratch_bytes() > quota:
            self.kill(_over_quota(quota))
            raise self._stopped()

    def _stopped(self) -> WorkerDied:
        """The error for a call whose worker the pool killed (naming why, when it was the worker's fault)."""
        reason = self.kill_reason
        return WorkerDied(f"the worker process {reason} and was stopped" if reason else "the worker was stopped")

    def kill(self, reason: str | None = None) -> None:
        """Kill the worker and everything it started (the template kills what escaped its process group)."""
        if reason and not self.kill_reason:
            self.kill_reason = reason
        if not self.killed:  # once only: after the template reaps it, the pid may belong to someone else
            self.killed = True
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        with self._lock:
            if self._running:
                self.channel.shutdown()
            else:
                self.channel.close()
        with self._fd_lock:
            if self._fd_dir is not None:
                os.close(self._fd_dir)
                self._fd_dir = None
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


class WorkerPool:
    #: Its workers take their input from the server (see `engines.workers.PartitionWorker`).
    reads_partitions = False

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.spawner = Spawner(config.preload)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        #: Workers given to no one yet, by the environment they run in ("" for none).
        self._fresh: dict[str, list[Worker]] = defaultdict(list)
        self._idle: dict[str, list[Worker]] = defaultdict(list)
        self._busy: set[Worker] = set()
        self._starting = 0
        self._closed = False
        #: Callers waiting in acquire(), in arrival order.
        self._queue: deque[_Ticket] = deque()
        self._watchdog: threading.Thread | None = None
        #: Workers being started for a user in acquire() (they count against the user's share).
        self._spawning: dict[str, int] = defaultdict(int)
        self._thread: threading.Thread | None = None
        #: Wakes the maintenance thread (a fresh worker was taken, a worker went); the watchdog waits on
        #: `_closing`. Neither waits on `_cond`: every acquire and release changes what it guards.
        self._maintenance = threading.Event()
        self._closing = threading.Event()
        #: Per-script environments: where they are, how many fresh workers each wants, how many are starting.
        self.envs = EnvStore(config.envs_dir) if config.envs_dir else None
        self._warmth = EnvWarmth(config.warm, config.idle_timeout_s)
        self._warming: dict[str, int] = defaultdict(int)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, wait: bool = False) -> None:
        """Start the template and the warm workers in the background (with `wait`, return once one is ready)."""
        remove_stale_scratch()
        if wait:
            self._add_fresh()
        self._thread = threading.Thread(target=self._maintain, name="pyqd-pool", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch_scratch, name="pyqd-pool-scratch", daemon=True)
        self._watchdog.start()

    def _watch_scratch(self) -> None:
        """Kill busy workers whose scratch space grew past the quota (their call fails with that reason)."""
        quota = self.config.scratch_bytes
        if not quota:
            return
        while not self._closing.wait(SCRATCH_CHECK_INTERVAL_S):
            with self._cond:
                if self._closed:
                    return
                held = list(self._busy) + [w for ws in self._idle.values() for w in ws]
            try:
                self._enforce_scratch(held, quota)
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one failure
                log.exception("scratch watchdog round failed")

    def _enforce_scratch(self, held: list[Worker], quota: int) -> None:
        for w in held:
            if not w.killed and w.scratch_bytes() > quota:
                log.warning("worker %s of %s went over its scratch quota", w.pid, w.user)
                with self._cond:  # an idle one leaves the pool; a busy one's call fails
                    idle = self._idle.get(w.user or "", [])
                    if w in idle:
                        idle.remove(w)
                w.kill(_over_quota(quota))
                self._maintenance.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = [w for ws in (*self._fresh.values(), *self._idle.values()) for w in ws] + list(self._busy)
            self._fresh, self._idle, self._busy = defaultdict(list), defaultdict(list), set()
            for ticket in self._queue:
                ticket.turn.notify()
        self._closing.set()
        self._maintenance.set()
        for w in workers:
            w.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.spawner.close()

    # -- counts ----------------------------------------------------------------------------------------
    def _total(self) -> int:
        fresh = sum(len(v) for v in self._fresh.values())
        return fresh + sum(len(v) for v in self._idle.values()) + len(self._busy) + self._starting

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "size": self.config.size,
                "busy": len(self._busy),
                "fresh": sum(len(v) for v in self._fresh.values()),
                "env_fresh": sum(len(v) for env, v in self._fresh.items() if env),
                "idle": sum(len(v) for v in self._idle.values()),
                "starting": self._starting,
                "waiting": len(self._queue),
            }

    def env_stats(self) -> dict[str, dict[str, int]]:
        """Per environment: fresh workers ready, and how many the pool wants ready."""
        with self._cond:
            wanted = self._warmth.snapshot()
            envs = set(wanted) | {env for env, ws in self._fresh.items() if env and ws}
            return {env: {"fresh": len(self._fresh.get(env, ())), "wanted": wanted.get(env, 0)} for env in envs}

    # -- per-script environments -----------------------------------------------------------------------
    def check_environment(self, env: str) -> str:
        """The packages directory of environment `env`'s current build; EnvironmentNotFound when there is none."""
        build = self.envs.build_dir(env) if self.envs is not None else None
        if build is None:
            raise EnvironmentNotFound(env)
        return os.path.join(build, SITE_DIR)

    def hold(self, env: str, seconds: float) -> None:
        """Keep a worker of `env` ready for `seconds` (a preload; 0 ends it): EnvironmentNotFound if there is none."""
        if seconds > 0:
            self.check_environment(env)
        with self._cond:
            self._warmth.hold(env, seconds)
        self._maintenance.set()

    # -- spawning --------------------------------------------------------------------------------------
    def _spawn(self, env: str = "", site: str | None = None) -> Worker:
        tmp_dir = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        limits = self.config.limits if site is None else replace(self.config.limits, env_dir=site)
        if limits.uid is not None and os.getuid() == 0:
            os.chown(tmp_dir, limits.uid, limits.gid if limits.gid is not None else limits.uid)
        try:
            pid, sock = self.spawner.spawn(limits, tmp_dir)
        except Exception:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        channel = Channel(
            sock,
            max_header=wire.WORKER_MAX_HEADER,
            max_total=self.config.max_message_bytes,
            max_items=wire.WORKER_MAX_ITEMS,
        )
        try:  # from here on the channel owns the socket; every failure closes it
            if not channel.poll(READY_TIMEOUT_S):
                raise SpawnError("a new worker did not become ready in time")
            hello, _ = channel.recv()
        except (EOFError, OSError, ChannelError, SpawnError) as e:
            channel.close()
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise SpawnError(f"a new worker died while starting: {e}") from e
        if hello["t"] != "ready" or not isinstance(hello.get("confinement"), str):
            channel.close()
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise SpawnError(f"a new worker could not confine itself: {str(hello.get('error'))[:2000]}")
        worker = Worker(pid, channel, tmp_dir, hello["confinement"], self)
        worker.env, worker.site = env, site
        return worker

    def _add_fresh(self, env: str = "") -> None:
        site = None
        if env:
            try:
                site = self.check_environment(env)
            except EnvironmentNotFound:
                with self._cond:
                    self._warmth.forget(env)
                return
        with self._cond:
            if self._closed or self._total() >= self.config.size:
                return
            self._starting += 1
            self._warming[env] += 1
        try:
            worker = self._spawn(env, site)
        except Exception:
            with self._cond:
                self._starting -= 1
                self._warming[env] -= 1
                self._wake_turn()
            raise
        with self._cond:
            self._starting -= 1
            self._warming[env] -= 1
            if self._closed:
                worker.kill()
                return
            self._fresh[env].append(worker)
            self._wake_turn()

    def _maintain(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                base = len(self._fresh[""]) + self._starting < self.config.warm
                need = base and self._total() < self.config.size
                stale = self._stale_idle() if base else None
                env, retire = self._env_round() if not need else (None, [])
            try:
                for w in retire:
                    w.kill()
                if stale is not None:
                    stale.kill()
                if need or stale is not None:
                    self._add_fresh()
                    continue
                if env is not None:
                    self._add_fresh(env)
                    continue
            except Exception:  # noqa: BLE001 - keep maintaining; acquire reports spawn errors to callers
                log.exception("could not start a worker")
            # A wake-up that comes between this wait and the clear is not lost: the next round looks at the pool.
            self._maintenance.wait(MAINTENANCE_INTERVAL_S)
            self._maintenance.clear()

    def _env_round(self) -> tuple[str | None, list[Worker]]:
        """Under the lock: an environment that wants one more fresh worker (if there is room, or a user's worker
        idle past the idle timeout to make room with), and the workers to retire: fresh ones of environments no
        longer in use, and that idle one (all taken out of the pool; the caller kills them)."""
        retire: list[Worker] = []
        for gone in self._warmth.forget_idle():
            retire += self._fresh.pop(gone, [])
        for unused in [e for e, ws in self._fresh.items() if e and ws and self._warmth.wanted(e) == 0]:
            retire += self._fresh.pop(unused)
        short = (e for e in self._warmth.active() if len(self._fresh[e]) + self._warming[e] < self._warmth.wanted(e))
        env = next(short, None)
        if env is not None and self._total() >= self.config.size:
            stale = self._stale_idle()
            if stale is None:
                return None, retire
            retire.append(stale)
        return env, retire

    def _stale_idle(self) -> Worker | None:
        """An idle worker of some user past the idle timeout, removed from the pool (caller kills it)."""
        now = time.monotonic()
        for workers in self._idle.values():
            for w in workers:
                if now - w.last_used > self.config.idle_timeout_s:
                    workers.remove(w)
                    return w
        return None

    # -- acquire / release -----------------------------------------------------------------------------
    def acquire(self, user: str, n: int, timeout_s: float, cancelled: threading.Event | None = None) -> list[Worker]:
        """Up to `n` workers for `user` (at least one), waiting at most `timeout_s` for the first. Callers are
        served in arrival order; PoolBusy when none became free in time, Cancelled once `cancelled` is set."""
        deadline = time.monotonic() + timeout_s
        env = env_of(user) or ""
        site = self.check_environment(env) if env else None  # EnvironmentNotFound before any waiting
        ticket = _Ticket(user, self._lock)
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                got: list[Worker] = []
                evict: list[Worker] = []
                spawn = 0
                with self._cond:
                    if self._closed:
                        raise PoolBusy()
                    if cancelled is not None and cancelled.is_set():
                        raise Cancelled()
                    if self._my_turn(ticket):
                        got, spawn, evict = self._reserve(user, min(n, self._room_for(user)), env, site)
                        self._spawning[user] += spawn
                for w in evict:
                    w.kill()
                failed = False
                for _ in range(spawn):
                    new: Worker | None = None
                    try:
                        new = self._spawn(env, site)
                    except Exception:
                        failed = True
                        log.exception("could not start a worker")
                    with self._cond:
                        self._starting -= 1
                        self._spawning[user] -= 1
                        if new is not None:
                            new.user = user
                            self._busy.add(new)
                            got.append(new)
                        self._wake_turn()
                if got:
                    return got
                if failed and env and self.envs is not None and self.envs.build_dir(env) is None:
                    raise EnvironmentNotFound(env)  # dropped meanwhile
                with self._cond:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolBusy()
                    ticket.turn.wait(min(remaining, 1.0))
        finally:
            with self._cond:
                self._queue.remove(ticket)
                self._wake_turn()

    def _held(self, user: str) -> int:
        """Workers held by the user a key belongs to (a key is the user, or the user and a script owner)."""
        who = _user_of(user)
        return sum(1 for w in self._busy if _user_of(w.user or "") == who) + sum(
            n for key, n in self._spawning.items() if _user_of(key) == who
        )

    def _room_for(self, user: str) -> int:
        """Workers `user` may still take (the per-user share less what the user holds)."""
        return self.config.user_share - self._held(user)

    def _my_turn(self, ticket: _Ticket) -> bool:
        """Callers are served in arrival order, except that a caller whose user holds a full share is passed
        over (so one user's many calls cannot make everyone else wait behind them)."""
        return self._turn() is ticket

    def _turn(self) -> _Ticket | None:
        """Under the lock: the waiting caller whose turn it is (the first whose user has room), if any."""
        for waiting in self._queue:
            if self._room_for(waiting.user) > 0:
                return waiting
        return None

    def _wake_turn(self) -> None:
        """Under the lock, after a change (a worker given back or added, a caller gone): wake the caller whose
        turn it is, and only that one; waking every waiter costs each a thread switch and the GIL, and all
        but one go back to sleep."""
        ticket = self._turn()
        if ticket is not None:
            ticket.turn.notify()

    def _reserve(
        self, user: str, n: int, env: str = "", site: str | None = None
    ) -> tuple[list[Worker], int, list[Worker]]:
        """Under the lock: the user's idle workers, then fresh ones of the call's environment, then room to start
        (evicting idle workers of other users or environments if needed). Workers of an environment's older build
        are killed, not used. Returns (taken, to start, to kill)."""
        got: list[Worker] = []
        evict: list[Worker] = []
        idle, fresh = self._idle[user], self._fresh[env]
        while idle and len(got) < n:
            w = idle.pop()
            (got if w.site == site else evict).append(w)
        while fresh and len(got) < n:
            w = fresh.pop(0)
            (got if w.site == site else evict).append(w)
            self._maintenance.set()  # replace it
        if env:
            self._warmth.used(env, short=len(got) < n)
            self._maintenance.set()
        spawn = min(n - len(got), self.config.size - self._total())
        if len(got) + spawn < n:
            others = self._evictable(user, n - len(got) - spawn, env)
            evict += others
            spawn += len(others)
        self._starting += spawn
        for w in got:
            w.user = user
            self._busy.add(w)
        return got, spawn, evict

    @property
    def size(self) -> int:
        return self.config.size

    def wake(self) -> None:
        """Wake every caller waiting in acquire() (one of them was cancelled: it stops waiting, the rest wait on)."""
        with self._cond:
            for ticket in self._queue:
                ticket.turn.notify()

    def waiting(self) -> int:
        """Callers waiting for a worker (a running call gives workers back between tasks when this is > 0)."""
        with self._cond:
            return len(self._queue)

    def _evictable(self, user: str, n: int, env: str = "") -> list[Worker]:
        """Up to `n` idle workers of other users (or of the user's calls in other environments), then fresh workers
        of other environments, least recently used first, taken out of the pool."""
        idle = sorted((w for u, ws in self._idle.items() if u != user for w in ws), key=lambda w: w.last_used)
        fresh = sorted((w for e, ws in self._fresh.items() if e != env for w in ws), key=lambda w: w.last_used)
        chosen = (idle + fresh)[:n]
        for w in chosen:
            if w.user is None:
                self._fresh[w.env].remove(w)
            else:
                self._idle[w.user].remove(w)
        return chosen

    def release(self, worker: Worker, healthy: bool = True) -> None:
        """Give a worker back: kept for its user if healthy, else killed (a fresh one replaces it)."""
        retire = (
            not healthy
            or worker.killed
            or worker.broken
            or worker.tasks >= self.config.max_tasks
            or worker.near_cpu_limit(self.config.limits.cpu_seconds)
        )
        with self._cond:
            self._busy.discard(worker)
            if not retire and not self._closed:
                worker.last_used = time.monotonic()
                self._idle[worker.user or ""].append(worker)
            self._wake_turn()
        if retire:
            worker.kill()
            self._maintenance.set()


class _Ticket:
    """A caller waiting in acquire(): its user, and the condition (on the pool's lock) it waits on."""

    __slots__ = ("turn", "user")

    def __init__(self, user: str, lock: threading.RLock) -> None:
        self.user = user
        self.turn = threading.Condition(lock)


def _over_quota(quota: int) -> str:
    return f"wrote more than its scratch space quota of {quota // (1024 * 1024)} MiB"


def _user_of(key: str) -> str:
    """The user part of a worker key (`USER`, or `USER` NUL `SCRIPT_OWNER` for another owner's code; either may
    end with SOH `ENVIRONMENT`, `engines.envs.with_env`)."""
    return key.split("\x00", 1)[0].split("\x01", 1)[0]


def _open_fd_dir(pid: int) -> int | None:
    """A descriptor of /proc/PID/fd (None if the process is gone or it cannot be opened)."""
    try:
        return os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _open_deleted_bytes(fd_dir: int) -> int:
    """Bytes of files that a process deleted but still holds open (they take disk space no listing shows), from
    its /proc/PID/fd directory (a descriptor)."""
    total = 0
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(fd, dir_fd=fd_dir).endswith(" (deleted)"):
                total += os.stat(fd, dir_fd=fd_dir).st_blocks * 512
        except OSError:
            continue
    return total


def remove_stale_scratch(root: str | None = None) -> int:
    """Remove the scratch directories of servers that are gone (killed before they could clean up); returns
    how many. A directory is stale when the server pid in its name no longer runs."""
    root = root or tempfile.gettempdir()
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(SCRATCH_PREFIX):
            continue
        owner = name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and _alive(int(owner)):
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
