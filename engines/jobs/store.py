"""Async jobs: their states and records, and the store that keeps them in the metadata database."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import CursorResult, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from engines.assemble import Body
from engines.errors import ExecutionError, JobAbandoned, JobNotFound, TimeLimitExceeded
from engines.jobs.models import Job, JobChunk

WriteSession = Callable[[], AbstractContextManager[Session]]

#: Bytes per stored piece of a large result (one row of `pyqd_job_chunks`; one query when it is read back).
CHUNK_BYTES = 1 << 20


class JobStatus(enum.StrEnum):
    #: Accepted; waiting for a free slot.
    QUEUED = "QUEUED"
    #: Claimed by a server and running.
    RUNNING = "RUNNING"
    #: Done; the result is stored.
    FINISHED = "FINISHED"
    #: The script or the engine failed, or the server restarted too often while it ran; the error is stored.
    FAILED = "FAILED"
    #: Ran past its timeout; its workers were freed; the error is stored.
    TIMED_OUT = "TIMED_OUT"

    @property
    def done(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.TIMED_OUT)


#: How the v2 job listing shows each state (Oracle documents only "FINISH").
LISTED_STATUS = {
    JobStatus.QUEUED: "QUEUED",
    JobStatus.RUNNING: "RUNNING",
    JobStatus.FINISHED: "FINISH",
    JobStatus.FAILED: "ERROR",
    JobStatus.TIMED_OUT: "TIMEOUT",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class JobRecord:
    """A job as plain values (no ORM object leaves the store)."""

    id: str
    owner: str
    api_version: str
    verb: str
    script_name: str
    source: str
    script_owner: str | None
    #: The parsed request and the submitting session, as JSON (`engines.calls.Call.from_record` reads them).
    request: str
    session: str | None
    service: str
    status: JobStatus
    timeout_s: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    units_done: int
    units_total: int | None
    #: The error a failed job ended with: its class name and message.
    error_type: str | None
    error: str | None

    def elapsed(self, now: datetime | None = None) -> timedelta:
        end = self.finished_at or now or utcnow()
        return max(timedelta(0), end - self.created_at)


def _record(j: Job) -> JobRecord:
    return JobRecord(
        j.id,
        j.owner,
        j.api_version,
        j.verb,
        j.script_name,
        j.source,
        j.script_owner,
        j.request,
        j.session,
        j.service,
        JobStatus(j.status),
        j.timeout_s,
        j.created_at,
        j.started_at,
        j.finished_at,
        j.attempts,
        j.units_done,
        j.units_total,
        j.error_type,
        j.error,
    )


@dataclass(frozen=True)
class StoredBody:
    """A large result body in the metadata database, read a piece at a time in order, each piece in a short
    transaction of its own: neither the body nor a database connection is held while a slow client reads."""

    job_id: str
    size: int
    sessions: sessionmaker[Session]

    def __iter__(self) -> Iterator[bytes]:
        read, seq = 0, 0
        while read < self.size:
            with self.sessions() as session:
                piece = session.scalar(select(JobChunk.data).where(JobChunk.job_id == self.job_id, JobChunk.seq == seq))
            if piece is None:  # the job was deleted (or purged) while its result was being read
                raise JobNotFound(self.job_id)
            yield bytes(piece)
            read, seq = read + len(piece), seq + 1


def _pieces(body: Body, size: int) -> Iterator[bytes]:
    """The body's bytes in pieces of `size` (the last one shorter), from memory or from its file."""
    if body.data is not None:
        for start in range(0, len(body.data), size):
            yield body.data[start : start + size]
        return
    assert body.path is not None
    with open(body.path, "rb") as f:
        while piece := f.read(size):
            yield piece


class _Lost(Exception):
    """The job was deleted, or taken over by another server, before its outcome was stored."""


class JobStore:
    """Every job operation is one short transaction, save storing a large result: its pieces go in with the
    change to FINISHED, in one transaction. Results over `spill_bytes` are stored in pieces of `chunk_bytes`
    (`pyqd_job_chunks`), smaller ones in the job's row; either way in the metadata database, so that any server
    answers them."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        write_session: WriteSession,
        spill_bytes: int,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.sessions, self.write_session = sessions, write_session
        self.spill_bytes, self.chunk_bytes = spill_bytes, chunk_bytes

    # -- submit / read -------------------------------------------------------------------------------------
    def submit(self, job: Job) -> JobRecord:
        job.status, job.created_at = JobStatus.QUEUED, utcnow()
        job.attempts, job.units_done, job.body_size, job.cancel_requested = 0, 0, 0, False
        with self.write_session() as session:
            session.add(job)
            session.flush()
            return _record(job)

    def get(self, job_id: str, owner: str) -> JobRecord | None:
        """The job, if it exists and belongs to `owner`."""
        with self.sessions() as session:
            j = session.get(Job, job_id)
            return _record(j) if j is not None and j.owner == owner else None

    def list_for(self, owner: str) -> list[JobRecord]:
        with self.sessions() as session:
            rows = session.scalars(select(Job).where(Job.owner == owner).order_by(Job.created_at.desc()))
            return [_record(j) for j in rows]

    def waiting(self, owner: str | None = None) -> int:
        """Jobs queued and not yet running (of `owner`, or of everyone)."""
        q = select(func.count()).where(Job.status == JobStatus.QUEUED)
        if owner is not None:
            q = q.where(Job.owner == owner)
        with self.sessions() as session:
            return int(session.scalar(q) or 0)

    def counts(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
            return {status: int(n) for status, n in rows}

    def result(self, job_id: str) -> bytes | StoredBody | None:
        """The result body of a FINISHED job (a large one as a `StoredBody` to stream); None otherwise."""
        with self.sessions() as session:
            row = session.execute(select(Job.status, Job.body, Job.body_size).where(Job.id == job_id)).first()
            if row is None or row.status != JobStatus.FINISHED:
                return None
            if row.body is None and row.body_size > 0:
                return StoredBody(job_id, row.body_size, self.sessions)
            return row.body or b""

    # -- running -------------------------------------------------------------------------------------------
    def claim_next(self, server_id: str) -> JobRecord | None:
        """Take the oldest queued job for this server (SKIP LOCKED on PostgreSQL, the write lock on SQLite)."""
        with self.write_session() as session:
            q = (
                select(Job)
                .where(Job.status == JobStatus.QUEUED)
                .order_by(Job.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            j = session.scalar(q)
            if j is None:
                return None
            now = utcnow()
            j.status, j.claimed_by, j.started_at, j.heartbeat_at = JobStatus.RUNNING, server_id, now, now
            j.attempts += 1
            j.units_done, j.units_total = 0, None
            session.flush()
            return _record(j)

    def heartbeat(self, server_id: str, progress: dict[str, tuple[int, int | None]]) -> set[str]:
        """Mark this server's running jobs alive (with their progress); returns those asked to be cancelled."""
        if not progress:
            return set()
        now = utcnow()
        with self.write_session() as session:
            for job_id, (done, total) in progress.items():
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.claimed_by == server_id)
                    .values(heartbeat_at=now, units_done=done, units_total=total)
                )
            rows = session.scalars(select(Job.id).where(Job.id.in_(list(progress)), Job.cancel_requested.is_(True)))
            return set(rows)

    def finish(
        self,
        job_id: str,
        server_id: str,
        outcome: Body | ExecutionError,
        progress: tuple[int, int | None] | None = None,
    ) -> bool:
        """Store the outcome: a result body (a large one in pieces) or an error. False if the job was deleted or
        taken over by another server meanwhile."""
        if isinstance(outcome, ExecutionError):
            return self._fail(job_id, server_id, outcome, progress)
        body = outcome
        try:
            small = body.size <= self.spill_bytes
            values: dict[str, object] = {
                "status": JobStatus.FINISHED,
                "finished_at": utcnow(),
                "body": body.read() if small else None,
                "body_size": body.size,
            }
            if progress is not None:
                values["units_done"], values["units_total"] = progress
            with self.write_session() as session:
                if not small:
                    for seq, piece in enumerate(_pieces(body, self.chunk_bytes)):
                        session.execute(insert(JobChunk).values(job_id=job_id, seq=seq, data=piece))
                # Last, under the claim: a server that lost the job (deleted, or recovered by another server while
                # this one seemed dead) stores nothing, and its pieces go with the rollback.
                done = session.execute(
                    update(Job).where(Job.id == job_id, Job.claimed_by == server_id).values(**values)
                )
                if not isinstance(done, CursorResult) or done.rowcount == 0:
                    raise _Lost(job_id)
            return True
        except (_Lost, IntegrityError):  # IntegrityError: another server is storing the same job's pieces
            return False
        finally:
            body.discard()

    def _fail(
        self, job_id: str, server_id: str, error: ExecutionError, progress: tuple[int, int | None] | None
    ) -> bool:
        with self.write_session() as session:
            j = session.get(Job, job_id)
            if j is None or j.claimed_by != server_id:
                return False
            j.status = JobStatus.TIMED_OUT if isinstance(error, TimeLimitExceeded) else JobStatus.FAILED
            j.finished_at, j.error_type, j.error = utcnow(), type(error).__name__, str(error)
            if progress is not None:
                j.units_done, j.units_total = progress
            return True

    def requeue(self, job_id: str, server_id: str) -> None:
        """Give a job this server is letting go of (shutting down) back to the queue, not counting the run."""
        with self.write_session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.claimed_by == server_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.QUEUED, claimed_by=None, heartbeat_at=None, attempts=Job.attempts - 1)
            )

    def request_cancel(self, job_id: str, owner: str) -> JobRecord | None:
        """Flag a running job for cancellation (its server stops it); returns the job as it was."""
        with self.write_session() as session:
            j = session.get(Job, job_id)
            if j is None or j.owner != owner:
                return None
            j.cancel_requested = True
            return _record(j)

    def delete(self, job_id: str) -> None:
        """Delete a job and its result. The row goes first: a result being stored at the same moment waits for it,
        then finds no job and rolls back, so no piece is left behind."""
        with self.write_session() as session:
            session.execute(delete(Job).where(Job.id == job_id))
            session.execute(delete(JobChunk).where(JobChunk.job_id == job_id))

    # -- recovery and retention ----------------------------------------------------------------------------
    def recover(
        self,
        server_id: str,
        stale_after: timedelta,
        max_attempts: int,
        running_here: set[str] | frozenset[str] = frozenset(),
    ) -> list[str]:
        """Jobs whose server stopped saying they run (or that this server claimed before it restarted): queue
        them again, or fail them once tried `max_attempts` times. Returns the ids that were failed."""
        now = utcnow()
        failed = []
        with self.write_session() as session:
            rows = session.scalars(select(Job).where(Job.status == JobStatus.RUNNING).with_for_update(skip_locked=True))
            for j in rows:
                if j.id in running_here:
                    continue
                orphaned = j.claimed_by == server_id or j.heartbeat_at is None or now - j.heartbeat_at > stale_after
                if not orphaned:
                    continue
                if j.cancel_requested:
                    session.delete(j)
                    session.execute(delete(JobChunk).where(JobChunk.job_id == j.id))
                elif j.attempts >= max_attempts:
                    j.status, j.finished_at, j.error_type = JobStatus.FAILED, now, JobAbandoned.__name__
                    j.error = f"The server restarted while the job ran ({j.attempts} attempt(s)); it was not run again"
                    failed.append(j.id)
                else:
                    j.status, j.claimed_by, j.heartbeat_at = JobStatus.QUEUED, None, None
        return failed

    def purge(self, older_than: datetime) -> int:
        """Forget finished jobs (and their answers) older than the retention time."""
        with self.write_session() as session:
            ids = list(session.scalars(select(Job.id).where(Job.finished_at < older_than)))
            for start in range(0, len(ids), 500):  # bounded IN lists
                batch = ids[start : start + 500]
                session.execute(delete(Job).where(Job.id.in_(batch)))
                session.execute(delete(JobChunk).where(JobChunk.job_id.in_(batch)))
            return len(ids)
