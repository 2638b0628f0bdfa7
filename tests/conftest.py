"""Shared fixtures: a fresh store per test on SQLite (a real file) and on PostgreSQL (a real database
cloned from a migrated template made once per run, all dropped afterwards)."""

from __future__ import annotations

import io
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from engines.pool import WorkerPool
from server.app import create_app
from server.db import run_migrations
from server.services import Services, make_pool, open_services
from server.settings import Settings
from tables.pg_store import default_role_prefix

#: Where the test PostgreSQL lives; the databases made here are dropped when the run ends.
PG_ADMIN_DSN = os.environ.get("PYQD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_PASSWORD = "admin-test-password"
BACKENDS = ["sqlite", "postgresql"]


def _pg_url(dbname: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    conninfo["dbname"] = dbname
    return "postgresql+psycopg://" + _netloc(conninfo) + f"/{dbname}"


def _netloc(c: dict) -> str:
    user = c.get("user", "postgres")
    password = f":{c['password']}" if c.get("password") else ""
    return f"{user}{password}@{c.get('host', '127.0.0.1')}:{c.get('port', 5432)}"


def _admin_execute(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database to clone per test (CREATE DATABASE ... TEMPLATE is fast)."""
    try:
        _admin_execute("SELECT 1")
    except psycopg.OperationalError as e:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({e}); start it (see .ci/run)")
    name = f"pyqd_t_{os.getpid()}_{secrets.token_hex(3)}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(_pg_url(name))
    run_migrations(engine)
    engine.dispose()
    yield name
    _drop_database(name)


def _drop_database(name: str) -> None:
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_roles(prefix: str) -> None:
    """Roles are cluster-wide: drop the ones the test's database made (after the database itself)."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (prefix + "%",))]
        for role in roles:
            conn.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role)))


_clone_counter = iter(range(1_000_000))


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path) -> Iterator[Settings]:  # noqa: ANN001
    """Settings for a fresh, empty store on each backend."""
    yield from _fresh_store(request, tmp_path / "data", f"_{next(_clone_counter)}")


@pytest.fixture(scope="module", params=BACKENDS)
def module_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a fresh store for the whole module, on each backend (a module-scoped server runs on them); a
    module changes them with a `MODULE_SETTINGS` dict."""
    data_dir = tmp_path_factory.mktemp("module") / "data"
    extra = getattr(request.module, "MODULE_SETTINGS", {})
    yield from _fresh_store(request, data_dir, f"_m{secrets.token_hex(3)}", **extra)


def _fresh_store(request: pytest.FixtureRequest, data_dir: Path, suffix: str, **extra: Any) -> Iterator[Settings]:
    """Settings of an empty store in `data_dir`: on SQLite, or a PostgreSQL database cloned from the template
    (named with `suffix`) and dropped, with its roles, afterwards."""
    common = dict(
        data_dir=data_dir,
        admin_password=ADMIN_PASSWORD,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        **extra,
    )
    if request.param == "sqlite":
        yield Settings(**common)
        return
    template = request.getfixturevalue("pg_template")
    name = f"{template}{suffix}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield Settings(database_url=_pg_url(name), **common)
    finally:
        _drop_database(name)
        _drop_roles(default_role_prefix(name))


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:  # noqa: ANN001
    """Settings on SQLite only, for tests whose subject does not touch the database (worker faults)."""
    return Settings(
        data_dir=tmp_path / "data",
        admin_password=ADMIN_PASSWORD,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
    )


@pytest.fixture(scope="session")
def worker_pool() -> Iterator[WorkerPool]:
    """One warm worker pool for the run (starting the template costs about a second); tests that break
    workers on purpose make their own."""
    pool = make_pool(Settings(workers=4, warm_workers=2))
    pool.start()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """A Dask `LocalCluster` for the run: 2 worker processes on loopback, 2 threads (so 2 pyqd processes) each.
    A task whose worker dies is tried once more elsewhere (`allowed-failures` 1, as docs/scaling.md asks of a
    real scheduler). Yields the scheduler's address."""
    import dask
    from distributed import LocalCluster

    dask.config.set({"distributed.scheduler.allowed-failures": 1})
    cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close(timeout=30)


@pytest.fixture(scope="session")
def dask_workers(dask_cluster: str) -> Iterator[Any]:
    """The Dask engine connected to the run's cluster (each test that uses it points it at its live server)."""
    from engines.dask.engine import DaskConfig, DaskWorkers
    from engines.pool import PoolSettings

    workers = DaskWorkers(DaskConfig(scheduler=dask_cluster, api_url="http://127.0.0.1:9", host=PoolSettings(warm=1)))
    workers.start(wait_s=120)
    assert workers.problem() is None, workers.problem()
    yield workers
    workers.close()


#: The engines the execution tests run on (a module opts in with `pytestmark = pytest.mark.usefixtures("engine")`).
ENGINES = ["local", "dask"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Dask engine runs the shared execution tests on PostgreSQL only: a cluster's database (on SQLite the
    engine works the same, and tests/server/test_dask_engine.py runs there too), and half the time."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (drop if params.get("engine") == "dask" and params.get("settings") == "sqlite" else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def services(request: pytest.FixtureRequest, settings: Settings, worker_pool: WorkerPool) -> Iterator[Services]:
    svc = open_services(settings)
    svc.pool = worker_pool
    if "engine" in request.fixturenames and request.getfixturevalue("engine") == "dask":
        svc.cluster = request.getfixturevalue("dask_workers")
    yield svc
    svc.close()


@dataclass
class Api:
    """A TestClient plus helpers to make users and tokens."""

    client: httpx.Client
    services: Services

    def token(self, user: str, password: str) -> str:
        r = self.client.post(
            "/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": user, "password": password}
        )
        assert r.status_code == 200, r.text
        return r.json()["accessToken"]

    def headers(self, user: str, password: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, password)}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.headers("ADMIN", ADMIN_PASSWORD)

    def user(self, name: str, password: str | None = None, *, admin: bool = False) -> dict[str, str]:
        """Create a user through the admin API and return bearer headers for it."""
        password = password or f"password-of-{name}"
        r = self.client.post(
            "/oml/api/pyqd/v1/admin/users",
            headers=self.admin,
            json={"name": name, "password": password, "admin": admin},
        )
        assert r.status_code == 201, r.text
        return self.headers(name, password)

    def script(self, headers: dict[str, str], name: str, source: str, **fields: object) -> None:
        """Store a script (overwriting)."""
        r = self.client.post(
            "/oml/api/pyqd/v1/scripts",
            headers=headers,
            json={"name": name, "script": source, "overwrite": True, **fields},
        )
        assert r.status_code == 201, r.text

    def table(self, headers: dict[str, str], name: str, df: pd.DataFrame) -> None:
        """Upload a DataFrame as a table (replacing)."""
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        r = self.client.post(
            f"/oml/api/pyqd/v1/tables/{name}?mode=replace&format=parquet", headers=headers, content=buf.getvalue()
        )
        assert r.status_code == 201, r.text

    def run(
        self,
        headers: dict[str, str],
        verb: str,
        script: str,
        body: dict | None = None,
        owner: str | None = None,
        version: str = "v1",
    ) -> httpx.Response:
        """POST an execution verb (`do-eval`, `row-apply`, ...) and return the response."""
        path = f"/oml/api/py-scripts/{version}/{verb}/{script}" + (f"/{owner}" if owner else "")
        return self.client.post(path, headers=headers, json=body or {})


@pytest.fixture
def api(request: pytest.FixtureRequest, services: Services) -> Iterator[Api]:
    """A client of the app: in-process, or, on the Dask engine, over real HTTP (Dask workers relay scripts'
    `import oml` to the server's URL)."""
    if services.cluster is not None:
        url = request.getfixturevalue("live_server")
        services.cluster.api_url = url
        with httpx.Client(base_url=url, follow_redirects=True, timeout=300) as client:
            yield Api(client, services)
        return
    with TestClient(create_app(services=services)) as client:
        yield Api(client, services)


@contextmanager
def own_pool_api(sqlite_settings: Settings, **overrides: object) -> Iterator[Api]:
    """A TestClient over services with a worker pool of their own (settings overridden), for tests that break
    workers on purpose or need to know who holds them."""
    yield from api_with_own_pool(sqlite_settings.model_copy(update=overrides))


def api_with_own_pool(settings: Settings) -> Iterator[Api]:
    """A TestClient over services on `settings` with a worker pool of their own (which also runs the per-script
    environments of the settings' data directory)."""
    svc = open_services(settings)
    svc.pool = make_pool(settings)
    svc.pool.start()
    try:
        with TestClient(create_app(services=svc)) as client:
            yield Api(client, svc)
    finally:
        svc.pool.close()
        svc.close()


def change_settings(services: Services, **changes: object) -> None:
    """Change settings of a running server, and the execution service's limits made from them."""
    from server.execution import job_limits_of, limits_of

    for name, value in changes.items():
        setattr(services.settings, name, value)
    if services.execution is not None:
        services.execution.limits = limits_of(services.settings)
        services.execution.job_limits = job_limits_of(services.settings)


def wait_for(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02) -> object:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on a real socket (uvicorn in a thread, its lifespan run): its base URL while the block runs."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=60)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def live_server(services: Services) -> Iterator[str]:
    """The app on a real socket (uvicorn in a thread), for clients that speak real HTTP."""
    with serving(create_app(services=services)) as url:
        yield url


@pytest.fixture
def oml_user(live_server: str, services: Services) -> Iterator[tuple[str, str, str]]:
    """A user on the live server: (url, name, password); the `oml` module is disconnected afterwards."""
    import oml
    from server import accounts

    accounts.add_user(services, "OML_USER", "oml-user-password")
    yield live_server, "OML_USER", "oml-user-password"
    oml.disconnect()
