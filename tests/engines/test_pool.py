"""Worker processes: one user's code per worker, scrubbed environment, confinement, reuse."""

from __future__ import annotations

import os
import uuid

import pytest

from engines.pool import PoolConfig, WorkerPool
from engines.protocol import Task, Unit, WorkerLimits
from engines.worker.sandbox import abi_version
from tests.conftest import wait_for

#: Returns a token that identifies the worker process (made on its first call) and its user-visible facts.
IDENTIFY = """def identify(probe=None):
    import os, sys, uuid
    if not hasattr(sys, "_pyqd_test_token"):
        sys._pyqd_test_token = uuid.uuid4().hex
    result = {"token": sys._pyqd_test_token, "env": sorted(os.environ), "cwd": os.getcwd()}
    if probe:
        try:
            open(probe).read()
            result["probe"] = "read"
        except OSError as e:
            result["probe"] = type(e).__name__
    return result
"""


@pytest.fixture
def pool():
    p = WorkerPool(PoolConfig(size=2, warm=1, limits=WorkerLimits(memory_bytes=1 << 30)))
    p.start()
    yield p
    p.close()


def call(pool: WorkerPool, user: str, **kwargs: object) -> dict:
    import orjson

    (worker,) = pool.acquire(user, 1, 30)
    try:
        task = Task(
            call_id=uuid.uuid4().hex,
            user=user,
            script_name="identify",
            source=IDENTIFY,
            kind="eval",
            units=[Unit("")],
            kwargs=kwargs,
        )
        (result,) = worker.run(task, [], 30)
    finally:
        pool.release(worker)
    assert result.ok, result.error
    return orjson.loads(result.json)


def test_a_worker_never_runs_two_users_code(pool):
    seen: dict[str, set[str]] = {"ALICE": set(), "BOB": set(), "CAROL": set()}
    for _ in range(4):
        for user in seen:
            seen[user].add(call(pool, user)["token"])
    assert not (seen["ALICE"] & seen["BOB"]) and not (seen["ALICE"] & seen["CAROL"])
    assert not (seen["BOB"] & seen["CAROL"])


def test_a_users_worker_is_reused_while_it_stays_in_the_pool(pool):
    assert call(pool, "ALICE")["token"] == call(pool, "ALICE")["token"]


def test_workers_inherit_no_secrets(monkeypatch):
    monkeypatch.setenv("PYQD_SIGNING_KEY", "s" * 40)
    monkeypatch.setenv("PYQD_DATABASE_URL", "postgresql://u:secret@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hush")
    p = WorkerPool(PoolConfig(size=1, warm=0))
    p.start()
    try:
        env = call(p, "ALICE")["env"]
    finally:
        p.close()
    assert not [k for k in env if k.startswith("PYQD_") or "SECRET" in k]


@pytest.mark.skipif(abi_version() < 1, reason="this kernel has no Landlock")
def test_workers_cannot_read_outside_their_sandbox(pool, tmp_path):
    secret = tmp_path / "signing.key"
    secret.write_text("top secret")
    result = call(pool, "ALICE", probe=str(secret))
    assert result["probe"] == "PermissionError"
    assert call(pool, "ALICE", probe=os.__file__)["probe"] == "read"


def test_workers_run_in_their_own_directory(pool):
    cwd = call(pool, "ALICE")["cwd"]
    assert os.path.basename(cwd).startswith("pyqd-worker-")


def test_many_waiting_callers_are_all_served_in_turn(pool):
    """A release wakes only the caller whose turn it is: none may be forgotten (two users, each with one worker's
    share of this 2-worker pool, twelve callers each, all waiting at once)."""
    import threading

    done: list[str] = []
    errors: list[BaseException] = []

    def caller(user: str) -> None:
        try:
            for _ in range(3):
                call(pool, user)
            done.append(user)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(u,)) for u in ("ALICE", "BOB") * 12]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(done) == ["ALICE"] * 12 + ["BOB"] * 12
    assert pool.stats()["waiting"] == 0


def test_a_caller_cancelled_while_it_waits_stops_waiting(pool):
    import threading

    from engines.errors import Cancelled

    held = [*pool.acquire("ALICE", 1, timeout_s=60), *pool.acquire("CAROL", 1, timeout_s=60)]  # the whole pool
    cancelled = threading.Event()
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(pool.acquire("BOB", 1, timeout_s=120, cancelled=cancelled))
        except Cancelled as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    try:
        wait_for(lambda: pool.waiting() == 1)
        cancelled.set()
        pool.wake()
        waiter.join(30)  # at once, not after the 120 s wait
        assert isinstance(outcome[0], Cancelled) and pool.waiting() == 0
    finally:
        for w in held:
            pool.release(w)
