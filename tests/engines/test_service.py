"""The execution service over a real metadata database and user-data store (both backends), with in-process
workers: input queries through the gate, and jobs stored, run by the scheduler and stored again."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pyarrow as pa
import pytest

from engines.errors import InputQueryFailed
from engines.inline import InlinePool
from engines.jobs import JobStatus, JobStore, SchedulerConfig
from engines.runner import Limits
from engines.service import ExecutionService, JobLimits
from server import accounts
from server.db import write_session
from server.services import Services, open_services
from server.settings import Settings
from tables import service as tbl
from tables.errors import QueryRejected
from tests.conftest import wait_for
from tests.engines.support import USER, make_call

FRAMES = '{"oml_input_type":"pandas.DataFrame"}'


@pytest.fixture
def stores(settings: Settings) -> Iterator[Services]:
    """The stores only: no worker processes, no HTTP. ALICE owns a table NUMS (G, N) in no particular order."""
    svc = open_services(settings)
    accounts.add_user(svc, USER, "password-of-alice")
    data = pa.table({"G": ["b", "a", "b", "a", "c"], "N": [1, 2, 3, 4, 5]})
    with write_session(svc.sessions) as session:
        tbl.write_table(session, svc.user_data, USER, "NUMS", data)
    yield svc
    svc.close()


@pytest.fixture
def execution(stores: Services) -> Iterator[ExecutionService]:
    spill = stores.settings.data_dir / "spill"
    engine = ExecutionService(InlinePool(2), stores.sessions, stores.user_data, Limits(spill_dir=str(spill)))
    store = JobStore(stores.sessions, lambda: write_session(stores.sessions), 1 << 20)
    engine.open_jobs(store, SchedulerConfig(server_id="test-server", poll_s=0.05), JobLimits())
    yield engine
    assert engine.scheduler is not None
    engine.scheduler.stop()


def result_of(body: bytes) -> object:
    return orjson.loads(body)


def test_table_and_group_apply_read_a_real_table_through_the_gate(execution):
    src = "def f(d):\n    return d.sort_values('N')\n"
    table = execution.run(make_call("table", src, {"input": "select n from nums where n > 2", "parameters": FRAMES}))
    assert result_of(table.read()) == {"result": [{"N": 3}, {"N": 4}, {"N": 5}]}
    total = "def f(d):\n    return int(d['N'].sum())\n"
    grouped = execution.run(make_call("group", total, {"input": "select * from nums", "groupBy": "g"}))
    assert result_of(grouped.read()) == {"result": {"a": 6, "b": 4, "c": 5}}  # the gate orders the rows by G


@pytest.mark.parametrize("sql", ["delete from nums", "with x as (delete from nums returning *) select * from x"])
def test_the_gate_refuses_a_write_in_run_and_in_submit(execution, sql):
    call = make_call("table", "def f(d):\n    return 1\n", {"input": sql})
    with pytest.raises(QueryRejected):
        execution.run(call)
    with pytest.raises(QueryRejected):
        execution.submit(call, "v1", "table-apply")
    assert execution.jobs.waiting() == 0


def test_a_job_runs_to_finished_and_its_body_is_stored(execution):
    assert execution.scheduler is not None
    execution.scheduler.start()
    src = "def f(d):\n    return d.sort_values('N').tail(2)\n"
    call = make_call("table", src, {"input": "select * from nums", "parameters": FRAMES, "asyncFlag": True})
    record = execution.submit(call, "v1", "table-apply")
    assert record.status is JobStatus.QUEUED and record.owner == USER
    job = wait_for(lambda: (r := execution.jobs.get(record.id, USER)) is not None and r.status.done and r)
    assert job.status is JobStatus.FINISHED and (job.units_done, job.units_total) == (1, 1)
    stored = execution.jobs.result(record.id)
    assert isinstance(stored, bytes)
    assert result_of(stored) == {"result": [{"G": "a", "N": 4}, {"G": "c", "N": 5}]}


def test_a_job_checks_the_callers_rights_again_when_it_runs(execution, stores):
    call = make_call("table", "def f(d):\n    return 1\n", {"input": "select * from nums", "asyncFlag": True})
    record = execution.submit(call, "v1", "table-apply")  # the scheduler is not running yet: the job waits
    with write_session(stores.sessions) as session:
        tbl.drop_table(session, stores.user_data, USER, "NUMS")
    assert execution.scheduler is not None
    execution.scheduler.start()
    job = wait_for(lambda: (r := execution.jobs.get(record.id, USER)) is not None and r.status.done and r)
    assert (job.status, job.error_type) == (JobStatus.FAILED, InputQueryFailed.__name__)
    assert "NUMS" in job.error and execution.jobs.result(record.id) is None
