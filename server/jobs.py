"""Async jobs on the server side: submitting, running them through the engine's scheduler, answering in
OML's shapes. The job's script source is kept at submission; rights are checked again when it runs."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from engines.errors import Cancelled, JobQueueFull, TimeLimitExceeded, UserJobQueueFull
from engines.jobs import JobRecord, JobStatus, JobStore
from engines.models import Job
from engines.runner import Execution
from engines.scheduler import JobScheduler, Outcome, SchedulerConfig
from server import calls, errors
from server.auth.tokens import TokenClaims
from server.db import write_session
from server.services import Services

log = logging.getLogger("pyqd.jobs")
#: File in the data directory naming this installation's server (jobs it claimed are recognised after a restart).
SERVER_ID_FILE = "server-id"


def server_id(services: Services) -> str:
    path = services.settings.data_dir / SERVER_ID_FILE
    if not path.exists():
        path.write_text(secrets.token_hex(8) + "\n")
    return f"{path.read_text().strip()}@{services.settings.host}:{services.settings.port}"


def open_jobs(services: Services, observe: Callable[[Execution, str], None] | None = None) -> JobScheduler:
    """The job store and scheduler of this server (not started)."""
    s = services.settings
    store = JobStore(
        services.sessions, lambda: write_session(services.sessions), s.data_dir / "jobs", s.job_spill_bytes
    )
    config = SchedulerConfig(
        server_id=server_id(services),
        concurrency=s.job_concurrency,
        heartbeat_s=s.job_heartbeat_s,
        stale_after_s=s.job_stale_after_s,
        max_attempts=s.job_max_attempts,
        retention_s=s.job_retention_s,
        poll_s=min(1.0, s.job_heartbeat_s),
    )

    def run(record: JobRecord, register: Callable[[Execution], None]) -> Outcome:
        return run_job(services, record, register, observe)

    return JobScheduler(store, config, run)


def submit(
    services: Services,
    caller: str,
    api_version: str,
    verb: str,
    script_name: str,
    source: str,
    body: dict[str, Any],
    timeout_s: int | None,
    session: TokenClaims | None = None,
    script_owner: str | None = None,
) -> JobRecord:
    """Queue a job (its request was validated by the caller); UserJobQueueFull past the caller's own share of the
    queue (so one user cannot fill it for everyone), JobQueueFull past the queue limit. The job's script token
    will speak for `session` (the submitter's), and die with it."""
    assert services.jobs is not None
    store = services.jobs.store
    if store.waiting(caller) >= services.settings.job_queue_per_user:
        raise UserJobQueueFull(caller, services.settings.job_queue_per_user)
    if store.waiting() >= services.settings.job_queue_limit:
        raise JobQueueFull()
    private = (calls.JOB_SESSION_KEY, calls.JOB_SCRIPT_OWNER_KEY)
    request = {k: v for k, v in body.items() if k not in ("asyncFlag", "timeout", *private)}
    if session is not None:
        request[calls.JOB_SESSION_KEY] = calls.session_to_json(session)
    if script_owner is not None:
        request[calls.JOB_SCRIPT_OWNER_KEY] = script_owner
    job = Job(
        id=str(uuid.uuid4()),
        owner=caller,
        api_version=api_version,
        verb=verb,
        script_name=script_name,
        source=source,
        request=orjson.dumps(request).decode(),
        service=str(body.get("service") or "LOW"),
        timeout_s=timeout_s or services.settings.job_default_timeout_s,
    )
    record = store.submit(job)
    services.jobs.wake()
    return record


def run_job(
    services: Services,
    record: JobRecord,
    register: Callable[[Execution], None],
    observe: Callable[[Execution, str], None] | None = None,
) -> Outcome:
    body = orjson.loads(record.request)
    session = calls.session_from_json(record.owner, body.pop(calls.JOB_SESSION_KEY, None))
    script_owner = body.pop(calls.JOB_SCRIPT_OWNER_KEY, None)  # unknown (older jobs): treated as another owner's
    try:
        execution = calls.prepare(
            services,
            record.owner,
            record.verb,
            record.script_name,
            record.source,
            body,
            time_limit_s=record.timeout_s,
            is_job=True,
            auth_session=session,
            script_owner=script_owner if isinstance(script_owner, str) else None,
        )
        register(execution)
        body = execution.run()
        if observe:
            observe(execution, "async")
        return Outcome(JobStatus.FINISHED, 200, calls.media_type(execution), body)
    except Cancelled:
        return Outcome(JobStatus.FAILED, 400, "application/json", b"", cancelled=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes the job's stored answer
        code = errors.lookup(e)
        message = errors.clip_message(str(e))
        if code is None:
            log.exception("job %s failed unexpectedly", record.id)
            code, message = errors.INTERNAL, "Internal server error; the server log has the details"
        status = JobStatus.TIMED_OUT if isinstance(e, TimeLimitExceeded) else JobStatus.FAILED
        body_bytes = orjson.dumps({"errorCode": code.code, "errorMessage": message})
        return Outcome(status, code.status, "application/json", body_bytes, message)
