"""job outcomes: the engine stores domain outcomes, not HTTP

A job's record held the HTTP answer (status, media type, OML error body) and the raw request body with two
private keys (the submitting session and the script's owner). It now holds the parsed request, the session and
the script's owner in columns of their own, and an error as its class name and message; the server makes the
answer. Existing rows are converted: their request is parsed (a queued job whose body no longer parses is
failed with a reason), and a stored OML error body becomes the matching error class.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 07:30:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: errorCode → error class, for bodies stored before this revision (docs/compatibility.md lists the codes).
_CLASS_OF_CODE = {
    1000: "InvalidApplyRequest",
    1020: "InputQueryFailed",
    1024: "OutputTooLong",
    1030: "ScriptFailed",
    1031: "ResultNotSerializable",
    1040: "TimeLimitExceeded",
    1041: "Cancelled",
    1050: "WorkerCrashed",
    1051: "JobAbandoned",
}
_VERB_KIND = {"do-eval": "eval", "table-apply": "table", "row-apply": "row", "group-apply": "group"}
_VERB_KIND["index-apply"] = "index"


def upgrade() -> None:
    with op.batch_alter_table("pyqd_jobs") as batch:
        batch.add_column(sa.Column("script_owner", sa.String(length=30), nullable=True))
        batch.add_column(sa.Column("session", sa.Text(), nullable=True))
        batch.add_column(sa.Column("error_type", sa.String(length=64), nullable=True))
    _convert_rows()
    with op.batch_alter_table("pyqd_jobs") as batch:
        batch.drop_column("http_status")
        batch.drop_column("media_type")


def _convert_rows() -> None:
    from engines.errors import InvalidApplyRequest
    from engines.spec import parse_request

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, verb, request, status, http_status, body, error FROM pyqd_jobs")).all()
    for job_id, verb, request, status, http_status, body, error in rows:
        values: dict[str, object] = {"id": job_id}
        try:
            old = json.loads(request)
        except ValueError:
            old = {}
        session = old.pop("__pyqdSession", None)
        owner = old.pop("__pyqdScriptOwner", None)
        values["session"] = json.dumps(session) if isinstance(session, dict) else None
        values["script_owner"] = owner if isinstance(owner, str) else None
        values["request"] = request
        values["status"] = status
        values["error_type"] = None
        values["error"] = error
        try:
            values["request"] = parse_request(_VERB_KIND.get(verb, "eval"), old).model_dump_json()  # type: ignore[arg-type]
        except InvalidApplyRequest as e:
            if status in ("QUEUED", "RUNNING"):
                values["status"], values["error_type"] = "FAILED", "InvalidApplyRequest"
                values["error"] = f"The job's request could not be read after an upgrade: {e}"
        if http_status is not None and http_status >= 400:
            try:
                stored = json.loads(body or b"{}")
            except ValueError:
                stored = {}
            values["error_type"] = _CLASS_OF_CODE.get(stored.get("errorCode"), "EngineFault")
            values["error"] = stored.get("errorMessage") or error or "The job failed"
        conn.execute(
            sa.text(
                "UPDATE pyqd_jobs SET session = :session, script_owner = :script_owner, request = :request, "
                "status = :status, error_type = :error_type, error = :error WHERE id = :id"
            ),
            values,
        )
    conn.execute(sa.text("UPDATE pyqd_jobs SET body = NULL WHERE error_type IS NOT NULL"))


def downgrade() -> None:
    with op.batch_alter_table("pyqd_jobs") as batch:
        batch.add_column(sa.Column("http_status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("media_type", sa.String(length=64), nullable=True))
        batch.drop_column("error_type")
        batch.drop_column("session")
        batch.drop_column("script_owner")
