"""Migration 0004: jobs stored before it (HTTP answers in the record, private keys in the request body) are
converted to domain outcomes, and still answer as they did."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from starlette.testclient import TestClient

from server.app import create_app
from server.db import MIGRATIONS_DIR, create_metadata_engine, run_migrations
from server.services import open_services
from tests.conftest import Api


def _to(engine, revision: str, step: str) -> None:  # noqa: ANN001
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        getattr(command, step)(cfg, revision)


OLD_JOB = """INSERT INTO pyqd_jobs (id, owner, api_version, verb, script_name, source, request, service, status,
    timeout_s, created_at, finished_at, attempts, cancel_requested, units_done, units_total, http_status, media_type,
    body, body_size, error) VALUES (:id, 'ALICE', 'v1', :verb, 'f', 'def f():\n    return 1\n', :request, 'LOW',
    :status, 60, :now, :finished, 1, false, 0, NULL, :http, :media, :body, :size, :error)"""


def test_old_job_records_are_converted_and_answer_as_before(settings):
    engine = create_metadata_engine(settings)
    run_migrations(engine)
    _to(engine, "0003", "downgrade")
    now = datetime.now(UTC).replace(tzinfo=None)  # recent: finished jobs are purged after the retention time
    session = {"sub": "ALICE", "sid": "s1", "oat": 1, "cid": None}
    rows = [
        # finished, with its answer in the row
        dict(
            id="00000000-0000-0000-0000-000000000001",
            verb="do-eval",
            status="FINISHED",
            http=200,
            media="application/json",
            body=b'{"result":1}',
            error=None,
            request=json.dumps({"parameters": '{"a": 1}', "__pyqdSession": session, "__pyqdScriptOwner": "ALICE"}),
        ),
        # timed out: an OML error body
        dict(
            id="00000000-0000-0000-0000-000000000002",
            verb="index-apply",
            status="TIMED_OUT",
            http=400,
            media="application/json",
            body=b'{"errorCode":1040,"errorMessage":"The job ran longer than 1 s"}',
            error="The job ran longer than 1 s",
            request=json.dumps({"times": 3}),
        ),
        # queued, with a request that no longer parses
        dict(
            id="00000000-0000-0000-0000-000000000003",
            verb="row-apply",
            status="QUEUED",
            http=None,
            media=None,
            body=None,
            error=None,
            request=json.dumps({"input": "select 1"}),
        ),
    ]
    with engine.begin() as conn:
        for r in rows:
            conn.execute(
                text(OLD_JOB),
                {
                    **{k: r[k] for k in ("id", "verb", "status", "http", "media", "body", "error", "request")},
                    "now": now,
                    "finished": None if r["status"] == "QUEUED" else now,
                    "size": len(r["body"] or b""),
                },
            )
    _to(engine, "head", "upgrade")
    with engine.connect() as conn:
        got = {
            row.id[-1]: row
            for row in conn.execute(
                text("SELECT id, status, request, session, script_owner, error_type, error FROM pyqd_jobs")
            )
        }
    engine.dispose()
    assert json.loads(got["1"].request)["kwargs"] == {"a": 1} and json.loads(got["1"].session) == session
    assert (got["1"].script_owner, got["1"].error_type) == ("ALICE", None)
    assert (got["2"].status, got["2"].error_type, got["2"].error) == (
        "TIMED_OUT",
        "TimeLimitExceeded",
        "The job ran longer than 1 s",
    )
    assert json.loads(got["2"].request)["times"] == 3 and got["2"].session is None
    assert (got["3"].status, got["3"].error_type) == ("FAILED", "InvalidApplyRequest")
    assert "rows" in got["3"].error

    # The converted jobs answer as they did before.
    services = open_services(settings)
    try:
        with TestClient(create_app(services=services)) as client:
            alice = Api(client, services).user("ALICE")
            base = "/oml/api/py-scripts/v1/jobs/00000000-0000-0000-0000-00000000000"
            r = client.get(base + "1/result", headers=alice)
            assert (r.status_code, r.json()) == (200, {"result": 1})
            r = client.get(base + "2/result", headers=alice)
            assert r.status_code == 400 and r.json() == {
                "errorCode": 1040,
                "errorMessage": "The job ran longer than 1 s",
            }
            r = client.get(base + "3/result", headers=alice)
            assert r.status_code == 400 and r.json()["errorCode"] == 1000
    finally:
        services.close()
