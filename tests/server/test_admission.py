"""Admission control: a burst against a small pool gets 200s and 503s with Retry-After (never a hang or a
500); a big job shares the pool with small calls."""

from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn

from server import accounts
from server.app import create_app
from server.services import make_pool, open_services
from tests.conftest import change_settings, wait_for


@pytest.fixture
def small(sqlite_settings):
    """A real server with two workers, which makes callers wait at most one second."""
    import socket

    settings = sqlite_settings.model_copy(
        update={
            "workers": 2,
            "warm_workers": 2,
            "workers_per_user": 2,  # one user may hold the whole pool here: the subject is giving workers back
            "worker_preload": "",
            "worker_wait_s": 1.0,
            "job_heartbeat_s": 0.2,
            "job_concurrency": 1,
            "calls_per_user": 16,  # the subject is the pool's own admission, not the per-user share
        }
    )
    svc = open_services(settings)
    svc.pool = make_pool(settings)
    svc.pool.start(wait=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(services=svc), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20)
        accounts.add_user(svc, "ALICE", "password-of-alice")
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        token = httpx.post(
            f"{url}/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": "ALICE", "password": "password-of-alice"},
        ).json()["accessToken"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            yield client, svc
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        svc.pool.close()
        svc.close()


def test_a_burst_gets_200_or_503_or_429_with_retry_after_and_nothing_else(small):
    client, _ = small
    src = "def nap():\n    import time\n    time.sleep(0.4)\n    return 'ok'\n"
    assert client.post("/oml/api/pyqd/v1/scripts", json={"name": "nap", "script": src}).status_code == 201
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        r = client.post("/oml/api/py-scripts/v1/do-eval/nap", json={})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a call hung"
    assert len(answers) == 16
    statuses = sorted(r.status_code for r in answers)
    # 503: no worker in time; 429: over the user's own share of calls in flight (PYQD_CALLS_PER_USER)
    assert set(statuses) <= {200, 429, 503} and 200 in statuses and 503 in statuses, statuses
    for r in answers:
        if r.status_code == 200:
            assert r.json() == {"result": "ok"}
        else:
            assert int(r.headers["retry-after"]) >= 1 and r.json()["errorCode"] == {429: 1429, 503: 1503}[r.status_code]


def test_a_high_job_gives_workers_back_to_a_waiting_low_call(small):
    client, svc = small
    change_settings(svc, worker_wait_s=30.0)  # long enough for the job to finish a task and give a worker back
    src = "def nap(i):\n    import time\n    time.sleep(0.3)\n    return i\n"
    assert client.post("/oml/api/pyqd/v1/scripts", json={"name": "nap", "script": src}).status_code == 201
    r = client.post(
        "/oml/api/py-scripts/v2/index-apply/nap",
        json={"times": 40, "parallelFlag": True, "service": "HIGH", "asyncFlag": True},
    )
    location = "/oml/api/" + r.headers["location"].split("/api/", 1)[1]
    wait_for(lambda: svc.pool.stats()["busy"] == 2)  # the job holds the whole pool
    quick = client.post("/oml/api/py-scripts/v1/index-apply/nap", json={"times": 1, "service": "LOW"})
    assert quick.status_code == 200 and quick.json() == {"result": [1]}
    assert client.get(location).status_code == 202  # served while the job was still running
    client.delete(location)
