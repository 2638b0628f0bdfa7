"""Async jobs, all in this package: the table (`models`), the store of records and outcomes (`store`), and the
scheduler that claims queued jobs and runs them through the execution service (`scheduler`).

A job is a stored `engines.spec.Call`. `ExecutionService.submit` stores it; the scheduler claims it, hands it
back to the service's `run` path (the same one a synchronous call takes), and stores the outcome: a result
body, or an error as its class name and message. The server reads both back and answers in OML's shapes.
"""

from engines.jobs.scheduler import JobScheduler, SchedulerConfig
from engines.jobs.store import LISTED_STATUS, JobRecord, JobStatus, JobStore

__all__ = ["LISTED_STATUS", "JobRecord", "JobScheduler", "JobStatus", "JobStore", "SchedulerConfig"]
