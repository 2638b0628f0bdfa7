"""Attacks on what the Dask engine added, as hostile users (and a hostile Dask worker) would make them: a script's
`import oml` through the relay, users sharing a Dask worker, a partitioned read against everyone else on its Dask
worker, and a Dask worker that answers with pickles or forged results. Each wall answers with a clean error in OML's
shape, nothing leaks, and the next call (and other users' calls) still works. (One user against the cluster's slots:
tests/server/test_dask_engine.py.)"""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import msgpack
import pandas as pd
import pytest

from engines.dask import RELAY_MEDIA_TYPE, RELAY_PATH
from engines.dask.client import ClusterError, plain_exception
from engines.dask.engine import DaskConfig, DaskWorkers, _dask_failure, _read
from engines.pool import PoolSettings, WorkerDied
from engines.protocol import Task, Unit
from server.bridge import BRIDGE_CLIENT
from server.routes.relay import RELAY_THREADS_PER_USER
from tests.conftest import Api, change_settings, wait_for
from tests.server.test_dask_engine import (
    _relay,
    _script_token,
    dask_api,
    live,
    own_cluster,
    save_datastore,
)
from tests.server.test_script_identity import MINE, PLANT

_ = live  # the fixture, for dask_api


@pytest.fixture
def engine() -> str:
    return "dask"


pytestmark = pytest.mark.usefixtures("engine")

PYQD = "/oml/api/pyqd/v1"


def datastores(api: Api, headers: dict[str, str]) -> list[str]:
    r = api.client.get(f"{PYQD}/datastores", headers=headers)
    assert r.status_code == 200, r.text
    return [d["datastore_name"] for d in r.json()["result"]]


def assert_next_call_works(api: Api, headers: dict[str, str]) -> None:
    api.script(headers, "dir", "def dir():\n    import oml\n    return len(oml.ds.dir())\n")
    r = api.run(headers, "do-eval", "dir")
    assert r.status_code == 200, r.text


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `fn` in a daemon thread; its answer (or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- the relay, from a script -------------------------------------------------------------------------------
#: Sends its request to the relay itself, nested `depth` deep (each level a relayed POST to the relay).
NEST = f"""def nest(depth=1):
    import msgpack
    from oml._connection import current
    inner = ['GET', '{PYQD}/datastores', [], b'', False]
    for _ in range(depth - 1):
        headers = [[b'content-type', b'{RELAY_MEDIA_TYPE}']]
        inner = ['POST', '{RELAY_PATH}', headers, msgpack.packb(inner, use_bin_type=True), False]
    body = msgpack.packb(inner, use_bin_type=True)
    r = current().http.post('{RELAY_PATH}', content=body, headers={{'content-type': '{RELAY_MEDIA_TYPE}'}})
    return {{'status': r.status_code, 'body': r.text[:500]}}
"""


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_a_script_cannot_send_its_requests_through_the_relay(api):
    """The relay reached from a script nested its requests, each level holding a thread of the bridge's own event
    loop: a few dozen levels held them all, and every script's `import oml` on the server hung for good."""
    mallory, alice = api.user("MALLORY"), api.user("ALICE")
    api.script(mallory, "nest", NEST)
    for depth in (1, 2, 5):
        r = api.run(mallory, "do-eval", "nest", {"parameters": json.dumps({"depth": depth})})
        assert r.status_code == 200, r.text
        out = r.json()["result"]
        assert out["status"] == 400 and "may not use the relay" in out["body"], out
    assert_next_call_works(api, alice)


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
@pytest.mark.parametrize("engine", ["local"])
def test_the_relay_refuses_what_comes_through_the_bridge(api):
    """The second wall: were the bridge to let the relay's path through, the relay itself refuses a request that
    comes from the bridge."""
    alice = api.user("ALICE")
    token = _script_token(api, "ALICE", alice)
    request = msgpack.packb(["GET", f"{PYQD}/datastores", [], b"", False], use_bin_type=True)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": RELAY_MEDIA_TYPE}
    transport = httpx.ASGITransport(app=api.client.app, client=(BRIDGE_CLIENT, 0))  # type: ignore[attr-defined]

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://pyqd.bridge") as client:
            return await client.post(RELAY_PATH, headers=headers, content=request)

    r = anyio.run(send)
    assert r.status_code == 403 and r.json()["errorCode"] == 1003, r.text
    assert "may not use the relay" in r.json()["errorMessage"]
    r = api.client.post(RELAY_PATH, headers=headers, content=request)  # a Dask worker's request still passes
    assert r.status_code == 200 and r.headers["content-type"] == RELAY_MEDIA_TYPE, r.text


#: Relayed requests in flight at once in the flood below: more than the server's threads (anyio's default, 40).
FLOOD = 60


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
@pytest.mark.parametrize("engine", ["local"])
def test_a_flood_of_slow_relayed_requests_takes_neither_the_servers_threads_nor_other_users_relay(api, monkeypatch):
    """Each relayed request held one of the server's threads while the bridge served it, so a user with as many
    pyqd processes in the cluster as the server has threads (each making one slow `import oml` request) stopped
    every route that needs a thread, for everyone."""
    alice, bob = api.user("ALICE"), api.user("BOB")
    save_datastore(api, bob, "mine")
    alices, bobs = _script_token(api, "ALICE", alice), _script_token(api, "BOB", bob)
    bridge = api.services.bridge
    assert bridge is not None
    served, release = threading.Semaphore(0), threading.Event()
    real = bridge.handle

    def slow(message: Any, token: Any, read_only: bool = False) -> Any:  # Alice's requests are slow ones
        if token() == alices:
            served.release()
            release.wait(120)
        return real(message, token, read_only)

    monkeypatch.setattr(bridge, "handle", slow)
    listing = ["GET", f"{PYQD}/datastores", [], b"", False]
    flood = [in_thread(lambda: _relay(api, alices, listing)) for _ in range(FLOOD)]
    try:
        for _ in range(RELAY_THREADS_PER_USER):  # the relay is busy with Alice's requests
            assert served.acquire(timeout=60)
        probe, answer = in_thread(lambda: api.client.get(f"{PYQD}/datastores", headers=bob))
        probe.join(timeout=30)
        assert answer and answer[0].status_code == 200, "the server's threads were all held by relayed requests"
        probe, answer = in_thread(lambda: _relay(api, bobs, listing))
        probe.join(timeout=30)
        assert answer and answer[0].status_code == 200, "Alice's requests took all of the relay"
        assert msgpack.unpackb(answer[0].content)[0] == 200
    finally:
        release.set()
        for thread, _ in flood:
            thread.join(timeout=120)
    assert all(out and out[0].status_code == 200 for _, out in flood)


#: Tries what a script's token must not reach, through the relay; returns each answer's status.
REACH = """def reach(admin):
    from oml._connection import current
    http = current().http
    tries = {
        'token': ('POST', '/omlusers/api/oauth2/v1/token', {}),
        'metrics': ('GET', '/metrics', {}),
        'ready': ('GET', '/ready', {}),
        'dotdot': ('GET', '/oml/../omlusers/api/oauth2/v1/token', {}),
        'encoded': ('GET', '/oml/%2e%2e/metrics', {}),
        'admin': ('GET', '/oml/api/pyqd/v1/admin/users', {}),
        'admin_token': ('GET', '/oml/api/pyqd/v1/admin/users', {'authorization': 'Bearer ' + admin}),
        'create': ('POST', '/oml/api/pyqd/v1/scripts', {'content-type': 'application/json'}),
        'run': ('POST', '/oml/api/py-scripts/v1/do-eval/reach', {'content-type': 'application/json'}),
        'grant': ('POST', '/oml/api/pyqd/v1/scripts/reach/grants', {'content-type': 'application/json'}),
        'mine': ('GET', '/oml/api/pyqd/v1/datastores', {'authorization': 'Bearer ' + admin, 'cookie': 'x=y'}),
    }
    out = {}
    for name, (method, path, headers) in tries.items():
        try:
            r = http.request(method, path, headers=headers, content=b'{"user": "MALLORY", "name": "x", "script": "y"}')
            out[name] = [r.status_code, r.text[:300]]
        except Exception as e:
            out[name] = [0, type(e).__name__]
    return out
"""


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_a_scripts_relayed_requests_reach_only_what_its_token_may(api):
    alice = api.user("ALICE")
    api.user("MALLORY")
    admin = api.admin["Authorization"].split(" ", 1)[1]
    api.script(alice, "reach", REACH)
    r = api.run(alice, "do-eval", "reach", {"parameters": json.dumps({"admin": admin})})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    for name in ("token", "metrics", "ready", "dotdot", "encoded"):
        assert out[name][0] == 400 and "may only reach /oml/" in out[name][1], (name, out[name])
    for name in ("admin", "admin_token", "create", "run", "grant"):  # a forged Authorization is dropped
        assert out[name][0] == 403, (name, out[name])
    assert out["mine"][0] == 200  # ... and the call's own token used: Alice's datastores, as Alice
    r = api.client.get(f"{PYQD}/scripts/reach/grants", headers=alice)
    assert "MALLORY" not in r.text


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_another_owners_script_on_a_dask_worker_may_only_read(api):
    mallory, alice = api.user("MALLORY"), api.user("ALICE")
    api.script(mallory, "plant", PLANT)
    r = api.client.post(f"{PYQD}/scripts/plant/grants", headers=mallory, json={"user": "ALICE"})
    assert r.status_code in (200, 201, 204), r.text
    api.script(alice, "mine", MINE)
    r = api.run(alice, "do-eval", "plant", owner="MALLORY")
    assert r.status_code == 200, r.text
    assert r.json()["result"] != "saved"  # the relay kept the call read-only
    assert "ALICE_DS" not in datastores(api, alice)
    for _ in range(3):  # Alice's own code never runs where Mallory's ran, on any Dask worker
        assert api.run(alice, "do-eval", "mine").json() == {"result": None}


# -- users sharing a Dask worker --------------------------------------------------------------------------------
#: Leaves a secret in its scratch directory, names its pid in a datastore, and holds until released.
SECRET = """def secret():
    import oml, os, time
    with open('secret.txt', 'w') as f:
        f.write('alice-secret')
    oml.ds.save({'n': 1}, 'pid_' + str(os.getpid()), overwrite=True)
    while len(oml.ds.dir(name='release')) == 0:
        time.sleep(0.05)
    return 'alive'
"""

#: Everything one user's script tries against another's process and files.
PRY = """def pry(pid, path):
    import ctypes, errno, os, signal
    out = {}
    for sig in (0, signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            out['kill%d' % sig] = 0
        except OSError as e:
            out['kill%d' % sig] = e.errno
    for name in ('environ', 'mem', 'cmdline', 'cwd/secret.txt', 'root'):
        try:
            with open('/proc/%d/%s' % (pid, name), 'rb') as f:
                f.read(100)
            out[name] = 0
        except OSError as e:
            out[name] = e.errno
    libc = ctypes.CDLL(None, use_errno=True)
    out['ptrace'] = (libc.ptrace(16, pid, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
    for p in (path, '/tmp', '/dev/shm', os.path.dirname(path)):
        try:
            out[p] = open(p).read() if p == path else os.listdir(p)
        except OSError as e:
            out[p] = e.errno
    return out
"""


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_users_on_a_shared_dask_worker_cannot_reach_each_others_processes_or_files(api, dask_workers):
    alice, bob = api.user("ALICE"), api.user("BOB")
    api.script(alice, "secret", SECRET)
    api.script(bob, "pry", PRY)
    thread, answer = in_thread(lambda: api.run(alice, "do-eval", "secret"))
    (name,) = wait_for(lambda: [d for d in datastores(api, alice) if d.startswith("pid_")], timeout=120)  # type: ignore[misc]
    pid = int(name.removeprefix("pid_"))
    path = os.path.join(os.readlink(f"/proc/{pid}/cwd"), "secret.txt")  # the test runs as the host; Bob guesses it
    r = api.run(bob, "do-eval", "pry", {"parameters": json.dumps({"pid": pid, "path": path})})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    for sig in (0, 19, 9):
        assert out[f"kill{sig}"] == 1, out  # EPERM
    for key in ("environ", "mem", "cmdline", "cwd/secret.txt", "root", path, "/tmp", "/dev/shm", os.path.dirname(path)):
        assert out[key] in (1, 2, 13), (key, out)  # EPERM, ENOENT or EACCES: never the secret
    assert out["ptrace"][0] == -1
    save_datastore(api, alice, "release")
    thread.join(timeout=120)
    assert answer and answer[0].status_code == 200 and answer[0].json() == {"result": "alive"}, answer


HOLD = """def hold(i):
    import oml, os, time
    oml.ds.save({'n': 1}, 'held_' + str(i), overwrite=True)
    while len(oml.ds.dir(name='release')) == 0:
        time.sleep(0.05)
    return i
"""


# -- a partitioned read and everyone else on its Dask worker ----------------------------------------------------
ROWS_HOLD = """def hold(d):
    import oml, time
    oml.ds.save({'n': 1}, 'started', overwrite=True)
    while len(oml.ds.dir(name='release')) == 0:
        time.sleep(0.05)
    return d
"""


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
def test_a_partitioned_read_does_not_stop_its_dask_worker_for_everyone_else(api, dask_workers):
    """A partition task was a coroutine that blocked its Dask worker's event loop for the whole partition: the
    worker answered nobody (other users' tasks, cancellations, the scheduler's heartbeats) until it ended."""
    change_settings(api.services, partition_min_rows=1_000)
    alice, bob = api.user("ALICE"), api.user("BOB")
    api.table(alice, "BIG", pd.DataFrame({"ID": range(20_000)}))
    api.script(alice, "hold", ROWS_HOLD)
    api.script(bob, "ok", "def ok():\n    return 'fine'\n")
    body = {
        "input": "select ID from BIG",
        "rows": 5000,
        "parallelFlag": True,
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    }
    thread, answer = in_thread(lambda: api.run(alice, "row-apply", "hold", body))
    try:
        wait_for(lambda: "started" in datastores(api, alice), timeout=120)
        keys = wait_for(
            lambda: [k for ks in dask_workers.client().processing().values() for k in ks if "-p" in str(k)],
            timeout=60,
        )
        assert keys  # partition tasks are running
        pinged, pids = in_thread(lambda: dask_workers.client().run(os.getpid))
        pinged.join(timeout=30)
        assert pids and isinstance(pids[0], dict) and len(pids[0]) == 2, "a Dask worker stopped answering"
        bobs, got = in_thread(lambda: api.run(bob, "do-eval", "ok"))
        bobs.join(timeout=60)
        assert got and got[0].status_code == 200 and got[0].json() == {"result": "fine"}, got
    finally:
        save_datastore(api, alice, "release")
        thread.join(timeout=300)
    assert answer and answer[0].status_code == 200, answer
    assert [row["ID"] for row in answer[0].json()["result"]] == list(range(20_000))


def call_roles(api: Api) -> list[str]:
    """The partitioned reads' login roles that exist now in the test's database cluster, for this database."""
    import psycopg

    prefix = api.services.user_data.role_prefix + "_c_"
    with psycopg.connect(api.services.engine.url.set(drivername="postgresql").render_as_string(False)) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)).fetchall()
    return [name for (name,) in rows]


SLEEP_ROWS = "def nap(d):\n    import time\n    time.sleep(600)\n    return d\n"


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
def test_a_partitioned_call_that_fails_early_leaves_no_database_role(api, dask_workers):
    """The plan (a LOGIN role, an exported snapshot) is made before workers are taken: a call refused for want of
    workers, or stopped by its time limit, must drop it all the same."""
    change_settings(api.services, partition_min_rows=1_000, worker_wait_s=1.0, sync_time_limit_s=5.0)
    alice = api.user("ALICE")
    api.table(alice, "BIG", pd.DataFrame({"ID": range(20_000)}))
    api.script(alice, "nap", SLEEP_ROWS)
    api.script(alice, "hold", HOLD)
    body = {
        "input": "select ID from BIG",
        "rows": 5000,
        "parallelFlag": True,
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    }
    r = api.run(alice, "row-apply", "nap", body)  # the time limit
    assert r.status_code == 400 and r.json()["errorCode"] == 1040, r.text
    assert call_roles(api) == []
    change_settings(api.services, sync_time_limit_s=120.0)
    job = api.client.post(
        "/oml/api/py-scripts/v1/index-apply/hold",
        headers=alice,
        json={"times": 8, "parallelFlag": True, "service": "HIGH", "asyncFlag": True},
    )
    assert job.status_code == 201, job.text
    wait_for(lambda: len([d for d in datastores(api, alice) if d.startswith("held_")]) >= dask_workers._share(), 120)
    r = api.run(alice, "row-apply", "nap", body)  # Alice holds her share: no worker for this call
    assert r.status_code == 503 and r.json()["errorCode"] == 1503, r.text
    assert call_roles(api) == []
    save_datastore(api, alice, "release")
    status = f"/oml/api/{job.headers['location'].split('/api/', 1)[1]}"
    wait_for(lambda: api.client.get(status, headers=alice).status_code == 302, timeout=120)  # the job is done


# -- a Dask worker that answers with pickles -----------------------------------------------------------------
def _record(marker: str) -> Exception:
    """Runs when a pickle made by `_Planted` is opened: notes the process that opened it. Returns an exception, as
    the Dask worker checks that a failure's pickle opens to one before it sends it."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    return RuntimeError("planted")


class _Planted(Exception):
    def __init__(self, marker: str) -> None:
        super().__init__(marker)
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - unpickling this calls _record
        return (_record, (self.marker,))


def _raise_planted(marker: str, dask_worker: Any = None) -> None:
    raise _Planted(marker)


def _plant_result_types(marker: str, dask_worker: Any = None) -> bool:
    """Make this Dask worker report every finished task's result type as a planted pickle (as a Dask worker whose
    process was taken over would)."""
    import distributed.worker_state_machine as wsm

    real = wsm.pickle

    class Planting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def dumps(*_: Any, **__: Any) -> bytes:
            return pickle.dumps(_Planted(marker))

    wsm.pickle = Planting()
    return True


def _warn_planted(marker: str, dask_worker: Any = None) -> bool:
    dask_worker.log_event("warn", {"message": pickle.dumps(_Planted(marker))})
    dask_worker.log_event("pyqd-probe", "after")
    return True


def opened_here(marker: Any) -> bool:
    return marker.exists() and str(os.getpid()) in marker.read_text().split()


@pytest.fixture
def hostile_cluster() -> Iterator[DaskWorkers]:
    """The Dask engine on a cluster of its own (one Dask worker, to be made hostile)."""
    with own_cluster(n_workers=1) as cluster:
        workers = DaskWorkers(
            DaskConfig(scheduler=cluster.scheduler_address, api_url="http://127.0.0.1:9", host=PoolSettings(warm=0))
        )
        workers.start(wait_s=60)
        assert workers.problem() is None, workers.problem()
        try:
            yield workers
        finally:
            workers.close()


# `deserializers=["msgpack"]` keeps results from being unpickled, but distributed's client also unpickled the result
# type of every finished task, a failed task's exception, the errors of Client.run and `warn` events: whoever held a
# Dask worker ran code in every API server (the database's credentials, the signing key). `engines.dask.client`.
def test_a_hostile_dask_workers_failed_task_is_not_unpickled(hostile_cluster, tmp_path):
    marker = tmp_path / "errored"
    future = hostile_cluster.client().submit(_raise_planted, str(marker), pure=False)
    with pytest.raises(ClusterError):
        future.result(timeout=60)
    assert not opened_here(marker)


def test_a_hostile_dask_workers_error_in_client_run_is_not_unpickled(hostile_cluster, tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ClusterError):
        hostile_cluster.client().run(_raise_planted, str(marker))
    assert not opened_here(marker)


def test_a_hostile_dask_workers_warn_event_is_not_unpickled(hostile_cluster, tmp_path):
    marker = tmp_path / "warned"
    client = hostile_cluster.client()
    seen = threading.Event()
    client.subscribe_topic("pyqd-probe", lambda event: seen.set())
    client.run(_warn_planted, str(marker))
    assert seen.wait(60)  # the event after the planted `warn` arrived: the `warn` was handled (or dropped) first
    assert not opened_here(marker)


def test_a_hostile_dask_workers_result_types_are_not_unpickled(hostile_cluster, tmp_path):
    marker = tmp_path / "typed"
    client = hostile_cluster.client()
    assert client.run(_plant_result_types, str(marker))
    assert client.submit(bytes, 3, pure=False).result(timeout=60) == b"\0\0\0"
    assert not opened_here(marker)


def test_a_task_given_up_after_its_workers_died_is_still_told_apart(tmp_path):
    from distributed.protocol import pickle as dask_pickle
    from distributed.scheduler import KilledWorker

    _, error, traceback = plain_exception(dask_pickle.dumps(KilledWorker("k", "tcp://w", 1)))
    assert isinstance(error, ClusterError) and error.killed and traceback is None
    assert "died" in _dask_failure(error)
    marker = tmp_path / "planted"
    _, error, _ = plain_exception(pickle.dumps(_Planted(str(marker))), exception_text="ValueError('x')")
    assert isinstance(error, ClusterError) and not error.killed and str(error) == "ValueError('x')"
    assert not marker.exists()


def test_forged_answers_from_a_dask_worker_are_refused():
    task = Task(call_id="c", user="U", script_name="s", source="", kind="index", units=[Unit("1"), Unit("2")])

    def answer(header: dict[str, Any], blobs: list[bytes] | None = None) -> bytes:
        return msgpack.packb([msgpack.packb(header, use_bin_type=True), blobs or []], use_bin_type=True)

    unit = {"name": "1", "ok": True, "value": 0}
    forged = [
        answer({"t": "results", "units": [{**unit, "name": "2"}]}),  # out of order
        answer({"t": "results", "units": [unit, {**unit, "name": "2"}, {**unit, "name": "3"}]}),  # more than sent
        answer({"t": "results", "units": []}),
        answer({"t": "results", "units": [{**unit, "value": 5}]}),  # a blob that is not there
        answer({"t": "status", "status": "empty"}),  # "empty" only ends a partition
        answer({"t": "status", "status": "x" * 10_000, "message": "y" * 100_000}),
        answer({"t": "http", "method": "GET", "path": "/"}),
        msgpack.packb([msgpack.packb({"t": "results"}), [1]]),
        msgpack.packb([1, 2, 3]),
        msgpack.packb(["header", []]),
        b"\x80\x04K\x01.",  # a pickle
    ]
    for junk in forged:
        with pytest.raises(WorkerDied) as e:
            _read(junk, task)
        assert len(str(e.value)) <= 2100


# -- what the cluster's problems tell the world ----------------------------------------------------------------
def test_the_schedulers_address_is_not_told_to_users_or_to_ready(sqlite_settings, live):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask_api(sqlite_settings, live, f"tcp://127.0.0.1:{port}", reachable=False) as (api, _):
        ready = api.client.get("/ready")
        assert ready.status_code == 503 and "cannot be reached" in ready.text
        alice = api.user("ALICE")
        api.script(alice, "ok", "def ok():\n    return 1\n")
        r = api.run(alice, "do-eval", "ok")
        assert r.status_code == 503 and "Dask scheduler" in r.json()["errorMessage"], r.text
        for text in (ready.text, r.text):
            assert str(port) not in text and "127.0.0.1" not in text, text
