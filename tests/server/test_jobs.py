"""Async jobs over plain HTTP, byte-compatible with reference §5: 201 + Location, 202 while running, 302 with
Content-Location (and no Location) when done, the result, deletion, v2 listing."""

from __future__ import annotations

import dataclasses
import uuid

import pandas as pd
import pytest
from sqlalchemy import func, select

from engines.jobs.models import JobChunk
from tests.conftest import change_settings, own_pool_api, wait_for
from tests.data import iris_frame

SLOW = "def slow(t=0.2):\n    import time\n    time.sleep(t)\n    return {'slept': t}\n"

BODIES = {
    "do-eval": {"parameters": '{"t": 0.1}'},
    "table-apply": {"input": "select * from IRIS", "parameters": '{"oml_input_type":"pandas.DataFrame"}'},
    "row-apply": {"input": "select * from IRIS", "rows": 50, "parameters": '{"oml_input_type":"pandas.DataFrame"}'},
    "group-apply": {
        "input": "select * from IRIS",
        "groupBy": "SPECIES",
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    },
    "index-apply": {"times": 3},
}
SCRIPTS = {
    "do-eval": SLOW,
    "table-apply": "def f(d):\n    return len(d)\n",
    "row-apply": "def f(d):\n    return d[['SPECIES']].head(1)\n",
    "group-apply": "def f(d):\n    return len(d)\n",
    "index-apply": "def f(i):\n    return i * 10\n",
}


@pytest.fixture
def user(api):
    headers = api.user("ALICE")
    api.table(headers, "IRIS", iris_frame())
    return headers


def submit(api, headers, verb, script, body, version="v1"):
    r = api.client.post(
        f"/oml/api/py-scripts/{version}/{verb}/{script}", headers=headers, json={**body, "asyncFlag": True}
    )
    assert r.status_code == 201, r.text
    assert r.content == b""
    return r.headers["location"]


def wait_done(api, headers, location):
    """Poll the status URL as Oracle's clients do, until the 302."""

    def status():
        r = api.client.get(location, headers=headers, follow_redirects=False)
        assert r.status_code in (202, 302), r.text
        return r if r.status_code == 302 else None

    return wait_for(status, timeout=60)


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("verb", list(BODIES))
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_async_lifecycle_of_every_verb_matches_the_sync_answer(api, user, verb, version):
    name = "slow" if verb == "do-eval" else "f"
    api.script(user, name, SCRIPTS[verb])
    location = submit(api, user, verb, name, BODIES[verb], version)
    assert location.startswith(
        f"{str(api.client.base_url).rstrip('/')}/oml/tenants/PYQD/databases/PYQD/api/py-scripts/{version}/jobs/"
    )
    uuid.UUID(location.rsplit("/", 1)[1])
    done = wait_done(api, user, location)
    assert "location" not in done.headers
    assert done.headers["content-location"] == location + "/result"
    result = api.client.get(done.headers["content-location"], headers=user)
    sync = api.run(user, verb, name, BODIES[verb], version=version)
    assert result.status_code == 200 and result.json() == sync.json()


@pytest.mark.usefixtures("engine")
def test_status_while_running_and_result_not_ready(api, user):
    api.script(user, "slow", SLOW)
    location = submit(api, user, "do-eval", "slow", {"parameters": '{"t": 60}'})
    r = api.client.get(location, headers=user)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "job is still running" and body["state"] in ("QUEUED", "RUNNING")
    assert body["createdDate"].endswith(" UTC") and len(body["elapsedTime"].split(":")) == 3
    assert set(body["progress"]) == {"done", "total"}
    r = api.client.get(location + "/result", headers=user)
    assert r.status_code == 404 and r.json()["errorCode"] == 1004
    api.client.delete(location, headers=user)


@pytest.mark.usefixtures("engine")
def test_a_failed_job_answers_with_the_sync_error(api, user):
    api.script(user, "bad", "def bad():\n    raise RuntimeError('boom')\n")
    location = submit(api, user, "do-eval", "bad", {})
    done = wait_done(api, user, location)
    r = api.client.get(done.headers["content-location"], headers=user)
    assert r.status_code == 400 and r.json()["errorCode"] == 1030 and "RuntimeError: boom" in r.json()["errorMessage"]
    listed = api.client.get("/oml/api/py-scripts/v2/jobs", headers=user).json()["result"]
    assert [j["status"] for j in listed] == ["ERROR"]


@pytest.mark.usefixtures("engine")
def test_bad_requests_are_refused_before_a_job_exists(api, user):
    r = api.client.post("/oml/api/py-scripts/v1/row-apply/nope", headers=user, json={"asyncFlag": True})
    assert r.status_code == 404
    api.script(user, "f", "def f(d):\n    return 1\n")
    r = api.client.post(
        "/oml/api/py-scripts/v1/row-apply/f",
        headers=user,
        json={"asyncFlag": True, "input": "delete from iris", "rows": 1},
    )
    assert r.status_code == 400
    assert api.client.get("/oml/api/py-scripts/v2/jobs", headers=user).json() == {"result": []}


@pytest.mark.usefixtures("engine")
def test_jobs_are_private_to_their_owner(api, user):
    bob = api.user("BOB")
    api.script(user, "slow", SLOW)
    location = submit(api, user, "do-eval", "slow", {})
    for method in ("GET", "DELETE"):
        assert api.client.request(method, location, headers=bob).status_code == 404
    assert api.client.get(location + "/result", headers=bob).status_code == 404
    assert api.client.get("/oml/api/py-scripts/v2/jobs", headers=bob).json() == {"result": []}
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        assert api.client.get(f"/oml/api/py-scripts/v1/jobs/{bad}", headers=user).status_code == 404


@pytest.mark.usefixtures("engine")
def test_v2_lists_the_callers_jobs_and_delete_removes_a_finished_one(api, user):
    api.script(user, "slow", SLOW)
    location = submit(api, user, "do-eval", "slow", {}, "v2")
    wait_done(api, user, location)
    (job,) = api.client.get("/oml/api/py-scripts/v2/jobs", headers=user).json()["result"]
    assert job["job_id"] == location.rsplit("/", 1)[1] and job["status"] == "FINISH"
    assert api.client.delete(location, headers=user).json() == {"result": "job deleted successfully"}
    assert api.client.get(location, headers=user).status_code == 404


@pytest.mark.usefixtures("engine")
def test_a_job_past_its_timeout_is_timed_out_and_frees_its_workers(api, user):
    api.script(user, "slow", SLOW)
    location = submit(api, user, "do-eval", "slow", {"parameters": '{"t": 60}', "timeout": 1})
    done = wait_done(api, user, location)
    r = api.client.get(done.headers["content-location"], headers=user)
    assert r.status_code == 400 and r.json()["errorCode"] == 1040
    assert "timeout of 1 s" in r.json()["errorMessage"]
    (job,) = api.client.get("/oml/api/py-scripts/v2/jobs", headers=user).json()["result"]
    assert job["status"] == "TIMEOUT"


@pytest.fixture
def small_api(sqlite_settings):
    """One worker only: what a job holds, nobody else has."""
    with own_pool_api(
        sqlite_settings, workers=1, warm_workers=1, worker_preload="", worker_wait_s=2.0, job_heartbeat_s=0.2
    ) as api:
        yield api


def test_deleting_a_running_job_frees_its_workers_at_once(small_api):
    api = small_api
    user = api.user("ALICE")
    api.script(user, "slow", SLOW)
    api.script(user, "quick", "def quick():\n    return 'now'\n")
    location = submit(api, user, "do-eval", "slow", {"parameters": '{"t": 600}'})
    wait_for(lambda: api.client.get(location, headers=user).json().get("state") == "RUNNING")
    wait_for(lambda: api.services.pool.stats()["busy"] == 1)
    assert api.client.delete(location, headers=user).json() == {"result": "job deleted successfully"}
    assert api.client.get(location, headers=user).status_code == 404
    assert api.run(user, "do-eval", "quick").json() == {"result": "now"}


def test_a_full_queue_answers_503_with_retry_after(small_api):
    api = small_api
    change_settings(api.services, job_queue_limit=0)
    user = api.user("ALICE")
    api.script(user, "slow", SLOW)
    r = api.client.post("/oml/api/py-scripts/v1/do-eval/slow", headers=user, json={"asyncFlag": True})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0 and r.json()["errorCode"] == 1503


def test_finished_jobs_are_purged_after_the_retention_time(small_api):
    api = small_api
    user = api.user("ALICE")
    api.script(user, "slow", SLOW)
    location = submit(api, user, "do-eval", "slow", {})
    wait_done(api, user, location)
    scheduler = api.services.execution.scheduler
    scheduler.config = dataclasses.replace(scheduler.config, retention_s=0.0)
    wait_for(lambda: api.client.get(location, headers=user).status_code == 404)


@pytest.mark.usefixtures("engine")
def test_job_progress_counts_units(api, user):
    api.table(user, "NUMS", pd.DataFrame({"N": range(10)}))
    api.script(user, "f", "def f(d):\n    return len(d)\n")
    location = submit(api, user, "row-apply", "f", {"input": "select * from nums", "rows": 1})
    wait_done(api, user, location)
    (job,) = api.client.get("/oml/api/py-scripts/v2/jobs", headers=user).json()["result"]
    assert job["progress"] == {"done": 10, "total": 10}


def test_a_large_result_is_stored_in_the_database_and_streamed_back(api, user):
    """Over the job store's threshold, a result is stored in pieces in the metadata database (any server can
    answer it) and answered as a stream of them, with its length; HEAD answers the length alone."""
    jobs = api.services.execution.jobs
    jobs.spill_bytes, jobs.chunk_bytes = 2048, 1000
    big = "def big(n=5000):\n    return ['x' * 10] * n\n"
    api.script(user, "big", big)
    location = submit(api, user, "do-eval", "big", {})
    done = wait_done(api, user, location)
    expected = api.run(user, "do-eval", "big").content
    assert len(expected) > 10 * jobs.chunk_bytes
    r = api.client.get(done.headers["content-location"], headers=user)
    assert r.status_code == 200 and r.content == expected, r.text[:200]
    assert r.headers["content-type"] == "application/json" and r.headers["content-length"] == str(len(expected))
    head = api.client.head(done.headers["content-location"], headers=user)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(expected))
    assert not (api.services.settings.data_dir / "jobs").exists()
    with api.services.sessions() as session:
        pieces = session.scalar(select(func.count()).where(JobChunk.job_id == location.rsplit("/", 1)[1]))
    assert pieces == -(-len(expected) // jobs.chunk_bytes)
    assert api.client.delete(location, headers=user).status_code == 200
    assert api.client.get(done.headers["content-location"], headers=user).status_code == 404
