"""Migration 0006: results spilled to files in a server's data directory move into the metadata database (any
server can answer them); a job whose file is gone fails with a reason; a downgrade puts the pieces back in the
row."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from server.db import create_metadata_engine, run_migrations
from tests.server.test_migrations import _to

JOB = """INSERT INTO pyqd_jobs (id, owner, api_version, verb, script_name, source, request, service, status,
    timeout_s, created_at, finished_at, attempts, cancel_requested, units_done, units_total, body, body_path,
    body_size) VALUES (:id, 'ALICE', 'v1', 'do-eval', 'f', 'def f():\n    return 1\n', '{}', 'LOW', 'FINISHED',
    60, :now, :now, 1, false, 1, 1, NULL, :path, :size)"""
KEPT, LOST = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"


def test_spilled_files_move_into_the_database_and_back(settings, tmp_path):
    body = b'{"result": "' + b"x" * (3 * (1 << 20) + 5) + b'"}'
    spilled = tmp_path / "kept.body"
    spilled.write_bytes(body)
    engine = create_metadata_engine(settings)
    run_migrations(engine)
    _to(engine, "0005", "downgrade")
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(text(JOB), {"id": KEPT, "now": now, "path": str(spilled), "size": len(body)})
        conn.execute(text(JOB), {"id": LOST, "now": now, "path": str(tmp_path / "gone.body"), "size": 10})
    _to(engine, "head", "upgrade")
    with engine.connect() as conn:
        pieces = conn.execute(text("SELECT data FROM pyqd_job_chunks WHERE job_id = :id ORDER BY seq"), {"id": KEPT})
        assert b"".join(bytes(p[0]) for p in pieces) == body
        jobs = {r.id: r for r in conn.execute(text("SELECT id, status, error_type, error FROM pyqd_jobs"))}
    assert jobs[KEPT].status == "FINISHED" and jobs[KEPT].error_type is None
    assert (jobs[LOST].status, jobs[LOST].error_type) == ("FAILED", "EngineFault") and "gone" in jobs[LOST].error
    _to(engine, "0005", "downgrade")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT body FROM pyqd_jobs WHERE id = :id"), {"id": KEPT}).one()
    assert bytes(row.body) == body
    _to(engine, "head", "upgrade")
    engine.dispose()
