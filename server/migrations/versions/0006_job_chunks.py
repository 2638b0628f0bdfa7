"""job chunks: large job results live in the metadata database, where any server can read them

A large result was spilled to a file under the data directory of the server that ran the job (`body_path`),
which another server cannot read. It is now stored as ordered pieces in `pyqd_job_chunks`. Existing files are
copied in (a job whose file is gone fails with a reason); the files themselves are left where they were, to be
removed by the operator (`DATA_DIR/jobs/*.body`). No foreign key: on SQLite, a later batch migration of
`pyqd_jobs` (which copies and drops the table) would cascade into the pieces; the store deletes them itself.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Bytes per piece copied from a spilled file (engines.jobs.store.CHUNK_BYTES when this was written).
_CHUNK_BYTES = 1 << 20
#: Why a job whose spilled file is gone failed.
_LOST = "The job's result file was gone when an upgrade moved results into the database"


def upgrade() -> None:
    op.create_table(
        "pyqd_job_chunks",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq"),
    )
    _copy_spilled_bodies()
    with op.batch_alter_table("pyqd_jobs") as batch:
        batch.drop_column("body_path")


def _copy_spilled_bodies() -> None:
    conn = op.get_bind()
    insert = sa.text("INSERT INTO pyqd_job_chunks (job_id, seq, data) VALUES (:job_id, :seq, :data)")
    rows = conn.execute(sa.text("SELECT id, body_path FROM pyqd_jobs WHERE body_path IS NOT NULL")).all()
    for job_id, path in rows:
        try:
            with open(path, "rb") as f:
                seq = 0
                while piece := f.read(_CHUNK_BYTES):
                    conn.execute(insert, {"job_id": job_id, "seq": seq, "data": piece})
                    seq += 1
        except OSError:
            conn.execute(sa.text("DELETE FROM pyqd_job_chunks WHERE job_id = :id"), {"id": job_id})
            conn.execute(
                sa.text(
                    "UPDATE pyqd_jobs SET status = 'FAILED', error_type = 'EngineFault', body = NULL, "
                    "error = :error WHERE id = :id"
                ),
                {"id": job_id, "error": _LOST},
            )


def downgrade() -> None:
    with op.batch_alter_table("pyqd_jobs") as batch:
        batch.add_column(sa.Column("body_path", sa.String(length=512), nullable=True))
    # The pieces go back into the job's row (there is no data directory to write files to here).
    conn = op.get_bind()
    ids = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT job_id FROM pyqd_job_chunks")).all()]
    for job_id in ids:
        pieces = conn.execute(
            sa.text("SELECT data FROM pyqd_job_chunks WHERE job_id = :id ORDER BY seq"), {"id": job_id}
        ).all()
        conn.execute(
            sa.text("UPDATE pyqd_jobs SET body = :body WHERE id = :id"),
            {"id": job_id, "body": b"".join(bytes(p[0]) for p in pieces)},
        )
    op.drop_table("pyqd_job_chunks")
