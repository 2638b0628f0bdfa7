"""The `pyqd` command, run for real in subprocesses against the same store a live app uses."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from server import accounts
from server.auth import service as auth_service
from server.services import Services, open_services
from server.settings import Settings
from tables import service as tbl
from tests.conftest import wait_for
from tests.server.jwts import bearer
from tests.server.procs import clean_env, run_pyqd

TOKEN = "/omlusers/api/oauth2/v1/token"
SCRIPTS = "/oml/api/py-scripts/v1/scripts"


def store_flags(settings: Settings) -> list[str]:
    """The flags that point the CLI at the test's store (PostgreSQL via --database-url when it is one)."""
    flags = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        flags += ["--database-url", settings.database_url]
    return flags


def ok(result) -> str:  # noqa: ANN001
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def failed(result, message: str) -> None:  # noqa: ANN001
    """The command failed with a one-line `error: ...` naming the problem, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr, re.IGNORECASE), result.stderr


def within_cache_time(condition, api) -> None:
    """The condition comes true within the server's lookup-cache time (plus slack)."""
    wait_for(condition, timeout=api.services.settings.lookup_cache_s + 5)


def login(api, user: str, password: str):
    return api.client.post(TOKEN, json={"grant_type": "password", "username": user, "password": password})


def test_user_client_and_table_commands_against_a_live_store(api, settings, tmp_path):
    """One operator session on each backend; the app sees every change the CLI makes."""
    flags = store_flags(settings)

    assert ok(run_pyqd("user", "add", "alice", "--password-stdin", *flags, stdin="password-of-1\n")).strip() == (
        "created user ALICE"
    )
    assert "created user ROOT (admin)" in ok(
        run_pyqd("user", "add", "Root", "--admin", "--password-stdin", *flags, stdin="root-pw-long-password\n")
    )
    listing = [line.split("\t") for line in ok(run_pyqd("user", "list", *flags)).splitlines()]
    assert [(row[0], row[1]) for row in listing] == [("ADMIN", "admin"), ("ALICE", ""), ("ROOT", "admin")]

    alice_token = login(api, "alice", "password-of-1").json()["accessToken"]
    root = api.headers("root", "root-pw-long-password")
    assert api.client.get("/oml/api/pyqd/v1/admin/users", headers=root).status_code == 200
    assert api.client.get("/oml/api/pyqd/v1/admin/users", headers=bearer(alice_token)).status_code == 403

    # A password change through the CLI ends the older tokens too.
    assert "password changed for ALICE" in ok(
        run_pyqd("user", "passwd", "alice", "--password-stdin", *flags, stdin="password-of-2\n")
    )
    assert login(api, "alice", "password-of-1").status_code == 401
    # The CLI is another process: the server's session cache sees it within PYQD_LOOKUP_CACHE_S.
    within_cache_time(lambda: api.client.get(SCRIPTS, headers=bearer(alice_token)).status_code == 401, api)
    alice = api.headers("alice", "password-of-2")

    # A client: its id and secret are printed once, and they get tokens from /oauth/token.
    out = ok(run_pyqd("client", "add", "apex", "--user", "alice", *flags))
    found = dict(re.findall(r"^(client_id|client_secret): (\S+)$", out, re.MULTILINE))
    assert set(found) == {"client_id", "client_secret"}
    r = api.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(found["client_id"], found["client_secret"])
    )
    assert r.status_code == 200, r.text
    client_token = r.json()["access_token"]
    assert api.client.get(SCRIPTS, headers=bearer(client_token)).status_code == 200
    clients = ok(run_pyqd("client", "list", *flags))
    assert clients.splitlines() == [f"{found['client_id']}\tapex\tALICE"]
    assert found["client_secret"] not in clients

    # A CSV into ALICE's schema, readable by her over REST.
    csv = tmp_path / "iris.csv"
    csv.write_text("SEPAL_LENGTH,SPECIES\n5.1,setosa\n7.0,versicolor\n6.3,virginica\n")
    assert "loaded 3 rows into ALICE.IRIS" in ok(
        run_pyqd("table", "load", str(csv), "--table", "IRIS", "--owner", "alice", *flags)
    )
    r = api.client.get("/oml/api/pyqd/v1/tables/IRIS/rows", headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [
        {"SEPAL_LENGTH": 5.1, "SPECIES": "setosa"},
        {"SEPAL_LENGTH": 7.0, "SPECIES": "versicolor"},
        {"SEPAL_LENGTH": 6.3, "SPECIES": "virginica"},
    ]

    assert f"removed client {found['client_id']}" in ok(run_pyqd("client", "remove", found["client_id"], *flags))
    within_cache_time(lambda: api.client.get(SCRIPTS, headers=bearer(client_token)).status_code == 401, api)
    assert api.client.get("/oml/api/pyqd/v1/admin/clients", headers=root).json()["result"] == []

    assert "removed user ALICE" in ok(run_pyqd("user", "remove", "alice", "--yes", *flags))
    within_cache_time(lambda: api.client.get(SCRIPTS, headers=alice).status_code == 401, api)
    assert login(api, "alice", "password-of-2").status_code == 401
    users = api.client.get("/oml/api/pyqd/v1/admin/users", headers=root).json()["result"]
    assert [u["name"] for u in users] == ["ADMIN", "ROOT"]


@pytest.fixture
def store(tmp_path) -> Iterator[tuple[list[str], Services]]:
    """A fresh SQLite store holding user ALICE: (CLI flags for it, the services the test checks it with)."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=None, password_hash_time_cost=1, password_hash_memory_kib=1024
    )
    services = open_services(settings)
    accounts.add_user(services, "alice", "pw-long-password")
    yield ["--data-dir", str(settings.data_dir)], services
    services.close()


def user_names(services: Services) -> list[str]:
    with services.sessions() as session:
        return [u.name for u in auth_service.list_users(session)]


def test_user_command_errors(store):
    flags, services = store
    failed(
        run_pyqd("user", "add", "1abc", "--password-stdin", *flags, stdin="pw-long-password\n"),
        r"^error: .*invalid user name",
    )
    failed(
        run_pyqd("user", "add", "ALICE", "--password-stdin", *flags, stdin="pw-long-password\n"),
        r"^error: .*already exists",
    )
    failed(run_pyqd("user", "add", "bob", "--password-stdin", *flags, stdin="\n"), r"^error: .*must not be empty")
    failed(
        run_pyqd("user", "passwd", "nobody", "--password-stdin", *flags, stdin="pw-long-password\n"),
        r"^error: .*does not exist",
    )
    # The minimum password length (12 by default) holds for new users and new passwords alike.
    failed(run_pyqd("user", "add", "bob", "--password-stdin", *flags, stdin="x\n"), r"^error: .*at least 12 char")
    failed(run_pyqd("user", "passwd", "alice", "--password-stdin", *flags, stdin="eleven-char\n"), r"at least 12 char")
    assert user_names(services) == ["ALICE"]
    # Without --yes the command asks, and "no" keeps the user.
    r = run_pyqd("user", "remove", "alice", *flags, stdin="n\n")
    assert r.returncode != 0 and "Aborted" in r.stderr
    assert user_names(services) == ["ALICE"]
    with services.sessions() as session:
        assert (
            auth_service.authenticate(session, "alice", "pw-long-password").name == "ALICE"
        )  # untouched by the failed commands


def test_client_and_table_command_errors(store, tmp_path):
    flags, services = store
    failed(run_pyqd("client", "add", "apex", "--user", "nobody", *flags), r"^error: .*NOBODY does not exist")
    failed(run_pyqd("client", "remove", "no-such-id", *flags), r"^error: .*no-such-id does not exist")
    with services.sessions() as session:
        assert auth_service.list_clients(session) == []
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    load = ["table", "load", str(csv), "--table", "T", *flags]
    failed(run_pyqd(*load, "--owner", "nobody"), r"^error: .*NOBODY does not exist")
    ok(run_pyqd(*load, "--owner", "alice"))
    failed(run_pyqd(*load, "--owner", "alice"), r"^error: .*exists")
    odd = tmp_path / "t.xlsx"
    odd.write_text("a,b\n1,2\n")
    failed(run_pyqd("table", "load", str(odd), "--table", "U", "--owner", "alice", *flags), r"^error: .*--format")
    r = run_pyqd("table", "load", str(tmp_path / "missing.csv"), "--table", "U", "--owner", "alice", *flags)
    assert r.returncode != 0 and "does not exist" in r.stderr
    with services.sessions() as session:
        assert [t.name for t in tbl.list_tables(session, services.user_data, "ALICE")] == ["T"]


def test_commands_refuse_a_weak_signing_key(tmp_path):
    r = run_pyqd("user", "list", "--data-dir", str(tmp_path / "data"), env=clean_env(PYQD_SIGNING_KEY="short"))
    failed(r, r"^error: .*shorter than 32 bytes")
