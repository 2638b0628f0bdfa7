"""What operators watch: /health, /ready, /metrics; and the version metadata with v1's deprecation headers."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for


def test_health_and_ready_need_no_token(api):
    assert api.client.get("/health").json() == {"status": "ok"}
    ready = wait_for(lambda: (r := api.client.get("/ready")).status_code == 200 and r)
    body = ready.json()
    assert body["status"] == "ready" and body["database"] == "ok" and body["workers"]["size"] >= 1


def test_metrics_are_for_administrators_and_in_prometheus_format(api):
    user = api.user("ALICE")
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=user).status_code == 403
    api.script(user, "one", "def one():\n    return 1\n")
    assert api.run(user, "do-eval", "one").status_code == 200
    text = api.client.get("/metrics", headers=api.admin).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "pyqd_http_request_duration_seconds",
        "pyqd_queue_wait_seconds",
        "pyqd_execution_seconds",
        "pyqd_pool_workers",
        "pyqd_pool_size",
        "pyqd_jobs",
        "pyqd_http_requests",
    ):
        assert name in families, name
    routes = {s.labels.get("route") for s in families["pyqd_http_requests"].samples}
    assert "/oml/api/py-scripts/v1/do-eval/{scriptName}" in routes
    states = {s.labels["state"] for s in families["pyqd_jobs"].samples}
    assert states == {"QUEUED", "RUNNING", "FINISHED", "FAILED", "TIMED_OUT"}


@pytest.mark.parametrize("prefix", ["/oml/api", "/oml/tenants/PYQD/databases/PYQD/api"])
def test_version_metadata(api, prefix):
    user = api.user("ALICE")
    items = api.client.get(f"{prefix}/py-scripts", headers=user).json()["items"]
    assert [(i["version"], i["isLatest"], i["lifecycle"]) for i in items] == [
        ("v1", False, "DEPRECATED@2026-03-31"),
        ("v2", True, "ACTIVE"),
    ]
    v2 = api.client.get(f"{prefix}/py-scripts/v2", headers=user).json()
    assert v2["links"][0] == {
        "rel": "self",
        "href": "http://testserver/oml/tenants/PYQD/databases/PYQD/api/py-scripts/v2",
    }
    hrefs = {link["href"].split("/py-scripts/v2/")[-1] for link in v2["links"][1:]}
    assert {"jobs", "jobs/{jobId}", "row-apply/{scriptName}/{ownerName}", "scripts/{scriptType}"} <= hrefs
    assert all(link["rel"] == "child" for link in v2["links"][1:])


def test_v1_answers_carry_deprecation_and_sunset_and_v2_do_not(api):
    user = api.user("ALICE")
    api.script(user, "one", "def one():\n    return 1\n")
    for path in ("/oml/api/py-scripts/v1", "/oml/api/py-scripts/v1/scripts", "/oml/api/py-scripts/v1/do-eval/one"):
        r = api.client.request("POST" if "do-eval" in path else "GET", path, headers=user)
        assert r.headers["deprecation"].startswith("@") and r.headers["sunset"] == "Tue, 31 Mar 2026 00:00:00 GMT"
        assert 'rel="successor-version"' in r.headers["link"]
    r = api.client.get("/oml/api/py-scripts/v2/scripts/user", headers=user)
    assert "deprecation" not in r.headers and "sunset" not in r.headers


def test_head_where_oracle_lists_it(api):
    user = api.user("ALICE")
    for path in (
        "/oml/api/py-scripts",
        "/oml/api/py-scripts/v1",
        "/oml/api/py-scripts/v2/scripts/all",
        "/oml/api/py-scripts/v1/scripts",
    ):
        r = api.client.head(path, headers=user)
        assert r.status_code == 200 and r.content == b"", path
