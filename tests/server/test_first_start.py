"""First start of a server: data directory, signing key, the ADMIN account; refusing a weak key."""

from __future__ import annotations

import stat

import httpx
from fastapi.testclient import TestClient

from server.app import create_app
from server.auth.keys import KEY_FILE
from server.settings import Settings
from tests.server.procs import LEAN_WORKERS, ServerProcess, clean_env

ADMIN_LINE = r"created administrator ADMIN with password: (\S+)"


def admin_token(url: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{url}/omlusers/api/oauth2/v1/token",
        json={"grant_type": "password", "username": "ADMIN", "password": password},
        timeout=10,
    )


def test_first_start_makes_the_data_dir_key_and_admin_then_a_restart_keeps_them(tmp_path):
    data = tmp_path / "new" / "pyqd-data"
    env = clean_env()
    server = ServerProcess("--data-dir", str(data), env=env, cwd=tmp_path)
    try:
        password = server.wait_line(ADMIN_LINE).group(1)
        server.wait_healthy()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        key_file = data / KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_bytes()
        r = admin_token(server.url, password)
        assert r.status_code == 200, r.text
        token = r.json()["accessToken"]
        users = httpx.get(
            f"{server.url}/oml/api/pyqd/v1/admin/users", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert [(u["name"], u["admin"]) for u in users.json()["result"]] == [("ADMIN", True)]
    finally:
        server.stop()
    assert server.stderr.count("with password:") == 1
    assert password not in server.stderr.replace(f"password: {password}", "")  # printed once, nowhere else

    again = ServerProcess("--data-dir", str(data), env=env, cwd=tmp_path)
    try:
        again.wait_healthy()
        assert key_file.read_bytes() == key
        # Same key and same account: the first run's token and password both still work.
        r = httpx.get(f"{again.url}/oml/api/py-scripts/v1/scripts", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert admin_token(again.url, password).status_code == 200
    finally:
        again.stop()
    assert "with password" not in again.stderr
    assert not (tmp_path / "pyqd-data").exists()  # nothing went to the default place


def test_weak_signing_key_stops_the_server_unless_dev(tmp_path):
    env = clean_env(PYQD_SIGNING_KEY="too-short", PYQD_ADMIN_PASSWORD="chosen-admin-pw")
    refused = ServerProcess("--data-dir", str(tmp_path / "a"), env=env, cwd=tmp_path)
    try:
        assert refused.wait_exit() != 0
    finally:
        refused.stop()
    assert "shorter than 32 bytes" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "PYQD_SIGNING_KEY" in refused.stderr

    dev = ServerProcess("--data-dir", str(tmp_path / "b"), "--dev", env=env, cwd=tmp_path)
    try:
        dev.wait_healthy()
        # PYQD_ADMIN_PASSWORD chose the admin password, so none was printed.
        assert admin_token(dev.url, "chosen-admin-pw").status_code == 200
    finally:
        dev.stop()
    assert "with password" not in dev.stderr
    assert not (tmp_path / "b" / KEY_FILE).exists()  # the given key was used, none generated


def test_in_process_first_start_prints_the_generated_password_once(tmp_path, capsys):
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=None,
        admin_password=None,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        **{k.removeprefix("PYQD_").lower(): v for k, v in LEAN_WORKERS.items()},
    )
    with TestClient(create_app(settings)) as client:
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if "with password:" in ln]
        password = line.rsplit(" ", 1)[1]
        r = client.post(
            "/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": "admin", "password": password}
        )
        assert r.status_code == 200
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
    assert "with password" not in capsys.readouterr().err


def test_several_server_processes_share_one_first_start(tmp_path):
    """`--processes 2`: both processes start on a fresh data directory at once; one key, one ADMIN, printed once;
    both answer, run code and share the stores."""
    data = tmp_path / "pyqd-data"
    server = ServerProcess("--data-dir", str(data), "--processes", "2", env=clean_env(PYQD_WORKERS="1"), cwd=tmp_path)
    try:
        password = server.wait_line(ADMIN_LINE).group(1)
        server.wait_healthy()
        token = admin_token(server.url, password).json()["accessToken"]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
            src = "def pid():\n    import os\n    return os.getppid()\n"
            assert c.post("/oml/api/pyqd/v1/scripts", json={"name": "pid", "script": src}).status_code == 201
            answers = [
                c.post("/oml/api/py-scripts/v1/do-eval/pid", json={}, headers={"Connection": "close"})
                for _ in range(12)
            ]
            assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
            assert len(list(c.get("/oml/api/py-scripts/v1/scripts").json()["result"])) == 1
    finally:
        server.stop()
    assert server.stderr.count("with password:") == 1
    assert len(list(data.glob("signing.key*"))) == 1
