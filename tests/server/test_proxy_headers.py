"""A client cannot pick the address that login throttling counts: X-Forwarded-For is believed only from the
proxies the operator names (`PYQD_FORWARDED_ALLOW_IPS`). A real `pyqd serve`, since uvicorn reads the header."""

from __future__ import annotations

import httpx

from tests.server.procs import ServerProcess, clean_env

TOKEN = "/omlusers/api/oauth2/v1/token"


def test_a_spoofed_forwarded_for_does_not_escape_the_address_lockout(tmp_path):
    env = clean_env(PYQD_ADMIN_PASSWORD="admin-password-for-proxy-test", PYQD_LOGIN_ADDRESS_MAX_FAILURES="5")
    server = ServerProcess("--data-dir", str(tmp_path / "data"), env=env, cwd=tmp_path)
    try:
        server.wait_healthy()
        statuses = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(12):  # a password spray: a new user name and a new claimed address each time
                body = {"grant_type": "password", "username": f"USER{i}", "password": "wrong-password-here"}
                r = c.post(TOKEN, json=body, headers={"X-Forwarded-For": f"203.0.113.{i}"})
                statuses.append(r.status_code)
        assert statuses[:5] == [401] * 5
        assert 429 in statuses[5:], statuses  # the real peer (127.0.0.1) was counted, whatever it claimed
    finally:
        server.stop()
