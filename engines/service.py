"""The execution service: the one way into the engine.

`run(call)` runs a call now and returns its result body. `submit(call)` checks the call (its input query
passes the gate), stores it as a job and returns at once; the job scheduler later hands the stored call back to
the same path `run` takes. Rights are checked each time a call runs: the gate asks again which tables the
caller may read, and the script's `import oml` gets a token only when it first asks, through the worker's
channel, for the caller's session as it is then.

Errors are raised (synchronous calls) or stored (jobs) as domain errors: `engines.errors` and
`tables.errors`. Turning them into HTTP is the server's business.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
from sqlalchemy.orm import Session, sessionmaker

from engines.assemble import Body
from engines.errors import (
    Cancelled,
    EngineFault,
    EnvironmentUnsupported,
    ExecutionError,
    InputQueryFailed,
    JobQueueFull,
    TimeLimitExceeded,
    UserJobQueueFull,
)
from engines.jobs.models import Job
from engines.jobs.scheduler import JobScheduler, Running, SchedulerConfig
from engines.jobs.store import JobRecord, JobStore
from engines.pool import RequestHandler
from engines.runner import Limits, Runner
from engines.spec import ApplyRequest, Call
from engines.workers import Workers
from tables import query as tq
from tables.errors import QueryRejected, QueryTimedOut, TablesError
from tables.gate import GatedQuery, column_name
from tables.pg_partitions import PartitionedRead
from tables.store import UserDataStore

log = logging.getLogger("pyqd.engine")

#: Seconds a script's token (and a partitioned read's database role) outlives its call's time limit.
TOKEN_MARGIN_S = 60
#: Partitions of a large row-apply input per worker of the call, and at most in all.
PARTITIONS_PER_WORKER = 4
MAX_PARTITIONS = 64

#: Makes the handler of a call's `import oml` requests: (call, call id, when its token must expire) → handler,
#: or None when the script gets no `oml` connection. It mints nothing until the script's first request.
OmlGateway = Callable[[Call, str, float], RequestHandler | None]
#: Observes a finished run ("sync" or "async"), e.g. for metrics.
Observer = Callable[[Runner, str], None]


@dataclass(frozen=True)
class JobLimits:
    #: Most jobs waiting to run, over all users, and per user.
    queue_limit: int = 1000
    queue_per_user: int = 100
    #: An async job's time limit when the request names none, seconds.
    default_timeout_s: int = 1800


class ExecutionService:
    def __init__(
        self,
        workers: Workers[Any],
        sessions: sessionmaker[Session],
        user_data: UserDataStore,
        limits: Limits,
        *,
        oml: OmlGateway | None = None,
        generation: Callable[[], str] = lambda: "",
        observe: Observer | None = None,
    ) -> None:
        self.workers, self.sessions, self.user_data, self.limits = workers, sessions, user_data, limits
        self.oml, self.generation, self.observe = oml, generation, observe
        self.scheduler: JobScheduler | None = None
        self.job_limits = JobLimits()

    # -- synchronous calls -------------------------------------------------------------------------------
    def run(self, call: Call) -> Body:
        """The call's result body (OML's JSON, or the pickles the Python client asked for), or the error."""
        runner = self._runner(call, self.limits.sync_time_limit_s, is_job=False)
        body = runner.run()
        if self.observe:
            self.observe(runner, "sync")
        return body

    # -- jobs --------------------------------------------------------------------------------------------
    def open_jobs(self, store: JobStore, config: SchedulerConfig, limits: JobLimits) -> JobScheduler:
        """Run async jobs from `store` (the scheduler is returned not started)."""
        self.job_limits = limits
        self.scheduler = JobScheduler(store, config, self._run_job)
        return self.scheduler

    @property
    def jobs(self) -> JobStore:
        if self.scheduler is None:
            raise RuntimeError("this execution service runs no jobs")
        return self.scheduler.store

    def submit(self, call: Call, api_version: str, verb: str) -> JobRecord:
        """Queue the call as a job, once its input query passes the gate; UserJobQueueFull past the caller's own
        share of the queue (so one user cannot fill it for everyone), JobQueueFull past the queue limit."""
        self.check_environment(call)
        self._gate(call)
        store, limits = self.jobs, self.job_limits
        if store.waiting(call.user) >= limits.queue_per_user:
            raise UserJobQueueFull(call.user, limits.queue_per_user)
        if store.waiting() >= limits.queue_limit:
            raise JobQueueFull()
        request = call.request
        job = Job(
            id=str(uuid.uuid4()),
            owner=call.user,
            api_version=api_version,
            verb=verb,
            script_name=call.script_name,
            source=call.source,
            script_owner=call.script_owner,
            request=request.model_dump_json(),
            session=orjson.dumps(call.session).decode() if call.session is not None else None,
            service=request.service,
            timeout_s=request.timeout or limits.default_timeout_s,
        )
        record = store.submit(job)
        assert self.scheduler is not None
        self.scheduler.wake()
        return record

    def _run_job(self, record: JobRecord, register: Callable[[Running], None]) -> Body | ExecutionError | None:
        """A claimed job's outcome: its result body, its error, or None when it was cancelled."""
        try:
            runner = self._runner(call_of(record), record.timeout_s, is_job=True)
            register(runner)
            body = runner.run()
        except Cancelled:
            return None
        except ExecutionError as e:
            return e
        except TablesError as e:  # the gate refused the query now (a grant was revoked, a table dropped)
            return InputQueryFailed(str(e))
        except Exception:  # noqa: BLE001 - a fault of ours: the job fails with a reason, the scheduler lives on
            log.exception("job %s failed unexpectedly", record.id)
            return EngineFault("The job failed inside pyqd; the server log has the details")
        if self.observe:
            self.observe(runner, "async")
        return body

    # -- one path for both ---------------------------------------------------------------------------------
    def check_environment(self, call: Call) -> None:
        """The call's `envName` names an environment the engine has: EnvironmentNotFound if not, and
        EnvironmentUnsupported from an engine without per-script environments (the Dask engine)."""
        name = call.request.env_name
        if name is None:
            return
        check = getattr(self.workers, "check_environment", None)
        if check is None:
            raise EnvironmentUnsupported("envName is not supported by this engine")
        check(name)

    def _gate(self, call: Call) -> GatedQuery | None:
        """The input query, checked by the gate as the caller now (None for verbs without input)."""
        text = call.request.input
        if text is None:
            return None
        with self.sessions() as session:
            gated = tq.gate_query(session, self.user_data, call.user, text)
        if call.request.kind == "group":
            req = call.request
            gated = gated.ordered_by([column_name(c) for c in (*req.group_by, *req.order_by)])
        return gated

    def _runner(self, call: Call, time_limit_s: float, *, is_job: bool) -> Runner:
        self.check_environment(call)
        gated = self._gate(call)
        batches = None
        partitions = None
        if gated is not None:
            # The query has the call's own time (it starts now, as the call's clock does), at most the query limit.
            timeout_s = min(time_limit_s, self.limits.query_time_limit_s)
            if call.request.kind == "row" and self.workers.reads_partitions:
                partitions = self._partitions(call, gated, time_limit_s)
            if partitions is None:
                rows = tq.stream_query(self.user_data, gated, call.user, timeout_s=timeout_s)
                batches = _query_errors(rows, timeout_s, is_job)
        call_id = str(uuid.uuid4())
        on_request = self.oml(call, call_id, time.time() + time_limit_s + TOKEN_MARGIN_S) if self.oml else None
        return Runner(
            self.workers,
            call,
            self.limits,
            call_id=call_id,
            time_limit_s=time_limit_s,
            is_job=is_job,
            batches=batches,
            group_columns=tuple(column_name(c) for c in call.request.group_by),
            on_request=on_request,
            generation=self.generation(),
            partitions=partitions,
        )

    def _partitions(self, call: Call, gated: GatedQuery, time_limit_s: float) -> PartitionedRead | None:
        """A large row-apply input planned as partitions the workers read themselves (None: stream it): a few per
        worker the call may use, so a slow one does not hold up the rest."""
        dop = call.request.degree_of_parallelism(self.workers.size)
        try:
            return tq.partition_query(
                self.user_data,
                gated,
                call.user,
                partitions=max(2, min(MAX_PARTITIONS, PARTITIONS_PER_WORKER * dop)),
                min_rows=self.limits.partition_min_rows,
                expires_in_s=time_limit_s + TOKEN_MARGIN_S,
                reader_url=self.limits.reader_url,
            )
        except TablesError as e:
            raise InputQueryFailed(str(e)) from None


def call_of(record: JobRecord) -> Call:
    """The call a job stored."""
    session = orjson.loads(record.session) if record.session else None
    return Call(
        user=record.owner,
        script_name=record.script_name,
        source=record.source,
        script_owner=record.script_owner,
        request=ApplyRequest.model_validate_json(record.request),
        session=session if isinstance(session, dict) else None,
    )


def _query_errors(batches: Iterable[pa.RecordBatch], limit: float, is_job: bool) -> Iterator[pa.RecordBatch]:
    """The batches, with the query's failures as the call's: a deadline passed is the call's time limit (1040),
    any other failure is an input-query error (1020)."""
    try:
        yield from batches
    except QueryTimedOut:
        raise TimeLimitExceeded(limit, job=is_job) from None
    except QueryRejected as e:
        raise InputQueryFailed(str(e)) from None
