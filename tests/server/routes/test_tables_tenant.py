"""The tenant form of the URLs (`/oml/tenants/{tenant}/databases/{database}/api/...`): by default only this
server's tenant and database (PYQD_TENANT, PYQD_DATABASE) answer; with PYQD_ANY_TENANT any do, as Oracle's URLs
with a tenancy OCID copied into scripts need."""

from __future__ import annotations

import pytest

from tests.conftest import change_settings, wait_for
from tests.server.support import SQLITE_ONLY

pytestmark = SQLITE_ONLY

OCID = "OCID1.TENANCY.OC1..aaaaaaaabbbbbbbbccccccccddddddddeeeeeeeeffffffff0123"
ORACLE = f"/oml/tenants/{OCID}/databases/MYADW"
TOKEN = "/api/oauth2/v1/token"


def login(api, prefix: str = "") -> tuple[int, dict]:
    r = api.client.post(
        f"/omlusers{prefix}{TOKEN}",
        json={"grant_type": "password", "username": "ALICE", "password": "password-of-ALICE"},
    )
    return r.status_code, r.json()


def test_by_default_only_this_servers_tenant_answers(api):
    alice = api.user("ALICE")
    assert api.services.settings.any_tenant is False
    for prefix in ("/oml/tenants/PYQD/databases/PYQD", "/oml/tenants/pyqd/databases/Pyqd"):
        assert api.client.get(f"{prefix}/api/pyqd/v1/tables", headers=alice).status_code == 200
    r = api.client.get(f"{ORACLE}/api/pyqd/v1/tables", headers=alice)
    assert r.status_code == 404 and set(r.json()) == {"errorCode", "errorMessage"}
    assert api.client.get(f"{ORACLE}/api/py-scripts/v1/scripts", headers=alice).status_code == 404
    assert (
        api.client.get("/oml/tenants/PYQD/databases/MYADW/api/py-scripts/v1/scripts", headers=alice).status_code == 404
    )
    status, _ = login(api, f"/tenants/{OCID}/databases/MYADW")
    assert status == 404


def test_with_any_tenant_copied_oracle_urls_work_end_to_end(api):
    alice = api.user("ALICE")
    change_settings(api.services, any_tenant=True)
    # the token service in the tenant form
    status, body = login(api, f"/tenants/{OCID}/databases/MYADW")
    assert status == 200, body
    headers = {"Authorization": f"Bearer {body['accessToken']}"}
    assert api.client.get(f"{ORACLE}/api/py-scripts/v1/scripts", headers=headers).status_code == 200
    assert api.client.get(f"{ORACLE}/api/pyqd/v1/tables", headers=alice).status_code == 200
    assert api.client.get("/oml/tenants/x/databases/y/api/py-scripts/v2/scripts/user", headers=alice).status_code == 200
    # an async call: its Location (in this server's own tenant form) is polled to the result
    api.script(headers, "hello", "def hello():\n    return 'hi'\n")
    r = api.client.post(f"{ORACLE}/api/py-scripts/v1/do-eval/hello", headers=headers, json={"asyncFlag": True})
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    assert "/oml/tenants/PYQD/databases/PYQD/api/py-scripts/v1/jobs/" in location
    job = location.split("://", 1)[1].split("/", 1)[1]
    done = wait_for(
        lambda: (s := api.client.get(f"/{job}", headers=headers, follow_redirects=False)).status_code == 302 and s
    )
    assert api.client.get(f"/{job}/result", headers=headers).json() == {"result": "hi"}
    assert done


@pytest.mark.parametrize("segment", ["%2e%2e", "..", "a%2Fb"])
def test_odd_tenant_segments_never_reach_another_route(api, segment):
    alice = api.user("ALICE")
    change_settings(api.services, any_tenant=True)
    r = api.client.get(f"/oml/tenants/{segment}/databases/{segment}/api/pyqd/v1/tables", headers=alice)
    assert r.status_code in (200, 404), r.text
    assert set(r.json()) <= {"errorCode", "errorMessage", "result"}
