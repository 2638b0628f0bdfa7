"""The Dask engine's own walls and faults. The shared execution tests (test_execution, test_execution_oml,
test_jobs, test_worker_attacks) run on it too, through the `engine` parameter; these are what only a cluster has:
user code in sandboxed processes on a shared Dask worker, the relay, pickles from the cluster, a Dask worker or the
scheduler dying mid-call, and a job whose server and Dask workers both die."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle
import httpx
import msgpack
import pytest

from engines.dask import RELAY_MEDIA_TYPE, RELAY_PATH
from engines.dask.engine import DaskConfig, DaskWorkers, _read
from engines.dask.host import host_stats
from engines.pool import PoolSettings, WorkerDied
from engines.protocol import Task, Unit
from server.execution import session_to_json
from tests.conftest import ADMIN_PASSWORD, Api, change_settings, serving, wait_for
from tests.engines.test_sandbox_attacks import PROBE_SOCKETS
from tests.server.procs import ServerProcess, clean_env


@pytest.fixture
def engine() -> str:
    return "dask"


pytestmark = pytest.mark.usefixtures("engine")


#: Holds until the test saves datastore `release_<tag>`; saves `started_<tag>` first (through the relay).
HOLD = """def hold(tag='x'):
    import oml, time
    oml.ds.save({'n': 1}, 'started_' + tag, overwrite=True)
    while len(oml.ds.dir(name='release_' + tag)) == 0:
        time.sleep(0.05)
    return tag
"""


def save_datastore(api: Api, headers: dict[str, str], name: str) -> None:
    files = {"meta": (None, json.dumps({"overwrite": True})), "n": ("n", io.BytesIO(cloudpickle.dumps(1)))}
    r = api.client.post(f"/oml/api/pyqd/v1/datastores/{name}", headers=headers, files=files)
    assert r.status_code == 201, r.text


def has_datastore(api: Api, headers: dict[str, str], name: str) -> bool:
    return api.client.get(f"/oml/api/pyqd/v1/datastores/{name}", headers=headers).status_code == 200


def busy_on_dask(workers: DaskWorkers) -> int:
    """pyqd processes running tasks on every Dask worker."""
    return sum(s.get("busy", 0) for s in workers.client().run(host_stats).values())


# -- isolation on a shared Dask worker ------------------------------------------------------------------------
def test_user_code_runs_sandboxed_in_its_own_process_on_the_dask_worker(api, dask_workers):
    assert api.services.execution.workers is dask_workers
    alice, bob = api.user("ALICE"), api.user("BOB")
    api.script(alice, "probe", PROBE_SOCKETS)
    out = api.run(alice, "do-eval", "probe").json()["result"]
    for kind in ("tcp", "tcp6", "udp", "unix-postgres", "socketpair", "netlink"):
        assert out[kind] == errno.EPERM, (kind, out)
    look = (
        "def look():\n    import os\n    return {'pid': os.getpid(), 'uid': os.getuid(), 'env': sorted(os.environ)}\n"
    )
    dask_pids = set(dask_workers.client().run(os.getpid).values())
    seen: dict[str, set[int]] = {}
    for name, headers in (("ALICE", alice), ("BOB", bob)):
        api.script(headers, "look", look)
        for _ in range(3):
            got = api.run(headers, "do-eval", "look").json()["result"]
            assert got["pid"] not in dask_pids  # never the shared Dask worker process itself
            assert not [k for k in got["env"] if k.startswith(("PYQD_", "DASK_"))]
            if os.getuid() == 0:
                assert got["uid"] != 0
            seen.setdefault(name, set()).add(got["pid"])
    assert not seen["ALICE"] & seen["BOB"]  # one user per process


def test_a_crashing_script_costs_only_its_call(api):
    mallory = api.user("MALLORY")
    api.script(mallory, "die", "def die():\n    import os\n    os._exit(3)\n")
    r = api.run(mallory, "do-eval", "die")
    assert r.status_code == 500 and r.json()["errorCode"] == 1050, r.text
    assert "exit" in r.json()["errorMessage"]
    api.script(mallory, "ok", "def ok():\n    return 'fine'\n")
    assert api.run(mallory, "do-eval", "ok").json() == {"result": "fine"}


def test_the_time_limit_kills_the_process_on_the_dask_worker(api, dask_workers):
    change_settings(api.services, sync_time_limit_s=3.0)
    mallory = api.user("MALLORY")
    api.script(mallory, "spin", "def spin():\n    while True:\n        pass\n")
    r = api.run(mallory, "do-eval", "spin")
    assert r.status_code == 400 and r.json()["errorCode"] == 1040, r.text
    wait_for(lambda: busy_on_dask(dask_workers) == 0, timeout=60)


def test_deleting_a_running_job_kills_its_dask_tasks(api, dask_workers):
    alice = api.user("ALICE")
    api.script(alice, "hold", HOLD)
    r = api.client.post(
        "/oml/api/py-scripts/v1/do-eval/hold", headers=alice, json={"asyncFlag": True, "parameters": '{"tag":"j"}'}
    )
    assert r.status_code == 201, r.text
    job = r.headers["location"].split("/api/", 1)[1]
    wait_for(lambda: has_datastore(api, alice, "started_j"), timeout=120)
    assert busy_on_dask(dask_workers) >= 1
    assert api.client.delete(f"/oml/api/{job}", headers=alice).status_code in (200, 204)
    wait_for(lambda: busy_on_dask(dask_workers) == 0, timeout=60)
    assert api.client.get(f"/oml/api/{job}", headers=alice).status_code == 404


HOLD_INDEX = """def hold(i):
    import oml, time
    oml.ds.save({'n': i}, 'started_%d' % i, overwrite=True)
    while len(oml.ds.dir(name='release')) == 0:
        time.sleep(0.05)
    return i
"""


def test_one_user_cannot_take_every_dask_slot(api, dask_workers):
    """The session's cluster has 4 slots; a user holds at most half, so another user's call runs at once."""
    import threading

    alice, bob = api.user("ALICE"), api.user("BOB")
    api.script(alice, "hold", HOLD_INDEX)
    answer: list[httpx.Response] = []
    body = {"times": 4, "parallelFlag": True, "service": "HIGH"}
    thread = threading.Thread(target=lambda: answer.append(api.run(alice, "index-apply", "hold", body)))
    thread.start()
    try:
        wait_for(lambda: has_datastore(api, alice, "started_1") and has_datastore(api, alice, "started_2"), 120)
        assert dask_workers.stats()["busy"] == 2  # her share, though she asked for more
        assert not has_datastore(api, alice, "started_3")
        api.script(bob, "ok", "def ok():\n    return 'fine'\n")
        assert api.run(bob, "do-eval", "ok").json() == {"result": "fine"}
    finally:
        save_datastore(api, alice, "release")
        thread.join(timeout=120)
    assert answer[0].json() == {"result": [1, 2, 3, 4]}


# -- the relay ----------------------------------------------------------------------------------------------
def _script_token(api: Api, user: str, headers: dict[str, str], read_only: bool = False) -> str:
    """A script token of `user`'s session, as the engine mints one for a call."""
    claims = api.services.signer.decode(headers["Authorization"].split(" ", 1)[1])
    return api.services.signer.issue_script(claims, "call-1", expires_at=time.time() + 60, read_only=read_only).token


def _relay(api: Api, token: str, request: Any, content_type: str = RELAY_MEDIA_TYPE) -> httpx.Response:
    body = request if isinstance(request, bytes) else msgpack.packb(request, use_bin_type=True)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    return api.client.post(RELAY_PATH, headers=headers, content=body)


def _answer(r: httpx.Response) -> tuple[int, dict]:
    assert r.status_code == 200 and r.headers["content-type"] == RELAY_MEDIA_TYPE, r.text
    status, _, body = msgpack.unpackb(r.content)
    return status, json.loads(body)


def test_the_relay_takes_only_a_script_token_and_checks_what_it_relays(api):
    alice = api.user("ALICE")
    save_datastore(api, alice, "mine")
    token = _script_token(api, "ALICE", alice)
    listing = ["GET", "/oml/api/pyqd/v1/datastores", [], b"", False]
    # a user's own token may not use it
    r = _relay(api, alice["Authorization"].split(" ", 1)[1], listing)
    assert r.status_code == 403 and r.json()["errorCode"] == 1003
    # what it relays is the bridge's business: the caller's own data, nothing else
    status, body = _answer(_relay(api, token, listing))
    assert status == 200 and [d["datastore_name"] for d in body["result"]] == ["mine"]
    status, body = _answer(_relay(api, token, ["GET", "/omlusers/api/oauth2/v1/token", [], b"", False]))
    assert status == 400 and "may only reach /oml/" in body["errorMessage"]
    headers = [[b"authorization", b"Bearer forged"], [b"content-type", b"application/json"]]
    status, body = _answer(_relay(api, token, ["GET", "/oml/api/pyqd/v1/datastores", headers, b"", False]))
    assert status == 200  # a forged Authorization is dropped, the call's own token used
    status, body = _answer(_relay(api, token, ["DELETE", "/oml/api/pyqd/v1/datastores/mine", [], b"", True]))
    assert status == 403 and has_datastore(api, alice, "mine")  # read-only calls stay read-only
    # ... and the token of a read-only call says so itself: a Dask worker that sends read_only=False gains nothing
    reader = _script_token(api, "ALICE", alice, read_only=True)
    status, body = _answer(_relay(api, reader, ["DELETE", "/oml/api/pyqd/v1/datastores/mine", [], b"", False]))
    assert status == 403 and has_datastore(api, alice, "mine")
    r = api.client.delete("/oml/api/pyqd/v1/datastores/mine", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403 and has_datastore(api, alice, "mine")
    status, body = _answer(_relay(api, reader, listing))
    assert status == 200 and [d["datastore_name"] for d in body["result"]] == ["mine"]
    # malformed requests are clean 400s in OML's shape
    for bad in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"a": 1})):
        r = _relay(api, token, bad)
        assert r.status_code == 400 and r.json()["errorCode"] == 1000, r.text
    assert _relay(api, token, listing, content_type="application/json").status_code == 400


# -- nothing pickled comes back from the cluster ----------------------------------------------------------------
class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - unpickling this creates the marker file
        return (open, (self.marker, "w"))


def _make_evil(marker: str) -> _Evil:
    return _Evil(marker)


def test_the_api_server_never_unpickles_what_the_cluster_answers(dask_workers, tmp_path):
    marker = tmp_path / "unpickled"
    future = dask_workers.client().submit(_make_evil, str(marker), pure=False)
    with pytest.raises(Exception):  # noqa: B017 - whichever error: the point is the marker below
        future.result(timeout=60)
    assert not marker.exists()
    task = Task(call_id="c", user="U", script_name="s", source="", kind="eval", units=[Unit("")])
    for junk in (b"", b"\xc1", msgpack.packb([b"x", [1]]), msgpack.packb([msgpack.packb({"t": "results"}), []]), 7):
        with pytest.raises(WorkerDied):
            _read(junk, task)


# -- faults that need a cluster of their own ----------------------------------------------------------------
@contextmanager
def own_cluster(n_workers: int = 2) -> Iterator[Any]:
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


@contextmanager
def dask_api(
    sqlite_settings, live: Any, scheduler: str, *, reachable: bool = True, **overrides: object
) -> Iterator[tuple[Api, DaskWorkers]]:
    """A live server on SQLite whose engine is a Dask cluster of the test's own (connected before the server
    starts; with reachable=False, once the engine has found the scheduler unreachable)."""
    from server.app import create_app
    from server.services import make_pool, open_services

    settings = sqlite_settings.model_copy(update={"workers": 2, "warm_workers": 0, **overrides})
    svc = open_services(settings)
    svc.pool = make_pool(settings)
    workers = DaskWorkers(DaskConfig(scheduler=scheduler, api_url="http://127.0.0.1:9", host=PoolSettings(warm=1)))
    workers.start(wait_s=60 if reachable else 0)
    if not reachable:
        wait_for(lambda: "cannot be reached" in (workers.problem() or ""), timeout=120)
    svc.cluster = workers
    try:
        with live(create_app(services=svc)) as url:
            workers.api_url = url
            with httpx.Client(base_url=url, follow_redirects=True, timeout=300) as client:
                yield Api(client, svc), workers
    finally:
        workers.close()
        svc.close()


@pytest.fixture
def live():
    """Run an app on a real socket: `with live(app) as url`."""
    return serving


CHUNKS = """def chunk(d):
    import oml, time
    first = int(d['ID'].iloc[0])
    if first == 1 and len(oml.ds.dir(name='started')) == 0:
        oml.ds.save({'n': 1}, 'started', overwrite=True)
        while True:          # held until its Dask worker is killed under it
            time.sleep(0.05)
    return d
"""


def test_a_dask_worker_killed_mid_call_has_its_units_run_once_more_elsewhere(sqlite_settings, live):
    import dask
    import pandas as pd

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), own_cluster() as cluster:
        with dask_api(sqlite_settings, live, cluster.scheduler_address) as (api, workers):
            alice = api.user("ALICE")
            api.table(alice, "T", pd.DataFrame({"ID": range(1, 9)}))
            api.script(alice, "chunk", CHUNKS)
            import threading

            answer: list[httpx.Response] = []
            body = {
                "input": "select * from T",
                "rows": 1,
                "parallelFlag": True,
                "parameters": '{"oml_input_type":"pandas.DataFrame"}',
            }
            thread = threading.Thread(target=lambda: answer.append(api.run(alice, "row-apply", "chunk", body)))
            thread.start()
            wait_for(lambda: has_datastore(api, alice, "started"), timeout=120)
            client = workers.client()
            pids = client.run(os.getpid)
            holding = wait_for(
                lambda: [a for a, keys in client.processing().items() if any(str(k).startswith("pyqd-") for k in keys)],
                timeout=60,
            )
            os.kill(pids[holding[0]], signal.SIGKILL)
            thread.join(timeout=300)
            r = answer[0]
            assert r.status_code == 200, r.text
            assert [row["ID"] for row in r.json()["result"]] == list(range(1, 9))  # every chunk once, in order


def test_an_unreachable_scheduler_is_a_503_with_retry_after_and_ready_says_so(sqlite_settings, live):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask_api(sqlite_settings, live, address, reachable=False) as (api, _):
        ready = api.client.get("/ready")
        assert ready.status_code == 503 and "cannot be reached" in ready.json()["cluster"]["status"]
        assert api.client.get("/ready?cluster=false").status_code == 200
        alice = api.user("ALICE")  # the rest of the API works without the cluster
        api.script(alice, "ok", "def ok():\n    return 1\n")
        started = time.monotonic()
        r = api.run(alice, "do-eval", "ok")
        assert r.status_code == 503 and r.json()["errorCode"] == 1503, r.text
        assert int(r.headers["retry-after"]) >= 1 and "Dask scheduler" in r.json()["errorMessage"]
        assert time.monotonic() - started < 30


def test_the_scheduler_dying_mid_call_fails_the_call_and_it_never_hangs(sqlite_settings, live):
    with own_cluster(n_workers=1) as cluster:
        with dask_api(sqlite_settings, live, cluster.scheduler_address) as (api, _):
            alice = api.user("ALICE")
            api.script(alice, "hold", HOLD)
            import threading

            answer: list[httpx.Response] = []
            thread = threading.Thread(target=lambda: answer.append(api.run(alice, "do-eval", "hold")))
            thread.start()
            wait_for(lambda: has_datastore(api, alice, "started_x"), timeout=120)
            cluster.close(timeout=30)
            thread.join(timeout=120)
            assert not thread.is_alive()
            r = answer[0]
            assert r.status_code in (500, 503), r.text
            assert "Dask" in r.json()["errorMessage"], r.text
            wait_for(lambda: api.client.get("/ready").status_code == 503, timeout=60)
            r = api.run(alice, "do-eval", "hold")
            assert r.status_code == 503 and "retry-after" in r.headers


# -- a job whose server and Dask workers both die -----------------------------------------------------------------
def test_a_job_whose_server_and_dask_workers_die_ends_failed_with_a_reason(settings, tmp_path):
    if settings.database_url is None:
        pytest.skip("several servers share PostgreSQL")
    with own_cluster(n_workers=1) as cluster:
        common = {
            "PYQD_DATABASE_URL": settings.database_url,
            "PYQD_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PYQD_SIGNING_KEY": "k" * 64,
            "PYQD_ENGINE": "dask",
            "PYQD_DASK_SCHEDULER": cluster.scheduler_address,
            "PYQD_JOB_HEARTBEAT_S": "0.2",
            "PYQD_JOB_STALE_AFTER_S": "2",
        }
        a = ServerProcess(env=clean_env(PYQD_DATA_DIR=str(tmp_path / "a"), **common), cwd=tmp_path)
        try:
            a.wait_healthy()
            token = httpx.post(
                f"{a.url}/omlusers/api/oauth2/v1/token",
                json={"grant_type": "password", "username": "ADMIN", "password": ADMIN_PASSWORD},
            ).json()["accessToken"]
            auth = {"Authorization": f"Bearer {token}"}
            wait_for(lambda: httpx.get(f"{a.url}/ready").status_code == 200, timeout=120)
            src = "def spin():\n    import time\n    while True:\n        time.sleep(0.05)\n"
            r = httpx.post(f"{a.url}/oml/api/pyqd/v1/scripts", headers=auth, json={"name": "spin", "script": src})
            assert r.status_code == 201, r.text
            r = httpx.post(f"{a.url}/oml/api/py-scripts/v1/do-eval/spin", headers=auth, json={"asyncFlag": True})
            job = r.headers["location"].split("/api/", 1)[1]
            wait_for(lambda: httpx.get(f"{a.url}/oml/api/{job}", headers=auth).json().get("state") == "RUNNING", 120)
        finally:
            a.proc.kill()  # SIGKILL: no chance to give its job back
            a.proc.wait(timeout=60)
            a.stop()
        cluster.scale(0)
        wait_for(lambda: not cluster.scheduler.workers, timeout=60)
        b = ServerProcess(env=clean_env(PYQD_DATA_DIR=str(tmp_path / "b"), **common), cwd=tmp_path)
        try:
            b.wait_healthy()

            def ended() -> dict | None:
                r = httpx.get(f"{b.url}/oml/api/{job}", headers=auth)
                return (
                    None if r.status_code == 202 else {"status": r.status_code, "body": r.json() if r.content else None}
                )

            wait_for(ended, timeout=120)
            r = httpx.get(f"{b.url}/oml/api/{job}/result", headers=auth)
            assert r.status_code in (500, 503), r.text
            assert "Dask" in r.json()["errorMessage"], r.text
        finally:
            b.stop()


_ = session_to_json  # (imported for the script-token helper's readers)


# -- the data path: large inputs read by the Dask workers, in partitions --------------------------------------
ROWS_OF_CHUNK = "def rows(d):\n    import pandas as pd\n    return pd.DataFrame({'ID': d['ID'], 'N': len(d)})\n"


def test_a_large_row_apply_input_is_read_by_the_dask_workers_in_partitions(api, monkeypatch):
    import pandas as pd
    import psycopg

    from tables import query as tq

    planned: list[Any] = []
    real = tq.partition_query

    def spy(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        planned.append(plan)
        return plan

    monkeypatch.setattr(tq, "partition_query", spy)
    change_settings(api.services, partition_min_rows=1_000)
    alice = api.user("ALICE")
    api.table(alice, "BIG", pd.DataFrame({"ID": range(20_000), "X": [i * 0.5 for i in range(20_000)]}))
    api.script(alice, "rows", ROWS_OF_CHUNK)
    body = {
        "input": "select ID from BIG where X >= 0",
        "rows": 700,
        "parallelFlag": True,
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    }
    r = api.run(alice, "row-apply", "rows", body)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert [row["ID"] for row in result] == list(range(20_000))  # every row once, in the table's order
    assert all(row["N"] <= 700 for row in result)
    if api.services.settings.database_url is None:
        assert planned == [None]  # SQLite: the server streams the input
        return
    assert planned and planned[0] is not None and len(planned[0].partitions) >= 2
    with psycopg.connect(api.services.engine.url.set(drivername="postgresql").render_as_string(False)) as conn:
        left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", ("%\\_c\\_%",)).fetchall()
    assert not [name for (name,) in left if name.startswith(api.services.user_data.role_prefix)]  # role dropped
    # a read the gate refuses is refused before any partition is planned
    bob = api.user("BOB")
    api.script(bob, "rows", ROWS_OF_CHUNK)
    r = api.run(bob, "row-apply", "rows", {**body, "input": "select ID from ALICE.BIG"})
    assert r.status_code in (400, 404) and r.json()["errorCode"] in (1020, 1004), r.text
