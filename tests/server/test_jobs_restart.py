"""Jobs survive a server that is killed: with a real server process, SIGKILLed mid-job and started again,
every job ends finished or failed with a reason; scripts and datastores are intact."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, wait_for
from tests.server.procs import ServerProcess, clean_env

SLOW = "def slow(t=0.1):\n    import time\n    time.sleep(t)\n    return {'slept': t}\n"


def env_for(settings, **extra: str) -> dict[str, str]:
    env = {
        "PYQD_DATA_DIR": str(settings.data_dir),
        "PYQD_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PYQD_WORKERS": "2",
        "PYQD_JOB_CONCURRENCY": "1",
        "PYQD_JOB_HEARTBEAT_S": "0.2",
        "PYQD_JOB_STALE_AFTER_S": "1",
        **extra,
    }
    if settings.database_url:
        env["PYQD_DATABASE_URL"] = settings.database_url
    return clean_env(**env)


class Client:
    def __init__(self, url: str) -> None:
        token = httpx.post(
            f"{url}/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": "ADMIN", "password": ADMIN_PASSWORD},
        ).json()["accessToken"]
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def close(self) -> None:
        self.http.close()

    def submit(self, t: float) -> str:
        r = self.http.post(
            "/oml/api/py-scripts/v2/do-eval/slow", json={"asyncFlag": True, "parameters": f'{{"t": {t}}}'}
        )
        assert r.status_code == 201, r.text
        return r.headers["location"].split("/api/", 1)[1]

    def state(self, job: str) -> str:
        r = self.http.get(f"/oml/api/{job}")
        return r.json()["state"] if r.status_code == 202 else "DONE"

    def result(self, job: str) -> httpx.Response:
        return self.http.get(f"/oml/api/{job}/result")


def start(tmp_path, settings, **extra: str) -> ServerProcess:
    server = ServerProcess(env=env_for(settings, **extra), cwd=tmp_path)
    server.wait_healthy()
    return server


def kill(server: ServerProcess) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.wait_exit()
    server.stop()  # closes its pipes


@pytest.mark.timeout(240)
def test_jobs_survive_sigkill_of_the_server(tmp_path, settings):
    first = start(tmp_path, settings)
    try:
        c = Client(first.url)
        assert c.http.post("/oml/api/pyqd/v1/scripts", json={"name": "slow", "script": SLOW}).status_code == 201
        files = {"meta": (None, '{"description": "kept"}'), "x": ("x", b"\x80\x04K\x2a.")}
        assert c.http.post("/oml/api/pyqd/v1/datastores/keep", files=files).status_code == 201
        interrupted, queued = c.submit(3.0), c.submit(0.1)
        wait_for(lambda: c.state(interrupted) == "RUNNING", timeout=60)
        assert c.state(queued) == "QUEUED"  # one job at a time on this server
        c.close()
    finally:
        kill(first)

    second = start(tmp_path, settings, PYQD_JOB_MAX_ATTEMPTS="2")
    try:
        c = Client(second.url)
        wait_for(lambda: c.state(interrupted) == "DONE" and c.state(queued) == "DONE", timeout=90)
        assert c.result(interrupted).json() == {"result": {"slept": 3.0}}  # re-run after the restart
        assert c.result(queued).json() == {"result": {"slept": 0.1}}
        assert c.http.get("/oml/api/pyqd/v1/scripts/slow").json()["result"]["script"] == SLOW
        assert c.http.get("/oml/api/pyqd/v1/datastores/keep").json()["result"]["description"] == "kept"
        doomed = c.submit(30.0)
        wait_for(lambda: c.state(doomed) == "RUNNING", timeout=60)
        c.close()
    finally:
        kill(second)

    third = start(tmp_path, settings, PYQD_JOB_MAX_ATTEMPTS="1")
    try:
        c = Client(third.url)
        wait_for(lambda: c.state(doomed) == "DONE", timeout=60)
        r = c.result(doomed)
        assert r.status_code == 500 and "server restarted" in r.json()["errorMessage"]
        (listed,) = [
            j
            for j in c.http.get("/oml/api/py-scripts/v2/jobs").json()["result"]
            if j["job_id"] == doomed.rsplit("/", 1)[1]
        ]
        assert listed["status"] == "ERROR"
        c.close()
    finally:
        third.stop()
