"""The job store's result bodies, on SQLite and PostgreSQL: a large one is stored in the metadata database in
ordered pieces (any server reads it; none is a file in a data directory), read back a piece at a time, stored
only under the job's claim, and removed with the job."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engines.assemble import Body
from engines.errors import JobNotFound, ScriptFailed
from engines.jobs import JobStatus, JobStore
from engines.jobs.models import Job, JobChunk
from engines.jobs.store import StoredBody, utcnow
from server.db import write_session
from server.services import Services, open_services
from server.settings import Settings

#: Small sizes, so that a few kilobytes make several pieces.
SPILL, CHUNK = 1000, 256


@pytest.fixture
def stores(settings: Settings) -> Iterator[Services]:
    svc = open_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def store(stores: Services) -> JobStore:
    return JobStore(stores.sessions, lambda: write_session(stores.sessions), SPILL, chunk_bytes=CHUNK)


def running_job(store: JobStore, server: str = "server-a") -> str:
    """A job submitted and claimed by `server`."""
    job_id = str(uuid.uuid4())
    store.submit(
        Job(
            id=job_id,
            owner="ALICE",
            api_version="v1",
            verb="do-eval",
            script_name="f",
            source="def f():\n    return 1\n",
            request="{}",
            service="LOW",
            timeout_s=60,
        )
    )
    claimed = store.claim_next(server)
    assert claimed is not None and claimed.id == job_id
    return job_id


def pieces_of(stores: Services, job_id: str) -> list[bytes]:
    with stores.sessions() as session:
        rows = session.scalars(select(JobChunk.data).where(JobChunk.job_id == job_id).order_by(JobChunk.seq))
        return [bytes(r) for r in rows]


def all_pieces(stores: Services) -> int:
    with stores.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(JobChunk)) or 0)


def payload(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def spilled(tmp_path, data: bytes) -> Body:  # noqa: ANN001
    """A body in a file, as the assembler leaves a large one."""
    path = tmp_path / f"result-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return Body(None, str(path), len(data))


@pytest.mark.parametrize("where", ["memory", "file"])
def test_a_large_body_is_stored_in_ordered_pieces_and_read_back_a_piece_at_a_time(stores, store, tmp_path, where):
    data = payload(5 * CHUNK + 17)
    body = Body(data, None, len(data)) if where == "memory" else spilled(tmp_path, data)
    job_id = running_job(store)
    assert store.finish(job_id, "server-a", body, (3, 3))
    assert body.path is None or not os.path.exists(body.path)  # the spilled file is gone once stored
    assert [len(p) for p in pieces_of(stores, job_id)] == [CHUNK] * 5 + [17]
    result = store.result(job_id)
    assert isinstance(result, StoredBody) and result.size == len(data)
    read = list(result)
    assert [len(p) for p in read] == [CHUNK] * 5 + [17] and b"".join(read) == data
    record = store.get(job_id, "ALICE")
    assert (
        record is not None
        and record.status == JobStatus.FINISHED
        and (record.units_done, record.units_total)
        == (
            3,
            3,
        )
    )
    assert not (stores.settings.data_dir / "jobs").exists()  # nothing another server could not read


def test_a_small_body_stays_in_the_jobs_row(stores, store, tmp_path):
    small = payload(SPILL)
    job_id = running_job(store)
    assert store.finish(job_id, "server-a", spilled(tmp_path, small))
    assert store.result(job_id) == small and pieces_of(stores, job_id) == []
    empty = running_job(store)
    assert store.finish(empty, "server-a", Body(b"", None, 0))
    assert store.result(empty) == b""


def test_a_server_that_lost_the_job_stores_nothing(stores, store, tmp_path):
    """Server A seemed dead; its job was recovered and claimed by B. A's late result is dropped with its pieces,
    B's is the one stored."""
    job_id = running_job(store, "server-a")
    assert store.recover("server-b", timedelta(seconds=-1), max_attempts=5) == []
    assert store.claim_next("server-b") is not None
    late = spilled(tmp_path, payload(3 * CHUNK))
    assert not store.finish(job_id, "server-a", late)
    assert not os.path.exists(late.path or "") and all_pieces(stores) == 0
    assert store.result(job_id) is None  # still running on B
    assert store.finish(job_id, "server-b", Body(payload(4 * CHUNK), None, 4 * CHUNK))
    assert b"".join(store.result(job_id)) == payload(4 * CHUNK)  # type: ignore[arg-type]
    assert len(pieces_of(stores, job_id)) == 4


def test_a_deleted_job_stores_nothing(stores, store):
    job_id = running_job(store)
    store.delete(job_id)
    assert not store.finish(job_id, "server-a", Body(payload(3 * CHUNK), None, 3 * CHUNK))
    assert all_pieces(stores) == 0


def test_delete_and_purge_remove_the_pieces(stores, store):
    kept, deleted, old = running_job(store), running_job(store), running_job(store)
    for job_id in (kept, deleted, old):
        assert store.finish(job_id, "server-a", Body(payload(2 * SPILL), None, 2 * SPILL))
    store.delete(deleted)
    assert pieces_of(stores, deleted) == [] and store.get(deleted, "ALICE") is None
    with write_session(stores.sessions) as session:
        job = session.get(Job, old)
        assert job is not None
        job.finished_at = utcnow() - timedelta(days=30)
    assert store.purge(utcnow() - timedelta(days=7)) == 1
    assert pieces_of(stores, old) == [] and store.get(old, "ALICE") is None
    assert b"".join(store.result(kept)) == payload(2 * SPILL)  # type: ignore[arg-type]


def test_a_result_deleted_while_it_is_read_ends_with_an_error_not_a_short_body(store):
    job_id = running_job(store)
    assert store.finish(job_id, "server-a", Body(payload(4 * CHUNK), None, 4 * CHUNK))
    result = store.result(job_id)
    assert isinstance(result, StoredBody)
    reading = iter(result)
    assert next(reading) == payload(4 * CHUNK)[:CHUNK]
    store.delete(job_id)
    with pytest.raises(JobNotFound):
        next(reading)


def test_a_failed_job_has_no_body(stores, store):
    job_id = running_job(store)
    assert store.finish(job_id, "server-a", ScriptFailed("boom"))
    assert store.result(job_id) is None and all_pieces(stores) == 0
    record = store.get(job_id, "ALICE")
    assert record is not None and record.status == JobStatus.FAILED and record.error_type == "ScriptFailed"
