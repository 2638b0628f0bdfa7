"""A client written with `requests` (which follows redirects by default), behaving like Oracle's own
dbt-oracle OML client: token, refresh with the old bearer header still set, async do-eval, polling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

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

    def run_async(self, script: str, timeout: float = 60, on_running: Callable[[], None] | None = None) -> dict:
        """Submit, poll until 302, read the result; `on_running` is called once, at the first 202."""
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
            if status.status_code == 202 and on_running is not None:
                on_running()
                on_running = None
            time.sleep(0.05)
        raise TimeoutError(location)


@pytest.fixture
def dbt(live_server, services):
    accounts.add_user(services, "DBT_USER", "dbt-pw-long-password")
    client = DbtLikeClient(live_server, "DBT_USER", "dbt-pw-long-password")
    client.login()
    return client


#: A job that runs until the test releases it (a datastore named RELEASE appears): the client sees a 202 first
#: however fast or slow the machine is.
HELD_SCRIPT = """def main(action, client_identifier, clientinfo=None, module=None):
    import time, oml, pandas as pd
    deadline = time.monotonic() + 120
    while 'RELEASE' not in set(oml.ds.dir()['datastore_name']):
        if time.monotonic() > deadline:
            raise TimeoutError('the test never released the job')
        time.sleep(0.02)
    return pd.DataFrame({'result': [1]})
"""


def test_requests_sees_the_302_and_gets_the_result(dbt):
    r = dbt.request("POST", "/oml/api/pyqd/v1/scripts", json={"name": "m_dbt_py_script", "script": HELD_SCRIPT})
    assert r.status_code == 201
    dbt.refresh()

    def release() -> None:
        files = {"flag": ("flag", b"\x80\x04K\x01.", "application/octet-stream")}
        saved = dbt.session.post(
            dbt.base + "/oml/api/pyqd/v1/datastores/RELEASE",
            headers={"Authorization": f"Bearer {dbt.token}", "Content-type": None},  # type: ignore[dict-item]
            data={"meta": "{}"},
            files=files,
        )
        assert saved.status_code == 201, saved.text

    assert dbt.run_async("m_dbt_py_script", timeout=120, on_running=release) == {"result": [{"result": 1}]}
    assert 302 in dbt.seen and 202 in dbt.seen


def test_script_errors_reach_the_client_as_error_message(dbt):
    dbt.request("POST", "/oml/api/pyqd/v1/scripts", json={"name": "broken", "script": "def broken(**kw):\n    1/0\n"})
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        dbt.run_async("broken")
