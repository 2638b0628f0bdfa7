"""Hostile input queries over real HTTP: a clean 400 in OML's shape, on a keep-alive connection that stays
usable for the next call."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import httpx

from server import accounts

PASSWORD = "alice-password-long-enough"


def test_deeply_nested_input_is_a_clean_400_and_the_connection_stays_usable(live_server, services):
    accounts.add_user(services, "ALICE", PASSWORD)
    token = httpx.post(
        f"{live_server}/omlusers/api/oauth2/v1/token",
        json={"grant_type": "password", "username": "ALICE", "password": PASSWORD},
    ).json()["accessToken"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = urlsplit(live_server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:

        def post(path: str, body: dict) -> tuple[int, dict, str | None]:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            r = conn.getresponse()
            return r.status, json.loads(r.read()), r.getheader("connection")

        script = {"name": "one", "script": "def one(d):\n    return 1\n"}
        assert post("/oml/api/pyqd/v1/scripts", script)[0] == 201
        sock = conn.sock
        for depth in (60, 5000):
            nested = "select " + "(" * depth + "1" + ")" * depth + " from dual"
            status, body, connection = post("/oml/api/py-scripts/v1/table-apply/one", {"input": nested})
            assert status == 400 and body["errorCode"] == 1020 and "nest" in body["errorMessage"], body
            assert connection != "close"
        status, body, _ = post("/oml/api/py-scripts/v1/table-apply/one", {"input": "select 1 x from dual"})
        assert status == 200 and body == {"result": 1}, body
        assert conn.sock is sock, "the server closed the keep-alive connection"
    finally:
        conn.close()
