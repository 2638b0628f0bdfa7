"""The engine's table: async jobs, durable across restarts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column


class EnginesBase(DeclarativeBase):
    pass


class Job(EnginesBase):
    """One async call: what to run (the parsed request, the script's source, who it speaks for), where it is,
    and once done its outcome: a result body, or an error (its class name and message). No HTTP here: the server
    turns the outcome into the answer."""

    __tablename__ = "pyqd_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(30), index=True)
    #: "v1" or "v2": the API version the job was submitted to (its URLs use it).
    api_version: Mapped[str] = mapped_column(String(4))
    verb: Mapped[str] = mapped_column(String(16))
    script_name: Mapped[str] = mapped_column(String(128))
    #: The script's source as it was at submission (a later change or drop does not change the job).
    source: Mapped[str] = mapped_column(Text)
    #: The owner of the script (another owner's script runs on workers of its own; None: unknown, treated so).
    script_owner: Mapped[str | None] = mapped_column(String(30), nullable=True)
    #: The parsed request (`engines.spec.ApplyRequest` as JSON).
    request: Mapped[str] = mapped_column(Text)
    #: The submitting session (`engines.calls.Session` as JSON): the job's `import oml` speaks for it.
    session: Mapped[str | None] = mapped_column(Text, nullable=True)
    service: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), index=True)
    timeout_s: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The server running it, and when that server last said it still is.
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    units_done: Mapped[int] = mapped_column(Integer, default=0)
    units_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The result body once FINISHED: in the row, or (a large one, `body` None) in `JobChunk`s.
    body: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    body_size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The error, once FAILED or TIMED_OUT: the class name of an `engines.errors.ExecutionError`, and its message.
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class JobChunk(EnginesBase):
    """One piece of a large result body, in the metadata database so that any server can answer it: a job's
    pieces, in `seq` order, make the body. Stored in the transaction that marks the job FINISHED, deleted with
    the job by the store (no foreign key: see migration 0006)."""

    __tablename__ = "pyqd_job_chunks"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
