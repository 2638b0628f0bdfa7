"""A client written with `requests` (which follows redirects by default), behaving like Oracle's own
dbt-oracle OML client: token, refresh with the old bearer header still set, async do-eval, polling."""

from __future__ import annotations

import json
import time

import pytest
import requests

from server import accounts


class DbtLikeClient:
    """What dbt-oracle's python_submissions module does over HTTP (re-created for these tests)."""

    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.base, self.user, self.password = base_url, user, password
        self.session = requests.Session()  # follows redirects, as dbt-oracle's does
        self.token: str | None = None
        self.seen: list[int] = []

    def _token(self, body: dict) -> str:
        r = self.session.post(
            self.base + "/omlusers/api/oauth2/v1/token",
            data=json.dumps(body),
            headers={"Content-type": "application/json", "Accept": "application/json"},
        )
        r.raise_for_status()
        self.token = r.json()["accessToken"]
        return self.token

    def login(self) -> None:
        self._token({"grant_type": "password", "username": self.user, "password": self.password})

    def refresh(self) -> None:
        # The session still carries the old Authorization header, as dbt-oracle's does.
        self._token({"grant_type": "refresh_token", "token": self.token})

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        url = url if url.startswith(self.base) else self.base + url
        self.session.headers.update(
            {"Content-type": "application/json", "Accept": "application/json", "Authorization": f"Bearer {self.token}"}
        )
        r = self.session.request(method, url, **kwargs)
        self.seen.append(r.status_code)
        return r

    def run_async(self, script: str, timeout: float = 60) -> dict:
        body = {
            "service": "HIGH",
            "asyncFlag": True,
            "timeout": 900,
            "parameters": json.dumps({"action": "DBT RUN OML4PY", "client_identifier": "test"}),
        }
        r = self.request("POST", f"/oml/api/py-scripts/v1/do-eval/{script}", data=json.dumps(body))
        r.raise_for_status()
        location = r.headers["location"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.request("GET", location)
            if status.status_code == 302:
                result = self.request("GET", f"{location}/result").json()
                if "errorMessage" in result:
                    raise RuntimeError(result)
                return result
            if status.status_code == 500:
                raise RuntimeError(status.json())
            status.json()  # every answer must be JSON (dbt-oracle logs it)
            status.raise_for_status()
            time.sleep(0.05)
        raise TimeoutError(location)


@pytest.fixture
def dbt(live_server, services):
    accounts.add_user(services, "DBT_USER", "dbt-pw-long-password")
    client = DbtLikeClient(live_server, "DBT_USER", "dbt-pw-long-password")
    client.login()
    return client


def test_requests_sees_the_302_and_gets_the_result(dbt):
    script = (
        "def main(action, client_identifier, clientinfo=None, module=None):\n"
        "    import pandas as pd, time\n    time.sleep(0.3)\n    return pd.DataFrame({'result': [1]})\n"
    )
    r = dbt.request("POST", "/oml/api/pyqd/v1/scripts", json={"name": "m_dbt_py_script", "script": script})
    assert r.status_code == 201
    dbt.refresh()
    assert dbt.run_async("m_dbt_py_script") == {"result": [{"result": 1}]}
    assert 302 in dbt.seen and 202 in dbt.seen


def test_script_errors_reach_the_client_as_error_message(dbt):
    dbt.request("POST", "/oml/api/pyqd/v1/scripts", json={"name": "broken", "script": "def broken(**kw):\n    1/0\n"})
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        dbt.run_async("broken")
